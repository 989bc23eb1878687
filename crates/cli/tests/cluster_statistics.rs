//! DescribeClusters with `--include STATISTICS` through the AWS CLI: the counts follow a real
//! task from RunTask to RUNNING to STOPPED.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fixture::Fixture;
use serde_json::{Value, json};

/// The cluster's statistics as name -> count; panics unless every value is a count.
fn statistics(f: &Fixture) -> BTreeMap<String, u64> {
    let out = f.server.aws_json(&["ecs", "describe-clusters", "--clusters", "default", "--include", "STATISTICS"]);
    let cluster = &out["clusters"][0];
    let stats = cluster["statistics"].as_array().unwrap_or_else(|| panic!("no statistics in {cluster}"));
    stats
        .iter()
        .map(|kv| {
            let name = kv["name"].as_str().unwrap_or_else(|| panic!("{kv}")).to_owned();
            // KeyValuePair values are strings on the wire, as on ECS.
            let value = kv["value"].as_str().unwrap_or_else(|| panic!("{kv}")).parse().unwrap();
            (name, value)
        })
        .collect()
}

fn count(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    *stats.get(name).unwrap_or_else(|| panic!("no {name} in {stats:?}"))
}

#[test]
fn statistics_count_a_real_task_by_launch_type() {
    let f = Fixture::new();
    let plain = f.server.aws_json(&["ecs", "describe-clusters", "--clusters", "default"]);
    assert!(plain["clusters"][0].get("statistics").is_none(), "only with --include STATISTICS: {plain}");

    let idle = statistics(&f);
    let names: Vec<&str> = idle.keys().map(String::as_str).collect();
    for name in [
        "runningEC2TasksCount",
        "runningFargateTasksCount",
        "pendingEC2TasksCount",
        "pendingFargateTasksCount",
        "activeEC2ServiceCount",
        "activeFargateServiceCount",
        "drainingEC2ServiceCount",
        "drainingFargateServiceCount",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(idle.values().all(|v| *v == 0), "an empty cluster counts nothing: {idle:?}");

    let td = f.register("stats", json!([f.container("app", &["sleep", "300"])]), json!({}));
    let task = f.run(&td);
    // Whatever state the task is in by now, it is counted exactly once, as a Fargate task.
    let started = statistics(&f);
    assert_eq!(
        count(&started, "runningFargateTasksCount") + count(&started, "pendingFargateTasksCount"),
        1,
        "{started:?}"
    );
    assert_eq!(count(&started, "runningEC2TasksCount") + count(&started, "pendingEC2TasksCount"), 0, "{started:?}");

    f.wait_status(&task, "RUNNING", Duration::from_secs(60));
    let running = statistics(&f);
    assert_eq!(count(&running, "runningFargateTasksCount"), 1, "{running:?}");
    assert_eq!(count(&running, "pendingFargateTasksCount"), 0, "{running:?}");
    // The top-level counts and the statistics agree.
    let described = f.server.aws_json(&["ecs", "describe-clusters", "--include", "STATISTICS"]);
    assert_eq!(described["clusters"][0]["runningTasksCount"], Value::from(1), "{described}");

    f.stop_all(&[&task]);
    let stopped = statistics(&f);
    assert!(stopped.values().all(|v| *v == 0), "a stopped task is not counted: {stopped:?}");
}
