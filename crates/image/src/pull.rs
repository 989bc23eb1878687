//! `ImageStore::pull`: resolve, download and verify, unpack, record.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::auth::Credentials;
use crate::cas::IngestError;
use crate::digest::Digest;
use crate::manifest::{Compression, Descriptor, ManifestDocument, ManifestError, media_type};
use crate::progress::{Progress, PullEvent};
use crate::reference::{Reference, ReferenceError};
use crate::registry::RegistryError;
use crate::store::{Image, ImageRecord, ImageStore, LayerRecord, StoreError, blocking};
use crate::unpack::UnpackError;

/// Image configs are read into memory; real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
const PROGRESS_STEP: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("failed to resolve ref {reference}")]
    Resolve {
        reference: String,
        /// Requests made, the last of which failed.
        attempts: u32,
        #[source]
        source: RegistryError,
    },
    #[error("manifest {digest} of {reference} is invalid")]
    Manifest {
        reference: String,
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("image index {digest} of {reference} has no manifest for platform {platform}")]
    NoMatchingPlatform { reference: String, digest: Digest, platform: String },
    #[error("image index {digest} of {reference} selects another index, which is not supported")]
    NestedIndex { reference: String, digest: Digest },
    #[error("{reference} is not a container image: config media type {media_type:?}")]
    NotAnImage { reference: String, media_type: String },
    #[error("config {digest} of {reference} is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed")]
    ConfigTooLarge { reference: String, digest: Digest, size: u64 },
    #[error("config {digest} of {reference} is invalid")]
    Config {
        reference: String,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("config of {reference} lists {diff_ids} layer diff_ids but its manifest has {layers} layers")]
    LayerCountMismatch { reference: String, diff_ids: usize, layers: usize },
    #[error("layer {digest} of {reference} has unsupported media type {media_type:?}")]
    UnsupportedLayer { reference: String, digest: Digest, media_type: String },
    #[error("failed to fetch blob {digest} of {reference}")]
    Fetch {
        reference: String,
        digest: Digest,
        attempts: u32,
        #[source]
        source: RegistryError,
    },
    #[error("blob {digest} of {reference} does not match its descriptor")]
    Corrupt {
        reference: String,
        digest: Digest,
        #[source]
        source: IngestError,
    },
    #[error("failed to unpack layer {digest} of {reference}")]
    Unpack {
        reference: String,
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("image store failure while pulling {reference}")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
}

impl PullError {
    /// The registry has no such repository, tag or digest.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PullError::Resolve { source: RegistryError::NotFound { .. }, .. }
                | PullError::Fetch { source: RegistryError::NotFound { .. }, .. }
        )
    }

    /// The reason as AWS words it after `CannotPullContainerError: `, e.g.
    /// `pull image manifest has been retried 1 time(s): failed to resolve ref
    /// 127.0.0.1:5000/nope:latest: not found`.
    pub fn aws_reason(&self) -> String {
        let chain = error_chain(self);
        match self {
            PullError::Resolve { attempts, .. } => {
                format!("pull image manifest has been retried {} time(s): {chain}", attempts.saturating_sub(1))
            }
            _ => chain,
        }
    }
}

/// An error and its sources joined by `": "`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

enum DownloadError {
    Registry(RegistryError),
    Ingest(IngestError),
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * u64::from(attempt))
}

impl ImageStore {
    /// Pulls `reference` (as written in a task definition) for the store's platform,
    /// reusing every blob and unpacked layer already present.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Progress,
    ) -> Result<Image, PullError> {
        let reference = Reference::parse(reference)?;
        let name = reference.to_string();
        let store_err = |source| PullError::Store { reference: name.clone(), source };
        let _lock = self.lock(false).await.map_err(store_err)?;
        let creds = credentials.as_ref();
        if reference.digest().is_none()
            && let Some(digest) = self.recent.get(&name, creds)
            && let Ok(Some(record)) = self.read_record(&name).await
            && record.manifest_digest == digest
        {
            // What a pull that found everything present would have reported.
            progress.emit(PullEvent::Resolved {
                reference: name.clone(),
                manifest: digest,
                layers: record.layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
            });
            for l in &record.layers {
                progress.emit(PullEvent::LayerCached { digest: l.digest.clone(), size: l.size });
                progress.emit(PullEvent::LayerUnpacked {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    cached: true,
                });
            }
            return self.image_from_record(record).map_err(store_err);
        }

        let (top_digest, top) = self.resolve(&reference, creds).await?;
        let (index_digest, manifest_digest, manifest) = match top {
            ManifestDocument::Manifest(m) => (None, top_digest, m),
            ManifestDocument::Index(index) => {
                let platform = &self.options.platform;
                let chosen = index
                    .select(platform)
                    .ok_or_else(|| PullError::NoMatchingPlatform {
                        reference: name.clone(),
                        digest: top_digest.clone(),
                        platform: platform.to_string(),
                    })?
                    .digest
                    .clone();
                let pinned = reference.with_digest(chosen.clone());
                match self.resolve(&pinned, creds).await?.1 {
                    ManifestDocument::Manifest(m) => (Some(top_digest), chosen, m),
                    ManifestDocument::Index(_) => {
                        return Err(PullError::NestedIndex { reference: name, digest: top_digest });
                    }
                }
            }
        };

        let config_desc = &manifest.config;
        if ![media_type::OCI_CONFIG, media_type::DOCKER_CONFIG].contains(&config_desc.media_type.as_str()) {
            return Err(PullError::NotAnImage { reference: name, media_type: config_desc.media_type.clone() });
        }
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(PullError::ConfigTooLarge {
                reference: name,
                digest: config_desc.digest.clone(),
                size: config_desc.size,
            });
        }
        self.ensure_blob(&reference, config_desc, creds, None).await?;
        let config_bytes = {
            let blobs = self.blobs.clone();
            let digest = config_desc.digest.clone();
            blocking(move || blobs.read(&digest)).await.map_err(|e| store_err(e.into()))?
        };
        let config: crate::manifest::ImageConfig = serde_json::from_slice(&config_bytes).map_err(|source| {
            PullError::Config { reference: name.clone(), digest: config_desc.digest.clone(), source }
        })?;
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(PullError::LayerCountMismatch {
                reference: name,
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        for layer in &manifest.layers {
            if Compression::from_media_type(&layer.media_type).is_none() {
                return Err(PullError::UnsupportedLayer {
                    reference: name,
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                });
            }
        }
        progress.emit(PullEvent::Resolved {
            reference: name.clone(),
            manifest: manifest_digest.clone(),
            layers: manifest.layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
        });

        // Downloads run ahead (in order, a few at once) while layers unpack one by
        // one: each unpack needs the layers below it finished.
        // Owned descriptors: a closure over `&Descriptor` makes the future's lifetime
        // higher-ranked, and then callers cannot spawn `pull` on a multi-threaded runtime.
        let (reference_ref, progress_ref) = (&reference, &progress);
        let downloads = futures_util::stream::iter(manifest.layers.clone())
            .map(move |layer| async move { self.ensure_blob(reference_ref, &layer, creds, Some(progress_ref)).await })
            .buffered(self.options.concurrent_downloads.max(1));
        futures_util::pin_mut!(downloads);
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut layers = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            downloads.next().await.expect("one download per layer")?;
            let lowers = dirs.iter().rev().cloned().collect();
            let (dir, cached) = self.ensure_layer(&layer.digest, diff_id, lowers).await.map_err(|source| {
                PullError::Unpack { reference: name.clone(), digest: layer.digest.clone(), source }
            })?;
            progress.emit(PullEvent::LayerUnpacked { digest: layer.digest.clone(), diff_id: diff_id.clone(), cached });
            dirs.push(dir);
            layers.push(LayerRecord {
                digest: layer.digest.clone(),
                diff_id: diff_id.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
            });
        }

        let record = ImageRecord {
            reference: name.clone(),
            manifest_digest,
            index_digest,
            config_digest: config_desc.digest.clone(),
            config,
            layers,
        };
        self.write_record(&record).await.map_err(store_err)?;
        let digest = record.manifest_digest.clone();
        let image = self.image_from_record(record).map_err(store_err)?;
        self.recent.insert(&name, creds, digest);
        Ok(image)
    }

    /// The manifest or index `reference` names. A digest already in the store is
    /// read locally, so pinned references pull without touching the network.
    async fn resolve(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<(Digest, ManifestDocument), PullError> {
        let name = reference.to_string();
        let (digest, bytes, content_type) = match reference.digest() {
            Some(d) if self.blobs.contains(d, None) => {
                let (blobs, d2) = (self.blobs.clone(), d.clone());
                let bytes = blocking(move || blobs.read(&d2))
                    .await
                    .map_err(|e| PullError::Store { reference: name.clone(), source: e.into() })?;
                (d.clone(), bytes, None)
            }
            _ => {
                let id = reference.manifest_reference();
                let attempts = self.registry.config().manifest_attempts.max(1);
                let mut attempt = 0;
                let fetched = loop {
                    attempt += 1;
                    match self.registry.manifest(reference, &id, creds).await {
                        Ok(f) => break f,
                        Err(e) if e.is_retryable() && attempt < attempts => {
                            tracing::debug!(reference = %name, attempt, error = %e, "retrying manifest");
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        Err(source) => {
                            return Err(PullError::Resolve { reference: name, attempts: attempt, source });
                        }
                    }
                };
                let (blobs, bytes, digest) = (self.blobs.clone(), fetched.bytes.clone(), fetched.digest.clone());
                blocking(move || blobs.put(&bytes, Some(&digest)))
                    .await
                    .map_err(|e| PullError::Store { reference: name.clone(), source: e.into() })?;
                (fetched.digest, fetched.bytes, fetched.media_type)
            }
        };
        let document = ManifestDocument::parse(&bytes, content_type.as_deref())
            .map_err(|source| PullError::Manifest { reference: name, digest: digest.clone(), source })?;
        Ok((digest, document))
    }

    /// Makes the blob present and verified, downloading it unless it already is.
    async fn ensure_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        creds: Option<&Credentials>,
        progress: Option<&Progress>,
    ) -> Result<(), PullError> {
        let name = reference.to_string();
        let _guard = self.locks.lock(&format!("blob:{}", desc.digest)).await;
        if self.blobs.contains(&desc.digest, Some(desc.size)) {
            if let Some(p) = progress {
                p.emit(PullEvent::LayerCached { digest: desc.digest.clone(), size: desc.size });
            }
            return Ok(());
        }
        let attempts = self.registry.config().blob_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.download(reference, desc, creds, progress).await {
                Ok(()) => break,
                Err(DownloadError::Registry(e))
                    if e.is_retryable() && !matches!(e, RegistryError::NotFound { .. }) && attempt < attempts =>
                {
                    tracing::debug!(reference = %name, digest = %desc.digest, attempt, error = %e, "retrying blob");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(DownloadError::Registry(source)) => {
                    return Err(PullError::Fetch {
                        reference: name,
                        digest: desc.digest.clone(),
                        attempts: attempt,
                        source,
                    });
                }
                Err(DownloadError::Ingest(e @ IngestError::Io { .. })) => {
                    return Err(PullError::Store { reference: name, source: e.into() });
                }
                Err(DownloadError::Ingest(source)) => {
                    return Err(PullError::Corrupt { reference: name, digest: desc.digest.clone(), source });
                }
            }
        }
        if let Some(p) = progress {
            p.emit(PullEvent::LayerDownloaded { digest: desc.digest.clone(), size: desc.size });
        }
        Ok(())
    }

    async fn download(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        creds: Option<&Credentials>,
        progress: Option<&Progress>,
    ) -> Result<(), DownloadError> {
        let (url, mut response) =
            self.registry.blob(reference, &desc.digest, creds).await.map_err(DownloadError::Registry)?;
        let (mut ingest, file) = self.blobs.begin().map_err(DownloadError::Ingest)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut reported = 0;
        let io_err = |path: &std::path::Path, source| {
            DownloadError::Ingest(IngestError::Io { path: path.to_path_buf(), source })
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| DownloadError::Registry(RegistryError::Http { url: url.clone(), source }))?
        {
            let total = ingest.written() + chunk.len() as u64;
            // Stop a registry that sends more than the descriptor promised before it
            // fills the disk.
            if total > desc.size {
                return Err(DownloadError::Ingest(IngestError::SizeMismatch { expected: desc.size, actual: total }));
            }
            ingest.update(&chunk);
            if let Err(e) = file.write_all(&chunk).await {
                return Err(io_err(ingest.path(), e));
            }
            if let Some(p) = progress
                && (total - reported >= PROGRESS_STEP || total == desc.size)
            {
                reported = total;
                p.emit(PullEvent::LayerDownloading {
                    digest: desc.digest.clone(),
                    downloaded: total,
                    total: desc.size,
                });
            }
        }
        if let Err(e) = file.flush().await {
            return Err(io_err(ingest.path(), e));
        }
        let file = file.into_std().await;
        let (blobs, digest, size) = (self.blobs.clone(), desc.digest.clone(), desc.size);
        blocking(move || blobs.commit(ingest, file, Some(&digest), Some(size))).await.map_err(DownloadError::Ingest)?;
        Ok(())
    }
}
