//! Task cgroups, on the one cgroup layer the runtime and the sandbox share
//! (`flotilla_runtime::cgroup`: v1 and v2 behind one trait). This module only decides the
//! layout and what a task's budget is.
//!
//! Layout, on either version: `<parent>/<task-id>` holds the task's budget (CPU quota, hard
//! memory limit without swap, pids limit); `<parent>/<task-id>/<container>` is created by the
//! OCI runtime from `linux.cgroupsPath` and holds the container's own shares and limits. The
//! agent's own cgroup is never used as the parent: on v2 a cgroup with processes cannot
//! delegate controllers to children, so `<parent>` hangs off the hierarchy root, as Docker's
//! `/docker` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_runtime::cgroup::CgroupManager;
pub use flotilla_runtime::cgroup::{CPU_PERIOD_US, CgroupError, Limits as TaskBudget};

use crate::mount::MountInfo;
use crate::status::ResourceStats;
use crate::task::TaskSpec;

/// The v1 controllers a task's budget and stats need.
const REQUIRED_V1: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

/// The resources a whole task may use.
pub fn task_budget(spec: &TaskSpec) -> TaskBudget {
    TaskBudget {
        // 1024 units = one vCPU = one full period per period. The kernel's floor is 1 ms.
        cpu_quota_us: (spec.cpu_units > 0).then(|| (spec.cpu_units as u64 * CPU_PERIOD_US / 1024).max(1000)),
        memory_limit_bytes: (spec.memory_mib > 0).then_some(spec.memory_mib << 20),
        pids_max: spec.pids_limit(),
    }
}

/// The host's cgroups, detected once, and the parent every task's cgroup hangs off.
#[derive(Debug, Clone)]
pub struct Cgroups {
    host: flotilla_runtime::cgroup::Cgroups,
    parent: String,
}

impl Cgroups {
    /// Detects the host's layout from its cgroup mounts (as the agent passed them down, else
    /// `/proc/self/mountinfo`): pure v2 when `/sys/fs/cgroup` is cgroup2, otherwise v1 (a
    /// hybrid's unified mount is remembered for cleanup only).
    pub fn detect(parent: &str) -> Result<Self, CgroupError> {
        let mounts = flotilla_runtime::mountinfo::cgroup_mounts().map_err(|source| CgroupError::Io {
            op: "read",
            path: flotilla_runtime::mountinfo::PATH.into(),
            source,
        })?;
        Self::from_mounts(&mounts, parent)
    }

    pub fn from_mounts(mounts: &[MountInfo], parent: &str) -> Result<Self, CgroupError> {
        validate_parent(parent)?;
        let host = flotilla_runtime::cgroup::Cgroups::from_mounts(mounts)?;
        if let flotilla_runtime::cgroup::Cgroups::V1(v1) = &host {
            v1.require(REQUIRED_V1)?;
        }
        Ok(Cgroups { host, parent: parent.trim_matches('/').to_string() })
    }

    pub fn version(&self) -> u8 {
        self.host.version()
    }

    fn rel(&self, task: &str, container: Option<&str>) -> PathBuf {
        let mut p = Path::new(&self.parent).join(task);
        if let Some(c) = container {
            p.push(c);
        }
        p
    }

    /// Creates `<parent>/<task>` with its budget. Idempotent: re-applies the budget.
    pub fn create_task(&self, task: &str, budget: &TaskBudget) -> Result<(), CgroupError> {
        self.host.set_limits(&self.rel(task, None), budget)
    }

    /// The budget as the kernel has it (what was written, read back).
    pub fn read_budget(&self, task: &str) -> Result<TaskBudget, CgroupError> {
        self.host.limits(&self.rel(task, None))
    }

    /// Usage of the task (`container: None`) or one container; `None` if the cgroup does not exist.
    pub fn stats(&self, task: &str, container: Option<&str>) -> Result<Option<ResourceStats>, CgroupError> {
        Ok(self.host.stats(&self.rel(task, container))?.map(|s| ResourceStats {
            cpu_usage_ns: s.cpu_usage_ns,
            memory_usage_bytes: s.memory_usage_bytes,
            memory_working_set_bytes: s.memory_working_set_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids: s.pids,
        }))
    }

    /// How many times the OOM killer has killed a process in this cgroup.
    pub fn oom_kills(&self, task: &str, container: Option<&str>) -> Result<u64, CgroupError> {
        self.host.oom_kills(&self.rel(task, container))
    }

    /// Whether swap can be limited (v1 swap accounting, v2 `memory.swap.max`).
    pub fn swap_limit_supported(&self) -> bool {
        self.host.swap_limit_supported(Path::new(&self.parent))
    }

    /// Every directory this task may have in any hierarchy (runc creates the task level in
    /// hierarchies we do not configure, e.g. cpuset, freezer, name=systemd).
    pub fn task_dirs(&self, task: &str) -> Vec<PathBuf> {
        self.host.all_dirs(&self.rel(task, None))
    }

    /// The `linux.cgroupsPath` the OCI runtime gets for a container.
    pub fn runtime_path(&self, task: &str, container: &str) -> String {
        format!("/{}/{task}/{container}", self.parent)
    }

    /// Removes the task's cgroups in every hierarchy, deepest first. Processes still inside
    /// are SIGKILLed; emptied cgroups can stay busy for a moment, so this retries until
    /// `deadline`. Idempotent.
    pub fn remove_task(&self, task: &str, deadline: Duration) -> Result<(), CgroupError> {
        flotilla_runtime::cgroup::remove(&self.task_dirs(task), deadline)
    }

    /// PIDs of every process in the task's cgroup tree (one hierarchy is enough).
    pub fn task_pids(&self, task: &str) -> Result<Vec<u32>, CgroupError> {
        match self.task_dirs(task).first() {
            Some(top) => flotilla_runtime::cgroup::tree_procs(top),
            None => Ok(Vec::new()),
        }
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
    if ok { Ok(()) } else { Err(CgroupError::BadPath(parent.to_string())) }
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
    fn a_v1_host_needs_the_budget_controllers() {
        let no_pids: String = HYBRID.lines().filter(|l| !l.contains("pids")).map(|l| format!("{l}\n")).collect();
        let err = Cgroups::from_mounts(&parse_mountinfo(&no_pids), "flotilla").unwrap_err();
        assert!(matches!(err, CgroupError::MissingController("pids")), "{err}");
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
            efs_volumes: Vec::new(),
            containers: vec![],
        };
        let b = task_budget(&spec);
        assert_eq!(b.cpu_quota_us, Some(25_000));
        assert_eq!(b.memory_limit_bytes, Some(512 << 20));
        assert_eq!(b.pids_max, 4096);
    }
}
