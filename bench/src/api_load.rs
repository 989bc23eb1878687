//! Sends the same signed ECS load to one endpoint and prints throughput and latency.
//!
//! `api-load ENDPOINT KIND CONCURRENCY REQUESTS` where KIND is `register` (RegisterTaskDefinition
//! spread over 16 families), `describe` (DescribeTaskDefinition of a registered revision) or
//! `describe-tasks` (DescribeTasks of 10 tasks, started first with RunTask in BENCH_SUBNET: the
//! server needs a host there, e.g. a simulated one).
//! Prints one JSON line: {"kind", "requests", "seconds", "rps", "p50_ms", "p99_ms", "errors"}.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use flotilla_api::Credentials;
use flotilla_cli::client::Client;
use serde_json::json;

fn body(family: &str) -> serde_json::Value {
    json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "web", "image": "nginx:latest", "essential": true,
            "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
            "environment": [{"name": "MODE", "value": "bench"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/bench", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}}
        }]
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        bail!("usage: api-load ENDPOINT register|describe|describe-tasks CONCURRENCY REQUESTS");
    }
    let (endpoint, kind) = (&args[1], args[2].clone());
    let concurrency: usize = args[3].parse().context("CONCURRENCY")?;
    let requests: usize = args[4].parse().context("REQUESTS")?;
    let creds = Credentials {
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID")?,
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY")?,
    };
    let client = Client::new(endpoint, creds, "us-east-1")?;
    let mut tasks = Vec::new();
    match kind.as_str() {
        "register" => {}
        "describe" => {
            client.ecs("RegisterTaskDefinition", body("bench-describe")).await.context("seeding describe")?;
        }
        "describe-tasks" => {
            let td =
                flotilla_bench::register(&client, "bench-describe-tasks", "busybox:latest", &["sleep", "1000000"], 1)
                    .await
                    .context("seeding describe-tasks")?;
            tasks = flotilla_bench::run_task(&client, &td, 10).await.context("seeding describe-tasks")?;
        }
        other => bail!("unknown KIND {other}: register, describe or describe-tasks"),
    }
    let tasks = Arc::new(tasks);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, errors, kind, tasks) =
                (client.clone(), next.clone(), errors.clone(), kind.clone(), tasks.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return latencies;
                    }
                    let t = Instant::now();
                    let result = match kind.as_str() {
                        "register" => client.ecs("RegisterTaskDefinition", body(&format!("bench-{}", i % 16))).await,
                        "describe" => {
                            client.ecs("DescribeTaskDefinition", json!({"taskDefinition": "bench-describe"})).await
                        }
                        _ => client.ecs("DescribeTasks", json!({"tasks": *tasks})).await,
                    };
                    // A DescribeTasks that finds fewer tasks than asked for failed too.
                    let result = result.and_then(|out| match out["failures"].as_array() {
                        Some(f) if !f.is_empty() => Err(anyhow::anyhow!("failures: {out}")),
                        _ => Ok(out),
                    });
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    if result.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for w in workers {
        all.extend(w.await?);
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{}",
        json!({
            "kind": kind, "requests": all.len(), "seconds": seconds, "rps": all.len() as f64 / seconds,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": errors.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
