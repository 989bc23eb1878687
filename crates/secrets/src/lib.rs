//! SSM Parameter Store and Secrets Manager, as much of them as Fargate tasks use: parameters
//! (`String`, `StringList`, `SecureString`, versioned, hierarchical names) and secrets (string
//! or binary values with versions and staging labels), durable in the store, plus
//! [`Secrets::resolve`], which turns a container's `secrets[].valueFrom` into its value the way
//! the Fargate agent does.
//!
//! Store layout: `ssm/params/<name>` (one record a parameter, its history inside) and
//! `secretsmanager/secrets/<name>`.
//!
//! Values are encrypted at rest with KMS ([`flotilla_kms`]): a `SecureString` under its
//! `KeyId` (default `alias/aws/ssm`) with the context `{"PARAMETER_ARN": arn}`, every secret
//! version under the secret's `KmsKeyId` (default `alias/aws/secretsmanager`) with
//! `{"SecretARN": arn, "SecretVersionId": id}`, as AWS binds them. The store holds base64
//! ciphertext blobs only; a `SecureString` read without decryption shows that ciphertext, as on
//! AWS. Values stored in plaintext before encryption existed still read (the read path knows
//! both forms), and [`Secrets::seal_plaintext`], run at start, rewrites them encrypted.
//!
//! **Architecture Invariant:** nothing here knows HTTP or the AWS wire; `crates/api` maps these
//! types and errors to the two services' shapes and error codes.

mod manager;
mod parameters;
mod resolve;

use std::sync::Arc;

use flotilla_kms::{Kms, KmsError};
use flotilla_store::{Store, StoreError};
use flotilla_types::Identity;

pub use manager::{ListedSecret, NewSecret, Secret, SecretValue, SecretVersion, StoredValue};
pub use parameters::{NewParameter, Parameter, ParameterType};
pub use resolve::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Bad input (SSM `ValidationException`, Secrets Manager `InvalidParameterException`).
    #[error("{0}")]
    Invalid(String),
    #[error("Parameter {name} not found.")]
    ParameterNotFound { name: String },
    #[error("The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")]
    ParameterAlreadyExists { name: String },
    #[error("Secrets Manager can't find the specified secret.")]
    SecretNotFound { id: String },
    #[error("The operation failed because the secret {name} already exists.")]
    SecretAlreadyExists { name: String },
    /// A request the secret's state does not allow (`InvalidRequestException`).
    #[error("{0}")]
    InvalidRequest(String),
    /// KMS could not encrypt a value under the key asked for (a missing or disabled key).
    #[error("{0}")]
    Encryption(KmsError),
    /// KMS could not decrypt a stored value.
    #[error("{0}")]
    Decryption(KmsError),
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
}

/// Both services over one store, their values encrypted with `kms`.
pub struct Secrets {
    store: Arc<dyn Store>,
    /// Builds the parameters' and secrets' ARNs (the KMS's own identity).
    identity: Identity,
    kms: Arc<Kms>,
}

impl Secrets {
    pub fn new(store: Arc<dyn Store>, kms: Arc<Kms>) -> Arc<Secrets> {
        Arc::new(Secrets { store, identity: kms.identity().clone(), kms })
    }

    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    pub fn region(&self) -> &str {
        &self.identity.region
    }

    /// Encrypts every value stored in plaintext before values were encrypted (each record
    /// rewritten only if unchanged meanwhile, else read again); returns how many versions it
    /// sealed. Run at start; idempotent, so every server of a shared store may run it.
    pub async fn seal_plaintext(&self) -> Result<usize, SecretsError> {
        Ok(self.seal_plaintext_parameters().await? + self.seal_plaintext_secrets().await?)
    }
}

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(kv: &flotilla_store::KeyValue) -> Result<T, SecretsError> {
    serde_json::from_slice(&kv.value).map_err(|source| SecretsError::Corrupt { key: kv.key.clone(), source })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("secret records always serialise")
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// An encryption context of these pairs.
pub(crate) fn context(pairs: &[(&str, &str)]) -> flotilla_kms::Context {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub async fn secrets() -> (Arc<Secrets>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
        let identity = Identity::new("us-east-1", "123456789012");
        let kms = Kms::open(store.clone(), identity, flotilla_kms::MasterKey::generate()).await.unwrap();
        (Secrets::new(store, kms), dir)
    }
}
