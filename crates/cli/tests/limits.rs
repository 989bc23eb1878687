//! A host's limits hit on purpose: `flotilla up --max-tasks 2` takes two tasks and refuses the
//! rest with ECS's capacity failure, making nothing of a refused task (no record, no sandbox,
//! no interface). Privileged: real tasks, like tasks.rs.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use serde_json::{Value, json};

/// Task directories under the server's sandbox root (the scratch pool's is not a task's).
fn task_dirs(f: &Fixture) -> Vec<String> {
    std::fs::read_dir(f.server.data_dir.join("tasks"))
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
        })
        .unwrap_or_default()
}

fn all_tasks(f: &Fixture) -> Vec<String> {
    let mut arns = Vec::new();
    for status in ["RUNNING", "STOPPED"] {
        let out = f.server.aws_json(&["ecs", "list-tasks", "--desired-status", status]);
        arns.extend(out["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()));
    }
    arns
}

fn run_task(f: &Fixture, td: &str, count: u32) -> Value {
    let count = count.to_string();
    f.server.aws_json(&[
        "ecs",
        "run-task",
        "--task-definition",
        td,
        "--launch-type",
        "FARGATE",
        "--count",
        &count,
        "--network-configuration",
        &f.network(),
    ])
}

#[test]
fn max_tasks_refuses_the_rest_with_the_capacity_failure_and_makes_nothing() {
    let f = Fixture::with_server_flags(&["--max-tasks", "2"]);
    let td = f.register("capped", json!([f.container("main", &["sleep", "600"])]), json!({}));
    let first = f.run(&td);
    let second = f.run(&td);
    for task in [&first, &second] {
        f.wait_status(task, "RUNNING", Duration::from_secs(120));
    }

    let out = run_task(&f, &td, 1);
    assert_eq!(out["tasks"], json!([]), "{out}");
    let failures = out["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{out}");
    assert_eq!(failures[0]["reason"], "RESOURCE:TASKS", "{out}");
    let arn = failures[0]["arn"].as_str().unwrap();
    assert!(arn.contains(":container-instance/default/"), "the failure names the host: {out}");
    // Nothing of the refused task exists: no record, no sandbox, no interface.
    assert_eq!(all_tasks(&f).len(), 2);
    assert_eq!(task_dirs(&f).len(), 2, "{:?}", task_dirs(&f));
    let enis = f.server.aws_json(&["ec2", "describe-network-interfaces"]);
    assert_eq!(enis["NetworkInterfaces"].as_array().unwrap().len(), 2, "{enis}");

    // A stopped task frees its place: of two more, one is placed and one refused.
    f.stop_all(&[&first]);
    let out = run_task(&f, &td, 2);
    assert_eq!(out["tasks"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["failures"][0]["reason"], "RESOURCE:TASKS", "{out}");
    let third = out["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    f.wait_status(&third, "RUNNING", Duration::from_secs(120));
    f.stop_all(&[&second, &third]);
}
