//! What EFS keeps in the store, one record a resource, and the key layout:
//! `efs/file-systems/<fs-id>` (with its mount targets' ids and zones, so "one per zone",
//! "in use" and the count are decided on the file system's own record),
//! `efs/creation-tokens/<token>` (the file system a token made), `efs/mount-targets/<fsmt-id>`,
//! `efs/access-points/<fsap-id>` and `efs/access-point-tokens/<token>`.

use std::net::Ipv4Addr;

use flotilla_types::Tag;
use serde::{Deserialize, Serialize};

pub(crate) const FILE_SYSTEMS: &str = "efs/file-systems/";
pub(crate) const MOUNT_TARGETS: &str = "efs/mount-targets/";
pub(crate) const ACCESS_POINTS: &str = "efs/access-points/";

pub(crate) fn file_system_key(id: &str) -> String {
    format!("{FILE_SYSTEMS}{id}")
}

pub(crate) fn creation_token_key(token: &str) -> String {
    format!("efs/creation-tokens/{token}")
}

pub(crate) fn mount_target_key(id: &str) -> String {
    format!("{MOUNT_TARGETS}{id}")
}

pub(crate) fn access_point_key(id: &str) -> String {
    format!("{ACCESS_POINTS}{id}")
}

pub(crate) fn access_point_token_key(token: &str) -> String {
    format!("efs/access-point-tokens/{token}")
}

/// A file system's life cycle as EFS names it. Flotilla's file systems are ready as soon as
/// their directory exists, so a record is `Available` once written; `creating` is only what
/// CreateFileSystem answers, as EFS does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifeCycleState {
    Creating,
    Available,
    Deleting,
    Deleted,
}

impl LifeCycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            LifeCycleState::Creating => "creating",
            LifeCycleState::Available => "available",
            LifeCycleState::Deleting => "deleting",
            LifeCycleState::Deleted => "deleted",
        }
    }
}

/// A mount target as its file system's record lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountTargetRef {
    pub id: String,
    pub availability_zone: String,
    pub vpc_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSystem {
    pub id: String,
    pub arn: String,
    pub owner_id: String,
    pub creation_token: String,
    /// Seconds since the epoch.
    pub creation_time: i64,
    pub life_cycle_state: LifeCycleState,
    pub performance_mode: String,
    pub throughput_mode: String,
    #[serde(default)]
    pub provisioned_throughput_in_mibps: Option<f64>,
    pub encrypted: bool,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// One Zone file systems name their zone.
    #[serde(default)]
    pub availability_zone_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub mount_targets: Vec<MountTargetRef>,
}

impl FileSystem {
    /// The `Name` tag, which EFS also reports as the file system's name.
    pub fn name(&self) -> Option<&str> {
        self.tags.iter().find(|t| t.key == "Name").map(|t| t.value.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountTarget {
    pub id: String,
    pub file_system_id: String,
    pub owner_id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub ip_address: Ipv4Addr,
    pub security_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PosixUser {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub secondary_gids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// Octal digits as sent, e.g. `"0755"`.
    pub permissions: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPoint {
    pub id: String,
    pub arn: String,
    pub client_token: String,
    pub file_system_id: String,
    pub owner_id: String,
    #[serde(default)]
    pub posix_user: Option<PosixUser>,
    /// Inside the file system, normalised (`/` when none was given).
    pub root_path: String,
    #[serde(default)]
    pub creation_info: Option<CreationInfo>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl AccessPoint {
    pub fn name(&self) -> Option<&str> {
        self.tags.iter().find(|t| t.key == "Name").map(|t| t.value.as_str())
    }
}
