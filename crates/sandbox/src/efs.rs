//! EFS volumes on the host: a directory inside a file system's directory, resolved without
//! ever leaving it (openat2 `RESOLVE_IN_ROOT`: `..` and symlinks stop at the file system's
//! root), cloned as a detached bind mount from that descriptor (so nothing can swap a path
//! component between the check and the mount) and attached under the task directory, from
//! where the containers' `mountPoints` bind it. The task's teardown unmounts everything under
//! its directory, so nothing stays mounted after the task.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use serde::{Deserialize, Serialize};

use crate::error::PathError;

/// One EFS volume of a task, as the agent resolved it with the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsMount {
    /// The task definition's volume name (what `mountPoints` name).
    pub name: String,
    /// The file system's directory on this host: nothing above it is ever reachable.
    pub file_system_dir: PathBuf,
    /// Inside the file system, `/`-separated.
    pub path: String,
    /// The access point's root directory, made with this owner and mode if missing.
    #[serde(default)]
    pub create_root: Option<EfsRoot>,
    /// The access point's POSIX user: what a container's writes are owned by on disk.
    #[serde(default)]
    pub posix_user: Option<EfsIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EfsIdentity {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsRoot {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Where a task's EFS volume is attached, inside its task directory.
pub fn mount_point(task_dir: &Path, name: &str) -> PathBuf {
    task_dir.join("efs").join(name)
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

/// Opens directory `path` inside `root` as if `root` were `/`.
fn open_dir_in(root: &File, path: &str) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve_flags())?)
}

/// Makes every missing directory of `root.path` (inside the file system) with its owner and
/// mode, as EFS does the first time an access point with `CreationInfo` is used.
fn create_root(fs: &File, root: &EfsRoot) -> io::Result<()> {
    let mut parent = open_dir_in(fs, "/")?;
    let mut so_far = String::new();
    for part in root.path.split('/').filter(|p| !p.is_empty()) {
        so_far.push('/');
        so_far.push_str(part);
        match open_dir_in(fs, &so_far) {
            Ok(fd) => parent = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // The parent was resolved inside the file system; creating under its
                // descriptor cannot land anywhere else.
                let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let parent_dir = rustix::fs::openat(&parent, ".", dir_flags, Mode::empty())?;
                match rustix::fs::mkdirat(&parent_dir, part, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let created = rustix::fs::openat(&parent_dir, part, dir_flags | OFlags::NOFOLLOW, Mode::empty())?;
                rustix::fs::fchown(&created, Some(Uid::from_raw(root.uid)), Some(Gid::from_raw(root.gid)))?;
                rustix::fs::fchmod(&created, Mode::from_raw_mode(root.mode & 0o7777))?;
                parent = open_dir_in(fs, &so_far)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Attaches the volume at [`mount_point`] and returns that path.
pub fn mount(task_dir: &Path, volume: &EfsMount) -> Result<PathBuf, PathError> {
    let fs = File::open(&volume.file_system_dir).map_err(|e| PathError::new("open", &volume.file_system_dir, e))?;
    let inside = volume.file_system_dir.join(volume.path.trim_start_matches('/'));
    if let Some(root) = &volume.create_root {
        create_root(&fs, root).map_err(|e| PathError::new("create", volume.file_system_dir.join(&root.path), e))?;
    }
    let dir = open_dir_in(&fs, &volume.path).map_err(|e| PathError::new("open", &inside, e))?;
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH;
    let tree = rustix::mount::open_tree(&dir, "", flags).map_err(|e| PathError::new("open_tree", &inside, e.into()))?;
    let target = mount_point(task_dir, &volume.name);
    std::fs::create_dir_all(&target).map_err(|e| PathError::new("mkdir", &target, e))?;
    rustix::mount::move_mount(&tree, "", CWD, &target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| PathError::new("move_mount", &target, e.into()))?;
    Ok(target)
}

/// The volume as one container mounts it. Without a POSIX user, the task's mount of it. With
/// one, a clone of that mount idmapped for this container (attached beside it): the
/// container's user and the POSIX user trade places, so what the container creates belongs to
/// the POSIX user on disk and the POSIX user's files are the container's own to it, as EFS
/// treats every request through an access point as its POSIX user's. (An idmapping is a
/// bijection, so the container sees those files under its own ids, where EFS would show the
/// POSIX user's.)
pub fn container_source(
    task_dir: &Path,
    volume: &EfsMount,
    container: &str,
    user: EfsIdentity,
) -> Result<PathBuf, PathError> {
    let base = mount_point(task_dir, &volume.name);
    let Some(posix) = volume.posix_user.filter(|p| *p != user) else { return Ok(base) };
    let target = task_dir.join("efs").join(format!("{}.{container}", volume.name));
    if crate::mount::mounts_under(&target)?.contains(&target) {
        return Ok(target);
    }
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let tree = rustix::mount::open_tree(CWD, &base, flags).map_err(|e| PathError::new("open_tree", &base, e.into()))?;
    let userns = swapping_userns(user, posix).map_err(|e| PathError::new("make a user namespace for", &base, e))?;
    set_idmap(&tree, &userns).map_err(|e| PathError::new("mount_setattr", &base, e))?;
    std::fs::create_dir_all(&target).map_err(|e| PathError::new("mkdir", &target, e))?;
    rustix::mount::move_mount(&tree, "", CWD, &target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| PathError::new("move_mount", &target, e.into()))?;
    Ok(target)
}

/// `/proc/<pid>/uid_map` lines: every id maps to itself but `a` and `b`, which trade places.
fn swap_map(a: u32, b: u32) -> String {
    if a == b {
        return "0 0 4294967295\n".to_owned();
    }
    let (lo, hi) = (a.min(b), a.max(b));
    let mut lines = Vec::new();
    if lo > 0 {
        lines.push(format!("0 0 {lo}"));
    }
    lines.push(format!("{lo} {hi} 1"));
    if hi - lo > 1 {
        lines.push(format!("{} {} {}", lo + 1, lo + 1, hi - lo - 1));
    }
    lines.push(format!("{hi} {lo} 1"));
    let rest = 4294967295u64 - (u64::from(hi) + 1);
    if rest > 0 {
        lines.push(format!("{} {} {rest}", hi + 1, hi + 1));
    }
    lines.join("\n") + "\n"
}

/// A user namespace whose ids are the host's with `user` and `posix` swapped, held by a
/// descriptor (the process that made it is gone by the time this returns).
fn swapping_userns(user: EfsIdentity, posix: EfsIdentity) -> io::Result<OwnedFd> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("cat");
    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    // SAFETY: unshare is async-signal-safe and touches no memory of the parent; the child is
    // single-threaded after fork, as CLONE_NEWUSER requires.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
        });
    }
    let mut child = command.spawn()?;
    let made = (|| {
        let proc = PathBuf::from(format!("/proc/{}", child.id()));
        std::fs::write(proc.join("uid_map"), swap_map(user.uid, posix.uid))?;
        std::fs::write(proc.join("gid_map"), swap_map(user.gid, posix.gid))?;
        Ok(OwnedFd::from(File::open(proc.join("ns/user"))?))
    })();
    drop(child.stdin.take());
    let _ = child.kill();
    // The shim's reaper may collect it first; either way it is gone.
    let _ = child.wait();
    made
}

/// mount_setattr(2) with `MOUNT_ATTR_IDMAP` on a detached mount (Linux 5.12).
fn set_idmap(tree: &OwnedFd, userns: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: the path is a valid empty C string, `attr` lives across the call and its size is
    // passed; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let fs_dir = dir.path().join("fs");
        std::fs::create_dir_all(fs_dir.join("app")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside/secret")).unwrap();
        std::os::unix::fs::symlink("../../outside", fs_dir.join("app/up")).unwrap();
        std::os::unix::fs::symlink("/", fs_dir.join("abs")).unwrap();
        let fs = File::open(&fs_dir).unwrap();
        // `..` above the root stays at the root; a link to `/` is the file system's root.
        let root_ino = std::fs::metadata(&fs_dir).unwrap();
        for path in ["/../..", "/abs", "/app/../.."] {
            let fd = open_dir_in(&fs, path).unwrap();
            let st = rustix::fs::fstat(&fd).unwrap();
            assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&root_ino), "{path}");
        }
        assert!(open_dir_in(&fs, "/app/up/secret").is_err(), "a link must not reach outside");
    }

    #[test]
    fn swap_maps_cover_every_id_once() {
        assert_eq!(swap_map(0, 1000), "0 1000 1\n1 1 999\n1000 0 1\n1001 1001 4294966294\n");
        assert_eq!(swap_map(1000, 1001), "0 0 1000\n1000 1001 1\n1001 1000 1\n1002 1002 4294966293\n");
    }

    #[test]
    fn the_access_point_root_is_made_with_its_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fs = File::open(dir.path()).unwrap();
        create_root(&fs, &EfsRoot { path: "/app/data".into(), uid: 1000, gid: 1001, mode: 0o750 }).unwrap();
        let meta = std::fs::metadata(dir.path().join("app/data")).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777), (1000, 1001, 0o750));
    }
}
