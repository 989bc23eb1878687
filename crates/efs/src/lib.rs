//! Amazon Elastic File System, the subset tasks need: file systems (CreationToken idempotency,
//! tags, performance and throughput modes and encryption recorded), mount targets (one per
//! availability zone, an address from the subnet's leases through the control plane's
//! [`Vpcs`]), access points (POSIX user, root directory with creation info) and tags, one
//! record each in the store (`record.rs`), written by compare-and-write.
//!
//! A file system's data is a directory, `<EFS root>/<fs-id>`, made when the file system is
//! created and removed when it is deleted; its size is measured there. The EFS root may be a
//! mount shared by every host of a cluster. What a task's `efsVolumeConfiguration` mounts is
//! resolved here too (`volumes.rs`), into the host API's [`flotilla_host::TaskVolumes`].
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api/src/efs/` maps
//! [`EfsError`] to EFS's codes. The only files touched are the file systems' directories.

mod access_points;
mod dirs;
mod mount_targets;
mod record;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_store::{Compare, KeyValue, Op, Store, StoreError, Txn, TxnOutcome};
use flotilla_types::page::{self, Order, PageError};
use flotilla_types::{Identity, Tag};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use access_points::NewAccessPoint;
pub use flotilla_elb::Vpcs;
pub use mount_targets::NewMountTarget;
pub use record::{AccessPoint, CreationInfo, FileSystem, LifeCycleState, MountTarget, MountTargetRef, PosixUser};

#[derive(Debug, thiserror::Error)]
pub enum EfsError {
    /// Input EFS refuses (`BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    #[error("File system '{id}' does not exist.")]
    FileSystemNotFound { id: String },
    #[error("File system '{id}' already exists with creation token '{token}'")]
    FileSystemAlreadyExists { id: String, token: String },
    #[error("File system '{id}' has mount targets; delete them first.")]
    FileSystemInUse { id: String },
    #[error("Mount target '{id}' does not exist.")]
    MountTargetNotFound { id: String },
    #[error("{0}")]
    MountTargetConflict(String),
    #[error("Access point '{id}' does not exist.")]
    AccessPointNotFound { id: String },
    #[error("Access point '{id}' already exists with client token '{token}'")]
    AccessPointAlreadyExists { id: String, token: String },
    #[error("The subnet ID '{id}' does not exist")]
    SubnetNotFound { id: String },
    #[error("The security group '{id}' does not exist")]
    SecurityGroupNotFound { id: String },
    #[error("File system '{id}' is not available (it is {state}).")]
    IncorrectFileSystemLifeCycleState { id: String, state: &'static str },
    /// Other requests kept changing the record; the request may be retried.
    #[error("'{id}' is being changed by other requests; retry.")]
    Contended { id: String },
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
    /// The VPC side or the file system's directory failed; the request may be retried.
    #[error("{0}")]
    Internal(String),
}

/// Writes retried on conflict before giving up (another writer kept winning).
const CONFLICT_RETRIES: usize = 16;
/// Describe operations' page size: `MaxItems` when given (EFS's default is 100).
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Tags per resource, as EFS allows.
const MAX_TAGS: usize = 50;

pub struct Efs {
    store: Arc<dyn Store>,
    identity: Identity,
    vpcs: Arc<dyn Vpcs>,
    root: PathBuf,
}

/// A CreateFileSystem request, as recorded.
#[derive(Clone, Debug, Default)]
pub struct NewFileSystem {
    pub creation_token: String,
    pub performance_mode: Option<String>,
    pub throughput_mode: Option<String>,
    pub provisioned_throughput_in_mibps: Option<f64>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub availability_zone_name: Option<String>,
    pub tags: Vec<Tag>,
}

/// Which file systems DescribeFileSystems lists.
#[derive(Clone, Debug, Default)]
pub struct FileSystemQuery {
    pub file_system_id: Option<String>,
    pub creation_token: Option<String>,
    pub max_items: Option<i64>,
    pub marker: Option<String>,
}

/// One page of a Describe operation; `next_marker` when more follow.
#[derive(Clone, Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, EfsError> {
    serde_json::from_slice(&kv.value).map_err(|source| EfsError::Corrupt { key: kv.key.clone(), source })
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("EFS records always serialise")
}

/// `<prefix>-` and 17 hex digits, as EFS's ids.
pub(crate) fn new_id(prefix: &str) -> String {
    let n: u128 = rand::random();
    format!("{prefix}-{:017x}", n & ((1u128 << 68) - 1))
}

/// One page of `items` keyed by id, after `marker`.
pub(crate) fn paged<T>(
    items: Vec<(String, T)>,
    max_items: Option<i64>,
    marker: Option<&str>,
) -> Result<Listing<T>, EfsError> {
    let refused = |e| match e {
        PageError::Size { got, max } => {
            EfsError::BadRequest(format!("MaxItems must be between 1 and {max}, got {got}."))
        }
        PageError::Token => EfsError::BadRequest("The Marker is not one this server issued.".into()),
    };
    let size = page::page_size(max_items, DEFAULT_PAGE, MAX_PAGE).map_err(refused)?;
    let page = page::paginate(items, Order::Ascending, size, marker).map_err(refused)?;
    Ok(Listing { items: page.items, next_marker: page.next_token })
}

/// Whether a tagging request's resource (an id or an ARN) is an access point.
fn is_access_point(resource: &str) -> bool {
    resource.starts_with("fsap-") || resource.contains(":access-point/")
}

pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), EfsError> {
    if tags.len() > MAX_TAGS {
        return Err(EfsError::BadRequest(format!("A resource can have at most {MAX_TAGS} tags.")));
    }
    for tag in tags {
        if tag.key.is_empty() || tag.key.chars().count() > 128 || tag.value.chars().count() > 256 {
            return Err(EfsError::BadRequest(format!(
                "Tag {:?}: keys must be 1 to 128 characters and values at most 256.",
                tag.key
            )));
        }
        if tag.key.starts_with("aws:") {
            return Err(EfsError::BadRequest(format!("Tag {:?}: the aws: prefix is reserved.", tag.key)));
        }
    }
    Ok(())
}

impl Efs {
    /// `root`: where the file systems' directories live (made if missing).
    pub fn new(store: Arc<dyn Store>, identity: Identity, vpcs: Arc<dyn Vpcs>, root: PathBuf) -> Efs {
        Efs { store, identity, vpcs, root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, EfsError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    pub(crate) async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, EfsError> {
        self.store.list_prefix(prefix).await?.iter().map(decode).collect()
    }

    /// The id in `id_or_arn` (EFS takes either) when it names a resource of this installation:
    /// an ARN of another account or region names nothing here.
    pub(crate) fn local_id<'a>(&self, id_or_arn: &'a str, kind: &str) -> Option<&'a str> {
        match id_or_arn.strip_prefix("arn:") {
            None => Some(id_or_arn),
            Some(_) => {
                let mut parts = id_or_arn.splitn(6, ':');
                let (_, _, service, region, account, resource) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                let id = resource.strip_prefix(kind)?.strip_prefix('/')?;
                (service == "elasticfilesystem" && region == self.identity.region && account == self.identity.account)
                    .then_some(id)
            }
        }
    }

    pub(crate) async fn file_system_record(&self, id_or_arn: &str) -> Result<(FileSystem, u64), EfsError> {
        let not_found = || EfsError::FileSystemNotFound { id: id_or_arn.to_owned() };
        let id = self.local_id(id_or_arn, "file-system").ok_or_else(not_found)?;
        self.read(&record::file_system_key(id)).await?.ok_or_else(not_found)
    }

    /// CreateFileSystem: a token already used answers `FileSystemAlreadyExists` with the id it
    /// made, so a retried request never makes a second file system.
    pub async fn create_file_system(&self, new: NewFileSystem) -> Result<FileSystem, EfsError> {
        check_tags(&new.tags)?;
        if new.creation_token.is_empty() || new.creation_token.len() > 64 {
            return Err(EfsError::BadRequest("CreationToken must be 1 to 64 characters.".into()));
        }
        let throughput_mode = new.throughput_mode.unwrap_or_else(|| "bursting".into());
        match (throughput_mode.as_str(), new.provisioned_throughput_in_mibps) {
            ("provisioned", None) => {
                return Err(EfsError::BadRequest(
                    "ProvisionedThroughputInMibps is required when ThroughputMode is provisioned.".into(),
                ));
            }
            (mode, Some(_)) if mode != "provisioned" => {
                return Err(EfsError::BadRequest(
                    "ProvisionedThroughputInMibps may only be given when ThroughputMode is provisioned.".into(),
                ));
            }
            _ => {}
        }
        if let Some(existing) = self.existing_by_token(&new.creation_token).await? {
            return Err(EfsError::FileSystemAlreadyExists { id: existing, token: new.creation_token });
        }
        let id = new_id("fs");
        let fs = FileSystem {
            arn: self.identity.efs_file_system(&id),
            id: id.clone(),
            owner_id: self.identity.account.clone(),
            creation_token: new.creation_token.clone(),
            creation_time: now(),
            life_cycle_state: LifeCycleState::Available,
            performance_mode: new.performance_mode.unwrap_or_else(|| "generalPurpose".into()),
            throughput_mode,
            provisioned_throughput_in_mibps: new.provisioned_throughput_in_mibps,
            encrypted: new.encrypted,
            kms_key_id: new.encrypted.then(|| {
                new.kms_key_id.unwrap_or_else(|| {
                    format!(
                        "arn:aws:kms:{}:{}:alias/aws/elasticfilesystem",
                        self.identity.region, self.identity.account
                    )
                })
            }),
            availability_zone_name: new.availability_zone_name,
            tags: new.tags,
            mount_targets: Vec::new(),
        };
        let dir = self.dir_of(&id);
        dirs::create(&dir).await?;
        let token_key = record::creation_token_key(&fs.creation_token);
        let txn = Txn::new()
            .when(Compare::absent(token_key.clone()))
            .then(Op::put(token_key, id.clone().into_bytes()))
            .then(Op::put(record::file_system_key(&id), encode(&fs)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(fs),
            TxnOutcome::Conflict => {
                dirs::remove(&dir).await?;
                let existing = self.existing_by_token(&fs.creation_token).await?.unwrap_or_default();
                Err(EfsError::FileSystemAlreadyExists { id: existing, token: fs.creation_token })
            }
        }
    }

    async fn existing_by_token(&self, token: &str) -> Result<Option<String>, EfsError> {
        Ok(self
            .store
            .get(&record::creation_token_key(token))
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    pub(crate) fn dir_of(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// DescribeFileSystems: one by id or creation token, or a page of all of them.
    pub async fn describe_file_systems(&self, q: FileSystemQuery) -> Result<Listing<FileSystem>, EfsError> {
        let mut all: Vec<FileSystem> = match &q.file_system_id {
            Some(id) => vec![self.file_system_record(id).await?.0],
            None => self.list(record::FILE_SYSTEMS).await?,
        };
        if let Some(token) = &q.creation_token {
            all.retain(|fs| &fs.creation_token == token);
        }
        paged(all.into_iter().map(|fs| (fs.id.clone(), fs)).collect(), q.max_items, q.marker.as_deref())
    }

    /// Bytes the file system's directory uses now (blocks allocated, as `du`).
    pub async fn size_in_bytes(&self, id: &str) -> u64 {
        dirs::usage(self.dir_of(id)).await
    }

    /// DeleteFileSystem: refused while it has mount targets; its access points and its data
    /// go with it.
    pub async fn delete_file_system(&self, id: &str) -> Result<(), EfsError> {
        for _ in 0..CONFLICT_RETRIES {
            let (fs, revision) = self.file_system_record(id).await?;
            if !fs.mount_targets.is_empty() {
                return Err(EfsError::FileSystemInUse { id: fs.id });
            }
            let mut txn = Txn::new()
                .when(Compare::revision(record::file_system_key(&fs.id), revision))
                .then(Op::delete(record::file_system_key(&fs.id)))
                .then(Op::delete(record::creation_token_key(&fs.creation_token)));
            for ap in self.list::<AccessPoint>(record::ACCESS_POINTS).await? {
                if ap.file_system_id == fs.id {
                    txn = txn
                        .then(Op::delete(record::access_point_key(&ap.id)))
                        .then(Op::delete(record::access_point_token_key(&ap.client_token)));
                }
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return dirs::remove(&self.dir_of(&fs.id)).await;
            }
        }
        Err(EfsError::Contended { id: id.to_owned() })
    }

    /// TagResource: a file system (`fs-`) or an access point (`fsap-`).
    pub async fn tag_resource(&self, resource_id: &str, tags: Vec<Tag>) -> Result<(), EfsError> {
        self.change_tags(resource_id, |current| {
            flotilla_types::tag::merge(current, tags.clone());
            check_tags(current)
        })
        .await
    }

    pub async fn untag_resource(&self, resource_id: &str, keys: &[String]) -> Result<(), EfsError> {
        self.change_tags(resource_id, |current| {
            current.retain(|t| !keys.contains(&t.key));
            Ok(())
        })
        .await
    }

    pub async fn list_tags(&self, resource_id: &str) -> Result<Vec<Tag>, EfsError> {
        if is_access_point(resource_id) {
            Ok(self.access_point_record(resource_id).await?.0.tags)
        } else {
            Ok(self.file_system_record(resource_id).await?.0.tags)
        }
    }

    async fn change_tags(
        &self,
        resource_id: &str,
        change: impl Fn(&mut Vec<Tag>) -> Result<(), EfsError>,
    ) -> Result<(), EfsError> {
        for _ in 0..CONFLICT_RETRIES {
            let (key, value, revision) = if is_access_point(resource_id) {
                let (mut ap, revision) = self.access_point_record(resource_id).await?;
                change(&mut ap.tags)?;
                (record::access_point_key(&ap.id), encode(&ap), revision)
            } else {
                let (mut fs, revision) = self.file_system_record(resource_id).await?;
                change(&mut fs.tags)?;
                (record::file_system_key(&fs.id), encode(&fs), revision)
            };
            let txn = Txn::new().when(Compare::revision(key.clone(), revision)).then(Op::put(key, value));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(EfsError::Contended { id: resource_id.to_owned() })
    }
}

#[cfg(test)]
mod tests;
