//! Thin wrappers over the system calls the runtime makes, each returning `io::Result` with the
//! call and its path in the error, so a failed setup step says exactly what failed.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Pid, WaitOptions};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// An error that names the operation and the path it was applied to.
pub fn err_at(op: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} contains a NUL", path.display())))
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} contains a NUL")))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// mount(2) of a filesystem: `source` of type `fstype` on `target`.
pub fn mount_fs(source: &str, target: &Path, fstype: &str, flags: MountFlags, data: Option<&str>) -> io::Result<()> {
    let data = data.filter(|d| !d.is_empty()).map(cstring).transpose()?;
    rustix::mount::mount(source, target, fstype, flags, data.as_deref())
        .map_err(|e| err_at(&format!("mounting {source} on"), target, e.into()))
}

/// A bind mount of `source` on `target`, with what is mounted below `source` when `recursive`.
pub fn bind(source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    let rc = if recursive {
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        rustix::mount::mount_bind(source, target)
    };
    rc.map_err(|e| err_at(&format!("mounting {} on", source.display()), target, e.into()))
}

/// Changes the flags of the mount at `target` (`MS_REMOUNT`; add `BIND` to change only this
/// mount point's flags, not the filesystem's).
pub fn remount(target: &Path, flags: MountFlags, data: &str) -> io::Result<()> {
    rustix::mount::mount_remount(target, flags, data).map_err(|e| err_at("remounting", target, e.into()))
}

/// Changes the propagation type of the mount at `target`.
pub fn propagate(target: &Path, flags: MountPropagationFlags) -> io::Result<()> {
    rustix::mount::mount_change(target, flags).map_err(|e| err_at("changing the propagation of", target, e.into()))
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| err_at("umount", target, e.into()))
}

/// `pivot_root(".", ".")` in the current directory: the old root ends up stacked under the new
/// one, where a lazy unmount of "." removes it without needing a directory for it.
pub fn pivot_root_here() -> io::Result<()> {
    rustix::process::pivot_root(".", ".").map_err(|e| io::Error::other(format!("pivot_root: {e}")))
}

pub fn chdir(path: &Path) -> io::Result<()> {
    rustix::process::chdir(path).map_err(|e| err_at("chdir", path, e.into()))
}

/// A character device node.
pub fn mknod_char(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, Mode::from_raw_mode(mode), dev)
        .map_err(|e| err_at("mknod", path, e.into()))
}

/// A FIFO.
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(mode), 0)
        .map_err(|e| err_at("mkfifo", path, e.into()))
}

pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).map_err(|e| err_at("chmod", path, e.into()))
}

/// Opens `path` with `flags` (O_CLOEXEC added).
pub fn open(path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| err_at("open", path, e.into()))
}

pub fn setns(fd: &OwnedFd, kind: LinkNameSpaceType, what: &str) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(kind))
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("joining the {what} namespace: {e}")))
}

pub fn unshare(flags: UnshareFlags) -> io::Result<()> {
    // SAFETY: the flags never include CLONE_FILES, the one that would leave descriptors
    // another thread opened unusable here (and the runtime has one thread anyway).
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(|e| io::Error::other(format!("unshare: {e}")))
}

/// A pipe whose ends are both close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

/// fork(2). Only called from the runtime's own single-threaded process.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the runtime process has one thread, so the child inherits no held locks.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::other(format!("fork: {}", io::Error::last_os_error()))),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// Marks every descriptor from 3 up close-on-exec, so nothing the caller leaked reaches the
/// container.
pub fn cloexec_from_3() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc < 0 {
        // Kernels before 5.11: walk the descriptors.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<RawFd> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
            for fd in fds.into_iter().filter(|&fd| fd > 2) {
                // SAFETY: setting a flag on a descriptor number; a stale number just fails.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
}

/// Waits for the child `pid` to exit (its status is not wanted).
pub fn waitpid(pid: libc::pid_t) {
    let Some(pid) = Pid::from_raw(pid) else { return };
    while let Err(rustix::io::Errno::INTR) = rustix::process::waitpid(Some(pid), WaitOptions::empty()) {}
}

/// kill(2) with any signal number: the command line may name a real-time signal, which
/// rustix's `Signal` only admits through an unsafe constructor.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// execve(2); returns only on failure.
pub fn execve(path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`): with the
/// pid it names one process, even after the pid is reused.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `started` and has not exited.
pub fn alive(pid: i32, started: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some((_, after)) = stat.rsplit_once(')') else { return false };
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("X");
    state != "Z" && state != "X" && fields.nth(18).and_then(|s| s.parse().ok()) == Some(started)
}
