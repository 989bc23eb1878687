//! `ImageStore::import`: images from an OCI image layout tarball (`oci-layout`,
//! `index.json`, `blobs/`) or a `docker save` archive (`manifest.json`, layer
//! tars), for hosts with no registry in reach.
//!
//! The archive is read once, streaming: every file goes through the blob store's
//! verified ingest (files named `blobs/sha256/<hex>` must hash to their name), so
//! nothing in the archive is trusted more than a registry would be.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cas::{BlobStore, IngestError};
use crate::digest::Digest;
use crate::manifest::{
    Compression, Descriptor, ImageConfig, Index, Manifest, ManifestDocument, ManifestError, media_type,
};
use crate::reference::{Reference, ReferenceError};
use crate::store::{Image, ImageRecord, ImageStore, LayerRecord, StoreError, blocking};
use crate::unpack::{UnpackError, clean, decompress};

/// index.json, manifest.json and friends are read into memory.
const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
const DOCUMENTS: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path} failed")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an OCI image layout nor a docker-archive (no index.json or manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: {file} is larger than {MAX_DOCUMENT_BYTES} bytes")]
    DocumentTooLarge { path: PathBuf, file: String },
    #[error("{path}: {file} is invalid")]
    Json {
        path: PathBuf,
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {file} does not match its content")]
    Corrupt {
        path: PathBuf,
        file: String,
        #[source]
        source: IngestError,
    },
    #[error("{path}: {what} is referenced but not in the archive")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: manifest {digest} is invalid")]
    Manifest {
        path: PathBuf,
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("{path}: index {digest} has no manifest for platform {platform}")]
    NoMatchingPlatform { path: PathBuf, digest: Digest, platform: String },
    #[error("{path}: config of image {digest} lists {diff_ids} diff_ids for {layers} layers")]
    LayerCountMismatch { path: PathBuf, digest: Digest, diff_ids: usize, layers: usize },
    #[error("{path}: image {digest} has no name; import it with a reference")]
    Unnamed { path: PathBuf, digest: Digest },
    #[error("{path} holds {images} images; the reference {reference:?} can name only one")]
    AmbiguousReference { path: PathBuf, reference: String, images: usize },
    #[error("{path}: the reference {reference:?} pins a digest, but the archive's image is {digest}")]
    ReferenceDigest { path: PathBuf, reference: String, digest: Digest },
    #[error("{path}: image name {name:?} is invalid")]
    Name {
        path: PathBuf,
        name: String,
        #[source]
        source: ReferenceError,
    },
    #[error("{path}: failed to unpack layer {digest}")]
    Unpack {
        path: PathBuf,
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("image store failure while importing {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// What one pass over the archive found.
#[derive(Default)]
struct Scan {
    /// Every regular file, by cleaned path, as the digest it was stored under.
    files: HashMap<PathBuf, Digest>,
    documents: HashMap<String, Vec<u8>>,
    /// Symlinks and hard links (docker-archive deduplicates layers with them).
    links: HashMap<PathBuf, PathBuf>,
}

impl Scan {
    fn lookup(&self, name: &str) -> Option<Digest> {
        let mut path = clean(Path::new(name)).ok()?;
        // Bounded, so a link cycle ends.
        for _ in 0..16 {
            if let Some(d) = self.files.get(&path) {
                return Some(d.clone());
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }
}

/// An image found in the archive, before its layers are unpacked.
struct Found {
    names: Vec<Reference>,
    manifest_digest: Digest,
    index_digest: Option<Digest>,
    manifest: Manifest,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image in the archive at `path` and registers it under the
    /// name(s) the archive gives it. Returns one [`Image`] per name.
    pub async fn import(&self, path: impl AsRef<Path>) -> Result<Vec<Image>, ImportError> {
        self.import_named(path, None).await
    }

    /// Like [`ImageStore::import`], with a name from the caller. A `reference` with a
    /// tag or digest (`local/busybox:1`) is the name of the one image in the archive,
    /// whatever names the archive carries: the user said what to call it. A bare
    /// repository (`local/busybox`) supplies the repository for OCI layouts that give
    /// only a tag, and names images the archive leaves unnamed (`:latest`).
    pub async fn import_named(
        &self,
        path: impl AsRef<Path>,
        reference: Option<&str>,
    ) -> Result<Vec<Image>, ImportError> {
        let path = path.as_ref().to_path_buf();
        let store_err = |source| ImportError::Store { path: path.clone(), source };
        let default = reference
            .map(|r| {
                Reference::parse(r).map_err(|source| ImportError::Name {
                    path: path.clone(),
                    name: r.to_owned(),
                    source,
                })
            })
            .transpose()?;
        let _lock = self.lock(false).await.map_err(store_err)?;

        let reference = reference.map(str::to_owned);
        let blobs = self.blobs.clone();
        let archive = path.clone();
        let platform = self.options.platform.clone();
        let found = blocking(move || {
            let scan = scan(&blobs, &archive)?;
            let mut found = if scan.documents.contains_key("index.json") {
                oci_images(&blobs, &archive, &scan, &platform, default.as_ref())?
            } else if scan.documents.contains_key("manifest.json") {
                docker_images(&blobs, &archive, &scan, default.as_ref())?
            } else {
                return Err(ImportError::UnknownFormat { path: archive });
            };
            if let (Some(name), Some(raw)) = (&default, reference.as_deref())
                && names_a_version(raw)
            {
                name_exactly(&archive, &mut found, name, raw)?;
            }
            let images = found
                .into_iter()
                .map(|f| {
                    let config = read_config(&blobs, &archive, &f)?;
                    Ok((f, config))
                })
                .collect::<Result<Vec<_>, ImportError>>()?;
            Ok(images)
        })
        .await?;

        let mut images = Vec::new();
        for (found, (config_digest, config)) in found {
            let mut dirs: Vec<PathBuf> = Vec::new();
            let mut layers = Vec::new();
            for (layer, diff_id) in found.manifest.layers.iter().zip(&config.rootfs.diff_ids) {
                let lowers = dirs.iter().rev().cloned().collect();
                let (dir, _) = self.ensure_layer(&layer.digest, diff_id, lowers).await.map_err(|source| {
                    ImportError::Unpack { path: path.clone(), digest: layer.digest.clone(), source }
                })?;
                dirs.push(dir);
                layers.push(LayerRecord {
                    digest: layer.digest.clone(),
                    diff_id: diff_id.clone(),
                    media_type: layer.media_type.clone(),
                    size: layer.size,
                });
            }
            for name in &found.names {
                let record = ImageRecord {
                    reference: name.to_string(),
                    manifest_digest: found.manifest_digest.clone(),
                    index_digest: found.index_digest.clone(),
                    config_digest: config_digest.clone(),
                    config: config.clone(),
                    layers: layers.clone(),
                };
                self.write_record(&record).await.map_err(store_err)?;
                images.push(self.image_from_record(record).map_err(store_err)?);
            }
        }
        Ok(images)
    }
}

fn scan(blobs: &BlobStore, archive: &Path) -> Result<Scan, ImportError> {
    let read_err = |source| ImportError::Read { path: archive.to_path_buf(), source };
    let file = File::open(archive).map_err(read_err)?;
    let (_, reader) = decompress(BufReader::new(file)).map_err(read_err)?;
    let mut tar = tar::Archive::new(reader);
    let mut scan = Scan::default();
    let mut buf = vec![0u8; 128 * 1024];
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        // Names are only lookup keys here; nothing is written under them.
        let Ok(rel) = clean(&raw) else { continue };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let top_level = rel.to_str().filter(|n| DOCUMENTS.contains(n));
                if let Some(name) = top_level {
                    if entry.size() > MAX_DOCUMENT_BYTES {
                        return Err(ImportError::DocumentTooLarge {
                            path: archive.to_path_buf(),
                            file: name.to_owned(),
                        });
                    }
                    let mut bytes = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut bytes).map_err(read_err)?;
                    scan.documents.insert(name.to_owned(), bytes);
                    continue;
                }
                let named = rel.strip_prefix("blobs/sha256").ok().and_then(|p| p.to_str()).and_then(Digest::from_hex);
                let corrupt = |source| ImportError::Corrupt {
                    path: archive.to_path_buf(),
                    file: rel.display().to_string(),
                    source,
                };
                let (mut ingest, mut out) = blobs.begin().map_err(corrupt)?;
                loop {
                    let n = entry.read(&mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    ingest.update(&buf[..n]);
                    out.write_all(&buf[..n])
                        .map_err(|source| corrupt(IngestError::Io { path: ingest.path().to_path_buf(), source }))?;
                }
                let size = entry.size();
                let digest = blobs.commit(ingest, out, named.as_ref(), Some(size)).map_err(corrupt)?;
                scan.files.insert(rel, digest);
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(read_err)?;
                let parent = rel.parent().unwrap_or(Path::new(""));
                if let Some(target) = target.and_then(|t| clean(&parent.join(t)).ok()) {
                    scan.links.insert(rel, target);
                }
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(read_err)?;
                if let Some(target) = target.and_then(|t| clean(&t).ok()) {
                    scan.links.insert(rel, target);
                }
            }
            _ => {}
        }
    }
    Ok(scan)
}

fn parse_json<T: for<'de> Deserialize<'de>>(archive: &Path, file: &str, bytes: &[u8]) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::Json {
        path: archive.to_path_buf(),
        file: file.to_owned(),
        source,
    })
}

fn read_blob(blobs: &BlobStore, archive: &Path, digest: &Digest) -> Result<Vec<u8>, ImportError> {
    if !blobs.contains(digest, None) {
        return Err(ImportError::Missing { path: archive.to_path_buf(), what: format!("blob {digest}") });
    }
    blobs.read(digest).map_err(|e| ImportError::Store { path: archive.to_path_buf(), source: e.into() })
}

fn parse_manifest(blobs: &BlobStore, archive: &Path, desc: &Descriptor) -> Result<ManifestDocument, ImportError> {
    let bytes = read_blob(blobs, archive, &desc.digest)?;
    ManifestDocument::parse(&bytes, Some(&desc.media_type)).map_err(|source| ImportError::Manifest {
        path: archive.to_path_buf(),
        digest: desc.digest.clone(),
        source,
    })
}

fn oci_images(
    blobs: &BlobStore,
    archive: &Path,
    scan: &Scan,
    platform: &crate::manifest::Platform,
    default: Option<&Reference>,
) -> Result<Vec<Found>, ImportError> {
    let index: Index = parse_json(archive, "index.json", &scan.documents["index.json"])?;
    // Docker 25+ writes both files; its manifest.json has the names in RepoTags.
    let docker_entries: Vec<DockerArchiveEntry> = match scan.documents.get("manifest.json") {
        Some(bytes) => parse_json(archive, "manifest.json", bytes)?,
        None => Vec::new(),
    };
    let mut found = Vec::new();
    for desc in &index.manifests {
        let (index_digest, manifest_digest, manifest) = match parse_manifest(blobs, archive, desc)? {
            ManifestDocument::Manifest(m) => (None, desc.digest.clone(), m),
            ManifestDocument::Index(inner) => {
                let chosen = inner.select(platform).ok_or_else(|| ImportError::NoMatchingPlatform {
                    path: archive.to_path_buf(),
                    digest: desc.digest.clone(),
                    platform: platform.to_string(),
                })?;
                match parse_manifest(blobs, archive, chosen)? {
                    ManifestDocument::Manifest(m) => (Some(desc.digest.clone()), chosen.digest.clone(), m),
                    ManifestDocument::Index(_) => {
                        return Err(ImportError::Manifest {
                            path: archive.to_path_buf(),
                            digest: chosen.digest.clone(),
                            source: ManifestError::UnsupportedMediaType { media_type: media_type::OCI_INDEX.into() },
                        });
                    }
                }
            }
        };
        let mut names = names_from_annotations(archive, &desc.annotations, default)?;
        if names.is_empty() {
            for entry in &docker_entries {
                if scan.lookup(&entry.config).as_ref() == Some(&manifest.config.digest) {
                    names.extend(parse_names(archive, entry.repo_tags.iter().flatten())?);
                }
            }
        }
        found.push(Found {
            names: names_or_default(archive, names, default, &manifest_digest)?,
            manifest_digest,
            index_digest,
            manifest,
        });
    }
    Ok(found)
}

fn docker_images(
    blobs: &BlobStore,
    archive: &Path,
    scan: &Scan,
    default: Option<&Reference>,
) -> Result<Vec<Found>, ImportError> {
    let entries: Vec<DockerArchiveEntry> = parse_json(archive, "manifest.json", &scan.documents["manifest.json"])?;
    let missing = |what: &str| ImportError::Missing { path: archive.to_path_buf(), what: what.to_owned() };
    let mut found = Vec::new();
    for entry in entries {
        let config_digest = scan.lookup(&entry.config).ok_or_else(|| missing(&entry.config))?;
        let config_size = read_blob(blobs, archive, &config_digest)?.len() as u64;
        let mut layers = Vec::new();
        for name in &entry.layers {
            let digest = scan.lookup(name).ok_or_else(|| missing(name))?;
            let path = blobs.path(&digest);
            let mut head = [0u8; 4];
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let n = File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(|source| ImportError::Read { path: path.clone(), source })?;
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::None => media_type::DOCKER_LAYER,
                Compression::Gzip => media_type::DOCKER_LAYER_GZIP,
                Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            };
            layers.push(Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            });
        }
        // docker-archive has no manifest of its own; synthesise the one a registry
        // would hold so the record looks like any pulled image.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::DOCKER_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: media_type::DOCKER_CONFIG.to_owned(),
                digest: config_digest,
                size: config_size,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
        let manifest_digest = blobs
            .put(&bytes, None)
            .map_err(|e| ImportError::Store { path: archive.to_path_buf(), source: e.into() })?;
        let names = parse_names(archive, entry.repo_tags.iter().flatten())?;
        found.push(Found {
            names: names_or_default(archive, names, default, &manifest_digest)?,
            manifest_digest,
            index_digest: None,
            manifest,
        });
    }
    Ok(found)
}

fn parse_names<'a>(archive: &Path, names: impl Iterator<Item = &'a String>) -> Result<Vec<Reference>, ImportError> {
    names
        .map(|n| {
            Reference::parse(n).map_err(|source| ImportError::Name {
                path: archive.to_path_buf(),
                name: n.clone(),
                source,
            })
        })
        .collect()
}

/// containerd's full name wins; the OCI `ref.name` is a full reference when it
/// looks like one, else a tag for the caller's repository.
fn names_from_annotations(
    archive: &Path,
    annotations: &BTreeMap<String, String>,
    default: Option<&Reference>,
) -> Result<Vec<Reference>, ImportError> {
    let invalid = |name: &str, source| ImportError::Name { path: archive.to_path_buf(), name: name.to_owned(), source };
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        return Ok(vec![Reference::parse(full).map_err(|e| invalid(full, e))?]);
    }
    match (annotations.get(OCI_REF_NAME), default) {
        (Some(name), _) if name.contains(['/', ':', '@']) => {
            Ok(vec![Reference::parse(name).map_err(|e| invalid(name, e))?])
        }
        (Some(tag), Some(default)) => Ok(vec![default.with_tag(tag).map_err(|e| invalid(tag, e))?]),
        _ => Ok(Vec::new()),
    }
}

/// True when `raw` names a version (a tag after the last `/`, or a digest), not just a
/// repository. `Reference::parse` fills in `latest`, so this reads what the user wrote.
fn names_a_version(raw: &str) -> bool {
    raw.contains('@') || raw.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

/// Gives the archive's one image the caller's exact `name` instead of the archive's own.
fn name_exactly(archive: &Path, found: &mut [Found], name: &Reference, raw: &str) -> Result<(), ImportError> {
    let [image] = found else {
        return Err(ImportError::AmbiguousReference {
            path: archive.to_path_buf(),
            reference: raw.to_owned(),
            images: found.len(),
        });
    };
    if let Some(digest) = name.digest()
        && digest != &image.manifest_digest
        && Some(digest) != image.index_digest.as_ref()
    {
        return Err(ImportError::ReferenceDigest {
            path: archive.to_path_buf(),
            reference: raw.to_owned(),
            digest: image.index_digest.clone().unwrap_or_else(|| image.manifest_digest.clone()),
        });
    }
    image.names = vec![name.clone()];
    Ok(())
}

fn names_or_default(
    archive: &Path,
    names: Vec<Reference>,
    default: Option<&Reference>,
    digest: &Digest,
) -> Result<Vec<Reference>, ImportError> {
    match (names.is_empty(), default) {
        (false, _) => Ok(names),
        (true, Some(d)) => Ok(vec![d.clone()]),
        (true, None) => Err(ImportError::Unnamed { path: archive.to_path_buf(), digest: digest.clone() }),
    }
}

fn read_config(blobs: &BlobStore, archive: &Path, found: &Found) -> Result<(Digest, ImageConfig), ImportError> {
    let digest = found.manifest.config.digest.clone();
    let bytes = read_blob(blobs, archive, &digest)?;
    let config: ImageConfig = parse_json(archive, &format!("config {digest}"), &bytes)?;
    if config.rootfs.diff_ids.len() != found.manifest.layers.len() {
        return Err(ImportError::LayerCountMismatch {
            path: archive.to_path_buf(),
            digest: found.manifest_digest.clone(),
            diff_ids: config.rootfs.diff_ids.len(),
            layers: found.manifest.layers.len(),
        });
    }
    for layer in &found.manifest.layers {
        if !blobs.contains(&layer.digest, Some(layer.size)) {
            return Err(ImportError::Missing { path: archive.to_path_buf(), what: format!("layer {}", layer.digest) });
        }
    }
    Ok((digest, config))
}

#[cfg(test)]
mod tests {
    use super::names_a_version;

    #[test]
    fn a_version_is_a_tag_after_the_last_slash_or_a_digest() {
        for pinned in ["busybox:1", "local/busybox:latest", "localhost:5000/app:v2", "app@sha256:00"] {
            assert!(names_a_version(pinned), "{pinned}");
        }
        for bare in ["busybox", "local/busybox", "localhost:5000/app"] {
            assert!(!names_a_version(bare), "{bare}");
        }
    }
}
