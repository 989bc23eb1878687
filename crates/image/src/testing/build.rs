//! Building layers and images in memory, including malformed ones a normal tar
//! writer refuses to produce.

use std::io::{Read, Write};
use std::sync::OnceLock;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::manifest::Compression;

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Gzip at the fastest level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_level(bytes, flate2::Compression::fast())
}

fn gzip_level(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Zstandard at level 3.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// `bytes` compressed as [`gzip`], [`zstd`] or not at all.
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

/// The modification time of every entry [`LayerTar`] writes.
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
    pub fn big_file(self, name: &str, size: u64) -> Self {
        self.file_from_reader(name, size, std::io::repeat(0).take(size))
    }

    /// A regular file of `size` bytes read from `data`, without holding them all.
    fn file_from_reader(mut self, name: &str, size: u64, data: impl Read) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, name, None, size, 0o644);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
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

/// One layer blob of a [`TestImage`].
#[derive(Debug, Clone)]
pub struct TestLayer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    pub diff_id: String,
}

/// An image as a registry stores it: layer blobs, a config and a manifest.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub architecture: String,
}

/// What [`TestImage::with_spec`] puts in the manifest and config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub architecture: String,
    /// OCI media types, else Docker v2 schema 2.
    pub oci: bool,
    /// The config's `config` object (`Env`, `Cmd`, `Entrypoint`, ...).
    pub container_config: Value,
}

/// `amd64`, OCI, and a sample container config the image tests assert on.
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

fn layer_media_type(oci: bool, compression: Compression) -> &'static str {
    match (oci, compression) {
        (true, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        (true, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (false, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
        (false, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
}

impl TestImage {
    /// Layer tars (lowest first), each compressed as given, with the default spec.
    pub fn new(layers: Vec<(Vec<u8>, Compression)>) -> TestImage {
        Self::with_spec(layers, ImageSpec::default())
    }

    /// Layer tars (lowest first), each compressed as given.
    pub fn with_spec(layers: Vec<(Vec<u8>, Compression)>, spec: ImageSpec) -> TestImage {
        let layers = layers
            .into_iter()
            .map(|(tar, compression)| {
                let blob = compress(&tar, compression);
                let media_type = layer_media_type(spec.oci, compression).into();
                TestLayer { digest: sha256(&blob), diff_id: sha256(&tar), blob, media_type }
            })
            .collect();
        Self::from_layers(layers, spec)
    }

    fn from_layers(layers: Vec<TestLayer>, spec: ImageSpec) -> TestImage {
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

    /// This image's entry in an index, with its architecture and `linux`.
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

/// The image architecture of this host: `amd64`, `arm64`, or Rust's name otherwise.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

const BUSYBOX: &str = "/bin/busybox";

/// The applets [`busybox_layer`] links to `/bin/busybox` (`ulimit` and the like are
/// shell builtins).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "echo",
    "sleep",
    "httpd",
    "nc",
    "wget",
    "ps",
    "id",
    "hostname",
    "head",
    "tail",
    "tr",
    "dd",
    "grep",
    "sed",
    "env",
    "true",
    "false",
    "kill",
    "mkdir",
    "rm",
    "rmdir",
    "touch",
    "mount",
    "umount",
    "cp",
    "mv",
    "ln",
    "chmod",
    "pwd",
    "wc",
    "seq",
    "printf",
    "test",
    "date",
    "uname",
    "whoami",
    "stat",
    "readlink",
    "sync",
    "find",
    "xargs",
    "expr",
    "timeout",
    "df",
    "du",
    "free",
    "nslookup",
    "ping",
    "ip",
    "ifconfig",
    "netstat",
    "awk",
    "sort",
    "uniq",
    "cut",
    "tee",
    "base64",
    "sha256sum",
    "nproc",
    "pidof",
    "setsid",
    "which",
];

/// Why `elf` is not a statically linked ELF executable, if it is not one: a
/// dynamically linked one has a `PT_INTERP` program header naming its loader.
fn static_elf_problem(elf: &[u8]) -> Option<&'static str> {
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF") {
        return Some("is not an ELF file");
    }
    let little = match elf.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Some("has an unknown ELF byte order"),
    };
    let uint = |offset: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(offset..offset.checked_add(len)?)?;
        let fold = |acc: u64, b: &u8| acc << 8 | u64::from(*b);
        Some(if little { bytes.iter().rev().fold(0, fold) } else { bytes.iter().fold(0, fold) })
    };
    let header = match elf.get(4) {
        Some(1) => uint(0x1c, 4).zip(uint(0x2a, 2)).zip(uint(0x2c, 2)),
        Some(2) => uint(0x20, 8).zip(uint(0x36, 2)).zip(uint(0x38, 2)),
        _ => return Some("has an unknown ELF class"),
    };
    let Some(((phoff, phentsize), phnum)) = header else { return Some("has a truncated ELF header") };
    for i in 0..phnum {
        let Some(p_type) =
            i.checked_mul(phentsize).and_then(|o| o.checked_add(phoff)).and_then(|o| uint(o as usize, 4))
        else {
            return Some("has truncated ELF program headers");
        };
        if p_type == u64::from(PT_INTERP) {
            return Some("is dynamically linked");
        }
    }
    None
}

fn read_busybox() -> Vec<u8> {
    let install = "run `apt-get install -y busybox-static`";
    let bytes = std::fs::read(BUSYBOX).unwrap_or_else(|e| panic!("cannot read {BUSYBOX} ({e}): {install}"));
    if let Some(problem) = static_elf_problem(&bytes) {
        panic!("{BUSYBOX} {problem}, but images need a static busybox: {install}");
    }
    bytes
}

/// An uncompressed layer with a minimal root filesystem around the host's static
/// `/bin/busybox`: applet symlinks ([`BUSYBOX_APPLETS`]) in `/bin`, `/etc/passwd` and
/// `/etc/group` with `root` (0) and `nobody` (65534), a world-writable sticky
/// `/tmp`, empty `/proc`, `/sys`, `/dev` and `/var/www`, and `/root`.
///
/// Panics, asking to `apt-get install -y busybox-static`, unless `/bin/busybox` is
/// a statically linked executable.
pub fn busybox_layer() -> Vec<u8> {
    let binary = read_busybox();
    let mut layer = LayerTar::new().dir("bin").file_owned("bin/busybox", &binary, 0o755, 0, 0);
    for applet in BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        .file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
        .dir_mode("root", 0o700)
        .dir_mode("tmp", 0o1777)
        .dir("proc")
        .dir("sys")
        .dir("dev")
        .dir("var")
        .dir("var/www")
        .into_tar()
}

/// The spec of [`busybox_image`]: this host's architecture, OCI media types,
/// `Cmd: ["sh"]` and a standard `PATH`.
pub fn busybox_spec() -> ImageSpec {
    ImageSpec {
        architecture: host_architecture().into(),
        oci: true,
        container_config: json!({
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        }),
    }
}

/// A runnable one-layer image: [`busybox_layer`] gzipped, with [`busybox_spec`].
/// Built once per process.
///
/// To add files, stack a layer on top:
/// `TestImage::with_spec(vec![(busybox_layer(), Compression::Gzip), (extra, Compression::Gzip)], busybox_spec())`.
pub fn busybox_image() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE.get_or_init(|| TestImage::with_spec(vec![(busybox_layer(), Compression::Gzip)], busybox_spec())).clone()
}

/// Deterministic, incompressible bytes (splitmix64).
struct NoiseReader {
    state: u64,
    remaining: u64,
    buf: [u8; 8],
    buf_pos: usize,
}

impl NoiseReader {
    fn new(seed: u64, len: u64) -> NoiseReader {
        NoiseReader { state: seed, remaining: len, buf: [0; 8], buf_pos: 8 }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Read for NoiseReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let want = out.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let mut written = 0;
        while written < want {
            if self.buf_pos == 8 {
                self.buf = self.next_u64().to_le_bytes();
                self.buf_pos = 0;
            }
            let n = (8 - self.buf_pos).min(want - written);
            out[written..written + n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
            self.buf_pos += n;
            written += n;
        }
        self.remaining -= written as u64;
        Ok(written)
    }
}

/// A benchmark image of `layers` gzipped layers, each one file
/// `/data/layer-<i>.bin` of `bytes_per_layer` incompressible bytes, so blob sizes
/// track the arguments (`big_image(4, 25 << 20)` is about 100 MB). The bytes are
/// deterministic: the same arguments give the same digests, and every layer differs.
/// No binaries: stack it on [`busybox_layer`] if it must run.
pub fn big_image(layers: usize, bytes_per_layer: u64) -> TestImage {
    let spec = ImageSpec {
        architecture: host_architecture().into(),
        oci: true,
        container_config: json!({"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}),
    };
    let layers = (0..layers)
        .map(|i| {
            let seed = 0x666c_6f74_696c_6c61 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let name = format!("data/layer-{i}.bin");
            let tar = LayerTar::new()
                .dir("data")
                .file_from_reader(&name, bytes_per_layer, NoiseReader::new(seed, bytes_per_layer))
                .into_tar();
            // Deflate stores incompressible data anyway; level 0 gets there without
            // trying, which matters for 100 MB in an unoptimised test build.
            let blob = gzip_level(&tar, flate2::Compression::none());
            let media_type = layer_media_type(true, Compression::Gzip).into();
            TestLayer { digest: sha256(&blob), diff_id: sha256(&tar), blob, media_type }
        })
        .collect();
    TestImage::from_layers(layers, spec)
}

/// A plain tar of `files` (mode 0644) and `symlinks`, as archives carry them.
pub fn tar_of(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    for (name, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.into_inner().unwrap()
}

/// Where an OCI layout keeps the blob with this digest.
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

/// An OCI image layout tarball holding `images` plus `extra` blobs, with `index.json`'s
/// manifests given verbatim (what `flotilla image import` reads on offline hosts).
pub fn oci_layout(images: &[&TestImage], extra: &[&[u8]], manifests: serde_json::Value) -> Vec<u8> {
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for image in images {
        for layer in &image.layers {
            blobs.push((blob_path(&layer.digest), layer.blob.clone()));
        }
        blobs.push((blob_path(&image.config_digest()), image.config.clone()));
        blobs.push((blob_path(&image.manifest_digest()), image.manifest.clone()));
    }
    for bytes in extra {
        blobs.push((blob_path(&sha256(bytes)), bytes.to_vec()));
    }
    let mut files: Vec<(&str, &[u8])> =
        vec![("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#), ("index.json", &index)];
    files.extend(blobs.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    tar_of(&files, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_sized() {
        let read = |seed, len| {
            let mut out = Vec::new();
            NoiseReader::new(seed, len).read_to_end(&mut out).unwrap();
            out
        };
        assert_eq!(read(1, 1001).len(), 1001);
        assert_eq!(read(1, 1001), read(1, 1001));
        assert_ne!(read(1, 64), read(2, 64));
        // Incompressible: gzip gains nothing.
        assert!(gzip(&read(3, 1 << 16)).len() > 1 << 16);
    }

    #[test]
    fn big_image_layers_differ() {
        let image = big_image(2, 4096);
        assert_eq!(image.layers.len(), 2);
        assert_ne!(image.layers[0].digest, image.layers[1].digest);
        assert!(image.layers.iter().all(|l| l.blob.len() > 4096));
    }

    #[test]
    fn static_elf_check() {
        assert_eq!(static_elf_problem(b"#!/bin/sh\n"), Some("is not an ELF file"));
        assert_eq!(static_elf_problem(b"\x7fELF\x02\x01"), Some("has a truncated ELF header"));
        // The test binary itself is dynamically linked on glibc hosts.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if cfg!(all(target_env = "gnu", not(target_feature = "crt-static"))) {
            assert_eq!(static_elf_problem(&me), Some("is dynamically linked"));
        }
    }
}
