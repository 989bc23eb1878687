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

/// Creates `image` (sparse, `size_gib`), formats it and mounts it at `mount_point`.
/// Falls back to a plain directory only when the host has no loop devices.
pub fn create(
    image: &Path,
    mount_point: &Path,
    size_gib: u64,
    runner: &dyn CommandRunner,
) -> Result<Scratch, EphemeralError> {
    std::fs::create_dir_all(mount_point).map_err(|e| PathError::new("mkdir", mount_point, e))?;
    if !Path::new("/dev/loop-control").exists() {
        tracing::warn!("no /dev/loop-control: task scratch space at {} has no size limit", mount_point.display());
        return Ok(Scratch::Unlimited);
    }
    {
        let f = File::create(image).map_err(|e| PathError::new("create", image, e))?;
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
    let device = attach_loop(image).map_err(|source| EphemeralError::Loop { image: image.to_path_buf(), source })?;
    // noinit_itable: never zero the inode tables in the background, which would slowly
    // allocate hundreds of MiB of the sparse file for nothing.
    let result =
        mount(&device.path.display().to_string(), mount_point, Some("ext4"), libc::MS_NODEV, Some("noinit_itable"));
    // The mount now holds the loop device; with AUTOCLEAR it detaches when unmounted.
    drop(device);
    result?;
    Ok(Scratch::Limited)
}

struct LoopDevice {
    path: PathBuf,
    _file: File,
}

fn attach_loop(image: &Path) -> io::Result<LoopDevice> {
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
    let c = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes())
        .map_err(|_| PathError::new("statvfs", mount_point, io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and an exclusively borrowed out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(PathError::new("statvfs", mount_point, io::Error::last_os_error()));
    }
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
