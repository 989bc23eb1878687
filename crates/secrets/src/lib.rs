//! SSM Parameter Store and Secrets Manager, as much of them as Fargate tasks use: parameters
//! (`String`, `StringList`, `SecureString`, versioned, hierarchical names) and secrets (string
//! or binary values with versions and staging labels), durable in the store, plus
//! [`Secrets::resolve`], which turns a container's `secrets[].valueFrom` into its value the way
//! the Fargate agent does.
//!
//! Store layout: `ssm/params/<name>` (one record a parameter, its history inside) and
//! `secretsmanager/secrets/<name>`.
//!
//! Values are kept as they are: the store lives in the data directory, which only root can
//! read. There is no KMS; a `SecureString` read without `WithDecryption` returns an opaque token
//! instead of the value, as AWS returns ciphertext.
//!
//! **Architecture Invariant:** nothing here knows HTTP or the AWS wire; `crates/api` maps these
//! types and errors to the two services' shapes and error codes.

mod manager;
mod parameters;
mod resolve;

use std::sync::Arc;

use flotilla_store::{Store, StoreError};
use flotilla_types::Identity;

pub use manager::{ListedSecret, NewSecret, Secret, SecretValue, SecretVersion};
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
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
}

/// Both services over one store.
pub struct Secrets {
    store: Arc<dyn Store>,
    /// Builds the parameters' and secrets' ARNs.
    identity: Identity,
}

impl Secrets {
    pub fn new(store: Arc<dyn Store>, region: impl Into<String>, account: impl Into<String>) -> Arc<Secrets> {
        Arc::new(Secrets { store, identity: Identity::new(region, account) })
    }

    pub fn region(&self) -> &str {
        &self.identity.region
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

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn secrets() -> (Arc<Secrets>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        (Secrets::new(Arc::new(store), "us-east-1", "123456789012"), dir)
    }
}
