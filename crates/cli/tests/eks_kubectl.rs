//! EKS end to end with the real binaries: `aws eks create-cluster` launches etcd,
//! kube-apiserver and kube-controller-manager; `aws eks update-kubeconfig` writes a kubeconfig
//! whose `aws eks get-token` tokens Flotilla's webhook verifies (the creator is
//! `system:masters`, a wrong secret is Unauthorized, another IAM user is authenticated but
//! Forbidden until `aws-auth` maps it to a group RBAC lets in); a pod in a Fargate profile's namespace is handed to `fargate-scheduler` and one
//! elsewhere keeps the default scheduler; DeleteCluster leaves no process behind.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::eks::{cluster_status, create_cluster, create_fargate_profile, eks_role};
use common::{ACCESS_KEY, SECRET_KEY, Server, free_port, stdout, wait_for};

use serde_json::Value;

/// Processes whose command line names `dir` (the cluster's, under the server's data dir).
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline =
                String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?).replace('\0', " ");
            (cmdline.contains(&needle) && !cmdline.contains("flotilla up")).then_some((pid, cmdline))
        })
        .collect()
}

/// Kills what a failed test left running of its planes (they outlive Flotilla by design).
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in processes_in(&self.0) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// kubectl with `kubeconfig`, its exec plugin (`aws eks get-token`) signing with `key`/`secret`.
fn kubectl(server: &Server, kubeconfig: &Path, key: &str, secret: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap()
}

fn admin(server: &Server, kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl(server, kubeconfig, ACCESS_KEY, SECRET_KEY, args)
}

#[test]
fn kubectl_through_eks_tokens_and_profile_admission() {
    let binaries = flotilla_k8s::test_binaries().expect("the Kubernetes test binaries");
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().join("eks"));
    let flags = [
        "--no-agent".into(),
        "--kubernetes-bin".into(),
        binaries.display().to_string(),
        "--eks-webhook-listen".into(),
        format!("127.0.0.1:{}", free_port()),
    ];
    let mut server = Server::start_flags_in(data.path(), &flags);

    let role_arn = eks_role(&server, "eks");
    create_cluster(&server, "demo", &role_arn);

    // The kubeconfig the CLI writes, and kubectl through its tokens.
    let kubeconfig = server.data_dir.join("kubeconfig-test");
    let out = server.aws(&["eks", "update-kubeconfig", "--name", "demo", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = admin(&server, &kubeconfig, &["get", "ns", "-o", "name"]);
    assert!(out.status.success(), "kubectl get ns: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("namespace/kube-system"), "{}", stdout(&out));
    let out = admin(&server, &kubeconfig, &["auth", "whoami", "-o", "json"]);
    if out.status.success() {
        // SelfSubjectReview is 1.27+; on the 1.20 API server this check is skipped.
        let me: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(me["status"]["userInfo"]["username"], "kubernetes-admin");
    }

    // A token signed with a wrong secret.
    let out = kubectl(&server, &kubeconfig, ACCESS_KEY, "not-the-secret", &["get", "ns"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));

    // Another IAM user: authenticated (as its ARN), but nothing in RBAC lets it list namespaces.
    server.aws_json(&["iam", "create-user", "--user-name", "bob"]);
    let key = server.aws_json(&["iam", "create-access-key", "--user-name", "bob"]);
    let (bob_key, bob_secret) =
        (key["AccessKey"]["AccessKeyId"].as_str().unwrap(), key["AccessKey"]["SecretAccessKey"].as_str().unwrap());
    let out = kubectl(&server, &kubeconfig, bob_key, bob_secret, &["get", "ns"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");
    assert!(err.contains("arn:aws:iam::") && err.contains("user/bob"), "bob is known by his ARN: {err}");

    // Mapped in aws-auth (kube-system) to `bob` in group `readers`, which may list namespaces.
    let aws_auth = server.data_dir.join("aws-auth.yaml");
    std::fs::write(
        &aws_auth,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: aws-auth, namespace: kube-system}}\ndata:\n  mapUsers: |\n    - userarn: {}\n      username: bob\n      groups: [readers]\n",
            server.aws_json(&["iam", "get-user", "--user-name", "bob"])["User"]["Arn"].as_str().unwrap()
        ),
    )
    .unwrap();
    for args in [
        vec!["apply", "-f", aws_auth.to_str().unwrap()],
        vec!["create", "clusterrole", "ns-reader", "--verb=get,list", "--resource=namespaces"],
        vec!["create", "clusterrolebinding", "ns-readers", "--clusterrole=ns-reader", "--group=readers"],
    ] {
        let out = admin(&server, &kubeconfig, &args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The API server caches a token's review (30 s); each kubectl run signs a new one.
    wait_for("bob to list namespaces", Duration::from_secs(60), || {
        kubectl(&server, &kubeconfig, bob_key, bob_secret, &["get", "ns"]).status.success()
    });
    let out = kubectl(&server, &kubeconfig, bob_key, bob_secret, &["get", "pods", "-n", "default"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("User \"bob\""), "bob is known by his mapped name: {err}");

    // A Fargate profile for namespace `fargate`.
    create_fargate_profile(&server, "demo", "fp-default", &role_arn, None, "fargate");
    let out = admin(&server, &kubeconfig, &["create", "namespace", "fargate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (namespace, pod) in [("fargate", "in-profile"), ("default", "outside")] {
        // The namespace's default service account comes from the controller manager.
        wait_for("the pod to be created", Duration::from_secs(60), || {
            admin(
                &server,
                &kubeconfig,
                &["run", pod, "-n", namespace, "--image=busybox", "--restart=Never", "--", "sleep", "3600"],
            )
            .status
            .success()
        });
    }
    let field = |namespace: &str, pod: &str, path: &str| {
        let out =
            admin(&server, &kubeconfig, &["get", "pod", pod, "-n", namespace, "-o", &format!("jsonpath={{{path}}}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        stdout(&out)
    };
    assert_eq!(field("fargate", "in-profile", ".spec.schedulerName"), "fargate-scheduler");
    assert_eq!(field("fargate", "in-profile", ".metadata.labels.eks\\.amazonaws\\.com/fargate-profile"), "fp-default");
    assert_eq!(field("default", "outside", ".spec.schedulerName"), "default-scheduler");

    // Flotilla killed and started again: the plane ran on meanwhile and is adopted, and
    // tokens are checked by the new process.
    let cluster_dir = server.data_dir.join("eks").join("demo");
    let pids = || -> Vec<u32> {
        let mut pids: Vec<u32> = processes_in(&cluster_dir).into_iter().map(|(pid, _)| pid).collect();
        pids.sort();
        pids
    };
    let before = pids();
    assert_eq!(before.len(), 3, "etcd, kube-apiserver, kube-controller-manager: {:?}", processes_in(&cluster_dir));
    server.kill9();
    drop(server);
    let server = Server::start_flags_in(data.path(), &flags);
    assert_eq!(cluster_status(&server, "demo"), "ACTIVE");
    wait_for("kubectl through the restarted Flotilla", Duration::from_secs(60), || {
        admin(&server, &kubeconfig, &["get", "pod", "in-profile", "-n", "fargate"]).status.success()
    });
    assert_eq!(pids(), before, "the running plane is adopted, not started again");

    // Deleting the cluster stops its processes and removes its directory.
    server.aws_json(&[
        "eks",
        "delete-fargate-profile",
        "--cluster-name",
        "demo",
        "--fargate-profile-name",
        "fp-default",
    ]);
    wait_for("the profile to go", Duration::from_secs(60), || {
        server
            .aws_command()
            .args(["eks", "describe-fargate-profile", "--cluster-name", "demo", "--fargate-profile-name", "fp-default"])
            .output()
            .is_ok_and(|o| !o.status.success())
    });
    server.aws_json(&["eks", "delete-cluster", "--name", "demo"]);
    wait_for("the cluster to go", Duration::from_secs(120), || {
        !server.aws_command().args(["eks", "describe-cluster", "--name", "demo"]).output().unwrap().status.success()
    });
    assert_eq!(processes_in(&cluster_dir), vec![], "nothing of the plane runs");
    assert!(!cluster_dir.exists());
}
