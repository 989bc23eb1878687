//! EKS's API through the real AWS CLI: the seeds' `eksctl create cluster --fargate` and
//! `eksctl create fargateprofile` lines as their `aws eks` equivalents, describe / list / tag /
//! delete, statuses moving, and every refusal naming its field.
//!
//! Two servers: `flotilla up` itself (no Kubernetes binaries given: a cluster is recorded and
//! then FAILED, saying why), and a control plane in this process given `StandInPlanes`, a test
//! double of flotilla-k8s's `ControlPlanes` that answers `ensure` with a fixed endpoint and CA
//! without launching anything, so that clusters become ACTIVE and profiles can be made. What
//! a real plane does is tested in crates/k8s and crates/cli/tests/eks_kubectl.rs.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{ACCESS_KEY, SECRET_KEY, Server, wait_for};
use flotilla_eks::{ClusterRecord, ControlPlanes, KubeAccess, KubeAuth, PlaneFuture};
use serde_json::Value;

const STAND_IN_ENDPOINT: &str = "https://127.0.0.1:6443";
const STAND_IN_CA: &str = "-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n";

/// The test double: every plane "answers" at once, at a fixed address.
struct StandInPlanes;

impl ControlPlanes for StandInPlanes {
    fn ensure<'a>(&'a self, _: &'a ClusterRecord) -> PlaneFuture<'a, Result<(String, String), String>> {
        Box::pin(async { Ok((STAND_IN_ENDPOINT.to_owned(), STAND_IN_CA.to_owned())) })
    }
    fn remove<'a>(&'a self, _: &'a ClusterRecord) -> PlaneFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn access<'a>(&'a self, _: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async {
            Ok(KubeAccess {
                endpoint: STAND_IN_ENDPOINT.into(),
                ca_pem: STAND_IN_CA.into(),
                auth: KubeAuth::Token { token: "stand-in".into() },
            })
        })
    }
}

/// The AWS CLI against one endpoint, with the test credentials (or a user's) and no user
/// configuration.
struct Aws {
    endpoint: String,
    key: String,
    secret: String,
}

impl Aws {
    fn root(endpoint: String) -> Aws {
        Aws { endpoint, key: ACCESS_KEY.into(), secret: SECRET_KEY.into() }
    }

    /// A new IAM user with an access key, and the CLI as that user.
    fn user(&self, name: &str) -> (String, Aws) {
        let arn = self.json(&["iam", "create-user", "--user-name", name])["User"]["Arn"].as_str().unwrap().to_owned();
        let key = self.json(&["iam", "create-access-key", "--user-name", name])["AccessKey"].clone();
        let text = |k: &str| key[k].as_str().unwrap().to_owned();
        (arn, Aws { endpoint: self.endpoint.clone(), key: text("AccessKeyId"), secret: text("SecretAccessKey") })
    }

    fn allow(&self, user: &str, policy: &str, action: &str, resource: &str) {
        let document = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}]}}"#
        );
        self.json(&[
            "iam",
            "put-user-policy",
            "--user-name",
            user,
            "--policy-name",
            policy,
            "--policy-document",
            &document,
        ]);
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the aws CLI runs")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "aws {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("aws prints JSON")
    }

    /// Runs a command that must fail with `code`, its message naming `names`.
    fn refused(&self, args: &[&str], code: &str, names: &str) {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "aws {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains(&format!("({code})")), "aws {args:?}: expected {code}, got {err}");
        assert!(err.contains(names), "aws {args:?}: expected the error to name {names:?}, got {err}");
    }

    fn account(&self) -> String {
        self.json(&["sts", "get-caller-identity"])["Account"].as_str().unwrap().to_owned()
    }

    fn role(&self, name: &str, service: &str) -> String {
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        let out = self.json(&["iam", "create-role", "--role-name", name, "--assume-role-policy-document", &trust]);
        out["Role"]["Arn"].as_str().unwrap().to_owned()
    }

    /// Two default subnets in different zones, and the default VPC.
    fn two_zones(&self) -> (String, String, String) {
        let subnets = self.json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
        let subnets = subnets["Subnets"].as_array().unwrap();
        let first = &subnets[0];
        let second = subnets
            .iter()
            .find(|s| s["AvailabilityZone"] != first["AvailabilityZone"])
            .expect("default subnets in two zones");
        let text = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
        (text(first, "SubnetId"), text(second, "SubnetId"), text(first, "VpcId"))
    }

    fn cluster(&self, name: &str) -> Value {
        self.json(&["eks", "describe-cluster", "--name", name])["cluster"].clone()
    }

    fn profile(&self, cluster: &str, name: &str) -> Value {
        self.json(&["eks", "describe-fargate-profile", "--cluster-name", cluster, "--fargate-profile-name", name])
            ["fargateProfile"]
            .clone()
    }

    fn create_profile(&self, cluster: &str, name: &str, pods: &str) -> Value {
        self.json(&[
            "eks",
            "create-fargate-profile",
            "--cluster-name",
            cluster,
            "--fargate-profile-name",
            name,
            "--pod-execution-role-arn",
            pods,
            "--selectors",
            "namespace=default",
        ])["fargateProfile"]
            .clone()
    }

    fn wait_profile(&self, cluster: &str, name: &str, status: &str) {
        wait_for(&format!("profile {name} {status}"), Duration::from_secs(30), || {
            self.profile(cluster, name)["status"] == status
        });
    }

    fn wait_profile_gone(&self, cluster: &str, name: &str) {
        wait_for(&format!("profile {name} gone"), Duration::from_secs(30), || {
            !self
                .run(&["eks", "describe-fargate-profile", "--cluster-name", cluster, "--fargate-profile-name", name])
                .status
                .success()
        });
    }
}

/// A control plane in this process with the stand-in planes, served on a local port.
struct InProcess {
    rt: tokio::runtime::Runtime,
    aws: Aws,
    /// The server's EKS, to read what the wire does not show (a cluster's creator).
    eks: Arc<flotilla_eks::Eks>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (endpoint, eks) = rt.block_on(async {
            let store = flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
            let credentials =
                flotilla_api::Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
            let plane = flotilla_cli::plane::ControlPlane::start(
                Arc::new(store),
                flotilla_cli::plane::PlaneOptions {
                    region: "us-east-1".into(),
                    account_id: "000000000000".into(),
                    public_ip_pool: "100.64.0.0/16".parse().unwrap(),
                    lb_address: None,
                    logs_dir: dir.path().join("logs"),
                    efs_root: dir.path().join("efs"),
                    require_roles: false,
                    kms_key_file: dir.path().join("kms.key"),
                    root_credentials: credentials.clone(),
                    data_dir: dir.path().to_owned(),
                    kubernetes: Default::default(),
                    eks_planes: Some(Arc::new(StandInPlanes)),
                },
            )
            .await
            .unwrap();
            let state = plane.api_state(&credentials);
            let eks = plane.eks.clone();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let _plane = plane;
                axum::serve(listener, flotilla_api::router(state)).await.unwrap();
            });
            (endpoint, eks)
        });
        InProcess { rt, aws: Aws::root(endpoint), eks, _dir: dir }
    }
}

#[test]
fn the_seeds_eksctl_lines_as_aws_eks_with_statuses_moving() {
    let server = InProcess::start();
    let aws = &server.aws;
    let account = aws.account();
    let cluster_role = aws.role("eksClusterRole", "eks.amazonaws.com");
    let pods_role = aws.role("AmazonEKSFargatePodExecutionRole", "eks-fargate-pods.amazonaws.com");
    let (a, b, vpc) = aws.two_zones();
    let subnets = format!("subnetIds={a},{b}");

    // eksctl create cluster --name my-fargate-cluster --fargate
    let created = aws.json(&[
        "eks",
        "create-cluster",
        "--name",
        "my-fargate-cluster",
        "--role-arn",
        &cluster_role,
        "--resources-vpc-config",
        &subnets,
        "--tags",
        "team=platform",
    ])["cluster"]
        .clone();
    assert_eq!(created["status"], "CREATING", "{created}");
    assert_eq!(created["arn"], format!("arn:aws:eks:us-east-1:{account}:cluster/my-fargate-cluster"));
    wait_for("the cluster ACTIVE", Duration::from_secs(30), || aws.cluster("my-fargate-cluster")["status"] == "ACTIVE");
    let cluster = aws.cluster("my-fargate-cluster");
    assert_eq!(cluster["endpoint"], STAND_IN_ENDPOINT);
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificateAuthority"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(ca, STAND_IN_CA.as_bytes());
    assert_eq!(cluster["version"], "1.20");
    assert_eq!(cluster["platformVersion"], "eks.1");
    assert_eq!(cluster["roleArn"], cluster_role.as_str());
    assert_eq!(cluster["kubernetesNetworkConfig"]["serviceIpv4Cidr"], "10.100.0.0/16");
    assert_eq!(cluster["resourcesVpcConfig"]["vpcId"], vpc.as_str());
    assert_eq!(cluster["resourcesVpcConfig"]["subnetIds"], serde_json::json!([a, b]));
    assert_eq!(cluster["resourcesVpcConfig"]["endpointPublicAccess"], true);
    assert_eq!(cluster["tags"]["team"], "platform");
    assert!(cluster.get("identity").is_none(), "{cluster}");
    assert_eq!(aws.json(&["eks", "list-clusters"])["clusters"], serde_json::json!(["my-fargate-cluster"]));

    // eksctl create fargateprofile --cluster my-fargate-cluster --name fp-default --namespace default
    let profile = aws.create_profile("my-fargate-cluster", "fp-default", &pods_role);
    assert_eq!(profile["status"], "CREATING", "{profile}");
    assert_eq!(profile["selectors"], serde_json::json!([{"namespace": "default", "labels": {}}]));
    assert_eq!(profile["subnets"], serde_json::json!([a, b]), "the cluster's subnets");
    let profile_arn = profile["fargateProfileArn"].as_str().unwrap().to_owned();
    assert!(
        profile_arn
            .starts_with(&format!("arn:aws:eks:us-east-1:{account}:fargateprofile/my-fargate-cluster/fp-default/"))
    );
    aws.wait_profile("my-fargate-cluster", "fp-default", "ACTIVE");
    assert_eq!(
        aws.json(&["eks", "list-fargate-profiles", "--cluster-name", "my-fargate-cluster"])["fargateProfileNames"],
        serde_json::json!(["fp-default"])
    );
    let labelled = aws.json(&[
        "eks",
        "create-fargate-profile",
        "--cluster-name",
        "my-fargate-cluster",
        "--fargate-profile-name",
        "fp-web",
        "--pod-execution-role-arn",
        &pods_role,
        "--subnets",
        &a,
        "--selectors",
        r#"[{"namespace":"prod","labels":{"app":"web","tier":"front"}}]"#,
    ])["fargateProfile"]
        .clone();
    assert_eq!(labelled["selectors"][0]["labels"]["tier"], "front");
    aws.wait_profile("my-fargate-cluster", "fp-web", "ACTIVE");

    // Tags by ARN, on the cluster and on a profile.
    let cluster_arn = cluster["arn"].as_str().unwrap();
    aws.json(&["eks", "tag-resource", "--resource-arn", cluster_arn, "--tags", "env=dev"]);
    aws.json(&["eks", "untag-resource", "--resource-arn", cluster_arn, "--tag-keys", "team"]);
    assert_eq!(
        aws.json(&["eks", "list-tags-for-resource", "--resource-arn", cluster_arn])["tags"],
        serde_json::json!({"env": "dev"})
    );
    aws.json(&["eks", "tag-resource", "--resource-arn", &profile_arn, "--tags", "owner=alice"]);
    assert_eq!(aws.profile("my-fargate-cluster", "fp-default")["tags"], serde_json::json!({"owner": "alice"}));

    // A cluster with profiles cannot go.
    aws.refused(&["eks", "delete-cluster", "--name", "my-fargate-cluster"], "ResourceInUseException", "fp-");
    // Up to 10 profiles a cluster.
    for i in 3..=10 {
        let name = format!("fp-{i}");
        aws.create_profile("my-fargate-cluster", &name, &pods_role);
        aws.wait_profile("my-fargate-cluster", &name, "ACTIVE");
    }
    aws.refused(
        &[
            "eks",
            "create-fargate-profile",
            "--cluster-name",
            "my-fargate-cluster",
            "--fargate-profile-name",
            "fp-11",
            "--pod-execution-role-arn",
            &pods_role,
            "--selectors",
            "namespace=default",
        ],
        "ResourceLimitExceededException",
        "10 Fargate profiles",
    );
    let page = aws.json(&[
        "eks",
        "list-fargate-profiles",
        "--cluster-name",
        "my-fargate-cluster",
        "--no-paginate",
        "--max-results",
        "4",
    ]);
    assert_eq!(page["fargateProfileNames"].as_array().unwrap().len(), 4, "{page}");
    let token = page["nextToken"].as_str().expect("a next token").to_owned();
    let rest = aws.json(&[
        "eks",
        "list-fargate-profiles",
        "--cluster-name",
        "my-fargate-cluster",
        "--no-paginate",
        "--next-token",
        &token,
    ]);
    assert_eq!(rest["fargateProfileNames"].as_array().unwrap().len(), 6, "{rest}");

    // Deleting: profiles one at a time (DELETING, then gone), then the cluster.
    let mut names: Vec<String> = (3..=10).map(|i| format!("fp-{i}")).collect();
    names.extend(["fp-default".to_owned(), "fp-web".to_owned()]);
    for name in &names {
        let deleting = aws.json(&[
            "eks",
            "delete-fargate-profile",
            "--cluster-name",
            "my-fargate-cluster",
            "--fargate-profile-name",
            name,
        ])["fargateProfile"]
            .clone();
        assert_eq!(deleting["status"], "DELETING");
        aws.wait_profile_gone("my-fargate-cluster", name);
    }
    let deleting = aws.json(&["eks", "delete-cluster", "--name", "my-fargate-cluster"])["cluster"].clone();
    assert_eq!(deleting["status"], "DELETING", "{deleting}");
    wait_for("the cluster gone", Duration::from_secs(30), || {
        !aws.run(&["eks", "describe-cluster", "--name", "my-fargate-cluster"]).status.success()
    });
    aws.refused(
        &["eks", "describe-cluster", "--name", "my-fargate-cluster"],
        "ResourceNotFoundException",
        "my-fargate-cluster",
    );
}

#[test]
fn refusals_name_their_field() {
    let server = InProcess::start();
    let aws = &server.aws;
    let account = aws.account();
    let role = aws.role("eksClusterRole", "eks.amazonaws.com");
    let pods = aws.role("pods", "eks-fargate-pods.amazonaws.com");
    let (a, b, _) = aws.two_zones();
    let two = format!("subnetIds={a},{b}");
    // `--name=NAME`: a name starting with `-` is a value, not an option.
    let create = |name: &str, extra: &[&str]| {
        let name = format!("--name={name}");
        let mut args = vec!["eks", "create-cluster", &name, "--role-arn", &role, "--resources-vpc-config", &two];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let refused = |args: Vec<String>, code: &str, names: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aws.refused(&args, code, names)
    };

    refused(create("-bad", &[]), "InvalidParameterException", "name");
    refused(create(&"x".repeat(101), &[]), "InvalidParameterException", "name");
    refused(create("c", &["--kubernetes-version", "1.29"]), "InvalidParameterException", "1.20");
    refused(
        create("c", &["--kubernetes-network-config", "serviceIpv4Cidr=8.8.0.0/16"]),
        "InvalidParameterException",
        "serviceIpv4Cidr",
    );
    let missing_role = format!("arn:aws:iam::{account}:role/missing");
    aws.refused(
        &["eks", "create-cluster", "--name", "c", "--role-arn", &missing_role, "--resources-vpc-config", &two],
        "InvalidParameterException",
        "roleArn",
    );
    aws.refused(
        &[
            "eks",
            "create-cluster",
            "--name",
            "c",
            "--role-arn",
            &role,
            "--resources-vpc-config",
            &format!("subnetIds={a}"),
        ],
        "InvalidParameterException",
        "at least two different AZs",
    );
    aws.refused(
        &[
            "eks",
            "create-cluster",
            "--name",
            "c",
            "--role-arn",
            &role,
            "--resources-vpc-config",
            "subnetIds=subnet-nope,subnet-nada",
        ],
        "InvalidParameterException",
        "subnet-nope",
    );
    aws.refused(
        &[
            "eks",
            "create-cluster",
            "--name",
            "c",
            "--role-arn",
            &role,
            "--resources-vpc-config",
            &format!("{two},securityGroupIds=sg-nope"),
        ],
        "InvalidParameterException",
        "securityGroupIds",
    );
    assert_eq!(aws.json(&["eks", "list-clusters"])["clusters"], serde_json::json!([]), "nothing refused was recorded");

    // A taken name (another request) is in use; the same token is the same request.
    let args: Vec<String> = create("c", &["--client-request-token", "t-1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = aws.json(&args)["cluster"].clone();
    assert_eq!(aws.json(&args)["cluster"]["arn"], first["arn"]);
    refused(
        create("c", &["--client-request-token", "t-2"]),
        "ResourceInUseException",
        "Cluster already exists with name: c",
    );
    aws.refused(&["eks", "describe-cluster", "--name", "nope"], "ResourceNotFoundException", "nope");
    aws.refused(&["eks", "delete-cluster", "--name", "nope"], "ResourceNotFoundException", "nope");
    aws.refused(
        &["eks", "list-clusters", "--no-paginate", "--max-results", "101"],
        "InvalidParameterException",
        "maxResults",
    );

    // Profiles: the cluster must exist and be ACTIVE; selectors, role and subnets by EKS's rules.
    let profile = |cluster: &str, name: &str, extra: &[&str]| {
        let name = format!("--fargate-profile-name={name}");
        let mut args =
            vec!["eks", "create-fargate-profile", "--cluster-name", cluster, &name, "--pod-execution-role-arn", &pods];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    refused(profile("nope", "fp", &["--selectors", "namespace=default"]), "ResourceNotFoundException", "nope");
    wait_for("the cluster ACTIVE", Duration::from_secs(30), || aws.cluster("c")["status"] == "ACTIVE");
    refused(profile("c", "fp", &[]), "InvalidParameterException", "selectors");
    let six = (0..6).map(|i| format!("{{\"namespace\":\"n{i}\"}}")).collect::<Vec<_>>().join(",");
    refused(profile("c", "fp", &["--selectors", &format!("[{six}]")]), "InvalidParameterException", "selectors");
    refused(
        profile("c", "fp", &["--selectors", r#"[{"labels":{"a":"b"}}]"#]),
        "InvalidParameterException",
        "namespace",
    );
    let labels = (0..6).map(|i| format!("\"k{i}\":\"v\"")).collect::<Vec<_>>().join(",");
    refused(
        profile("c", "fp", &["--selectors", &format!(r#"[{{"namespace":"a","labels":{{{labels}}}}}]"#)]),
        "InvalidParameterException",
        "labels",
    );
    refused(
        profile("c", "-fp", &["--selectors", "namespace=default"]),
        "InvalidParameterException",
        "fargateProfileName",
    );
    let other_vpc =
        aws.json(&["ec2", "create-vpc", "--cidr-block", "10.42.0.0/16"])["Vpc"]["VpcId"].as_str().unwrap().to_owned();
    let zone = aws.json(&["ec2", "describe-availability-zones"])["AvailabilityZones"][0]["ZoneName"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = aws.json(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &other_vpc,
        "--cidr-block",
        "10.42.1.0/24",
        "--availability-zone",
        &zone,
    ])["Subnet"]["SubnetId"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        profile("c", "fp", &["--selectors", "namespace=default", "--subnets", &elsewhere]),
        "InvalidParameterException",
        "cluster's VPC",
    );
    let missing_pods = format!("arn:aws:iam::{account}:role/missing");
    aws.refused(
        &[
            "eks",
            "create-fargate-profile",
            "--cluster-name",
            "c",
            "--fargate-profile-name",
            "fp",
            "--pod-execution-role-arn",
            &missing_pods,
            "--selectors",
            "namespace=default",
        ],
        "InvalidParameterException",
        "podExecutionRoleArn",
    );
    aws.create_profile("c", "fp", &pods);
    refused(profile("c", "fp", &["--selectors", "namespace=default"]), "ResourceInUseException", "already exists");
    aws.refused(
        &["eks", "describe-fargate-profile", "--cluster-name", "c", "--fargate-profile-name", "nope"],
        "ResourceNotFoundException",
        "nope",
    );
    aws.refused(
        &["eks", "list-tags-for-resource", "--resource-arn", &format!("arn:aws:eks:us-east-1:{account}:cluster/nope")],
        "NotFoundException",
        "cluster/nope",
    );
    aws.refused(
        &["eks", "tag-resource", "--resource-arn", "not-an-arn", "--tags", "a=b"],
        "BadRequestException",
        "resourceArn",
    );
}

/// `flotilla up` with no Kubernetes side: the cluster is recorded, then FAILED with the reason
/// as its health issue, and can be deleted.
#[test]
fn without_a_kubernetes_side_a_cluster_fails_saying_why() {
    let server = Server::start_no_agent();
    let aws = Aws::root(server.endpoint());
    let role = aws.role("eksClusterRole", "eks.amazonaws.com");
    let pods = aws.role("pods", "eks-fargate-pods.amazonaws.com");
    let (a, b, _) = aws.two_zones();
    let created = aws.json(&[
        "eks",
        "create-cluster",
        "--name",
        "my-fargate-cluster",
        "--role-arn",
        &role,
        "--resources-vpc-config",
        &format!("subnetIds={a},{b}"),
    ]);
    assert_eq!(created["cluster"]["status"], "CREATING");
    wait_for("the cluster FAILED", Duration::from_secs(30), || aws.cluster("my-fargate-cluster")["status"] == "FAILED");
    let cluster = aws.cluster("my-fargate-cluster");
    let issue = &cluster["health"]["issues"][0];
    // Without kube-apiserver on PATH or --kubernetes-bin, the launch says where to look.
    assert!(issue["message"].as_str().unwrap().contains("--kubernetes-bin"), "{cluster}");
    assert!(cluster.get("endpoint").is_none() && cluster.get("certificateAuthority").is_none(), "{cluster}");
    aws.refused(
        &[
            "eks",
            "create-fargate-profile",
            "--cluster-name",
            "my-fargate-cluster",
            "--fargate-profile-name",
            "fp-default",
            "--pod-execution-role-arn",
            &pods,
            "--selectors",
            "namespace=default",
        ],
        "InvalidRequestException",
        "FAILED",
    );
    aws.json(&["eks", "delete-cluster", "--name", "my-fargate-cluster"]);
    wait_for("the cluster gone", Duration::from_secs(30), || {
        aws.json(&["eks", "list-clusters"])["clusters"] == serde_json::json!([])
    });
}

/// IAM decides: EKS's actions on the cluster's ARN, and `iam:PassRole` for the role a cluster is
/// given; the identity that created a cluster is recorded as its administrator.
#[test]
fn iam_decides_who_may_create_and_pass_roles() {
    let server = InProcess::start();
    let root = &server.aws;
    let account = root.account();
    let role = root.role("eksClusterRole", "eks.amazonaws.com");
    let (a, b, _) = root.two_zones();
    let subnets = format!("subnetIds={a},{b}");
    let create = ["eks", "create-cluster", "--name", "alices", "--role-arn", &role, "--resources-vpc-config", &subnets];

    let (alice_arn, alice) = root.user("alice");
    alice.refused(&create, "AccessDeniedException", "eks:CreateCluster");
    root.allow("alice", "eks", "eks:*", "*");
    alice.refused(&create, "AccessDeniedException", "iam:PassRole");
    root.allow("alice", "pass", "iam:PassRole", &role);
    assert_eq!(alice.json(&create)["cluster"]["status"], "CREATING");
    let record = server.rt.block_on(server.eks.cluster("alices")).unwrap().unwrap();
    assert_eq!(record.creator_arn, alice_arn);

    // Bob may describe only his own cluster's ARN.
    let (_, bob) = root.user("bob");
    root.allow("bob", "describe", "eks:DescribeCluster", &format!("arn:aws:eks:us-east-1:{account}:cluster/bobs"));
    bob.refused(&["eks", "describe-cluster", "--name", "alices"], "AccessDeniedException", "cluster/alices");
    bob.refused(&["eks", "describe-cluster", "--name", "bobs"], "ResourceNotFoundException", "bobs");

    root.json(&["eks", "create-cluster", "--name", "roots", "--role-arn", &role, "--resources-vpc-config", &subnets]);
    let record = server.rt.block_on(server.eks.cluster("roots")).unwrap().unwrap();
    assert_eq!(record.creator_arn, format!("arn:aws:iam::{account}:root"));
}
