//! Scratch filesystems made ahead of time, so that creating a task does not wait for
//! `mkfs.ext4`, the loop attach and the mount (most of the sandbox's set-up cost).
//!
//! The pool lives in the process that owns the [`LinuxSandbox`](crate::LinuxSandbox) (the
//! agent), in `<root>/.scratch-pool/`, which no task id can name. A background thread keeps a
//! few brand-new filesystems per size: each a sparse image, formatted, attached to a loop
//! device with AUTOCLEAR and mounted *detached* (`fsmount`: in no directory, reachable only
//! through the pool's descriptor). Nothing goes back into the pool: a task's filesystem is
//! deleted with the task as before. Refills wait until starts have been quiet for a moment
//! and run at a low CPU priority, so they do not compete with the starts they serve.
//!
//! What cannot leak: a detached mount and an AUTOCLEAR loop device only live while a
//! descriptor holds them, so when the owning process exits or is killed the kernel unmounts
//! and detaches them; the image files left behind are deleted when the next pool starts on
//! the same root, and when a pool is dropped.
//!
//! A hand-off: [`ScratchPool::take`] gives a [`Pooled`] whose [`PooledScratch`] goes to the
//! shim in the create request; the shim moves the image into the task directory, checks that
//! the device is attached to that very file, duplicates the pool's mount descriptor
//! (`pidfd_getfd`), checks it is that device's filesystem and attaches it at `<task>/data`
//! (`ephemeral::adopt`). The [`Pooled`] keeps everything alive until the shim has answered.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ephemeral::{self, DirectRunner, HeldMount, LoopDevice, PooledScratch};

/// The pool's directory under the sandbox root. Starts with a dot: never a valid task id.
pub const POOL_DIR: &str = ".scratch-pool";

/// How long after the last hand-off refilling waits.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchPoolConfig {
    /// Filesystems kept ready for the default size (`ephemeralStorage` unset: 20 GiB).
    /// Zero disables the pool.
    pub default_ready: usize,
    /// After a burst of starts (takes less than a quiet moment apart), as many of the default
    /// size as the burst took are kept ready, up to this many, for `other_idle`: a host whose
    /// tasks come ten at a time gets ten ready, an idle one keeps `default_ready`.
    pub burst_ready: usize,
    /// Filesystems kept ready for any other size a task asked for recently.
    pub other_ready: usize,
    /// How long a size other than the default stays wanted after the last task that asked.
    pub other_idle: Duration,
    /// Sizes other than the default kept at once (the most recently asked for win).
    pub max_other_sizes: usize,
}

impl Default for ScratchPoolConfig {
    fn default() -> Self {
        ScratchPoolConfig {
            default_ready: 2,
            burst_ready: 16,
            other_ready: 1,
            other_idle: Duration::from_secs(600),
            max_other_sizes: 4,
        }
    }
}

/// A pooled filesystem handed to one task. Dropping it releases the pool's hold on the
/// device (and its detached mount) and deletes the image unless the shim moved it into the
/// task directory; a mount the shim attached stays where it is.
pub struct Pooled {
    scratch: PooledScratch,
    mount: Option<OwnedFd>,
    device: Option<LoopDevice>,
}

impl Pooled {
    pub fn scratch(&self) -> &PooledScratch {
        &self.scratch
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The descriptors first: if the shim did not take the filesystem, the detached mount
        // goes away and the device detaches (AUTOCLEAR); then the file goes.
        self.mount.take();
        self.device.take();
        let _ = std::fs::remove_file(&self.scratch.image);
    }
}

struct State {
    ready: HashMap<u64, Vec<Pooled>>,
    /// Sizes other than the default: when a task last asked for them.
    wanted: HashMap<u64, Instant>,
    stop: bool,
    seq: u64,
    last_take: Option<Instant>,
    /// Default-size takes in the current burst, and the largest recent burst with its time.
    burst: usize,
    peak: (usize, Option<Instant>),
    /// After a failure, no filling before this instant.
    backoff_until: Option<Instant>,
}

struct Shared {
    dir: PathBuf,
    default_gib: u64,
    config: ScratchPoolConfig,
    state: Mutex<State>,
    wake: Condvar,
}

pub struct ScratchPool {
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

impl ScratchPool {
    /// Clears what a previous pool on `root` left (its devices are already gone with their
    /// holder) and starts filling. `None` when pooling is off or the host has no loop devices.
    pub fn start(root: &Path, default_gib: u64, config: ScratchPoolConfig) -> Option<ScratchPool> {
        let dir = root.join(POOL_DIR);
        remove_images(&dir);
        if config.default_ready == 0 || !ephemeral::limited_available() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        let state = State {
            ready: HashMap::new(),
            wanted: HashMap::new(),
            stop: false,
            seq: 0,
            last_take: None,
            burst: 0,
            peak: (0, None),
            backoff_until: None,
        };
        let shared = Arc::new(Shared { dir, default_gib, config, state: Mutex::new(state), wake: Condvar::new() });
        let s = shared.clone();
        let filler = std::thread::Builder::new()
            .name("scratch-pool".into())
            .spawn(move || s.fill())
            .map_err(|e| tracing::warn!(error = %e, "not pooling scratch filesystems"))
            .ok()?;
        Some(ScratchPool { shared, filler: Some(filler) })
    }

    /// A ready filesystem of `size_gib`, if there is one; asks for a replacement either way.
    pub fn take(&self, size_gib: u64) -> Option<Pooled> {
        let mut st = self.shared.lock();
        let now = Instant::now();
        if size_gib != self.shared.default_gib {
            st.wanted.insert(size_gib, now);
        } else {
            let in_burst = st.last_take.is_some_and(|t| now.duration_since(t) < QUIET);
            st.burst = if in_burst { st.burst + 1 } else { 1 };
            if st.burst >= st.peak.0
                || st.peak.1.is_none_or(|at| now.duration_since(at) >= self.shared.config.other_idle)
            {
                st.peak = (st.burst, Some(now));
            }
        }
        let taken = st.ready.get_mut(&size_gib).and_then(Vec::pop);
        st.last_take = Some(now);
        self.shared.wake.notify_all();
        taken
    }

    /// Filesystems ready now, per size (for tests and diagnostics).
    pub fn ready(&self) -> HashMap<u64, usize> {
        self.shared.lock().ready.iter().map(|(k, v)| (*k, v.len())).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.filler.take() {
            let _ = t.join();
        }
        self.shared.lock().ready.clear();
        let _ = std::fs::remove_dir(&self.shared.dir);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many filesystems of each size should be ready now.
    fn targets(&self, st: &mut State) -> Vec<(u64, usize)> {
        let now = Instant::now();
        let idle = self.config.other_idle;
        st.wanted.retain(|_, at| now.duration_since(*at) < idle);
        let mut others: Vec<(u64, Instant)> = st.wanted.iter().map(|(k, v)| (*k, *v)).collect();
        others.sort_by_key(|o| std::cmp::Reverse(o.1));
        others.truncate(self.config.max_other_sizes);
        let burst = match st.peak {
            (n, Some(at)) if now.duration_since(at) < idle => n.min(self.config.burst_ready),
            _ => 0,
        };
        let mut targets = vec![(self.default_gib, self.config.default_ready.max(burst))];
        targets.extend(others.into_iter().map(|(size, _)| (size, self.config.other_ready)));
        // Sizes nobody wants any more give their filesystems (and loop devices) back, and so
        // do the ready ones beyond a size's target once a burst is long past.
        st.ready.retain(|size, _| targets.iter().any(|(s, _)| s == size));
        for (size, n) in &targets {
            if let Some(ready) = st.ready.get_mut(size) {
                ready.truncate(*n);
            }
        }
        targets
    }

    fn fill(&self) {
        // Below the agent and the shims (nice 10; inherited by mkfs).
        // On Linux the "process" priority of `None` (0) is the calling thread's.
        let _ = rustix::process::setpriority_process(None, 10);
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            // Not while tasks are being started: a burst is better served by its shims than
            // by a refill competing with them for the CPU.
            let quiet_at = st.last_take.map(|t| t + QUIET);
            let hold_until = [st.backoff_until, quiet_at].into_iter().flatten().filter(|t| *t > now).max();
            let targets = self.targets(&mut st);
            let missing = targets.iter().find(|(size, n)| st.ready.get(size).map_or(0, Vec::len) < *n).map(|t| t.0);
            let size = match (missing, hold_until) {
                (Some(size), None) => size,
                (missing, hold) => {
                    let wait = match (missing, hold) {
                        (Some(_), Some(t)) => t - now,
                        _ => Duration::from_secs(60),
                    };
                    st = self.wake.wait_timeout(st, wait).map(|r| r.0).unwrap_or_else(|e| e.into_inner().0);
                    continue;
                }
            };
            st.seq += 1;
            let image = self.dir.join(format!("{size}g-{}-{}.img", std::process::id(), st.seq));
            drop(st);
            let made = self.make(&image, size);
            st = self.lock();
            match made {
                Ok(pooled) if !st.stop => {
                    st.backoff_until = None;
                    st.ready.entry(size).or_default().push(pooled);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(image = %image.display(), error = %e, "could not pre-make a scratch filesystem; retrying in 30 s");
                    let _ = std::fs::remove_file(&image);
                    st.backoff_until = Some(Instant::now() + Duration::from_secs(30));
                }
            }
        }
    }

    fn make(&self, image: &Path, size_gib: u64) -> Result<Pooled, String> {
        create_private_dir(&self.dir).map_err(|e| format!("mkdir {}: {e}", self.dir.display()))?;
        ephemeral::make_image(image, size_gib, &DirectRunner).map_err(|e| crate::error::chain(&e))?;
        let device = ephemeral::attach_loop(image).map_err(|e| format!("attaching a loop device: {e}"))?;
        // Mounted here, off the start path; the shim then only attaches it. Without the new
        // mount API (Linux < 5.2) the shim mounts the device itself.
        let mount = crate::mount::detached_mount(device.path(), "ext4", &["noinit_itable"])
            .map_err(|e| tracing::debug!(error = %e, "no detached mount; the shim will mount the device"))
            .ok();
        let held = mount.as_ref().map(|m| HeldMount { pid: std::process::id(), fd: m.as_raw_fd() });
        let scratch =
            PooledScratch { image: image.to_path_buf(), device: device.path().to_path_buf(), size_gib, mount: held };
        Ok(Pooled { scratch, mount, device: Some(device) })
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Deletes the image files of a pool that is gone. Their loop devices detached when the
/// pool's process released them; a device somebody else still holds keeps its (unlinked)
/// file until then.
fn remove_images(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "img") {
            let _ = std::fs::remove_file(&path);
        }
    }
}
