//! Task churn: 100 tasks started and stopped back to back, in batches of 10, on Flotilla and as
//! plain runc containers; then a check that Flotilla left nothing behind on the host.
//!
//! `churn ENDPOINT DATA_DIR IMAGE BATCHES`
//!
//! Flotilla: per batch, RunTask count=10, wait until all 10 are RUNNING, StopTask all 10, wait
//! until all are STOPPED. The command exits on SIGTERM; stopTimeout is 2 s.
//! runc: per batch, 10 concurrent `runc run -d` of the same busybox rootfs and command, 10
//! `runc kill TERM`, wait until `runc state` says stopped, 10 `runc delete`.
//! Leak check (Flotilla's 100 task ids and data dir only; other runs on the host are ignored):
//! cgroups under /sys/fs/cgroup/*/flotilla/<task>, mounts under the data dir, loop devices
//! backed by files under it, flotilla-shim and container processes, task directories. The
//! server's scratch filesystem pool is reported apart; bench/common.sh checks that nothing of
//! it survives the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::leaks::{POOL_DIR, leaks};
use flotilla_bench::{client, register, run_task, runc_bundle, stop_all, task_id, wait_all};

const COMMAND: [&str; 3] = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"];
const BATCH: usize = 10;

/// The tasks' stopTimeout, and how long the runc peer waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

struct Phases {
    total: f64,
    start: Vec<f64>,
    stop: Vec<f64>,
    /// Containers that ended by SIGKILL after the stop timeout: the SIGTERM reached the shell
    /// before it had set its trap, and a namespace's init ignores a signal it has no handler
    /// for. Rare on a quiet machine; under load the shell can take long enough to get there.
    killed: usize,
}

async fn flotilla(
    c: &flotilla_cli::client::Client,
    td: &str,
    batches: usize,
    ids: &mut Vec<String>,
) -> anyhow::Result<Phases> {
    let t0 = Instant::now();
    let (mut start, mut stop, mut killed) = (Vec::new(), Vec::new(), 0);
    for b in 0..batches {
        let t = Instant::now();
        let arns = run_task(c, td, BATCH as i32).await?;
        ids.extend(arns.iter().map(|a| task_id(a).to_owned()));
        wait_all(c, &arns, "RUNNING", Duration::from_secs(120), Duration::from_millis(20))
            .await
            .with_context(|| format!("batch {b} to RUNNING"))?;
        start.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        stop_all(c, &arns).await?;
        let stopped = wait_all(c, &arns, "STOPPED", Duration::from_secs(120), Duration::from_millis(20))
            .await
            .with_context(|| format!("batch {b} to STOPPED"))?;
        stop.push(t.elapsed().as_secs_f64());
        for s in &stopped {
            match s["containers"][0]["exitCode"].as_i64() {
                Some(0) => {}
                Some(137) => killed += 1,
                _ => bail!("a task did not exit 0 on SIGTERM (or 137 on the SIGKILL after stopTimeout): {s}"),
            }
        }
    }
    Ok(Phases { total: t0.elapsed().as_secs_f64(), start, stop, killed })
}

fn runc_state(id: &str) -> String {
    Command::new("runc")
        .args(["state", id])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn wait_children(children: Vec<Child>, what: &str) -> anyhow::Result<()> {
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("{what} failed: {status}");
        }
    }
    Ok(())
}

fn runc(bundle: &Path, batches: usize, prefix: &str) -> anyhow::Result<Phases> {
    let t0 = Instant::now();
    let (mut start, mut stop, mut killed) = (Vec::new(), Vec::new(), 0);
    for b in 0..batches {
        let ids: Vec<String> = (0..BATCH).map(|i| format!("{prefix}-{b}-{i}")).collect();
        match runc_batch(bundle, &ids) {
            Ok((s, t, k)) => {
                start.push(s);
                stop.push(t);
                killed += k;
            }
            Err(e) => {
                // Removed here, while their bundle still exists: the caller's error drops it.
                for id in &ids {
                    let _ = Command::new("runc").args(["delete", "-f", id]).output();
                }
                return Err(e.context(format!("runc batch {b}")));
            }
        }
    }
    Ok(Phases { total: t0.elapsed().as_secs_f64(), start, stop, killed })
}

/// One batch of the runc peer: (start s, stop s, containers SIGKILLed after the stop timeout).
fn runc_batch(bundle: &Path, ids: &[String]) -> anyhow::Result<(f64, f64, usize)> {
    let spawn = |args: &[&str]| Command::new("runc").args(args).stdin(Stdio::null()).stdout(Stdio::null()).spawn();
    let t = Instant::now();
    let bundle = bundle.to_str().context("bundle path")?;
    let children = ids.iter().map(|id| spawn(&["run", "-d", "--bundle", bundle, id])).collect::<Result<Vec<_>, _>>()?;
    wait_children(children, "runc run -d")?;
    for id in ids {
        if runc_state(id) != "running" {
            bail!("{id} is not running after runc run -d");
        }
    }
    let start = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let children = ids.iter().map(|id| spawn(&["kill", id, "TERM"])).collect::<Result<Vec<_>, _>>()?;
    wait_children(children, "runc kill")?;
    // As StopTask does: SIGKILL whatever has not exited STOP_TIMEOUT after the SIGTERM.
    let term_sent = Instant::now();
    let deadline = term_sent + Duration::from_secs(30);
    let mut killed = 0;
    for id in ids {
        let mut sent_kill = false;
        while runc_state(id) != "stopped" {
            if !sent_kill && term_sent.elapsed() > STOP_TIMEOUT {
                // May fail if it exits meanwhile; the state poll is what decides.
                let _ = Command::new("runc").args(["kill", id, "KILL"]).output();
                sent_kill = true;
                killed += 1;
            }
            if Instant::now() > deadline {
                bail!("{id} did not stop on SIGTERM, nor on SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let children = ids.iter().map(|id| spawn(&["delete", id])).collect::<Result<Vec<_>, _>>()?;
    wait_children(children, "runc delete")?;
    Ok((start, t.elapsed().as_secs_f64(), killed))
}

fn sum(v: &[f64]) -> f64 {
    v.iter().sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        bail!("usage: churn ENDPOINT DATA_DIR IMAGE BATCHES");
    }
    let (endpoint, data, image) = (&args[1], PathBuf::from(&args[2]), &args[3]);
    let batches: usize = args[4].parse().context("BATCHES")?;
    let c = client(endpoint)?;
    let td = register(&c, "bench-churn", image, &COMMAND, STOP_TIMEOUT.as_secs() as i64).await?;
    let scratch = tempfile::tempdir()?;
    let bundle = runc_bundle(scratch.path(), &COMMAND)?;
    let prefix = flotilla_bench::runc_prefix("churn");

    // Warm-up: one task (image cache) and one runc container, not counted.
    let arns = run_task(&c, &td, 1).await?;
    wait_all(&c, &arns, "RUNNING", Duration::from_secs(120), Duration::from_millis(20)).await?;
    stop_all(&c, &arns).await?;
    wait_all(&c, &arns, "STOPPED", Duration::from_secs(120), Duration::from_millis(20)).await?;
    runc(&bundle, 1, &format!("{prefix}-warm"))?;

    let mut ids = Vec::new();
    let fl = flotilla(&c, &td, batches, &mut ids).await?;
    let rc = runc(&bundle, batches, &prefix)?;
    let n = (batches * BATCH) as f64;
    println!("churn: {} tasks, batches of {BATCH} (start all, wait RUNNING, stop all, wait STOPPED)", n);
    println!("{:<9} {:>8} {:>9} {:>14} {:>14}", "runtime", "total_s", "tasks/s", "start_s/batch", "stop_s/batch");
    for (name, p) in [("flotilla", &fl), ("runc", &rc)] {
        println!(
            "{name:<9} {:>8.2} {:>9.1} {:>14.2} {:>14.2}",
            p.total,
            n / p.total,
            sum(&p.start) / p.start.len() as f64,
            sum(&p.stop) / p.stop.len() as f64
        );
    }
    println!("ratio flotilla/runc throughput: {:.2}x", (n / fl.total) / (n / rc.total));
    if fl.killed + rc.killed > 0 {
        println!(
            "SIGKILLed after the {STOP_TIMEOUT:?} stop timeout (SIGTERM came before the shell's trap; each adds ~2 s to \
             its batch's stop): flotilla {}, runc {}",
            fl.killed, rc.killed
        );
    }
    // The last STOPPED is reported after teardown; give stragglers a moment anyway.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let found = leaks(&data, &ids);
    let pool = data.join("tasks").join(POOL_DIR);
    let pooled = std::fs::read_dir(&pool).map(|d| d.count()).unwrap_or(0);
    println!("scratch filesystem pool: {pooled} ready in {} (the server's; gone when it exits)", pool.display());
    if found.is_empty() {
        println!(
            "leak check after {} Flotilla tasks: nothing left (cgroups, mounts, loop devices, shims, container processes, runc, task dirs)",
            ids.len()
        );
    } else {
        println!("leak check after {} Flotilla tasks: {} leftovers", ids.len(), found.len());
        for f in found.iter().take(40) {
            println!("  {f}");
        }
    }
    Ok(())
}
