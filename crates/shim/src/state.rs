//! `state.json`: everything a later shim (or agent) needs to know about the task, written
//! atomically (temp file, fsync, rename, fsync dir) on every change, so an exit recorded by
//! this shim survives its death.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flotilla_sandbox::protocol::{CreateReport, STATE_FILE};
use flotilla_sandbox::{ContainerStatus, TaskPhase, TaskSpec, TaskStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    pub version: u32,
    pub task_id: String,
    pub phase: TaskPhase,
    pub spec: Option<TaskSpec>,
    /// The cgroup parent the task was created under; adoption must use the same one.
    pub cgroup_parent: String,
    pub pause_pid: Option<u32>,
    pub report: Option<CreateReport>,
    pub containers: Vec<ContainerStatus>,
    /// `TaskStatus::generation`: moved by every [`Persisted::changed`]. Persisted so that a
    /// later shim continues past every value this one reported.
    #[serde(default)]
    pub generation: u64,
}

impl Persisted {
    pub fn new(task_id: String, cgroup_parent: String) -> Self {
        Persisted {
            version: 1,
            task_id,
            phase: TaskPhase::Creating,
            spec: None,
            cgroup_parent,
            pause_pid: None,
            report: None,
            containers: Vec::new(),
            // 0 means "nothing seen yet" to a waiter, so no live task ever has it.
            generation: 1,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state a previous shim left, for this one to continue. Taking a task over counts as
    /// a change: a waiter that saw the old shim's last generation learns of the new one.
    pub fn load(dir: &Path) -> io::Result<Option<Self>> {
        match std::fs::read(Self::path(dir)) {
            Ok(bytes) => {
                let mut p: Persisted =
                    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                p.changed();
                Ok(Some(p))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerStatus> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    /// Marks an observable change (see [`TaskStatus::generation`]).
    pub fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
    }

    pub fn status(&self) -> TaskStatus {
        TaskStatus {
            task_id: self.task_id.clone(),
            phase: self.phase,
            containers: self.containers.clone(),
            generation: self.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Persisted::load(dir.path()).unwrap().is_none());
        let mut p = Persisted::new("t1".into(), "flotilla".into());
        p.containers.push(ContainerStatus::created("web"));
        p.container_mut("web").unwrap().exit_code = Some(3);
        p.save(dir.path()).unwrap();
        let back = Persisted::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.containers[0].exit_code, Some(3));
        assert_eq!(back.status().task_id, "t1");
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_loaded_state_has_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persisted::new("t1".into(), "flotilla".into());
        assert_ne!(p.generation, 0);
        p.save(dir.path()).unwrap();
        let back = Persisted::load(dir.path()).unwrap().unwrap();
        assert!(back.generation > p.generation, "{} after {}", back.generation, p.generation);
        // A state file written before generations existed.
        std::fs::write(
            Persisted::path(dir.path()),
            r#"{"version":1,"taskId":"t1","phase":"ready","spec":null,
            "cgroupParent":"flotilla","pausePid":null,"report":null,"containers":[]}"#,
        )
        .unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap().unwrap().status().generation, 1);
    }
}
