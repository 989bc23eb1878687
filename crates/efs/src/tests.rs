//! The EFS records over a real embedded store and a fake VPC side.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use flotilla_elb::{BoxFuture, ElbError, NodeAddress, SubnetInfo, Vpcs};
use flotilla_types::{Identity, Tag};

use super::*;

struct FakeVpcs(AtomicU8);

impl Vpcs for FakeVpcs {
    fn subnet<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SubnetInfo>, ElbError>> {
        Box::pin(async move {
            let zone = match id {
                "subnet-a" => "us-east-1a",
                "subnet-b" => "us-east-1b",
                "subnet-a2" => "us-east-1a",
                _ => return Ok(None),
            };
            Ok(Some(SubnetInfo {
                id: id.into(),
                vpc_id: "vpc-1".into(),
                availability_zone: zone.into(),
                cidr: "172.31.0.0/16".parse().unwrap(),
            }))
        })
    }
    fn security_group_vpc<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>, ElbError>> {
        Box::pin(async move { Ok((id == "sg-1").then(|| "vpc-1".to_owned())) })
    }
    fn default_security_group<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<String, ElbError>> {
        Box::pin(async { Ok("sg-default".to_owned()) })
    }
    fn vpc_exists<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, ElbError>> {
        Box::pin(async { Ok(true) })
    }
    fn ensure_node<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        subnet_id: &'a str,
        _: &'a [String],
        _: bool,
    ) -> BoxFuture<'a, Result<NodeAddress, ElbError>> {
        Box::pin(async move {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(NodeAddress {
                subnet_id: subnet_id.into(),
                private_ip: Ipv4Addr::new(172, 31, 0, 10 + n),
                public_ip: None,
            })
        })
    }
    fn release_nodes<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ElbError>> {
        Box::pin(async { Ok(()) })
    }
}

fn efs(dir: &std::path::Path) -> Efs {
    let store = Arc::new(flotilla_store::EmbeddedStore::open(dir.join("store.redb")).unwrap());
    Efs::new(store, Identity::new("us-east-1", "123456789012"), Arc::new(FakeVpcs(AtomicU8::new(0))), dir.join("efs"))
}

fn token(t: &str) -> NewFileSystem {
    NewFileSystem { creation_token: t.into(), tags: vec![Tag::new("Name", "data")], ..Default::default() }
}

#[tokio::test]
async fn a_token_makes_one_file_system_with_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let efs = efs(dir.path());
    let fs = efs.create_file_system(token("t1")).await.unwrap();
    assert!(fs.id.starts_with("fs-") && fs.id.len() == 20, "{}", fs.id);
    assert_eq!(fs.arn, format!("arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/{}", fs.id));
    assert!(dir.path().join("efs").join(&fs.id).is_dir());
    match efs.create_file_system(token("t1")).await {
        Err(EfsError::FileSystemAlreadyExists { id, .. }) => assert_eq!(id, fs.id),
        other => panic!("{other:?}"),
    }
    let listed = efs.describe_file_systems(FileSystemQuery::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].name(), Some("data"));
}

#[tokio::test]
async fn mount_targets_one_per_zone_and_a_file_system_in_use_stays() {
    let dir = tempfile::tempdir().unwrap();
    let efs = efs(dir.path());
    let fs = efs.create_file_system(token("t")).await.unwrap();
    let new =
        |subnet: &str| NewMountTarget { file_system_id: fs.id.clone(), subnet_id: subnet.into(), ..Default::default() };
    let mt = efs.create_mount_target(new("subnet-a")).await.unwrap();
    assert_eq!(mt.security_groups, ["sg-default"]);
    assert!(matches!(efs.create_mount_target(new("subnet-a2")).await, Err(EfsError::MountTargetConflict(_))));
    assert!(matches!(efs.create_mount_target(new("subnet-x")).await, Err(EfsError::SubnetNotFound { .. })));
    efs.create_mount_target(new("subnet-b")).await.unwrap();
    assert!(matches!(efs.delete_file_system(&fs.id).await, Err(EfsError::FileSystemInUse { .. })));
    for t in efs.describe_mount_targets(Some(&fs.id), None, None, None, None).await.unwrap().items {
        efs.delete_mount_target(&t.id).await.unwrap();
    }
    efs.delete_file_system(&fs.id).await.unwrap();
    assert!(!dir.path().join("efs").join(&fs.id).exists());
    assert!(matches!(efs.file_system_record(&fs.id).await, Err(EfsError::FileSystemNotFound { .. })));
}

#[tokio::test]
async fn access_points_resolve_into_task_volumes() {
    use flotilla_types::task_definition::{EfsAuthorizationConfig, EfsVolumeConfiguration, Volume};
    let dir = tempfile::tempdir().unwrap();
    let efs = efs(dir.path());
    let fs = efs.create_file_system(token("t")).await.unwrap();
    let other = efs.create_file_system(token("u")).await.unwrap();
    let ap = efs
        .create_access_point(NewAccessPoint {
            client_token: "c".into(),
            file_system_id: fs.id.clone(),
            posix_user: Some(PosixUser { uid: 1000, gid: 1000, secondary_gids: vec![] }),
            root_path: Some("/app/".into()),
            creation_info: Some(CreationInfo { owner_uid: 1000, owner_gid: 1000, permissions: "0755".into() }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ap.root_path, "/app");
    let definition = |fs_id: &str, ap: Option<&str>| {
        vec![Volume {
            name: Some("data".into()),
            efs_volume_configuration: Some(EfsVolumeConfiguration {
                file_system_id: fs_id.into(),
                authorization_config: ap.map(|a| EfsAuthorizationConfig { access_point_id: Some(a.into()), iam: None }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    };
    // No mount target yet: Fargate cannot resolve the file system's name.
    let refused = efs.task_volumes(&definition(&fs.id, Some(&ap.id)), "us-east-1a").await.unwrap_err();
    assert!(refused.to_string().contains("failed to invoke EFS utils commands"), "{refused}");
    efs.create_mount_target(NewMountTarget {
        file_system_id: fs.id.clone(),
        subnet_id: "subnet-a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let volumes = efs.task_volumes(&definition(&fs.id, Some(&ap.id)), "us-east-1a").await.unwrap();
    assert_eq!(volumes.efs[0].path, "/app");
    assert_eq!(volumes.efs[0].create_root.as_ref().unwrap().permissions, 0o755);
    assert_eq!(volumes.efs[0].posix_user.as_ref().unwrap().uid, 1000);
    assert!(efs.task_volumes(&definition(&fs.id, None), "us-east-1b").await.is_err());
    assert!(efs.task_volumes(&definition(&other.id, Some(&ap.id)), "us-east-1a").await.is_err());
    assert!(efs.task_volumes(&definition("fs-0123456789abcdef0", None), "us-east-1a").await.is_err());
}

#[tokio::test]
async fn arns_of_this_installation_name_resources_and_others_name_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let efs = efs(dir.path());
    let fs = efs.create_file_system(token("t")).await.unwrap();
    assert_eq!(efs.file_system_record(&fs.arn).await.unwrap().0.id, fs.id);
    let foreign = fs.arn.replace("123456789012", "999999999999");
    assert!(matches!(efs.file_system_record(&foreign).await, Err(EfsError::FileSystemNotFound { .. })));
    efs.tag_resource(&fs.arn, vec![Tag::new("team", "a")]).await.unwrap();
    assert_eq!(efs.list_tags(&fs.id).await.unwrap().len(), 2);
    efs.delete_file_system(&fs.arn).await.unwrap();
    assert!(!dir.path().join("efs").join(&fs.id).exists());
}
