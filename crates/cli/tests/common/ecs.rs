//! ECS and EC2 lookups that several end-to-end tests share: the default network, services
//! and their tasks, polled through the AWS CLI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Server, wait_for};

/// Generous: real containers on a loaded two-core machine.
pub const SETTLE: Duration = Duration::from_secs(120);

pub fn id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// The default subnets (one per zone) as `(zone, subnet)`, by zone.
pub fn zone_subnets(server: &Server) -> Vec<(String, String)> {
    let subnets = server.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let mut out: Vec<(String, String)> = subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["AvailabilityZone"].as_str().unwrap().to_owned(), s["SubnetId"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

pub fn default_vpc(server: &Server) -> String {
    let vpcs = server.aws_json(&["ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_owned()
}

pub fn describe_service(server: &Server, name: &str) -> Value {
    let out = server.aws_json(&["ecs", "describe-services", "--cluster", "default", "--services", name]);
    assert_eq!(out["failures"], json!([]), "{out}");
    out["services"][0].clone()
}

/// Polls DescribeServices until `done`; the last description.
pub fn wait_service(
    server: &Server,
    name: &str,
    what: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let service = describe_service(server, name);
        if done(&service) {
            return service;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}: {service:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Steady: the desired count RUNNING, nothing pending, one PRIMARY deployment COMPLETED.
pub fn steady(service: &Value, desired: u64) -> bool {
    let deployments = service["deployments"].as_array().map_or(&[][..], Vec::as_slice);
    service["runningCount"] == desired
        && service["pendingCount"] == 0
        && deployments.len() == 1
        && deployments[0]["status"] == "PRIMARY"
        && deployments[0]["rolloutState"] == "COMPLETED"
}

/// The service's live tasks (ListTasks `--service-name`, then DescribeTasks).
pub fn live_tasks(server: &Server, name: &str) -> Vec<Value> {
    let listed = server.aws_json(&["ecs", "list-tasks", "--cluster", "default", "--service-name", name]);
    let arns: Vec<&str> = listed["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["ecs", "describe-tasks", "--cluster", "default", "--tasks"];
    args.extend(arns);
    server.aws_json(&args)["tasks"].as_array().unwrap().clone()
}

/// Waits until the service has exactly `n` live tasks, all RUNNING; their descriptions.
pub fn wait_running(server: &Server, name: &str, n: usize) -> Vec<Value> {
    let mut tasks = Vec::new();
    wait_for(&format!("{n} RUNNING tasks of {name}"), SETTLE, || {
        tasks = live_tasks(server, name);
        tasks.len() == n && tasks.iter().all(|t| t["lastStatus"] == "RUNNING")
    });
    tasks
}
