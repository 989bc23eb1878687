//! The task's shared namespaces. Network, UTS and IPC namespaces are created once per task
//! and pinned by bind-mounting their nsfs files under `<task>/ns/`, so they outlive every
//! process (the shim included) until `destroy` unmounts them; each container's runc config
//! joins them by path. That is what makes containers of one task reach each other on
//! localhost, as in ECS's awsvpc mode.
//!
//! The pins are made in the shim's mount namespace (`mntns`), where the runtime joins them;
//! the network namespace's is made in the host's too, where the agent's network layer and
//! probes open it. `<task>/ns/mnt` pins the shim's mount namespace itself (`mntns::PIN`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::error::PathError;
use crate::mount::{bind_mount, unmount};
use crate::spec::TaskNamespaces;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("unshare(net, uts, ipc)")]
    Unshare(#[source] io::Error),
    #[error("sethostname {0:?}")]
    Hostname(String, #[source] io::Error),
    #[error("bringing up lo")]
    Loopback(#[source] io::Error),
    #[error("namespace setup thread panicked")]
    Thread,
}

pub const NS_DIR: &str = "ns";
const SHARED: &[&str] = &["net", "uts", "ipc"];

pub fn paths(task_dir: &Path, pid_shared: bool) -> TaskNamespaces {
    let dir = task_dir.join(NS_DIR);
    TaskNamespaces {
        net: dir.join("net"),
        uts: dir.join("uts"),
        ipc: dir.join("ipc"),
        pid: pid_shared.then(|| dir.join("pid")),
    }
}

/// Creates the task's network, UTS and IPC namespaces, sets the hostname, brings `lo` up and
/// pins all three under `<task_dir>/ns/`; with `host` (the host's mount namespace, when the
/// shim has one of its own) the network namespace is pinned there too.
///
/// The work happens on a short-lived thread: unshare(2) of these namespace types changes only
/// the calling thread, so the caller (a multi-threaded shim) never leaves the host's namespaces.
pub fn create(task_dir: &Path, hostname: &str, host: Option<&OwnedFd>) -> Result<TaskNamespaces, NamespaceError> {
    let dir = task_dir.join(NS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| PathError::new("mkdir", &dir, e))?;
    for name in SHARED {
        let target = dir.join(name);
        std::fs::File::create(&target).map_err(|e| PathError::new("create", &target, e))?;
    }
    let hostname = hostname.to_string();
    let dir2 = dir.clone();
    let host = host.map(OwnedFd::try_clone).transpose().map_err(|e| PathError::new("dup", &dir, e))?;
    std::thread::spawn(move || setup_on_this_thread(&dir2, &hostname, host))
        .join()
        .map_err(|_| NamespaceError::Thread)??;
    Ok(paths(task_dir, false))
}

fn setup_on_this_thread(dir: &Path, hostname: &str, host: Option<OwnedFd>) -> Result<(), NamespaceError> {
    // SAFETY: unshare(2) takes only flags. It affects just this thread, which exits right after.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) } != 0 {
        return Err(NamespaceError::Unshare(io::Error::last_os_error()));
    }
    rustix::system::sethostname(hostname.as_bytes())
        .map_err(|e| NamespaceError::Hostname(hostname.to_string(), e.into()))?;
    loopback_up().map_err(NamespaceError::Loopback)?;
    for name in SHARED {
        bind_mount(&PathBuf::from(format!("/proc/thread-self/ns/{name}")), &dir.join(name))?;
    }
    if let Some(host) = host {
        let net = dir.join("net");
        crate::mntns::move_thread_to(&host).map_err(|e| PathError::new("entering the host's mounts for", &net, e))?;
        bind_mount(Path::new("/proc/thread-self/ns/net"), &net)?;
    }
    Ok(())
}

/// SIOCSIFFLAGS on `lo` through a socket opened inside the new network namespace.
fn loopback_up() -> io::Result<()> {
    let socket = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    let fd = socket.as_raw_fd();
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, exclusively borrowed ifreq for both ioctls; the flags member
    // of the union is the one SIOC[GS]IFFLAGS read and write; `socket` outlives both calls.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins `/proc/<pid>/ns/<kind>` at `target` (used for the shared PID namespace, whose first
/// process must exist before anyone can join it).
pub fn pin(pid: u32, kind: &str, target: &Path) -> Result<(), PathError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| PathError::new("mkdir", parent, e))?;
    }
    std::fs::File::create(target).map_err(|e| PathError::new("create", target, e))?;
    bind_mount(&PathBuf::from(format!("/proc/{pid}/ns/{kind}")), target)
}

/// Unpins every namespace of the task but the shim's mount namespace (which goes with the
/// task directory). Removing a pin's file also detaches the host's mount on it, when the
/// shim has a mount namespace of its own. The kernel frees each namespace once nothing else
/// (no process, no other mount) holds it. Idempotent.
pub fn remove(task_dir: &Path) -> Result<(), PathError> {
    let dir = task_dir.join(NS_DIR);
    for name in SHARED.iter().chain(&["pid"]) {
        let target = dir.join(name);
        if target.exists() {
            unmount(&target, true)?;
            std::fs::remove_file(&target).map_err(|e| PathError::new("remove", &target, e))?;
        }
    }
    if dir.join(crate::mntns::PIN).exists() {
        return Ok(());
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("rmdir", &dir, e)),
    }
}
