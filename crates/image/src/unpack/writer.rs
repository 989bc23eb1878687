//! Applying one tar entry to the layer directory, and the overlayfs form of
//! OCI whiteouts: `.wh.<name>` becomes a 0/0 character device and
//! `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use super::UnpackError;
use super::path::{PathProblem, clean};

pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const COPY_BUF: usize = 128 * 1024;

pub(super) struct LayerWriter<'a> {
    root: &'a Path,
    lowers: &'a [PathBuf],
    /// Paths (relative) known to be real directories of this layer; saves an
    /// `lstat` per ancestor per entry. Invalidated whenever something is replaced.
    known_dirs: HashSet<PathBuf>,
    /// Directory mtimes are applied last: adding children would bump them.
    dir_times: Vec<(PathBuf, Timespec)>,
    buf: Vec<u8>,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

enum Existing {
    Nothing,
    Dir,
    Whiteout,
}

enum Lower {
    Absent,
    /// Present, deleted or hidden: either way deeper layers no longer matter.
    Settled,
    Symlink,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.to_path_buf(), source }
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>, UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

pub(crate) fn set_opaque(path: &Path) -> Result<(), UnpackError> {
    rustix::fs::lsetxattr(path, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| io_at(path)(e.into()))
}

fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 1];
    matches!(rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut value), Ok(1) if value[0] == b'y')
}

impl<'a> LayerWriter<'a> {
    pub(super) fn new(root: &'a Path, lowers: &'a [PathBuf]) -> Self {
        LayerWriter { root, lowers, known_dirs: HashSet::new(), dir_times: Vec::new(), buf: vec![0; COPY_BUF] }
    }

    pub(super) fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let rel = clean(&raw).map_err(|problem| match problem {
            PathProblem::Absolute => UnpackError::AbsolutePath { entry: raw.clone() },
            PathProblem::Escapes => UnpackError::EscapesRoot { entry: raw.clone() },
        })?;
        if let Some(name) = rel.file_name()
            && name.as_bytes().starts_with(WHITEOUT_PREFIX)
        {
            return self.whiteout(&raw, &rel, name.as_bytes());
        }
        let meta = Meta::read(&mut entry, &raw)?;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::GNUSparse => self.file(&raw, &rel, &mut entry, &meta),
            T::Directory => self.dir(&raw, &rel, &meta),
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| UnpackError::MissingLinkTarget { entry: raw.clone() })?
                    .into_owned();
                self.symlink(&raw, &rel, &target, &meta)
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| UnpackError::MissingLinkTarget { entry: raw.clone() })?
                    .into_owned();
                self.hardlink(&raw, &rel, &target)
            }
            T::Fifo => self.fifo(&raw, &rel, &meta),
            T::Char | T::Block => {
                // The sandbox provides /dev; device nodes from an image would let it
                // reach host devices, so they are never created.
                tracing::debug!(entry = %raw.display(), "skipping device node in layer");
                Ok(())
            }
            other => {
                tracing::debug!(entry = %raw.display(), kind = ?other, "skipping tar entry");
                Ok(())
            }
        }
    }

    pub(super) fn finish(&mut self) -> Result<(), UnpackError> {
        for (rel, mtime) in std::mem::take(&mut self.dir_times) {
            let full = self.root.join(&rel);
            if lstat(&full)?.is_some_and(|m| m.is_dir()) {
                set_times(&full, mtime)?;
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        raw: &Path,
        rel: &Path,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let full = self.prepare_leaf(raw, rel)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&full)
            .map_err(io_at(&full))?;
        loop {
            let n = entry.read(&mut self.buf).map_err(UnpackError::Read)?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(io_at(&full))?;
        }
        apply_meta_fd(&file, &full, meta)
    }

    fn dir(&mut self, raw: &Path, rel: &Path, meta: &Meta) -> Result<(), UnpackError> {
        let full = self.root.join(rel);
        if !rel.as_os_str().is_empty() {
            self.ensure_dir_chain(raw, rel.parent().unwrap_or(Path::new("")))?;
            match self.clear(rel, true)? {
                Existing::Dir => {}
                existing => {
                    DirBuilder::new().mode(0o700).create(&full).map_err(io_at(&full))?;
                    // A whiteout for this name earlier in the layer deleted the lower
                    // directory; the new one must not merge with it.
                    if matches!(existing, Existing::Whiteout) {
                        set_opaque(&full)?;
                    }
                }
            }
        }
        std::os::unix::fs::lchown(&full, Some(meta.uid), Some(meta.gid)).map_err(io_at(&full))?;
        fs::set_permissions(&full, Permissions::from_mode(meta.mode)).map_err(io_at(&full))?;
        for (name, value) in &meta.xattrs {
            set_xattr(&full, name, value)?;
        }
        self.dir_times.push((rel.to_path_buf(), meta.mtime));
        self.known_dirs.insert(rel.to_path_buf());
        Ok(())
    }

    fn symlink(&mut self, raw: &Path, rel: &Path, target: &Path, meta: &Meta) -> Result<(), UnpackError> {
        let full = self.prepare_leaf(raw, rel)?;
        // The target is stored verbatim: it is only data to us, since nothing here
        // ever resolves a path through a symlink.
        std::os::unix::fs::symlink(target, &full).map_err(io_at(&full))?;
        std::os::unix::fs::lchown(&full, Some(meta.uid), Some(meta.gid)).map_err(io_at(&full))?;
        set_times(&full, meta.mtime)
    }

    fn hardlink(&mut self, raw: &Path, rel: &Path, target_raw: &Path) -> Result<(), UnpackError> {
        let escapes = || UnpackError::HardlinkEscapes { entry: raw.to_path_buf(), target: target_raw.to_path_buf() };
        let not_a_file = || UnpackError::HardlinkTarget { entry: raw.to_path_buf(), target: target_raw.to_path_buf() };
        let target = clean(target_raw).map_err(|_| escapes())?;
        if target.as_os_str().is_empty() {
            return Err(not_a_file());
        }
        // Every ancestor of the target must be a real directory of this layer, so the
        // link cannot pick up a file through a symlink.
        let mut cur = PathBuf::new();
        for component in target.parent().unwrap_or(Path::new("")).components() {
            cur.push(component);
            match lstat(&self.root.join(&cur))? {
                Some(m) if m.is_dir() => {}
                Some(m) if m.file_type().is_symlink() => return Err(escapes()),
                _ => return Err(not_a_file()),
            }
        }
        let target_full = self.root.join(&target);
        match lstat(&target_full)? {
            Some(m) if !m.is_dir() && !is_whiteout(&m) => {}
            _ => return Err(not_a_file()),
        }
        if target == rel {
            return Ok(());
        }
        let full = self.prepare_leaf(raw, rel)?;
        // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked as itself.
        fs::hard_link(&target_full, &full).map_err(io_at(&full))
    }

    fn fifo(&mut self, raw: &Path, rel: &Path, meta: &Meta) -> Result<(), UnpackError> {
        let full = self.prepare_leaf(raw, rel)?;
        rustix::fs::mknodat(CWD, &full, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| io_at(&full)(e.into()))?;
        std::os::unix::fs::lchown(&full, Some(meta.uid), Some(meta.gid)).map_err(io_at(&full))?;
        fs::set_permissions(&full, Permissions::from_mode(meta.mode)).map_err(io_at(&full))?;
        set_times(&full, meta.mtime)
    }

    fn whiteout(&mut self, raw: &Path, rel: &Path, name: &[u8]) -> Result<(), UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_MARKER {
            self.ensure_dir_chain(raw, parent)?;
            return set_opaque(&self.root.join(parent));
        }
        let deleted = &name[WHITEOUT_PREFIX.len()..];
        if deleted.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are AUFS bookkeeping (hardlink dirs), not deletions.
            tracing::debug!(entry = %raw.display(), "skipping AUFS metadata entry");
            return Ok(());
        }
        if matches!(deleted, b"" | b"." | b"..") {
            return Err(UnpackError::InvalidWhiteout { entry: raw.to_path_buf() });
        }
        self.ensure_dir_chain(raw, parent)?;
        let full = self.root.join(parent).join(OsStr::from_bytes(deleted));
        match lstat(&full)? {
            // The spec says a whiteout only hides lower layers; a directory this layer
            // also ships replaces the lower one instead of merging with it.
            Some(m) if m.is_dir() => set_opaque(&full),
            // Anything else this layer ships at that name already hides the lower one.
            Some(_) => Ok(()),
            None => {
                rustix::fs::mknodat(CWD, &full, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
                    .map_err(|e| io_at(&full)(e.into()))
            }
        }
    }

    /// Makes `rel`'s parent chain exist and clears `rel` for a new non-directory.
    fn prepare_leaf(&mut self, raw: &Path, rel: &Path) -> Result<PathBuf, UnpackError> {
        let Some(parent) = rel.parent().filter(|_| !rel.as_os_str().is_empty()) else {
            return Err(UnpackError::ReplacesRoot { entry: raw.to_path_buf() });
        };
        self.ensure_dir_chain(raw, parent)?;
        self.clear(rel, false)?;
        Ok(self.root.join(rel))
    }

    /// Ensures `dir` and each of its ancestors is a real directory of this layer.
    fn ensure_dir_chain(&mut self, raw: &Path, dir: &Path) -> Result<(), UnpackError> {
        let mut cur = PathBuf::new();
        for component in dir.components() {
            cur.push(component);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let full = self.root.join(&cur);
            match lstat(&full)? {
                Some(m) if m.is_dir() => {}
                Some(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::ThroughSymlink { entry: raw.to_path_buf(), symlink: cur });
                }
                Some(m) if is_whiteout(&m) => {
                    // Deleted in the lower layers, then given children here: a fresh
                    // directory that hides the lower one.
                    fs::remove_file(&full).map_err(io_at(&full))?;
                    make_implicit_dir(&full)?;
                    set_opaque(&full)?;
                }
                Some(_) => {
                    return Err(UnpackError::NotADirectory { entry: raw.to_path_buf(), parent: cur });
                }
                None => {
                    self.check_lowers(raw, &cur)?;
                    make_implicit_dir(&full)?;
                }
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// A directory created only because an entry needs it would shadow a lower
    /// layer's symlink of the same name in the overlay, silently changing where the
    /// entry ends up compared to Docker; refuse instead.
    fn check_lowers(&self, raw: &Path, rel: &Path) -> Result<(), UnpackError> {
        for lower in self.lowers {
            match lower_lookup(lower, rel) {
                Lower::Absent => continue,
                Lower::Settled => return Ok(()),
                Lower::Symlink => {
                    return Err(UnpackError::ThroughLowerSymlink {
                        entry: raw.to_path_buf(),
                        symlink: rel.to_path_buf(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes whatever is at `rel` unless it is a directory and `keep_dir` is set.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<Existing, UnpackError> {
        let full = self.root.join(rel);
        let Some(meta) = lstat(&full)? else {
            return Ok(Existing::Nothing);
        };
        if meta.is_dir() {
            if keep_dir {
                return Ok(Existing::Dir);
            }
            fs::remove_dir_all(&full).map_err(io_at(&full))?;
        } else {
            fs::remove_file(&full).map_err(io_at(&full))?;
        }
        self.known_dirs.retain(|d| !d.starts_with(rel));
        Ok(if is_whiteout(&meta) { Existing::Whiteout } else { Existing::Nothing })
    }
}

/// Looks `rel` up in one lower layer without following any symlink on the way.
fn lower_lookup(lower: &Path, rel: &Path) -> Lower {
    let mut path = lower.to_path_buf();
    let count = rel.components().count();
    for (i, component) in rel.components().enumerate() {
        path.push(component);
        let last = i + 1 == count;
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Lower::Absent;
        };
        if meta.file_type().is_symlink() {
            // A symlink above `rel` means the upper layer already replaced it.
            return if last { Lower::Symlink } else { Lower::Absent };
        }
        if is_whiteout(&meta) {
            return Lower::Settled;
        }
        if !meta.is_dir() {
            return if last { Lower::Settled } else { Lower::Absent };
        }
        if last || is_opaque(&path) {
            return Lower::Settled;
        }
    }
    Lower::Settled
}

fn make_implicit_dir(full: &Path) -> Result<(), UnpackError> {
    DirBuilder::new().mode(0o755).create(full).map_err(io_at(full))?;
    // Independent of the process umask.
    fs::set_permissions(full, Permissions::from_mode(0o755)).map_err(io_at(full))
}

fn apply_meta_fd(file: &File, full: &Path, meta: &Meta) -> Result<(), UnpackError> {
    std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid)).map_err(io_at(full))?;
    // After chown, which clears set-id bits.
    file.set_permissions(Permissions::from_mode(meta.mode)).map_err(io_at(full))?;
    for (name, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(file, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::NOTSUP => {
                tracing::warn!(path = %full.display(), xattr = %name, "filesystem does not support xattr")
            }
            Err(e) => return Err(io_at(full)(e.into())),
        }
    }
    let times = Timestamps { last_access: meta.mtime, last_modification: meta.mtime };
    rustix::fs::futimens(file, &times).map_err(|e| io_at(full)(e.into()))
}

fn set_xattr(full: &Path, name: &str, value: &[u8]) -> Result<(), UnpackError> {
    match rustix::fs::lsetxattr(full, name, value, XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOTSUP => {
            tracing::warn!(path = %full.display(), xattr = %name, "filesystem does not support xattr");
            Ok(())
        }
        Err(e) => Err(io_at(full)(e.into())),
    }
}

fn set_times(full: &Path, mtime: Timespec) -> Result<(), UnpackError> {
    let times = Timestamps { last_access: mtime, last_modification: mtime };
    rustix::fs::utimensat(CWD, full, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_at(full)(e.into()))
}

/// Which extended attributes a layer may set. `trusted.*` is refused: a layer could
/// otherwise forge overlayfs metadata (`trusted.overlay.redirect`, `.opaque`, ...).
fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.")
        || name.starts_with("security.")
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default"
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let owner = |id: io::Result<u64>| -> Result<u32, UnpackError> {
            let id = id.map_err(UnpackError::Read)?;
            u32::try_from(id).map_err(|_| UnpackError::InvalidOwner { entry: raw.to_path_buf() })
        };
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let uid = owner(header.uid())?;
        let gid = owner(header.gid())?;
        let seconds = header.mtime().map_err(UnpackError::Read)?;
        let mut mtime = Timespec { tv_sec: i64::try_from(seconds).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for extension in extensions {
                let extension = extension.map_err(UnpackError::Read)?;
                let Ok(key) = extension.key() else { continue };
                if key == "mtime" {
                    if let Some(precise) = extension.value().ok().and_then(parse_pax_time) {
                        mtime = precise;
                    }
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if xattr_allowed(name) {
                        xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
                    } else {
                        tracing::debug!(entry = %raw.display(), xattr = name, "dropping xattr");
                    }
                }
            }
        }
        Ok(Meta { mode, uid, gid, mtime, xattrs })
    }
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(value: &str) -> Option<Timespec> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    if tv_sec < 0 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some(Timespec { tv_sec, tv_nsec: digits.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("-1.0").is_none());
        assert!(parse_pax_time("x").is_none());
    }

    #[test]
    fn xattr_allowlist() {
        assert!(xattr_allowed("security.capability"));
        assert!(xattr_allowed("user.foo"));
        assert!(!xattr_allowed("trusted.overlay.opaque"));
        assert!(!xattr_allowed("trusted.overlay.redirect"));
    }
}
