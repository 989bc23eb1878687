//! OCI whiteouts become overlayfs whiteouts, and a real overlay mount of the
//! unpacked layers shows what the OCI layer semantics say it should.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_image::testing::{LayerTar, MTIME};
use flotilla_image::{UnpackOptions, unpack_layer};

fn unpack(tar: &[u8], dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    unpack_layer(tar, dest, &UnpackOptions::default()).unwrap();
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value), Ok(1) if value[0] == b'y')
}

fn lower_tar() -> Vec<u8> {
    LayerTar::new()
        .dir("etc")
        .file("etc/keep", b"keep")
        .file("etc/delete-me", b"gone")
        .dir("etc/subdir")
        .file("etc/subdir/inner", b"inner")
        .dir("opaque")
        .file("opaque/old", b"old")
        .dir("replaced")
        .file("replaced/old", b"old")
        .dir("merged")
        .file("merged/lower", b"lower")
        .into_tar()
}

fn upper_tar() -> Vec<u8> {
    LayerTar::new()
        .dir("etc")
        .whiteout("etc/delete-me")
        .whiteout("etc/subdir")
        .dir("opaque")
        .opaque("opaque")
        .file("opaque/new", b"new")
        // Deleted below and re-created here: must not merge with the lower one.
        .whiteout("replaced")
        .dir("replaced")
        .file("replaced/new", b"new")
        .file("merged/upper", b"upper")
        // AUFS bookkeeping is not a deletion.
        .file(".wh..wh.plnk", b"")
        .into_tar()
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    unpack(&upper_tar(), &upper);

    assert!(is_whiteout(&upper.join("etc/delete-me")));
    assert!(is_whiteout(&upper.join("etc/subdir")));
    assert!(!upper.join("etc/.wh.delete-me").exists());
    assert!(is_opaque(&upper.join("opaque")));
    assert!(!upper.join("opaque/.wh..wh..opq").exists());
    assert!(is_opaque(&upper.join("replaced")));
    assert_eq!(fs::read(upper.join("replaced/new")).unwrap(), b"new");
    assert!(!is_opaque(&upper.join("merged")));
    assert!(!is_opaque(&upper.join("etc")));
    assert!(fs::symlink_metadata(upper.join(".wh..wh.plnk")).is_err());
    assert!(fs::symlink_metadata(upper.join("plnk")).is_err());
}

#[test]
fn same_layer_content_wins_over_its_whiteout() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    // Order within a layer must not matter: file before and after its whiteout.
    let tar = LayerTar::new()
        .file("before", b"file")
        .whiteout("before")
        .whiteout("after")
        .file("after", b"file")
        .dir("dir-before")
        .whiteout("dir-before")
        // An opaque marker for a directory the layer never lists creates it.
        .opaque("implicit/deep")
        .whiteout("implicit2/gone")
        .into_tar();
    unpack(&tar, &layer);
    assert_eq!(fs::read(layer.join("before")).unwrap(), b"file");
    assert_eq!(fs::read(layer.join("after")).unwrap(), b"file");
    assert!(layer.join("dir-before").is_dir() && is_opaque(&layer.join("dir-before")));
    assert!(layer.join("implicit/deep").is_dir() && is_opaque(&layer.join("implicit/deep")));
    assert!(!is_opaque(&layer.join("implicit")));
    assert!(is_whiteout(&layer.join("implicit2/gone")));
    assert_eq!(fs::metadata(layer.join("implicit2")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn metadata_is_preserved() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    let tar = LayerTar::new()
        .dir_mode("bin", 0o711)
        .file_owned("bin/su", b"#!", 0o4755, 0, 0)
        .file_owned("bin/tool", b"#!", 0o2750, 123, 456)
        .symlink("bin/link", "tool")
        .fifo("bin/pipe")
        .hardlink("bin/tool2", "bin/tool")
        .into_tar();
    unpack(&tar, &layer);
    let meta = |p: &str| fs::symlink_metadata(layer.join(p)).unwrap();
    assert_eq!(meta("bin").mode() & 0o7777, 0o711);
    assert_eq!(meta("bin").mtime(), MTIME as i64, "directory mtime set after its children");
    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
    let tool = meta("bin/tool");
    assert_eq!((tool.mode() & 0o7777, tool.uid(), tool.gid()), (0o2750, 123, 456));
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(meta("bin/tool2").ino(), tool.ino());
    assert_eq!(tool.nlink(), 2);
    assert!(meta("bin/link").file_type().is_symlink());
    assert_eq!(meta("bin/link").mtime(), MTIME as i64);
    assert!(meta("bin/pipe").file_type().is_fifo());
    assert_eq!(meta("bin/pipe").mode() & 0o7777, 0o640);
}

/// A read-only overlay of `lowers` (top first), unmounted on drop.
struct Overlay {
    mountpoint: PathBuf,
}

impl Overlay {
    fn mount(lowers: &[&Path], mountpoint: PathBuf) -> Overlay {
        fs::create_dir_all(&mountpoint).unwrap();
        let lowerdir = lowers.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().join(":");
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={lowerdir}"))
            .arg(&mountpoint)
            .output()
            .expect("running mount(8)");
        assert!(
            out.status.success(),
            "mounting overlayfs failed (this test needs root and overlayfs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Overlay { mountpoint }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
    }
}

#[test]
fn overlay_mount_shows_oci_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
    unpack(&lower_tar(), &lower);
    unpack(&upper_tar(), &upper);
    let overlay = Overlay::mount(&[&upper, &lower], tmp.path().join("merged"));
    let m = &overlay.mountpoint;
    let names = |dir: &str| {
        let mut v: Vec<String> =
            fs::read_dir(m.join(dir)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names("etc"), ["keep"]);
    assert_eq!(names("opaque"), ["new"]);
    assert_eq!(names("replaced"), ["new"]);
    assert_eq!(names("merged"), ["lower", "upper"]);
    assert_eq!(fs::read(m.join("etc/keep")).unwrap(), b"keep");
    assert!(!m.join("etc/delete-me").exists());
}
