//! cgroup v1: one hierarchy per controller (or a few co-mounted, e.g. `cpu,cpuacct`), plus
//! named ones (`name=systemd`) that hold no controller but that runc joins all the same.

use std::io;
use std::path::{Path, PathBuf};

use flotilla_oci::{DeviceRule, Resources};

use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, Limits, Placement, Stats, keyed_value, parse_u64, read, read_counter,
    read_optional, write,
};

/// The kernel reports "no limit" as the largest page-aligned counter, not as a sentinel.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// The controllers a budget is written to; the rest of the hierarchies only get the
/// container's own cgroups.
const LIMIT_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The mount's options naming what it holds: `cpu`, `cpuacct`, `name=systemd`.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    /// `super_options` are the mount's, from mountinfo (`rw,cpu,cpuacct`).
    pub fn new(mount: PathBuf, super_options: &str) -> Self {
        let controllers = super_options
            .split(',')
            .filter(|o| !o.is_empty() && !["rw", "ro", "xattr", "clone_children", "noprefix"].contains(o))
            .map(str::to_string)
            .collect();
        Hierarchy { mount, controllers }
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The data string that mounts this hierarchy again (inside the container).
    pub fn mount_data(&self) -> String {
        self.controllers.join(",")
    }
}

#[derive(Debug, Clone)]
pub struct V1 {
    hierarchies: Vec<Hierarchy>,
    /// Other cgroup mounts (a hybrid host's cgroup2) that runc also populates.
    also_mounted: Vec<PathBuf>,
}

impl V1 {
    pub fn new(hierarchies: Vec<Hierarchy>, also_mounted: Vec<PathBuf>) -> Self {
        V1 { hierarchies, also_mounted }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// Fails unless each of `controllers` is mounted.
    pub fn require(&self, controllers: &[&'static str]) -> Result<(), CgroupError> {
        controllers.iter().try_for_each(|c| self.hierarchy(c).map(drop))
    }

    fn hierarchy(&self, controller: &'static str) -> Result<&Hierarchy, CgroupError> {
        self.hierarchies.iter().find(|h| h.has(controller)).ok_or(CgroupError::MissingController(controller))
    }

    fn dir(&self, controller: &'static str, rel: &Path) -> Result<PathBuf, CgroupError> {
        Ok(self.hierarchy(controller)?.mount.join(rel))
    }

    /// `rel`'s directory for `controller`, or its parent's when `rel` exists (in cpuacct) but
    /// has no level of its own there: a container placed `at_parent` counts in its task's.
    fn dir_or_parent(&self, controller: &'static str, rel: &Path) -> Result<PathBuf, CgroupError> {
        let dir = self.dir(controller, rel)?;
        match rel.parent() {
            Some(up) if !dir.exists() && !up.as_os_str().is_empty() && self.dir("cpuacct", rel)?.exists() => {
                self.dir(controller, up)
            }
            _ => Ok(dir),
        }
    }
}

/// Whether `r` would write anything into hierarchy `h`.
fn sets_anything(h: &Hierarchy, r: &Resources) -> bool {
    (h.has("memory") && r.memory.is_some())
        || (h.has("cpu") && r.cpu.is_some())
        || (h.has("devices") && !r.devices.is_empty())
}

/// `mkdir -p` one level at a time: a new cpuset cgroup starts with no CPUs and no memory
/// nodes, so each level made here gets its parent's.
fn make_dirs(h: &Hierarchy, rel: &Path) -> Result<PathBuf, CgroupError> {
    let mut dir = h.mount.clone();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CgroupError::Io { op: "mkdir", path: dir, source: e }),
        }
        if h.has("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = read(&parent.join(file))?;
                write(&dir.join(file), value.trim())?;
            }
        }
    }
    Ok(dir)
}

fn device_line(r: &DeviceRule) -> String {
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    match r.kind.as_deref() {
        None | Some("a") => "a *:* rwm".to_string(),
        Some(kind) => format!("{kind} {}:{} {}", num(r.major), num(r.minor), r.access),
    }
}

fn apply(h: &Hierarchy, dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    if h.has("memory")
        && let Some(m) = &r.memory
    {
        if let Some(limit) = m.limit {
            write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
        }
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if let Some(swap) = m.swap
            && memsw.exists()
        {
            write(&memsw, &swap.to_string())?;
        }
        if let Some(reservation) = m.reservation {
            write(&dir.join("memory.soft_limit_in_bytes"), &reservation.to_string())?;
        }
    }
    if h.has("cpu")
        && let Some(c) = &r.cpu
    {
        if let Some(shares) = c.shares {
            write(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(period) = c.period {
            write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = c.quota {
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
    }
    if h.has("devices") {
        for rule in &r.devices {
            let file = if rule.allow { "devices.allow" } else { "devices.deny" };
            write(&dir.join(file), &device_line(rule))?;
        }
    }
    Ok(())
}

impl CgroupManager for V1 {
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.mount.join(rel)).collect()
    }

    fn all_dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut mounts: Vec<&PathBuf> = Vec::new();
        for m in self.hierarchies.iter().map(|h| &h.mount).chain(&self.also_mounted) {
            if !mounts.contains(&m) {
                mounts.push(m);
            }
        }
        mounts.into_iter().map(|m| m.join(rel)).collect()
    }

    fn create(&self, rel: &Path, resources: &Resources, at_parent: &[&str]) -> Result<Placement, CgroupError> {
        let mut placed = Placement::default();
        let up = rel.parent().filter(|p| !p.as_os_str().is_empty());
        for h in &self.hierarchies {
            let shallow = !h.controllers.is_empty() && h.controllers.iter().all(|c| at_parent.contains(&c.as_str()));
            match up {
                Some(up) if shallow => {
                    if sets_anything(h, resources) {
                        return Err(CgroupError::AtParent(h.controllers.join(",")));
                    }
                    placed.parents.push(make_dirs(h, up)?);
                }
                _ => {
                    let dir = make_dirs(h, rel)?;
                    apply(h, &dir, resources)?;
                    placed.own.push(dir);
                }
            }
        }
        Ok(placed)
    }

    fn set_limits(&self, rel: &Path, limits: &Limits) -> Result<(), CgroupError> {
        for c in LIMIT_CONTROLLERS {
            make_dirs(self.hierarchy(c)?, rel)?;
        }
        let cpu = self.dir("cpu", rel)?;
        write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = limits.cpu_quota_us.map_or("-1".to_string(), |q| q.to_string());
        write(&cpu.join("cpu.cfs_quota_us"), &quota)?;

        let mem = self.dir("memory", rel)?;
        let limit = limits.memory_limit_bytes.map_or("-1".to_string(), |l| l.to_string());
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // memsw must stay >= the memory limit at every step: lift it, set the limit, then
            // pin it to the limit so the cgroup cannot swap.
            write(&memsw, "-1")?;
            write(&mem.join("memory.limit_in_bytes"), &limit)?;
            write(&memsw, &limit)?;
        } else {
            write(&mem.join("memory.limit_in_bytes"), &limit)?;
        }

        write(&self.dir("pids", rel)?.join("pids.max"), &limits.pids_max.to_string())
    }

    fn limits(&self, rel: &Path) -> Result<Limits, CgroupError> {
        let quota_path = self.dir("cpu", rel)?.join("cpu.cfs_quota_us");
        let quota = read(&quota_path)?;
        let cpu_quota_us = match quota.trim() {
            "-1" => None,
            q => Some(parse_u64(&quota_path, q)?),
        };
        let limit_path = self.dir("memory", rel)?.join("memory.limit_in_bytes");
        let limit = parse_u64(&limit_path, &read(&limit_path)?)?;
        let pids_path = self.dir("pids", rel)?.join("pids.max");
        let pids = read(&pids_path)?;
        let pids_max = if pids.trim() == "max" { u64::MAX } else { parse_u64(&pids_path, &pids)? };
        Ok(Limits { cpu_quota_us, memory_limit_bytes: (limit < UNLIMITED_THRESHOLD).then_some(limit), pids_max })
    }

    fn stats(&self, rel: &Path) -> Result<Option<Stats>, CgroupError> {
        let cpuacct = self.dir("cpuacct", rel)?;
        if !cpuacct.exists() {
            return Ok(None);
        }
        let mem = self.dir_or_parent("memory", rel)?;
        let cpu_usage_ns = read_counter(&cpuacct.join("cpuacct.usage"))?;
        let usage_path = mem.join("memory.usage_in_bytes");
        let memory_usage_bytes = parse_u64(&usage_path, &read(&usage_path)?)?;
        let limit_path = mem.join("memory.limit_in_bytes");
        let limit = parse_u64(&limit_path, &read(&limit_path)?)?;
        let stat = read(&mem.join("memory.stat"))?;
        let inactive_file = keyed_value(&stat, "total_inactive_file").unwrap_or(0);
        let pids = read_counter(&self.dir_or_parent("pids", rel)?.join("pids.current"))?;
        Ok(Some(Stats {
            cpu_usage_ns,
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            memory_limit_bytes: (limit < UNLIMITED_THRESHOLD).then_some(limit),
            pids,
        }))
    }

    fn oom_kills(&self, rel: &Path) -> Result<u64, CgroupError> {
        let path = self.dir_or_parent("memory", rel)?.join("memory.oom_control");
        Ok(read_optional(&path)?.and_then(|s| keyed_value(&s, "oom_kill")).unwrap_or(0))
    }

    fn swap_limit_supported(&self, _parent: &Path) -> bool {
        // Swap accounting is a boot-time switch: the root shows it as well as any cgroup.
        self.hierarchy("memory").is_ok_and(|h| h.mount.join("memory.memsw.limit_in_bytes").exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake hierarchy in a temp dir: control files are plain files there.
    fn fake() -> (tempfile::TempDir, V1) {
        let dir = tempfile::tempdir().unwrap();
        let mut hierarchies = Vec::new();
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            let m = dir.path().join(c);
            std::fs::create_dir_all(&m).unwrap();
            hierarchies.push(Hierarchy::new(m, &format!("rw,{c}")));
        }
        std::fs::write(dir.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("memory/fl/t1")).unwrap();
        std::fs::write(dir.path().join("memory/fl/t1/memory.memsw.limit_in_bytes"), "").unwrap();
        (dir, V1::new(hierarchies, vec![]))
    }

    #[test]
    fn writes_and_reads_back_the_limits() {
        let (dir, m) = fake();
        let limits = Limits { cpu_quota_us: Some(50_000), memory_limit_bytes: Some(1 << 30), pids_max: 100 };
        m.set_limits(Path::new("fl/t1"), &limits).unwrap();
        assert_eq!(m.limits(Path::new("fl/t1")).unwrap(), limits);
        let memsw = std::fs::read_to_string(dir.path().join("memory/fl/t1/memory.memsw.limit_in_bytes")).unwrap();
        assert_eq!(memsw, (1u64 << 30).to_string());
        assert_eq!(std::fs::read_to_string(dir.path().join("cpu/fl/t1/cpu.cfs_period_us")).unwrap(), "100000");
        assert!(m.swap_limit_supported(Path::new("fl")));
    }

    #[test]
    fn at_parent_hierarchies_get_no_level_and_take_no_resources() {
        let (dir, m) = fake();
        let cpu = flotilla_oci::Cpu { shares: Some(2), quota: None, period: None };
        let r = Resources { cpu: Some(cpu), ..Default::default() };
        let placed = m.create(Path::new("fl/t1/web"), &r, &["memory", "pids"]).unwrap();
        let d = dir.path();
        assert_eq!(placed.own, vec![d.join("cpu/fl/t1/web"), d.join("cpuacct/fl/t1/web")]);
        assert_eq!(placed.parents, vec![d.join("memory/fl/t1"), d.join("pids/fl/t1")]);
        assert!(!d.join("memory/fl/t1/web").exists() && !d.join("pids/fl/t1/web").exists());
        assert_eq!(std::fs::read_to_string(d.join("cpu/fl/t1/web/cpu.shares")).unwrap(), "2");

        let memory = flotilla_oci::Memory { limit: Some(1 << 20), reservation: None, swap: None };
        let r = Resources { memory: Some(memory), ..Default::default() };
        let err = m.create(Path::new("fl/t1/db"), &r, &["memory"]).unwrap_err();
        assert!(matches!(err, CgroupError::AtParent(ref c) if c == "memory"), "{err}");
    }

    #[test]
    fn missing_controller_is_an_error() {
        let m = V1::new(vec![Hierarchy::new("/x".into(), "rw,cpu")], vec![]);
        assert!(matches!(m.require(&LIMIT_CONTROLLERS), Err(CgroupError::MissingController("cpuacct"))));
        assert!(m.require(&["cpu"]).is_ok());
    }

    #[test]
    fn a_new_cpuset_level_gets_its_parents_cpus_and_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(dir.path().join("cpuset.mems"), "0\n").unwrap();
        let h = Hierarchy::new(dir.path().to_path_buf(), "rw,cpuset");
        // Real cgroupfs makes the files on mkdir; the fake level gets them from make_dirs.
        let made = make_dirs(&h, Path::new("fl")).unwrap();
        assert_eq!(std::fs::read_to_string(made.join("cpuset.cpus")).unwrap(), "0-3");
        assert_eq!(std::fs::read_to_string(made.join("cpuset.mems")).unwrap(), "0");
    }

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
}
