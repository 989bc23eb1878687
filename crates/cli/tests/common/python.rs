//! A test image with an unmodified AWS SDK in it: busybox, plus this machine's `python3` that
//! imports boto3 (the interpreter, the shared libraries `ldd` finds for it and its extension
//! modules, its standard library, and boto3 with the packages it needs), every file at the
//! path it has here so the interpreter finds its prefix as it does on this machine.
//!
//! botocore's data keeps only the services the tests call (STS, SSM) and its top-level files:
//! the rest is ~25 MB of models nothing here loads. Files keep their modification times, so the
//! bytecode caches next to the sources stay valid and imports need not compile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_image::manifest::Compression;
use flotilla_image::testing::{TestImage, busybox_layer, busybox_spec};
use serde_json::Value;

/// The packages boto3 imports (and its own).
const PACKAGES: &[&str] = &["boto3", "botocore", "jmespath", "dateutil", "urllib3", "s3transfer", "six"];
/// botocore's models the tests use.
const SERVICES: &[&str] = &["sts", "ssm"];
/// Standard library parts no SDK call needs.
const SKIPPED: &[&str] =
    &["test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "dist-packages"];

/// Where things are in the image (as on this machine).
pub struct Python {
    /// The interpreter: run it by this path inside the container.
    pub executable: String,
}

/// What `python3` says about itself and where boto3's packages are.
fn locate() -> Value {
    let script = r#"
import importlib, json, os, sys, sysconfig
mods = {}
for name in sys.argv[1:]:
    m = importlib.import_module(name)
    f = m.__file__
    mods[name] = os.path.dirname(f) if os.path.basename(f) == "__init__.py" else f
print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "stdlib": sysconfig.get_paths()["stdlib"],
    "dynload": [p for p in sys.path if p.endswith("lib-dynload")],
    "packages": mods,
}))
"#;
    let out = Command::new("python3").arg("-c").arg(script).args(PACKAGES).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 with boto3 is needed (pip install boto3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The absolute paths of the shared libraries `ldd` names for `files` (the loader included).
fn libraries(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut libs = BTreeSet::new();
    for file in files {
        let Ok(out) = Command::new("ldd").arg(file).output() else { continue };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
            if path.starts_with('/') {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    libs
}

struct Layer {
    tar: tar::Builder<Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
}

impl Layer {
    fn new() -> Layer {
        Layer { tar: tar::Builder::new(Vec::new()), dirs: BTreeSet::new() }
    }

    /// The directories above `path`, as directories (a host's `/lib -> usr/lib` link is
    /// followed: the image gets the files where the host's loader path names them).
    fn parents(&mut self, path: &Path) {
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
            if self.dirs.insert(d.to_path_buf()) {
                missing.push(d.to_path_buf());
            }
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(flotilla_image::testing::MTIME);
            h.set_uid(0);
            h.set_gid(0);
            let name = d.strip_prefix("/").unwrap().to_path_buf();
            self.tar.append_data(&mut h, name, std::io::empty()).unwrap();
        }
    }

    /// `path`'s content (links followed) at `path`, with its mode and modification time.
    fn file(&mut self, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        let Ok(content) = std::fs::read(path) else { return };
        self.parents(path);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
        h.set_size(content.len() as u64);
        h.set_mtime(std::os::unix::fs::MetadataExt::mtime(&meta).max(0) as u64);
        h.set_uid(0);
        h.set_gid(0);
        let name = path.strip_prefix("/").unwrap().to_path_buf();
        self.tar.append_data(&mut h, name, content.as_slice()).unwrap();
    }

    /// Every file under `dir` that `keep` accepts (given the path relative to `dir`).
    fn tree(&mut self, dir: &Path, keep: &dyn Fn(&Path) -> bool) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_dir() {
                self.tree(&path, keep);
            } else if keep(&path) {
                self.file(&path);
            }
        }
    }
}

/// Bytecode for this interpreter only (not the optimised variants), and sources.
fn wanted_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.parent().and_then(|p| p.file_name()).is_some_and(|p| p == "__pycache__") {
        return name.ends_with(".pyc") && !name.contains(".opt-");
    }
    !name.ends_with(".exe")
}

/// The image: busybox and the SDK, built once per process.
pub fn image() -> (TestImage, Python) {
    static BUILT: std::sync::OnceLock<(TestImage, String)> = std::sync::OnceLock::new();
    let (image, executable) = BUILT.get_or_init(build).clone();
    (image, Python { executable })
}

fn build() -> (TestImage, String) {
    let found = locate();
    let executable = PathBuf::from(found["executable"].as_str().unwrap());
    let stdlib = PathBuf::from(found["stdlib"].as_str().unwrap());
    let mut layer = Layer::new();
    // The interpreter, its standard library (extension modules included) and their libraries.
    layer.file(&executable);
    let skipped = |p: &Path| {
        p.strip_prefix(&stdlib).ok().and_then(|rel| rel.components().next()).is_some_and(|c| {
            SKIPPED.iter().any(|s| c.as_os_str() == *s) || c.as_os_str().to_string_lossy().starts_with("config-")
        })
    };
    layer.tree(&stdlib, &|p| !skipped(p) && wanted_file(p));
    let mut binaries = vec![executable.clone()];
    for dynload in found["dynload"].as_array().unwrap() {
        let dir = PathBuf::from(dynload.as_str().unwrap());
        if !dir.starts_with(&stdlib) {
            layer.tree(&dir, &wanted_file);
        }
        binaries.extend(std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()));
    }
    for lib in libraries(&binaries) {
        layer.file(&lib);
    }
    // boto3 and what it imports; botocore's models only for the services used.
    for (name, path) in found["packages"].as_object().unwrap() {
        let path = PathBuf::from(path.as_str().unwrap());
        if path.is_file() {
            layer.file(&path);
            continue;
        }
        let data = path.join("data");
        let keep = |p: &Path| {
            if name != "botocore" || !p.starts_with(&data) {
                return wanted_file(p);
            }
            let rel = p.strip_prefix(&data).unwrap();
            let top = rel.components().count() == 1;
            top || SERVICES.iter().any(|s| rel.starts_with(s))
        };
        layer.tree(&path, &keep);
    }
    let tar = layer.tar.into_inner().unwrap();
    let image =
        TestImage::with_spec(vec![(busybox_layer(), Compression::Gzip), (tar, Compression::None)], busybox_spec());
    (image, executable.display().to_string())
}
