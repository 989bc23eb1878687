//! Safe layer unpacking: one layer tarball into one directory that will become an
//! overlayfs lower layer.
//!
//! **Architecture Invariant:** no write ever lands outside the layer root. Entry
//! names are cleaned lexically (absolute names and `..` that climb out are errors),
//! every ancestor of an entry is checked with `lstat` to be a real directory we made
//! or unpacked (never a symlink), and the final component is removed and re-created
//! with `O_NOFOLLOW`/`O_EXCL` semantics, so a symlink planted by an earlier entry is
//! never followed. We are the only writer in a fresh directory, so check-then-act
//! is not racy.

mod path;
mod writer;

pub(crate) use path::clean;

use std::cell::Cell;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::{Digest, HashingReader};
use crate::manifest::Compression;
use writer::LayerWriter;

/// Caps on what one layer may expand to, so a small compressed blob cannot fill the
/// disk or the inode table ("layer bomb").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Maximum size of the decompressed tar stream (headers included).
    pub max_bytes: u64,
    /// Maximum number of tar entries (files, directories, links, whiteouts...).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { max_bytes: 8 << 30, max_entries: 1_000_000 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub limits: UnpackLimits,
    /// The layer's `diff_id` from the image config; checked against the
    /// decompressed stream so a config cannot silently describe other content.
    pub expected_diff_id: Option<Digest>,
    /// The already-unpacked layers below this one, nearest first. Used only to refuse
    /// entries that reach through a lower layer's symlink (see [`UnpackError::ThroughSymlink`]).
    pub lowers: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Size of the decompressed tar stream.
    pub bytes: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer archive failed")]
    Read(#[source] io::Error),
    #[error("I/O error at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entry {entry:?} has an absolute path")]
    AbsolutePath { entry: PathBuf },
    #[error("entry {entry:?} escapes the layer root")]
    EscapesRoot { entry: PathBuf },
    #[error("entry {entry:?} would replace the layer root with a non-directory")]
    ReplacesRoot { entry: PathBuf },
    #[error("entry {entry:?} goes through the symlink {symlink:?}")]
    ThroughSymlink { entry: PathBuf, symlink: PathBuf },
    #[error("entry {entry:?} goes through the symlink {symlink:?} of a lower layer")]
    ThroughLowerSymlink { entry: PathBuf, symlink: PathBuf },
    #[error("entry {entry:?} needs {parent:?} to be a directory")]
    NotADirectory { entry: PathBuf, parent: PathBuf },
    #[error("hard link {entry:?} points outside the layer: {target:?}")]
    HardlinkEscapes { entry: PathBuf, target: PathBuf },
    #[error("hard link {entry:?} points to {target:?}, which is not a file in this layer")]
    HardlinkTarget { entry: PathBuf, target: PathBuf },
    #[error("symlink {entry:?} has no target")]
    MissingLinkTarget { entry: PathBuf },
    #[error("whiteout {entry:?} names no valid file")]
    InvalidWhiteout { entry: PathBuf },
    #[error("entry {entry:?} has an owner id that does not fit 32 bits")]
    InvalidOwner { entry: PathBuf },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("layer expands to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("layer content is {actual}, but the image config says {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
}

/// Unpacks a (possibly compressed) layer tarball into `dest`, an existing empty
/// directory, converting OCI whiteouts to overlayfs form. Blocking: call it from
/// `spawn_blocking`.
pub fn unpack_layer<R: Read>(blob: R, dest: &Path, options: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let (compression, decompressed) = decompress(blob).map_err(UnpackError::Read)?;
    let exceeded = Rc::new(Cell::new(false));
    let limit = options.limits.max_bytes;
    let budget = Budget { inner: decompressed, remaining: limit, exceeded: exceeded.clone() };
    let read_err = |e: io::Error| {
        if exceeded.get() { UnpackError::TooLarge { limit } } else { UnpackError::Read(e) }
    };

    let mut archive = tar::Archive::new(HashingReader::new(budget));
    let mut writer = LayerWriter::new(dest, &options.lowers);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        entries += 1;
        if entries > options.limits.max_entries {
            return Err(UnpackError::TooManyEntries { limit: options.limits.max_entries });
        }
        if entry.size() > limit {
            return Err(UnpackError::TooLarge { limit });
        }
        writer.apply(entry).map_err(|e| match e {
            UnpackError::Read(e) => read_err(e),
            e => e,
        })?;
    }
    writer.finish()?;

    // The diff_id covers the whole stream, including the end-of-archive blocks the
    // tar reader stops before.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    let (diff_id, bytes) = rest.finish();
    if let Some(expected) = &options.expected_diff_id
        && *expected != diff_id
    {
        return Err(UnpackError::DiffIdMismatch { expected: expected.clone(), actual: diff_id });
    }
    Ok(UnpackStats { entries, bytes, diff_id, compression })
}

/// Wraps `blob` in the decompressor its magic number calls for.
pub(crate) fn decompress<'a, R: Read + 'a>(blob: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let (compression, blob) = sniff(blob)?;
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
    };
    Ok((compression, reader))
}

/// Peeks at the magic number without losing the bytes read.
fn sniff<R: Read>(mut blob: R) -> io::Result<(Compression, impl Read)> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match blob.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::sniff(&head[..filled]);
    Ok((compression, io::Cursor::new(head[..filled].to_vec()).chain(blob)))
}

/// Fails reads once more than `remaining` bytes have come through.
struct Budget<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.remaining.checked_sub(n as u64) {
            Some(left) => {
                self.remaining = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(io::Error::other("layer decompression budget exceeded"))
            }
        }
    }
}
