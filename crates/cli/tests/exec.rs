//! ECS Exec end to end: a real server, real containers, the real AWS CLI with AWS's own
//! session-manager-plugin, and `flotilla exec`. The command must see the container's world
//! (root file system, cgroup, hostname), not the host's.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use common::exec::{first_answer, run_with_open_stdin};
use common::fixture::Fixture;

/// A RUNNING task of one container `web` (busybox, sleeping), run with `--enable-execute-command`
/// or not, in `cluster`.
fn web_task(f: &Fixture, cluster: &str, exec: bool) -> String {
    let def = f.register("exec", json!([f.container("web", &["sleep", "3600"])]), json!({}));
    let flag = if exec { "--enable-execute-command" } else { "--disable-execute-command" };
    let task = f.run_in(&def, &f.network(), &["--cluster", cluster, flag]);
    wait_running(f, cluster, &task);
    task
}

fn wait_running(f: &Fixture, cluster: &str, task: &str) {
    common::wait_for("the task to run", Duration::from_secs(60), || {
        let out = f.server.aws_json(&["ecs", "describe-tasks", "--cluster", cluster, "--tasks", task]);
        out["tasks"][0]["lastStatus"] == "RUNNING"
    });
}

/// What `ps` shows in the container: one line per process.
fn processes(f: &Fixture, task: &str) -> String {
    let out = f.server.flotilla_exec(&[task, "--", "ps", "-o", "pid,args"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_plugin_sees_the_containers_world_not_the_hosts() {
    let f = Fixture::new();
    let task = web_task(&f, "default", true);
    let described = f.describe(&task);
    assert_eq!(described["containers"][0]["managedAgents"][0]["name"], "ExecuteCommandAgent");
    assert_eq!(described["containers"][0]["managedAgents"][0]["lastStatus"], "RUNNING");
    let out = f.server.execute_command("default", &task, "web", "sh -c 'id; hostname; cat /proc/1/cgroup; ls /; tty'");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("uid=0(root)"), "{stdout}");
    // busybox's root, not the host's (which has /work and no /bin/busybox-only tree).
    assert!(stdout.contains("bin") && !stdout.contains("work"), "{stdout}");
    assert!(!stdout.contains("init.scope"), "the host's cgroup: {stdout}");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(!stdout.contains(host_name.trim()), "the host's hostname: {stdout}");
    assert!(stdout.contains("/dev/pts/"), "a terminal: {stdout}");
    assert!(stdout.contains("Exiting session with sessionId"), "{stdout}");
    // The session's process is gone with it.
    let ps = processes(&f, &task);
    assert!(!ps.contains("hostname") && !ps.contains("cat /proc"), "{ps}");
}

#[test]
fn flotilla_exec_runs_a_shell_under_a_terminal_and_returns_its_status() {
    let f = Fixture::new();
    let task = web_task(&f, "default", true);
    let out = f.server.flotilla_exec(&[&task, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let mut cat = f.server.flotilla_exec(&["-i", &task, "--", "cat"]);
    let mut child = cat.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"through a pipe\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "through a pipe\n"));

    // -it under script's terminal: an interactive shell reads what is typed, exits 7.
    let line = format!("{} exec -it {task} -- sh", env!("CARGO_BIN_EXE_flotilla"));
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in f.server.flotilla_exec(&[]).get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    let out = run_with_open_stdin(script, b"tty; echo in-$((6*7))\rexit 7\r", Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(stdout.contains("/dev/pts/") && stdout.contains("in-42"), "{stdout}");
}

#[test]
fn refused_sessions_start_nothing_in_the_container() {
    let f = Fixture::new();
    let plain = web_task(&f, "default", false);
    let err = f.server.aws_err(&[
        "ecs",
        "execute-command",
        "--cluster",
        "default",
        "--task",
        &plain,
        "--container",
        "web",
        "--interactive",
        "--command",
        "true",
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("execute command was not enabled"), "{err}");

    let task = web_task(&f, "default", true);
    let body =
        json!({"cluster": "default", "task": task, "container": "web", "command": "sleep 77", "interactive": true});
    let client = f.server.client();
    let target = "AmazonEC2ContainerServiceV20141113.ExecuteCommand";
    let (a, b) = f.rt.block_on(async {
        (client.call("ecs", target, &body).await.unwrap(), client.call("ecs", target, &body).await.unwrap())
    });
    let url = a["session"]["streamUrl"].as_str().unwrap();
    let token_b = b["session"]["tokenValue"].as_str().unwrap();
    f.rt.block_on(async {
        assert!(first_answer(url, "forged-token").await.is_err());
        assert!(first_answer(url, token_b).await.is_err());
    });
    let ps = processes(&f, &task);
    assert!(!ps.contains("sleep 77"), "{ps}");

    f.server.aws_json(&["ecs", "stop-task", "--cluster", "default", "--task", &task]);
    let err = f.server.aws_err(&[
        "ecs",
        "execute-command",
        "--cluster",
        "default",
        "--task",
        &task,
        "--container",
        "web",
        "--interactive",
        "--command",
        "true",
    ]);
    assert!(err.contains("InvalidParameterException"), "{err}");
}

#[test]
fn logging_override_puts_the_sessions_output_in_the_log_group() {
    let f = Fixture::new();
    let config = json!({"executeCommandConfiguration": {"logging": "OVERRIDE",
        "logConfiguration": {"cloudWatchLogGroupName": "/exec/audit"}}});
    f.server.aws_json(&["ecs", "create-cluster", "--cluster-name", "audited", "--configuration", &config.to_string()]);
    f.server.aws_json(&["logs", "create-log-group", "--log-group-name", "/exec/audit"]);
    let task = web_task(&f, "audited", true);
    let out = f.server.execute_command("audited", &task, "web", "sh -c 'echo audited-$((6*7))'");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let session = stdout.split("SessionId: ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
    let session = session.trim_end_matches('.');
    common::wait_for("the session's log", Duration::from_secs(10), || {
        let events =
            f.server.aws(&["logs", "get-log-events", "--log-group-name", "/exec/audit", "--log-stream-name", session]);
        String::from_utf8_lossy(&events.stdout).contains("audited-42")
    });
}
