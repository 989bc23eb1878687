//! Content digests. Only sha256 is accepted: it is what every registry and
//! `docker save` produce, and refusing the rest keeps "verified" meaning one thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {value:?} is not of the form <algorithm>:<hex>")]
    Malformed { value: String },
    #[error("digest {value:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm { value: String },
}

impl Digest {
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(DigestError::Malformed { value: value.to_owned() });
        };
        if algorithm != "sha256" {
            let known_shape = !algorithm.is_empty()
                && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if known_shape && !hex.is_empty() {
                DigestError::UnsupportedAlgorithm { value: value.to_owned() }
            } else {
                DigestError::Malformed { value: value.to_owned() }
            });
        }
        Self::from_hex(hex).ok_or_else(|| DigestError::Malformed { value: value.to_owned() })
    }

    /// Accepts the bare hex part, as used in `blobs/sha256/<hex>` file names.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest { hex: hex.to_owned() })
    }

    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = DigestHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for log lines and progress bars, like `docker pull` shows.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Incremental sha256 that yields a [`Digest`].
#[derive(Clone, Default)]
pub struct DigestHasher {
    inner: Sha256,
    len: u64,
}

impl DigestHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest { hex: hex::encode(self.inner.finalize()) }
    }
}

/// A reader that hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: DigestHasher::new() }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        let len = self.hasher.len();
        (self.hasher.finish(), len)
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_and_round_trips() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), d);
        assert_eq!(d.short(), "e3b0c44298fc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(Digest::parse("sha512:abcd"), Err(DigestError::UnsupportedAlgorithm { .. })));
        for bad in ["", "sha256", "sha256:", "sha256:ABC", &EMPTY.to_uppercase(), "sha256:e3b0"] {
            assert!(matches!(Digest::parse(bad), Err(DigestError::Malformed { .. })), "{bad}");
        }
    }
}
