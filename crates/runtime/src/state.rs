//! What the runtime remembers of a container between its commands: `<root>/<id>/state.json`
//! (written once, when create has finished) and the exec FIFO beside it, whose presence means
//! "created, not yet started", as in runc.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// The init's start time (clock ticks since boot), so a reused pid is not mistaken for it.
    pub start_time: u64,
    pub bundle: PathBuf,
    /// The container's own directory in each cgroup hierarchy where it has one.
    pub cgroups: Vec<PathBuf>,
    /// Its parent's directory in the hierarchies where it has none of its own
    /// (`CGROUPS_AT_PARENT`): joined, never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_cgroups: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// A container id names a directory: no separators, no dot-names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

impl State {
    /// `Ok(None)` when there is no such container.
    pub fn load(root: &Path, id: &str) -> io::Result<Option<State>> {
        let path = dir(root, id).join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }

    /// Written to a temporary name and renamed, so a reader never sees half a state.
    pub fn save(&self, root: &Path) -> io::Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, d.join(STATE_FILE))
    }

    pub fn status(&self, root: &Path) -> Status {
        if !crate::sys::alive(self.pid, self.start_time) {
            Status::Stopped
        } else if dir(root, &self.id).join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// Every cgroup directory a process of the container joins.
    pub fn joined_cgroups(&self) -> Vec<PathBuf> {
        self.cgroups.iter().chain(&self.parent_cgroups).cloned().collect()
    }

    /// Every process in the container's cgroup (the init and whatever it started).
    pub fn pids(&self) -> Vec<i32> {
        self.cgroups
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_name_other_directories() {
        assert!(valid_id("app") && valid_id("web-1.2_x"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn state_round_trips_and_a_dead_pid_is_stopped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        let me = std::process::id() as i32;
        let st = State {
            id: "c1".into(),
            pid: me,
            start_time: crate::sys::start_time(me).unwrap(),
            bundle: "/b".into(),
            cgroups: vec![],
            parent_cgroups: vec![],
        };
        st.save(root.path()).unwrap();
        let back = State::load(root.path(), "c1").unwrap().unwrap();
        assert_eq!(back.pid, me);
        assert_eq!(back.status(root.path()), Status::Running);
        std::fs::write(root.path().join("c1").join(EXEC_FIFO), b"").unwrap();
        assert_eq!(back.status(root.path()), Status::Created);
        let reused = State { start_time: back.start_time + 1, ..back };
        assert_eq!(reused.status(root.path()), Status::Stopped, "same pid, other process");
        assert!(State::load(root.path(), "nope").unwrap().is_none());
    }
}
