//! The stored records and their keys: one record per user, access key, role, customer managed
//! policy and STS session. A user's and a role's inline policies and managed attachments live
//! inside its record (they change with it); a user also lists its key ids, so the two-key limit
//! and DeleteUser's conflicts are decided on one record. A managed policy counts its
//! attachments, written in the same transaction as the attachment, so DeletePolicy's conflict
//! needs no scan.

use std::collections::BTreeMap;

use flotilla_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::IamError;

pub(crate) const PREFIX: &str = "iam/";
pub(crate) const USERS: &str = "iam/users/";
pub(crate) const KEYS: &str = "iam/keys/";
pub(crate) const ROLES: &str = "iam/roles/";
pub(crate) const POLICIES: &str = "iam/policies/";
pub(crate) const SESSIONS: &str = "iam/sessions/";

pub(crate) fn user_key(name: &str) -> String {
    format!("{USERS}{name}")
}

pub(crate) fn access_key_key(id: &str) -> String {
    format!("{KEYS}{id}")
}

pub(crate) fn role_key(name: &str) -> String {
    format!("{ROLES}{name}")
}

pub(crate) fn policy_key(name: &str) -> String {
    format!("{POLICIES}{name}")
}

pub(crate) fn session_key(id: &str) -> String {
    format!("{SESSIONS}{id}")
}

/// An IAM user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub path: String,
    /// `AIDA...`.
    pub id: String,
    pub arn: String,
    pub created: Timestamp,
    /// Inline policies by name: the documents as they were given.
    pub inline: BTreeMap<String, String>,
    /// Attached managed policies' ARNs, in the order they were attached.
    pub attached: Vec<String>,
    /// Its access key ids (at most two).
    pub keys: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }

    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "Active" => Some(KeyStatus::Active),
            "Inactive" => Some(KeyStatus::Inactive),
            _ => None,
        }
    }
}

/// A user's long-term access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// `AKIA...`.
    pub id: String,
    pub secret: String,
    pub user_name: String,
    pub status: KeyStatus,
    pub created: Timestamp,
}

/// An IAM role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub path: String,
    /// `AROA...`.
    pub id: String,
    pub arn: String,
    pub created: Timestamp,
    /// The trust policy as it was given.
    pub trust: String,
    pub description: Option<String>,
    /// Seconds, 3600..=43200.
    pub max_session_duration: u32,
    pub inline: BTreeMap<String, String>,
    pub attached: Vec<String>,
}

/// One version of a managed policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// `v1`, `v2`, ...
    pub id: String,
    pub document: String,
    pub created: Timestamp,
}

/// A managed policy: a customer's (stored) or one of AWS's (built in, see `aws.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub name: String,
    pub path: String,
    /// `ANPA...`.
    pub id: String,
    pub arn: String,
    pub description: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub default_version: String,
    /// Oldest first; at most five.
    pub versions: Vec<PolicyVersion>,
    /// The number of users and roles it is attached to.
    pub attachments: u32,
    /// The next version number to hand out (versions are never reused).
    pub next_version: u32,
}

impl ManagedPolicy {
    pub fn default_document(&self) -> &str {
        self.versions.iter().find(|v| v.id == self.default_version).map(|v| v.document.as_str()).unwrap_or_default()
    }

    pub fn version(&self, id: &str) -> Option<&PolicyVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// Whether AWS owns it (`arn:aws:iam::aws:policy/...`).
    pub fn is_aws_managed(&self) -> bool {
        self.arn.starts_with("arn:aws:iam::aws:policy/")
    }
}

/// Temporary credentials issued for a role (AssumeRole, or a service assuming it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `ASIA...`.
    pub id: String,
    pub secret: String,
    pub token: String,
    /// Seconds since the epoch.
    pub expiration: i64,
    pub role_name: String,
    pub role_arn: String,
    pub role_id: String,
    pub session_name: String,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &flotilla_store::KeyValue) -> Result<T, IamError> {
    serde_json::from_slice(&kv.value).map_err(|source| IamError::Corrupt { key: kv.key.clone(), source })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("IAM records always serialise")
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_from(chars: &[u8], len: usize) -> String {
    (0..len).map(|_| chars[rand::random_range(0..chars.len())] as char).collect()
}

/// An IAM unique id or access key id: `prefix` (`AIDA`, `AROA`, `ANPA`, `AKIA`, `ASIA`) and
/// upper-case letters and digits, as AWS makes them.
pub(crate) fn unique_id(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", random_from(UPPER_ALNUM, len))
}

/// A 40-character secret access key.
pub(crate) fn secret_key() -> String {
    random_from(SECRET_CHARS, 40)
}

/// A session token: opaque, long, as STS's are.
pub(crate) fn session_token() -> String {
    format!("IQoJb3JpZ2luX2Vj{}", random_from(SECRET_CHARS, 340))
}

pub(crate) fn now_secs() -> i64 {
    Timestamp::now().0.div_euclid(1000)
}
