//! The one cgroup layer of Flotilla, for cgroup v1 (one hierarchy per controller, or a few
//! co-mounted) and v2 (one unified tree): one trait, [`CgroupManager`], implemented per
//! version and dispatched statically through [`Cgroups`], as youki's libcgroups does.
//!
//! Two callers use it with different paths and the same code: this runtime makes a
//! container's cgroup from `linux.cgroupsPath` and writes its OCI resources before any of its
//! processes join ([`CgroupManager::create`]); the sandbox makes a task's cgroup above the
//! containers and writes the task's budget ([`CgroupManager::set_limits`]), reads its usage
//! and removes the whole tree. Paths are always relative to the hierarchy roots.
//!
//! Every I/O error carries the path it failed on.

mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_oci::Resources;

use crate::mountinfo::MountInfo;
pub use v1::{Hierarchy, V1};
pub use v2::V2;

/// CFS period used with every quota Flotilla writes (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: {text:?} is not a number", path.display())]
    Parse { path: PathBuf, text: String },
    #[error("no cgroup hierarchy found (neither cgroup2 at /sys/fs/cgroup nor v1 controller mounts)")]
    NoHierarchy,
    #[error("cgroup v1 controller {0:?} is not mounted")]
    MissingController(&'static str),
    #[error("cgroup path {0:?} is not a plain relative path")]
    BadPath(String),
    #[error("cgroup {0}: the container joins its parent's level there, so its resources may set nothing for it")]
    AtParent(String),
    #[error("cgroup {} still has processes after {seconds} s", path.display())]
    Busy { path: PathBuf, seconds: u64 },
    #[error("attaching the device filter to {}", path.display())]
    DeviceFilter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CgroupError {
        move |source| CgroupError::Io { op, path: path.into(), source }
    }
}

/// Hard limits of one cgroup (a task's budget): CPU quota, memory without swap, processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CFS quota per [`CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota_us: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_max: u64,
}

/// Usage of one cgroup and everything below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive page cache, as `docker stats` and ECS report memory.
    pub memory_working_set_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
}

/// Where a container's processes go: its own cgroups, and the parent levels it joins in
/// hierarchies where it has none (`at_parent`). Only its own are its to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub own: Vec<PathBuf>,
    pub parents: Vec<PathBuf>,
}

impl Placement {
    /// Every directory a process of the container joins.
    pub fn all(&self) -> Vec<PathBuf> {
        self.own.iter().chain(&self.parents).cloned().collect()
    }
}

/// One cgroup version's way of doing things. `rel` is a cgroup's path below the roots.
pub trait CgroupManager {
    /// The directory of `rel` in each hierarchy this manager writes to, in a fixed order.
    fn dirs(&self, rel: &Path) -> Vec<PathBuf>;
    /// Every directory `rel` may have on this host, including hierarchies only others (runc)
    /// populate, such as a hybrid host's cgroup2 mount: cleanup looks in all of them.
    fn all_dirs(&self, rel: &Path) -> Vec<PathBuf>;
    /// Makes `rel` in every hierarchy and writes a container's resources there, devices
    /// included, before any process joins. On v1, a hierarchy whose controllers are all in
    /// `at_parent` gets no level of its own: the container joins `rel`'s parent there (made if
    /// need be), and `resources` may set nothing for it. v2 has one tree and ignores
    /// `at_parent`.
    fn create(&self, rel: &Path, resources: &Resources, at_parent: &[&str]) -> Result<Placement, CgroupError>;
    /// Makes `rel` where `limits` need it (children may use its controllers) and writes them.
    /// Idempotent: writing again re-applies them.
    fn set_limits(&self, rel: &Path, limits: &Limits) -> Result<(), CgroupError>;
    /// The limits as the kernel has them (what was written, read back).
    fn limits(&self, rel: &Path) -> Result<Limits, CgroupError>;
    /// Usage of `rel`; `None` if it does not exist.
    fn stats(&self, rel: &Path) -> Result<Option<Stats>, CgroupError>;
    /// How many times the OOM killer has killed a process in `rel`.
    fn oom_kills(&self, rel: &Path) -> Result<u64, CgroupError>;
    /// Whether swap can be limited (v1 swap accounting, v2 `memory.swap.max`). `parent` is a
    /// cgroup below the root that exists: v2's root has no `memory.*` files to probe.
    fn swap_limit_supported(&self, parent: &Path) -> bool;
}

/// The host's cgroup setup, detected once.
#[derive(Debug, Clone)]
pub enum Cgroups {
    V1(V1),
    V2(V2),
}

impl Cgroups {
    /// Detects the host's layout from its cgroup mounts (`mountinfo::cgroup_mounts`).
    pub fn detect() -> Result<Self, CgroupError> {
        let mounts = crate::mountinfo::cgroup_mounts().map_err(CgroupError::io("read", crate::mountinfo::PATH))?;
        Self::from_mounts(&mounts)
    }

    /// Pure v2 when `/sys/fs/cgroup` is cgroup2; otherwise every v1 hierarchy, named ones too,
    /// as runc joins them all (a hybrid's cgroup2 mount holds no controller we use, so it is
    /// only remembered for cleanup).
    pub fn from_mounts(mounts: &[MountInfo]) -> Result<Self, CgroupError> {
        if let Some(m) = mounts.iter().find(|m| m.fs_type == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup"))
        {
            return Ok(Cgroups::V2(V2::new(m.mount_point.clone())));
        }
        let hierarchies: Vec<Hierarchy> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup")
            .map(|m| Hierarchy::new(m.mount_point.clone(), &m.super_options))
            .collect();
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let also_mounted = mounts.iter().filter(|m| m.fs_type == "cgroup2").map(|m| m.mount_point.clone()).collect();
        Ok(Cgroups::V1(V1::new(hierarchies, also_mounted)))
    }

    pub fn version(&self) -> u8 {
        match self {
            Cgroups::V1(_) => 1,
            Cgroups::V2(_) => 2,
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Cgroups::V1(m) => m,
            Cgroups::V2(m) => m,
        }
    }
}

impl CgroupManager for Cgroups {
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.inner().dirs(rel)
    }
    fn all_dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.inner().all_dirs(rel)
    }
    fn create(&self, rel: &Path, resources: &Resources, at_parent: &[&str]) -> Result<Placement, CgroupError> {
        self.inner().create(rel, resources, at_parent)
    }
    fn set_limits(&self, rel: &Path, limits: &Limits) -> Result<(), CgroupError> {
        self.inner().set_limits(rel, limits)
    }
    fn limits(&self, rel: &Path) -> Result<Limits, CgroupError> {
        self.inner().limits(rel)
    }
    fn stats(&self, rel: &Path) -> Result<Option<Stats>, CgroupError> {
        self.inner().stats(rel)
    }
    fn oom_kills(&self, rel: &Path) -> Result<u64, CgroupError> {
        self.inner().oom_kills(rel)
    }
    fn swap_limit_supported(&self, parent: &Path) -> bool {
        self.inner().swap_limit_supported(parent)
    }
}

/// `path` (`linux.cgroupsPath`, `/flotilla/<task>/<container>`) as a path below the roots;
/// refused when a component is empty, `.` or `..`, so it cannot climb out of them.
pub fn relative(path: &str) -> Result<PathBuf, CgroupError> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(CgroupError::BadPath(path.to_string()));
    }
    Ok(PathBuf::from(rel))
}

/// Moves the calling process into `dirs` (one per hierarchy).
pub fn join(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for d in dirs {
        write(&d.join("cgroup.procs"), "0")?;
    }
    Ok(())
}

/// PIDs of the processes directly in `dir` (none when it does not exist).
pub fn procs(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    Ok(read_optional(&path)?.map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default())
}

/// PIDs of every process in `top`'s tree.
pub fn tree_procs(top: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut dirs = Vec::new();
    collect_dirs(top, &mut dirs)?;
    let mut pids = Vec::new();
    for d in dirs {
        pids.extend(procs(&d)?);
    }
    Ok(pids)
}

/// Removes each of `dirs` with everything below it, deepest first. Processes still inside are
/// SIGKILLed (never the caller: it cannot remove a cgroup it is in, and must move out first);
/// an emptied cgroup can stay busy for a moment while the kernel tears it down, so this
/// retries until `deadline` has passed. Missing directories are fine: idempotent.
pub fn remove(dirs: &[PathBuf], deadline: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    for top in dirs {
        let mut tree = Vec::new();
        collect_dirs(top, &mut tree)?;
        // Children were pushed after their parents; remove in reverse.
        for dir in tree.iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        for pid in procs(dir)?.into_iter().filter(|p| *p != std::process::id()) {
                            // The pid was just read from the cgroup being removed, so it is
                            // one of the processes meant to die; a pid that exited is ESRCH.
                            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                            }
                        }
                        if start.elapsed() > deadline {
                            return Err(CgroupError::Busy { path: dir.clone(), seconds: deadline.as_secs() });
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(CgroupError::Io { op: "rmdir", path: dir.clone(), source: e }),
                }
            }
        }
    }
    Ok(())
}

/// `dir` and all directories below it, parents before children. Missing `dir` = nothing.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CgroupError::Io { op: "read dir", path: dir.to_path_buf(), source: e }),
    };
    out.push(dir.to_path_buf());
    for entry in entries {
        let entry = entry.map_err(CgroupError::io("read dir", dir))?;
        if entry.file_type().map_err(CgroupError::io("stat", entry.path()))?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(CgroupError::io("read", path))
}

/// Reads a file if it exists; `None` when it does not.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::Io { op: "read", path: path.to_path_buf(), source: e }),
    }
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse { path: path.to_path_buf(), text: text.trim().to_string() })
}

/// A counter file that may be missing (0 then).
pub(crate) fn read_counter(path: &Path) -> Result<u64, CgroupError> {
    match read_optional(path)? {
        Some(s) => parse_u64(path, &s),
        None => Ok(0),
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// cgroup v2 weight from v1 shares, as runc converts them: [2, 262144] onto [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 { 0 } else { 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
36 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";

    #[test]
    fn detects_hybrid_as_v1_and_pure_v2_as_v2() {
        let cg = Cgroups::from_mounts(&mountinfo::parse(HYBRID)).unwrap();
        assert_eq!(cg.version(), 1);
        let rel = Path::new("fl/t1/web");
        let dirs = cg.dirs(rel);
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/systemd/fl/t1/web")));
        assert!(!dirs.contains(&PathBuf::from("/sys/fs/cgroup/unified/fl/t1/web")), "runc's, not ours to join");
        assert!(cg.all_dirs(rel).contains(&PathBuf::from("/sys/fs/cgroup/unified/fl/t1/web")));
        let Cgroups::V1(v1) = &cg else { unreachable!() };
        let cpu = v1.hierarchies().iter().find(|h| h.has("cpuacct")).unwrap();
        assert_eq!(cpu.mount_data(), "cpu,cpuacct");

        let v2 = "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = Cgroups::from_mounts(&mountinfo::parse(v2)).unwrap();
        assert_eq!(cg.version(), 2);
        assert_eq!(cg.dirs(Path::new("fl/t1")), vec![PathBuf::from("/sys/fs/cgroup/fl/t1")]);
        assert!(Cgroups::from_mounts(&[]).is_err());
    }

    #[test]
    fn weights_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn cgroup_paths_cannot_climb() {
        assert!(relative("/flotilla/t/c").is_ok());
        for bad in ["", "/", "/a/../b", "a//b", "/./a"] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn removal_takes_the_whole_tree_and_tolerates_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("t1");
        std::fs::create_dir_all(top.join("web/inner")).unwrap();
        std::fs::create_dir_all(top.join("sidecar")).unwrap();
        remove(&[top.clone(), dir.path().join("never-made")], Duration::from_secs(1)).unwrap();
        assert!(!top.exists());
    }

    #[test]
    fn errors_name_the_path_and_the_value() {
        let err = write(Path::new("/nonexistent/cpu.max"), "max 100000").unwrap_err();
        assert_eq!(err.to_string(), "writing \"max 100000\" to /nonexistent/cpu.max");
        assert!(std::error::Error::source(&err).is_some());
    }
}
