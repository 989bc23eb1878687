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
//! to a loop device with AUTOCLEAR and mounted at `<root>/.scratch` (`nodev`, `discard=async`,
//! so space a task frees goes back to the host). A task's share is the subvolume
//! `<root>/.scratch/<task id>`, bind-mounted by its shim at `<task dir>/data`; a task sees its
//! own subvolume only (the bind mount's root is the top of its world).
//!
//! Restarts: the mount at `<root>/.scratch` outlives the agent (a `kill -9` leaves it, and the
//! tasks' bind mounts hold the filesystem anyway); a new agent takes over a mount that is the
//! image's filesystem, and otherwise mounts the loop device already attached to the image
//! (never a second device for the same image: two mounts of one btrfs through two devices
//! would corrupt it). When the agent stops it detaches its mount; the filesystem lives on
//! while tasks hold it and goes (with its loop device) when the last one does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::MountFlags;

use crate::error::PathError;
use crate::mount::{bind_mount, mount, unmount};
use crate::status::StorageStats;

/// Under the sandbox root; starts with a dot, so no task id can name it.
pub const SHARED_DIR: &str = ".scratch";
const IMAGE: &str = ".scratch.img";

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

/// The mounted shared filesystem, held by the sandbox's owner (the agent).
#[derive(Debug)]
pub struct SharedScratch {
    dir: PathBuf,
}

impl SharedScratch {
    /// Takes over or sets up `<root>/.scratch`. `None` (with the reason logged) when the host
    /// cannot: no loop devices, no btrfs in the kernel, no `mkfs.btrfs` (btrfs-progs) for a
    /// new image; tasks then get a filesystem each, as before.
    pub fn open(root: &Path) -> Option<SharedScratch> {
        match open(root) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!(error = %crate::error::chain(&e), "no shared scratch filesystem; one per task");
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SharedScratch {
    fn drop(&mut self) {
        // Detached: tasks still running keep the filesystem through their own mounts; once
        // none does, the kernel lets it and its loop device go.
        let _ = unmount(&self.dir, true);
    }
}

fn open(root: &Path) -> Result<SharedScratch, PathError> {
    let dir = root.join(SHARED_DIR);
    let image = root.join(IMAGE);
    let fail = |what: &'static str, e: io::Error| PathError::new(what, &dir, e);
    if !crate::ephemeral::limited_available() {
        return Err(fail("loop devices for", io::Error::new(io::ErrorKind::Unsupported, "no /dev/loop-control")));
    }
    std::fs::create_dir_all(&dir).map_err(|e| fail("mkdir", e))?;
    if is_btrfs(&dir) && same_image(&dir, &image) {
        remove_orphans(root, &dir);
        return Ok(SharedScratch { dir });
    }
    let device = match attached_device(&image) {
        Some(device) => device,
        None => {
            if !image.exists() {
                make_image(root, &image)?;
            }
            let dev = crate::ephemeral::attach_loop(&image).map_err(|e| fail("attaching a loop device for", e))?;
            let path = dev.path().to_path_buf();
            // The mount below holds the device from here on (AUTOCLEAR).
            mount_shared(&path, &dir)?;
            drop(dev);
            enable_quotas(&dir)?;
            return Ok(SharedScratch { dir });
        }
    };
    mount_shared(&device, &dir)?;
    enable_quotas(&dir)?;
    remove_orphans(root, &dir);
    Ok(SharedScratch { dir })
}

/// Deletes the subvolumes of tasks whose directory is gone (a shim that removed its task
/// while no agent had the shared filesystem mounted could only unmount its share).
fn remove_orphans(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(task_id) = name.to_str() else { continue };
        if root.join(task_id).exists() || !is_btrfs(&entry.path()) {
            continue;
        }
        if let Err(e) = remove(dir, task_id, &root.join(task_id).join("data")) {
            tracing::warn!(error = %crate::error::chain(&e), "leftover scratch subvolume not removed");
        }
    }
}

fn mount_shared(device: &Path, dir: &Path) -> Result<(), PathError> {
    mount(&device.display().to_string(), dir, "btrfs", MountFlags::NODEV | MountFlags::NOATIME, Some("discard=async"))
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

fn enable_quotas(dir: &Path) -> Result<(), PathError> {
    let f = File::open(dir).map_err(|e| PathError::new("open", dir, e))?;
    let mut args = QuotaCtlArgs { cmd: BTRFS_QUOTA_CTL_ENABLE, status: 0 };
    // SAFETY: BTRFS_IOC_QUOTA_CTL reads and writes one QuotaCtlArgs through a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_QUOTA_CTL, &mut args as *mut QuotaCtlArgs) } != 0 {
        return Err(PathError::new("enabling btrfs quotas on", dir, io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether `dir` is the root of a mounted btrfs.
pub fn is_btrfs(dir: &Path) -> bool {
    let Ok(st) = rustix::fs::statfs(dir) else { return false };
    let Ok(meta) = std::fs::metadata(dir) else { return false };
    st.f_type == BTRFS_SUPER_MAGIC && meta.ino() == BTRFS_FIRST_FREE_OBJECTID
}

/// Whether the filesystem mounted at `dir` lives on `image` (through its loop device).
fn same_image(dir: &Path, image: &Path) -> bool {
    let Some(device) = attached_device(image) else { return false };
    let Some(name) = device.file_name() else { return false };
    fsid(dir).is_some_and(|id| Path::new("/sys/fs/btrfs").join(id).join("devices").join(name).exists())
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
fn fsid(dir: &Path) -> Option<String> {
    let f = File::open(dir).ok()?;
    // SAFETY: FsInfoArgs is plain old data; all-zero is a valid input.
    let mut args: FsInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: BTRFS_IOC_FS_INFO fills one 1024-byte struct through a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_FS_INFO, &mut args as *mut FsInfoArgs) } != 0 {
        return None;
    }
    let h: String = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// The shared directory a task directory's shim uses, when the agent has mounted one.
pub fn for_task(task_dir: &Path) -> Option<PathBuf> {
    let dir = task_dir.parent()?.join(SHARED_DIR);
    is_btrfs(&dir).then_some(dir)
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

/// Makes the task's subvolume `<shared>/<task_id>` (or reuses the one a previous attempt
/// made), caps it at `size_gib` and bind-mounts it at `mount_point`.
pub fn create(shared: &Path, task_id: &str, size_gib: u64, mount_point: &Path) -> Result<(), PathError> {
    let sub = shared.join(task_id);
    if !is_btrfs(&sub) {
        let parent = File::open(shared).map_err(|e| PathError::new("open", shared, e))?;
        let args = vol_args(task_id).map_err(|e| PathError::new("subvolume", &sub, e))?;
        // SAFETY: BTRFS_IOC_SUBVOL_CREATE reads one VolArgs through a valid pointer.
        if unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SUBVOL_CREATE, &args as *const VolArgs) } != 0 {
            return Err(PathError::new("creating subvolume", &sub, io::Error::last_os_error()));
        }
    }
    let f = File::open(&sub).map_err(|e| PathError::new("open", &sub, e))?;
    let limit = QgroupLimitArgs {
        qgroupid: 0,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: size_gib << 30,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: BTRFS_IOC_QGROUP_LIMIT reads one QgroupLimitArgs through a valid pointer;
    // qgroupid 0 names the subvolume `f` is in.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_QGROUP_LIMIT, &limit as *const QgroupLimitArgs) } != 0 {
        return Err(PathError::new("limiting subvolume", &sub, io::Error::last_os_error()));
    }
    std::fs::create_dir_all(mount_point).map_err(|e| PathError::new("mkdir", mount_point, e))?;
    bind_mount(&sub, mount_point)
}

/// Unmounts `mount_point` and deletes the task's subvolume; nothing to do when there is none.
pub fn remove(shared: &Path, task_id: &str, mount_point: &Path) -> Result<(), PathError> {
    if mount_point.exists() && unmount(mount_point, false).is_err() {
        unmount(mount_point, true)?;
    }
    let sub = shared.join(task_id);
    if !is_btrfs(&sub) {
        return Ok(());
    }
    let parent = File::open(shared).map_err(|e| PathError::new("open", shared, e))?;
    let args = vol_args(task_id).map_err(|e| PathError::new("subvolume", &sub, e))?;
    // SAFETY: BTRFS_IOC_SNAP_DESTROY reads one VolArgs through a valid pointer.
    if unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY, &args as *const VolArgs) } != 0 {
        return Err(PathError::new("deleting subvolume", &sub, io::Error::last_os_error()));
    }
    Ok(())
}

/// Space used by and allowed to the subvolume mounted at `mount_point` (its quota group's
/// referenced bytes and limit).
pub fn usage(mount_point: &Path) -> Result<StorageStats, PathError> {
    let f = File::open(mount_point).map_err(|e| PathError::new("open", mount_point, e))?;
    let mut args = InoLookupArgs { treeid: 0, objectid: BTRFS_FIRST_FREE_OBJECTID, name: [0; 4080] };
    // SAFETY: BTRFS_IOC_INO_LOOKUP reads and writes one InoLookupArgs through a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BTRFS_IOC_INO_LOOKUP, &mut args as *mut InoLookupArgs) } != 0 {
        return Err(PathError::new("looking up the subvolume of", mount_point, io::Error::last_os_error()));
    }
    let id =
        fsid(mount_point).ok_or_else(|| PathError::new("btrfs fsid of", mount_point, io::Error::last_os_error()))?;
    let group = PathBuf::from(format!("/sys/fs/btrfs/{id}/qgroups/0_{}", args.treeid));
    let read = |name: &str| -> Result<u64, PathError> {
        let path = group.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| PathError::new("read", &path, e))?;
        let text = text.trim();
        // An unlimited group reads "none".
        Ok(text.parse().unwrap_or(0))
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
