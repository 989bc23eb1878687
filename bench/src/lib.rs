//! Shared pieces of the benchmark helpers: a signed ECS client from the environment, task
//! waiting, a runc bundle of the busybox test image, /proc memory readings and statistics.

pub mod leaks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use flotilla_api::Credentials;
use flotilla_cli::client::Client;
use serde_json::{Value, json};

/// Wall clock in epoch milliseconds (the clock the shim stamps log lines with).
pub fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as f64 / 1000.0
}

/// A client signed with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
pub fn client(endpoint: &str) -> anyhow::Result<Client> {
    let creds = Credentials {
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID")?,
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY")?,
    };
    Client::new(endpoint, creds, "us-east-1")
}

/// Creates the default cluster and registers `family` with one container `main` running `command`,
/// at 0.25 vCPU / 512 MiB.
pub async fn register(
    client: &Client,
    family: &str,
    image: &str,
    command: &[&str],
    stop_timeout: i64,
) -> anyhow::Result<String> {
    register_sized(client, family, image, command, stop_timeout, 256).await
}

/// As [`register`], with task CPU `cpu` units (256, 512, 1024, 2048 or 4096) and twice as
/// many MiB of memory (a valid Fargate pair).
pub async fn register_sized(
    client: &Client,
    family: &str,
    image: &str,
    command: &[&str],
    stop_timeout: i64,
    cpu: u32,
) -> anyhow::Result<String> {
    client.ecs("CreateCluster", json!({"clusterName": "default"})).await.context("CreateCluster")?;
    let out = client
        .ecs(
            "RegisterTaskDefinition",
            json!({
                "family": family,
                "networkMode": "awsvpc",
                "requiresCompatibilities": ["FARGATE"],
                "cpu": cpu.to_string(),
                "memory": (cpu * 2).to_string(),
                "containerDefinitions": [{
                    "name": "main", "image": image, "essential": true,
                    "command": command, "stopTimeout": stop_timeout,
                }],
            }),
        )
        .await
        .context("RegisterTaskDefinition")?;
    Ok(out["taskDefinition"]["taskDefinitionArn"].as_str().context("no taskDefinitionArn")?.to_owned())
}

/// RunTask in the subnet named by `BENCH_SUBNET`; returns the task ARNs.
pub async fn run_task(client: &Client, task_definition: &str, count: i32) -> anyhow::Result<Vec<String>> {
    let subnet = std::env::var("BENCH_SUBNET").context("BENCH_SUBNET (a subnet id, e.g. the default VPC's)")?;
    let out = client
        .ecs(
            "RunTask",
            json!({
                "taskDefinition": task_definition, "launchType": "FARGATE", "count": count,
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}},
            }),
        )
        .await
        .context("RunTask")?;
    if out["failures"].as_array().is_some_and(|f| !f.is_empty()) {
        bail!("RunTask failures: {}", out["failures"]);
    }
    let arns: Vec<String> = out["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
        .collect();
    if arns.len() != count as usize {
        bail!("RunTask returned {} tasks, wanted {count}: {out}", arns.len());
    }
    Ok(arns)
}

pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

pub async fn describe(client: &Client, arns: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for chunk in arns.chunks(100) {
        let out = client
            .ecs("DescribeTasks", json!({"cluster": "default", "tasks": chunk}))
            .await
            .context("DescribeTasks")?;
        all.extend(out["tasks"].as_array().cloned().unwrap_or_default());
    }
    Ok(all)
}

/// Polls until every task's lastStatus is `status`; fails if one stops when RUNNING was wanted.
pub async fn wait_all(
    client: &Client,
    arns: &[String],
    status: &str,
    deadline: Duration,
    poll: Duration,
) -> anyhow::Result<Vec<Value>> {
    let start = Instant::now();
    loop {
        let tasks = describe(client, arns).await?;
        if tasks.len() == arns.len() && tasks.iter().all(|t| t["lastStatus"] == status) {
            return Ok(tasks);
        }
        if status != "STOPPED"
            && let Some(t) = tasks.iter().find(|t| t["lastStatus"] == "STOPPED")
        {
            bail!("task stopped while waiting for {status}: {t}");
        }
        if start.elapsed() > deadline {
            let seen: Vec<&Value> = tasks.iter().map(|t| &t["lastStatus"]).collect();
            bail!("tasks not {status} after {deadline:?}: {seen:?}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// StopTask for each task, concurrently.
pub async fn stop_all(client: &Client, arns: &[String]) -> anyhow::Result<()> {
    let calls: Vec<_> = arns
        .iter()
        .map(|arn| {
            let (client, arn) = (client.clone(), arn.clone());
            tokio::spawn(async move { client.ecs("StopTask", json!({"cluster": "default", "task": arn})).await })
        })
        .collect();
    for c in calls {
        c.await?.context("StopTask")?;
    }
    Ok(())
}

/// An OCI bundle of the busybox test image (the same layer Flotilla's tasks run), made with
/// `tar` and `runc spec`, running `args` without a terminal. The rootfs is read-only (runc's
/// default), so many containers can share it.
pub fn runc_bundle(dir: &Path, args: &[&str]) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let tar = dir.join("busybox-layer.tar");
    std::fs::write(&tar, flotilla_image::testing::busybox_layer())?;
    run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&rootfs))?;
    std::fs::remove_file(&tar)?;
    run(Command::new("runc").arg("spec").current_dir(dir))?;
    let path = dir.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(args);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(dir.to_owned())
}

/// `runc run --bundle B ID` in the foreground, its stdout as given.
pub fn spawn_runc_run(bundle: &Path, id: &str, stdout: Stdio) -> anyhow::Result<Child> {
    Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning runc run")
}

/// Kills and deletes a peer container started by [`spawn_runc_run`], reaping `child`.
pub fn remove_runc(id: &str, child: &mut Child) {
    let _ = Command::new("runc").args(["kill", id, "KILL"]).output();
    let _ = child.wait();
    let _ = Command::new("runc").args(["delete", "-f", id]).output();
}

/// Container id prefix for the runc peers: `$BENCH_RUNC_PREFIX-<kind>` when the script sets it
/// (so that its exit trap can remove what an interrupted helper left), else
/// `flotilla-bench-<pid>-<kind>`.
pub fn runc_prefix(kind: &str) -> String {
    match std::env::var("BENCH_RUNC_PREFIX") {
        Ok(p) if !p.is_empty() => format!("{p}-{kind}"),
        _ => format!("flotilla-bench-{}-{kind}", std::process::id()),
    }
}

/// Deletes every service of the default cluster (forced: scaled to 0, so that the scheduler
/// replaces nothing), stops every task that is not stopped, and waits (up to `deadline`) until
/// those and any already on their way down are STOPPED. For cleaning up after an interrupted
/// run. Returns how many tasks it waited for.
pub async fn stop_everything(client: &Client, deadline: Duration) -> anyhow::Result<usize> {
    // A server that never ran a task (the load balancer benchmarks) has no default cluster:
    // nothing to stop.
    let services = match client.ecs_list_all("ListServices", json!({"cluster": "default"}), "serviceArns").await {
        Err(e) if format!("{e:#}").contains("ClusterNotFoundException") => return Ok(0),
        other => other?,
    };
    for service in &services {
        client
            .ecs("DeleteService", json!({"cluster": "default", "service": service, "force": true}))
            .await
            .context("DeleteService")?;
    }
    let list = |desired: &'static str| async move {
        let arns: Vec<String> = client
            .ecs_list_all("ListTasks", json!({"cluster": "default", "desiredStatus": desired}), "taskArns")
            .await?
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        anyhow::Ok(arns)
    };
    let running = list("RUNNING").await?;
    stop_all(client, &running).await?;
    let mut all = running;
    all.extend(list("STOPPED").await?);
    if all.is_empty() {
        return Ok(0);
    }
    wait_all(client, &all, "STOPPED", deadline, Duration::from_millis(100)).await?;
    Ok(all.len())
}

pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Memory of one process from /proc/<pid>/smaps_rollup and status, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mem {
    pub pss: u64,
    pub rss: u64,
    pub private_dirty: u64,
    pub threads: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.pss += o.pss;
        self.rss += o.rss;
        self.private_dirty += o.private_dirty;
        self.threads += o.threads;
    }
}

pub fn mem(pid: u32) -> anyhow::Result<Mem> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).with_context(|| format!("pid {pid}"))?;
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Ok(Mem {
        pss: field(&rollup, "Pss:"),
        rss: field(&rollup, "Rss:"),
        private_dirty: field(&rollup, "Private_Dirty:"),
        threads: field(&status, "Threads:"),
    })
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub cgroup: String,
}

pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // comm is in parentheses and may contain spaces; fields after the last ')'.
        let Some(close) = stat.rfind(')') else { continue };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let ppid = stat[close + 2..].split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        out.push(Proc { pid, ppid, comm, cmdline, cgroup });
    }
    out
}

/// Descendants of `roots` (not the roots themselves).
pub fn descendants(procs: &[Proc], roots: &[u32]) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            out.push((*c).clone());
            stack.push(c.pid);
        }
    }
    out
}

/// Sorted copy.
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// Nearest-rank percentile (p in 0..=1).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}
