//! One scratch filesystem shared by every task of a host, each task's share a btrfs subvolume
//! capped by a quota group (Fargate's `ephemeralStorage`), instead of one loop-mounted ext4
//! per task ([`crate::ephemeral`]).
//!
//! Why: a loop device and an ext4 mount cost the kernel ~0.7 MiB per task (superblock, group
//! descriptors, buffer heads, the loop's queue), a third of an idle task's whole footprint,
//! and `mkfs` plus the loop attach are most of the sandbox's set-up time. A subvolume costs a
//! few KiB and one ioctl. btrfs because its quota groups need nothing from the kernel's quota
//! subsystem, which hosts are often built without (ext4 and XFS project quotas need it).
//!
//! Layout: `<root>/.scratch.img` (sparse, as large as the filesystem under `<root>`), attached
//! to a loop device with AUTOCLEAR and mounted *detached* (in no directory, `nodev`,
//! `discard=async` so that space a task frees goes back to the host) by the sandbox's owner,
//! the agent. A task's share is the subvolume `<task id>` at the filesystem's top, bound by its
//! shim at `<task dir>/data`: a task sees its own subvolume only.
//!
//! Lifetime, and why nothing is ever left mounted: the filesystem is held by descriptors, the
//! agent's and every shim's (a shim takes a duplicate of the agent's with `pidfd_getfd` when it
//! starts, checked to be this very filesystem), and by the tasks' own `data` mounts. A `kill -9`
//! of the agent leaves it to the shims and tasks; the next agent mounts the loop device still
//! attached to the image, which is the same filesystem (never a second device for the same
//! image: two instances of one btrfs would corrupt it); when the last holder goes, the kernel
//! unmounts it and the loop device detaches. A subvolume whose task directory is gone (its shim
//! could not reach the filesystem) is deleted when an agent next opens it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags};

use crate::error::PathError;
use crate::mount::unmount;
use crate::status::StorageStats;

/// The image under the sandbox root; starts with a dot, so no task id can name it.
pub const IMAGE: &str = ".scratch.img";

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)`.
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940E;
/// `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)`.
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940F;
/// `_IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)`.
const BTRFS_IOC_INO_LOOKUP: libc::c_ulong = 0xD000_9412;
/// `_IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)`.
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941F;
/// `_IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)`.
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = 0xC010_9428;
/// `_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)`.
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942B;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// The objectid of every subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

/// The shared filesystem as the sandbox's owner (the agent) holds it.
#[derive(Debug)]
pub struct SharedScratch {
    root: OwnedFd,
    /// The detached mount itself: while it is open the mount stays in its anonymous namespace,
    /// and only a mount there can be cloned (a shim binding its task's subvolume).
    _mount: OwnedFd,
    fsid: String,
}

/// How a shim finds the shared filesystem: descriptor `fd` of process `pid` (the agent),
/// which must be the root of the btrfs `fsid`. Passed on the shim's command line
/// (`PID:FD:FSID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub fd: i32,
    pub fsid: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.pid, self.fd, self.fsid)
    }
}

impl std::str::FromStr for Holder {
    type Err = String;
    fn from_str(s: &str) -> Result<Holder, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(pid), Some(fd), Some(fsid)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("not PID:FD:FSID: {s:?}"));
        };
        let pid = pid.parse().map_err(|_| format!("not a pid: {pid:?}"))?;
        let fd = fd.parse().map_err(|_| format!("not a descriptor: {fd:?}"))?;
        Ok(Holder { pid, fd, fsid: fsid.to_owned() })
    }
}

impl SharedScratch {
    /// Takes over or sets up the shared filesystem of `root`. `None` (with the reason logged)
    /// when the host cannot: no loop devices, no btrfs in the kernel, no `mkfs.btrfs`
    /// (btrfs-progs) for a new image; tasks then get a filesystem each, as before.
    pub fn open(root: &Path) -> Option<SharedScratch> {
        match SharedScratch::try_open(root) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!(error = %crate::error::chain(&e), "no shared scratch filesystem; one per task");
                None
            }
        }
    }

    /// As [`SharedScratch::open`], saying why not.
    pub fn try_open(root: &Path) -> Result<SharedScratch, PathError> {
        open(root)
    }

    /// The names of the subvolumes at the top: the tasks that have a share.
    pub fn subvolumes(&self) -> Vec<String> {
        let top = PathBuf::from(format!("/proc/self/fd/{}", self.root.as_raw_fd()));
        let names = std::fs::read_dir(&top).into_iter().flatten().flatten();
        let names = names.filter_map(|e| e.file_name().into_string().ok());
        let mut names: Vec<String> = names.filter(|n| matches!(open_subvolume(&self.root, n), Ok(Some(_)))).collect();
        names.sort();
        names
    }

    /// What a shim of this process is told, to take its own hold.
    pub fn holder(&self) -> Holder {
        Holder { pid: std::process::id(), fd: self.root.as_raw_fd(), fsid: self.fsid.clone() }
    }
}

impl Holder {
    /// A duplicate of the holder's descriptor, once it is proven to be the root of the btrfs
    /// named (the holder may have died and its pid been reused).
    pub fn take(&self) -> Result<OwnedFd, PathError> {
        let what = PathBuf::from(format!("pid {} fd {}", self.pid, self.fd));
        let fd = crate::mount::fd_of_process(self.pid, self.fd).map_err(|e| PathError::new("pidfd_getfd", &what, e))?;
        let root = File::from(fd);
        if !is_btrfs_root(&root) || fsid(&root).as_deref() != Some(self.fsid.as_str()) {
            let e = io::Error::new(io::ErrorKind::InvalidData, format!("not the root of btrfs {}", self.fsid));
            return Err(PathError::new("checking", &what, e));
        }
        Ok(root.into())
    }
}

fn open(root: &Path) -> Result<SharedScratch, PathError> {
    let image = root.join(IMAGE);
    let fail = |what: &'static str, e: io::Error| PathError::new(what, &image, e);
    if !crate::ephemeral::limited_available() {
        return Err(fail("loop devices for", io::Error::new(io::ErrorKind::Unsupported, "no /dev/loop-control")));
    }
    // The loop device still attached to the image is the filesystem that tasks (and their
    // shims) of an earlier agent hold: mount that one, never a second device.
    let (mount, fresh) = match attached_device(&image) {
        Some(device) => (detached_btrfs(&device).map_err(|e| fail("mounting btrfs", e))?, false),
        None => {
            let fresh = !image.exists();
            if fresh {
                make_image(root, &image)?;
            }
            let dev = crate::ephemeral::attach_loop(&image).map_err(|e| fail("attaching a loop device for", e))?;
            // The mount holds the device from here on (AUTOCLEAR).
            (detached_btrfs(dev.path()).map_err(|e| fail("mounting btrfs", e))?, fresh)
        }
    };
    // fsmount gives a path-only descriptor, on which ioctls fail: the directory opened through
    // it is what shims take and ioctls go to.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = File::from(rustix::fs::openat(&mount, ".", flags, Mode::empty()).map_err(|e| fail("opening", e.into()))?);
    if !is_btrfs_root(&dir) {
        return Err(fail("checking", io::Error::new(io::ErrorKind::InvalidData, "not a btrfs root")));
    }
    enable_quotas(&dir).map_err(|e| fail("enabling btrfs quotas on", e))?;
    let fsid = fsid(&dir).ok_or_else(|| fail("reading the btrfs fsid of", io::Error::last_os_error()))?;
    let shared = SharedScratch { root: dir.into(), _mount: mount, fsid };
    if !fresh {
        remove_orphans(root, &shared);
    }
    Ok(shared)
}

fn detached_btrfs(device: &Path) -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen("btrfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(&fs, "source", device)?;
    rustix::mount::fsconfig_set_string(&fs, "discard", "async")?;
    rustix::mount::fsconfig_create(&fs)?;
    let attrs = MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOATIME;
    Ok(rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}

/// A sparse image as large as the filesystem it lives on (the host's disk is the real bound,
/// as it was for one image per task), formatted as btrfs.
fn make_image(root: &Path, image: &Path) -> Result<(), PathError> {
    let st = rustix::fs::statvfs(root).map_err(|e| PathError::new("statvfs", root, e.into()))?;
    let size = (st.f_blocks * st.f_frsize).max(16 << 30);
    let partial = image.with_extension("new");
    let _ = std::fs::remove_file(&partial);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| PathError::new("create", &partial, e))?;
    f.set_len(size).map_err(|e| PathError::new("truncate", &partial, e))?;
    drop(f);
    let out = Command::new("mkfs.btrfs")
        .args(["-q", "-f", "-m", "single", "-d", "single"])
        .arg(&partial)
        .output()
        .map_err(|e| PathError::new("running mkfs.btrfs (apt-get install -y btrfs-progs) for", &partial, e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        let e = io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(PathError::new("mkfs.btrfs", &partial, e));
    }
    std::fs::rename(&partial, image).map_err(|e| PathError::new("rename", &partial, e))
}

fn enable_quotas(dir: &File) -> io::Result<()> {
    let mut args = QuotaCtlArgs { cmd: BTRFS_QUOTA_CTL_ENABLE, status: 0 };
    // SAFETY: BTRFS_IOC_QUOTA_CTL reads and writes one QuotaCtlArgs through a valid pointer.
    if unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_QUOTA_CTL, &mut args as *mut QuotaCtlArgs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `f` is the root directory of a btrfs subvolume.
fn is_btrfs_root(f: &File) -> bool {
    let Ok(st) = rustix::fs::fstatfs(f) else { return false };
    let Ok(meta) = f.metadata() else { return false };
    st.f_type == BTRFS_SUPER_MAGIC && meta.is_dir() && meta.ino() == BTRFS_FIRST_FREE_OBJECTID
}

/// Whether `dir` is the root of a btrfs subvolume (a task's `data` on the shared filesystem).
pub fn is_subvolume(dir: &Path) -> bool {
    File::open(dir).is_ok_and(|f| is_btrfs_root(&f))
}

/// The loop device attached to `image`, if any.
fn attached_device(image: &Path) -> Option<PathBuf> {
    let want = std::fs::metadata(image).ok()?;
    for entry in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().filter(|n| n.starts_with("loop")) else { continue };
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = Path::new(backing.trim_end());
        let same = std::fs::metadata(backing).is_ok_and(|m| m.dev() == want.dev() && m.ino() == want.ino());
        if same {
            return Some(PathBuf::from(format!("/dev/{n}")));
        }
    }
    None
}

/// The filesystem's UUID as sysfs names it (`/sys/fs/btrfs/<uuid>`).
fn fsid(f: &File) -> Option<String> {
    // SAFETY: FsInfoArgs is plain old data; all-zero is a valid input.
    let mut args: FsInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: BTRFS_IOC_FS_INFO fills one 1024-byte struct through a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_FS_INFO, &mut args as *mut FsInfoArgs) } != 0 {
        return None;
    }
    let h: String = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

fn vol_args(name: &str) -> Result<VolArgs, io::Error> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= 4088 || bytes.contains(&b'/') || bytes.contains(&0) || name.starts_with('.') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a subvolume name: {name:?}")));
    }
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    args.name[..bytes.len()].copy_from_slice(bytes);
    Ok(args)
}

fn open_subvolume(shared: &OwnedFd, task_id: &str) -> io::Result<Option<File>> {
    match rustix::fs::openat(
        shared,
        task_id,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let f = File::from(fd);
            Ok(is_btrfs_root(&f).then_some(f))
        }
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes the task's subvolume (or reuses the one a previous attempt made) on the shared
/// filesystem `shared` (a root descriptor from [`Holder::take`]), caps it at `size_gib` and
/// binds it at `mount_point`.
pub fn create(shared: &OwnedFd, task_id: &str, size_gib: u64, mount_point: &Path) -> Result<(), PathError> {
    let path = PathBuf::from(format!("<shared scratch>/{task_id}"));
    let err = |what: &'static str| {
        move |e: io::Error| PathError::new(what, PathBuf::from(format!("<shared scratch>/{task_id}")), e)
    };
    let sub = match open_subvolume(shared, task_id).map_err(err("open"))? {
        Some(sub) => sub,
        None => {
            let args = vol_args(task_id).map_err(err("subvolume"))?;
            // SAFETY: BTRFS_IOC_SUBVOL_CREATE reads one VolArgs through a valid pointer.
            if unsafe { libc::ioctl(shared.as_raw_fd(), BTRFS_IOC_SUBVOL_CREATE, &args as *const VolArgs) } != 0 {
                return Err(PathError::new("creating subvolume", &path, io::Error::last_os_error()));
            }
            open_subvolume(shared, task_id)
                .map_err(err("open"))?
                .ok_or_else(|| PathError::new("open", &path, io::Error::from(io::ErrorKind::NotFound)))?
        }
    };
    let limit = QgroupLimitArgs {
        qgroupid: 0,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: size_gib << 30,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: BTRFS_IOC_QGROUP_LIMIT reads one QgroupLimitArgs through a valid pointer;
    // qgroupid 0 names the subvolume `sub` is the root of.
    if unsafe { libc::ioctl(sub.as_raw_fd(), BTRFS_IOC_QGROUP_LIMIT, &limit as *const QgroupLimitArgs) } != 0 {
        return Err(PathError::new("limiting subvolume", &path, io::Error::last_os_error()));
    }
    std::fs::create_dir_all(mount_point).map_err(|e| PathError::new("mkdir", mount_point, e))?;
    let tree = rustix::mount::open_tree(
        &sub,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| PathError::new("open_tree", &path, e.into()))?;
    crate::mount::attach_mount(&tree, mount_point)
}

/// Unmounts `mount_point` and deletes the task's subvolume from `shared` (nothing to delete
/// when there is none).
pub fn remove(shared: Option<&OwnedFd>, task_id: &str, mount_point: &Path) -> Result<(), PathError> {
    if unmount(mount_point, false).is_err() {
        unmount(mount_point, true)?;
    }
    let Some(shared) = shared else { return Ok(()) };
    let path = PathBuf::from(format!("<shared scratch>/{task_id}"));
    if open_subvolume(shared, task_id).map_err(|e| PathError::new("open", &path, e))?.is_none() {
        return Ok(());
    }
    let args = vol_args(task_id).map_err(|e| PathError::new("subvolume", &path, e))?;
    // SAFETY: BTRFS_IOC_SNAP_DESTROY reads one VolArgs through a valid pointer.
    if unsafe { libc::ioctl(shared.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY, &args as *const VolArgs) } != 0 {
        return Err(PathError::new("deleting subvolume", &path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Deletes the subvolumes of tasks whose directory under `root` is gone.
fn remove_orphans(root: &Path, shared: &SharedScratch) {
    for task_id in shared.subvolumes() {
        if root.join(&task_id).exists() {
            continue;
        }
        let Ok(args) = vol_args(&task_id) else { continue };
        // SAFETY: as in `remove`.
        if unsafe { libc::ioctl(shared.root.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY, &args as *const VolArgs) } != 0 {
            tracing::warn!(task_id, error = %io::Error::last_os_error(), "leftover scratch subvolume not removed");
        }
    }
}

/// Space used by and allowed to the subvolume mounted at `mount_point` (its quota group's
/// referenced bytes, as of the filesystem's last commit, and its limit).
pub fn usage(mount_point: &Path) -> Result<StorageStats, PathError> {
    let f = File::open(mount_point).map_err(|e| PathError::new("open", mount_point, e))?;
    let mut args = InoLookupArgs { treeid: 0, objectid: BTRFS_FIRST_FREE_OBJECTID, name: [0; 4080] };
    // SAFETY: BTRFS_IOC_INO_LOOKUP reads and writes one InoLookupArgs through a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_INO_LOOKUP, &mut args as *mut InoLookupArgs) } != 0 {
        return Err(PathError::new("looking up the subvolume of", mount_point, io::Error::last_os_error()));
    }
    let id = fsid(&f).ok_or_else(|| PathError::new("btrfs fsid of", mount_point, io::Error::last_os_error()))?;
    let group = PathBuf::from(format!("/sys/fs/btrfs/{id}/qgroups/0_{}", args.treeid));
    let read = |name: &str| -> Result<u64, PathError> {
        let path = group.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| PathError::new("read", &path, e))?;
        // An unlimited group reads "none".
        Ok(text.trim().parse().unwrap_or(0))
    };
    Ok(StorageStats { used_bytes: read("referenced")?, size_bytes: read("max_referenced")? })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_arguments_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<super::VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<super::InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<super::QuotaCtlArgs>(), 16);
        assert_eq!(std::mem::size_of::<super::QgroupLimitArgs>(), 48);
        assert_eq!(std::mem::size_of::<super::FsInfoArgs>(), 1024);
    }

    #[test]
    fn subvolume_names_stay_in_the_shared_directory() {
        for bad in ["", "a/b", "..", ".scratch", "x\0y"] {
            assert!(super::vol_args(bad).is_err(), "{bad:?}");
        }
        assert!(super::vol_args("0123abcd").is_ok());
    }
}
