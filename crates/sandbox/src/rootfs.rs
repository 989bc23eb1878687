//! Container root filesystems and the small files every container of a task shares.
//!
//! Each container's root is an overlay: the image layers read-only below, a private upper
//! directory on the task's scratch filesystem above. Layer directories are never written.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::PathError;
use rustix::mount::MountFlags;

use crate::mount::{mount, unmount};
use crate::spec::EtcFiles;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("layer path {} contains ':' or ',' (reserved by overlayfs options)", .0.display())]
    BadLayerPath(PathBuf),
    #[error("layer {} is not a directory", .0.display())]
    MissingLayer(PathBuf),
    #[error("overlay options are {0} bytes; the kernel accepts at most 4095 (too many or too deep layer paths)")]
    OptionsTooLong(usize),
}

/// The placeholder resolver: the AWS VPC resolver address. The network layer rewrites this
/// file in place (it is bind-mounted, so it must not be replaced by rename).
pub const DEFAULT_RESOLV_CONF: &str = "# Written by Flotilla. The network layer replaces the nameserver below with the\n\
# task's resolver; 169.254.169.253 is the AWS VPC resolver's link-local address.\n\
nameserver 169.254.169.253\n";

/// overlayfs `lowerdir` lists the topmost layer first; specs list the base layer first.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, RootfsError> {
    for p in layers.iter().map(PathBuf::as_path).chain([upper, work]) {
        if p.to_string_lossy().contains([':', ',']) {
            return Err(RootfsError::BadLayerPath(p.to_path_buf()));
        }
    }
    let lower: Vec<String> = layers.iter().rev().map(|l| l.display().to_string()).collect();
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if options.len() > 4095 {
        return Err(RootfsError::OptionsTooLong(options.len()));
    }
    Ok(options)
}

/// Mounts the container's root at `target`, creating `upper`, `work` and `target`.
pub fn mount_overlay(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), RootfsError> {
    for l in layers {
        if !l.is_dir() {
            return Err(RootfsError::MissingLayer(l.clone()));
        }
    }
    let options = overlay_options(layers, upper, work)?;
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).map_err(|e| PathError::new("mkdir", d, e))?;
    }
    mount("overlay", target, "overlay", MountFlags::empty(), Some(&options))?;
    Ok(())
}

pub fn unmount_overlay(target: &Path) -> Result<(), PathError> {
    if unmount(target, false).is_err() {
        unmount(target, true)?;
    }
    Ok(())
}

/// Writes `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` for the task into `dir`.
pub fn write_etc_files(dir: &Path, hostname: &str) -> Result<EtcFiles, PathError> {
    std::fs::create_dir_all(dir).map_err(|e| PathError::new("mkdir", dir, e))?;
    let files =
        EtcFiles { hosts: dir.join("hosts"), resolv_conf: dir.join("resolv.conf"), hostname: dir.join("hostname") };
    let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{hostname}\n");
    write_new(&files.hosts, &hosts)?;
    write_new(&files.resolv_conf, DEFAULT_RESOLV_CONF)?;
    write_new(&files.hostname, &format!("{hostname}\n"))?;
    Ok(files)
}

/// Writes a file only if it does not exist yet: the network layer may already have
/// rewritten it, and a repeated create must not undo that.
fn write_new(path: &Path, content: &str) -> Result<(), PathError> {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => f.write_all(content.as_bytes()).map_err(|e| PathError::new("write", path, e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(PathError::new("create", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_is_top_first() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/mid"), PathBuf::from("/l/top")];
        let o = overlay_options(&layers, Path::new("/u"), Path::new("/w")).unwrap();
        assert_eq!(o, "lowerdir=/l/top:/l/mid:/l/base,upperdir=/u,workdir=/w");
    }

    #[test]
    fn rejects_reserved_characters_and_oversized_options() {
        assert!(matches!(
            overlay_options(&[PathBuf::from("/l/a:b")], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::BadLayerPath(_))
        ));
        let many: Vec<PathBuf> = (0..200).map(|i| PathBuf::from(format!("/var/lib/flotilla/layers/{i:060}"))).collect();
        assert!(matches!(
            overlay_options(&many, Path::new("/u"), Path::new("/w")),
            Err(RootfsError::OptionsTooLong(_))
        ));
    }

    #[test]
    fn etc_files_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_etc_files(dir.path(), "ip-10-0-0-1").unwrap();
        assert!(std::fs::read_to_string(&files.hosts).unwrap().contains("ip-10-0-0-1"));
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "ip-10-0-0-1\n");
        std::fs::write(&files.resolv_conf, "nameserver 10.0.0.2\n").unwrap();
        write_etc_files(dir.path(), "ip-10-0-0-1").unwrap();
        assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), "nameserver 10.0.0.2\n");
    }
}
