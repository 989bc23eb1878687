//! The container's cgroup: `linux.cgroupsPath` in every hierarchy (cgroup v1: one per
//! controller, named ones too, as runc joins them all; v2: the one tree), with the container's
//! shares, limits and device rules written before any of its processes join.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_sandbox::oci::{DeviceRule, Resources};

use crate::sys::err_at;

/// One mounted hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The mount's options naming what it holds: `cpu`, `cpu,cpuacct`, `name=systemd`; empty
    /// for cgroup v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The data string that mounts this hierarchy again (inside the container).
    pub fn mount_data(&self) -> String {
        self.controllers.join(",")
    }
}

/// The host's hierarchies: the cgroup2 tree alone when it is mounted at `/sys/fs/cgroup`,
/// otherwise every v1 hierarchy (a hybrid's cgroup2 mount holds no controller we use).
pub fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    let mounts = flotilla_sandbox::mount::mountinfo().map_err(io::Error::other)?;
    if let Some(m) = mounts.iter().find(|m| m.fs_type == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup")) {
        return Ok(vec![Hierarchy { mount: m.mount_point.clone(), controllers: vec![], v2: true }]);
    }
    let v1: Vec<Hierarchy> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .map(|m| Hierarchy {
            mount: m.mount_point.clone(),
            controllers: m
                .super_options
                .split(',')
                .filter(|o| !["rw", "ro", "xattr", "clone_children", "noprefix"].contains(o) && !o.is_empty())
                .map(str::to_string)
                .collect(),
            v2: false,
        })
        .collect();
    if v1.is_empty() {
        return Err(io::Error::other("no cgroup hierarchy is mounted"));
    }
    Ok(v1)
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| err_at(&format!("writing {value:?} to"), &path, e))
}

fn relative(path: &str) -> io::Result<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cgroupsPath {path:?} is not a plain path")));
    }
    Ok(PathBuf::from(rel))
}

/// Makes the container's cgroup in every hierarchy and writes its resources. Returns the
/// directories, in the order of `hierarchies`.
pub fn create(hierarchies: &[Hierarchy], path: &str, resources: &Resources) -> io::Result<Vec<PathBuf>> {
    let rel = relative(path)?;
    let mut dirs = Vec::with_capacity(hierarchies.len());
    for h in hierarchies {
        let dir = h.mount.join(&rel);
        make_dirs(h, &rel)?;
        if h.v2 {
            apply_v2(&dir, resources)?;
            crate::devices::attach(&dir, &resources.devices)?;
        } else {
            apply_v1(h, &dir, resources)?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// `mkdir -p` one level at a time: a new cpuset cgroup starts with no CPUs and no memory
/// nodes, so it gets its parent's; on v2 each parent must hand its controllers down.
fn make_dirs(h: &Hierarchy, rel: &Path) -> io::Result<()> {
    let mut dir = h.mount.clone();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        if h.v2 {
            enable_v2_controllers(&parent);
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err_at("mkdir", &dir, e)),
        }
        if h.has("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(parent.join(file)).map_err(|e| err_at("read", &parent, e))?;
                write(&dir, file, value.trim())?;
            }
        }
    }
    Ok(())
}

fn enable_v2_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else { return };
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| ["cpu", "memory", "pids", "io", "cpuset"].contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    // Best effort: the root's is set by the host, and a parent that already delegates is fine.
    let _ = std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "));
}

fn device_line(r: &DeviceRule) -> String {
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    match r.kind.as_deref() {
        None | Some("a") => "a *:* rwm".to_string(),
        Some(kind) => format!("{kind} {}:{} {}", num(r.major), num(r.minor), r.access),
    }
}

fn apply_v1(h: &Hierarchy, dir: &Path, r: &Resources) -> io::Result<()> {
    if h.has("memory")
        && let Some(m) = &r.memory
    {
        if let Some(limit) = m.limit {
            write(dir, "memory.limit_in_bytes", &limit.to_string())?;
        }
        if let Some(swap) = m.swap
            && dir.join("memory.memsw.limit_in_bytes").exists()
        {
            write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
        }
        if let Some(reservation) = m.reservation {
            write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
    }
    if h.has("cpu")
        && let Some(c) = &r.cpu
    {
        if let Some(shares) = c.shares {
            write(dir, "cpu.shares", &shares.to_string())?;
        }
        if let Some(period) = c.period {
            write(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
        if let Some(quota) = c.quota {
            write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        }
    }
    if h.has("devices") {
        for rule in &r.devices {
            write(dir, if rule.allow { "devices.allow" } else { "devices.deny" }, &device_line(rule))?;
        }
    }
    Ok(())
}

/// cgroup v2 weight from v1 shares, as runc converts them: [2, 262144] onto [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 { 0 } else { 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142 }
}

fn apply_v2(dir: &Path, r: &Resources) -> io::Result<()> {
    if let Some(m) = &r.memory {
        if let Some(limit) = m.limit {
            write(dir, "memory.max", &limit.to_string())?;
            if let Some(swap) = m.swap
                && dir.join("memory.swap.max").exists()
            {
                write(dir, "memory.swap.max", &(swap - limit).max(0).to_string())?;
            }
        }
        if let Some(reservation) = m.reservation {
            write(dir, "memory.low", &reservation.to_string())?;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(shares) = c.shares {
            write(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if let Some(quota) = c.quota {
            write(dir, "cpu.max", &format!("{quota} {}", c.period.unwrap_or(100_000)))?;
        }
    }
    Ok(())
}

/// Moves the calling process into the container's cgroup in every hierarchy.
pub fn join(dirs: &[PathBuf]) -> io::Result<()> {
    for d in dirs {
        write(d, "cgroup.procs", "0")?;
    }
    Ok(())
}

/// Removes the container's cgroup directories once their processes are gone (waiting up to
/// `wait` for the kernel to finish tearing them down).
pub fn remove(dirs: &[PathBuf], wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    for d in dirs {
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(err_at("rmdir", d, e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_are_written_as_the_devices_controller_reads_them() {
        let deny_all = DeviceRule { allow: false, kind: None, major: None, minor: None, access: "rwm".into() };
        assert_eq!(device_line(&deny_all), "a *:* rwm");
        let null =
            DeviceRule { allow: true, kind: Some("c".into()), major: Some(1), minor: Some(3), access: "rwm".into() };
        assert_eq!(device_line(&null), "c 1:3 rwm");
        let pts =
            DeviceRule { allow: true, kind: Some("c".into()), major: Some(136), minor: None, access: "rwm".into() };
        assert_eq!(device_line(&pts), "c 136:* rwm");
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
}
