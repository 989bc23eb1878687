//! Many hosts end to end (issue 12, "How it is checked"): the real local cluster of
//! `scripts/dev-cluster.sh` (a 3-member etcd, two servers, agents host-a/b/c each in a network
//! namespace of its own) driven through the AWS CLI. A service spreads over the hosts; tasks
//! on different hosts reach each other by private address as their security groups allow, and
//! other VPCs do not; a killed host's tasks are replaced elsewhere and its stale copies stop
//! when it comes back; killing a server or one etcd member loses nothing, and losing the etcd
//! quorum fails writes cleanly without losing an acknowledged one.
//!
//! One cluster for the whole story (starting one takes seconds, its tasks longer), with short
//! fence and grace times (`FLOTILLA_AGENT_FENCE`, `FLOTILLA_HOST_GRACE`) so that losing a host
//! takes seconds. Images come from a real registry over TLS on this machine's non-loopback
//! address, which the agents' namespaces reach through the underlay bridge; the agents trust
//! its CA through `FLOTILLA_REGISTRY_CA`. Privileged (root), and it uses the machine's fixed
//! dev-cluster ports and names, so only one runs at a time. Needs `flotilla-shim` built next
//! to the `flotilla` binary (`cargo build -p flotilla-shim`), as every real-task test does.

mod cluster_support;
mod common;

use cluster_support::*;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_for;
use serde_json::{Value, json};

/// a. A service of 6 tasks spreads over the three hosts, two each.
fn service_spreads(c: &Cluster, subnets: &HashMap<String, String>) -> Vec<Value> {
    let td = c.register("spread", "idle", &["sleep", "100000"]);
    let all: Vec<&str> = ZONES.iter().map(|z| subnets[*z].as_str()).collect();
    let network = format!("awsvpcConfiguration={{subnets=[{}],assignPublicIp=DISABLED}}", all.join(","));
    c.json(&[
        "ecs",
        "create-service",
        "--service-name",
        "spread",
        "--task-definition",
        &td,
        "--desired-count",
        "6",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    let tasks = c.wait_service_running("spread", 6, SETTLE);
    let zones = per_zone(&tasks);
    assert_eq!(zones, ZONES.iter().map(|z| ((*z).to_owned(), 2)).collect(), "two tasks per host");
    let hosts = c.hosts();
    for (id, host) in &hosts {
        assert_eq!(host["runningTasksCount"], 2, "{id}: {host}");
        assert_eq!(host["status"], "ACTIVE", "{id}: {host}");
    }
    tasks
}

/// b. Tasks on host-a and host-c reach each other by private address; a task in another VPC
/// does not; revoking the rule that let them in shuts both directions.
fn overlay_and_groups(c: &Cluster, subnets: &HashMap<String, String>) {
    let vpcs = c.json(&["ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_owned();
    let web_sg = security_group(c, &vpc, "web");
    let prober_sg = security_group(c, &vpc, "prober");
    c.json(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &web_sg,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--cidr",
        "0.0.0.0/0",
    ]);
    let web_script = format!("mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p {PORT} -h /www");
    let web_td = c.register("web", "web", &["sh", "-c", &web_script]);
    let (zone_a, zone_c) = (subnets["us-east-1a"].as_str(), subnets["us-east-1c"].as_str());
    let web_a = c.run(&web_td, zone_a, &[&web_sg]);
    let web_c = c.run(&web_td, zone_c, &[&web_sg]);
    let web_a_ip = private_ip(&c.wait_status(&web_a, "RUNNING", START));
    let web_c_ip = private_ip(&c.wait_status(&web_c, "RUNNING", START));

    let to_c = c.register("probe-c", "prober", &as_strs(&prober_command(&web_c_ip)));
    let to_a = c.register("probe-a", "prober", &as_strs(&prober_command(&web_a_ip)));
    let prober_a = c.run(&to_c, zone_a, &[&prober_sg]);
    let prober_c = c.run(&to_a, zone_c, &[&prober_sg]);

    // Another VPC, on host-a too, whose group lets everything out: only the VPC boundary
    // keeps it from web-c, which admits 0.0.0.0/0.
    let other = c.json(&["ec2", "create-vpc", "--cidr-block", "10.50.0.0/16"]);
    let other_vpc = other["Vpc"]["VpcId"].as_str().unwrap().to_owned();
    let subnet = c.json(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &other_vpc,
        "--cidr-block",
        "10.50.1.0/24",
        "--availability-zone",
        "us-east-1a",
    ]);
    let other_subnet = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    let other_sg = security_group(c, &other_vpc, "anything");
    let outsider = c.run(&to_c, &other_subnet, &[&other_sg]);

    for (task, zone) in [(&web_a, "us-east-1a"), (&web_c, "us-east-1c"), (&prober_a, "us-east-1a")] {
        assert_eq!(zone_of(&c.describe(std::slice::from_ref(task))[0]), zone, "{task}");
    }
    let reached = |task: &str| c.logs(task, "prober").iter().any(|l| l == "peer:reached");
    wait_for("host-a's prober to reach web-c on host-c", START, || reached(&prober_a));
    wait_for("host-c's prober to reach web-a on host-a", START, || reached(&prober_c));
    wait_for("several attempts from the other VPC", START, || {
        c.logs(&outsider, "prober").iter().filter(|l| l.starts_with("peer:")).count() >= 4
    });
    let attempts = c.logs(&outsider, "prober");
    assert!(!attempts.iter().any(|l| l == "peer:reached"), "another VPC got through: {attempts:?}");

    // Revoking the rule is enforced on both hosts: the last few attempts each way fail.
    c.json(&[
        "ec2",
        "revoke-security-group-ingress",
        "--group-id",
        &web_sg,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--cidr",
        "0.0.0.0/0",
    ]);
    for prober in [&prober_a, &prober_c] {
        let before = c.logs(prober, "prober").len();
        wait_for(&format!("{prober} refused after the revoke"), Duration::from_secs(30), || {
            let lines = c.logs(prober, "prober");
            lines.len() >= before + 3 && lines[lines.len() - 3..].iter().all(|l| l == "peer:refused")
        });
    }
    let tasks = [web_a, web_c, prober_a, prober_c, outsider];
    for task in &tasks {
        c.json(&["ecs", "stop-task", "--task", task]);
    }
    for task in &tasks {
        c.wait_status(task, "STOPPED", START);
    }
}

/// c. host-b dies: its tasks are STOPPED as lost and replaced on host-a and host-c within the
/// grace plus a start; when it comes back, its stale copies stop.
fn host_loss(c: &Cluster) {
    let before = c.service_tasks("spread");
    let on_b: Vec<String> = before
        .iter()
        .filter(|t| zone_of(t) == "us-east-1b")
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_b.len(), 2, "{before:#?}");
    for t in &on_b {
        assert!(c.task_processes("host-b", id_of(t)) > 0, "{t} runs on host-b");
    }

    let killed = Instant::now();
    c.script("kill-host", &["host-b"]);
    let grace = Duration::from_secs_f64(GRACE.parse().unwrap());
    wait_for("host-b's tasks STOPPED as lost", grace + START, || {
        c.describe(&on_b).iter().all(|t| t["lastStatus"] == "STOPPED")
    });
    let stopped_after = killed.elapsed();
    for t in c.describe(&on_b) {
        let reason = t["stoppedReason"].as_str().unwrap_or_default();
        assert!(reason.contains("host-b") && reason.contains("lost"), "stop reason: {t:#}");
    }
    let mut replaced = Vec::new();
    wait_for("6 RUNNING again, none on host-b", grace + START, || {
        replaced = c.service_tasks("spread");
        replaced.len() == 6 && replaced.iter().all(|t| t["lastStatus"] == "RUNNING" && zone_of(t) != "us-east-1b")
    });
    let replaced_after = killed.elapsed();
    eprintln!(
        "cluster: host-b killed; its tasks STOPPED after {:.1}s, replaced RUNNING after {:.1}s (grace {GRACE}s)",
        stopped_after.as_secs_f64(),
        replaced_after.as_secs_f64()
    );
    assert_eq!(c.hosts()["host-b"]["status"], "LOST");
    // Killed with SIGKILL, its agent could not fence: the old copies still run on host-b
    // (cut off from the network) until it comes back.
    for t in &on_b {
        assert!(c.task_processes("host-b", id_of(t)) > 0, "{t} still runs on host-b");
    }

    c.script("start-host", &["host-b"]);
    wait_for("host-b's stale copies to stop", START, || on_b.iter().all(|t| c.task_processes("host-b", id_of(t)) == 0));
    wait_for("host-b active again", Duration::from_secs(30), || c.hosts()["host-b"]["status"] == "ACTIVE");
    let arns = |tasks: &[Value]| -> BTreeSet<String> {
        tasks.iter().map(|t| t["taskArn"].as_str().unwrap().to_owned()).collect()
    };
    let after = c.wait_service_running("spread", 6, START);
    assert_eq!(arns(&after), arns(&replaced), "host-b's return changed nothing else");
}

/// What a [`Writer`] writes.
#[derive(Clone, Copy)]
enum Write {
    /// PutParameter `/{prefix}/{i}`; acknowledged: the name.
    Parameter,
    /// RegisterTaskDefinition in family `{prefix}`; acknowledged: the revision's ARN.
    Revision,
}

/// Keeps calling server `n` with writes until stopped (one attempt each, no CLI retries),
/// recording what was acknowledged and what failed.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<(Duration, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &Cluster, n: usize, write: Write, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let revision = json!({"family": prefix, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": [{"name": "app", "image": c.image}]});
        let mut commands = Vec::new();
        for i in 0..2_000 {
            let name = format!("/{prefix}/{i}");
            let mut cmd = match write {
                Write::Parameter => {
                    c.aws_command(n, &["ssm", "put-parameter", "--name", &name, "--value", "v", "--type", "String"])
                }
                Write::Revision => {
                    c.aws_command(n, &["ecs", "register-task-definition", "--cli-input-json", &revision.to_string()])
                }
            };
            cmd.env("AWS_MAX_ATTEMPTS", "1").env("AWS_RETRY_MODE", "standard");
            commands.push((name, cmd));
        }
        let thread = {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            std::thread::spawn(move || {
                for (name, mut cmd) in commands {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let out = cmd.output().unwrap();
                    if out.status.success() {
                        let id = match write {
                            Write::Parameter => name,
                            Write::Revision => {
                                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                                v["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned()
                            }
                        };
                        acked.lock().unwrap().push(id);
                    } else {
                        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                        failed.lock().unwrap().push((started.elapsed(), err));
                    }
                }
            })
        };
        Writer { stop, acked, failed, thread: Some(thread) }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn failed(&self) -> Vec<(Duration, String)> {
        self.failed.lock().unwrap().clone()
    }

    /// Stops; what was acknowledged, and what failed (how long it took, the error).
    fn finish(mut self) -> (Vec<String>, Vec<(Duration, String)>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (self.acked.lock().unwrap().clone(), self.failed())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every parameter under `/{prefix}`, read from server `n`.
fn parameters(c: &Cluster, n: usize, prefix: &str) -> BTreeSet<String> {
    let out = c.json_on(n, &["ssm", "get-parameters-by-path", "--path", &format!("/{prefix}")]);
    out["Parameters"].as_array().unwrap().iter().map(|p| p["Name"].as_str().unwrap().to_owned()).collect()
}

/// Every revision of family `family`, read from server `n`.
fn revisions(c: &Cluster, n: usize, family: &str) -> BTreeSet<String> {
    let out = c.json_on(n, &["ecs", "list-task-definitions", "--family-prefix", family]);
    out["taskDefinitionArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

fn missing<'a>(acked: &'a [String], present: &BTreeSet<String>) -> Vec<&'a String> {
    acked.iter().filter(|a| !present.contains(*a)).collect()
}

fn wait_acked(writer: &Writer, at_least: usize, what: &str) {
    wait_for(what, Duration::from_secs(60), || writer.acked() >= at_least);
}

/// d. SIGKILL server 1 while clients keep writing to server 2: nothing is lost.
fn server_loss(c: &Cluster) {
    let params = Writer::start(c, 2, Write::Parameter, "d");
    let revs = Writer::start(c, 2, Write::Revision, "d-writes");
    wait_acked(&params, 3, "writes to server 2");
    wait_acked(&revs, 3, "writes to server 2");
    c.script("kill-server", &["1"]);
    let (p, r) = (params.acked(), revs.acked());
    wait_acked(&params, p + 5, "writes to server 2 after server 1 died");
    wait_acked(&revs, r + 5, "writes to server 2 after server 1 died");
    // The hosts reconnect to server 2 and keep their tasks (no fence, not lost).
    let tasks = c.json_on(2, &["ecs", "list-tasks", "--service-name", "spread", "--desired-status", "RUNNING"]);
    assert_eq!(tasks["taskArns"].as_array().unwrap().len(), 6, "{tasks}");
    let (acked_params, failed_params) = params.finish();
    let (acked_revs, failed_revs) = revs.finish();
    assert!(
        failed_params.is_empty() && failed_revs.is_empty(),
        "calls to the live server failed: {failed_params:?} {failed_revs:?}"
    );
    let present_params = parameters(c, 2, "d");
    let present_revs = revisions(c, 2, "d-writes");
    assert!(missing(&acked_params, &present_params).is_empty(), "lost: {:?}", missing(&acked_params, &present_params));
    assert!(missing(&acked_revs, &present_revs).is_empty(), "lost: {:?}", missing(&acked_revs, &present_revs));
    eprintln!(
        "cluster: server 1 killed mid-stream; server 2 acknowledged {} PutParameter and {} RegisterTaskDefinition, all present",
        acked_params.len(),
        acked_revs.len()
    );
    c.script("start-server", &["1"]);
    assert_eq!(parameters(c, 1, "d"), present_params, "the restarted server 1 reads the same");
    assert_eq!(revisions(c, 1, "d-writes"), present_revs, "the restarted server 1 reads the same");
    c.wait_service_running("spread", 6, START);
}

/// e. One etcd member down changes nothing; two make writes fail with ServerException within
/// seconds; back up, every acknowledged write is there.
fn etcd_loss(c: &Cluster) {
    let writer = Writer::start(c, 1, Write::Revision, "e-writes");
    wait_acked(&writer, 2, "writes");
    c.script("stop-etcd", &["1"]);
    let n = writer.acked();
    wait_acked(&writer, n + 5, "writes with one etcd member down");
    assert_eq!(writer.failed(), vec![], "writes failed with one member down");
    assert!(c.hosts().values().all(|h| h["status"] == "ACTIVE"), "{:?}", c.hosts());
    assert_eq!(c.service_tasks("spread").len(), 6);

    c.script("stop-etcd", &["2"]);
    wait_for("writes to fail without a quorum", Duration::from_secs(60), || writer.failed().len() >= 2);
    for (took, err) in writer.failed() {
        assert!(err.contains("(ServerException)"), "{err}");
        assert!(took < Duration::from_secs(15), "took {took:?} to fail: {err}");
    }
    c.script("start-etcd", &["1"]);
    c.script("start-etcd", &["2"]);
    let n = writer.acked();
    wait_acked(&writer, n + 3, "writes once the quorum is back");
    let (acked, failed) = writer.finish();
    let present = revisions(c, 1, "e-writes");
    assert!(missing(&acked, &present).is_empty(), "acknowledged writes lost: {:?}", missing(&acked, &present));
    let slowest = failed.iter().map(|f| f.0).max().unwrap_or_default();
    eprintln!(
        "cluster: etcd quorum lost and back; {} revisions acknowledged (all {} present), {} failed (slowest in {:.1}s): {}",
        acked.len(),
        acked.len(),
        failed.len(),
        slowest.as_secs_f64(),
        failed.first().map_or("", |f| f.1.as_str()),
    );
    // The hosts fenced while nothing could be written; the service comes back whole.
    c.wait_service_running("spread", 6, SETTLE);
}

#[test]
fn many_hosts_end_to_end() {
    let world = World::start();
    let c = &world.cluster;
    assert_eq!(c.hosts().len(), 3);
    let subnets = zone_subnets(c);

    let started = Instant::now();
    service_spreads(c, &subnets);
    eprintln!("cluster: a. spread in {:.0}s", started.elapsed().as_secs_f64());
    overlay_and_groups(c, &subnets);
    eprintln!("cluster: b. overlay in {:.0}s", started.elapsed().as_secs_f64());
    host_loss(c);
    eprintln!("cluster: c. host loss in {:.0}s", started.elapsed().as_secs_f64());
    server_loss(c);
    eprintln!("cluster: d. server loss in {:.0}s", started.elapsed().as_secs_f64());
    etcd_loss(c);
    eprintln!("cluster: e. etcd loss in {:.0}s", started.elapsed().as_secs_f64());
}
