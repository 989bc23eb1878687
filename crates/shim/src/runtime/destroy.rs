//! Teardown. Every step tolerates "already gone", so destroy can be repeated after a crash at
//! any point (including a crash of a previous destroy or create) and still converge.

use std::sync::Arc;
use std::time::Duration;

use flotilla_sandbox::error::chain;
use flotilla_sandbox::protocol::{CONTAINERS_DIR, ShimError, ShimErrorKind};
use flotilla_sandbox::{ContainerState, TaskPhase, ephemeral, mount, namespaces, rootfs};

use super::create::rootfs_mount;
use super::{Runtime, ShimResult};

const EXIT_WAIT: Duration = Duration::from_secs(10);

impl Runtime {
    pub(super) fn destroy(self: &Arc<Self>) -> ShimResult<()> {
        let _ops = self.lock_ops();
        self.update(|st| st.phase = TaskPhase::Destroying)?;
        self.release_resources()?;
        let dir = &self.cfg.task_dir;
        mount::remove_dir_unmounted(dir).map_err(|e| ShimError::new(ShimErrorKind::Runtime, chain(&e)))?;
        tracing::info!(task_id = %self.task_id, "task destroyed");
        Ok(())
    }

    /// Containers the task may have: those recorded, plus any directory a crashed create left.
    fn known_containers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock_state().containers.iter().map(|c| c.name.clone()).collect();
        if let Some(spec) = &self.lock_state().spec {
            names.extend(spec.containers.iter().map(|c| c.name.clone()));
        }
        if let Ok(entries) = std::fs::read_dir(self.cfg.task_dir.join(CONTAINERS_DIR)) {
            names.extend(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)));
        }
        names.sort();
        names.dedup();
        names
    }

    /// Kills every process and releases every kernel object of the task, leaving only the
    /// task directory's plain files. Carries on past failures and reports them all.
    pub(super) fn release_resources(&self) -> ShimResult<()> {
        let mut errors: Vec<String> = Vec::new();
        let names = self.known_containers();

        for name in &names {
            if let Ok(Some(_)) = self.runc.state(name) {
                let _ = self.runc.kill(name, libc::SIGKILL, true);
            }
        }
        // Let the exit watchers record real exit codes before runc forgets the containers.
        drop(self.wait_while(EXIT_WAIT, |st| st.containers.iter().any(|c| c.state == ContainerState::Running)));
        for name in &names {
            if let Err(e) = self.runc.delete(name) {
                errors.push(chain(&e));
            }
        }
        if let Some(pid) = self.lock_state().pause_pid {
            // The pause process is our (re-parented) child and only reaped after it dies, so
            // its pid still names it.
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Err(e) = self.cgroups.remove_task(&self.task_id, EXIT_WAIT) {
            errors.push(chain(&e));
        }
        for name in &names {
            if let Err(e) = rootfs::unmount_overlay(&rootfs_mount(&self.cfg.task_dir, name)) {
                errors.push(chain(&e));
            }
        }
        let dir = &self.cfg.task_dir;
        let (image, data) = (dir.join("ephemeral.img"), self.data_dir());
        let removed = if !image.exists() && flotilla_sandbox::shared_scratch::is_subvolume(&data) {
            flotilla_sandbox::shared_scratch::remove(self.cfg.shared_scratch.as_ref(), &self.task_id, &data)
        } else {
            ephemeral::remove(&image, &data)
        };
        if let Err(e) = removed {
            errors.push(chain(&e));
        }
        if let Err(e) = namespaces::remove(dir) {
            errors.push(chain(&e));
        }
        // Whatever else is mounted inside goes with the directory (`destroy`), or before a
        // create starts again on it: found through the mount table only then.

        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.lock_precreated().clear();
        if errors.is_empty() { Ok(()) } else { Err(ShimError::new(ShimErrorKind::Runtime, errors.join("; "))) }
    }
}
