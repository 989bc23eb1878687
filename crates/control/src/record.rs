//! How control-plane objects are laid out in the store.

use flotilla_store::{KeyValue, Revision, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ControlError;

pub(crate) fn cluster_key(name: &str) -> String {
    format!("ecs/clusters/{name}")
}

pub(crate) const CLUSTERS: &str = "ecs/clusters/";

pub(crate) fn family_key(family: &str) -> String {
    format!("ecs/families/{family}")
}

pub(crate) const FAMILIES: &str = "ecs/families/";

pub(crate) fn task_definition_key(family: &str, revision: u32) -> String {
    // Zero-padded so that key order is revision order.
    format!("ecs/taskdefs/{family}/{revision:010}")
}

pub(crate) fn task_definitions_prefix(family_prefix: &str) -> String {
    format!("ecs/taskdefs/{family_prefix}")
}

pub(crate) const TASKS: &str = "ecs/tasks/";

pub(crate) fn tasks_prefix(cluster: &str) -> String {
    format!("{TASKS}{cluster}/")
}

pub(crate) fn task_key(cluster: &str, task_id: &str) -> String {
    format!("{TASKS}{cluster}/{task_id}")
}

pub(crate) fn token_key(cluster: &str, token: &str) -> String {
    format!("ecs/tokens/{cluster}/{token}")
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, ControlError> {
    serde_json::from_slice(&kv.value).map_err(|source| ControlError::CorruptRecord { key: kv.key.clone(), source })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("control records always serialise")
}

/// Reads and decodes one record with the revision it was read at.
pub(crate) async fn load<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision)>, ControlError> {
    load_as(store, key, Read::Latest).await
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// The latest committed value: for reads whose revision feeds a compare-and-write.
    Latest,
    /// Possibly stale, never older than what this process wrote or saw (`Store::get_stale`):
    /// for ECS's read APIs (eventually consistent on AWS too) and records that never change.
    Stale,
}

/// [`load`] as fresh as `read` asks.
pub(crate) async fn load_as<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    read: Read,
) -> Result<Option<(T, Revision)>, ControlError> {
    let kv = match read {
        Read::Latest => store.get(key).await?,
        Read::Stale => store.get_stale(key).await?,
    };
    kv.map(|kv| Ok((decode(&kv)?, kv.mod_revision))).transpose()
}

/// Every record under `prefix`, as fresh as `read` asks.
pub(crate) async fn list_as(store: &dyn Store, prefix: &str, read: Read) -> Result<Vec<KeyValue>, ControlError> {
    Ok(match read {
        Read::Latest => store.list_prefix(prefix).await?,
        Read::Stale => store.list_prefix_stale(prefix).await?,
    })
}
