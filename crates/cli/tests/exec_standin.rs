//! ECS Exec's API side against the real AWS CLI, AWS's session-manager-plugin and `flotilla
//! exec`, with the server in this process so that a stand-in host can be registered: tasks run
//! on a simulated host (no containers), and the stand-in runs each command as a local process
//! under a real pseudo-terminal (or pipes). It stands in for the container until the
//! end-to-end tests (`exec.rs`) run it in one; what is checked here is the protocol, sessions,
//! tokens, refusals and logging, which do not depend on where the process runs.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_host::BoxFuture;
use flotilla_host::exec::{ExecChannel, ExecError, ExecInput, ExecOutput, ExecRequest, ExecTarget, TermSize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use common::exec::{first_answer, plugin_dir, run_with_open_stdin};
use common::{ACCESS_KEY, SECRET_KEY, wait_for};

/// Runs commands on this machine, under a pty when asked; counts what it started.
#[derive(Default)]
struct StandInHost {
    started: AtomicUsize,
}

fn winsize(size: Option<TermSize>) -> libc::winsize {
    let s = size.unwrap_or(TermSize { cols: 80, rows: 24 });
    libc::winsize { ws_row: s.rows, ws_col: s.cols, ws_xpixel: 0, ws_ypixel: 0 }
}

fn status_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl ExecTarget for StandInHost {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>> {
        Box::pin(async move {
            if request.container != "web" {
                return Err(ExecError::ContainerNotFound(request.container));
            }
            let mut command = Command::new(&request.command[0]);
            command.args(&request.command[1..]);
            let (in_tx, mut in_rx) = mpsc::channel::<ExecInput>(16);
            let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(64);
            if request.tty {
                let (mut master, mut slave) = (0, 0);
                let ws = winsize(request.size);
                // SAFETY: valid out-pointers; openpty fills both fds or fails.
                let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
                assert_eq!(rc, 0, "openpty");
                // SAFETY: openpty returned two fresh fds that nothing else owns.
                let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
                command
                    .stdin(slave.try_clone().unwrap())
                    .stdout(slave.try_clone().unwrap())
                    .stderr(slave.try_clone().unwrap());
                // SAFETY: only async-signal-safe calls between fork and exec.
                unsafe {
                    command.pre_exec(|| {
                        libc::setsid();
                        libc::ioctl(0, libc::TIOCSCTTY, 0);
                        Ok(())
                    });
                }
                let mut child = command.spawn().map_err(|e| ExecError::Failed(e.to_string()))?;
                drop(command);
                drop(slave);
                self.started.fetch_add(1, Ordering::SeqCst);
                let pid = child.id() as i32;
                let master_fd = master.as_raw_fd();
                let mut writer = std::fs::File::from(master.try_clone().unwrap());
                let mut reader = std::fs::File::from(master);
                tokio::spawn(async move {
                    while let Some(input) = in_rx.recv().await {
                        match input {
                            ExecInput::Stdin(b) => {
                                let _ = writer.write_all(&b);
                            }
                            ExecInput::Resize(s) => {
                                let ws = winsize(Some(s));
                                // SAFETY: the master fd is open while `writer` lives.
                                unsafe { libc::ioctl(master_fd, libc::TIOCSWINSZ, &ws) };
                            }
                            ExecInput::CloseStdin => {}
                        }
                    }
                    // The session went away: the process goes too.
                    // SAFETY: plain kill(2) of our child's process group.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = reader.read(&mut buf) {
                        if n == 0 || out_tx.blocking_send(ExecOutput::Stdout(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                    let status = child.wait().map(status_code).unwrap_or(255);
                    let _ = out_tx.blocking_send(ExecOutput::Exit(status));
                });
            } else {
                command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut child = command.spawn().map_err(|e| ExecError::Failed(e.to_string()))?;
                self.started.fetch_add(1, Ordering::SeqCst);
                let mut stdin = child.stdin.take();
                let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
                let pid = child.id() as i32;
                tokio::spawn(async move {
                    while let Some(input) = in_rx.recv().await {
                        match input {
                            ExecInput::Stdin(b) => {
                                if let Some(s) = stdin.as_mut() {
                                    let _ = s.write_all(&b);
                                }
                            }
                            ExecInput::CloseStdin => stdin = None,
                            ExecInput::Resize(_) => {}
                        }
                    }
                    // SAFETY: plain kill(2) of our child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                });
                let err_tx = out_tx.clone();
                let errors = std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stderr.read(&mut buf) {
                        if n == 0 || err_tx.blocking_send(ExecOutput::Stderr(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stdout.read(&mut buf) {
                        if n == 0 || out_tx.blocking_send(ExecOutput::Stdout(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                    let _ = errors.join();
                    let status = child.wait().map(status_code).unwrap_or(255);
                    let _ = out_tx.blocking_send(ExecOutput::Exit(status));
                });
            }
            Ok(ExecChannel { input: in_tx, output: out_rx })
        })
    }
}

/// A server in this process: embedded store, one simulated host (`sim-1`) that the stand-in
/// serves exec for.
struct InProcess {
    rt: tokio::runtime::Runtime,
    endpoint: String,
    host: Arc<StandInHost>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let host = Arc::new(StandInHost::default());
        let endpoint = rt.block_on(async {
            let store = flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
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
                    // No data dir here: the store's directory serves.
                    kms_key_file: dir.path().join("kms.key"),
                    root_credentials: flotilla_api::Credentials {
                        access_key_id: ACCESS_KEY.into(),
                        secret_access_key: SECRET_KEY.into(),
                    },
                    data_dir: dir.path().to_owned(),
                    kubernetes: Default::default(),
                    eks_planes: None,
                },
            )
            .await
            .unwrap();
            let spec = flotilla_host::HostSpec {
                id: "sim-1".into(),
                availability_zone: "us-east-1a".into(),
                cpu: 64 * 1024,
                memory: 64 * 1024,
                underlay_ip: None,
                max_tasks: None,
            };
            let sandbox = flotilla_sandbox::sim::SimSandbox::new();
            let agent = flotilla_agent::sim::agent(
                plane.host_api.clone(),
                spec,
                sandbox,
                "us-east-1",
                dir.path().join("agent"),
            );
            tokio::spawn(agent.run(std::future::pending()));
            plane.exec_targets.register("sim-1", host.clone());
            let creds =
                flotilla_api::Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
            let state = plane.api_state(&creds);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let _plane = plane;
                axum::serve(listener, flotilla_api::router(state)).await.unwrap();
            });
            endpoint
        });
        InProcess { rt, endpoint, host, _dir: dir }
    }

    fn aws_command(&self) -> Command {
        let mut path = plugin_dir().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut command = Command::new("aws");
        command
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .env("PATH", path)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE");
        command
    }

    fn aws(&self, args: &[&str]) -> Output {
        self.aws_command().args(args).output().expect("the aws CLI runs")
    }

    fn aws_json(&self, args: &[&str]) -> Value {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn aws_err(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(!out.status.success(), "aws {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn flotilla(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .env("FLOTILLA_ENDPOINT", &self.endpoint)
            .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("FLOTILLA_DATA_DIR", self._dir.path());
        command
    }

    fn client(&self) -> flotilla_cli::client::Client {
        let creds =
            flotilla_api::Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
        flotilla_cli::client::Client::new(&self.endpoint, creds, "us-east-1").unwrap()
    }

    /// A RUNNING task of one container `web` (or `names`) in `cluster`.
    fn running_task(&self, cluster: &str, exec: bool, names: &[&str]) -> String {
        let containers: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "image": "busybox", "essential": true, "command": ["sleep", "3600"]}))
            .collect();
        let def = json!({
            "family": "exec", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": containers,
        });
        self.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &def.to_string()]);
        let subnets = self.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
        let subnet = subnets["Subnets"][0]["SubnetId"].as_str().unwrap().to_owned();
        let network = format!("awsvpcConfiguration={{subnets=[{subnet}]}}");
        let flag = if exec { "--enable-execute-command" } else { "--disable-execute-command" };
        let out = self.aws_json(&[
            "ecs",
            "run-task",
            "--cluster",
            cluster,
            "--task-definition",
            "exec",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &network,
            flag,
        ]);
        let arn = out["tasks"][0]["taskArn"].as_str().unwrap_or_else(|| panic!("{out}")).to_owned();
        wait_for("the task to run", Duration::from_secs(30), || {
            self.describe(cluster, &arn)["lastStatus"] == "RUNNING"
        });
        arn
    }

    fn describe(&self, cluster: &str, task: &str) -> Value {
        self.aws_json(&["ecs", "describe-tasks", "--cluster", cluster, "--tasks", task])["tasks"][0].clone()
    }
}

fn execute_command(server: &InProcess, task: &str, command: &str) -> Output {
    let mut aws = server.aws_command();
    aws.args(["ecs", "execute-command", "--cluster", "default", "--task", task, "--container", "web"]).args([
        "--interactive",
        "--command",
        command,
    ]);
    run_with_open_stdin(aws, b"", Duration::from_secs(30))
}

#[test]
fn the_plugin_runs_a_command_under_a_terminal_and_the_task_shows_its_agent() {
    let server = InProcess::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let task = server.running_task("default", true, &["web"]);
    let described = server.describe("default", &task);
    let agent = &described["containers"][0]["managedAgents"][0];
    assert_eq!(agent["name"], "ExecuteCommandAgent", "{described:#}");
    assert_eq!(agent["lastStatus"], "RUNNING");
    assert!(agent["lastStartedAt"].is_number(), "{agent}");
    assert_eq!(described["enableExecuteCommand"], true);

    let out = execute_command(&server, &task, "sh -c 'echo hello-$((6*7)); tty; stty size'");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Starting session with SessionId: ecs-execute-command-"), "{stdout}");
    assert!(stdout.contains("hello-42"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "a terminal: {stdout}");
    // Without a terminal of its own the plugin reports 300x100.
    assert!(stdout.contains("100 300"), "{stdout}");
    assert!(stdout.contains("Exiting session with sessionId"), "{stdout}");
}

#[test]
fn execute_command_is_refused_as_ecs_refuses_it() {
    let server = InProcess::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let refused = "execute command was not enabled when the task was run or the execute command agent isn't running";
    let plain = server.running_task("default", false, &["web"]);
    assert!(server.describe("default", &plain)["containers"][0].get("managedAgents").is_none());
    let err = server.aws_err(&[
        "ecs",
        "execute-command",
        "--cluster",
        "default",
        "--task",
        &plain,
        "--interactive",
        "--command",
        "true",
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains(refused), "{err}");

    let task = server.running_task("default", true, &["web", "side"]);
    let base = ["ecs", "execute-command", "--cluster", "default", "--task", &task, "--command", "true"];
    let err = server.aws_err(&[&base[..], &["--interactive", "--container", "nope"]].concat());
    assert!(err.contains("InvalidParameterException") && err.contains(refused), "{err}");
    let err = server.aws_err(&[&base[..], &["--interactive"]].concat());
    assert!(err.contains("InvalidParameterException") && err.contains("container"), "{err}");
    let err = server.aws_err(&[&base[..], &["--non-interactive", "--container", "web"]].concat());
    assert!(err.contains("Interactive is the only mode supported currently"), "{err}");
    let err = server.aws_err(&[
        "ecs",
        "execute-command",
        "--cluster",
        "nope",
        "--task",
        &task,
        "--interactive",
        "--command",
        "true",
    ]);
    assert!(err.contains("ClusterNotFoundException"), "{err}");

    server.aws_json(&["ecs", "stop-task", "--cluster", "default", "--task", &task]);
    let err = server.aws_err(&[&base[..], &["--interactive", "--container", "web"]].concat());
    assert!(err.contains("InvalidParameterException") && err.contains(refused), "{err}");
    assert_eq!(server.host.started.load(Ordering::SeqCst), 0, "nothing was started");
}

#[test]
fn tokens_are_single_use_bound_to_their_session_and_never_forged() {
    let server = InProcess::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let task = server.running_task("default", true, &["web"]);
    let client = server.client();
    let body = json!({"cluster": "default", "task": task, "command": "sleep 60", "interactive": true});
    let target = "AmazonEC2ContainerServiceV20141113.ExecuteCommand";
    let (a, b) = server.rt.block_on(async {
        (client.call("ecs", target, &body).await.unwrap(), client.call("ecs", target, &body).await.unwrap())
    });
    assert_eq!(a["containerName"], "web");
    assert_eq!(a["interactive"], true);
    let url_a = a["session"]["streamUrl"].as_str().unwrap();
    assert!(url_a.starts_with("ws://127.0.0.1:") && url_a.contains("/v1/data-channel/ecs-execute-command-"));
    let token_a = a["session"]["tokenValue"].as_str().unwrap();
    let token_b = b["session"]["tokenValue"].as_str().unwrap();
    server.rt.block_on(async {
        assert!(first_answer(url_a, "forged").await.unwrap_err().contains("token"));
        assert!(first_answer(url_a, token_b).await.is_err(), "another session's token");
        let handshake = first_answer(url_a, token_a).await.expect("the right token opens the channel");
        let m = flotilla_exec::message::AgentMessage::decode(&handshake).unwrap();
        assert_eq!(m.payload_type, flotilla_exec::message::payload::HANDSHAKE_REQUEST);
        assert!(first_answer(url_a, token_a).await.is_err(), "a token is single-use");
    });
    // No handshake was completed: nothing ran.
    assert_eq!(server.host.started.load(Ordering::SeqCst), 0);
    // TerminateSession (at the ECS endpoint, as the plugin calls it) ends a session.
    let session_b = b["session"]["sessionId"].as_str().unwrap();
    let out = server.aws_json(&["ssm", "terminate-session", "--session-id", session_b]);
    assert_eq!(out["SessionId"], session_b);
    let err = server.aws_err(&["ssm", "resume-session", "--session-id", session_b]);
    assert!(err.contains("DoesNotExistException"), "{err}");
    let session_a = a["session"]["sessionId"].as_str().unwrap();
    let resumed = server.aws_json(&["ssm", "resume-session", "--session-id", session_a]);
    assert!(resumed["TokenValue"].as_str().is_some_and(|t| t != token_a), "{resumed}");
}

#[test]
fn flotilla_exec_returns_the_status_with_pipes_or_a_terminal() {
    let server = InProcess::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let task = server.running_task("default", true, &["web"]);
    let out =
        server.flotilla().args(["exec", &task, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let mut cat = server.flotilla();
    cat.args(["exec", "-i", &task, "--", "cat"]);
    let mut child = cat.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"through a pipe\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through a pipe\n");

    // -it under a terminal of its own (script's), typing into an interactive shell.
    let line =
        format!("{} exec -it {task} -- sh -c 'tty; read x; echo got-$x; exit 7'", env!("CARGO_BIN_EXE_flotilla"));
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in [
        ("FLOTILLA_ENDPOINT", server.endpoint.as_str()),
        ("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY),
        ("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY),
    ] {
        script.env(k, v);
    }
    let out = run_with_open_stdin(script, b"typed\r", Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(stdout.contains("/dev/pts/") && stdout.contains("got-typed"), "{stdout}");
}

#[test]
fn logging_override_records_each_session_in_its_log_group() {
    let server = InProcess::start();
    let config = json!({"executeCommandConfiguration": {"logging": "OVERRIDE",
        "logConfiguration": {"cloudWatchLogGroupName": "/exec/audit", "cloudWatchEncryptionEnabled": false}}});
    let err = server.aws_err(&[
        "ecs",
        "create-cluster",
        "--cluster-name",
        "audited",
        "--configuration",
        r#"{"executeCommandConfiguration": {"logging": "OVERRIDE"}}"#,
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("logConfiguration"), "{err}");
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "audited"]);
    let updated =
        server.aws_json(&["ecs", "update-cluster", "--cluster", "audited", "--configuration", &config.to_string()]);
    assert_eq!(updated["cluster"]["configuration"], config);
    server.aws_json(&["logs", "create-log-group", "--log-group-name", "/exec/audit"]);
    let task = server.running_task("audited", true, &["web"]);
    let mut aws = server.aws_command();
    aws.args(["ecs", "execute-command", "--cluster", "audited", "--task", &task, "--container", "web"]).args([
        "--interactive",
        "--command",
        "echo audited-output",
    ]);
    let out = run_with_open_stdin(aws, b"", Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let session = stdout.split("SessionId: ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
    let session = session.trim_end_matches('.').to_owned();
    wait_for("the session's log", Duration::from_secs(10), || {
        let events =
            server.aws(&["logs", "get-log-events", "--log-group-name", "/exec/audit", "--log-stream-name", &session]);
        String::from_utf8_lossy(&events.stdout).contains("audited-output")
    });
}
