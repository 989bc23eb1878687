//! Cloud Map's records for the VPC resolvers of a host on another machine than the store.
//!
//! A host's resolvers answer for the namespaces of the VPCs it serves from a replica of Cloud
//! Map's records (namespaces, services, instances), which the control plane sends whole, now
//! and again after every change. The records are opaque here: whoever runs the resolvers
//! (the `flotilla agent` binary, not the agent crate) writes them into the replica under the
//! keys they carry, and the resolvers read them as they read the store on a server.

use serde::{Deserialize, Serialize};

use crate::Events;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryRecord {
    pub key: String,
    /// The record as the control plane stores it (JSON text).
    pub value: String,
}

/// Every record the resolvers read, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySnapshot {
    pub records: Vec<DiscoveryRecord>,
}

/// A stream of whole snapshots: one now, then one after every change.
pub type DiscoveryWatch = Events<DiscoverySnapshot>;
