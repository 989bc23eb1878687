//! Runs the real `flotilla` binary for integration tests.
#![allow(dead_code)] // each test file uses a different part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod ecs;
pub mod eks;
pub mod elb;
pub mod exec;
pub mod fixture;
pub mod http;
pub mod python;

pub const ACCESS_KEY: &str = "AKIATESTFLOTILLA0001";
pub const SECRET_KEY: &str = "test-secret-key-for-flotilla-integration";

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The network namespace playing this server's host for task networking.
    pub netns: HostNetns,
    _dir: Option<tempfile::TempDir>,
}

/// The namespace a test server's task network lives in (`--net-namespace`): one per data
/// dir, so servers running in parallel never share routes, addresses or firewall tables,
/// every one can have the default VPC 172.31.0.0/16, and nothing reaches the machine's real
/// network. A restarted server on the same data dir finds the same one.
pub struct HostNetns {
    pub name: String,
    pub path: PathBuf,
}

impl HostNetns {
    /// The namespace's name for `data_dir`, without making it.
    fn named(data_dir: &Path) -> HostNetns {
        let hash = data_dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
        let name = format!("flt-test-{hash:08x}");
        let path = PathBuf::from(format!("/run/netns/{name}"));
        HostNetns { name, path }
    }

    fn for_data_dir(data_dir: &Path) -> HostNetns {
        let HostNetns { name, path } = HostNetns::named(data_dir);
        if !path.exists() {
            let added = Command::new("ip").args(["netns", "add", &name]).status().expect("ip runs");
            assert!(added.success() || path.exists(), "ip netns add {name} failed (tests need root)");
            let _ = Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status();
        }
        HostNetns { name, path }
    }

    /// A command run inside the namespace, i.e. from the server's "host" (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args);
        command
    }

    /// Connects from the host side to a task address; `Err` if nothing answers in `timeout`.
    pub fn connect(&self, to: std::net::SocketAddr, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
        flotilla_net::netns::run_in(&self.path, || std::net::TcpStream::connect_timeout(&to, timeout))?
    }

    fn delete(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A loopback port nobody listens on now, below the kernel's ephemeral range: a port the
/// kernel hands out for `:0` (a load balancer's listener in another test's server, a client's
/// source port) could be taken between this call and the server's bind, and once in CI a
/// server then exited on "address in use" while the test talked to that other listener.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ SEQ.fetch_add(0x9e37_79b9, Ordering::Relaxed);
    for _ in 0..1000 {
        // xorshift: spread the tests of one binary and of parallel binaries over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (from + (x % u64::from(span)) as u32) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The standard output of a `flotilla` run that must have succeeded.
pub fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "flotilla failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cells of every line of a table (comfy-table's UTF-8 condensed preset: `│` borders, `┆`
/// between cells; no colour), header first;
/// rows wrapped onto continuation lines would show up as extra rows, which the checks catch.
pub fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| l.trim_matches('│').split(['│', '┆']).map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// Polls `check` until it returns true or `deadline` passes.
pub fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Starts a server on a fresh data dir.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut s = Server::start_in(&path);
        s._dir = Some(dir);
        s
    }

    /// Starts a server on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path) -> Server {
        Server::start_in_with(data_dir, &[])
    }

    /// As [`Server::start`], with more `flotilla up` flags (e.g. `--max-tasks 2`).
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start_in_with(dir.path(), extra);
        s._dir = Some(dir);
        s
    }

    fn start_in_with(data_dir: &Path, extra: &[&str]) -> Server {
        let netns = HostNetns::for_data_dir(data_dir);
        let mut flags = vec!["--net-namespace".to_owned(), netns.path.display().to_string()];
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        Server::spawn(data_dir, netns, &flags)
    }

    /// Starts a server on a fresh data dir with `hosts` simulated hosts (`--simulated-hosts`):
    /// tasks are placed, reach RUNNING and stop through the real API, control plane and
    /// store, but have no containers and no task network, so no root is needed and `netns` is
    /// never made.
    pub fn start_simulated(hosts: u32) -> Server {
        Server::start_flags(&["--simulated-hosts".to_owned(), hosts.to_string()])
    }

    /// Starts a server on a fresh data dir that serves the API only (`--no-agent`): tasks stay
    /// PROVISIONING, so what is scheduled never changes under a test. No root needed.
    pub fn start_no_agent() -> Server {
        Server::start_flags(&["--no-agent".to_owned()])
    }

    /// As [`Server::start_flags`] on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_flags_in(data_dir: &Path, flags: &[String]) -> Server {
        Server::spawn(data_dir, HostNetns::named(data_dir), flags)
    }

    pub fn start_flags(flags: &[String]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let netns = HostNetns::named(dir.path());
        let mut s = Server::spawn(dir.path(), netns, flags);
        s._dir = Some(dir);
        s
    }

    fn spawn(data_dir: &Path, netns: HostNetns, flags: &[String]) -> Server {
        let mut server = Server::spawn_once(data_dir, netns, flags);
        // Once in CI a server started on the data dir of one just SIGKILLed (and waited for)
        // exited at once: "Database already open. Cannot acquire lock" on state.redb. Until
        // whoever held the lock is known, say who holds it now and start it once more.
        if !server.listens_within(Duration::from_secs(30)) {
            let holders = holders_of(&data_dir.join("state.redb"));
            eprintln!(
                "flotilla did not listen on {} (exited: {:?}); state.redb held by {holders:?}; starting it again",
                server.endpoint(),
                server.child.try_wait()
            );
            let _ = server.child.kill();
            let _ = server.child.wait();
            let netns = std::mem::replace(&mut server.netns, HostNetns::named(data_dir));
            std::mem::forget(server);
            server = Server::spawn_once(data_dir, netns, flags);
            assert!(server.listens_within(Duration::from_secs(30)), "flotilla did not listen on {}", server.endpoint());
        }
        server
    }

    fn listens_within(&mut self, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn spawn_once(data_dir: &Path, netns: HostNetns, flags: &[String]) -> Server {
        let port = free_port();
        // The suite runs more small tasks at once than this 2-core machine's default capacity
        // admits (tests of placement itself pass their own factors).
        let overcommit: &[&str] = if flags.iter().any(|f| f.starts_with("--overcommit")) {
            &[]
        } else {
            &["--overcommit-cpu", "64", "--overcommit-memory", "8"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .args(overcommit)
            .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("FLOTILLA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flotilla binary starts");
        Server { child, port, data_dir: data_dir.to_owned(), netns, _dir: None }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The AWS CLI (awscli v1 from PyPI) pointed at this server with the test credentials and
    /// no user configuration.
    pub fn aws_command(&self) -> Command {
        let mut command = Command::new("aws");
        command
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE");
        command
    }

    /// Runs the AWS CLI against this server.
    pub fn aws(&self, args: &[&str]) -> Output {
        self.aws_command().args(args).output().expect("the aws CLI is installed (pip install awscli)")
    }

    /// Runs the AWS CLI and parses its JSON answer; panics with stderr on failure.
    pub fn aws_json(&self, args: &[&str]) -> Value {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("aws prints JSON")
    }

    /// Runs the AWS CLI expecting failure; returns stderr.
    pub fn aws_err(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(!out.status.success(), "aws {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `aws servicediscovery discover-instances ARGS`. DiscoverInstances is modelled with the
    /// `data-` host prefix, which botocore puts in front of the endpoint's host
    /// (`data-127.0.0.1` resolves nowhere); disabling host-prefix injection sends it to the
    /// endpoint as given, where Flotilla serves it like every other operation.
    pub fn discover(&self, args: &[&str]) -> Value {
        let out = self
            .aws_command()
            .args(["servicediscovery", "discover-instances"])
            .args(args)
            .env("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
            .output()
            .expect("the aws CLI is installed");
        assert!(out.status.success(), "discover-instances failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs this project's CLI against the server.
    pub fn flotilla(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(args)
            .env("FLOTILLA_ENDPOINT", self.endpoint())
            .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("FLOTILLA_DATA_DIR", &self.data_dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    pub fn client(&self) -> flotilla_cli::client::Client {
        let creds =
            flotilla_api::Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
        flotilla_cli::client::Client::new(&self.endpoint(), creds, "us-east-1").unwrap()
    }
}

impl Server {
    /// Tasks outlive their server by design, so a test that ends with tasks running would
    /// leave shims, mounts, loop devices and cgroups on the machine. Stop them through the
    /// API and wait until their sandboxes are gone.
    fn stop_leftover_tasks(&mut self) {
        let tasks_dir = self.data_dir.join("tasks");
        // Task directories are named by task id; dot-entries (the scratch filesystem pool)
        // are the server's own.
        let has_sandboxes = || {
            std::fs::read_dir(&tasks_dir)
                .map(|d| d.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
                .unwrap_or(false)
        };
        if !has_sandboxes() || !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let clusters = self.aws(&["ecs", "list-clusters"]);
        let clusters: Value = serde_json::from_slice(&clusters.stdout).unwrap_or(Value::Null);
        let clusters: Vec<&str> =
            clusters["clusterArns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        // A service replaces the tasks stopped below: delete services first (forced, so a
        // test that failed above 0 is cleaned up too).
        for cluster in &clusters {
            let listed = self.aws(&["ecs", "list-services", "--cluster", cluster]);
            let listed: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
            for service in listed["serviceArns"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let _ = self.aws(&["ecs", "delete-service", "--cluster", cluster, "--service", service, "--force"]);
            }
        }
        for cluster in clusters {
            let listed = self.aws(&["ecs", "list-tasks", "--cluster", cluster]);
            let listed: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
            for task in listed["taskArns"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let _ = self.aws(&["ecs", "stop-task", "--cluster", cluster, "--task", task]);
            }
        }
        let start = Instant::now();
        while has_sandboxes() && start.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_leftover_tasks();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A server started again on this data dir makes a fresh one and re-attaches its
        // tasks' interfaces (attaching is idempotent).
        self.netns.delete();
    }
}

/// A task's private address, from the attachment DescribeTasks shows.
pub fn private_ip(task: &Value) -> std::net::Ipv4Addr {
    task_address(task).unwrap_or_else(|| panic!("no privateIPv4Address: {task:#}"))
}

/// One `name`/`value` detail of a task's first attachment (its elastic network interface).
pub fn attachment_detail<'a>(task: &'a Value, name: &str) -> Option<&'a str> {
    let details = task["attachments"][0]["details"].as_array()?;
    details.iter().find(|d| d["name"] == name)?["value"].as_str()
}

/// [`private_ip`] of a task that may not have an address yet (still provisioning).
pub fn task_address(task: &Value) -> Option<std::net::Ipv4Addr> {
    attachment_detail(task, "privateIPv4Address")?.parse().ok()
}

/// The seed's task definition (shared/seeds, "注册任务定义"), written to a file for
/// `--cli-input-json file://...`.
pub const SEED_TASK_DEFINITION: &str = r#"{
  "family": "fargate-task",
  "networkMode": "awsvpc",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "containerDefinitions": [
    {
      "name": "web-app",
      "image": "nginx:latest",
      "essential": true,
      "portMappings": [
        {
          "containerPort": 80,
          "hostPort": 80,
          "protocol": "tcp"
        }
      ],
      "logConfiguration": {
        "logDriver": "awslogs",
        "options": {
          "awslogs-group": "/ecs/fargate-task",
          "awslogs-region": "ap-northeast-1",
          "awslogs-stream-prefix": "ecs"
        }
      }
    }
  ],
  "requiresCompatibilities": [
    "FARGATE"
  ],
  "cpu": "256",
  "memory": "512"
}"#;

/// A minimal valid Fargate task definition body for `family`.
pub fn task_definition(family: &str) -> Value {
    serde_json::json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "busybox:latest", "essential": true}]
    })
}

/// The processes holding `path` open (pid, command), for diagnostics.
fn holders_of(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path)) {
            let comm = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default().replace('\0', " ");
            found.push(format!("{} {}", entry.file_name().to_string_lossy(), comm.trim()));
        }
    }
    found
}
