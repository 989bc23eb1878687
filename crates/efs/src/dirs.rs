//! A file system's data: one directory under the EFS root, made with the file system and
//! removed with it. Blocking file work runs off the async threads.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::EfsError;

fn failed(what: &str, path: &Path, e: std::io::Error) -> EfsError {
    EfsError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("file system work does not panic")
}

/// Makes the file system's directory (and the EFS root, root's alone above it).
pub(crate) async fn create(dir: &Path) -> Result<(), EfsError> {
    let dir = dir.to_path_buf();
    blocking(move || {
        if let Some(root) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(root)
                .map_err(|e| failed("create", root, e))?;
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(failed("create", &dir, e)),
        }
    })
    .await
}

/// Removes the directory and everything in it; a missing one is already removed.
pub(crate) async fn remove(dir: &Path) -> Result<(), EfsError> {
    let dir = dir.to_path_buf();
    blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed("remove", &dir, e)),
    })
    .await
}

/// Bytes allocated under `dir` (blocks, as `du`), without following links; unreadable entries
/// count as nothing.
pub(crate) async fn usage(dir: PathBuf) -> u64 {
    blocking(move || {
        let mut total = 0u64;
        let mut pending = vec![dir];
        while let Some(path) = pending.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir()
                && let Ok(entries) = std::fs::read_dir(&path)
            {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
        total
    })
    .await
}
