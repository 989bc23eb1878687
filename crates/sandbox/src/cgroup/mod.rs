//! Task cgroups on cgroup v1 (one hierarchy per controller) and v2 (one unified tree), behind
//! one trait with a static-dispatch enum, as youki's libcgroups does.
//!
//! Layout, on either version: `<parent>/<task-id>` holds the task's budget (CPU quota, hard
//! memory limit without swap, pids limit); `<parent>/<task-id>/<container>` is created by runc
//! from `linux.cgroupsPath` and holds the container's own shares and limits. The agent's own
//! cgroup is never used as the parent: on v2 a cgroup with processes cannot delegate
//! controllers to children, so `<parent>` hangs off the hierarchy root, as Docker's `/docker`
//! does.

mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::V1Manager;
pub use v2::V2Manager;

use crate::error::PathError;
use crate::mount::MountInfo;
use crate::status::ResourceStats;
use crate::task::TaskSpec;

/// CFS period used for task quotas (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("no cgroup hierarchy found (neither cgroup2 at /sys/fs/cgroup nor v1 controller mounts)")]
    NoHierarchy,
    #[error("cgroup v1 controller {0:?} is not mounted")]
    MissingController(&'static str),
    #[error("cgroup parent {0:?} must be a relative path of [A-Za-z0-9_.-] components")]
    BadParent(String),
    #[error("cgroup {} still has processes after {seconds} s", path.display())]
    Busy { path: PathBuf, seconds: u64 },
}

/// The resources a whole task may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskBudget {
    /// CFS quota per [`CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota_us: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_max: u64,
}

impl TaskBudget {
    pub fn from_spec(spec: &TaskSpec) -> Self {
        TaskBudget {
            // 1024 units = one vCPU = one full period per period. The kernel's floor is 1 ms.
            cpu_quota_us: (spec.cpu_units > 0).then(|| (spec.cpu_units as u64 * CPU_PERIOD_US / 1024).max(1000)),
            memory_limit_bytes: (spec.memory_mib > 0).then_some(spec.memory_mib << 20),
            pids_max: spec.pids_limit(),
        }
    }
}

/// One cgroup version's way of doing the task-level work.
pub trait CgroupManager {
    /// Creates `<parent>/<task>` with its budget. Idempotent: re-applies the budget.
    fn create_task(&self, task: &str, budget: &TaskBudget) -> Result<(), CgroupError>;
    /// The budget as the kernel has it (what was written, read back).
    fn read_budget(&self, task: &str) -> Result<TaskBudget, CgroupError>;
    /// Usage of the task (`container: None`) or one container; `None` if the cgroup does not exist.
    fn stats(&self, task: &str, container: Option<&str>) -> Result<Option<ResourceStats>, CgroupError>;
    /// How many times the OOM killer has killed a process in this cgroup.
    fn oom_kills(&self, task: &str, container: Option<&str>) -> Result<u64, CgroupError>;
    /// Whether swap can be limited (v1 swap accounting, v2 `memory.swap.max`).
    fn swap_limit_supported(&self) -> bool;
    /// Every directory this task may have in any hierarchy (runc creates the task level in
    /// hierarchies we do not configure, e.g. cpuset, freezer, name=systemd).
    fn task_dirs(&self, task: &str) -> Vec<PathBuf>;
    /// The `linux.cgroupsPath` runc gets for a container.
    fn runtime_path(&self, task: &str, container: &str) -> String;
}

/// The host's cgroup setup, detected once.
#[derive(Debug, Clone)]
pub enum Cgroups {
    V1(V1Manager),
    V2(V2Manager),
}

impl Cgroups {
    /// Detects the host's layout from `/proc/self/mountinfo`: pure v2 when `/sys/fs/cgroup`
    /// is cgroup2, otherwise v1 (a hybrid's unified mount is remembered for cleanup only).
    pub fn detect(parent: &str) -> Result<Self, CgroupError> {
        let mounts = crate::mount::mountinfo()?;
        Self::from_mounts(&mounts, parent)
    }

    pub fn from_mounts(mounts: &[MountInfo], parent: &str) -> Result<Self, CgroupError> {
        validate_parent(parent)?;
        let parent = parent.trim_matches('/').to_string();
        if let Some(m) = mounts.iter().find(|m| m.fs_type == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup"))
        {
            return Ok(Cgroups::V2(V2Manager::new(m.mount_point.clone(), parent)));
        }
        let v1: Vec<(String, PathBuf)> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup")
            .map(|m| (m.super_options.clone(), m.mount_point.clone()))
            .collect();
        if v1.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let extra: Vec<PathBuf> =
            mounts.iter().filter(|m| m.fs_type == "cgroup2").map(|m| m.mount_point.clone()).collect();
        Ok(Cgroups::V1(V1Manager::new(&v1, extra, parent)?))
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Cgroups::V1(m) => m,
            Cgroups::V2(m) => m,
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            Cgroups::V1(_) => 1,
            Cgroups::V2(_) => 2,
        }
    }

    /// Removes the task's cgroups in every hierarchy, deepest first. Processes still inside
    /// are SIGKILLed; emptied cgroups can stay busy for a moment, so this retries until
    /// `deadline`. Idempotent.
    pub fn remove_task(&self, task: &str, deadline: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        for top in self.task_dirs(task) {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs)?;
            // Children were pushed after their parents; remove in reverse.
            for dir in dirs.iter().rev() {
                loop {
                    match std::fs::remove_dir(dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            kill_procs(dir)?;
                            if start.elapsed() > deadline {
                                return Err(CgroupError::Busy { path: dir.clone(), seconds: deadline.as_secs() });
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(PathError::new("rmdir", dir, e).into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// PIDs of every process in the task's cgroup tree (one hierarchy is enough).
    pub fn task_pids(&self, task: &str) -> Result<Vec<u32>, CgroupError> {
        let Some(top) = self.task_dirs(task).into_iter().next() else { return Ok(Vec::new()) };
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs)?;
        let mut pids = Vec::new();
        for d in dirs {
            pids.extend(read_procs(&d)?);
        }
        Ok(pids)
    }
}

impl CgroupManager for Cgroups {
    fn create_task(&self, task: &str, budget: &TaskBudget) -> Result<(), CgroupError> {
        self.inner().create_task(task, budget)
    }
    fn read_budget(&self, task: &str) -> Result<TaskBudget, CgroupError> {
        self.inner().read_budget(task)
    }
    fn stats(&self, task: &str, container: Option<&str>) -> Result<Option<ResourceStats>, CgroupError> {
        self.inner().stats(task, container)
    }
    fn oom_kills(&self, task: &str, container: Option<&str>) -> Result<u64, CgroupError> {
        self.inner().oom_kills(task, container)
    }
    fn swap_limit_supported(&self) -> bool {
        self.inner().swap_limit_supported()
    }
    fn task_dirs(&self, task: &str) -> Vec<PathBuf> {
        self.inner().task_dirs(task)
    }
    fn runtime_path(&self, task: &str, container: &str) -> String {
        self.inner().runtime_path(task, container)
    }
}

fn validate_parent(parent: &str) -> Result<(), CgroupError> {
    let trimmed = parent.trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        });
    if ok { Ok(()) } else { Err(CgroupError::BadParent(parent.to_string())) }
}

/// `dir` and all directories below it, parents before children. Missing `dir` = nothing.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PathError::new("read dir", dir, e).into()),
    };
    out.push(dir.to_path_buf());
    for entry in entries {
        let entry = entry.map_err(|e| PathError::new("read dir", dir, e))?;
        if entry.file_type().map_err(|e| PathError::new("stat", entry.path(), e))?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

fn read_procs(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(PathError::new("read", path, e).into()),
    }
}

fn kill_procs(dir: &Path) -> Result<(), CgroupError> {
    for pid in read_procs(dir)? {
        // SAFETY: kill(2) has no memory-safety preconditions. The pid was just read from the
        // task's own cgroup, so it belongs to the task being torn down.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), PathError> {
    std::fs::write(path, value).map_err(|e| PathError::new("write", path, e))
}

pub(crate) fn read_file(path: &Path) -> Result<String, PathError> {
    std::fs::read_to_string(path).map_err(|e| PathError::new("read", path, e))
}

/// Reads a file if it exists; `None` when it does not.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, PathError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PathError::new("read", path, e)),
    }
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, PathError> {
    text.trim()
        .parse()
        .map_err(|_| PathError::new("parse", path, io::Error::new(io::ErrorKind::InvalidData, text.trim().to_string())))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::parse_mountinfo;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
34 30 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
36 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";

    #[test]
    fn detects_hybrid_as_v1_and_pure_v2_as_v2() {
        let cg = Cgroups::from_mounts(&parse_mountinfo(HYBRID), "flotilla").unwrap();
        assert_eq!(cg.version(), 1);
        let dirs = cg.task_dirs("t1");
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/systemd/flotilla/t1")));
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/unified/flotilla/t1")));
        assert_eq!(cg.runtime_path("t1", "web"), "/flotilla/t1/web");

        let v2 = "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = Cgroups::from_mounts(&parse_mountinfo(v2), "/flotilla/").unwrap();
        assert_eq!(cg.version(), 2);
        assert_eq!(cg.task_dirs("t1"), vec![PathBuf::from("/sys/fs/cgroup/flotilla/t1")]);
    }

    #[test]
    fn rejects_escaping_parents() {
        for bad in ["", "..", "a/../b", "a b", "/"] {
            assert!(Cgroups::from_mounts(&parse_mountinfo(HYBRID), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budget_from_task_units() {
        let spec = TaskSpec {
            task_id: "t".into(),
            cpu_units: 256,
            memory_mib: 512,
            pids_limit: None,
            pid_mode_task: false,
            ephemeral_storage_gib: None,
            hostname: None,
            volumes: vec![],
            containers: vec![],
        };
        let b = TaskBudget::from_spec(&spec);
        assert_eq!(b.cpu_quota_us, Some(25_000));
        assert_eq!(b.memory_limit_bytes, Some(512 << 20));
        assert_eq!(b.pids_max, 4096);
    }
}
