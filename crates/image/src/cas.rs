//! The content-addressed blob store: `blobs/sha256/<hex>`.
//!
//! **Architecture Invariant:** a file under `blobs/sha256/<hex>` always holds
//! exactly the bytes whose sha256 is `<hex>`. Content is written to `ingest/`,
//! hashed on the way, fsynced, verified and only then renamed into place (and the
//! directory fsynced), so a crash leaves at worst a stray file in `ingest/`.
//! Two writers of the same blob both rename identical content: the last rename wins
//! and readers never see a partial file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tempfile::TempPath;

use crate::digest::{Digest, DigestHasher};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("I/O error at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    ingest: PathBuf,
}

/// A blob being written: hash as you write, then [`BlobStore::commit`].
pub(crate) struct Ingest {
    tmp: TempPath,
    hasher: DigestHasher,
}

impl Ingest {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub(crate) fn written(&self) -> u64 {
        self.hasher.len()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }
}

impl BlobStore {
    pub(crate) fn new(root: &Path) -> Self {
        BlobStore { dir: root.join("blobs").join("sha256"), ingest: root.join("ingest") }
    }

    pub(crate) fn create_dirs(&self) -> Result<(), IngestError> {
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        fs::create_dir_all(&self.ingest).map_err(io_at(&self.ingest))
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Present (and of the expected size, when known). Content is trusted: only
    /// verified bytes are ever renamed into place.
    pub(crate) fn contains(&self, digest: &Digest, size: Option<u64>) -> bool {
        fs::metadata(self.path(digest)).is_ok_and(|m| m.is_file() && size.is_none_or(|s| m.len() == s))
    }

    pub(crate) fn begin(&self) -> Result<(Ingest, File), IngestError> {
        let (file, tmp) = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.ingest)
            .map_err(io_at(&self.ingest))?
            .into_parts();
        Ok((Ingest { tmp, hasher: DigestHasher::new() }, file))
    }

    /// Verifies and publishes an ingest. Blocking (fsync).
    pub(crate) fn commit(
        &self,
        ingest: Ingest,
        file: File,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Digest, IngestError> {
        let size = ingest.hasher.len();
        let actual = ingest.hasher.finish();
        if let Some(expected_size) = expected_size
            && size != expected_size
        {
            return Err(IngestError::SizeMismatch { expected: expected_size, actual: size });
        }
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(IngestError::DigestMismatch { expected: expected.clone(), actual });
        }
        file.sync_all().map_err(io_at(&ingest.tmp))?;
        drop(file);
        let dest = self.path(&actual);
        ingest.tmp.persist(&dest).map_err(|e| io_at(&dest)(e.error))?;
        sync_dir(&self.dir)?;
        Ok(actual)
    }

    /// Stores a small in-memory document (manifest, config). Blocking.
    pub(crate) fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, IngestError> {
        let digest = Digest::of(bytes);
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(IngestError::DigestMismatch { expected: expected.clone(), actual: digest });
        }
        if self.contains(&digest, Some(bytes.len() as u64)) {
            return Ok(digest);
        }
        let (mut ingest, mut file) = self.begin()?;
        ingest.update(bytes);
        file.write_all(bytes).map_err(io_at(ingest.path()))?;
        self.commit(ingest, file, Some(&digest), Some(bytes.len() as u64))
    }

    pub(crate) fn read(&self, digest: &Digest) -> Result<Vec<u8>, IngestError> {
        let path = self.path(digest);
        fs::read(&path).map_err(io_at(&path))
    }

    pub(crate) fn list(&self) -> Result<Vec<Digest>, IngestError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let entry = entry.map_err(io_at(&self.dir))?;
            if let Some(d) = entry.file_name().to_str().and_then(Digest::from_hex) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes interrupted ingests. Only safe while no writer is active (prune holds
    /// the store lock exclusively).
    pub(crate) fn clear_ingest(&self) -> Result<(), IngestError> {
        for entry in fs::read_dir(&self.ingest).map_err(io_at(&self.ingest))? {
            let path = entry.map_err(io_at(&self.ingest))?.path();
            let result = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            result.map_err(io_at(&path))?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn ingest_dir(&self) -> &Path {
        &self.ingest
    }
}

/// Makes a rename durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IngestError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// One async mutex per key (a digest), so two pulls in this process never
/// download or unpack the same thing twice at once. Across processes the atomic
/// renames keep the store correct; only work is duplicated.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, weak| weak.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_before_publishing() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path());
        store.create_dirs().unwrap();
        let d = store.put(b"hello", None).unwrap();
        assert!(store.contains(&d, Some(5)));
        assert!(!store.contains(&d, Some(6)));
        assert_eq!(store.read(&d).unwrap(), b"hello");

        let wrong = Digest::of(b"other");
        assert!(matches!(store.put(b"hello!", Some(&wrong)), Err(IngestError::DigestMismatch { .. })));
        let (mut ingest, mut file) = store.begin().unwrap();
        ingest.update(b"abc");
        file.write_all(b"abc").unwrap();
        assert!(matches!(
            store.commit(ingest, file, None, Some(4)),
            Err(IngestError::SizeMismatch { expected: 4, actual: 3 })
        ));
        assert_eq!(store.list().unwrap(), vec![d]);
        // The failed ingests removed their temp files on drop.
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }
}
