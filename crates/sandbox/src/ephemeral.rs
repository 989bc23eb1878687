//! The task's size-limited scratch filesystem (Fargate's `ephemeralStorage`): a sparse file
//! formatted as ext4 and loop-mounted at `<task>/data`. Writable layers and volumes live on
//! it, so one task cannot fill the host's disk. Creating it costs a few milliseconds: the
//! file is sparse, mkfs skips inode-table and journal zeroing, and the filesystem has no
//! journal at all (its content dies with the task anyway).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::MountFlags;
use serde::{Deserialize, Serialize};

use crate::error::PathError;
use crate::mount::{mount, unmount};
use crate::status::StorageStats;

/// Runs a helper program. The shim routes this through its child reaper; anything else can
/// use [`DirectRunner`].
pub trait CommandRunner {
    fn run(&self, cmd: &mut Command) -> io::Result<Output>;
}

pub struct DirectRunner;

impl CommandRunner for DirectRunner {
    fn run(&self, cmd: &mut Command) -> io::Result<Output> {
        cmd.output()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EphemeralError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("running mkfs.ext4 (apt-get install -y e2fsprogs)")]
    MkfsSpawn(#[source] io::Error),
    #[error("mkfs.ext4 {} failed: {stderr}", image.display())]
    Mkfs { image: PathBuf, stderr: String },
    #[error("attaching {} to a loop device", image.display())]
    Loop {
        image: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the scratch space ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scratch {
    /// A loop-mounted ext4 of the requested size.
    Limited,
    /// Loop devices are unavailable: a plain directory without a size limit.
    Unlimited,
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A fresh scratch filesystem made ahead of time (see [`crate::scratch_pool`]): `image`,
/// formatted and attached to `device`, which the pool keeps open so that it stays attached.
/// This is what a shim is told when it is handed one; it checks it before use ([`adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PooledScratch {
    pub image: PathBuf,
    pub device: PathBuf,
    pub size_gib: u64,
    /// The filesystem already mounted, detached, and held by descriptor `fd` of process `pid`
    /// (the pool), so that taking it over costs no mount; `None` when the kernel lacks the
    /// new mount API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<HeldMount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMount {
    pub pid: u32,
    pub fd: i32,
}

/// True when the host can enforce a size limit (it has loop devices).
pub fn limited_available() -> bool {
    Path::new("/dev/loop-control").exists()
}

/// Creates `image` (sparse, `size_gib`), formats it and mounts it at `mount_point`.
/// Falls back to a plain directory only when the host has no loop devices.
pub fn create(
    image: &Path,
    mount_point: &Path,
    size_gib: u64,
    runner: &dyn CommandRunner,
) -> Result<Scratch, EphemeralError> {
    std::fs::create_dir_all(mount_point).map_err(|e| PathError::new("mkdir", mount_point, e))?;
    if !limited_available() {
        tracing::warn!("no /dev/loop-control: task scratch space at {} has no size limit", mount_point.display());
        return Ok(Scratch::Unlimited);
    }
    make_image(image, size_gib, runner)?;
    let device = attach_loop(image).map_err(|source| EphemeralError::Loop { image: image.to_path_buf(), source })?;
    let result = mount_device(&device.path, mount_point);
    // The mount now holds the loop device; with AUTOCLEAR it detaches when unmounted.
    drop(device);
    result?;
    Ok(Scratch::Limited)
}

/// Writes a new sparse file of `size_gib` at `image` and formats it as ext4. Whatever was at
/// `image` is unlinked first, never rewritten in place: a loop device may still hold it.
pub fn make_image(image: &Path, size_gib: u64, runner: &dyn CommandRunner) -> Result<(), EphemeralError> {
    match std::fs::remove_file(image) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PathError::new("remove", image, e).into()),
    }
    {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(image)
            .map_err(|e| PathError::new("create", image, e))?;
        f.set_len(size_gib << 30).map_err(|e| PathError::new("truncate", image, e))?;
    }
    let out = runner
        .run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
                .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
                .arg(image),
        )
        .map_err(EphemeralError::MkfsSpawn)?;
    if !out.status.success() {
        return Err(EphemeralError::Mkfs {
            image: image.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn mount_device(device: &Path, mount_point: &Path) -> Result<(), PathError> {
    // noinit_itable: never zero the inode tables in the background, which would slowly
    // allocate hundreds of MiB of the sparse file for nothing.
    mount(&device.display().to_string(), mount_point, "ext4", MountFlags::NODEV, Some("noinit_itable"))
}

/// Takes over a pooled filesystem for a task: moves `pooled.image` to `image` (from then on
/// the task directory owns it and it goes with the task), checks that `pooled.device` is
/// attached to exactly that file, at the task's size, and mounts it at `mount_point`.
///
/// The check matters: had the pool's owner died after sending the hand-off, the device would
/// have detached and could since be attached to another task's image. It is made while this
/// process holds the device open, so the device cannot change before the mount holds it too.
/// On an error the caller makes a fresh filesystem instead ([`create`] replaces the image).
pub fn adopt(
    pooled: &PooledScratch,
    image: &Path,
    mount_point: &Path,
    size_gib: u64,
) -> Result<Adopted, EphemeralError> {
    let loop_err = |source: io::Error| EphemeralError::Loop { image: image.to_path_buf(), source };
    let invalid = |what: String| loop_err(io::Error::new(io::ErrorKind::InvalidData, what));
    if pooled.size_gib != size_gib {
        return Err(invalid(format!("the pooled filesystem has {} GiB, the task {size_gib}", pooled.size_gib)));
    }
    let numbered = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let is_loop = pooled.device.to_str().and_then(|d| d.strip_prefix("/dev/loop")).is_some_and(numbered);
    if !is_loop || !pooled.image.is_absolute() {
        return Err(invalid(format!("not a pooled filesystem: {pooled:?}")));
    }
    std::fs::create_dir_all(mount_point).map_err(|e| PathError::new("mkdir", mount_point, e))?;
    std::fs::rename(&pooled.image, image).map_err(|e| PathError::new("rename", &pooled.image, e))?;
    let meta = std::fs::symlink_metadata(image).map_err(|e| PathError::new("stat", image, e))?;
    if !meta.file_type().is_file() || meta.len() != size_gib << 30 {
        return Err(invalid(format!("{} is not a {size_gib} GiB file", image.display())));
    }
    // Read-only: the pool has the filesystem mounted, and status needs no more.
    let dev = File::open(&pooled.device).map_err(loop_err)?;
    // SAFETY: LoopInfo64 is plain old data; all-zero is a valid value for the kernel to fill.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through a valid pointer.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) } != 0 {
        return Err(loop_err(io::Error::last_os_error()));
    }
    use std::os::unix::fs::MetadataExt;
    let same_file = info.lo_device == meta.dev() && info.lo_inode == meta.ino();
    if !same_file || info.lo_offset != 0 || info.lo_sizelimit != 0 || info.lo_flags & LO_FLAGS_AUTOCLEAR == 0 {
        return Err(invalid(format!("{} is not (only) {}", pooled.device.display(), image.display())));
    }
    let held = pooled.mount.map(|h| attach_held(h, &pooled.device, mount_point));
    let adopted = match held {
        Some(Ok(())) => Adopted::Attached,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "pooled mount not taken over; mounting the device");
            mount_device(&pooled.device, mount_point)?;
            Adopted::Mounted
        }
        None => {
            mount_device(&pooled.device, mount_point)?;
            Adopted::Mounted
        }
    };
    drop(dev);
    Ok(adopted)
}

/// How a pooled filesystem was taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The pool's mount, attached in place: no mount at all on the start path.
    Attached,
    /// The pooled device, mounted here.
    Mounted,
}

/// Attaches the pool's detached mount at `mount_point`, once it is proven to be the root of
/// the filesystem on `device` (which the caller has checked), writable and `nodev`.
fn attach_held(held: HeldMount, device: &Path, mount_point: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::MetadataExt;
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const EXT4_ROOT_INO: u64 = 2;
    let fd = crate::mount::fd_of_process(held.pid, held.fd).map_err(|e| PathError::new("pidfd_getfd", device, e))?;
    let root = File::from(fd);
    let dev = std::fs::metadata(device).map_err(|e| PathError::new("stat", device, e))?;
    let meta = root.metadata().map_err(|e| PathError::new("fstat mount of", device, e))?;
    let st = rustix::fs::fstatfs(&root).map_err(|e| PathError::new("fstatfs mount of", device, e.into()))?;
    let vfs = rustix::fs::fstatvfs(&root).map_err(|e| PathError::new("fstatvfs mount of", device, e.into()))?;
    let ok = meta.dev() == dev.rdev()
        && meta.ino() == EXT4_ROOT_INO
        && st.f_type as i64 == EXT4_SUPER_MAGIC
        && vfs.f_flag.contains(StatVfsMountFlags::NODEV)
        && !vfs.f_flag.contains(StatVfsMountFlags::RDONLY);
    if !ok {
        let e = io::Error::new(io::ErrorKind::InvalidData, "descriptor is not that filesystem's root mount");
        return Err(PathError::new("checking mount of", device, e));
    }
    crate::mount::attach_mount(&root.into(), mount_point)
}

/// An attached loop device, held open: with AUTOCLEAR it detaches as soon as the last holder
/// (this descriptor, or a mount) lets go, even if the holding process is killed.
pub struct LoopDevice {
    path: PathBuf,
    _file: File,
}

impl LoopDevice {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Attaches `image` to a free loop device with AUTOCLEAR.
pub fn attach_loop(image: &Path) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    // Another process can grab the device between GET_FREE and CONFIGURE; retry then.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: LoopConfig is plain old data; all-zero is its documented default.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads one LoopConfig (layout of the kernel's struct
        // loop_config) from a valid pointer; `backing` stays open for the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        if rc == 0 {
            return Ok(LoopDevice { path, _file: dev });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// Unmounts the scratch filesystem (the loop device detaches itself) and deletes the image.
pub fn remove(image: &Path, mount_point: &Path) -> Result<(), PathError> {
    if unmount(mount_point, false).is_err() {
        unmount(mount_point, true)?;
    }
    match std::fs::remove_file(image) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("remove", image, e)),
    }
}

/// Space used and available on the scratch filesystem.
pub fn usage(mount_point: &Path) -> Result<StorageStats, PathError> {
    let st = rustix::fs::statvfs(mount_point).map_err(|e| PathError::new("statvfs", mount_point, e.into()))?;
    let frsize = st.f_frsize;
    Ok(StorageStats { used_bytes: (st.f_blocks - st.f_bfree) * frsize, size_bytes: st.f_blocks * frsize })
}

#[cfg(test)]
mod tests {
    #[test]
    fn loop_config_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<super::LoopConfig>(), 304);
    }
}
