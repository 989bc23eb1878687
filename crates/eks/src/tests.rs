//! Profile matching, and the getters over a real embedded store.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_store::{EmbeddedStore, Op, Store, Txn};
use flotilla_types::{Identity, Timestamp};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn profile(name: &str, status: ProfileStatus, selectors: &[(&str, &[(&str, &str)])]) -> FargateProfile {
    FargateProfile {
        name: name.into(),
        arn: format!("arn:aws:eks:us-east-1:123456789012:fargateprofile/c/{name}/id"),
        cluster_name: "c".into(),
        created_at: Timestamp(0),
        pod_execution_role_arn: "arn:aws:iam::123456789012:role/pods".into(),
        subnets: vec!["subnet-a".into()],
        selectors: selectors.iter().map(|(ns, l)| Selector { namespace: ns.to_string(), labels: labels(l) }).collect(),
        status,
        tags: vec![],
    }
}

fn matched<'a>(profiles: &'a [FargateProfile], ns: &str, pod: &[(&str, &str)]) -> Option<&'a str> {
    match_profile(profiles, ns, &labels(pod)).map(|p| p.name.as_str())
}

#[test]
fn namespace_must_be_equal() {
    let profiles = [profile("fp-default", ProfileStatus::Active, &[("default", &[])])];
    assert_eq!(matched(&profiles, "default", &[]), Some("fp-default"));
    assert_eq!(matched(&profiles, "default", &[("app", "web")]), Some("fp-default"), "extra pod labels are fine");
    assert_eq!(matched(&profiles, "kube-system", &[]), None);
    assert_eq!(matched(&profiles, "defaults", &[]), None);
}

#[test]
fn every_selector_label_must_be_on_the_pod() {
    let profiles = [profile("web", ProfileStatus::Active, &[("prod", &[("app", "web"), ("tier", "front")])])];
    assert_eq!(matched(&profiles, "prod", &[("app", "web"), ("tier", "front"), ("x", "y")]), Some("web"));
    assert_eq!(matched(&profiles, "prod", &[("app", "web")]), None, "a label missing");
    assert_eq!(matched(&profiles, "prod", &[("app", "web"), ("tier", "back")]), None, "a value differs");
}

#[test]
fn any_selector_of_a_profile_selects() {
    let profiles = [profile("two", ProfileStatus::Active, &[("a", &[]), ("b", &[("app", "x")])])];
    assert_eq!(matched(&profiles, "a", &[]), Some("two"));
    assert_eq!(matched(&profiles, "b", &[("app", "x")]), Some("two"));
    assert_eq!(matched(&profiles, "b", &[]), None);
}

#[test]
fn only_active_profiles_count() {
    for status in
        [ProfileStatus::Creating, ProfileStatus::Deleting, ProfileStatus::CreateFailed, ProfileStatus::DeleteFailed]
    {
        let profiles = [profile("p", status, &[("default", &[])])];
        assert_eq!(matched(&profiles, "default", &[]), None, "{status:?}");
    }
    let profiles = [
        profile("a", ProfileStatus::Deleting, &[("default", &[])]),
        profile("b", ProfileStatus::Active, &[("default", &[])]),
    ];
    assert_eq!(matched(&profiles, "default", &[]), Some("b"));
}

#[test]
fn several_matches_the_named_one_else_first_by_name() {
    let profiles = [
        profile("zeta", ProfileStatus::Active, &[("default", &[])]),
        profile("alpha", ProfileStatus::Active, &[("default", &[])]),
        profile("mid", ProfileStatus::Active, &[("default", &[("app", "web")])]),
        profile("other", ProfileStatus::Active, &[("elsewhere", &[])]),
    ];
    assert_eq!(matched(&profiles, "default", &[]), Some("alpha"));
    assert_eq!(matched(&profiles, "default", &[(PROFILE_LABEL, "zeta")]), Some("zeta"));
    assert_eq!(matched(&profiles, "default", &[(PROFILE_LABEL, "mid"), ("app", "web")]), Some("mid"));
    // A named profile that does not select the pod is not used; the first match is.
    assert_eq!(matched(&profiles, "default", &[(PROFILE_LABEL, "other")]), Some("alpha"));
    assert_eq!(matched(&profiles, "default", &[(PROFILE_LABEL, "mid")]), Some("alpha"), "mid needs app=web");
}

fn cluster(name: &str, status: ClusterStatus) -> ClusterRecord {
    ClusterRecord {
        name: name.into(),
        arn: format!("arn:aws:eks:us-east-1:123456789012:cluster/{name}"),
        status,
        version: "1.20".into(),
        role_arn: "arn:aws:iam::123456789012:role/eks".into(),
        subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
        security_group_ids: vec![],
        vpc_id: "vpc-1".into(),
        service_ipv4_cidr: "10.100.0.0/16".into(),
        endpoint: None,
        ca_pem: None,
        creator_arn: "arn:aws:iam::123456789012:root".into(),
        created_at: Timestamp(0),
        source: PlaneSource::Launched,
        tags: vec![],
        failure: None,
    }
}

async fn put(store: &dyn Store, key: String, value: Vec<u8>) {
    store.txn(Txn::new().then(Op::put(key, value))).await.unwrap();
}

/// A fixed answer for `access`: a test double, not a control plane.
struct FixedAccess;

impl ControlPlanes for FixedAccess {
    fn ensure<'a>(&'a self, _: &'a ClusterRecord) -> PlaneFuture<'a, Result<(String, String), String>> {
        Box::pin(async { Ok(("https://127.0.0.1:6443".into(), "CA".into())) })
    }
    fn remove<'a>(&'a self, _: &'a ClusterRecord) -> PlaneFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn access<'a>(&'a self, c: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async move {
            Ok(KubeAccess {
                endpoint: c.endpoint.clone().unwrap_or_default(),
                ca_pem: "CA".into(),
                auth: KubeAuth::Token { token: "t".into() },
            })
        })
    }
}

#[tokio::test]
async fn getters_read_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
    let eks = Eks::new(store.clone(), Identity::new("us-east-1", "123456789012"));
    assert_eq!(eks.cluster("a").await.unwrap(), None);
    assert!(eks.clusters().await.unwrap().is_empty());

    let mut active = cluster("a", ClusterStatus::Active);
    active.endpoint = Some("https://127.0.0.1:6443".into());
    put(&*store, record::cluster_key("a"), record::encode(&active)).await;
    put(&*store, record::cluster_key("a-b"), record::encode(&cluster("a-b", ClusterStatus::Creating))).await;
    let p = profile("fp", ProfileStatus::Active, &[("default", &[])]);
    put(&*store, record::profile_key("a", "fp"), record::encode(&p)).await;
    put(&*store, record::profile_key("a-b", "other"), record::encode(&profile("other", ProfileStatus::Active, &[])))
        .await;

    assert_eq!(eks.cluster("a").await.unwrap(), Some(active.clone()));
    let names: Vec<String> = eks.clusters().await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "a-b"]);
    assert_eq!(eks.profiles("a").await.unwrap(), vec![p], "a's prefix does not reach a-b's profiles");

    // Without planes, access says so; with them, an ACTIVE cluster answers and others are refused.
    assert!(matches!(eks.access("a").await, Err(EksError::Plane { .. })));
    let eks = Eks::new(store.clone(), Identity::new("us-east-1", "123456789012")).with_planes(Arc::new(FixedAccess));
    assert_eq!(eks.access("a").await.unwrap().endpoint, "https://127.0.0.1:6443");
    assert!(matches!(eks.access("a-b").await, Err(EksError::InvalidRequest(_))));
    assert!(matches!(eks.access("nope").await, Err(EksError::ClusterNotFound(_))));
}
