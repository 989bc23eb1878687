//! The dev cluster as the many-hosts tests drive it (`cluster.rs`, `cluster_lb.rs`): one
//! `scripts/dev-cluster.sh` cluster per test binary, with its AWS CLI and its logs. Only one
//! runs at a time on a machine (fixed names and ports).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{self, wait_for};
use serde_json::{Value, json};

/// The agents' fence time and the control plane's grace (fence plus a margin), in seconds.
pub const FENCE: &str = "3";
pub const GRACE: &str = "6";
/// Starting a task on this loaded two-core machine: pull (cached after the first), sandbox,
/// interface. Generous.
pub const START: Duration = Duration::from_secs(60);
pub const SETTLE: Duration = Duration::from_secs(180);
pub const PORT: u16 = 8080;
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// A running dev cluster; `down` on drop, even when the test failed.
pub struct Cluster {
    pub dir: PathBuf,
    pub _tmp: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub endpoints: Vec<String>,
    pub image: String,
}

/// A dev cluster whose hosts pull busybox from a real registry over TLS on this machine's
/// non-loopback address (the hosts' namespaces reach it through the underlay bridge; the agents
/// trust its CA through `FLOTILLA_REGISTRY_CA`). The cluster goes down first when dropped.
pub struct World {
    pub cluster: Cluster,
    _ca: tempfile::NamedTempFile,
    _registry: flotilla_image::testing::Registry,
    _rt: tokio::runtime::Runtime,
}

impl World {
    pub fn start() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let registry = rt
            .block_on(flotilla_image::testing::Registry::start_tls(flotilla_image::testing::Anonymous))
            .expect("a registry the hosts' namespaces reach");
        rt.block_on(registry.push_image("busybox", Some("latest"), &flotilla_image::testing::busybox_image()));
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), registry.ca_pem().unwrap()).unwrap();
        let cluster = Cluster::up(registry.reference("busybox:latest"), ca.path());
        cluster.json(&["ecs", "create-cluster", "--cluster-name", "default"]);
        World { cluster, _ca: ca, _registry: registry, _rt: rt }
    }
}

impl Cluster {
    pub fn up(image: String, registry_ca: &Path) -> Cluster {
        let tmp = tempfile::Builder::new().prefix("flotilla-cluster-test.").tempdir_in("/var/tmp").unwrap();
        let dir = tmp.path().join("cluster");
        // Our own copies of the binaries: the target dir's may be rebuilt while the test runs.
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let built = PathBuf::from(env!("CARGO_BIN_EXE_flotilla"));
        let shim = built.with_file_name("flotilla-shim");
        assert!(shim.is_file(), "no {} (cargo build -p flotilla-shim)", shim.display());
        std::fs::copy(&built, bin.join("flotilla")).unwrap();
        std::fs::copy(&shim, bin.join("flotilla-shim")).unwrap();
        let out = Command::new(script())
            .arg("up")
            .arg(&dir)
            .env("FLOTILLA_BIN", bin.join("flotilla"))
            .env("FLOTILLA_AGENT_FENCE", FENCE)
            .env("FLOTILLA_HOST_GRACE", GRACE)
            .env("FLOTILLA_REGISTRY_CA", registry_ca)
            .env("FLOTILLA_LOG", "info")
            .output()
            .unwrap();
        let mut cluster = Cluster { dir: dir.clone(), _tmp: tmp, env: Vec::new(), endpoints: Vec::new(), image };
        assert!(out.status.success(), "dev-cluster.sh up failed: {}", String::from_utf8_lossy(&out.stderr));
        cluster.env = parse_env(&std::fs::read_to_string(dir.join("env")).unwrap());
        let endpoints = cluster.env.iter().find(|(k, _)| k == "FLOTILLA_ENDPOINTS").unwrap().1.clone();
        cluster.endpoints = endpoints.split_whitespace().map(str::to_owned).collect();
        assert_eq!(cluster.endpoints.len(), 2, "{endpoints}");
        cluster
    }

    /// `dev-cluster.sh CMD DIR ARGS...`, which must succeed.
    pub fn script(&self, cmd: &str, args: &[&str]) {
        let out = Command::new(script()).arg(cmd).arg(&self.dir).args(args).output().unwrap();
        assert!(out.status.success(), "dev-cluster.sh {cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The AWS CLI against server `n` (1 or 2), with the cluster's credentials only.
    pub fn aws_command(&self, n: usize, args: &[&str]) -> Command {
        let mut command = Command::new("aws");
        command
            .arg("--endpoint-url")
            .arg(&self.endpoints[n - 1])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE");
        command
    }

    pub fn aws_on(&self, n: usize, args: &[&str]) -> Output {
        self.aws_command(n, args).output().expect("the aws CLI is installed")
    }

    pub fn json_on(&self, n: usize, args: &[&str]) -> Value {
        let out = self.aws_on(n, args);
        assert!(out.status.success(), "aws {args:?} on server {n} failed: {}", String::from_utf8_lossy(&out.stderr));
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("aws prints JSON")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.json_on(1, args)
    }

    /// `flotilla --output json hosts` on server 1, by host id.
    pub fn hosts(&self) -> BTreeMap<String, Value> {
        let out = Command::new(self._tmp.path().join("bin/flotilla"))
            .args(["--output", "json", "hosts"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "flotilla hosts failed: {}", String::from_utf8_lossy(&out.stderr));
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        listed["hosts"].as_array().unwrap().iter().map(|h| (h["id"].as_str().unwrap().to_owned(), h.clone())).collect()
    }

    pub fn register(&self, family: &str, name: &str, command: &[&str]) -> String {
        self.register_ports(family, name, command, &[])
    }

    /// A revision whose container maps `ports` (TCP, as load balancers' targets need).
    pub fn register_ports(&self, family: &str, name: &str, command: &[&str], ports: &[u16]) -> String {
        let port_mappings: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p, "protocol": "tcp"})).collect();
        let body = json!({
            "family": family,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": [{
                "name": name,
                "image": self.image,
                "essential": true,
                "command": command,
                "portMappings": port_mappings,
                // sh as PID 1 ignores SIGTERM, as on Fargate; keep stops quick.
                "stopTimeout": 2,
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": "/ecs/cluster-test", "awslogs-region": "us-east-1",
                    "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}},
            }],
        });
        let out = self.json(&["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
        out["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned()
    }

    pub fn run(&self, task_definition: &str, subnet: &str, groups: &[&str]) -> String {
        let network = format!(
            "awsvpcConfiguration={{subnets=[{subnet}],securityGroups=[{}],assignPublicIp=DISABLED}}",
            groups.join(",")
        );
        let out = self.json(&[
            "ecs",
            "run-task",
            "--task-definition",
            task_definition,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &network,
        ]);
        assert_eq!(out["failures"], json!([]), "{out}");
        out["tasks"][0]["taskArn"].as_str().unwrap().to_owned()
    }

    pub fn describe(&self, tasks: &[String]) -> Vec<Value> {
        let mut args = vec!["ecs", "describe-tasks", "--tasks"];
        args.extend(tasks.iter().map(String::as_str));
        self.json(&args)["tasks"].as_array().unwrap().clone()
    }

    pub fn wait_status(&self, task: &str, status: &str, deadline: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(&format!("{task} {status}"), deadline, || {
            last = self.describe(&[task.to_owned()])[0].clone();
            last["lastStatus"] == status
        });
        last
    }

    /// One container's log lines, oldest first (empty until the stream exists).
    pub fn logs(&self, task: &str, container: &str) -> Vec<String> {
        let stream = format!("ecs/{container}/{}", id_of(task));
        let out = self.aws_on(
            1,
            &["logs", "get-log-events", "--log-group-name", "/ecs/cluster-test", "--log-stream-name", &stream],
        );
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    }

    /// The service's live tasks (ListTasks, then DescribeTasks).
    pub fn service_tasks(&self, service: &str) -> Vec<Value> {
        let listed = self.json(&["ecs", "list-tasks", "--service-name", service]);
        let arns: Vec<String> =
            listed["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        if arns.is_empty() { Vec::new() } else { self.describe(&arns) }
    }

    /// Waits until the service has exactly `n` live tasks, all RUNNING.
    pub fn wait_service_running(&self, service: &str, n: usize, deadline: Duration) -> Vec<Value> {
        let mut tasks = Vec::new();
        wait_for(&format!("{n} RUNNING tasks of {service}"), deadline, || {
            tasks = self.service_tasks(service);
            tasks.len() == n && tasks.iter().all(|t| t["lastStatus"] == "RUNNING")
        });
        tasks
    }

    /// Processes on this machine that belong to task `id` of host `host` (its shim, named by
    /// its task dir, and whatever its cgroup holds).
    pub fn task_processes(&self, host: &str, id: &str) -> usize {
        let task_dir = format!("{}/{host}/tasks/{id}", self.dir.display());
        let shims = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).contains(&task_dir))
            .count();
        let procs = cgroup_procs(&PathBuf::from(format!("/sys/fs/cgroup/flotilla/{id}")));
        shims + procs
    }

    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) else { return };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 40 lines)", entry.path().display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let out = Command::new(script()).arg("down").arg(&self.dir).output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("dev-cluster.sh down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev-cluster.sh")
}

/// `export K=V` / `export K="V"` lines.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Processes in a cgroup and its descendants; 0 when it does not exist.
pub fn cgroup_procs(dir: &Path) -> usize {
    let own = std::fs::read_to_string(dir.join("cgroup.procs")).map_or(0, |s| s.lines().count());
    let children: usize = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| cgroup_procs(&e.path()))
        .sum();
    own + children
}

pub fn id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

pub fn zone_of(task: &Value) -> &str {
    task["availabilityZone"].as_str().unwrap_or_default()
}

pub fn per_zone(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in tasks {
        *out.entry(zone_of(t).to_owned()).or_default() += 1;
    }
    out
}

pub fn private_ip(task: &Value) -> String {
    common::private_ip(task).to_string()
}

/// The default subnet of each zone, by zone.
pub fn zone_subnets(c: &Cluster) -> HashMap<String, String> {
    let subnets = c.json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["AvailabilityZone"].as_str().unwrap().to_owned(), s["SubnetId"].as_str().unwrap().to_owned()))
        .collect()
}

pub fn security_group(c: &Cluster, vpc: &str, name: &str) -> String {
    let out = c.json(&["ec2", "create-security-group", "--group-name", name, "--description", name, "--vpc-id", vpc]);
    out["GroupId"].as_str().unwrap().to_owned()
}

/// A task that tries `http://ip:8080/` every 300 ms and logs `peer:reached` or `peer:refused`.
pub fn prober_command(ip: &str) -> Vec<String> {
    let body = format!(
        // (Debian's busybox wget crashes with -T; `timeout` bounds it instead.)
        "while true; do if timeout 2 wget -q -O - http://{ip}:{PORT}/ >/dev/null 2>&1; \
         then echo peer:reached; else echo peer:refused; fi; sleep 0.3; done"
    );
    vec!["sh".into(), "-c".into(), body]
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
