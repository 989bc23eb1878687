//! The image store on disk:
//!
//! ```text
//! <root>/lock                  flock: shared by pull/import, exclusive by prune
//! <root>/blobs/sha256/<hex>    verified content (see `cas`)
//! <root>/ingest/               partial downloads and imports
//! <root>/layers/<hex>/fs/      an unpacked layer, keyed by diff_id
//! <root>/layers/<hex>/complete.json   written before the directory is published
//! <root>/images/<hex>.json     one record per reference (hex = sha256 of the reference)
//! ```
//!
//! **Architecture Invariant:** `layers/<hex>` only ever appears complete: a layer is
//! unpacked into `layers/.unpack-*`, flushed with `syncfs`, and renamed into place.
//! A crash leaves a stray temporary directory that `prune` removes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cas::{BlobStore, IngestError, KeyedLocks, sync_dir};
use crate::digest::Digest;
use crate::manifest::{ContainerConfig, ImageConfig, Platform};
use crate::recent::RecentPulls;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryClient, RegistryConfig, RegistryError};
use crate::unpack::{UnpackError, UnpackLimits, UnpackOptions, UnpackStats, unpack_layer};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub registry: RegistryConfig,
    pub unpack_limits: UnpackLimits,
    /// The platform picked out of image indexes.
    pub platform: Platform,
    /// Layers downloaded at once within one pull.
    pub concurrent_downloads: usize,
    /// A tag pulled this recently (same credentials) is not resolved again (`recent.rs`).
    /// Zero asks the registry on every pull.
    pub recent_pull_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            registry: RegistryConfig::default(),
            unpack_limits: UnpackLimits::default(),
            platform: Platform::linux_amd64(),
            concurrent_downloads: 3,
            recent_pull_ttl: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image record {path} is corrupt")]
    CorruptRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("could not set up the registry client")]
    Client(#[source] RegistryError),
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// A pulled or imported image, ready for a sandbox to build a rootfs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub reference: Reference,
    /// The platform manifest's digest (what `docker inspect` calls `RepoDigests`).
    pub manifest_digest: Digest,
    /// The index the manifest was selected from, for multi-platform images.
    pub index_digest: Option<Digest>,
    /// The config digest, Docker's image ID.
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Lowest first, as overlayfs wants them reversed in `lowerdir=`.
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored in the registry (usually compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar, from the image config.
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
    /// The unpacked directory, with whiteouts already in overlayfs form.
    pub path: PathBuf,
}

impl Image {
    /// The unpacked layer directories, lowest first.
    pub fn layer_dirs(&self) -> Vec<&Path> {
        self.layers.iter().map(|l| l.path.as_path()).collect()
    }

    /// `Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `User`, `ExposedPorts`, `Labels`...
    pub fn container_config(&self) -> &ContainerConfig {
        &self.config.config
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub layers_removed: usize,
}

/// The on-disk form of [`Image`]: paths are derived, never stored, so a store can be
/// moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub reference: String,
    pub manifest_digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerMarker {
    digest: Digest,
    diff_id: Digest,
    entries: u64,
    bytes: u64,
}

/// Images on local disk, pulled from registries or imported from archives.
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) registry: RegistryClient,
    pub(crate) locks: KeyedLocks,
    pub(crate) options: StoreOptions,
    pub(crate) recent: RecentPulls,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("root", &self.root).finish()
    }
}

/// Runs blocking filesystem work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking store task cancelled during runtime shutdown: {e}"),
    }
}

impl ImageStore {
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(root, StoreOptions::default()).await
    }

    pub async fn open_with(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Self, StoreError> {
        let root = root.into();
        let root = std::path::absolute(&root).map_err(io_at(&root))?;
        let blobs = BlobStore::new(&root);
        let dirs = blobs.clone();
        let layout_root = root.clone();
        blocking(move || -> Result<(), StoreError> {
            dirs.create_dirs()?;
            for dir in ["layers", "images"] {
                let path = layout_root.join(dir);
                fs::create_dir_all(&path).map_err(io_at(&path))?;
            }
            Ok(())
        })
        .await?;
        let registry = RegistryClient::new(options.registry.clone()).map_err(StoreError::Client)?;
        let recent = RecentPulls::new(options.recent_pull_ttl);
        Ok(ImageStore { root, blobs, registry, locks: KeyedLocks::default(), options, recent })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image stored under `reference`. A digest reference also finds an image
    /// pulled by tag whose manifest (or index) has that digest.
    pub async fn get(&self, reference: &str) -> Result<Option<Image>, StoreError> {
        let reference = Reference::parse(reference)?;
        if let Some(record) = self.read_record(&reference.to_string()).await? {
            return Ok(Some(self.image_from_record(record)?));
        }
        let Some(digest) = reference.digest() else {
            return Ok(None);
        };
        let found = self.records().await?.into_iter().find(|r| {
            Reference::parse(&r.reference).is_ok_and(|rr| rr.name() == reference.name())
                && (r.manifest_digest == *digest || r.index_digest.as_ref() == Some(digest))
        });
        found.map(|r| self.image_from_record(r)).transpose()
    }

    /// All stored images, sorted by reference.
    pub async fn list(&self) -> Result<Vec<Image>, StoreError> {
        let mut images =
            self.records().await?.into_iter().map(|r| self.image_from_record(r)).collect::<Result<Vec<_>, _>>()?;
        images.sort_by_key(|i| i.reference.to_string());
        Ok(images)
    }

    /// Forgets `reference`. Content stays until [`ImageStore::prune`]. Returns
    /// whether there was such an image.
    pub async fn remove(&self, reference: &str) -> Result<bool, StoreError> {
        let reference = Reference::parse(reference)?;
        self.recent.forget(&reference.to_string());
        let path = self.record_path(&reference.to_string());
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&path)(e)),
        })
        .await
    }

    /// Deletes blobs and unpacked layers that no image record references, and any
    /// leftovers of interrupted pulls. Waits for running pulls and imports.
    pub async fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock = self.lock(true).await?;
        let records = self.records().await?;
        let blobs = self.blobs.clone();
        let layers_dir = self.root.join("layers");
        blocking(move || -> Result<PruneReport, StoreError> {
            let mut keep_blobs = HashSet::new();
            let mut keep_layers = HashSet::new();
            for r in &records {
                keep_blobs.insert(r.manifest_digest.clone());
                keep_blobs.extend(r.index_digest.clone());
                keep_blobs.insert(r.config_digest.clone());
                for l in &r.layers {
                    keep_blobs.insert(l.digest.clone());
                    keep_layers.insert(l.diff_id.hex().to_owned());
                }
            }
            let mut report = PruneReport { blobs_removed: 0, bytes_removed: 0, layers_removed: 0 };
            for digest in blobs.list()? {
                if !keep_blobs.contains(&digest) {
                    let path = blobs.path(&digest);
                    let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&path).map_err(io_at(&path))?;
                    report.blobs_removed += 1;
                    report.bytes_removed += len;
                }
            }
            for entry in fs::read_dir(&layers_dir).map_err(io_at(&layers_dir))? {
                let entry = entry.map_err(io_at(&layers_dir))?;
                let name = entry.file_name();
                if !keep_layers.contains(name.to_string_lossy().as_ref()) {
                    let path = entry.path();
                    fs::remove_dir_all(&path).map_err(io_at(&path))?;
                    if Digest::from_hex(&name.to_string_lossy()).is_some() {
                        report.layers_removed += 1;
                    }
                }
            }
            blobs.clear_ingest()?;
            Ok(report)
        })
        .await
    }

    /// Holds the store-wide lock: shared for writers of content, exclusive for prune,
    /// so prune never deletes a blob a pull is about to reference. An flock, so it
    /// also works between processes sharing a store.
    pub(crate) async fn lock(&self, exclusive: bool) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        blocking(move || {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_at(&path))?;
            if exclusive {
                file.lock().map_err(io_at(&path))?;
            } else {
                file.lock_shared().map_err(io_at(&path))?;
            }
            Ok(file)
        })
        .await
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        self.root.join("images").join(format!("{}.json", Digest::of(reference.as_bytes()).hex()))
    }

    pub(crate) async fn read_record(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(reference);
        blocking(move || read_record_file(&path)).await
    }

    async fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
                let path = entry.map_err(io_at(&dir))?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    out.extend(read_record_file(&path)?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Writes `record` durably. A record already on disk with the same content is left
    /// alone (a cached pull then costs no fsync).
    pub(crate) async fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        self.recent.forget(&record.reference);
        let path = self.record_path(&record.reference);
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        let dir = self.root.join("images");
        blocking(move || {
            if fs::read(&path).is_ok_and(|existing| existing == bytes) {
                return Ok(());
            }
            let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_at(&dir))?;
            io::Write::write_all(&mut tmp, &bytes).map_err(io_at(tmp.path()))?;
            tmp.as_file().sync_all().map_err(io_at(&path))?;
            tmp.persist(&path).map_err(|e| io_at(&path)(e.error))?;
            sync_dir(&dir)?;
            Ok(())
        })
        .await
    }

    pub(crate) fn image_from_record(&self, record: ImageRecord) -> Result<Image, StoreError> {
        Ok(Image {
            reference: Reference::parse(&record.reference)?,
            manifest_digest: record.manifest_digest,
            index_digest: record.index_digest,
            config_digest: record.config_digest,
            config: record.config,
            layers: record
                .layers
                .into_iter()
                .map(|l| Layer {
                    path: self.layer_fs(&l.diff_id),
                    digest: l.digest,
                    diff_id: l.diff_id,
                    media_type: l.media_type,
                    size: l.size,
                })
                .collect(),
        })
    }

    pub(crate) fn layer_fs(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex()).join("fs")
    }

    /// Unpacks the blob `digest` as layer `diff_id` unless that is already done.
    /// `lowers` are the layers below, nearest first. Returns the directory and
    /// whether it was cached.
    pub(crate) async fn ensure_layer(
        &self,
        digest: &Digest,
        diff_id: &Digest,
        lowers: Vec<PathBuf>,
    ) -> Result<(PathBuf, bool), UnpackError> {
        let _guard = self.locks.lock(&format!("layer:{diff_id}")).await;
        let layers = self.root.join("layers");
        let dir = layers.join(diff_id.hex());
        let fs_dir = dir.join("fs");
        if dir.join("complete.json").is_file() {
            return Ok((fs_dir, true));
        }
        let blob = self.blobs.path(digest);
        let options =
            UnpackOptions { limits: self.options.unpack_limits, expected_diff_id: Some(diff_id.clone()), lowers };
        let (digest, published) = (digest.clone(), fs_dir.clone());
        blocking(move || unpack_and_publish(&blob, &digest, &layers, &dir, &options)).await?;
        Ok((published, false))
    }
}

fn read_record_file(path: &Path) -> Result<Option<ImageRecord>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::CorruptRecord { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn unpack_and_publish(
    blob: &Path,
    digest: &Digest,
    layers: &Path,
    dir: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    let tmp = tempfile::Builder::new().prefix(".unpack-").tempdir_in(layers).map_err(io(layers))?;
    let fs_dir = tmp.path().join("fs");
    fs::DirBuilder::new().mode(0o755).create(&fs_dir).map_err(io(&fs_dir))?;
    let file = File::open(blob).map_err(io(blob))?;
    let stats = unpack_layer(BufReader::with_capacity(256 * 1024, file), &fs_dir, options)?;
    let marker = LayerMarker {
        digest: digest.clone(),
        diff_id: stats.diff_id.clone(),
        entries: stats.entries,
        bytes: stats.bytes,
    };
    let marker_path = tmp.path().join("complete.json");
    fs::write(&marker_path, serde_json::to_vec_pretty(&marker).expect("marker serializes"))
        .map_err(io(&marker_path))?;
    // One syncfs instead of an fsync per unpacked file: everything is durable before
    // the rename publishes it.
    let handle = File::open(tmp.path()).map_err(io(tmp.path()))?;
    rustix::fs::syncfs(&handle).map_err(|e| io(tmp.path())(e.into()))?;
    if dir.exists() && !dir.join("complete.json").is_file() {
        fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    let staged = tmp.keep();
    match fs::rename(&staged, dir) {
        Ok(()) => {
            File::open(layers).and_then(|d| d.sync_all()).map_err(io(layers))?;
        }
        // Another process published the same layer first; its copy is as good.
        Err(_) if dir.join("complete.json").is_file() => {
            fs::remove_dir_all(&staged).map_err(io(&staged))?;
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            return Err(io(dir)(e));
        }
    }
    Ok(stats)
}
