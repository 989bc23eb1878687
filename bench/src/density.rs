//! Density: N idle tasks on one host, then restarts and a stop at scale; plain runc as the peer.
//! `bench/density.sh N` runs the phases in order, each a subcommand sharing a state file:
//!
//! - `density fill ENDPOINT DATA_DIR IMAGE N STATE FLOTILLA_PID`: N busybox `sleep` tasks
//!   (0.25 vCPU / 0.5 GB, awsvpc) RUNNING. Prints host memory per task (MemAvailable before
//!   and after, divided by N, with the per-task processes' PSS and the kernel's share beside
//!   it), the first tasks' start against those after N, a task past the host's capacity,
//!   `flotilla up`'s idle CPU over 10 s, and the API's p50/p99 for DescribeTasks of 100 tasks
//!   and ListTasks.
//! - `density adopted ENDPOINT DATA_DIR STATE T0_MS LOG`: after the script restarted
//!   `flotilla up` at T0 (epoch ms), the time until the agent logs that every task is
//!   supervised and the API answers; then that nothing was restarted (same shim and container
//!   pids, same startedAt, all RUNNING).
//! - `density stop ENDPOINT DATA_DIR STATE`: StopTask for all N, 20 in flight, to all STOPPED
//!   with stop code UserInitiated; then the leak check.
//! - `density runc N`: the peer, N `runc run -d` of the same busybox rootfs and command:
//!   memory per container and the first containers' start against those after N.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{
    client, describe, leaks::leaks, median, mem, now_ms, percentile, processes, register, run, run_task, runc_bundle,
    task_id, wait_all,
};
use flotilla_cli::client::Client;
use serde_json::{Value, json};

const COMMAND: [&str; 2] = ["sleep", "1000000"];
/// `sleep` is its namespace's init and ignores SIGTERM: StopTask ends it with SIGKILL after this.
const STOP_TIMEOUT_S: i64 = 2;
/// Tasks started one at a time, timed, before the fill and again after it.
pub const SINGLES: usize = 5;
/// RunTask calls (of 10 tasks) in flight during the fill.
const FILL_CALLS: usize = 5;
const STOP_PARALLEL: usize = 20;
const API_CALLS: usize = 200;
const SETTLE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.get(1..).unwrap_or_default() {
        ["fill", endpoint, data, image, n, state, pid] => {
            fill(endpoint, Path::new(data), image, n.parse().context("N")?, Path::new(state), pid.parse()?).await
        }
        ["adopted", endpoint, data, state, t0, log] => {
            adopted(endpoint, Path::new(data), Path::new(state), t0.parse()?, Path::new(log)).await
        }
        ["stop", endpoint, data, state] => stop(endpoint, Path::new(data), Path::new(state)).await,
        ["runc", n] => peer(n.parse().context("N")?),
        _ => bail!(
            "usage: density fill ENDPOINT DATA_DIR IMAGE N STATE FLOTILLA_PID | adopted ENDPOINT DATA_DIR STATE T0_MS LOG \
             | stop ENDPOINT DATA_DIR STATE | runc N"
        ),
    }
}

/// /proc/meminfo fields in KiB.
fn meminfo() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.trim().trim_end_matches("kB").trim().parse().ok()?))
        })
        .collect()
}

/// The kernel's own memory that grows with tasks (slab, per-CPU, stacks, page tables), KiB.
const KERNEL_FIELDS: [&str; 4] = ["Slab", "Percpu", "KernelStack", "PageTables"];

/// Bytes held per slab cache (/proc/slabinfo: objects x object size).
fn slabs() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.parse::<u64>().ok()? * f.get(3)?.parse::<u64>().ok()?))
        })
        .collect()
}

/// The slab caches that grew most, KiB per task.
fn slab_growth(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: usize) -> String {
    let mut grown: Vec<(i64, &String)> =
        after.iter().map(|(k, v)| (*v as i64 - before.get(k).copied().unwrap_or(0) as i64, k)).collect();
    grown.sort_by_key(|g| std::cmp::Reverse(g.0));
    grown
        .iter()
        .take(8)
        .map(|(b, k)| format!("{k} {:.0}", *b as f64 / 1024.0 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kernel_kib(m: &BTreeMap<String, u64>) -> u64 {
    KERNEL_FIELDS.iter().map(|f| m.get(*f).copied().unwrap_or(0)).sum()
}

/// Memory per task (MiB): the all-in figure and its parts, from readings before and after.
struct PerTask {
    available: f64,
    kernel: f64,
    processes: f64,
}

fn per_task(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, pss_kib: u64, n: usize) -> PerTask {
    let mib = |kib: f64| kib / 1024.0 / n as f64;
    PerTask {
        available: mib(before["MemAvailable"] as f64 - after["MemAvailable"] as f64),
        kernel: mib(kernel_kib(after) as f64 - kernel_kib(before) as f64),
        processes: mib(pss_kib as f64),
    }
}

/// Task id -> its shim's and containers' pids, sorted.
fn task_pids(data: &Path, ids: &[String]) -> BTreeMap<String, Vec<u32>> {
    let tasks = data.join("tasks");
    let tasks = tasks.to_string_lossy();
    let mut out: BTreeMap<String, Vec<u32>> = ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    for p in processes() {
        for id in ids {
            let shim = p.comm == "flotilla-shim" && p.cmdline.iter().any(|a| *a == format!("{tasks}/{id}"));
            if shim || p.cgroup.contains(&format!("/flotilla/{id}/")) {
                out.get_mut(id).expect("every id has an entry").push(p.pid);
            }
        }
    }
    for pids in out.values_mut() {
        pids.sort_unstable();
    }
    out
}

fn pss_of(pids: &BTreeMap<String, Vec<u32>>) -> u64 {
    pids.values().flatten().filter_map(|p| mem(*p).ok()).map(|m| m.pss).sum()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("pid {pid}"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..].split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / tick)
}

/// RunTask of one task, timed from the call to RUNNING as DescribeTasks shows it (ms).
async fn start_one(c: &Client, td: &str) -> anyhow::Result<(String, f64)> {
    let t = Instant::now();
    let arn = run_task(c, td, 1).await?.remove(0);
    wait_all(c, std::slice::from_ref(&arn), "RUNNING", Duration::from_secs(120), Duration::from_millis(5)).await?;
    Ok((arn, t.elapsed().as_secs_f64() * 1000.0))
}

fn ms_list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

async fn fill(endpoint: &str, data: &Path, image: &str, n: usize, state: &Path, fl_pid: u32) -> anyhow::Result<()> {
    if n < 2 * SINGLES {
        bail!("N must be at least {}", 2 * SINGLES);
    }
    let c = client(endpoint)?;
    let td = register(&c, "bench-density", image, &COMMAND, STOP_TIMEOUT_S).await?;
    // Warm-up: the image cache and the server's first task.
    let (warm, _) = start_one(&c, &td).await?;
    flotilla_bench::stop_all(&c, std::slice::from_ref(&warm)).await?;
    wait_all(&c, &[warm], "STOPPED", Duration::from_secs(60), Duration::from_millis(50)).await?;
    tokio::time::sleep(SETTLE).await;

    let (before, slabs_before) = (meminfo(), slabs());
    let mut arns = Vec::new();
    let mut first = Vec::new();
    for _ in 0..SINGLES {
        let (arn, ms) = start_one(&c, &td).await?;
        arns.push(arn);
        first.push(ms);
    }
    let t = Instant::now();
    let mut left = n - 2 * SINGLES;
    while left > 0 {
        let calls: Vec<_> = (0..FILL_CALLS)
            .map(|_| {
                let count = left.min(10);
                left -= count;
                count
            })
            .filter(|count| *count > 0)
            .map(|count| {
                let (c, td) = (c.clone(), td.clone());
                tokio::spawn(async move { run_task(&c, &td, count as i32).await })
            })
            .collect();
        let mut batch = Vec::new();
        for call in calls {
            batch.extend(call.await??);
        }
        wait_all(&c, &batch, "RUNNING", Duration::from_secs(300), Duration::from_millis(50))
            .await
            .with_context(|| format!("filling: {} tasks RUNNING so far", arns.len()))?;
        arns.extend(batch);
        if arns.len() % 100 < FILL_CALLS * 10 {
            eprintln!("  {} tasks RUNNING ({:.0} s)", arns.len(), t.elapsed().as_secs_f64());
        }
    }
    let fill_s = t.elapsed().as_secs_f64();
    // As before the first ones: the fill's own aftermath (the scratch pool refilling, reports
    // and logs catching up) is not what the 1,001st start is compared on.
    tokio::time::sleep(SETTLE).await;
    let mut last = Vec::new();
    for _ in 0..SINGLES {
        let (arn, ms) = start_one(&c, &td).await?;
        arns.push(arn);
        last.push(ms);
    }
    tokio::time::sleep(SETTLE).await;
    let ids: Vec<String> = arns.iter().map(|a| task_id(a).to_owned()).collect();
    let pids = task_pids(data, &ids);
    let (after, slabs_after) = (meminfo(), slabs());
    let m = per_task(&before, &after, pss_of(&pids), n);
    let fl = mem(fl_pid)?;

    println!("density: {n} idle tasks (busybox `sleep`, 0.25 vCPU / 0.5 GB, awsvpc), `flotilla up` pid {fl_pid}");
    println!(
        "  filled in {fill_s:.1} s ({:.1} tasks/s, RunTask count=10, {FILL_CALLS} calls in flight)",
        n as f64 / fill_s
    );
    println!(
        "host memory per idle task, all in (MemAvailable before - after) / {n}: {:.2} MiB; target <= 1.5 MiB: {}",
        m.available,
        verdict(m.available <= 1.5)
    );
    println!(
        "  of which: shim + container processes {:.2} MiB PSS, kernel ({}) {:.2} MiB; flotilla up now {:.0} MiB PSS",
        m.processes,
        KERNEL_FIELDS.join("+"),
        m.kernel,
        fl.pss as f64 / 1024.0
    );
    println!("  slab caches that grew most, KiB per task: {}", slab_growth(&slabs_before, &slabs_after, n));
    let (f, l) = (median(&first), median(&last));
    println!(
        "start, RunTask to RUNNING (DescribeTasks every 5 ms): tasks 1-{SINGLES} {} ms (median {f:.0}); tasks {}-{} {} ms \
         (median {l:.0}); ratio {:.2}x; target within 1.5x: {}",
        ms_list(&first),
        n - SINGLES + 1,
        n,
        ms_list(&last),
        l / f,
        verdict(l / f <= 1.5)
    );
    capacity(&c, &td).await?;
    idle_cpu(fl_pid, &pids).await?;
    api_latency(&c, &arns).await?;

    let started: BTreeMap<String, Value> =
        describe(&c, &arns).await?.into_iter().map(|t| (t["taskArn"].as_str().unwrap_or("").to_owned(), t)).collect();
    let saved = json!({
        "arns": arns,
        "pids": pids,
        "startedAt": started.iter().map(|(arn, t)| (arn.clone(), t["startedAt"].clone())).collect::<BTreeMap<_, _>>(),
    });
    std::fs::write(state, serde_json::to_vec(&saved)?)?;
    Ok(())
}

/// A task past what the host takes: `bench/density.sh` runs `flotilla up --max-tasks N`, so one
/// more is refused; so is a task larger than the memory left.
async fn capacity(c: &Client, td: &str) -> anyhow::Result<()> {
    let subnet = std::env::var("BENCH_SUBNET")?;
    let network = json!({"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}});
    let out = c
        .ecs(
            "RunTask",
            json!({"taskDefinition": td, "launchType": "FARGATE", "count": 1, "networkConfiguration": network}),
        )
        .await?;
    println!(
        "past the host's task limit (--max-tasks), RunTask answers: tasks {}, failures {}",
        out["tasks"].as_array().map_or(0, Vec::len),
        out["failures"]
    );
    let big = json!({"cpu": "16384", "memory": "122880"});
    let out = c
        .ecs(
            "RunTask",
            json!({"taskDefinition": td, "launchType": "FARGATE", "count": 1, "networkConfiguration": network, "overrides": big}),
        )
        .await?;
    println!(
        "a 16 vCPU / 120 GB task, RunTask answers: tasks {}, failures {}",
        out["tasks"].as_array().map_or(0, Vec::len),
        out["failures"]
    );
    let placed: Vec<String> = out["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
        .collect();
    flotilla_bench::stop_all(c, &placed).await?;
    Ok(())
}

async fn idle_cpu(fl_pid: u32, pids: &BTreeMap<String, Vec<u32>>) -> anyhow::Result<()> {
    let window = Duration::from_secs(10);
    let all: Vec<u32> = pids.values().flatten().copied().collect();
    let others = |pids: &[u32]| pids.iter().filter_map(|p| cpu_seconds(*p).ok()).sum::<f64>();
    let (fl0, tasks0) = (cpu_seconds(fl_pid)?, others(&all));
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t.elapsed().as_secs_f64();
    let (fl1, tasks1) = (cpu_seconds(fl_pid)?, others(&all));
    let share = (fl1 - fl0) / secs * 100.0;
    println!(
        "idle CPU over {secs:.1} s (/proc/PID/stat utime+stime): flotilla up (server + agent) {share:.2}% of one core; \
         target < 5%: {}; the tasks' shims and containers together {:.2}%",
        verdict(share < 5.0),
        (tasks1 - tasks0) / secs * 100.0
    );
    Ok(())
}

async fn api_latency(c: &Client, arns: &[String]) -> anyhow::Result<()> {
    let size = arns.len().min(100);
    let chunks: Vec<&[String]> = arns.chunks(size).filter(|ch| ch.len() == size).collect();
    let mut describe_ms = Vec::new();
    let mut list_ms = Vec::new();
    for i in 0..API_CALLS {
        let t = Instant::now();
        let out = c.ecs("DescribeTasks", json!({"cluster": "default", "tasks": chunks[i % chunks.len()]})).await?;
        describe_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if out["tasks"].as_array().map_or(0, Vec::len) != size {
            bail!("DescribeTasks of {size} tasks answered {}", out["tasks"].as_array().map_or(0, Vec::len));
        }
        let t = Instant::now();
        c.ecs("ListTasks", json!({"cluster": "default"})).await?;
        list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let t = Instant::now();
    let listed = c.ecs_list_all("ListTasks", json!({"cluster": "default"}), "taskArns").await?.len();
    let all_ms = t.elapsed().as_secs_f64() * 1000.0;
    for (what, v) in
        [("DescribeTasks of 100 tasks", &describe_ms), (&format!("ListTasks (first page of {listed})"), &list_ms)]
    {
        let p99 = percentile(v, 0.99);
        println!(
            "API {what}, {API_CALLS} calls one after another (signed client): p50 {:.2} ms, p99 {p99:.2} ms; target p99 < 10 ms: {}",
            percentile(v, 0.5),
            verdict(p99 < 10.0)
        );
    }
    println!("API ListTasks, every page ({listed} tasks): {all_ms:.1} ms");
    Ok(())
}

/// A log line without its colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn load_state(state: &Path) -> anyhow::Result<(Vec<String>, Value)> {
    let saved: Value = serde_json::from_slice(&std::fs::read(state).with_context(|| state.display().to_string())?)?;
    let arns = saved["arns"].as_array().context("arns")?.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    Ok((arns, saved))
}

async fn adopted(endpoint: &str, data: &Path, state: &Path, t0_ms: f64, log: &Path) -> anyhow::Result<()> {
    let (arns, saved) = load_state(state)?;
    let c = client(endpoint)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut api_at, mut supervised_at, mut agent_ms) = (None, None, None);
    while api_at.is_none() || supervised_at.is_none() {
        if Instant::now() > deadline {
            bail!("after the restart: API answering {api_at:?}, every task supervised {supervised_at:?} (after 300 s)");
        }
        if api_at.is_none() && c.ecs("ListClusters", json!({})).await.is_ok() {
            api_at = Some(now_ms() - t0_ms);
        }
        if supervised_at.is_none()
            && let Some(line) = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .map(strip_ansi)
                .find(|l| l.contains("every task live at start is supervised"))
        {
            supervised_at = Some(now_ms() - t0_ms);
            agent_ms = line.split("ms=").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned);
            println!("  agent: {}", line.trim());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (api, sup) = (api_at.unwrap_or_default(), supervised_at.unwrap_or_default());
    let total = api.max(sup) / 1000.0;
    println!(
        "  from spawn to the API answering {api:.0} ms, to every task supervised {sup:.0} ms (the agent's own count: \
         {} ms after it started); total {total:.2} s; target < 5 s: {}",
        agent_ms.as_deref().unwrap_or("?"),
        verdict(total < 5.0)
    );
    // Nothing restarted: the same processes and start times, all RUNNING.
    let ids: Vec<String> = arns.iter().map(|a| task_id(a).to_owned()).collect();
    let pids = task_pids(data, &ids);
    let before: BTreeMap<String, Vec<u32>> = serde_json::from_value(saved["pids"].clone())?;
    let changed = ids.iter().filter(|id| pids.get(*id) != before.get(*id)).count();
    let tasks = describe(&c, &arns).await?;
    let not_running = tasks.iter().filter(|t| t["lastStatus"] != "RUNNING").count();
    let restarted =
        tasks.iter().filter(|t| saved["startedAt"][t["taskArn"].as_str().unwrap_or("")] != t["startedAt"]).count();
    println!(
        "  {} tasks: {changed} with other shim/container pids, {restarted} with another startedAt, {not_running} not \
         RUNNING: {}",
        arns.len(),
        if changed + restarted + not_running == 0 { "nothing restarted" } else { "SOMETHING RESTARTED" }
    );
    Ok(())
}

async fn stop(endpoint: &str, data: &Path, state: &Path) -> anyhow::Result<()> {
    let (arns, _) = load_state(state)?;
    let c = client(endpoint)?;
    let t = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(STOP_PARALLEL));
    let calls: Vec<_> = arns
        .iter()
        .map(|arn| {
            let (c, arn, permits) = (c.clone(), arn.clone(), permits.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await?;
                c.ecs("StopTask", json!({"cluster": "default", "task": arn})).await
            })
        })
        .collect();
    for call in calls {
        call.await?.context("StopTask")?;
    }
    let calls_s = t.elapsed().as_secs_f64();
    let stopped = wait_all(&c, &arns, "STOPPED", Duration::from_secs(300), Duration::from_millis(100)).await?;
    let secs = t.elapsed().as_secs_f64();
    let wrong: Vec<&Value> = stopped
        .iter()
        .filter(|t| {
            t["stopCode"] != "UserInitiated" || !matches!(t["containers"][0]["exitCode"].as_i64(), Some(0 | 137 | 143))
        })
        .collect();
    println!(
        "stop at scale: StopTask for {} tasks, {STOP_PARALLEL} in flight (calls done in {calls_s:.1} s), all STOPPED \
         after {secs:.2} s (stopTimeout {STOP_TIMEOUT_S} s: `sleep` ignores SIGTERM); target < 20 s: {}",
        arns.len(),
        verdict(secs < 20.0)
    );
    match wrong.first() {
        None => println!("  stop codes: all UserInitiated, containers exited 137 (SIGKILL) or 0/143"),
        Some(t) => println!("  {} tasks with another stop code or exit code, e.g. {t}", wrong.len()),
    }
    // The last STOPPED is reported after teardown; give stragglers a moment anyway.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<String> = arns.iter().map(|a| task_id(a).to_owned()).collect();
    let mut found = leaks(data, &ids);
    if let Ok(ns) = std::env::var("BENCH_NETNS") {
        let links = run(Command::new("ip").args(["-n", &ns, "-o", "link", "show", "type", "veth"]))?;
        found.extend(links.lines().map(|l| format!("veth {}", l.split(':').nth(1).unwrap_or(l).trim())));
    }
    if found.is_empty() {
        println!(
            "leak check after {} tasks: nothing left (cgroups, mounts, loop devices, shims, container processes, runc, \
             task dirs, veths)",
            ids.len()
        );
    } else {
        println!("leak check after {} tasks: {} leftovers", ids.len(), found.len());
        for f in found.iter().take(40) {
            println!("  {f}");
        }
    }
    Ok(())
}

/// The peer: N `runc run -d` containers of one read-only bundle.
fn peer(n: usize) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let bundle = runc_bundle(&scratch.path().join("bundle"), &COMMAND)?;
    let prefix = flotilla_bench::runc_prefix("density");
    let result = peer_run(&bundle, &prefix, n);
    // Removed whatever happened, while the bundle still exists.
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(20) {
        let kills: Vec<_> = chunk
            .iter()
            .filter_map(|id| Command::new("runc").args(["delete", "-f", id]).stderr(Stdio::null()).spawn().ok())
            .collect();
        for mut k in kills {
            let _ = k.wait();
        }
    }
    result
}

/// `runc run -d`, its stdio on /dev/null: a detached container keeps runc's stdio, so a pipe
/// there would never see EOF.
fn runc_detached(bundle: &Path, id: &str) -> std::io::Result<std::process::Child> {
    Command::new("runc")
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn runc_run(bundle: &Path, id: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    if !runc_detached(bundle, id)?.wait()?.success() {
        bail!("runc run -d {id} failed");
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn peer_run(bundle: &Path, prefix: &str, n: usize) -> anyhow::Result<()> {
    runc_run(bundle, &format!("{prefix}-warm"))?;
    run(Command::new("runc").args(["delete", "-f", &format!("{prefix}-warm")]))?;
    std::thread::sleep(SETTLE);
    let (before, slabs_before) = (meminfo(), slabs());
    let mut first = Vec::new();
    for i in 0..SINGLES {
        first.push(runc_run(bundle, &format!("{prefix}-{i}"))?);
    }
    let ids: Vec<String> = (SINGLES..n - SINGLES).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(10) {
        let children = chunk.iter().map(|id| runc_detached(bundle, id)).collect::<Result<Vec<_>, _>>()?;
        for mut c in children {
            if !c.wait()?.success() {
                bail!("runc run -d failed");
            }
        }
    }
    let mut last = Vec::new();
    for i in n - SINGLES..n {
        last.push(runc_run(bundle, &format!("{prefix}-{i}"))?);
    }
    std::thread::sleep(SETTLE);
    let (after, slabs_after) = (meminfo(), slabs());
    let pss: u64 = processes()
        .iter()
        .filter(|p| p.comm == "sleep" && p.cgroup.contains(prefix))
        .filter_map(|p| mem(p.pid).ok())
        .map(|m| m.pss)
        .sum();
    let m = per_task(&before, &after, pss, n);
    println!("peer: {n} `runc run -d` containers of the same busybox rootfs and command (no network, no supervisor)");
    println!(
        "  host memory per container, all in: {:.2} MiB (processes {:.2} MiB PSS, kernel {:.2} MiB)",
        m.available, m.processes, m.kernel
    );
    println!("  slab caches that grew most, KiB per container: {}", slab_growth(&slabs_before, &slabs_after, n));
    let (f, l) = (median(&first), median(&last));
    println!(
        "  start (`runc run -d` to its return): containers 1-{SINGLES} {} ms (median {f:.0}); {}-{n} {} ms (median \
         {l:.0}); ratio {:.2}x",
        ms_list(&first),
        n - SINGLES + 1,
        ms_list(&last),
        l / f
    );
    Ok(())
}
