//! AWS KMS, the subset that keeps secrets at rest: symmetric keys (`SYMMETRIC_DEFAULT`,
//! `ENCRYPT_DECRYPT`) with descriptions, tags and an enabled state; aliases; Encrypt and Decrypt
//! with an encryption context; and the AWS managed keys services use by default
//! (`alias/aws/ssm`, `alias/aws/secretsmanager`), made on first use as AWS makes them.
//!
//! Store layout: `kms/keys/<key-id>` (metadata and the key's material sealed under the master
//! key), `kms/aliases/<alias/name>` (its target), `kms/master` (a check value sealed under the
//! master key, so that a server given another key file refuses to start instead of failing
//! every decryption).
//!
//! A ciphertext blob names its key, as AWS's does, so Decrypt needs no key id: see `blob.rs`.
//!
//! **Architecture Invariant:** key material exists in plaintext only in memory, never in the
//! store, a log line or a `Debug` output; nothing here knows HTTP or the AWS wire (`crates/api`
//! maps these types and errors to KMS's shapes and codes).

mod blob;
mod keys;
mod master;

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_store::{Compare, Op, Store, StoreError, Txn, TxnOutcome};
use flotilla_types::Identity;
use serde::{Deserialize, Serialize};

pub use blob::Context;
pub use keys::{Alias, KeyManager, KeyMetadata, NewKey};
pub use master::{KEY_LEN, MasterKey};

/// The AWS managed keys' aliases Flotilla makes on first use, with their descriptions.
pub const AWS_MANAGED: &[(&str, &str)] = &[
    ("alias/aws/ssm", "Default key that protects my SSM parameters when no other key is defined"),
    ("alias/aws/secretsmanager", "Default key that protects my Secrets Manager data when no other key is defined"),
];

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// Bad input (`ValidationException`).
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidAliasName(String),
    /// The blob is not one this KMS made, was altered, or the encryption context differs.
    #[error("{0}")]
    InvalidCiphertext(String),
    /// Decrypt named a key that is not the one the blob was encrypted under.
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    Disabled(String),
    /// A request the key's state or kind does not allow (`KMSInvalidStateException`).
    #[error("{0}")]
    InvalidState(String),
    /// What Flotilla does not do (asymmetric or HMAC keys, imported material).
    #[error("{0}")]
    Unsupported(String),
    #[error("the KMS key file {} {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "the store's KMS keys are sealed under master key {stored}, but the key file given holds master key {given}; \
         start every server of this store with the same key file (--kms-key-file)"
    )]
    WrongMasterKey { stored: String, given: String },
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, reason: String },
}

/// Keys and aliases over one store, their material sealed under one master key.
pub struct Kms {
    store: Arc<dyn Store>,
    identity: Identity,
    master: MasterKey,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("identity", &self.identity).field("master", &self.master).finish()
    }
}

const MASTER: &str = "kms/master";
/// What the master check seals: nothing, bound to this.
const MASTER_CHECK: &[u8] = b"flotilla-kms-master-check";

#[derive(Serialize, Deserialize)]
struct MasterRecord {
    fingerprint: String,
    /// Base64 of nothing sealed under the master key with [`MASTER_CHECK`] as its AAD.
    check: String,
}

impl Kms {
    /// KMS over `store` with `master`. The first server of a store records a check value
    /// sealed under its master key; every later start must open it, so a server given another
    /// key file is refused here ([`KmsError::WrongMasterKey`]) rather than failing later.
    pub async fn open(store: Arc<dyn Store>, identity: Identity, master: MasterKey) -> Result<Arc<Kms>, KmsError> {
        let proposal =
            MasterRecord { fingerprint: master.fingerprint().to_owned(), check: b64(&master.seal(MASTER_CHECK, b"")) };
        let txn = Txn::new().when(Compare::absent(MASTER)).then(Op::put(MASTER, encode(&proposal)));
        if let TxnOutcome::Conflict = store.txn(txn).await? {
            let kv = store.get(MASTER).await?.ok_or_else(|| corrupt(MASTER, "vanished while being read"))?;
            let stored: MasterRecord = decode(&kv)?;
            let opens = unb64(&stored.check).and_then(|sealed| master.open(MASTER_CHECK, &sealed)).is_some();
            if !opens {
                return Err(KmsError::WrongMasterKey {
                    stored: stored.fingerprint,
                    given: master.fingerprint().to_owned(),
                });
            }
        }
        Ok(Arc::new(Kms { store, identity, master }))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn corrupt(key: &str, reason: impl Into<String>) -> KmsError {
    KmsError::Corrupt { key: key.to_owned(), reason: reason.into() }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &flotilla_store::KeyValue) -> Result<T, KmsError> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv.key, e.to_string()))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("KMS records always serialise")
}
