//! Each task's mounts live in a mount namespace of its shim's own, never in the host's.
//!
//! Why: a new mount namespace copies every mount of the one it comes from, and every
//! container's runtime makes one. With the tasks' mounts in the host's namespace (five per
//! task: three namespace pins, the scratch filesystem and a root per container), the 1,001st
//! task's container copied ~5,000 mounts (`unshare -m` alone: 37 ms at 5,000 against 5 ms on a
//! bare host), so starts slowed with the number of tasks already running.
//!
//! How:
//! - The agent keeps a *template* namespace ([`Template`]): a private copy of its own, with
//!   nothing mounted under the tasks root. A thread of the agent holds it, so it needs no pin
//!   and goes away with the agent (shims already started do not need it any more).
//! - A new shim, still single-threaded, enters the template and unshares from it ([`enter`]):
//!   its namespace holds the host's few base mounts, and then its own task's. Everything in it
//!   is private, so nothing it mounts propagates to the host or to other tasks.
//! - The shim pins its namespace in the host's at `<task>/ns/mnt`, so a shim started after it
//!   died enters the very namespace that holds the task's mounts and adopts it.
//! - The host's namespace holds two mounts per task, both pins: this one and the network
//!   namespace's (`<task>/ns/net`, which the agent's network layer opens). Nothing copies the
//!   host's namespace any more, so their number costs no start anything.
//! - The agent reaches what it writes into a task's scratch filesystem (file volumes) through
//!   the shim's root, `/proc/<shim>/root` ([`shim_root`]).
//! - Teardown unlinks the pins' files from inside the shim's namespace, which detaches the
//!   host's mounts on them (Linux 3.18+: unlinking a mount point of another namespace detaches
//!   it there).
//!
//! A task made by a shim without a template (an older agent, or `--mount-template` absent)
//! keeps its mounts in the host's namespace, and a shim adopting it stays there too.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::PathError;
use crate::mount::bind_mount;

/// The pin of a shim's mount namespace, under `<task>/ns/`.
pub const PIN: &str = "mnt";

/// `statfs` type of the namespace filesystem (nsfs).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The tasks' base mount namespace, held by a thread of this process while the value lives.
pub struct Template {
    path: PathBuf,
    /// Dropping it ends the holding thread, and with it the namespace.
    _hold: mpsc::Sender<()>,
}

impl Template {
    /// Makes the template for tasks under `root`: a private copy of this process's mount
    /// namespace with every mount below `root` detached (pins and filesystems of tasks that
    /// were running when this process started).
    pub fn start(root: &Path) -> io::Result<Template> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<i32>>();
        let (hold, held) = mpsc::channel::<()>();
        let root = root.to_path_buf();
        std::thread::Builder::new().name("mount-template".into()).spawn(move || {
            let prepared = prepare(&root).map(|()| rustix::thread::gettid().as_raw_nonzero().get());
            let ok = prepared.is_ok();
            let _ = ready_tx.send(prepared);
            if ok {
                // Holds the namespace until the template is dropped.
                let _ = held.recv();
            }
        })?;
        let tid = ready_rx.recv().map_err(|_| io::Error::other("the mount template's thread died"))??;
        let path = PathBuf::from(format!("/proc/{}/task/{tid}/ns/mnt", std::process::id()));
        Ok(Template { path, _hold: hold })
    }

    /// What a shim opens to enter the template (`flotilla-shim --mount-template`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// On the template's own thread: a new, private mount namespace without the tasks' mounts.
fn prepare(root: &Path) -> io::Result<()> {
    // SAFETY: unshare(2) takes only flags. CLONE_NEWNS gives this thread alone its own
    // filesystem context and namespace; the process's other threads keep theirs.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE;
    rustix::mount::mount_change(c"/", flags)?;
    // This thread's table, not the process's (`/proc/self` is the main thread's).
    let table = std::fs::read_to_string("/proc/thread-self/mountinfo")?;
    let mut below: Vec<PathBuf> = flotilla_runtime::mountinfo::parse(&table)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root) && p != root)
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for point in below {
        // A point below one already detached is gone with it (EINVAL / ENOENT).
        crate::mount::unmount(&point, true).map_err(io::Error::other)?;
    }
    Ok(())
}

/// Where a shim's mounts go, decided once at its start.
pub enum Placement {
    /// In a namespace of the shim's own; the descriptor is the host's namespace, where the
    /// network namespace's pin must also be made.
    Own { host: OwnedFd },
    /// In the host's namespace, as before templates existed.
    Host,
}

/// Moves the calling shim into its task's mount namespace: the one pinned at
/// `<task>/ns/mnt` if there is one (a shim adopting the task), else a new one made from
/// `template`. A task that has state but no pin was made in the host's namespace and stays
/// there, as does every task when there is no template.
///
/// Must be called while the process is single-threaded (setns(2) of a mount namespace
/// refuses a process whose threads share its filesystem context).
pub fn enter(task_dir: &Path, template: Option<&Path>, has_state: bool) -> Result<Placement, PathError> {
    let pin = task_dir.join(crate::namespaces::NS_DIR).join(PIN);
    let own = Path::new("/proc/self/ns/mnt");
    if let Some(pinned) = open_nsfs(&pin)? {
        let host = File::open(own).map_err(|e| PathError::new("open", own, e))?;
        set_mount_ns(&pinned).map_err(|e| PathError::new("setns", &pin, e))?;
        return Ok(Placement::Own { host: host.into() });
    }
    let Some(template) = template.filter(|_| !has_state) else { return Ok(Placement::Host) };
    let host: OwnedFd = File::open(own).map_err(|e| PathError::new("open", own, e))?.into();
    let dir = pin.parent().unwrap_or(task_dir);
    std::fs::create_dir_all(dir).map_err(|e| PathError::new("mkdir", dir, e))?;
    File::create(&pin).map_err(|e| PathError::new("create", &pin, e))?;
    let entered = File::open(template).and_then(|t| set_mount_ns(&t));
    entered.map_err(|e| PathError::new("entering the mount template", template, e))?;
    let made = (|| {
        // SAFETY: unshare(2) takes only flags; the process is single-threaded.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(PathError::new("unshare", task_dir, io::Error::last_os_error()));
        }
        let ours = File::open(own).map_err(|e| PathError::new("open", own, e))?;
        // The pin is a mount in the host's namespace, made from there.
        set_mount_ns(&host).map_err(|e| PathError::new("setns", own, e))?;
        bind_mount(&PathBuf::from(format!("/proc/self/fd/{}", ours.as_raw_fd())), &pin)?;
        set_mount_ns(&ours).map_err(|e| PathError::new("setns", &pin, e))
    })();
    if let Err(e) = made {
        // Back home, so that the caller can report it (or carry on in the host's).
        let _ = set_mount_ns(&host);
        return Err(e);
    }
    Ok(Placement::Own { host })
}

/// The namespace file at `path`, if it is one (a pin), else `None`.
fn open_nsfs(path: &Path) -> Result<Option<File>, PathError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PathError::new("open", path, e)),
    };
    let st = rustix::fs::fstatfs(&file).map_err(|e| PathError::new("statfs", path, e.into()))?;
    Ok((st.f_type as i64 == NSFS_MAGIC).then_some(file))
}

fn set_mount_ns(ns: &impl AsFd) -> io::Result<()> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    Ok(move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Mount))?)
}

/// Runs `f` on the calling thread in the mount namespace `host`: the thread first takes a
/// filesystem context of its own, which setns(2) of a mount namespace requires in a process
/// with other threads. Only for a short-lived thread: it never comes back.
pub fn move_thread_to(host: &impl AsFd) -> io::Result<()> {
    // SAFETY: unshare(2) takes only flags; CLONE_FS affects only this thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_mount_ns(host)
}

/// The root of the live shim of the task at `task_dir` as the agent reaches it
/// (`/proc/<pid>/root`), or `/` for a task whose mounts are in the host's namespace. `None`
/// when no shim answers or the one that does is not in the task's namespace.
pub fn shim_root(task_dir: &Path) -> Option<PathBuf> {
    let pin = task_dir.join(crate::namespaces::NS_DIR).join(PIN);
    let pinned = match open_nsfs(&pin) {
        Ok(Some(f)) => f,
        Ok(None) => return Some(PathBuf::from("/")),
        Err(_) => return None,
    };
    // The socket's peer is the shim that listens on it: its pid, vouched for by the kernel.
    let socket = std::os::unix::net::UnixStream::connect(task_dir.join(crate::protocol::SOCKET_FILE)).ok()?;
    let pid = rustix::net::sockopt::socket_peercred(&socket).ok()?.pid.as_raw_nonzero().get();
    // And that process is in the task's namespace (not a recycled pid).
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
    let ours = pinned.metadata().ok()?;
    use std::os::unix::fs::MetadataExt;
    (theirs.ino() == ours.ino() && theirs.dev() == ours.dev()).then(|| PathBuf::from(format!("/proc/{pid}/root")))
}

/// `path` (absolute) as seen from `root` (from [`shim_root`]).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
