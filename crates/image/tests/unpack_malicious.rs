//! Hostile layers: each must fail with an `UnpackError` and write nothing outside
//! the layer root. The root sits next to a sentinel file in a private temp dir, so
//! any escape shows up as a changed sentinel or a new entry beside it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flotilla_image::testing::{LayerTar, gzip, zstd};
use flotilla_image::{UnpackError, UnpackLimits, UnpackOptions, unpack_layer};

const SENTINEL: &[u8] = b"do not touch\n";

struct Sandbox {
    parent: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let parent = tempfile::tempdir().unwrap();
        fs::write(parent.path().join("sentinel"), SENTINEL).unwrap();
        fs::create_dir(parent.path().join("root")).unwrap();
        Sandbox { parent }
    }

    fn parent(&self) -> &Path {
        self.parent.path()
    }

    fn root(&self) -> PathBuf {
        self.parent.path().join("root")
    }

    fn unpack(&self, tar: &[u8]) -> Result<(), UnpackError> {
        self.unpack_with(tar, &UnpackOptions::default())
    }

    fn unpack_with(&self, blob: &[u8], options: &UnpackOptions) -> Result<(), UnpackError> {
        unpack_layer(blob, &self.root(), options).map(|_| ())
    }

    /// Nothing appeared or changed outside the root.
    fn assert_contained(&self) {
        let names: BTreeSet<String> =
            fs::read_dir(self.parent()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["root".to_owned(), "sentinel".to_owned()]));
        let sentinel = self.parent().join("sentinel");
        assert_eq!(fs::read(&sentinel).unwrap(), SENTINEL);
        let meta = fs::symlink_metadata(&sentinel).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1, "something hard-linked the sentinel");
    }
}

/// The absolute path of a would-be escapee, trimmed of its leading `/`, so entries
/// can aim at it through a symlink to `/`.
fn escapee(sandbox: &Sandbox) -> String {
    sandbox.parent().join("escaped").to_str().unwrap().to_owned()
}

#[test]
fn dot_dot_names_are_refused() {
    for name in ["../escaped", "../../etc/flotilla-x", "a/../../escaped", "./../escaped"] {
        let s = Sandbox::new();
        let tar = LayerTar::new().dir("a").file(name, b"pwned").into_tar();
        let err = s.unpack(&tar).unwrap_err();
        assert!(matches!(err, UnpackError::EscapesRoot { .. }), "{name}: {err:?}");
        s.assert_contained();
    }
}

#[test]
fn absolute_names_are_refused() {
    let s = Sandbox::new();
    let target = escapee(&s);
    let tar = LayerTar::new().file(&target, b"pwned").into_tar();
    let err = s.unpack(&tar).unwrap_err();
    assert!(matches!(err, UnpackError::AbsolutePath { .. }), "{err:?}");
    s.assert_contained();
    assert!(!Path::new("/etc/flotilla-x").exists());
    let tar = LayerTar::new().file("/etc/flotilla-x", b"pwned").into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::AbsolutePath { .. })));
    assert!(!Path::new("/etc/flotilla-x").exists());
}

#[test]
fn writing_through_a_symlink_to_root_is_refused() {
    let s = Sandbox::new();
    let through = format!("link{}", escapee(&s));
    let tar = LayerTar::new().symlink("link", "/").file(&through, b"pwned").into_tar();
    let err = s.unpack(&tar).unwrap_err();
    match &err {
        UnpackError::ThroughSymlink { symlink, .. } => assert_eq!(symlink, Path::new("link")),
        other => panic!("{other:?}"),
    }
    s.assert_contained();
}

#[test]
fn writing_through_a_relative_symlink_is_refused() {
    let s = Sandbox::new();
    let tar = LayerTar::new().symlink("up", "..").file("up/escaped", b"pwned").into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::ThroughSymlink { .. })));
    s.assert_contained();
}

#[test]
fn symlink_chains_are_refused() {
    let s = Sandbox::new();
    // a -> b -> c -> ../.. : each hop looks harmless on its own.
    let tar = LayerTar::new()
        .dir("d")
        .symlink("d/c", "../..")
        .symlink("d/b", "c")
        .symlink("a", "d/b")
        .file("a/escaped", b"pwned")
        .into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::ThroughSymlink { .. })));
    s.assert_contained();
    // Through a directory symlink deeper in the path as well.
    let s = Sandbox::new();
    let tar = LayerTar::new()
        .dir("usr")
        .symlink("usr/lib", "/")
        .file(&format!("usr/lib{}", escapee(&s)), b"pwned")
        .into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::ThroughSymlink { .. })));
    s.assert_contained();
}

#[test]
fn a_later_file_replaces_a_symlink_instead_of_following_it() {
    let s = Sandbox::new();
    let sentinel = s.parent().join("sentinel");
    let tar = LayerTar::new().symlink("victim", sentinel.to_str().unwrap()).file("victim", b"replaced").into_tar();
    s.unpack(&tar).unwrap();
    s.assert_contained();
    let victim = s.root().join("victim");
    assert!(fs::symlink_metadata(&victim).unwrap().is_file());
    assert_eq!(fs::read(victim).unwrap(), b"replaced");
}

#[test]
fn hardlinks_outside_the_layer_are_refused() {
    for target in ["/etc/passwd", "../sentinel", "a/../../sentinel"] {
        let s = Sandbox::new();
        let tar = LayerTar::new().dir("a").hardlink("a/link", target).into_tar();
        let err = s.unpack(&tar).unwrap_err();
        assert!(matches!(err, UnpackError::HardlinkEscapes { .. }), "{target}: {err:?}");
        s.assert_contained();
        assert!(!s.root().join("a/link").exists());
    }
}

#[test]
fn hardlinks_through_symlinks_or_to_missing_files_are_refused() {
    let s = Sandbox::new();
    let tar = LayerTar::new().symlink("up", "..").hardlink("stolen", "up/sentinel").into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::HardlinkEscapes { .. })));
    s.assert_contained();

    let s = Sandbox::new();
    let tar = LayerTar::new().hardlink("stolen", "etc/passwd").into_tar();
    assert!(matches!(s.unpack(&tar), Err(UnpackError::HardlinkTarget { .. })));
    s.assert_contained();

    // A hard link to a symlink links the symlink itself, never what it points to.
    let s = Sandbox::new();
    let sentinel = s.parent().join("sentinel");
    let tar = LayerTar::new().symlink("sym", sentinel.to_str().unwrap()).hardlink("hard", "sym").into_tar();
    s.unpack(&tar).unwrap();
    s.assert_contained();
    assert!(fs::symlink_metadata(s.root().join("hard")).unwrap().file_type().is_symlink());
}

#[test]
fn symlink_in_a_lower_layer_is_not_written_through() {
    let s = Sandbox::new();
    let lower = s.parent().join("root"); // reuse: unpack the lower layer first
    let tar = LayerTar::new().symlink("link", "/").into_tar();
    s.unpack(&tar).unwrap();

    let upper_parent = tempfile::tempdir().unwrap();
    let upper = upper_parent.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let tar = LayerTar::new().file(&format!("link{}", escapee(&s)), b"pwned").into_tar();
    let options = UnpackOptions { lowers: vec![lower], ..Default::default() };
    let err = unpack_layer(&tar[..], &upper, &options).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughLowerSymlink { .. }), "{err:?}");
    s.assert_contained();

    // An upper layer that replaces the symlink with a real directory first is fine:
    // in the overlay its directory hides the lower symlink.
    let upper2 = upper_parent.path().join("upper2");
    fs::create_dir(&upper2).unwrap();
    let tar = LayerTar::new().dir("link").file("link/inside", b"ok").into_tar();
    unpack_layer(&tar[..], &upper2, &options).unwrap();
    assert_eq!(fs::read(upper2.join("link/inside")).unwrap(), b"ok");
    s.assert_contained();
}

#[test]
fn layer_bombs_exceed_the_budget() {
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 50 };
    let options = UnpackOptions { limits, ..Default::default() };
    // 64 MiB of zeros compress to far less than the budget.
    let big = LayerTar::new().big_file("zeros", 64 << 20).into_tar();
    for blob in [gzip(&big), zstd(&big)] {
        assert!((blob.len() as u64) < limits.max_bytes / 2);
        let s = Sandbox::new();
        let err = s.unpack_with(&blob, &options).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge { limit: 1048576 }), "{err:?}");
        s.assert_contained();
    }
    // Many small entries, each within budget, still stop at the entry limit.
    let mut many = LayerTar::new();
    for i in 0..200 {
        many = many.file(&format!("f{i}"), b"");
    }
    let s = Sandbox::new();
    let err = s.unpack_with(&gzip(&many.into_tar()), &options).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { limit: 50 }), "{err:?}");
    s.assert_contained();
}

#[test]
fn invalid_whiteouts_are_refused() {
    for name in [".wh..", ".wh...", "a/.wh.."] {
        let s = Sandbox::new();
        let tar = LayerTar::new().dir("a").file(name, b"").into_tar();
        let err = s.unpack(&tar).unwrap_err();
        assert!(matches!(err, UnpackError::InvalidWhiteout { .. }), "{name}: {err:?}");
        s.assert_contained();
    }
}

#[test]
fn device_nodes_are_not_created() {
    let s = Sandbox::new();
    let tar = LayerTar::new()
        .dir("dev")
        .char_device("dev/mem", 1, 1)
        .char_device("dev/fake-whiteout", 0, 0)
        .file("dev/ok", b"fine")
        .into_tar();
    s.unpack(&tar).unwrap();
    assert!(!s.root().join("dev/mem").exists());
    assert!(fs::symlink_metadata(s.root().join("dev/fake-whiteout")).is_err());
    assert_eq!(fs::read(s.root().join("dev/ok")).unwrap(), b"fine");
    s.assert_contained();
}

#[test]
fn forged_overlay_xattrs_are_dropped() {
    let s = Sandbox::new();
    let tar = LayerTar::new()
        .file_with_xattrs("f", b"x", &[("trusted.overlay.redirect", b"/etc"), ("user.flotilla", b"kept")])
        .into_tar();
    s.unpack(&tar).unwrap();
    let mut buf = [0u8; 16];
    let f = s.root().join("f");
    assert!(rustix::fs::lgetxattr(&f, "trusted.overlay.redirect", &mut buf).is_err());
    let n = rustix::fs::lgetxattr(&f, "user.flotilla", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"kept");
}

#[test]
fn diff_id_mismatch_is_refused() {
    let s = Sandbox::new();
    let tar = LayerTar::new().file("f", b"x").into_tar();
    let options =
        UnpackOptions { expected_diff_id: Some(flotilla_image::Digest::of(b"something else")), ..Default::default() };
    assert!(matches!(s.unpack_with(&tar, &options), Err(UnpackError::DiffIdMismatch { .. })));
}
