//! cgroup v1: one hierarchy per controller (or a few co-mounted, e.g. `cpu,cpuacct`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, TaskBudget, keyed_value, parse_u64, read_file, read_optional, write_file,
};
use crate::error::PathError;
use crate::status::ResourceStats;

const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The kernel reports "no limit" as the largest page-aligned counter, not as a sentinel.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

#[derive(Debug, Clone)]
pub struct V1Manager {
    /// controller name -> its hierarchy's mount point.
    controllers: BTreeMap<String, PathBuf>,
    /// Every cgroup mount, named and unified ones included: cleanup looks in all of them.
    all_mounts: Vec<PathBuf>,
    parent: String,
}

impl V1Manager {
    /// `mounts` are (super options, mount point) of every `cgroup` filesystem; `extra` are
    /// other cgroup mounts (a hybrid host's cgroup2) that runc also populates.
    pub fn new(mounts: &[(String, PathBuf)], extra: Vec<PathBuf>, parent: String) -> Result<Self, CgroupError> {
        let mut controllers = BTreeMap::new();
        let mut all_mounts = Vec::new();
        for (options, mount_point) in mounts {
            for opt in options.split(',') {
                if CONTROLLERS.contains(&opt) {
                    controllers.entry(opt.to_string()).or_insert_with(|| mount_point.clone());
                }
            }
            if !all_mounts.contains(mount_point) {
                all_mounts.push(mount_point.clone());
            }
        }
        all_mounts.extend(extra);
        for required in ["cpu", "cpuacct", "memory", "pids"] {
            if !controllers.contains_key(required) {
                return Err(CgroupError::MissingController(required));
            }
        }
        Ok(V1Manager { controllers, all_mounts, parent })
    }

    fn dir(&self, controller: &str, task: &str, container: Option<&str>) -> PathBuf {
        // `new` checked the controllers this module uses.
        let mut p = self.controllers[controller].join(&self.parent).join(task);
        if let Some(c) = container {
            p.push(c);
        }
        p
    }

    fn mkdir(&self, controller: &str, task: &str) -> Result<PathBuf, PathError> {
        let dir = self.dir(controller, task, None);
        std::fs::create_dir_all(&dir).map_err(|e| PathError::new("mkdir", &dir, e))?;
        Ok(dir)
    }
}

impl CgroupManager for V1Manager {
    fn create_task(&self, task: &str, budget: &TaskBudget) -> Result<(), CgroupError> {
        let cpu = self.mkdir("cpu", task)?;
        write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = budget.cpu_quota_us.map_or("-1".to_string(), |q| q.to_string());
        write_file(&cpu.join("cpu.cfs_quota_us"), &quota)?;

        self.mkdir("cpuacct", task)?;

        let mem = self.mkdir("memory", task)?;
        let limit = budget.memory_limit_bytes.map_or("-1".to_string(), |l| l.to_string());
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // memsw must stay >= the memory limit at every step: lift it, set the limit, then
            // pin it to the limit so the task cannot swap.
            write_file(&memsw, "-1")?;
            write_file(&mem.join("memory.limit_in_bytes"), &limit)?;
            write_file(&memsw, &limit)?;
        } else {
            write_file(&mem.join("memory.limit_in_bytes"), &limit)?;
        }

        let pids = self.mkdir("pids", task)?;
        write_file(&pids.join("pids.max"), &budget.pids_max.to_string())?;
        Ok(())
    }

    fn read_budget(&self, task: &str) -> Result<TaskBudget, CgroupError> {
        let cpu = self.dir("cpu", task, None);
        let quota_path = cpu.join("cpu.cfs_quota_us");
        let quota = read_file(&quota_path)?;
        let cpu_quota_us = match quota.trim() {
            "-1" => None,
            q => Some(parse_u64(&quota_path, q)?),
        };
        let limit_path = self.dir("memory", task, None).join("memory.limit_in_bytes");
        let limit = parse_u64(&limit_path, &read_file(&limit_path)?)?;
        let pids_path = self.dir("pids", task, None).join("pids.max");
        let pids = read_file(&pids_path)?;
        let pids_max = if pids.trim() == "max" { u64::MAX } else { parse_u64(&pids_path, &pids)? };
        Ok(TaskBudget { cpu_quota_us, memory_limit_bytes: (limit < UNLIMITED_THRESHOLD).then_some(limit), pids_max })
    }

    fn stats(&self, task: &str, container: Option<&str>) -> Result<Option<ResourceStats>, CgroupError> {
        let mem = self.dir("memory", task, container);
        if !mem.exists() {
            return Ok(None);
        }
        let usage_path = self.dir("cpuacct", task, container).join("cpuacct.usage");
        let cpu_usage_ns = match read_optional(&usage_path)? {
            Some(s) => parse_u64(&usage_path, &s)?,
            None => 0,
        };
        let usage_path = mem.join("memory.usage_in_bytes");
        let memory_usage_bytes = parse_u64(&usage_path, &read_file(&usage_path)?)?;
        let limit_path = mem.join("memory.limit_in_bytes");
        let limit = parse_u64(&limit_path, &read_file(&limit_path)?)?;
        let stat = read_file(&mem.join("memory.stat"))?;
        let inactive_file = keyed_value(&stat, "total_inactive_file").unwrap_or(0);
        let pids_path = self.dir("pids", task, container).join("pids.current");
        let pids = match read_optional(&pids_path)? {
            Some(s) => parse_u64(&pids_path, &s)?,
            None => 0,
        };
        Ok(Some(ResourceStats {
            cpu_usage_ns,
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            memory_limit_bytes: (limit < UNLIMITED_THRESHOLD).then_some(limit),
            pids,
        }))
    }

    fn oom_kills(&self, task: &str, container: Option<&str>) -> Result<u64, CgroupError> {
        let path = self.dir("memory", task, container).join("memory.oom_control");
        Ok(read_optional(&path)?.and_then(|s| keyed_value(&s, "oom_kill")).unwrap_or(0))
    }

    fn swap_limit_supported(&self) -> bool {
        self.controllers["memory"].join("memory.memsw.limit_in_bytes").exists()
    }

    fn task_dirs(&self, task: &str) -> Vec<PathBuf> {
        self.all_mounts.iter().map(|m| m.join(&self.parent).join(task)).collect()
    }

    fn runtime_path(&self, task: &str, container: &str) -> String {
        format!("/{}/{task}/{container}", self.parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake hierarchy in a temp dir: control files are plain files there.
    fn fake() -> (tempfile::TempDir, V1Manager) {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = Vec::new();
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            let m = dir.path().join(c);
            std::fs::create_dir_all(&m).unwrap();
            mounts.push((format!("rw,{c}"), m));
        }
        std::fs::write(dir.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("memory/fl/t1")).unwrap();
        std::fs::write(dir.path().join("memory/fl/t1/memory.memsw.limit_in_bytes"), "").unwrap();
        let m = V1Manager::new(&mounts, vec![], "fl".into()).unwrap();
        (dir, m)
    }

    #[test]
    fn writes_and_reads_back_the_budget() {
        let (dir, m) = fake();
        let budget = TaskBudget { cpu_quota_us: Some(50_000), memory_limit_bytes: Some(1 << 30), pids_max: 100 };
        m.create_task("t1", &budget).unwrap();
        assert_eq!(m.read_budget("t1").unwrap(), budget);
        let memsw = std::fs::read_to_string(dir.path().join("memory/fl/t1/memory.memsw.limit_in_bytes")).unwrap();
        assert_eq!(memsw, (1u64 << 30).to_string());
        assert_eq!(std::fs::read_to_string(dir.path().join("cpu/fl/t1/cpu.cfs_period_us")).unwrap(), "100000");
        assert!(m.swap_limit_supported());
    }

    #[test]
    fn missing_controller_is_an_error() {
        let err = V1Manager::new(&[("rw,cpu".into(), "/x".into())], vec![], "fl".into()).unwrap_err();
        assert!(matches!(err, CgroupError::MissingController(_)));
    }
}
