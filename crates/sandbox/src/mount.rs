//! Thin wrappers over mount(2)/umount2(2), `/proc/self/mountinfo`, and reading files inside
//! an untrusted root filesystem without following its symlinks out of it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::PathError;

pub use flotilla_runtime::mountinfo::{MountInfo, parse as parse_mountinfo};

pub fn mountinfo() -> Result<Vec<MountInfo>, PathError> {
    flotilla_runtime::mountinfo::read().map_err(|e| PathError::new("read", flotilla_runtime::mountinfo::PATH, e))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// mount(2). `data` is the filesystem-specific option string.
pub fn mount(
    source: &str,
    target: &Path,
    fs_type: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), PathError> {
    let err = |e| PathError::new("mount", target, e);
    let src = CString::new(source).map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    let tgt = cstr(target).map_err(err)?;
    let fst = fs_type.map(CString::new).transpose().map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    let dat = data.map(CString::new).transpose().map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

pub fn bind_mount(source: &Path, target: &Path) -> Result<(), PathError> {
    let src = source.to_str().ok_or_else(|| PathError::new("mount", source, io::ErrorKind::InvalidInput.into()))?;
    mount(src, target, None, libc::MS_BIND, None)
}

// The new mount API (Linux 5.2) and pidfd_getfd (5.6); libc has the syscall numbers only.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn syscall_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// Mounts `source` (a block device) as `fs_type` without attaching it anywhere: the mount
/// lives as long as the returned descriptor (or until [`attach_mount`] puts it in place).
/// `flags` are filesystem flags such as `noinit_itable`; the mount is always `nodev`.
pub fn detached_mount(source: &Path, fs_type: &str, flags: &[&str]) -> io::Result<OwnedFd> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let fs_type = CString::new(fs_type).map_err(|_| invalid())?;
    // SAFETY: fsopen reads a NUL-terminated name.
    let fs = syscall_fd(unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) })?;
    let set = |cmd: libc::c_uint, key: &str, value: Option<&CString>| -> io::Result<()> {
        let key = CString::new(key).map_err(|_| invalid())?;
        let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: fsconfig on our fs context with NUL-terminated key/value (or null) pointers.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key.as_ptr(), value, 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    };
    set(FSCONFIG_SET_STRING, "source", Some(&cstr(source)?))?;
    for flag in flags {
        set(FSCONFIG_SET_FLAG, flag, None)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsmount on a created fs context; returns a new descriptor.
    syscall_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV) })
}

/// Attaches a detached mount (from [`detached_mount`]) at `target`.
pub fn attach_mount(mount: &OwnedFd, target: &Path) -> Result<(), PathError> {
    let tgt = cstr(target).map_err(|e| PathError::new("move_mount", target, e))?;
    let empty = c"";
    // SAFETY: move_mount with a valid descriptor, an empty path (F_EMPTY_PATH) and a valid target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            tgt.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(PathError::new("move_mount", target, io::Error::last_os_error()));
    }
    Ok(())
}

/// A duplicate of descriptor `fd` of process `pid` (pidfd_getfd; root over root).
pub fn fd_of_process(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = syscall_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: pidfd_getfd takes our pidfd, the target's descriptor number and flags.
    syscall_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// umount2(2); `EINVAL` (not a mount point) and `ENOENT` count as already unmounted.
pub fn unmount(target: &Path, detach: bool) -> Result<(), PathError> {
    let tgt = cstr(target).map_err(|e| PathError::new("umount", target, e))?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: `tgt` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(tgt.as_ptr(), flags) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Ok(());
        }
        return Err(PathError::new("umount", target, e));
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first (the order they must be unmounted in).
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, PathError> {
    let mut found: Vec<PathBuf> =
        mountinfo()?.into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts everything at or below `dir`: a clean unmount first, a lazy one if that is busy.
pub fn unmount_all_under(dir: &Path) -> Result<(), PathError> {
    // Stacked mounts on one point need one unmount each, so loop until none remain.
    for _ in 0..16 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            if unmount(&m, false).is_err() {
                unmount(&m, true)?;
            }
        }
    }
    let left = mounts_under(dir)?;
    match left.first() {
        None => Ok(()),
        Some(p) => Err(PathError::new("umount", p, io::Error::from_raw_os_error(libc::EBUSY))),
    }
}

/// Opens `path` inside `root` for reading, resolving every symlink and `..` as if `root`
/// were `/` (openat2 `RESOLVE_IN_ROOT`). Image content is untrusted: `/etc/passwd` in a
/// layer may be a symlink to a host file.
pub fn open_in_root(root: &Path, path: &str) -> Result<File, PathError> {
    let err = |e| PathError::new("open", root.join(path.trim_start_matches('/')), e);
    let root_dir = File::open(root).map_err(|e| PathError::new("open", root, e))?;
    let rel = CString::new(path.trim_start_matches('/')).map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads `how` (size passed explicitly) and the NUL-terminated `rel`; both
    // outlive the call. The returned fd, if any, is owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor returned by openat2 and owned only here.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_in_root_does_not_escape_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(dir.path().join("secret"), "host").unwrap();
        std::fs::write(root.join("secret"), "inside").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("etc/passwd")).unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut open_in_root(&root, "/etc/passwd").unwrap(), &mut s).unwrap();
        assert_eq!(s, "inside");
    }
}
