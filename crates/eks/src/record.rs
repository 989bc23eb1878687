//! Where EKS keeps its records in the store: `eks/clusters/<name>` and
//! `eks/profiles/<cluster>/<name>` (names hold no `/`, so a cluster's prefix is exactly its
//! profiles), plus `eks/tokens/<cluster>/<token>` for CreateCluster's idempotency tokens.

use flotilla_store::KeyValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::EksError;

pub const CLUSTERS: &str = "eks/clusters/";
pub const PROFILES: &str = "eks/profiles/";
/// Everything under EKS: what the reconciler watches.
pub const ROOT: &str = "eks/";

pub fn cluster_key(name: &str) -> String {
    format!("{CLUSTERS}{name}")
}

pub fn profiles_prefix(cluster: &str) -> String {
    format!("{PROFILES}{cluster}/")
}

pub fn profile_key(cluster: &str, name: &str) -> String {
    format!("{PROFILES}{cluster}/{name}")
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, EksError> {
    serde_json::from_slice(&kv.value).map_err(|source| EksError::Corrupt { key: kv.key.clone(), source })
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("EKS records always serialise")
}

/// A cluster as stored: the shared [`crate::ClusterRecord`] plus what only the EKS API reads
/// (endpoint access, the idempotency token). Flattened, so the stored JSON is also a
/// `ClusterRecord` for every other reader.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCluster {
    #[serde(flatten)]
    pub cluster: crate::ClusterRecord,
    #[serde(default = "yes")]
    pub endpoint_public_access: bool,
    #[serde(default)]
    pub endpoint_private_access: bool,
    #[serde(default)]
    pub public_access_cidrs: Vec<String>,
    #[serde(default)]
    pub client_request_token: Option<String>,
}

fn yes() -> bool {
    true
}
