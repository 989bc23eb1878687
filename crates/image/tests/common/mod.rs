//! Fixtures shared by the image tests. The registry and the layer and image
//! builders are `flotilla_image::testing`; here are a Bearer token server for the
//! registry ([`token`]), the sample image the tests assert on, and small helpers.
#![allow(dead_code)]

pub mod token;

use std::fs;
use std::path::{Path, PathBuf};

use flotilla_image::manifest::Compression;
use flotilla_image::testing::{LayerTar, TestImage};

/// A fresh store root inside a temp dir.
pub struct StoreDir {
    pub dir: tempfile::TempDir,
}

impl StoreDir {
    pub fn new() -> StoreDir {
        StoreDir { dir: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A two-layer image exercising files, dirs, a symlink, a hardlink and whiteouts.
pub fn sample_image(lower: Compression, upper: Compression) -> TestImage {
    let base = LayerTar::new()
        .dir("bin")
        .file_owned("bin/app", b"#!/bin/sh\necho app\n", 0o755, 0, 0)
        .symlink("bin/sh", "app")
        .dir("etc")
        .file("etc/hostname", b"base\n")
        .file("etc/obsolete.conf", b"old\n")
        .dir("var")
        .dir("var/cache")
        .file("var/cache/stale", b"stale\n")
        .dir_mode("srv", 0o750)
        .into_tar();
    let top = LayerTar::new()
        .dir("etc")
        .whiteout("etc/obsolete.conf")
        .file("etc/hostname", b"top\n")
        .dir("var/cache")
        .opaque("var/cache")
        .file("var/cache/fresh", b"fresh\n")
        .file_owned("srv/data.txt", b"data\n", 0o600, 1000, 1000)
        .hardlink("srv/data-link.txt", "srv/data.txt")
        .into_tar();
    TestImage::new(vec![(base, lower), (top, upper)])
}
