//! `flotilla logs TASK [--follow]`: a task's container output from CloudWatch Logs.

use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_cli::client::Client;
use serde_json::{Value, json};

/// One awslogs stream of the task.
struct Stream {
    container: String,
    group: String,
    name: String,
    token: Option<String>,
}

fn streams(task: &Value, definition: &Value, only: Option<&str>) -> Vec<Stream> {
    let id = task["taskArn"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for c in definition["containerDefinitions"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or_default();
        if only.is_some_and(|o| o != name) || c["logConfiguration"]["logDriver"] != "awslogs" {
            continue;
        }
        let options = &c["logConfiguration"]["options"];
        let Some(group) = options["awslogs-group"].as_str() else { continue };
        let stream = match options["awslogs-stream-prefix"].as_str() {
            Some(prefix) => format!("{prefix}/{name}/{id}"),
            None => id.clone(),
        };
        out.push(Stream { container: name.to_owned(), group: group.to_owned(), name: stream, token: None });
    }
    out
}

/// Prints the events after each stream's token; returns how many were printed.
async fn drain(client: &Client, streams: &mut [Stream], json_output: bool) -> anyhow::Result<usize> {
    let label = streams.len() > 1;
    let mut printed = 0;
    for s in streams.iter_mut() {
        loop {
            let mut body = json!({ "logGroupName": s.group, "logStreamName": s.name, "startFromHead": true });
            if let Some(t) = &s.token {
                body["nextToken"] = json!(t);
            }
            let page = match client.call("logs", "Logs_20140328.GetLogEvents", &body).await {
                Ok(page) => page,
                // The stream appears with the container's first line.
                Err(e) if e.to_string().contains("ResourceNotFoundException") => break,
                Err(e) => return Err(e),
            };
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                let message = e["message"].as_str().unwrap_or_default();
                if json_output {
                    println!(
                        "{}",
                        json!({ "container": s.container, "timestamp": e["timestamp"], "message": message })
                    );
                } else if label {
                    println!("[{}] {message}", s.container);
                } else {
                    println!("{message}");
                }
            }
            printed += events.len();
            let next = page["nextForwardToken"].as_str().map(str::to_owned);
            let same = next == s.token;
            s.token = next;
            if events.is_empty() || same {
                break;
            }
        }
    }
    Ok(printed)
}

pub async fn run(
    client: &Client,
    cluster: Option<String>,
    task: String,
    container: Option<String>,
    follow: bool,
    json_output: bool,
) -> anyhow::Result<()> {
    let describe = |client: &Client| {
        let body = json!({ "cluster": cluster, "tasks": [task] });
        let client = client.clone();
        async move { client.ecs("DescribeTasks", body).await }
    };
    let answer = describe(client).await?;
    let Some(t) = answer["tasks"].as_array().and_then(|a| a.first()).cloned() else {
        bail!("no task {task} in cluster {}; `flotilla tasks` lists them", cluster.as_deref().unwrap_or("default"));
    };
    let definition = client
        .ecs("DescribeTaskDefinition", json!({ "taskDefinition": t["taskDefinitionArn"] }))
        .await
        .context("cannot read the task's definition")?;
    let mut streams = streams(&t, &definition["taskDefinition"], container.as_deref());
    if streams.is_empty() {
        bail!(
            "the task has no container logging with the awslogs driver{}",
            match &container {
                Some(c) => format!(" named {c}"),
                None => String::new(),
            }
        );
    }
    drain(client, &mut streams, json_output).await?;
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stopped = describe(client).await?["tasks"][0]["lastStatus"] == "STOPPED";
        let printed = drain(client, &mut streams, json_output).await?;
        // A stopped task's output is complete once a pass after the stop finds nothing new.
        if stopped && printed == 0 {
            return Ok(());
        }
    }
}
