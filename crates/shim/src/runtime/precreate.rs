//! Containers are created ahead of their start. `runc create` (the bulk of runc's work:
//! namespaces, mounts, cgroups, the seccomp filter) runs in the background as soon as the
//! sandbox exists, while the agent wires up the task's network and waits for dependencies;
//! the start the agent asks for is then only `runc start`. Nothing of the user's runs before
//! that start: a created container's init waits on runc's exec FIFO.
//!
//! Ordering and failure keep their meaning. The agent still starts containers when their
//! `dependsOn` conditions hold and sees them `Created` until then. A container whose
//! `runc create` failed stays `Created`; its start reports the failure as a start failure
//! would have been reported (`CannotStartContainerError`), without running runc again. A
//! start that arrives before its container's turn here runs `runc run -d` itself, and the
//! background work then skips that container. A new shim adopting the task deletes created
//! containers (see `container.rs`), so a later start runs them from scratch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use flotilla_sandbox::protocol::{ShimError, ShimErrorKind, StartReport, Timings};
use flotilla_sandbox::{ContainerState, TaskPhase};

use super::{Runtime, ShimResult, io_err, runtime_err};
use crate::reaper::Watch;
use crate::runc::read_pid;

/// A container whose `runc create` has run.
pub(super) enum Precreated {
    /// Its init exists and waits for `runc start`.
    Waiting { pid: i32, watch: Watch, pumps_done: Receiver<()>, create_us: u64 },
    /// `runc create` failed with this message; starting it reports that.
    Failed { message: String },
}

pub(super) type PrecreatedMap = HashMap<String, Precreated>;

impl Runtime {
    /// Creates `names`' processes one by one in the background (the ops lock is taken per
    /// container, so a start waits for at most one of them).
    pub(super) fn spawn_precreate(self: &Arc<Self>, names: Vec<String>) {
        let rt = self.clone();
        let spawned = std::thread::Builder::new().name("precreate".into()).spawn(move || {
            for name in names {
                rt.precreate(&name);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "not creating containers ahead of their start");
        }
    }

    fn precreate(&self, name: &str) {
        let _ops = self.lock_ops();
        let created = self.lock_state().phase == TaskPhase::Ready
            && self.container_state(name).is_ok_and(|s| s == ContainerState::Created);
        if !created || self.lock_precreated().contains_key(name) {
            return;
        }
        let t = Instant::now();
        let result = self.runc_create(name);
        let create_us = t.elapsed().as_micros() as u64;
        let entry = match result {
            Ok((pid, watch, pumps_done)) => Precreated::Waiting { pid, watch, pumps_done, create_us },
            Err(e) => {
                tracing::info!(container = name, error = %e.message, "runc create failed; the start will report it");
                Precreated::Failed { message: e.message }
            }
        };
        tracing::debug!(container = name, create_us, "container created ahead of its start");
        self.lock_precreated().insert(name.to_string(), entry);
    }

    /// `runc create` with the container's FIFOs as stdio and its log pumps attached.
    fn runc_create(&self, name: &str) -> ShimResult<(i32, Watch, Receiver<()>)> {
        let super::container::Stdio { cdir, out_w, err_w, pumps_done, pid_file } = self.container_stdio(name)?;
        let mark = self.reaper.mark();
        // Both writers move into runc's stdio: once runc exits only the init holds them.
        if let Err(e) = self.runc.create(name, &cdir, &pid_file, &cdir.join("runc.log"), out_w, err_w) {
            let _ = self.runc.delete(name);
            return Err(runtime_err(&e));
        }
        match read_pid(&pid_file) {
            Ok(pid) => Ok((pid, self.reaper.watch(pid, mark), pumps_done)),
            Err(e) => {
                let _ = self.runc.delete(name);
                Err(io_err("reading", &pid_file, e))
            }
        }
    }

    /// Starts a container created ahead: `runc start`, or the create's failure. The caller
    /// holds the ops lock and has checked the container may start.
    pub(super) fn start_precreated(
        self: &Arc<Self>,
        name: &str,
        pre: Precreated,
        mut timings: Timings,
    ) -> ShimResult<StartReport> {
        let (pid, watch, pumps_done, create_us) = match pre {
            Precreated::Waiting { pid, watch, pumps_done, create_us } => (pid, watch, pumps_done, create_us),
            Precreated::Failed { message } => {
                self.record_exit(name, None, Some(format!("CannotStartContainerError: {message}")))?;
                return Err(ShimError::new(ShimErrorKind::Runtime, message));
            }
        };
        timings.insert("precreated".into(), 1);
        timings.insert("runc_create".into(), create_us);
        let t = Instant::now();
        if let Err(e) = self.runc.start(name, pid) {
            return Err(self.start_failed(name, &e)?);
        }
        timings.insert("runc_start".into(), t.elapsed().as_micros() as u64);
        self.started(name, pid, watch, pumps_done, timings)
    }
}
