//! Cached-image task start: Flotilla's RunTask to the container's first output line, against
//! `runc run` of the same busybox rootfs to its first stdout line, interleaved round by round.
//!
//! `task-start ENDPOINT DATA_DIR IMAGE N [CPU_UNITS]` (task size; default 256 = 0.25 vCPU)
//!
//! Flotilla: one task warms the image cache, then N rounds of RunTask; the clock starts when the
//! RunTask response arrives and stops at the `t` of the first line of the container's
//! `log.jsonl` (epoch ms, stamped by the shim as it reads the line). The file is polled every
//! millisecond. Each round waits for the task to stop before the next starts, and the task's
//! timestamps and its shim's log give the breakdown.
//! runc: `runc run --bundle B <unique id>` of an OCI bundle of the same busybox layer, from just
//! before the spawn to the first stdout line; then `runc kill`, wait, `runc delete -f`. A third
//! row runs the same bundle with the seccomp profile copied from Flotilla's own runtime config.
//! Flotilla's containers are made by its builtin OCI runtime unless `FLOTILLA_RUNTIME=runc`
//! was set for the server (then the comparison is runc against itself plus Flotilla's path).

mod task_start_http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{
    client, median, now_ms, percentile, register_sized, remove_runc, run_task, runc_bundle, spawn_runc_run, task_id,
    wait_all,
};
use serde_json::Value;

const COMMAND: [&str; 3] = ["sh", "-c", "echo ready; sleep 2"];

/// One Flotilla round's figures, all in ms.
#[derive(Default, Debug)]
struct Round {
    /// `linux.seccomp` of the container's runc config, read while it runs.
    seccomp: Option<Value>,
    api: f64,
    start_to_line: f64,
    /// The task cgroup's CFS throttling up to the first line: (periods throttled, ms throttled).
    throttled: Option<(f64, f64)>,
    /// Phases from the task's timestamps and the shim log (epoch ms).
    phases: Vec<(&'static str, f64)>,
}

fn epoch_ms(task: &Value, field: &str) -> Option<f64> {
    task[field].as_f64().map(|s| s * 1000.0)
}

/// `2026-11-30T03:05:55.026040Z` -> epoch ms.
fn rfc3339_ms(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + h * 3600 + min * 60) as f64 + sec) * 1000.0)
}

/// `timings={"runc_create": 47112, ...}` value of `key` in µs.
fn timing(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(&format!("\"{key}\": "))? + key.len() + 4..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

struct ShimLog {
    ready: f64,
    created: f64,
    started: f64,
    create_line: String,
    start_line: String,
}

fn parse_shim_log(text: &str) -> Option<ShimLog> {
    let stamp = |needle: &str| -> Option<(f64, String)> {
        let line = text.lines().find(|l| l.contains(needle))?;
        Some((rfc3339_ms(line.split_whitespace().next()?)?, line.to_owned()))
    };
    let (ready, _) = stamp("shim ready")?;
    let (created, create_line) = stamp("task created")?;
    let (started, start_line) = stamp("container started")?;
    Some(ShimLog { ready, created, started, create_line, start_line })
}

fn first_log_t(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let first = text.lines().next()?;
    let v: Value = serde_json::from_str(first).ok()?;
    v["t"].as_f64()
}

async fn flotilla_round(c: &flotilla_cli::client::Client, data: &Path, td: &str) -> anyhow::Result<Round> {
    let sent = now_ms();
    let arns = run_task(c, td, 1).await?;
    let returned = now_ms();
    let id = task_id(&arns[0]).to_owned();
    let dir = data.join("tasks").join(&id);
    let log = dir.join("containers/main/log.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    let line_t = loop {
        if let Some(t) = first_log_t(&log) {
            break t;
        }
        if Instant::now() > deadline {
            bail!("no first log line in {} after 60 s", log.display());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let throttled = cpu_throttled(&id);
    let seccomp = std::fs::read(dir.join("containers/main/config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|v| v["linux"]["seccomp"].clone());
    // The shim logs "container started" just after runc start returns; give it a moment.
    let mut shim = None;
    for _ in 0..500 {
        if let Some(s) = std::fs::read_to_string(dir.join("shim.log")).ok().as_deref().and_then(parse_shim_log) {
            shim = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tasks = wait_all(c, &arns, "STOPPED", Duration::from_secs(60), Duration::from_millis(50)).await?;
    let task = &tasks[0];
    if task["containers"][0]["exitCode"] != 0 {
        bail!("task {id} did not exit 0: {task}");
    }
    let mut round =
        Round { seccomp, api: returned - sent, start_to_line: line_t - returned, throttled, phases: Vec::new() };
    let (pull0, pull1) = (epoch_ms(task, "pullStartedAt"), epoch_ms(task, "pullStoppedAt"));
    if let (Some(pull0), Some(pull1), Some(s)) = (pull0, pull1, shim) {
        // The start's runc work: `runc start` of a container created ahead (`precreated`),
        // or `runc run -d`; older shims ran `runc create` then `runc start` in the start.
        let t = |k: &str| timing(&s.start_line, k).unwrap_or(0.0) / 1000.0;
        let precreated = timing(&s.start_line, "precreated").is_some();
        let (ops_wait, run, create, start) = (t("ops_wait"), t("runc_run"), t("runc_create"), t("runc_start"));
        let on_path = ops_wait + run + start + if precreated { 0.0 } else { create };
        let mkfs = timing(&s.create_line, "ephemeral_fs").unwrap_or(0.0) / 1000.0;
        let pooled = timing(&s.create_line, "ephemeral_fs_pooled").unwrap_or(0.0);
        let runc_begin = s.started - on_path;
        round.phases = vec![
            ("RunTask response -> PENDING recorded (pickup)", pull0 - returned),
            ("cached pull (resolve, cached or manifest GET)", pull1 - pull0),
            ("logs + spec + shim spawn/daemonize", s.ready - pull1),
            ("shim: create sandbox (total)", s.created - s.ready),
            ("  of which ephemeral ext4 (pooled, or mkfs+mount)", mkfs),
            ("  pooled ext4? (2 = pre-mounted, 1 = device, 0 = no)", pooled),
            ("sandbox created -> agent asks start", runc_begin - s.created),
        ];
        // The same rows every round, whichever way the container was started.
        round.phases.push(("  OCI create, ahead (overlaps the phase above)", if precreated { create } else { 0.0 }));
        round.phases.push(("start waits for a create in flight", ops_wait));
        round.phases.push(("OCI start (or run -d / create+start if not ahead)", on_path - ops_wait));
        round.phases.push(("runtime returned -> first line stamped", line_t - s.started));
    }
    Ok(round)
}

/// (nr_throttled, throttled ms) of the task's cgroup, v1 or v2.
fn cpu_throttled(task_id: &str) -> Option<(f64, f64)> {
    for (path, ns_per_unit) in [
        (format!("/sys/fs/cgroup/cpu/flotilla/{task_id}/cpu.stat"), 1e6),
        (format!("/sys/fs/cgroup/cpu,cpuacct/flotilla/{task_id}/cpu.stat"), 1e6),
        (format!("/sys/fs/cgroup/flotilla/{task_id}/cpu.stat"), 1e3),
    ] {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let field =
            |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok());
        let time = field("throttled_time ").or_else(|| field("throttled_usec "))?;
        return Some((field("nr_throttled ")?, time / ns_per_unit));
    }
    None
}

fn runc_round(bundle: &Path, id: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = spawn_runc_run(bundle, id, Stdio::piped())?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    remove_runc(id, &mut child);
    if first.trim() != "ready" {
        bail!("runc run printed {first:?}");
    }
    Ok(elapsed)
}

fn row(name: &str, v: &[f64]) {
    println!(
        "{name:<9} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        v.len(),
        median(v),
        percentile(v, 0.9),
        percentile(v, 0.0),
        percentile(v, 1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=6).contains(&args.len()) {
        bail!("usage: task-start ENDPOINT DATA_DIR IMAGE N [CPU_UNITS]");
    }
    let (endpoint, data, image) = (&args[1], PathBuf::from(&args[2]), &args[3]);
    let n: usize = args[4].parse().context("N")?;
    let c = client(endpoint)?;
    let cpu: u32 = args.get(5).map_or(Ok(256), |a| a.parse()).context("CPU_UNITS")?;
    let td = register_sized(&c, &format!("bench-start-{cpu}"), image, &COMMAND, 2, cpu).await?;

    let scratch = tempfile::tempdir()?;
    let bundle = runc_bundle(scratch.path(), &COMMAND)?;
    let prefix = flotilla_bench::runc_prefix("start");

    // Warm-up: fills the image cache (and page cache) for Flotilla, and warms runc's binary.
    let warm = flotilla_round(&c, &data, &td).await.context("warm-up task")?;
    runc_round(&bundle, &format!("{prefix}-warm"))?;
    // A second peer: the same bundle with the seccomp profile Flotilla gives its containers
    // (Docker's default, as on Fargate), to separate that cost from the rest.
    let seccomp = warm.seccomp.filter(|v| v.is_object()).context("no linux.seccomp in the task's runc config")?;
    let scratch2 = tempfile::tempdir()?;
    let bundle_sec = runc_bundle(scratch2.path(), &COMMAND)?;
    let cfg = bundle_sec.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&cfg)?)?;
    spec["linux"]["seccomp"] = seccomp;
    std::fs::write(&cfg, serde_json::to_vec_pretty(&spec)?)?;
    runc_round(&bundle_sec, &format!("{prefix}-warm-sec"))?;

    let (mut fl, mut rc, mut rs, mut api) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut nr_throttled, mut throttled_ms) = (Vec::new(), Vec::new());
    let mut phases: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for i in 0..n {
        let r = flotilla_round(&c, &data, &td).await.with_context(|| format!("flotilla round {i}"))?;
        fl.push(r.start_to_line);
        if let Some((n, ms)) = r.throttled {
            nr_throttled.push(n);
            throttled_ms.push(ms);
        }
        api.push(r.api);
        for (k, (name, v)) in r.phases.into_iter().enumerate() {
            if phases.len() <= k {
                phases.push((name, Vec::new()));
            }
            phases[k].1.push(v);
        }
        rc.push(runc_round(&bundle, &format!("{prefix}-{i}")).with_context(|| format!("runc round {i}"))?);
        rs.push(
            runc_round(&bundle_sec, &format!("{prefix}-sec-{i}")).with_context(|| format!("runc+seccomp round {i}"))?,
        );
    }
    println!(
        "cached-image start to first output line, ms (N={n}, rounds interleaved; task size {cpu} CPU units = {} vCPU)",
        cpu as f64 / 1024.0
    );
    println!("{:<9} {:>4} {:>9} {:>9} {:>9} {:>9}", "runtime", "n", "median", "p90", "min", "max");
    row("flotilla", &fl);
    row("runc", &rc);
    row("runc+sec", &rs);
    println!(
        "ratio flotilla/runc: median {:.2}x, p90 {:.2}x (target: median within 1.5x)",
        median(&fl) / median(&rc),
        percentile(&fl, 0.9) / percentile(&rc, 0.9)
    );
    println!(
        "ratio flotilla/runc+sec (runc given Flotilla's seccomp profile): median {:.2}x, p90 {:.2}x",
        median(&fl) / median(&rs),
        percentile(&fl, 0.9) / percentile(&rs, 0.9)
    );
    println!("RunTask request itself (not in the figure above): median {:.1} ms", median(&api));
    if !throttled_ms.is_empty() {
        println!(
            "task cgroup CFS throttling before the first line (the container's init is set up under the task's CPU quota): \
             median {:.0} periods, {:.1} ms; max {:.1} ms",
            median(&nr_throttled),
            median(&throttled_ms),
            percentile(&throttled_ms, 1.0)
        );
    }
    println!();
    println!("where Flotilla's time goes, ms per phase (task timestamps [ms resolution] and shim.log):");
    println!("  {:<50} {:>7} {:>7} {:>7}", "phase", "median", "mean", "max");
    for (name, v) in &phases {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!("  {name:<50} {:>7.1} {:>7.1} {:>7.1}", median(v), mean, percentile(v, 1.0));
    }
    let sum: f64 =
        phases.iter().filter(|(n, _)| !n.starts_with("  ")).map(|(_, v)| v.iter().sum::<f64>() / v.len() as f64).sum();
    println!("  {:<50} {:>7} {:>7.1}", "(sum of means = mean total)", "", sum);
    http_rounds(&c, image, cpu, n, &prefix).await
}

/// Start to first HTTP response, Flotilla against `runc run` (see `task_start_http.rs`).
async fn http_rounds(
    c: &flotilla_cli::client::Client,
    image: &str,
    cpu: u32,
    n: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    use task_start_http as http;
    let td = register_sized(c, &format!("bench-http-{cpu}"), image, &http::HTTP_COMMAND, 2, cpu).await?;
    let netns = std::env::var("BENCH_NETNS").ok().map(|n| PathBuf::from("/run/netns").join(n));
    let scratch = tempfile::tempdir()?;
    let bundle = runc_bundle(scratch.path(), &http::HTTP_COMMAND)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    http::host_network_bundle(&bundle, port)?;
    http::flotilla_round(c, &td, netns.as_deref()).await.context("HTTP warm-up task")?;
    http::runc_round(&bundle, &format!("{prefix}-http-warm"), port)?;
    let (mut fl, mut rc) = (Vec::new(), Vec::new());
    for i in 0..n {
        fl.push(http::flotilla_round(c, &td, netns.as_deref()).await.with_context(|| format!("HTTP round {i}"))?);
        rc.push(http::runc_round(&bundle, &format!("{prefix}-http-{i}"), port)?);
    }
    println!();
    println!("cached-image start to first HTTP response (busybox httpd), ms (N={n}, rounds interleaved)");
    println!("{:<9} {:>4} {:>9} {:>9} {:>9} {:>9}", "runtime", "n", "median", "p90", "min", "max");
    row("flotilla", &fl);
    row("runc", &rc);
    println!(
        "ratio flotilla/runc: median {:.2}x, p90 {:.2}x (Flotilla's includes the task's own network \
         interface; runc's container shares the host's loopback)",
        median(&fl) / median(&rc),
        percentile(&fl, 0.9) / percentile(&rc, 0.9)
    );
    Ok(())
}
