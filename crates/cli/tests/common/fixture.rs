//! A server with a cluster, a real registry holding busybox, and helpers to register, run
//! and watch tasks through the AWS CLI.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Server, wait_for};

pub struct Fixture {
    pub server: Server,
    /// A default subnet of the default VPC, which exists from the server's first start.
    pub subnet: String,
    pub _registry: flotilla_image::testing::Registry,
    pub image: String,
    pub rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_server_flags(&[])
    }

    /// As [`Fixture::new`], the server started with more `flotilla up` flags.
    pub fn with_server_flags(flags: &[&str]) -> Fixture {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let registry = rt.block_on(flotilla_image::testing::Registry::start());
        rt.block_on(registry.push_image("busybox", Some("latest"), &flotilla_image::testing::busybox_image()));
        let image = registry.reference("busybox:latest");
        let server = Server::start_with(flags);
        server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
        let subnets = server.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
        let subnet = subnets["Subnets"][0]["SubnetId"].as_str().expect("a default subnet").to_owned();
        Fixture { server, subnet, _registry: registry, image, rt }
    }

    pub fn register(&self, family: &str, containers: Value, extra: Value) -> String {
        let mut body = json!({
            "family": family,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": containers,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let out = self.server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
        out["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned()
    }

    pub fn container(&self, name: &str, command: &[&str]) -> Value {
        json!({
            "name": name,
            "image": self.image,
            "essential": true,
            "command": command,
            // sh as PID 1 ignores SIGTERM, as on Fargate; keep StopTask quick in tests.
            "stopTimeout": 2,
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/test", "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}},
        })
    }

    /// The `--network-configuration` value for this fixture's subnet.
    pub fn network(&self) -> String {
        format!("awsvpcConfiguration={{subnets=[{}],assignPublicIp=DISABLED}}", self.subnet)
    }

    pub fn run(&self, task_definition: &str) -> String {
        self.run_in(task_definition, &self.network(), &[])
    }

    /// RunTask with a `--network-configuration` value and any further arguments.
    pub fn run_in(&self, task_definition: &str, network: &str, more: &[&str]) -> String {
        let mut args = vec![
            "ecs",
            "run-task",
            "--task-definition",
            task_definition,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            network,
        ];
        args.extend_from_slice(more);
        let out = self.server.aws_json(&args);
        assert_eq!(out["failures"], json!([]), "{out}");
        out["tasks"][0]["taskArn"].as_str().unwrap().to_owned()
    }

    pub fn describe(&self, task: &str) -> Value {
        let out = self.server.aws_json(&["ecs", "describe-tasks", "--tasks", task]);
        out["tasks"][0].clone()
    }

    pub fn wait_status(&self, task: &str, status: &str, deadline: Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let last = self.describe(task);
            if last["lastStatus"] == status {
                return last;
            }
            if start.elapsed() >= deadline {
                let logs: Vec<(String, Vec<String>)> = last["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str())
                    .map(|n| (n.to_owned(), self.logs(task, n)))
                    .collect();
                panic!("task never became {status} within {deadline:?}; last seen: {last:#}; logs: {logs:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every message of one container's log stream, oldest first.
    pub fn logs(&self, task: &str, container: &str) -> Vec<String> {
        let id = task.rsplit('/').next().unwrap();
        let stream = format!("ecs/{container}/{id}");
        let out = self.server.aws(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/ecs/test",
            "--log-stream-name",
            &stream,
            "--start-from-head",
        ]);
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    }

    pub fn wait_log(&self, task: &str, container: &str, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        wait_for(&format!("log line containing {needle:?}"), Duration::from_secs(60), || {
            lines = self.logs(task, container);
            lines.iter().any(|l| l.contains(needle))
        });
        lines
    }

    /// StopTask for each, then waits until all are STOPPED; their final descriptions.
    pub fn stop_all(&self, tasks: &[&str]) -> Vec<Value> {
        for task in tasks {
            self.server.aws_json(&["ecs", "stop-task", "--task", task]);
        }
        tasks.iter().map(|t| self.wait_status(t, "STOPPED", Duration::from_secs(60))).collect()
    }

    /// `n` RunTask calls at once through the Rust client, one task each in `subnet`.
    pub fn run_concurrently(&self, task_definition: &str, n: usize, subnet: &str) -> Vec<String> {
        let client = self.server.client();
        self.rt.block_on(async {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let (client, td, subnet) = (client.clone(), task_definition.to_owned(), subnet.to_owned());
                    tokio::spawn(async move {
                        let body = json!({"taskDefinition": td, "launchType": "FARGATE",
                            "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet]}}});
                        let out = client.ecs("RunTask", body).await.unwrap();
                        out["tasks"][0]["taskArn"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await.unwrap());
            }
            out
        })
    }
}
