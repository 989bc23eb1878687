//! Thin wrappers over the system calls the runtime makes, each returning `io::Result` with the
//! call and its path in the error, so a failed setup step says exactly what failed.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cstring).transpose()?;
    let fs = fstype.map(cstring).transpose()?;
    let dat = data.filter(|d| !d.is_empty()).map(cstring).transpose()?;
    let tgt = cstr(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) allows.
    let rc = unsafe { libc::mount(ptr(&src), tgt.as_ptr(), ptr(&fs), flags, ptr(&dat) as *const libc::c_void) };
    check(rc).map(drop).map_err(|e| err_at(&format!("mounting {} on", source.or(fstype).unwrap_or("-")), target, e))
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    let tgt = cstr(target)?;
    // SAFETY: valid path string.
    check(unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) }).map(drop).map_err(|e| err_at("umount", target, e))
}

/// `pivot_root(".", ".")` in the current directory: the old root ends up stacked under the new
/// one, where a lazy unmount of "." removes it without needing a directory for it.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: static strings; pivot_root has no libc wrapper.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc < 0 { Err(io::Error::other(format!("pivot_root: {}", io::Error::last_os_error()))) } else { Ok(()) }
}

pub fn chdir(path: &Path) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid path string.
    check(unsafe { libc::chdir(p.as_ptr()) }).map(drop).map_err(|e| err_at("chdir", path, e))
}

pub fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid path string; makedev is pure arithmetic.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) })
        .map(drop)
        .map_err(|e| err_at("mknod", path, e))
}

/// Opens `path` with `flags` (O_CLOEXEC added).
pub fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: valid path string; the fd returned is ours alone.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) }).map_err(|e| err_at("open", path, e))?;
    // SAFETY: a fresh fd from open(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn setns(fd: &OwnedFd, nstype: libc::c_int, what: &str) -> io::Result<()> {
    // SAFETY: a valid namespace fd.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("joining the {what} namespace: {e}")))
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain flags.
    check(unsafe { libc::unshare(flags) }).map(drop).map_err(|e| io::Error::new(e.kind(), format!("unshare: {e}")))
}

/// A pipe whose ends are both close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh fds from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

pub fn waitpid(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Some(status);
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

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

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("prctl({option}): {e}")))
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
