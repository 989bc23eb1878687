//! `flotilla server` and `flotilla agent` as separate processes (root: the agent runs real
//! tasks): a host is added with `flotilla hosts add`, its agent connects over the link with
//! the token, a task placed on it reaches RUNNING through the AWS CLI, and its output is read
//! back from the server with `aws logs get-log-events`. A wrong token is refused with what to
//! do next, and a revoked one disconnects the agent.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ACCESS_KEY, SECRET_KEY, free_port, stdout, wait_for};
use serde_json::{Value, json};

/// One `flotilla server` process.
struct ServerProc {
    child: Child,
    /// Not killed by the test.
    alive: bool,
    api: u16,
    link: u16,
    dir: tempfile::TempDir,
}

impl ServerProc {
    /// A server on `store` (its data dir's embedded store when `None`). With `credentials`
    /// it is given the tests' root credentials; without, it makes its own (and takes the
    /// store's if another server wrote them first).
    fn start(store: Option<&str>, credentials: bool) -> ServerProc {
        let (api, link) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .args(["server", "--listen", &format!("127.0.0.1:{api}"), "--agent-listen", &format!("127.0.0.1:{link}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("FLOTILLA_LOG", "warn")
            .env_remove("FLOTILLA_ACCESS_KEY_ID")
            .env_remove("FLOTILLA_SECRET_ACCESS_KEY")
            .stdout(Stdio::null());
        if let Some(store) = store {
            command.args(["--store", store]);
        }
        if credentials {
            command.env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY).env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY);
        }
        let child = command.spawn().expect("flotilla server starts");
        wait_for("the server to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", link)).is_ok()
        });
        ServerProc { child, alive: true, api, link, dir }
    }

    fn kill9(&mut self) {
        self.alive = false;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers, an agent and the agent's network namespace; stops the tasks left running and
/// everything else on drop, so a failing test leaves nothing behind.
struct Cluster {
    servers: Vec<ServerProc>,
    agent: Option<Child>,
    agent_dir: tempfile::TempDir,
    netns: String,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::with_servers(vec![ServerProc::start(None, true)])
    }

    fn with_servers(servers: Vec<ServerProc>) -> Cluster {
        let agent_dir = tempfile::tempdir().unwrap();
        let netns = format!("flt-roles-{}-{}", std::process::id(), servers[0].api);
        let added = Command::new("ip").args(["netns", "add", &netns]).status().expect("ip runs");
        assert!(added.success(), "ip netns add {netns} failed (this test needs root)");
        let _ = Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]).status();
        Cluster { servers, agent: None, agent_dir, netns }
    }

    /// The first server that is still running: where the API calls of the test go.
    fn api(&self) -> u16 {
        self.servers.iter().find(|s| s.alive).expect("a running server").api
    }

    fn flotilla(&self, args: &[&str]) -> Output {
        let api = self.api();
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(args)
            .env("FLOTILLA_ENDPOINT", format!("http://127.0.0.1:{api}"))
            .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("FLOTILLA_DATA_DIR", self.servers[0].dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn agent_command(&self, token: &str, data_dir: &Path) -> Command {
        let servers: Vec<String> = self.servers.iter().map(|s| format!("http://127.0.0.1:{}", s.link)).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .args(["agent", "--server", &servers.join(","), "--token", token])
            .args([
                "--host-id",
                "host-a",
                "--zone",
                "us-east-1a",
                "--net-namespace",
                &format!("/run/netns/{}", self.netns),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("FLOTILLA_LOG", "warn")
            .stdout(Stdio::null());
        command
    }

    fn aws(&self, args: &[&str]) -> Output {
        let api = self.api();
        self.aws_on(api, args)
    }

    fn aws_on(&self, api: u16, args: &[&str]) -> Output {
        Command::new("aws")
            .arg("--endpoint-url")
            .arg(format!("http://127.0.0.1:{api}"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the aws CLI is installed")
    }

    fn aws_json(&self, args: &[&str]) -> Value {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn hosts(&self) -> Vec<Value> {
        let out = self.flotilla(&["--output", "json", "hosts"]);
        assert!(out.status.success(), "flotilla hosts failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["hosts"].as_array().cloned().unwrap_or_default()
    }

    fn has_sandboxes(&self) -> bool {
        std::fs::read_dir(self.agent_dir.path().join("tasks"))
            .map(|d| d.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
            .unwrap_or(false)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Tasks outlive their agent by design: stop them while the agent is still there.
        let any_server = self.servers.iter().any(|s| s.alive);
        if any_server && self.has_sandboxes() && self.agent.as_mut().is_some_and(|a| matches!(a.try_wait(), Ok(None))) {
            let listed = self.aws(&["ecs", "list-tasks"]);
            let listed: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
            for task in listed["taskArns"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let _ = self.aws(&["ecs", "stop-task", "--task", task]);
            }
            let start = Instant::now();
            while self.has_sandboxes() && start.elapsed() < Duration::from_secs(90) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for child in self.agent.iter_mut().chain(self.servers.iter_mut().map(|s| &mut s.child)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "delete", &self.netns]).status();
    }
}

/// Waits for `child` to exit; its exit status and stderr.
fn exited(mut child: Child, deadline: Duration) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status, stderr);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_task_runs_on_a_remote_agent_and_its_logs_stay_with_the_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = rt.block_on(flotilla_image::testing::Registry::start());
    rt.block_on(registry.push_image("busybox", Some("latest"), &flotilla_image::testing::busybox_image()));
    let image = registry.reference("busybox:latest");
    let mut cluster = Cluster::start();

    // A host nobody added is refused, and told how to be added.
    let stray = tempfile::tempdir().unwrap();
    let child = cluster.agent_command("not-a-token", stray.path()).stderr(Stdio::piped()).spawn().unwrap();
    let (status, stderr) = exited(child, Duration::from_secs(20));
    assert!(!status.success());
    assert!(stderr.contains("flotilla hosts add host-a"), "{stderr}");

    let added = cluster.flotilla(&["--output", "json", "hosts", "add", "host-a"]);
    assert!(added.status.success(), "hosts add failed: {}", String::from_utf8_lossy(&added.stderr));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let token = added["token"].as_str().expect("a token").to_owned();
    assert!(token.len() >= 32, "{token}");
    let agent_log = cluster.agent_dir.path().join("agent.log");
    let log_file = std::fs::File::create(&agent_log).unwrap();
    cluster.agent = Some(cluster.agent_command(&token, cluster.agent_dir.path()).stderr(log_file).spawn().unwrap());
    wait_for("host-a to register", Duration::from_secs(60), || {
        cluster.hosts().iter().any(|h| h["id"] == "host-a" && h["availabilityZone"] == "us-east-1a")
    });

    cluster.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let subnets = cluster.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let subnet = subnets["Subnets"][0]["SubnetId"].as_str().unwrap().to_owned();
    let definition = json!({
        "family": "remote",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "app",
            "image": image,
            "essential": true,
            // Its output, then what the VPC resolver says of a Cloud Map name, over and over.
            "command": ["sh", "-c", "echo hello from host-a; while true; do echo \"dns:$(nslookup web.corp.local | awk '/^Name:/{n=1} n && /^Address/{print $NF}')\"; sleep 0.5; done"],
            "stopTimeout": 2,
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/remote", "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}},
        }],
    });
    cluster.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &definition.to_string()]);
    let network = format!("awsvpcConfiguration={{subnets=[{subnet}],assignPublicIp=DISABLED}}");
    let run = cluster.aws_json(&[
        "ecs",
        "run-task",
        "--task-definition",
        "remote",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    assert_eq!(run["failures"], json!([]), "{run}");
    let task = run["tasks"][0]["taskArn"].as_str().unwrap().to_owned();

    let mut last = Value::Null;
    wait_for("the task to run on host-a", Duration::from_secs(120), || {
        last = cluster.aws_json(&["ecs", "describe-tasks", "--tasks", &task])["tasks"][0].clone();
        assert_ne!(last["lastStatus"], "STOPPED", "the task stopped: {last:#}");
        last["lastStatus"] == "RUNNING"
    });
    assert!(last["containers"][0]["runtimeId"].is_string(), "{last:#}");

    // The output went through the link to the server's log store.
    let stream = format!("ecs/app/{}", task.rsplit('/').next().unwrap());
    let output = || {
        let out = cluster.aws(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/ecs/remote",
            "--log-stream-name",
            &stream,
            "--start-from-head",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("the task's output in CloudWatch Logs", Duration::from_secs(60), || {
        output().contains("hello from host-a")
    });

    // A Cloud Map name registered on the server is answered by the remote host's VPC resolver.
    let vpcs = cluster.aws_json(&["ec2", "describe-vpcs", "--filters", "Name=isDefault,Values=true"]);
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_owned();
    let op =
        cluster.aws_json(&["servicediscovery", "create-private-dns-namespace", "--name", "corp.local", "--vpc", &vpc]);
    let op_id = op["OperationId"].as_str().unwrap().to_owned();
    let mut namespace = String::new();
    wait_for("the namespace", Duration::from_secs(10), || {
        let op = cluster.aws_json(&["servicediscovery", "get-operation", "--operation-id", &op_id]);
        namespace = op["Operation"]["Targets"]["NAMESPACE"].as_str().unwrap_or_default().to_owned();
        op["Operation"]["Status"] == "SUCCESS"
    });
    let dns_config = format!("NamespaceId={namespace},DnsRecords=[{{Type=A,TTL=1}}]");
    let service =
        cluster.aws_json(&["servicediscovery", "create-service", "--name", "web", "--dns-config", &dns_config]);
    let service_id = service["Service"]["Id"].as_str().unwrap().to_owned();
    cluster.aws_json(&[
        "servicediscovery",
        "register-instance",
        "--service-id",
        &service_id,
        "--instance-id",
        "web-1",
        "--attributes",
        "AWS_INSTANCE_IPV4=10.1.2.3",
    ]);
    wait_for("the name to resolve on host-a", Duration::from_secs(60), || output().contains("dns:10.1.2.3"));

    // The hosts table counts the task and what it reserves.
    let hosts = cluster.hosts();
    let host = hosts.iter().find(|h| h["id"] == "host-a").unwrap();
    assert_eq!(host["runningTasksCount"], 1, "{host}");
    assert_eq!(host["allocatedCpu"], 256, "{host}");
    let table = stdout(&cluster.flotilla(&["hosts"]));
    assert!(table.contains("host-a") && table.contains("us-east-1a") && table.contains("ACTIVE"), "{table}");

    let stopped = cluster.aws_json(&["ecs", "stop-task", "--task", &task]);
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    wait_for("the task to stop", Duration::from_secs(60), || {
        cluster.aws_json(&["ecs", "describe-tasks", "--tasks", &task])["tasks"][0]["lastStatus"] == "STOPPED"
    });
    wait_for("the sandbox to go", Duration::from_secs(60), || !cluster.has_sandboxes());

    // Revoked: the server closes the agent's stream at once, and the agent says why.
    let revoked = cluster.flotilla(&["hosts", "revoke", "host-a"]);
    assert!(revoked.status.success(), "revoke failed: {}", String::from_utf8_lossy(&revoked.stderr));
    wait_for("the agent to be told its token was revoked", Duration::from_secs(10), || {
        std::fs::read_to_string(&agent_log).is_ok_and(|l| l.contains("token was revoked"))
    });
    let again = cluster.flotilla(&["hosts", "revoke", "host-a"]);
    assert!(!again.status.success(), "a host without a token cannot be revoked again");
}

/// Registers a task definition that prints and sleeps, and runs it through the server at
/// `api`; its ARN.
fn run_sleeper(cluster: &Cluster, api: u16, image: &str, family: &str) -> String {
    let definition = json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "app", "image": image, "essential": true, "stopTimeout": 2,
            "command": ["sh", "-c", "echo started; sleep 600"],
        }],
    });
    let out = cluster.aws_on(api, &["ecs", "register-task-definition", "--cli-input-json", &definition.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let subnets = cluster.aws_on(api, &["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let subnets: Value = serde_json::from_slice(&subnets.stdout).unwrap();
    let subnet = subnets["Subnets"][0]["SubnetId"].as_str().unwrap();
    let network = format!("awsvpcConfiguration={{subnets=[{subnet}],assignPublicIp=DISABLED}}");
    let out = cluster.aws_on(
        api,
        &[
            "ecs",
            "run-task",
            "--task-definition",
            family,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &network,
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["failures"], json!([]), "{run}");
    run["tasks"][0]["taskArn"].as_str().unwrap().to_owned()
}

fn wait_running(cluster: &Cluster, api: u16, task: &str) {
    wait_for(&format!("{task} to run"), Duration::from_secs(120), || {
        let out = cluster.aws_on(api, &["ecs", "describe-tasks", "--tasks", task]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_ne!(v["tasks"][0]["lastStatus"], "STOPPED", "the task stopped: {v:#}");
        v["tasks"][0]["lastStatus"] == "RUNNING"
    });
}

#[test]
fn two_servers_on_etcd_serve_alike_and_the_agent_moves_to_the_survivor() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(flotilla_store::testing::EtcdCluster::start(3));
    let registry = rt.block_on(flotilla_image::testing::Registry::start());
    rt.block_on(registry.push_image("busybox", Some("latest"), &flotilla_image::testing::busybox_image()));
    let image = registry.reference("busybox:latest");
    // The second server makes credentials of its own, then takes the store's (the first's).
    let first = ServerProc::start(Some(&etcd.url()), true);
    let second = ServerProc::start(Some(&etcd.url()), false);
    let mut cluster = Cluster::with_servers(vec![first, second]);
    let second_api = cluster.servers[1].api;
    let listed = cluster.aws_on(second_api, &["ecs", "list-clusters"]);
    assert!(
        listed.status.success(),
        "the first server's keys work on the second: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(cluster.servers[1].dir.path().join("credentials.json")).unwrap())
            .unwrap();
    assert_eq!(recorded["accessKeyId"], ACCESS_KEY, "the second server's data dir records the shared keys");

    // A host added through one server connects through either; tasks run through the other.
    let added = cluster.flotilla(&["--output", "json", "hosts", "add", "host-a"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let token = serde_json::from_slice::<Value>(&added.stdout).unwrap()["token"].as_str().unwrap().to_owned();
    cluster.agent = Some(cluster.agent_command(&token, cluster.agent_dir.path()).spawn().unwrap());
    wait_for("host-a to register", Duration::from_secs(60), || cluster.hosts().iter().any(|h| h["id"] == "host-a"));
    let out = cluster.aws_on(second_api, &["ecs", "create-cluster", "--cluster-name", "default"]);
    assert!(out.status.success());
    let before = run_sleeper(&cluster, second_api, &image, "before");
    wait_running(&cluster, second_api, &before);

    // The server the agent follows dies: it moves to the other and keeps taking tasks.
    cluster.servers[0].kill9();
    let after = run_sleeper(&cluster, second_api, &image, "after");
    wait_running(&cluster, second_api, &after);
    let out = cluster.aws_on(second_api, &["ecs", "describe-tasks", "--tasks", &before]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING", "the first task is untouched: {v:#}");
    drop(cluster);
    drop(etcd);
}
