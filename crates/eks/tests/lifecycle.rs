//! Clusters and Fargate profiles through their statuses: EKS's rules over a real embedded store,
//! and the reconciler driving a test double of the Kubernetes side (`RecordingPlanes`: it
//! answers `ensure` with a fixed endpoint and CA, or the failure it is told to give, and records
//! what it was asked). The real `ControlPlanes` is flotilla-k8s's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_eks::{
    ClusterRecord, ClusterStatus, ControlPlanes, Eks, EksError, KubeAccess, KubeAuth, NewCluster, NewProfile,
    PlaneFuture, ProfileStatus, Selector,
};
use flotilla_elb::{BoxFuture, ElbError, NodeAddress, SubnetInfo, Vpcs};
use flotilla_store::{EmbeddedStore, Store};
use flotilla_types::{Identity, Tag};

const ENDPOINT: &str = "https://127.0.0.1:16443";
const CA: &str = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n";

/// Subnets `subnet-a` (zone a), `subnet-b` (zone b), `subnet-a2` (zone a) in `vpc-1`, and
/// `subnet-x` (zone c) in `vpc-2`; security group `sg-1` in `vpc-1`.
struct FakeVpcs;

impl Vpcs for FakeVpcs {
    fn subnet<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SubnetInfo>, ElbError>> {
        Box::pin(async move {
            let (vpc, zone, cidr) = match id {
                "subnet-a" => ("vpc-1", "us-east-1a", "172.31.0.0/20"),
                "subnet-b" => ("vpc-1", "us-east-1b", "172.31.16.0/20"),
                "subnet-a2" => ("vpc-1", "us-east-1a", "172.31.32.0/20"),
                "subnet-x" => ("vpc-2", "us-east-1c", "10.0.0.0/24"),
                _ => return Ok(None),
            };
            Ok(Some(SubnetInfo {
                id: id.into(),
                vpc_id: vpc.into(),
                availability_zone: zone.into(),
                cidr: cidr.parse().unwrap(),
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
            Ok(NodeAddress { subnet_id: subnet_id.into(), private_ip: Ipv4Addr::new(172, 31, 0, 10), public_ip: None })
        })
    }
    fn release_nodes<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ElbError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The test double of the Kubernetes side.
#[derive(Default)]
struct RecordingPlanes {
    /// `ensure` fails with this when set.
    fail_with: Mutex<Option<String>>,
    ensured: Mutex<Vec<String>>,
    removed: Mutex<Vec<String>>,
}

impl ControlPlanes for RecordingPlanes {
    fn ensure<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(String, String), String>> {
        Box::pin(async move {
            self.ensured.lock().unwrap().push(cluster.name.clone());
            match self.fail_with.lock().unwrap().clone() {
                Some(reason) => Err(reason),
                None => Ok((ENDPOINT.to_owned(), CA.to_owned())),
            }
        })
    }
    fn remove<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.removed.lock().unwrap().push(cluster.name.clone());
            Ok(())
        })
    }
    fn access<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async move {
            Ok(KubeAccess {
                endpoint: cluster.endpoint.clone().unwrap_or_default(),
                ca_pem: CA.into(),
                auth: KubeAuth::Token { token: "admin".into() },
            })
        })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
        Setup { _dir: dir, store }
    }

    fn eks(&self, planes: Option<Arc<RecordingPlanes>>) -> Arc<Eks> {
        let eks =
            Eks::new(self.store.clone(), Identity::new("us-east-1", "123456789012")).with_vpcs(Arc::new(FakeVpcs));
        Arc::new(match planes {
            Some(p) => eks.with_planes(p),
            None => eks,
        })
    }
}

/// A running reconciler; dropping it stops it at its next wait.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the reconciler and waits until it has (no pass running after this).
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn reconcile(eks: &Arc<Eks>) -> Running {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    Running { stop, task: tokio::spawn(eks.clone().run(shutdown)) }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(eks: &Eks, name: &str) -> Option<ClusterStatus> {
    eks.cluster(name).await.unwrap().map(|c| c.status)
}

async fn profile_status(eks: &Eks, cluster: &str, name: &str) -> Option<ProfileStatus> {
    eks.profiles(cluster).await.unwrap().into_iter().find(|p| p.name == name).map(|p| p.status)
}

fn new_cluster(name: &str) -> NewCluster {
    NewCluster {
        name: name.into(),
        role_arn: "arn:aws:iam::123456789012:role/eksClusterRole".into(),
        subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
        creator_arn: "arn:aws:iam::123456789012:user/alice".into(),
        client_request_token: Some("token-1".into()),
        ..Default::default()
    }
}

fn new_profile(cluster: &str, name: &str) -> NewProfile {
    NewProfile {
        cluster_name: cluster.into(),
        name: name.into(),
        pod_execution_role_arn: "arn:aws:iam::123456789012:role/AmazonEKSFargatePodExecutionRole".into(),
        selectors: vec![Selector { namespace: "default".into(), labels: BTreeMap::new() }],
        ..Default::default()
    }
}

fn invalid(result: Result<impl std::fmt::Debug, EksError>, field: &str) {
    match result {
        Err(EksError::InvalidParameter(message)) => assert!(message.contains(field), "{message} should name {field}"),
        other => panic!("expected InvalidParameter naming {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cluster_becomes_active_with_its_planes_endpoint_and_ca() {
    let setup = Setup::new();
    let planes = Arc::new(RecordingPlanes::default());
    let eks = setup.eks(Some(planes.clone()));
    let created = eks.create_cluster(new_cluster("my-fargate-cluster")).await.unwrap();
    assert_eq!(created.status, ClusterStatus::Creating);
    assert_eq!(created.arn, "arn:aws:eks:us-east-1:123456789012:cluster/my-fargate-cluster");
    assert_eq!(created.vpc_id, "vpc-1");
    assert_eq!(created.version, "1.20");
    assert_eq!(created.service_ipv4_cidr, "10.100.0.0/16");
    assert_eq!(created.creator_arn, "arn:aws:iam::123456789012:user/alice");

    let _stop = reconcile(&eks);
    wait_until("the cluster to be ACTIVE", || async {
        status(&eks, "my-fargate-cluster").await == Some(ClusterStatus::Active)
    })
    .await;
    let active = eks.cluster("my-fargate-cluster").await.unwrap().unwrap();
    assert_eq!(active.endpoint.as_deref(), Some(ENDPOINT));
    assert_eq!(active.ca_pem.as_deref(), Some(CA));
    assert_eq!(eks.access("my-fargate-cluster").await.unwrap().endpoint, ENDPOINT);

    // A retried request (same token) answers with the same cluster; another is refused.
    let again = eks.create_cluster(new_cluster("my-fargate-cluster")).await.unwrap();
    assert_eq!(again.arn, created.arn);
    let other = NewCluster { client_request_token: Some("token-2".into()), ..new_cluster("my-fargate-cluster") };
    assert!(matches!(eks.create_cluster(other).await, Err(EksError::InUse(m)) if m.contains("already exists")));
}

#[tokio::test]
async fn a_failing_plane_fails_the_cluster_with_its_reason() {
    let setup = Setup::new();
    let planes = Arc::new(RecordingPlanes::default());
    *planes.fail_with.lock().unwrap() = Some("kube-apiserver exited: port 6443 taken".into());
    let eks = setup.eks(Some(planes));
    eks.create_cluster(new_cluster("c")).await.unwrap();
    let _stop = reconcile(&eks);
    wait_until("the cluster to be FAILED", || async { status(&eks, "c").await == Some(ClusterStatus::Failed) }).await;
    let failed = eks.cluster("c").await.unwrap().unwrap();
    assert_eq!(failed.failure.as_deref(), Some("kube-apiserver exited: port 6443 taken"));
    assert!(matches!(eks.access("c").await, Err(EksError::InvalidRequest(_))));
}

#[tokio::test]
async fn without_planes_a_cluster_fails_saying_why() {
    let setup = Setup::new();
    let eks = setup.eks(None);
    eks.create_cluster(new_cluster("c")).await.unwrap();
    let _stop = reconcile(&eks);
    wait_until("the cluster to be FAILED", || async { status(&eks, "c").await == Some(ClusterStatus::Failed) }).await;
    let reason = eks.cluster("c").await.unwrap().unwrap().failure.unwrap();
    assert_eq!(reason, flotilla_eks::NO_PLANES);
    // A FAILED cluster can be deleted; with no plane to remove, its record simply goes.
    eks.delete_cluster("c").await.unwrap();
    wait_until("the cluster to go", || async { status(&eks, "c").await.is_none() }).await;
}

#[tokio::test]
async fn create_cluster_refusals_name_their_field() {
    let setup = Setup::new();
    let eks = setup.eks(None);
    invalid(eks.create_cluster(NewCluster { name: "-bad".into(), ..new_cluster("x") }).await, "name");
    invalid(eks.create_cluster(NewCluster { role_arn: "eksClusterRole".into(), ..new_cluster("x") }).await, "roleArn");
    invalid(eks.create_cluster(NewCluster { version: Some("1.29".into()), ..new_cluster("x") }).await, "1.20");
    invalid(eks.create_cluster(NewCluster { subnet_ids: vec![], ..new_cluster("x") }).await, "subnetIds");
    invalid(
        eks.create_cluster(NewCluster {
            subnet_ids: vec!["subnet-a".into(), "subnet-nope".into()],
            ..new_cluster("x")
        })
        .await,
        "subnet-nope",
    );
    invalid(
        eks.create_cluster(NewCluster { subnet_ids: vec!["subnet-a".into(), "subnet-a2".into()], ..new_cluster("x") })
            .await,
        "at least two different AZs",
    );
    invalid(
        eks.create_cluster(NewCluster { subnet_ids: vec!["subnet-a".into(), "subnet-x".into()], ..new_cluster("x") })
            .await,
        "same VPC",
    );
    invalid(
        eks.create_cluster(NewCluster { security_group_ids: vec!["sg-nope".into()], ..new_cluster("x") }).await,
        "securityGroupIds",
    );
    for cidr in ["8.8.0.0/16", "10.0.0.0/8", "172.31.0.0/16", "10.100.0.0"] {
        invalid(
            eks.create_cluster(NewCluster { service_ipv4_cidr: Some(cidr.into()), ..new_cluster("x") }).await,
            "serviceIpv4Cidr",
        );
    }
    invalid(eks.create_cluster(NewCluster { tags: vec![Tag::new("aws:x", "y")], ..new_cluster("x") }).await, "tags");
    assert!(eks.clusters().await.unwrap().is_empty(), "nothing refused was recorded");
    let ok = NewCluster {
        security_group_ids: vec!["sg-1".into()],
        service_ipv4_cidr: Some("172.20.0.0/16".into()),
        version: Some("1.20".into()),
        ..new_cluster("x")
    };
    assert_eq!(eks.create_cluster(ok).await.unwrap().service_ipv4_cidr, "172.20.0.0/16");
}

#[tokio::test]
async fn profiles_follow_eks_rules_and_their_cluster() {
    let setup = Setup::new();
    let eks = setup.eks(Some(Arc::new(RecordingPlanes::default())));
    eks.create_cluster(new_cluster("c")).await.unwrap();
    // Not ACTIVE yet: no profile.
    assert!(matches!(eks.create_profile(new_profile("c", "fp-default")).await, Err(EksError::InvalidRequest(_))));
    assert!(matches!(eks.create_profile(new_profile("nope", "fp")).await, Err(EksError::ClusterNotFound(_))));

    // Made ACTIVE by the reconciler, which then stops, so that CREATING profiles stay CREATING.
    let running = reconcile(&eks);
    wait_until("ACTIVE", || async { status(&eks, "c").await == Some(ClusterStatus::Active) }).await;
    running.stop().await;
    let selector = |ns: &str, n: usize| Selector {
        namespace: ns.into(),
        labels: (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect(),
    };
    invalid(eks.create_profile(NewProfile { selectors: vec![], ..new_profile("c", "p") }).await, "selectors");
    invalid(
        eks.create_profile(NewProfile { selectors: vec![selector("a", 0); 6], ..new_profile("c", "p") }).await,
        "selectors",
    );
    invalid(
        eks.create_profile(NewProfile { selectors: vec![selector("", 0)], ..new_profile("c", "p") }).await,
        "namespace",
    );
    invalid(
        eks.create_profile(NewProfile { selectors: vec![selector("a", 6)], ..new_profile("c", "p") }).await,
        "labels",
    );
    invalid(
        eks.create_profile(NewProfile { pod_execution_role_arn: "pods".into(), ..new_profile("c", "p") }).await,
        "podExecutionRoleArn",
    );
    invalid(
        eks.create_profile(NewProfile { subnets: vec!["subnet-x".into()], ..new_profile("c", "p") }).await,
        "subnet-x",
    );
    invalid(
        eks.create_profile(NewProfile { subnets: vec!["subnet-nope".into()], ..new_profile("c", "p") }).await,
        "subnets",
    );

    let created = eks
        .create_profile(NewProfile { selectors: vec![selector("default", 5); 5], ..new_profile("c", "fp-default") })
        .await
        .unwrap();
    assert_eq!(created.status, ProfileStatus::Creating);
    assert_eq!(created.subnets, ["subnet-a", "subnet-b"], "the cluster's subnets when none are given");
    assert!(created.arn.starts_with("arn:aws:eks:us-east-1:123456789012:fargateprofile/c/fp-default/"));
    // One profile CREATING at a time; a taken name is in use too.
    assert!(
        matches!(eks.create_profile(new_profile("c", "fp-2")).await, Err(EksError::InUse(m)) if m.contains("CREATING"))
    );
    assert!(
        matches!(eks.create_profile(new_profile("c", "fp-default")).await, Err(EksError::InUse(m)) if m.contains("already exists"))
    );
    // The cluster cannot go while it has profiles.
    assert!(matches!(eks.delete_cluster("c").await, Err(EksError::InUse(m)) if m.contains("fp-default")));

    let running = reconcile(&eks);
    wait_until("the profile ACTIVE", || async {
        profile_status(&eks, "c", "fp-default").await == Some(ProfileStatus::Active)
    })
    .await;
    // Up to 10 profiles; the 11th is over the limit.
    for i in 2..=10 {
        let name = format!("fp-{i}");
        eks.create_profile(new_profile("c", &name)).await.unwrap();
        wait_until("the profile ACTIVE", || async {
            profile_status(&eks, "c", &name).await == Some(ProfileStatus::Active)
        })
        .await;
    }
    assert!(matches!(eks.create_profile(new_profile("c", "fp-11")).await, Err(EksError::LimitExceeded(_))));
    let listed = eks.list_profiles("c", Some(4), None).await.unwrap();
    assert_eq!(listed.items, ["fp-10", "fp-2", "fp-3", "fp-4"]);
    let next = eks.list_profiles("c", Some(100), listed.next_token.as_deref()).await.unwrap();
    assert_eq!(next.items.len(), 6);
    assert_eq!(next.next_token, None);

    // Deleting: DELETING, then gone; then the cluster can go.
    running.stop().await;
    let deleting = eks.delete_profile("c", "fp-default").await.unwrap();
    assert_eq!(deleting.status, ProfileStatus::Deleting);
    assert!(matches!(eks.delete_profile("c", "fp-2").await, Err(EksError::InUse(m)) if m.contains("DELETING")));
    assert!(matches!(eks.describe_profile("c", "nope").await, Err(EksError::ProfileNotFound(_))));
    let _stop = reconcile(&eks);
    for i in 1..=10 {
        let name = if i == 1 { "fp-default".to_string() } else { format!("fp-{i}") };
        wait_until("no profile DELETING", || async {
            !eks.profiles("c").await.unwrap().iter().any(|p| p.status == ProfileStatus::Deleting)
        })
        .await;
        if i > 1 {
            eks.delete_profile("c", &name).await.unwrap();
        }
    }
    wait_until("no profiles", || async { eks.profiles("c").await.unwrap().is_empty() }).await;
    eks.delete_cluster("c").await.unwrap();
    wait_until("the cluster gone", || async { status(&eks, "c").await.is_none() }).await;
}

#[tokio::test]
async fn deleting_removes_the_plane_and_a_restart_adopts_active_clusters() {
    let setup = Setup::new();
    let planes = Arc::new(RecordingPlanes::default());
    let eks = setup.eks(Some(planes.clone()));
    eks.create_cluster(new_cluster("keep")).await.unwrap();
    eks.create_cluster(NewCluster { client_request_token: None, ..new_cluster("drop") }).await.unwrap();
    let running = reconcile(&eks);
    wait_until("both ACTIVE", || async {
        status(&eks, "keep").await == Some(ClusterStatus::Active)
            && status(&eks, "drop").await == Some(ClusterStatus::Active)
    })
    .await;
    eks.delete_cluster("drop").await.unwrap();
    assert_eq!(status(&eks, "drop").await, Some(ClusterStatus::Deleting));
    wait_until("the cluster gone", || async { status(&eks, "drop").await.is_none() }).await;
    assert_eq!(*planes.removed.lock().unwrap(), ["drop"]);
    assert!(matches!(eks.delete_cluster("drop").await, Err(EksError::ClusterNotFound(_))));
    running.stop().await;

    // A new process over the same store ensures the ACTIVE cluster's plane again.
    let planes = Arc::new(RecordingPlanes::default());
    let eks = setup.eks(Some(planes.clone()));
    let _stop = reconcile(&eks);
    wait_until("the plane adopted", || async { planes.ensured.lock().unwrap().contains(&"keep".to_string()) }).await;
    assert_eq!(status(&eks, "keep").await, Some(ClusterStatus::Active));
}

#[tokio::test]
async fn tags_by_arn() {
    let setup = Setup::new();
    let eks = setup.eks(None);
    let c = eks.create_cluster(NewCluster { tags: vec![Tag::new("team", "a")], ..new_cluster("c") }).await.unwrap();
    eks.tag_resource(&c.arn, vec![Tag::new("env", "dev"), Tag::new("team", "b")]).await.unwrap();
    let mut tags = eks.list_tags(&c.arn).await.unwrap();
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(tags, [Tag::new("env", "dev"), Tag::new("team", "b")]);
    eks.untag_resource(&c.arn, &["team".into()]).await.unwrap();
    assert_eq!(eks.list_tags(&c.arn).await.unwrap(), [Tag::new("env", "dev")]);
    assert!(matches!(
        eks.list_tags("arn:aws:eks:us-east-1:123456789012:cluster/nope").await,
        Err(EksError::TagTargetNotFound(_))
    ));
    assert!(matches!(eks.list_tags("not-an-arn").await, Err(EksError::BadTagRequest(_))));
    assert!(matches!(eks.tag_resource(&c.arn, vec![Tag::new("aws:x", "y")]).await, Err(EksError::BadTagRequest(_))));
}
