//! cgroup v2: one unified tree. A controller must be enabled in every ancestor's
//! `cgroup.subtree_control` before a child can use it, and a cgroup with processes cannot
//! enable any for its children, so only the levels above the leaves delegate. Device rules
//! are an eBPF program on the cgroup (`crate::devices`): v2 has no devices controller.

use std::path::{Path, PathBuf};

use flotilla_oci::Resources;

use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, Limits, Placement, Stats, keyed_value, parse_u64, read, read_counter,
    read_optional, shares_to_weight, write,
};

/// The controllers handed down to Flotilla's cgroups: what limits and resources use.
const WANTED: &[&str] = &["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
}

impl V2 {
    pub fn new(root: PathBuf) -> Self {
        V2 { root }
    }

    /// Enables our controllers for the children of `dir`, as far as `dir` itself has them.
    fn delegate(dir: &Path) -> Result<(), CgroupError> {
        let available = read(&dir.join("cgroup.controllers"))?;
        let enabled: Vec<String> =
            WANTED.iter().filter(|c| available.split_whitespace().any(|a| a == **c)).map(|c| format!("+{c}")).collect();
        if enabled.is_empty() {
            return Ok(());
        }
        let control = dir.join("cgroup.subtree_control");
        if write(&control, &enabled.join(" ")).is_err() {
            // One refused controller fails the whole write; enable the rest one by one.
            for c in &enabled {
                write(&control, c)?;
            }
        }
        Ok(())
    }

    /// `mkdir -p` one level at a time, each parent delegating to the level below. A level
    /// that already existed is someone else's to set up (the root is the host's; a task's
    /// level is the sandbox's), so a refusal there is not ours to report; a level made here
    /// must delegate. The leaf itself is left alone.
    fn make_dirs(&self, rel: &Path) -> Result<PathBuf, CgroupError> {
        let mut dir = self.root.clone();
        let mut made_parent = false;
        for part in rel.components() {
            let delegated = Self::delegate(&dir);
            if made_parent {
                delegated?;
            }
            dir.push(part);
            made_parent = match std::fs::create_dir(&dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(CgroupError::Io { op: "mkdir", path: dir, source: e }),
            };
        }
        Ok(dir)
    }
}

fn apply(dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    if let Some(m) = &r.memory {
        if let Some(limit) = m.limit {
            write(&dir.join("memory.max"), &limit.to_string())?;
            let swap_max = dir.join("memory.swap.max");
            if let Some(swap) = m.swap
                && swap_max.exists()
            {
                // OCI's swap is memory plus swap; v2 limits swap alone.
                write(&swap_max, &(swap - limit).max(0).to_string())?;
            }
        }
        if let Some(reservation) = m.reservation {
            write(&dir.join("memory.low"), &reservation.to_string())?;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(shares) = c.shares {
            write(&dir.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
        }
        if let Some(quota) = c.quota {
            write(&dir.join("cpu.max"), &format!("{quota} {}", c.period.unwrap_or(CPU_PERIOD_US)))?;
        }
    }
    crate::devices::attach(dir, &r.devices)
        .map_err(|source| CgroupError::DeviceFilter { path: dir.to_path_buf(), source })
}

impl CgroupManager for V2 {
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        vec![self.root.join(rel)]
    }

    fn all_dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.dirs(rel)
    }

    fn create(&self, rel: &Path, resources: &Resources, _at_parent: &[&str]) -> Result<Placement, CgroupError> {
        let dir = self.make_dirs(rel)?;
        apply(&dir, resources)?;
        Ok(Placement { own: vec![dir], parents: vec![] })
    }

    fn set_limits(&self, rel: &Path, limits: &Limits) -> Result<(), CgroupError> {
        let dir = self.make_dirs(rel)?;
        // The containers go below this level and use its controllers.
        Self::delegate(&dir)?;
        let quota = limits.cpu_quota_us.map_or("max".to_string(), |q| q.to_string());
        write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        let limit = limits.memory_limit_bytes.map_or("max".to_string(), |l| l.to_string());
        write(&dir.join("memory.max"), &limit)?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        write(&dir.join("pids.max"), &limits.pids_max.to_string())
    }

    fn limits(&self, rel: &Path) -> Result<Limits, CgroupError> {
        let dir = self.root.join(rel);
        let cpu_path = dir.join("cpu.max");
        let cpu = read(&cpu_path)?;
        let cpu_quota_us = match cpu.split_whitespace().next() {
            Some("max") | None => None,
            Some(q) => Some(parse_u64(&cpu_path, q)?),
        };
        let mem_path = dir.join("memory.max");
        let mem = read(&mem_path)?;
        let memory_limit_bytes = if mem.trim() == "max" { None } else { Some(parse_u64(&mem_path, &mem)?) };
        let pids_path = dir.join("pids.max");
        let pids = read(&pids_path)?;
        let pids_max = if pids.trim() == "max" { u64::MAX } else { parse_u64(&pids_path, &pids)? };
        Ok(Limits { cpu_quota_us, memory_limit_bytes, pids_max })
    }

    fn stats(&self, rel: &Path) -> Result<Option<Stats>, CgroupError> {
        let dir = self.root.join(rel);
        if !dir.exists() {
            return Ok(None);
        }
        let cpu = read_optional(&dir.join("cpu.stat"))?.unwrap_or_default();
        let memory_usage_bytes = read_counter(&dir.join("memory.current"))?;
        let max = read_optional(&dir.join("memory.max"))?;
        let memory_limit_bytes = max.as_deref().map(str::trim).filter(|m| *m != "max").and_then(|m| m.parse().ok());
        let stat = read_optional(&dir.join("memory.stat"))?.unwrap_or_default();
        let inactive_file = keyed_value(&stat, "inactive_file").unwrap_or(0);
        Ok(Some(Stats {
            cpu_usage_ns: keyed_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            memory_limit_bytes,
            pids: read_counter(&dir.join("pids.current"))?,
        }))
    }

    fn oom_kills(&self, rel: &Path) -> Result<u64, CgroupError> {
        // memory.events is hierarchical: a container's kill also counts at the task level.
        let path = self.root.join(rel).join("memory.events");
        Ok(read_optional(&path)?.and_then(|s| keyed_value(&s, "oom_kill")).unwrap_or(0))
    }

    fn swap_limit_supported(&self, parent: &Path) -> bool {
        self.root.join(parent).join("memory.swap.max").exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegates_controllers_and_writes_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        // Real cgroupfs fills these in on mkdir; the fake tree needs them up front.
        for d in ["fl", "fl/t1"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        }
        std::fs::write(root.join("fl/t1/memory.swap.max"), "max").unwrap();
        let m = V2::new(root.to_path_buf());
        let limits = Limits { cpu_quota_us: Some(25_000), memory_limit_bytes: Some(512 << 20), pids_max: 64 };
        let rel = Path::new("fl/t1");
        m.set_limits(rel, &limits).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(), "+cpu +memory +pids");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/cgroup.subtree_control")).unwrap(), "+cpu +memory +pids");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/cpu.max")).unwrap(), "25000 100000");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/memory.swap.max")).unwrap(), "0");
        assert_eq!(m.limits(rel).unwrap(), limits);

        std::fs::write(root.join("fl/t1/memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(m.oom_kills(rel).unwrap(), 1);
    }

    #[test]
    fn a_level_made_here_must_delegate_but_the_leaf_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let m = V2::new(root.to_path_buf());
        // A fake "fl" made here has no cgroup.controllers, as a broken hierarchy would not:
        // delegating from it fails, and so does making a level below it.
        let err = m.make_dirs(Path::new("fl/t1")).unwrap_err();
        assert!(err.to_string().contains("fl/cgroup.controllers"), "{err}");
        // The leaf of a path is never asked to delegate.
        let leaf = m.make_dirs(Path::new("other")).unwrap();
        assert!(!leaf.join("cgroup.subtree_control").exists());
    }
}
