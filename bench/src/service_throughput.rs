//! `service-throughput ENDPOINT [SERVICES] [TASKS_PER_SERVICE]`: creates SERVICES services of
//! TASKS_PER_SERVICE desired tasks each (default 50 x 20), all at once (one concurrent
//! CreateService per service), on a server whose agents are simulated, and measures how fast
//! the scheduler places them: task records created per second from the first CreateService
//! sent to the last task record's `createdAt`, and the time until all are RUNNING in the
//! store. Then deletes the services (force), waits until every task has stopped, and runs the
//! same number of tasks through RunTask as a baseline without the scheduler.
//!
//! `createdAt` is the moment the control plane wrote a task's record, i.e. its placement; the
//! driver reads them after the run, so its own calls do not slow the placements down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{median, now_ms, percentile};
use flotilla_cli::client::Client;
use serde_json::{Value, json};

const FAMILY: &str = "bench-throughput";
const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(10);

fn name(i: usize) -> String {
    format!("bench-{i:03}")
}

/// Every task ARN of the default cluster with desired status `desired`.
async fn list_tasks(client: &Client, desired: &str) -> anyhow::Result<Vec<String>> {
    let arns = client
        .ecs_list_all("ListTasks", json!({"cluster": "default", "desiredStatus": desired}), "taskArns")
        .await
        .context("ListTasks")?;
    Ok(arns.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

/// DescribeServices of every service, in batches of 10 (the operation's limit).
/// The services, 10 a call (DescribeServices' limit), the calls at once: a poll's answer is
/// then as old as its slowest call, not the sum of its calls.
async fn describe_services(client: &Client, names: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut calls = Vec::new();
    for chunk in names.chunks(10) {
        let (client, chunk) = (client.clone(), chunk.to_vec());
        calls.push(tokio::spawn(async move {
            client.ecs("DescribeServices", json!({"cluster": "default", "services": chunk})).await
        }));
    }
    let mut all = Vec::new();
    for call in calls {
        let out = call.await?.context("DescribeServices")?;
        all.extend(out["services"].as_array().cloned().unwrap_or_default());
    }
    Ok(all)
}

/// An AWS JSON timestamp (epoch seconds) in epoch milliseconds.
fn epoch_ms(v: &Value) -> Option<f64> {
    v.as_f64().map(|s| s * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(2..=4).contains(&args.len()) {
        bail!("usage: service-throughput ENDPOINT [SERVICES] [TASKS_PER_SERVICE]");
    }
    let services: usize = args.get(2).map_or(Ok(50), |s| s.parse())?;
    let per_service: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let total = services * per_service;
    let client = flotilla_bench::client(&args[1])?;
    let subnet = std::env::var("BENCH_SUBNET").context("BENCH_SUBNET (a subnet id, e.g. the default VPC's)")?;
    // The services' subnets: BENCH_SUBNETS (comma-separated, one per zone to spread over
    // hosts in every zone), else BENCH_SUBNET alone.
    let subnets: Vec<String> = std::env::var("BENCH_SUBNETS")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_else(|_| vec![subnet.clone()]);
    // The simulated agent pretends to pull and run whatever image it is given.
    let td = flotilla_bench::register(&client, FAMILY, "busybox:latest", &["sleep", "1000000"], 2).await?;
    let names: Vec<String> = (0..services).map(name).collect();

    // All at once: every request is in flight before the first answer is read.
    let sent_ms = now_ms();
    let sent = Instant::now();
    let calls: Vec<_> = names
        .iter()
        .map(|service| {
            let (client, td, subnets, service) = (client.clone(), td.clone(), subnets.clone(), service.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let body = json!({
                    "cluster": "default", "serviceName": service, "taskDefinition": td,
                    "desiredCount": per_service, "launchType": "FARGATE",
                    "networkConfiguration": {"awsvpcConfiguration": {"subnets": subnets}},
                });
                client.ecs("CreateService", body).await.context("CreateService")?;
                anyhow::Ok(start.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut create_ms = Vec::new();
    for call in calls {
        create_ms.push(call.await??);
    }
    let all_created = sent.elapsed();

    // As a polling client sees it: the services' runningCount summed, polled until it is
    // `total`. Only DescribeServices (5 calls a poll), so that the poller loads the server as
    // little as it can while it works.
    let mut polls = 0;
    // When every task record was committed (the services count it pending or running): the
    // placement throughput as the store has it (createdAt is each scheduler pass's start).
    let mut committed_at = None;
    // When the last poll that did not see them all was sent: they were not all committed
    // before then (a lower bound; `committed_at`, when a poll saw them, is the figure judged).
    let mut not_yet_at = Duration::ZERO;
    // Each poll until then: (sent, answered, tasks counted), for how long a poll took.
    let mut early_polls: Vec<(Duration, Duration, i64)> = Vec::new();
    let running_at = loop {
        if sent.elapsed() > DEADLINE {
            bail!("not all {total} tasks RUNNING after {DEADLINE:?}");
        }
        polls += 1;
        let poll_sent = sent.elapsed();
        let described = describe_services(&client, &names).await?;
        let running: i64 = described.iter().map(|s| s["runningCount"].as_i64().unwrap_or(0)).sum();
        let placed: i64 = running + described.iter().map(|s| s["pendingCount"].as_i64().unwrap_or(0)).sum::<i64>();
        if committed_at.is_none() {
            early_polls.push((poll_sent, sent.elapsed(), placed));
            if placed >= total as i64 {
                committed_at = Some(sent.elapsed());
            } else {
                not_yet_at = poll_sent;
            }
        }
        if running == total as i64 {
            break sent.elapsed();
        }
        tokio::time::sleep(POLL).await;
    };

    // The exact figures come from the task records themselves (server clock, ms): when each
    // was created and when each reached RUNNING. Listed only now, so that listing 1,000
    // tasks does not load the server while it places them; more than `total` would be a
    // scheduler that started too many.
    let arns = list_tasks(&client, "RUNNING").await?;
    let tasks = flotilla_bench::describe(&client, &arns).await?;
    let mut per_group: HashMap<String, usize> = HashMap::new();
    for t in &tasks {
        *per_group.entry(t["group"].as_str().unwrap_or("-").to_owned()).or_default() += 1;
        if t["lastStatus"] != "RUNNING" {
            bail!("task not RUNNING although every service counts its tasks running: {t}");
        }
    }
    let uneven: Vec<_> = per_group.iter().filter(|(_, n)| **n != per_service).collect();
    if tasks.len() != total || per_group.len() != services || !uneven.is_empty() {
        bail!(
            "{} tasks in {} groups, wanted {services} x {per_service}; uneven: {uneven:?}",
            tasks.len(),
            per_group.len()
        );
    }
    let created: Vec<f64> = tasks.iter().filter_map(|t| epoch_ms(&t["createdAt"])).map(|t| t - sent_ms).collect();
    let started: Vec<f64> = tasks.iter().filter_map(|t| epoch_ms(&t["startedAt"])).map(|t| t - sent_ms).collect();
    let last_created = created.iter().copied().fold(f64::NAN, f64::max);
    let first_created = created.iter().copied().fold(f64::NAN, f64::min);
    let last_started = started.iter().copied().fold(f64::NAN, f64::max);
    let placements = total as f64 / (last_created / 1000.0);

    println!("Scheduler throughput: {services} services x {per_service} tasks = {total}, created concurrently");
    println!(
        "  CreateService calls: all {services} answered {:.1} ms after the first was sent; each took median {:.1} ms, p90 {:.1}, max {:.1}",
        all_created.as_secs_f64() * 1000.0,
        median(&create_ms),
        percentile(&create_ms, 0.9),
        percentile(&create_ms, 1.0)
    );
    println!(
        "  task records (createdAt, server clock): first {first_created:.1} ms, last {last_created:.1} ms after the first CreateService was sent"
    );
    println!("  placements: {placements:.0} tasks/s (first CreateService sent -> {total}th task record created)");
    let committed = committed_at.unwrap_or(running_at).as_secs_f64();
    println!(
        "  committed: every task record counted by its service {:.1} ms after the first CreateService ({:.0} placements/s)",
        committed * 1000.0,
        total as f64 / committed
    );
    println!(
        "    (the last poll that saw fewer was sent at {:.1} ms: committed between the two)",
        not_yet_at.as_secs_f64() * 1000.0
    );
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let shown: Vec<String> =
        early_polls.iter().map(|(s, a, n)| format!("{:.0}->{:.0} ms: {n}", ms(s), ms(a))).collect();
    println!("    (polls until then, sent->answered: tasks counted: {})", shown.join(", "));
    println!("  all {total} RUNNING in the store (last startedAt): {last_started:.1} ms");
    println!(
        "  as a polling client saw it: runningCount sum {total} at {:.1} ms ({polls} polls)",
        running_at.as_secs_f64() * 1000.0
    );
    // Judged on the committed figure: createdAt is when a pass decided, not when the task exists.
    let committed_rate = total as f64 / committed;
    let met = committed_rate >= 2000.0;
    println!(
        "target (at least 2,000 placements/s, committed): {} ({committed_rate:.0}/s)",
        if met { "met" } else { "NOT met" }
    );
    print_steps(&tasks, sent_ms);

    // Gone again: the services deleted (forced, so scaled to 0) and every task stopped.
    // BENCH_NO_BASELINE: the placements are all that is measured; the tasks go with the server.
    if std::env::var_os("BENCH_NO_BASELINE").is_some() {
        return Ok(());
    }
    flotilla_bench::stop_everything(&client, DEADLINE).await?;
    runtask_baseline(&client, &td, total).await?;
    flotilla_bench::stop_everything(&client, DEADLINE).await?;
    Ok(())
}

/// Where the time goes: when 10%, 20%, ... 100% of `tasks` had reached each step of their
/// lives (the control plane's placement, the agent's first report, RUNNING), in ms after
/// `sent_ms`.
fn print_steps(tasks: &[Value], sent_ms: f64) {
    println!("  ms after the first request when 10%, 20%, ... 100% of the tasks had:");
    for (label, field) in [
        ("been placed (createdAt)", "createdAt"),
        ("begun their pull (pullStartedAt)", "pullStartedAt"),
        ("started (startedAt)", "startedAt"),
    ] {
        let stamps: Vec<f64> = tasks.iter().filter_map(|t| epoch_ms(&t[field])).map(|t| t - sent_ms).collect();
        let deciles: Vec<String> = (1..=10).map(|d| format!("{:.0}", percentile(&stamps, d as f64 / 10.0))).collect();
        println!("    {label:<34} {}", deciles.join(" "));
    }
}

/// The same number of tasks through RunTask (10 a call, every call at once) on the same
/// server, no service: what placing and running them costs the API, store and simulated agent
/// without the scheduler, to set the figures above against.
async fn runtask_baseline(client: &Client, td: &str, total: usize) -> anyhow::Result<()> {
    let sent_ms = now_ms();
    let sent = Instant::now();
    let calls: Vec<_> = (0..total.div_ceil(10))
        .map(|i| {
            let (client, td) = (client.clone(), td.to_owned());
            let count = (total - i * 10).min(10) as i32;
            tokio::spawn(async move { flotilla_bench::run_task(&client, &td, count).await })
        })
        .collect();
    let mut arns = Vec::new();
    for call in calls {
        arns.extend(call.await??);
    }
    let all_answered = sent.elapsed();
    // Polled through DescribeClusters (one call) for the same reason as above.
    let running_at = loop {
        if sent.elapsed() > DEADLINE {
            bail!("RunTask baseline: not all {total} tasks RUNNING after {DEADLINE:?}");
        }
        let out = client.ecs("DescribeClusters", json!({"clusters": ["default"]})).await.context("DescribeClusters")?;
        if out["clusters"][0]["runningTasksCount"].as_u64() == Some(total as u64) {
            break sent.elapsed();
        }
        tokio::time::sleep(POLL).await;
    };
    let tasks = flotilla_bench::describe(client, &arns).await?;
    let last =
        |field: &str| tasks.iter().filter_map(|t| epoch_ms(&t[field])).map(|t| t - sent_ms).fold(f64::NAN, f64::max);
    println!();
    println!(
        "Baseline, no scheduler: the same {total} tasks through RunTask (count 10, {} calls at once)",
        arns.len().div_ceil(10)
    );
    println!("  all RunTask calls answered {:.1} ms after the first was sent", all_answered.as_secs_f64() * 1000.0);
    println!(
        "  placements: {:.0} tasks/s (last createdAt {:.1} ms)",
        total as f64 / (last("createdAt") / 1000.0),
        last("createdAt")
    );
    println!(
        "  all {total} RUNNING in the store (last startedAt): {:.1} ms; a polling client saw it at {:.1} ms",
        last("startedAt"),
        running_at.as_secs_f64() * 1000.0
    );
    print_steps(&tasks, sent_ms);
    Ok(())
}
