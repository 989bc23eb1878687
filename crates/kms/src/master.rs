//! The master key: 32 random bytes in a file of their own (mode 0600), kept apart from the
//! store and the data directory. Every key's material is stored sealed under it, so the store
//! alone (a copied data dir, an etcd snapshot) reveals no key and so no secret.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::KmsError;

/// Length of the master key and of every key's material.
pub const KEY_LEN: usize = 32;

/// A key file's trouble, said so the operator can fix it.
fn key_file_error(path: &Path, reason: impl Into<String>) -> KmsError {
    KmsError::KeyFile { path: path.to_owned(), reason: reason.into() }
}

pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    bytes
}

/// An AES-256-GCM key for `bytes`, which are [`KEY_LEN`] long.
pub(crate) fn aead_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256-GCM keys are 32 bytes"))
}

/// `nonce || ciphertext || tag` of `plaintext`, bound to `aad`; a fresh random nonce each time.
pub(crate) fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = random::<NONCE_LEN>();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .expect("AES-GCM seals any message this short");
    out.extend_from_slice(&body);
    out
}

/// The plaintext [`seal`] made, or `None` if `sealed` was not made by `key` with `aad`.
pub(crate) fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    Some(plain.to_vec())
}

/// The key every stored key's material is sealed under. Its `Debug` shows the fingerprint only.
pub struct MasterKey {
    key: LessSafeKey,
    fingerprint: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint)
    }
}

impl MasterKey {
    /// The key of these [`KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, KmsError> {
        if bytes.len() != KEY_LEN {
            return Err(KmsError::Validation(format!("a master key is {KEY_LEN} bytes, not {}", bytes.len())));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &[b"flotilla-kms-master:".as_slice(), bytes].concat());
        let fingerprint = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(MasterKey { key: aead_key(bytes), fingerprint })
    }

    /// A fresh random key (tests; [`MasterKey::load_or_create`] makes the real one).
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(&random::<KEY_LEN>()).expect("the length is right")
    }

    /// A short, one-way name of this key (the first 8 bytes of a SHA-256 of it, in hex), for
    /// error messages that must say which key is which without showing either.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.key, aad, plaintext)
    }

    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.key, aad, sealed)
    }

    /// The key in `path`, or, when there is no such file, a new random one written there (mode
    /// 0600; a missing parent directory is made with mode 0700). Returns whether it was made.
    /// Several processes racing to make it all end up with the one that got there first.
    /// Refused, each with the reason: a file others may read or write, one not exactly
    /// [`KEY_LEN`] bytes long, a directory.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), KmsError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok((MasterKey::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MasterKey::create(path),
            Err(e) => Err(key_file_error(path, format!("cannot be examined: {e}"))),
        }
    }

    /// The key in `path`, which must exist.
    pub fn load(path: &Path) -> Result<MasterKey, KmsError> {
        let meta = fs::metadata(path).map_err(|e| key_file_error(path, format!("cannot be read: {e}")))?;
        if !meta.is_file() {
            return Err(key_file_error(path, "is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_file_error(
                path,
                format!(
                    "is open to other users (mode {mode:04o}); make it the owner's alone: chmod 600 {}",
                    path.display()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(KEY_LEN);
        fs::File::open(path)
            .and_then(|f| f.take(KEY_LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| key_file_error(path, format!("cannot be read: {e}")))?;
        if bytes.len() != KEY_LEN {
            return Err(key_file_error(
                path,
                format!(
                    "must hold exactly {KEY_LEN} bytes (it holds {}{}); it is not a Flotilla KMS key file",
                    if bytes.len() > KEY_LEN { "more" } else { "only " },
                    if bytes.len() > KEY_LEN { String::new() } else { bytes.len().to_string() }
                ),
            ));
        }
        MasterKey::from_bytes(&bytes)
    }

    fn create(path: &Path) -> Result<(MasterKey, bool), KmsError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            fs::create_dir_all(parent)
                .and_then(|()| fs::set_permissions(parent, fs::Permissions::from_mode(0o700)))
                .map_err(|e| key_file_error(path, format!("its directory cannot be made: {e}")))?;
        }
        // Written whole to a private name, then linked into place: the key file is never seen
        // half written, and of several racing processes the first link wins.
        let bytes = random::<KEY_LEN>();
        let temporary = temporary_name(path);
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        let written = write().and_then(|()| fs::hard_link(&temporary, path));
        let _ = fs::remove_file(&temporary);
        match written {
            Ok(()) => Ok((MasterKey::from_bytes(&bytes)?, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((MasterKey::load(path)?, false)),
            Err(e) => Err(key_file_error(path, format!("cannot be written: {e}"))),
        }
    }
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{:016x}.tmp", std::process::id(), u64::from_le_bytes(random::<8>())));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_with_its_key_and_aad() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let sealed = a.seal(b"ctx", b"hello");
        assert_eq!(a.open(b"ctx", &sealed).as_deref(), Some(b"hello".as_slice()));
        assert!(a.open(b"other", &sealed).is_none());
        assert!(b.open(b"ctx", &sealed).is_none());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!format!("{a:?}").is_empty() && format!("{a:?}").contains(a.fingerprint()));
    }
}
