//! cgroup v2: one unified tree; controllers must be enabled in every ancestor's
//! `cgroup.subtree_control` before a child can use them.

use std::path::{Path, PathBuf};

use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, TaskBudget, keyed_value, parse_u64, read_file, read_optional, write_file,
};
use crate::error::PathError;
use crate::status::ResourceStats;

const WANTED: &[&str] = &["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    parent: String,
}

impl V2Manager {
    pub fn new(root: PathBuf, parent: String) -> Self {
        V2Manager { root, parent }
    }

    fn dir(&self, task: &str, container: Option<&str>) -> PathBuf {
        let mut p = self.root.join(&self.parent).join(task);
        if let Some(c) = container {
            p.push(c);
        }
        p
    }

    /// Enables our controllers for the children of `dir`, as far as `dir` itself has them.
    fn delegate(&self, dir: &Path) -> Result<(), PathError> {
        let available = read_file(&dir.join("cgroup.controllers"))?;
        let enabled: Vec<String> =
            WANTED.iter().filter(|c| available.split_whitespace().any(|a| a == **c)).map(|c| format!("+{c}")).collect();
        if enabled.is_empty() {
            return Ok(());
        }
        let control = dir.join("cgroup.subtree_control");
        if write_file(&control, &enabled.join(" ")).is_err() {
            // One refused controller fails the whole write; enable the rest one by one.
            for c in &enabled {
                write_file(&control, c)?;
            }
        }
        Ok(())
    }
}

impl CgroupManager for V2Manager {
    fn create_task(&self, task: &str, budget: &TaskBudget) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        self.delegate(&dir)?;
        for component in Path::new(&self.parent).components().chain(Path::new(task).components()) {
            dir.push(component);
            if let Err(e) = std::fs::create_dir(&dir)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(PathError::new("mkdir", &dir, e).into());
            }
            self.delegate(&dir)?;
        }
        let quota = budget.cpu_quota_us.map_or("max".to_string(), |q| q.to_string());
        write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        let limit = budget.memory_limit_bytes.map_or("max".to_string(), |l| l.to_string());
        write_file(&dir.join("memory.max"), &limit)?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write_file(&swap, "0")?;
        }
        write_file(&dir.join("pids.max"), &budget.pids_max.to_string())?;
        Ok(())
    }

    fn read_budget(&self, task: &str) -> Result<TaskBudget, CgroupError> {
        let dir = self.dir(task, None);
        let cpu_path = dir.join("cpu.max");
        let cpu = read_file(&cpu_path)?;
        let cpu_quota_us = match cpu.split_whitespace().next() {
            Some("max") | None => None,
            Some(q) => Some(parse_u64(&cpu_path, q)?),
        };
        let mem_path = dir.join("memory.max");
        let mem = read_file(&mem_path)?;
        let memory_limit_bytes = if mem.trim() == "max" { None } else { Some(parse_u64(&mem_path, &mem)?) };
        let pids_path = dir.join("pids.max");
        let pids = read_file(&pids_path)?;
        let pids_max = if pids.trim() == "max" { u64::MAX } else { parse_u64(&pids_path, &pids)? };
        Ok(TaskBudget { cpu_quota_us, memory_limit_bytes, pids_max })
    }

    fn stats(&self, task: &str, container: Option<&str>) -> Result<Option<ResourceStats>, CgroupError> {
        let dir = self.dir(task, container);
        if !dir.exists() {
            return Ok(None);
        }
        let cpu = read_optional(&dir.join("cpu.stat"))?.unwrap_or_default();
        let current_path = dir.join("memory.current");
        let memory_usage_bytes = match read_optional(&current_path)? {
            Some(s) => parse_u64(&current_path, &s)?,
            None => 0,
        };
        let max = read_optional(&dir.join("memory.max"))?;
        let memory_limit_bytes = max.as_deref().map(str::trim).filter(|m| *m != "max").and_then(|m| m.parse().ok());
        let stat = read_optional(&dir.join("memory.stat"))?.unwrap_or_default();
        let inactive_file = keyed_value(&stat, "inactive_file").unwrap_or(0);
        let pids_path = dir.join("pids.current");
        let pids = match read_optional(&pids_path)? {
            Some(s) => parse_u64(&pids_path, &s)?,
            None => 0,
        };
        Ok(Some(ResourceStats {
            cpu_usage_ns: keyed_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            memory_limit_bytes,
            pids,
        }))
    }

    fn oom_kills(&self, task: &str, container: Option<&str>) -> Result<u64, CgroupError> {
        // memory.events is hierarchical: a container's kill also counts at the task level.
        let path = self.dir(task, container).join("memory.events");
        Ok(read_optional(&path)?.and_then(|s| keyed_value(&s, "oom_kill")).unwrap_or(0))
    }

    fn swap_limit_supported(&self) -> bool {
        // The root has no memory.* files; probe the parent (created by the first task).
        self.root.join(&self.parent).join("memory.swap.max").exists()
    }

    fn task_dirs(&self, task: &str) -> Vec<PathBuf> {
        vec![self.dir(task, None)]
    }

    fn runtime_path(&self, task: &str, container: &str) -> String {
        format!("/{}/{task}/{container}", self.parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegates_controllers_and_writes_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        // Real cgroupfs fills these in on mkdir; the fake tree needs them up front.
        for d in ["fl", "fl/t1"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        }
        std::fs::write(root.join("fl/t1/memory.swap.max"), "max").unwrap();
        let m = V2Manager::new(root.to_path_buf(), "fl".into());
        let budget = TaskBudget { cpu_quota_us: Some(25_000), memory_limit_bytes: Some(512 << 20), pids_max: 64 };
        m.create_task("t1", &budget).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(), "+cpu +memory +pids");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/cgroup.subtree_control")).unwrap(), "+cpu +memory +pids");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/cpu.max")).unwrap(), "25000 100000");
        assert_eq!(std::fs::read_to_string(root.join("fl/t1/memory.swap.max")).unwrap(), "0");
        assert_eq!(m.read_budget("t1").unwrap(), budget);

        std::fs::write(root.join("fl/t1/memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(m.oom_kills("t1", None).unwrap(), 1);
    }
}
