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
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}
