//! Exec round trip: `true` run in a running busybox container, from the client's spawn to its
//! exit, through `flotilla exec`, through `aws ecs execute-command` with AWS's
//! session-manager-plugin, and through `runc exec` into a runc container of the same busybox
//! rootfs; N rounds, interleaved.
//!
//! `exec-bench ENDPOINT IMAGE N FLOTILLA_BIN` (the plugin must be on PATH)
//!
//! Each path is a fresh process, as a user runs it: `flotilla exec TASK -- true` (ExecuteCommand,
//! the data channel's WebSocket and handshake, the command in the container, its exit status);
//! the AWS CLI (Python start-up, ExecuteCommand, DescribeTasks, the plugin, the same channel;
//! its stdin a pipe kept open, as the plugin needs); `runc exec ID true`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{client, median, percentile, register, runc_bundle, runc_prefix, wait_all};
use serde_json::json;

fn timed(command: &mut Command, stdin_open: bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut child = command
        .stdin(if stdin_open { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    let input = child.stdin.take();
    let out = child.wait_with_output()?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(input);
    if !out.status.success() {
        bail!("{:?} failed: {}{}", command, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}

fn row(name: &str, v: &[f64], peer: f64) {
    let m = median(v);
    println!("{name:<40} median {m:8.1} ms   p90 {:8.1} ms   ratio to runc exec {:6.2}x", percentile(v, 0.9), m / peer);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, image, n, flotilla] = &args[..] else {
        bail!("usage: exec-bench ENDPOINT IMAGE N FLOTILLA_BIN");
    };
    let n: usize = n.parse().context("N")?;
    let client = client(endpoint)?;
    let def = register(&client, "exec-bench", image, &["sleep", "3600"], 2).await?;
    let subnet = std::env::var("BENCH_SUBNET").context("BENCH_SUBNET")?;
    let out = client
        .ecs(
            "RunTask",
            json!({"taskDefinition": def, "launchType": "FARGATE", "enableExecuteCommand": true,
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet]}}}),
        )
        .await?;
    let task = out["tasks"][0]["taskArn"].as_str().context("RunTask returned no task")?.to_owned();
    wait_all(&client, std::slice::from_ref(&task), "RUNNING", Duration::from_secs(60), Duration::from_millis(50))
        .await?;

    let dir = tempfile::tempdir()?;
    let bundle = runc_bundle(dir.path(), &["sleep", "3600"])?;
    let id = runc_prefix("exec");
    let status = Command::new("runc")
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()?;
    if !status.success() {
        bail!("runc run -d failed");
    }
    let result = rounds(n, endpoint, flotilla, &task, &id);
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    let _ = client.ecs("StopTask", json!({"cluster": "default", "task": task})).await;
    let (runc, native, plugin) = result?;
    let peer = median(&runc);
    println!("exec round trip of `true` in a running busybox container, {n} rounds interleaved");
    row("runc exec", &runc, peer);
    row("flotilla exec", &native, peer);
    row("aws ecs execute-command + AWS plugin", &plugin, peer);
    println!("target: flotilla exec within 1.5x of runc exec");
    Ok(())
}

type Rounds = (Vec<f64>, Vec<f64>, Vec<f64>);

fn rounds(n: usize, endpoint: &str, flotilla: &str, task: &str, runc_id: &str) -> anyhow::Result<Rounds> {
    let (mut runc, mut native, mut plugin) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=n {
        let r = timed(Command::new("runc").args(["exec", runc_id, "true"]), false)?;
        let mut native_exec = Command::new(flotilla);
        native_exec
            .args(["exec", task, "--", "true"])
            .env("FLOTILLA_ENDPOINT", endpoint)
            .env("FLOTILLA_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default())
            .env("FLOTILLA_SECRET_ACCESS_KEY", std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default());
        let f = timed(&mut native_exec, false)?;
        let mut aws = Command::new("aws");
        aws.args(["--endpoint-url", endpoint, "ecs", "execute-command", "--cluster", "default", "--task", task])
            .args(["--container", "main", "--interactive", "--command", "true"])
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        let p = timed(&mut aws, true)?;
        // Round 0 warms caches (page cache, Python's bytecode); it is not counted.
        if round > 0 {
            runc.push(r);
            native.push(f);
            plugin.push(p);
        }
        let _ = std::io::stdout().flush();
    }
    Ok((runc, native, plugin))
}
