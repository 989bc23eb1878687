//! Files a task's volumes hold from its start, resolved by a provider outside the control plane
//! (the Fargate scheduler, for a pod's configMap, secret, downwardAPI and projected volumes).
//!
//! The files are never stored: the provider reads them where they live (the pod's cluster) when
//! the task's host asks (`HostApi::task_volumes`), so secrets do not sit in Flotilla's data.

use std::sync::Arc;

use flotilla_host::{BoxFuture, FileVolume, HostApiError};
use flotilla_types::task::Task;

use crate::Control;

/// Resolves the files of tasks' file volumes.
pub trait TaskFiles: Send + Sync {
    /// Whether `task` has file volumes this provider fills (cheap: decides whether the task's
    /// host asks at all; see `Assignment::volume_files`).
    fn serves(&self, task: &Task) -> bool;
    /// The task's file volumes and their files, read now. `Refused` carries the task's stopped
    /// reason; `Unavailable` is asked again.
    fn files<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Vec<FileVolume>, HostApiError>>;
}

impl Control {
    /// Gives the control plane the provider of tasks' file volumes (once).
    pub fn attach_task_files(&self, files: Arc<dyn TaskFiles>) {
        let _ = self.task_files.set(files);
    }

    pub(crate) fn task_files(&self) -> Option<&Arc<dyn TaskFiles>> {
        self.task_files.get()
    }
}
