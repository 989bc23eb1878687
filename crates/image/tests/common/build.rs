//! Building layers and images in memory, including malformed ones a normal tar
//! writer refuses to produce.

use flotilla_image::manifest::Compression;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

pub fn compress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => bytes.to_vec(),
        Compression::Gzip => gzip(bytes),
        Compression::Zstd => zstd(bytes),
    }
}

/// A tar stream written header by header, with names copied raw so tests can
/// produce `..`, absolute names and links the `tar` crate's builder rejects.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

pub const MTIME: u64 = 1_700_000_000;

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar { builder: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, name: &str, link: Option<&str>, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let raw = h.as_old_mut();
        assert!(name.len() < 100, "test names must fit the header: {name}");
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            assert!(link.len() < 100);
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    fn append(mut self, mut h: tar::Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, name: &str) -> Self {
        self.dir_mode(name, 0o755)
    }

    pub fn dir_mode(self, name: &str, mode: u32) -> Self {
        let name = format!("{}/", name.trim_end_matches('/'));
        let h = Self::header(tar::EntryType::Directory, &name, None, 0, mode);
        self.append(h, &[])
    }

    pub fn file(self, name: &str, content: &[u8]) -> Self {
        self.file_owned(name, content, 0o644, 0, 0)
    }

    pub fn file_owned(self, name: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, name, None, content.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.append(h, content)
    }

    /// A header that claims `size` bytes, followed by that many zeros.
    pub fn big_file(mut self, name: &str, size: u64) -> Self {
        use std::io::Read;
        let mut h = Self::header(tar::EntryType::Regular, name, None, size, 0o644);
        h.set_cksum();
        self.builder.append(&h, std::io::repeat(0).take(size)).unwrap();
        self
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Symlink, name, Some(target), 0, 0o777);
        self.append(h, &[])
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Link, name, Some(target), 0, 0o644);
        self.append(h, &[])
    }

    pub fn char_device(self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, name, None, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, &[])
    }

    pub fn fifo(self, name: &str) -> Self {
        let h = Self::header(tar::EntryType::Fifo, name, None, 0, 0o640);
        self.append(h, &[])
    }

    /// `.wh.<name>` next to `path`'s file name.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{base}"), b"")
    }

    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"")
    }

    /// A regular file preceded by a PAX header carrying extended attributes.
    pub fn file_with_xattrs(mut self, name: &str, content: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let keys: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
        self.builder.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
        self.file(name, content)
    }

    pub fn into_tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub struct TestLayer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    pub diff_id: String,
}

/// An image as a registry stores it: layer blobs, a config and a manifest.
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub architecture: String,
}

pub struct ImageSpec {
    pub architecture: String,
    /// OCI media types, else Docker v2 schema 2.
    pub oci: bool,
    pub container_config: Value,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            architecture: "amd64".into(),
            oci: true,
            container_config: json!({
                "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"],
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "ExposedPorts": {"8080/tcp": {}},
                "Labels": {"org.example.team": "flotilla"}
            }),
        }
    }
}

impl TestImage {
    pub fn new(layers: Vec<(Vec<u8>, Compression)>) -> TestImage {
        Self::with_spec(layers, ImageSpec::default())
    }

    pub fn with_spec(layers: Vec<(Vec<u8>, Compression)>, spec: ImageSpec) -> TestImage {
        let layers: Vec<TestLayer> = layers
            .into_iter()
            .map(|(tar, compression)| {
                let blob = compress(&tar, compression);
                let media_type = match (spec.oci, compression) {
                    (true, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
                    (true, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
                    (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
                    (false, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
                    (false, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                };
                TestLayer { digest: sha256(&blob), diff_id: sha256(&tar), blob, media_type: media_type.into() }
            })
            .collect();
        let config = serde_json::to_vec(&json!({
            "architecture": spec.architecture,
            "os": "linux",
            "config": spec.container_config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": [],
        }))
        .unwrap();
        let (manifest_type, config_type) = if spec.oci {
            ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
        } else {
            ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json")
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        TestImage {
            layers,
            config,
            manifest,
            manifest_media_type: manifest_type.into(),
            architecture: spec.architecture,
        }
    }

    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// This image's entry in an index.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.manifest_media_type,
            "digest": self.manifest_digest(),
            "size": self.manifest.len(),
            "platform": {"architecture": self.architecture, "os": "linux"},
        })
    }
}

/// An OCI image index over `images`.
pub fn index(images: &[&TestImage]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": images.iter().map(|i| i.descriptor()).collect::<Vec<_>>(),
    }))
    .unwrap()
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
