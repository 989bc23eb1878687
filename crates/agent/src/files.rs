//! Writes a task's file volumes (an EKS pod's configMaps, secrets, downward API) into their
//! directories on the host before any of the task's containers starts.
//!
//! Each path stays inside its volume: only relative, `/`-separated paths of plain names are
//! written (no `.`, `..`, empty part or absolute path), and no part of the way may be a
//! symlink or anything but a directory. The volume directory is fresh (the sandbox just made
//! it) and no container of the task runs yet, so nothing can race the checks. Files and the
//! directories made for them belong to root; files get the mode they were given. Containers
//! mount these volumes read-only, so the checks hold while a refresh ([`refresh`]) rewrites
//! them, each file replaced whole (written beside, renamed over).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flotilla_host::{FileVolume, VolumeFile};

/// Why a volume's files could not be written; the task's stopped reason.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(
        "ResourceInitializationError: volume {volume}: file path {path:?} is not a relative path inside the volume"
    )]
    BadPath { volume: String, path: String },
    #[error("ResourceInitializationError: volume {volume}: {path} is not a directory")]
    NotADirectory { volume: String, path: PathBuf },
    #[error("ResourceInitializationError: volume {volume}: cannot write {path}: {source}")]
    Io { volume: String, path: PathBuf, source: std::io::Error },
}

/// The parts of `path` when it names a file inside a volume.
fn parts(path: &str) -> Option<Vec<&str>> {
    if path.is_empty() || path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = path.split('/').collect();
    parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..").then_some(parts)
}

/// Writes `volume`'s files into `dir` (the volume's directory, which must exist).
pub fn write_volume(dir: &Path, volume: &FileVolume) -> Result<(), FilesError> {
    let name = &volume.name;
    let io = |path: &Path, source| FilesError::Io { volume: name.clone(), path: path.to_owned(), source };
    real_dir(dir, name)?;
    for file in &volume.files {
        let Some(parts) = parts(&file.path) else {
            return Err(FilesError::BadPath { volume: name.clone(), path: file.path.clone() });
        };
        let (leaf, parents) = parts.split_last().expect("at least one part");
        let mut at = dir.to_path_buf();
        for p in parents {
            at.push(p);
            match std::fs::DirBuilder::new().mode(0o755).create(&at) {
                Ok(()) => std::os::unix::fs::chown(&at, Some(0), Some(0)).map_err(|e| io(&at, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => real_dir(&at, name)?,
                Err(e) => return Err(io(&at, e)),
            }
        }
        at.push(leaf);
        write_file(&at, file).map_err(|e| io(&at, e))?;
    }
    Ok(())
}

/// Writes every volume of `volumes` into its directory, as `dir_of` names it.
pub fn write_all(volumes: &[FileVolume], dir_of: impl Fn(&str) -> Option<PathBuf>) -> Result<(), FilesError> {
    for v in volumes {
        let Some(dir) = dir_of(&v.name) else { continue };
        write_volume(&dir, v)?;
    }
    Ok(())
}

/// `path` is a directory, and not through a symlink.
fn real_dir(path: &Path, volume: &str) -> Result<(), FilesError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(FilesError::NotADirectory { volume: volume.to_owned(), path: path.to_owned() }),
        Err(source) => Err(FilesError::Io { volume: volume.to_owned(), path: path.to_owned(), source }),
    }
}

/// Writes the file beside its place and renames it there: a reader sees the old content or
/// the new, never half of it (a refresh of a running task), and a symlink at the place is
/// replaced, not followed.
fn write_file(path: &Path, file: &VolumeFile) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "a directory is in the way"));
    }
    let leaf = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{leaf}.flotilla-new"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // O_EXCL and O_NOFOLLOW: a fresh file, never through a symlink.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    out.write_all(&file.data)?;
    std::os::unix::fs::fchown(&out, Some(0), Some(0))?;
    // Set after writing, past the umask.
    out.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))?;
    drop(out);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the files `before` had and `now` has not (keys deleted from a ConfigMap). Only
/// plain files at valid paths; their directories stay.
fn remove_stale(dir: &Path, before: &FileVolume, now: &FileVolume) {
    for old in &before.files {
        if now.files.iter().any(|f| f.path == old.path) || parts(&old.path).is_none() {
            continue;
        }
        let path = dir.join(&old.path);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// How often a running task's file volumes are read again (a kubelet refreshes configMap and
/// secret volumes about every minute).
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps a running task's file volumes in step with their sources until its sandbox is gone:
/// every [`REFRESH`], asks `task_volumes` again and rewrites the volumes that changed.
pub async fn refresh(
    agent: std::sync::Arc<crate::Agent>,
    task_arn: String,
    task_id: String,
    mut current: Vec<FileVolume>,
) {
    loop {
        tokio::time::sleep(REFRESH).await;
        if agent.sandbox.state(&task_id).await.is_err() {
            return;
        }
        let Ok(asked) = agent.host.task_volumes(&task_arn).await else { continue };
        for now in &asked.files {
            let Some(before) = current.iter().find(|v| v.name == now.name) else { continue };
            if before == now {
                continue;
            }
            let Some(dir) = agent.sandbox.volume_dir(&task_id, &now.name) else { continue };
            match write_volume(&dir, now) {
                Ok(()) => remove_stale(&dir, before, now),
                Err(e) => tracing::warn!(task = %task_id, error = %e, "cannot refresh a file volume"),
            }
        }
        current = asked.files;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> VolumeFile {
        VolumeFile { path: path.into(), data: data.as_bytes().to_vec(), mode }
    }

    fn volume(files: Vec<VolumeFile>) -> FileVolume {
        FileVolume { name: "cfg".into(), files }
    }

    #[test]
    fn files_land_inside_the_volume_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let v = volume(vec![file("a.conf", "one", 0o644), file("sub/dir/b", "two", 0o400)]);
        write_volume(dir.path(), &v).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("a.conf")).unwrap(), "one");
        let b = dir.path().join("sub/dir/b");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "two");
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o7777, 0o400);
        assert_eq!(std::fs::metadata(dir.path().join("a.conf")).unwrap().permissions().mode() & 0o7777, 0o644);
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(std::fs::metadata(&b).unwrap().uid(), 0);
        }
    }

    #[test]
    fn a_refresh_replaces_files_and_drops_the_ones_gone() {
        let dir = tempfile::tempdir().unwrap();
        let before = volume(vec![file("a", "one", 0o644), file("d/b", "two", 0o644)]);
        write_volume(dir.path(), &before).unwrap();
        let now = volume(vec![file("a", "three", 0o600)]);
        write_volume(dir.path(), &now).unwrap();
        remove_stale(dir.path(), &before, &now);
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "three");
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().permissions().mode() & 0o7777, 0o600);
        assert!(!dir.path().join("d/b").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn paths_outside_the_volume_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("vol");
        std::fs::create_dir(&inner).unwrap();
        for bad in ["../escape", "/etc/passwd", "a/../../b", "", "a//b", "./a", "a/."] {
            let err = write_volume(&inner, &volume(vec![file(bad, "x", 0o644)])).unwrap_err();
            assert!(matches!(err, FilesError::BadPath { .. }), "{bad}: {err}");
        }
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn symlinks_on_the_way_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (inner, outside) = (dir.path().join("vol"), dir.path().join("outside"));
        std::fs::create_dir(&inner).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, inner.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), inner.join("leaf")).unwrap();
        let err = write_volume(&inner, &volume(vec![file("link/x", "x", 0o644)])).unwrap_err();
        assert!(matches!(err, FilesError::NotADirectory { .. }), "{err}");
        // A symlink at the file's place is replaced by the file, not followed.
        write_volume(&inner, &volume(vec![file("leaf", "x", 0o644)])).unwrap();
        assert!(std::fs::symlink_metadata(inner.join("leaf")).unwrap().is_file());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside");
        // The volume's own directory must not be a symlink either.
        std::os::unix::fs::symlink(&outside, dir.path().join("vol2")).unwrap();
        let err = write_volume(&dir.path().join("vol2"), &volume(vec![file("a", "x", 0o644)])).unwrap_err();
        assert!(matches!(err, FilesError::NotADirectory { .. }), "{err}");
    }
}
