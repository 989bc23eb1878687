//! Each EFS operation Flotilla serves: its model-checked input as a typed request, the
//! `flotilla_efs` call, and its output shape.

use axum::http::StatusCode;
use flotilla_efs::{
    AccessPoint, CreationInfo, Efs, FileSystem, FileSystemQuery, LifeCycleState, MountTarget, NewAccessPoint,
    NewFileSystem, NewMountTarget, PosixUser,
};
use flotilla_types::Tag;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, EfsApiError};
use crate::json::strip_nulls;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTag {
    key: String,
    value: String,
}

fn tags(wire: Vec<WireTag>) -> Vec<Tag> {
    wire.into_iter().map(|t| Tag::new(t.key, t.value)).collect()
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|t| json!({"Key": t.key, "Value": t.value})).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateFileSystem {
    creation_token: String,
    performance_mode: Option<String>,
    throughput_mode: Option<String>,
    provisioned_throughput_in_mibps: Option<f64>,
    #[serde(default)]
    encrypted: bool,
    kms_key_id: Option<String>,
    availability_zone_name: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeFileSystems {
    file_system_id: Option<String>,
    creation_token: Option<String>,
    max_items: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FileSystemId {
    file_system_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateMountTarget {
    file_system_id: String,
    subnet_id: String,
    ip_address: Option<String>,
    #[serde(default)]
    security_groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeMountTargets {
    file_system_id: Option<String>,
    mount_target_id: Option<String>,
    access_point_id: Option<String>,
    max_items: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MountTargetId {
    mount_target_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WirePosixUser {
    uid: u32,
    gid: u32,
    #[serde(default)]
    secondary_gids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireCreationInfo {
    owner_uid: u32,
    owner_gid: u32,
    permissions: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireRootDirectory {
    path: Option<String>,
    creation_info: Option<WireCreationInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateAccessPoint {
    client_token: String,
    file_system_id: String,
    #[serde(default)]
    tags: Vec<WireTag>,
    posix_user: Option<WirePosixUser>,
    root_directory: Option<WireRootDirectory>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeAccessPoints {
    access_point_id: Option<String>,
    file_system_id: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AccessPointId {
    access_point_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagResource {
    resource_id: String,
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UntagResource {
    resource_id: String,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ResourceId {
    resource_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateTags {
    file_system_id: String,
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteTags {
    file_system_id: String,
    tag_keys: Vec<String>,
}

/// Every EFS operation Flotilla serves, each with its typed input.
pub(crate) enum EfsRequest {
    CreateFileSystem(CreateFileSystem),
    DescribeFileSystems(DescribeFileSystems),
    DeleteFileSystem(FileSystemId),
    CreateMountTarget(CreateMountTarget),
    DescribeMountTargets(DescribeMountTargets),
    DeleteMountTarget(MountTargetId),
    DescribeMountTargetSecurityGroups(MountTargetId),
    CreateAccessPoint(CreateAccessPoint),
    DescribeAccessPoints(DescribeAccessPoints),
    DeleteAccessPoint(AccessPointId),
    TagResource(TagResource),
    UntagResource(UntagResource),
    ListTagsForResource(ResourceId),
    CreateTags(CreateTags),
    DeleteTags(DeleteTags),
    DescribeTags(FileSystemId),
}

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, EfsApiError> {
    serde_json::from_value(input).map_err(|e| EfsApiError::bad_request(format!("Cannot read the request: {e}")))
}

impl EfsRequest {
    pub(crate) fn parse(operation: &str, input: Value) -> Result<EfsRequest, EfsApiError> {
        Ok(match operation {
            "CreateFileSystem" => EfsRequest::CreateFileSystem(parse(input)?),
            "DescribeFileSystems" => EfsRequest::DescribeFileSystems(parse(input)?),
            "DeleteFileSystem" => EfsRequest::DeleteFileSystem(parse(input)?),
            "CreateMountTarget" => EfsRequest::CreateMountTarget(parse(input)?),
            "DescribeMountTargets" => EfsRequest::DescribeMountTargets(parse(input)?),
            "DeleteMountTarget" => EfsRequest::DeleteMountTarget(parse(input)?),
            "DescribeMountTargetSecurityGroups" => EfsRequest::DescribeMountTargetSecurityGroups(parse(input)?),
            "CreateAccessPoint" => EfsRequest::CreateAccessPoint(parse(input)?),
            "DescribeAccessPoints" => EfsRequest::DescribeAccessPoints(parse(input)?),
            "DeleteAccessPoint" => EfsRequest::DeleteAccessPoint(parse(input)?),
            "TagResource" => EfsRequest::TagResource(parse(input)?),
            "UntagResource" => EfsRequest::UntagResource(parse(input)?),
            "ListTagsForResource" => EfsRequest::ListTagsForResource(parse(input)?),
            "CreateTags" => EfsRequest::CreateTags(parse(input)?),
            "DeleteTags" => EfsRequest::DeleteTags(parse(input)?),
            "DescribeTags" => EfsRequest::DescribeTags(parse(input)?),
            other => return Err(EfsApiError::bad_request(format!("Flotilla does not serve EFS {other}."))),
        })
    }
}

fn file_system_json(fs: &FileSystem, size: u64, state: LifeCycleState) -> Value {
    let now = crate::server::now_secs();
    strip_nulls(json!({
        "OwnerId": fs.owner_id,
        "CreationToken": fs.creation_token,
        "FileSystemId": fs.id,
        "FileSystemArn": fs.arn,
        "CreationTime": fs.creation_time,
        "LifeCycleState": state.as_str(),
        "Name": fs.name(),
        "NumberOfMountTargets": fs.mount_targets.len(),
        "SizeInBytes": {"Value": size, "Timestamp": now, "ValueInIA": 0, "ValueInStandard": size, "ValueInArchive": 0},
        "PerformanceMode": fs.performance_mode,
        "Encrypted": fs.encrypted,
        "KmsKeyId": fs.kms_key_id,
        "ThroughputMode": fs.throughput_mode,
        "ProvisionedThroughputInMibps": fs.provisioned_throughput_in_mibps,
        "AvailabilityZoneName": fs.availability_zone_name,
        "FileSystemProtection": {"ReplicationOverwriteProtection": "ENABLED"},
        "Tags": tags_json(&fs.tags),
    }))
}

fn mount_target_json(t: &MountTarget, state: &str) -> Value {
    json!({
        "OwnerId": t.owner_id,
        "MountTargetId": t.id,
        "FileSystemId": t.file_system_id,
        "SubnetId": t.subnet_id,
        "LifeCycleState": state,
        "IpAddress": t.ip_address.to_string(),
        "AvailabilityZoneName": t.availability_zone,
        "VpcId": t.vpc_id,
    })
}

fn access_point_json(ap: &AccessPoint) -> Value {
    strip_nulls(json!({
        "ClientToken": ap.client_token,
        "Name": ap.name(),
        "Tags": tags_json(&ap.tags),
        "AccessPointId": ap.id,
        "AccessPointArn": ap.arn,
        "FileSystemId": ap.file_system_id,
        "PosixUser": ap.posix_user.as_ref().map(|u| strip_nulls(json!({
            "Uid": u.uid, "Gid": u.gid,
            "SecondaryGids": (!u.secondary_gids.is_empty()).then_some(&u.secondary_gids),
        }))),
        "RootDirectory": {
            "Path": ap.root_path,
            "CreationInfo": ap.creation_info.as_ref().map(|c| json!({
                "OwnerUid": c.owner_uid, "OwnerGid": c.owner_gid, "Permissions": c.permissions,
            })),
        },
        "OwnerId": ap.owner_id,
        "LifeCycleState": "available",
    }))
}

fn ok(value: Value) -> Result<Answer, EfsApiError> {
    Ok((StatusCode::OK, Some(value)))
}

fn no_content() -> Result<Answer, EfsApiError> {
    Ok((StatusCode::NO_CONTENT, None))
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(efs: &Efs, request: EfsRequest) -> Result<Answer, EfsApiError> {
    match request {
        EfsRequest::CreateFileSystem(req) => {
            let fs = efs
                .create_file_system(NewFileSystem {
                    creation_token: req.creation_token,
                    performance_mode: req.performance_mode,
                    throughput_mode: req.throughput_mode,
                    provisioned_throughput_in_mibps: req.provisioned_throughput_in_mibps,
                    encrypted: req.encrypted,
                    kms_key_id: req.kms_key_id,
                    availability_zone_name: req.availability_zone_name,
                    tags: tags(req.tags),
                })
                .await?;
            // EFS answers while the file system is still being made.
            Ok((StatusCode::CREATED, Some(file_system_json(&fs, 0, LifeCycleState::Creating))))
        }
        EfsRequest::DescribeFileSystems(req) => {
            let listing = efs
                .describe_file_systems(FileSystemQuery {
                    file_system_id: req.file_system_id,
                    creation_token: req.creation_token,
                    max_items: req.max_items,
                    marker: req.marker.clone(),
                })
                .await?;
            let mut out = Vec::new();
            for fs in &listing.items {
                out.push(file_system_json(fs, efs.size_in_bytes(&fs.id).await, fs.life_cycle_state));
            }
            ok(strip_nulls(json!({"FileSystems": out, "Marker": req.marker, "NextMarker": listing.next_marker})))
        }
        EfsRequest::DeleteFileSystem(req) => {
            efs.delete_file_system(&req.file_system_id).await?;
            no_content()
        }
        EfsRequest::CreateMountTarget(req) => {
            let ip_address = req
                .ip_address
                .map(|ip| {
                    ip.parse()
                        .map_err(|_| EfsApiError::bad_request(format!("IpAddress {ip:?} is not an IPv4 address.")))
                })
                .transpose()?;
            let target = efs
                .create_mount_target(NewMountTarget {
                    file_system_id: req.file_system_id,
                    subnet_id: req.subnet_id,
                    ip_address,
                    security_groups: req.security_groups,
                })
                .await?;
            ok(mount_target_json(&target, "creating"))
        }
        EfsRequest::DescribeMountTargets(req) => {
            let listing = efs
                .describe_mount_targets(
                    req.file_system_id.as_deref(),
                    req.mount_target_id.as_deref(),
                    req.access_point_id.as_deref(),
                    req.max_items,
                    req.marker.as_deref(),
                )
                .await?;
            let targets: Vec<Value> = listing.items.iter().map(|t| mount_target_json(t, "available")).collect();
            ok(strip_nulls(json!({"MountTargets": targets, "Marker": req.marker, "NextMarker": listing.next_marker})))
        }
        EfsRequest::DeleteMountTarget(req) => {
            efs.delete_mount_target(&req.mount_target_id).await?;
            no_content()
        }
        EfsRequest::DescribeMountTargetSecurityGroups(req) => {
            ok(json!({"SecurityGroups": efs.mount_target_security_groups(&req.mount_target_id).await?}))
        }
        EfsRequest::CreateAccessPoint(req) => {
            let (root_path, creation_info) = match req.root_directory {
                Some(r) => (
                    r.path,
                    r.creation_info.map(|c| CreationInfo {
                        owner_uid: c.owner_uid,
                        owner_gid: c.owner_gid,
                        permissions: c.permissions,
                    }),
                ),
                None => (None, None),
            };
            let ap = efs
                .create_access_point(NewAccessPoint {
                    client_token: req.client_token,
                    file_system_id: req.file_system_id,
                    tags: tags(req.tags),
                    posix_user: req.posix_user.map(|u| PosixUser {
                        uid: u.uid,
                        gid: u.gid,
                        secondary_gids: u.secondary_gids,
                    }),
                    root_path,
                    creation_info,
                })
                .await?;
            let mut out = access_point_json(&ap);
            out["LifeCycleState"] = json!("creating");
            ok(out)
        }
        EfsRequest::DescribeAccessPoints(req) => {
            let listing = efs
                .describe_access_points(
                    req.access_point_id.as_deref(),
                    req.file_system_id.as_deref(),
                    req.max_results,
                    req.next_token.as_deref(),
                )
                .await?;
            let points: Vec<Value> = listing.items.iter().map(access_point_json).collect();
            ok(strip_nulls(json!({"AccessPoints": points, "NextToken": listing.next_marker})))
        }
        EfsRequest::DeleteAccessPoint(req) => {
            efs.delete_access_point(&req.access_point_id).await?;
            no_content()
        }
        EfsRequest::TagResource(req) => {
            efs.tag_resource(&req.resource_id, tags(req.tags)).await?;
            ok(json!({}))
        }
        EfsRequest::UntagResource(req) => {
            efs.untag_resource(&req.resource_id, &req.tag_keys).await?;
            ok(json!({}))
        }
        EfsRequest::ListTagsForResource(req) => ok(json!({"Tags": tags_json(&efs.list_tags(&req.resource_id).await?)})),
        EfsRequest::CreateTags(req) => {
            efs.tag_resource(&req.file_system_id, tags(req.tags)).await?;
            no_content()
        }
        EfsRequest::DeleteTags(req) => {
            efs.untag_resource(&req.file_system_id, &req.tag_keys).await?;
            no_content()
        }
        EfsRequest::DescribeTags(req) => ok(json!({"Tags": tags_json(&efs.list_tags(&req.file_system_id).await?)})),
    }
}
