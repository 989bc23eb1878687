//! A launched control plane on the real etcd, kube-apiserver and kube-controller-manager:
//! launched from a cluster record, reached through Flotilla's admin certificate, supervised,
//! adopted by a new `Planes` (as after a Flotilla restart), and removed without a trace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use flotilla_eks::{
    ClusterRecord, ClusterStatus, ControlPlanes, FargateProfile, KubeAccess, KubeAuth, PlaneFuture, PlaneSource,
    ProfileStatus, Selector,
};
use flotilla_k8s::plane::{Planes, WebhookEndpoint, pki};
use flotilla_k8s::webhook::{AwsIdentity, CallerVerifier, Clusters, PresignedRequest, Webhooks};

fn record(name: &str) -> ClusterRecord {
    ClusterRecord {
        name: name.to_owned(),
        arn: format!("arn:aws:eks:us-east-1:000000000000:cluster/{name}"),
        status: ClusterStatus::Creating,
        version: "1.20".into(),
        role_arn: "arn:aws:iam::000000000000:role/eks".into(),
        subnet_ids: vec![],
        security_group_ids: vec![],
        vpc_id: "vpc-1".into(),
        service_ipv4_cidr: "10.100.0.0/16".into(),
        endpoint: None,
        ca_pem: None,
        creator_arn: "arn:aws:iam::000000000000:root".into(),
        created_at: flotilla_types::time::Timestamp::now(),
        source: PlaneSource::Launched,
        tags: vec![],
        failure: None,
    }
}

/// Processes whose command line names `dir`.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Kills what a failed test left running in `dir`.
struct Reaper<'a>(&'a Path);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for (pid, _) in processes_in(self.0) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn pid_of(dir: &Path, component: &str) -> u32 {
    std::fs::read_to_string(dir.join(format!("{component}.pid"))).unwrap().trim().parse().unwrap()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap()
}

fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn webhook(dir: &Path) -> WebhookEndpoint {
    // Nothing listens here: the test using it launches no plane.
    let ca = pki::Authority::load_or_create(dir, "webhook-ca", "test webhook").unwrap();
    WebhookEndpoint { base_url: "https://127.0.0.1:1".into(), ca_pem: ca.pem().to_owned() }
}

/// One cluster with one ACTIVE profile selecting namespace `fargate`, as the store would give.
struct OneProfile(ClusterRecord);

impl Clusters for OneProfile {
    fn cluster<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, Result<Option<ClusterRecord>, String>> {
        Box::pin(async move { Ok((name == self.0.name).then(|| self.0.clone())) })
    }

    fn profiles<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>> {
        Box::pin(async move {
            Ok(vec![FargateProfile {
                name: "fp-default".into(),
                arn: format!("arn:aws:eks:us-east-1:000000000000:fargateprofile/{cluster}/fp-default/x"),
                cluster_name: cluster.to_owned(),
                created_at: flotilla_types::time::Timestamp::now(),
                pod_execution_role_arn: "arn:aws:iam::000000000000:role/pods".into(),
                subnets: vec![],
                selectors: vec![Selector { namespace: "fargate".into(), labels: Default::default() }],
                status: ProfileStatus::Active,
                tags: vec![],
            }])
        })
    }

    fn access<'a>(&'a self, _: &'a str) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async { Err("tokens are not reviewed here".to_owned()) })
    }
}

/// Tokens are the end-to-end test's (eks_kubectl.rs): here none is valid.
struct NoCallers;

impl CallerVerifier for NoCallers {
    fn verify<'a>(&'a self, _: &'a PresignedRequest) -> PlaneFuture<'a, Result<AwsIdentity, String>> {
        Box::pin(async { Err("no callers here".to_owned()) })
    }
}

fn pod(namespace: &str, name: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_plane_answers_survives_deaths_and_restarts_and_leaves_nothing() {
    let binaries = flotilla_k8s::test_binaries().expect("the Kubernetes test binaries");
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("eks");
    let _reaper = Reaper(data.path());
    let cluster = record("plane-test");
    let listener = Webhooks::start(
        &data.path().join("eks-webhook"),
        Some("127.0.0.1:0".parse().unwrap()),
        Arc::new(OneProfile(cluster.clone())),
        Arc::new(NoCallers),
    )
    .await
    .unwrap();
    let hooks = listener.endpoint();

    let planes = Planes::new(root.clone(), Ok(binaries.clone()), hooks.clone());
    let (endpoint, ca_pem) = planes.ensure(&cluster).await.expect("the plane comes up");
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
    let layout = planes.layout(&cluster.name).unwrap();
    let dir = layout.dir.clone();

    // Flotilla's access: a kube client as system:masters.
    let access = planes.access(&cluster).await.unwrap();
    assert_eq!(access.endpoint, endpoint);
    assert!(matches!(access.auth, KubeAuth::ClientCertificate { .. }));
    let client = flotilla_k8s::plane::client(&access).await.unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let names: Vec<String> =
        namespaces.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|n| n.metadata.name).collect();
    assert!(names.contains(&"kube-system".to_owned()), "{names:?}");
    // The admission webhook is registered with the listener's CA.
    let hooks_api: kube::Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        kube::Api::all(client.clone());
    let registered = hooks_api.get(flotilla_k8s::plane::WEBHOOK_CONFIGURATION).await.unwrap();
    let hook = &registered.webhooks.unwrap()[0];
    assert_eq!(hook.client_config.url.as_deref(), Some(hooks.mutate_url("plane-test").as_str()));
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, hooks.ca_pem.as_bytes());

    // kubectl through the admin kubeconfig; the controller manager makes the default
    // namespace's service account (so its controllers run).
    let kubeconfig = layout.admin_kubeconfig();
    let out = kubectl(&kubeconfig, &["get", "ns", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the default service account", Duration::from_secs(60), || {
        kubectl(&kubeconfig, &["get", "serviceaccount", "default", "-n", "default"]).status.success()
    });

    // Pods in the profile's namespace go to the Fargate scheduler, labelled with the profile;
    // others keep the default scheduler.
    for namespace in ["fargate", "elsewhere"] {
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&Default::default(), &ns).await.unwrap();
    }
    // Pods are admitted once each namespace's service account has its token (Kubernetes 1.20
    // answers 500 "No API token found" before).
    wait_for("the namespaces' service accounts and their tokens", Duration::from_secs(60), || {
        ["fargate", "elsewhere"].iter().all(|ns| {
            let out = kubectl(
                &kubeconfig,
                &["get", "serviceaccount", "default", "-n", ns, "-o", "jsonpath={.secrets[0].name}"],
            );
            out.status.success() && !out.stdout.is_empty()
        })
    });
    let fargate: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "fargate");
    let made = fargate.create(&Default::default(), &pod("fargate", "in-profile")).await.unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("fargate-scheduler"));
    assert_eq!(made.metadata.labels.unwrap()["eks.amazonaws.com/fargate-profile"], "fp-default");
    let elsewhere: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "elsewhere");
    let made = elsewhere.create(&Default::default(), &pod("elsewhere", "outside")).await.unwrap();
    assert_eq!(made.spec.unwrap().scheduler_name.as_deref(), Some("default-scheduler"));
    assert!(!made.metadata.labels.unwrap().contains_key("eks.amazonaws.com/fargate-profile"));

    // A dying API server is started again by the supervisor.
    let first = pid_of(&dir, "kube-apiserver");
    Command::new("kill").arg("-9").arg(first.to_string()).status().unwrap();
    wait_for("the API server to be restarted", Duration::from_secs(120), || {
        std::fs::read_to_string(dir.join("kube-apiserver.pid")).is_ok_and(|p| p.trim() != first.to_string())
            && kubectl(&kubeconfig, &["get", "ns", "default"]).status.success()
    });

    // A new Planes over the same directory (Flotilla restarted) adopts the running processes.
    planes.detach().await;
    drop(planes);
    let pids: Vec<u32> =
        ["etcd", "kube-apiserver", "kube-controller-manager"].iter().map(|c| pid_of(&dir, c)).collect();
    let planes = Planes::new(root.clone(), Ok(binaries), hooks.clone());
    let (again, again_ca) = planes.ensure(&cluster).await.expect("the plane is adopted");
    assert_eq!((again, again_ca), (endpoint, ca_pem));
    let adopted: Vec<u32> =
        ["etcd", "kube-apiserver", "kube-controller-manager"].iter().map(|c| pid_of(&dir, c)).collect();
    assert_eq!(pids, adopted, "a restart adopts the running processes");
    let out = kubectl(&kubeconfig, &["get", "serviceaccount", "default", "-n", "default"]);
    assert!(out.status.success(), "etcd's data survived: {}", String::from_utf8_lossy(&out.stderr));

    // The same API server registered as another cluster (as k3s or kubeadm would be): checked,
    // given the admission webhook, and left without it when removed.
    let access = planes.access(&cluster).await.unwrap();
    let registered = ClusterRecord {
        name: "registered".into(),
        source: PlaneSource::Registered {
            endpoint: access.endpoint.clone(),
            ca_pem: access.ca_pem.clone(),
            auth: access.auth.clone(),
        },
        ..record("registered")
    };
    assert_eq!(planes.ensure(&registered).await.unwrap(), (access.endpoint.clone(), access.ca_pem.clone()));
    assert_eq!(planes.access(&registered).await.unwrap(), access);
    let hook = hooks_api.get(flotilla_k8s::plane::WEBHOOK_CONFIGURATION).await.unwrap();
    let webhook = &hook.webhooks.unwrap()[0];
    assert_eq!(webhook.client_config.url.as_deref(), Some(hooks.mutate_url("registered").as_str()));
    assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"), "a registered cluster runs on without Flotilla");
    planes.remove(&registered).await.unwrap();
    assert!(hooks_api.get_opt(flotilla_k8s::plane::WEBHOOK_CONFIGURATION).await.unwrap().is_none());
    assert!(dir.exists(), "a registered cluster's removal touches no launched plane");

    // Removing stops everything and deletes the directory.
    planes.remove(&cluster).await.unwrap();
    assert!(!dir.exists());
    assert_eq!(processes_in(data.path()), vec![], "nothing of the plane runs");
}

#[tokio::test]
async fn a_plane_without_binaries_says_why() {
    let data = tempfile::tempdir().unwrap();
    let planes = Planes::new(data.path().join("eks"), Err("no kube-apiserver here".into()), webhook(data.path()));
    let err = planes.ensure(&record("nobin")).await.unwrap_err();
    assert!(err.contains("no kube-apiserver here"), "{err}");
}
