//! ECS services end to end, as the seeds use them: `aws ecs create-service` with real busybox
//! tasks in two zones, replacement of what dies (StopTask, a SIGKILL from the host), rolling
//! deployments sampled while they roll, the circuit breaker with rollback, a `kill -9` of the
//! server in the middle of a deployment, scale-in and deletion, and Cloud Map registration.
//! Checks go through the real AWS CLI; fast samples while something rolls go through the Rust
//! client so that a sample is milliseconds, not a Python start. Privileged, like the other
//! container tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::ecs::{
    SETTLE, default_vpc, describe_service, id_of, live_tasks, steady, wait_running, wait_service, zone_subnets,
};
use common::fixture::Fixture;
use common::{Server, private_ip, task_address, wait_for};
use serde_json::{Value, json};

/// A service task that stops at once on SIGTERM (`wait` is interrupted by a trapped signal),
/// so deployments and scale-in do not wait for the stop timeout.
const SERVE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

/// Between samples while something rolls: often enough to catch a task in between, rare enough
/// to leave the two cores to the server.
const PACE: Duration = Duration::from_millis(20);

/// The seed's `--network-configuration`: the first `zones` default subnets (distinct zones), a
/// security group of the default VPC, a public address.
fn seed_network(server: &Server, zones: usize) -> String {
    let subnets: Vec<String> = zone_subnets(server).into_iter().take(zones).map(|(_, s)| s).collect();
    assert_eq!(subnets.len(), zones, "the default VPC has a default subnet per zone");
    let vpc = default_vpc(server);
    let group = server.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "web",
        "--description",
        "web",
        "--vpc-id",
        &vpc,
    ]);
    let group = group["GroupId"].as_str().unwrap();
    format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{group}],assignPublicIp=ENABLED}}", subnets.join(","))
}

/// The seed's create-service, verbatim but for the names, plus `more`.
fn create_service(f: &Fixture, name: &str, td: &str, desired: u32, network: &str, more: &[&str]) -> Value {
    let desired = desired.to_string();
    let mut args = vec![
        "ecs",
        "create-service",
        "--cluster",
        "default",
        "--service-name",
        name,
        "--task-definition",
        td,
        "--desired-count",
        &desired,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        network,
    ];
    args.extend_from_slice(more);
    f.server.aws_json(&args)["service"].clone()
}

fn events(service: &Value) -> Vec<String> {
    service["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
}

fn primary(service: &Value) -> Value {
    let deployments = service["deployments"].as_array().unwrap();
    assert_eq!(deployments[0]["status"], "PRIMARY", "PRIMARY comes first: {service:#}");
    deployments[0].clone()
}

/// ECS's "has started N tasks" event listing exactly `tasks` (ids, in any order).
fn has_started_event(events: &[String], service: &str, tasks: &BTreeSet<String>) -> bool {
    let prefix = format!("(service {service}) has started {} tasks: ", tasks.len());
    events.iter().filter_map(|e| listed_tasks(e.strip_prefix(&prefix)?)).any(|ids| &ids == tasks)
}

/// The ids of `(task A) (task B).`; `None` unless it is exactly that form.
fn listed_tasks(listed: &str) -> Option<BTreeSet<String>> {
    let inner = listed.strip_prefix("(task ")?.strip_suffix(").")?;
    Some(inner.split(") (task ").map(str::to_owned).collect())
}

/// Every task id named by ECS's `has stopped N running tasks: (task ...) ...` events, each
/// checked to list as many tasks as it counts.
fn stopped_in_events(events: &[String], service: &str) -> BTreeSet<String> {
    let prefix = format!("(service {service}) has stopped ");
    let mut out = BTreeSet::new();
    for event in events.iter().filter_map(|e| e.strip_prefix(&prefix)) {
        let (count, listed) = event.split_once(" running tasks: ").unwrap_or_else(|| panic!("ECS's wording: {event}"));
        let ids = listed_tasks(listed).unwrap_or_else(|| panic!("ECS's wording: {event}"));
        assert_eq!(count.parse::<usize>().ok(), Some(ids.len()), "the count is the tasks listed: {event}");
        out.extend(ids);
    }
    out
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks.iter().map(|t| id_of(t["taskArn"].as_str().unwrap()).to_owned()).collect()
}

fn ips(tasks: &[Value]) -> BTreeSet<Ipv4Addr> {
    tasks.iter().map(private_ip).collect()
}

/// The zone of each default subnet, and the zone a task's attachment says it is in.
fn subnet_of(task: &Value) -> String {
    let details = task["attachments"][0]["details"].as_array().unwrap();
    let subnet = details.iter().find(|d| d["name"] == "subnetId").unwrap();
    subnet["value"].as_str().unwrap().to_owned()
}

/// Every task is in its subnet's zone, and the tasks are one per zone (two tasks, two zones).
fn assert_one_per_zone(server: &Server, tasks: &[Value]) {
    let zone_of: BTreeMap<String, String> = zone_subnets(server).into_iter().map(|(z, s)| (s, z)).collect();
    let mut zones = BTreeSet::new();
    for task in tasks {
        let zone = &zone_of[&subnet_of(task)];
        assert_eq!(task["availabilityZone"], zone.as_str(), "a task is in its subnet's zone: {task:#}");
        zones.insert(zone.clone());
    }
    assert_eq!(zones.len(), tasks.len(), "spread evenly over the zones: {tasks:#?}");
}

/// SIGKILL to a task's container process, from the host: its pid is in the shim's state file.
fn kill_container(server: &Server, task_arn: &str, container: &str) {
    let state = server.data_dir.join("tasks").join(id_of(task_arn)).join("state.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let pid = state["containers"].as_array().unwrap().iter().find(|c| c["name"] == container).unwrap()["pid"]
        .as_i64()
        .expect("a running container has a pid");
    // SAFETY: kill(2) on a pid read from the shim's state file; the container is running.
    let killed = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// Fast, consistent looks at a service's tasks while something rolls, through the Rust client:
/// ListTasks, DescribeTasks of every task seen so far, then ListTasks again. A look during which
/// a new task appeared is torn (the description may lack a task that already counted) and is
/// discarded, so a check on a look never fails because of the sampling itself.
struct Watch<'a> {
    f: &'a Fixture,
    client: flotilla_cli::client::Client,
    service: String,
    known: BTreeSet<String>,
    looks: usize,
}

impl<'a> Watch<'a> {
    fn new(f: &'a Fixture, service: &str) -> Watch<'a> {
        Watch { f, client: f.server.client(), service: service.to_owned(), known: BTreeSet::new(), looks: 0 }
    }

    fn ecs(&self, operation: &str, body: Value) -> Value {
        self.f.rt.block_on(self.client.ecs(operation, body)).unwrap_or_else(|e| panic!("{operation}: {e:#}"))
    }

    fn listed(&self) -> BTreeSet<String> {
        let body = json!({"cluster": "default", "serviceName": self.service});
        let arns = self.f.rt.block_on(self.client.ecs_list_all("ListTasks", body, "taskArns")).unwrap();
        arns.iter().map(|a| a.as_str().unwrap().to_owned()).collect()
    }

    fn describe(&self) -> Vec<Value> {
        let known: Vec<&String> = self.known.iter().collect();
        known
            .chunks(100)
            .flat_map(|chunk| {
                let out = self.ecs("DescribeTasks", json!({"cluster": "default", "tasks": chunk}));
                out["tasks"].as_array().unwrap().clone()
            })
            .collect()
    }

    /// One look: every task of the service known so far, described; `then` runs after the
    /// description and before the second listing (so what it observes is covered by the look).
    fn look<T>(&mut self, then: impl FnOnce(&Self) -> T) -> Option<(Vec<Value>, T)> {
        self.known.extend(self.listed());
        let tasks = self.describe();
        let extra = then(self);
        let after = self.listed();
        let torn = !after.is_subset(&self.known);
        self.known.extend(after);
        if torn {
            return None;
        }
        self.looks += 1;
        Some((tasks, extra))
    }

    fn service(&self) -> Value {
        let out = self.ecs("DescribeServices", json!({"cluster": "default", "services": [self.service]}));
        out["services"][0].clone()
    }
}

/// Tasks the scheduler counts as healthy and keeping: RUNNING and meant to stay.
fn healthy(tasks: &[Value]) -> usize {
    tasks.iter().filter(|t| t["lastStatus"] == "RUNNING" && t["desiredStatus"] == "RUNNING").count()
}

/// Tasks meant to run, started or not: what `maximumPercent` bounds.
fn in_flight(tasks: &[Value]) -> usize {
    tasks.iter().filter(|t| t["desiredStatus"] == "RUNNING" && t["lastStatus"] != "STOPPED").count()
}

#[test]
fn seed_service_runs_in_two_zones_replaces_what_dies_and_scales_in() {
    let f = Fixture::new();
    let s = &f.server;
    let td = f.register("fargate-task", json!([f.container("app", &["sh", "-c", SERVE])]), json!({}));
    let network = seed_network(s, 2);
    let created = create_service(&f, "web", &td, 2, &network, &[]);
    let account = td.split(':').nth(4).unwrap();
    assert_eq!(created["serviceArn"], format!("arn:aws:ecs:us-east-1:{account}:service/default/web"));
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["desiredCount"], 2);
    assert_eq!(created["launchType"], "FARGATE");
    assert_eq!(created["schedulingStrategy"], "REPLICA");
    assert_eq!(created["deploymentController"], json!({"type": "ECS"}));
    assert_eq!(created["deploymentConfiguration"]["minimumHealthyPercent"], 100);
    assert_eq!(created["deploymentConfiguration"]["maximumPercent"], 200);

    let service = wait_service(s, "web", "2 RUNNING and steady", SETTLE, |svc| steady(svc, 2));
    let deployment = primary(&service);
    let deployment_id = deployment["id"].as_str().unwrap().to_owned();
    let number = deployment_id.strip_prefix("ecs-svc/").expect("deployment ids are ecs-svc/<number>");
    assert!(number.len() == 19 && number.bytes().all(|b| b.is_ascii_digit()), "{deployment_id}");
    assert_eq!(deployment["taskDefinition"], td.as_str());
    assert_eq!(deployment["runningCount"], 2);
    assert_eq!(deployment["launchType"], "FARGATE");
    let tasks = wait_running(s, "web", 2);
    for task in &tasks {
        assert_eq!(task["startedBy"], deployment_id.as_str(), "{task:#}");
        assert_eq!(task["group"], "service:web");
        assert_eq!(task["launchType"], "FARGATE");
        assert_eq!(task["taskDefinitionArn"], td.as_str());
    }
    assert_one_per_zone(s, &tasks);
    let first = ids(&tasks);
    let evs = events(&service);
    assert!(has_started_event(&evs, "web", &first), "{evs:#?}");
    assert!(evs.iter().any(|e| e == "(service web) has reached a steady state."), "{evs:#?}");

    // A standalone task of the same definition is not the service's.
    let standalone = f.run_in(&td, &network, &[]);
    f.wait_status(&standalone, "RUNNING", SETTLE);

    // StopTask on one: a replacement starts, in the zone that lost one.
    let victim = tasks[0]["taskArn"].as_str().unwrap().to_owned();
    s.aws_json(&["ecs", "stop-task", "--cluster", "default", "--task", &victim]);
    let mut now = Vec::new();
    wait_for("a replacement for the stopped task", SETTLE, || {
        now = live_tasks(s, "web");
        let fresh = ids(&now);
        now.len() == 2 && !fresh.contains(id_of(&victim)) && now.iter().all(|t| t["lastStatus"] == "RUNNING")
    });
    assert_one_per_zone(s, &now);
    let replacement: BTreeSet<String> = ids(&now).difference(&first).cloned().collect();
    assert_eq!(replacement.len(), 1, "one replacement: {now:#?}");
    let service = wait_service(s, "web", "the replacement in the events", SETTLE, |svc| {
        has_started_event(&events(svc), "web", &replacement)
    });
    assert_eq!(service["runningCount"], 2);

    // SIGKILL of a task's container process from the host: the task stops, a replacement runs.
    let killed = now.iter().find(|t| replacement.contains(id_of(t["taskArn"].as_str().unwrap()))).unwrap();
    let killed = killed["taskArn"].as_str().unwrap().to_owned();
    let before_kill = ids(&now);
    kill_container(s, &killed, "app");
    let stopped = f.wait_status(&killed, "STOPPED", SETTLE);
    assert_eq!(stopped["stopCode"], "EssentialContainerExited", "{stopped:#}");
    assert_eq!(stopped["containers"][0]["exitCode"], 137);
    wait_for("a replacement for the killed task", SETTLE, || {
        now = live_tasks(s, "web");
        now.len() == 2 && !ids(&now).contains(id_of(&killed)) && now.iter().all(|t| t["lastStatus"] == "RUNNING")
    });
    assert_one_per_zone(s, &now);
    let second: BTreeSet<String> = ids(&now).difference(&before_kill).cloned().collect();
    assert_eq!(second.len(), 1, "{now:#?}");
    wait_service(s, "web", "the second replacement in the events", SETTLE, |svc| {
        has_started_event(&events(svc), "web", &second) && svc["runningCount"] == 2
    });

    // ListTasks --service-name: the live tasks of the service only; the dead ones as STOPPED.
    let listed = s.aws_json(&["ecs", "list-tasks", "--cluster", "default", "--service-name", "web"]);
    let listed: BTreeSet<String> =
        listed["taskArns"].as_array().unwrap().iter().map(|a| id_of(a.as_str().unwrap()).to_owned()).collect();
    assert_eq!(listed, ids(&now), "the standalone task and the stopped ones are not listed");
    let gone = s.aws_json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "default",
        "--service-name",
        "web",
        "--desired-status",
        "STOPPED",
    ]);
    let gone: BTreeSet<&str> =
        gone["taskArns"].as_array().unwrap().iter().map(|a| id_of(a.as_str().unwrap())).collect();
    assert!(gone.contains(id_of(&victim)) && gone.contains(id_of(&killed)), "{gone:?}");
    assert!(!gone.contains(id_of(&standalone)));

    // Scale in to 0: both stop with ServiceSchedulerInitiated, and the event lists them.
    let last = ids(&now);
    s.aws_json(&["ecs", "update-service", "--cluster", "default", "--service", "web", "--desired-count", "0"]);
    let service =
        wait_service(s, "web", "scaled to 0", SETTLE, |svc| svc["runningCount"] == 0 && svc["pendingCount"] == 0);
    let evs = events(&service);
    assert!(stopped_in_events(&evs, "web").is_superset(&last), "the scale-in is in the events: {evs:#?}");
    for task in &now {
        let task = f.wait_status(task["taskArn"].as_str().unwrap(), "STOPPED", SETTLE);
        assert_eq!(task["stopCode"], "ServiceSchedulerInitiated", "{task:#}");
    }
    assert!(live_tasks(s, "web").is_empty());
    assert_eq!(f.describe(&standalone)["lastStatus"], "RUNNING", "scale-in leaves other tasks alone");
    f.stop_all(&[&standalone]);
}

#[test]
fn delete_service_needs_zero_or_force_and_ends_inactive() {
    let f = Fixture::new();
    let s = &f.server;
    let td = f.register("deleted", json!([f.container("app", &["sh", "-c", SERVE])]), json!({}));
    let network = seed_network(s, 2);
    create_service(&f, "web", &td, 1, &network, &[]);
    create_service(&f, "forced", &td, 2, &network, &[]);
    wait_running(s, "web", 1);
    let forced = wait_running(s, "forced", 2);

    let refused = s.aws_err(&["ecs", "delete-service", "--cluster", "default", "--service", "web"]);
    assert!(
        refused.contains("InvalidParameterException")
            && refused.contains("The service cannot be stopped while it is scaled above 0."),
        "{refused}"
    );
    assert_eq!(describe_service(s, "web")["status"], "ACTIVE", "a refused delete changes nothing");

    // Scale to 0 first, then delete: INACTIVE, nothing left running.
    s.aws_json(&["ecs", "update-service", "--cluster", "default", "--service", "web", "--desired-count", "0"]);
    wait_service(s, "web", "web at 0", SETTLE, |svc| svc["runningCount"] == 0 && svc["pendingCount"] == 0);
    let deleted = s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "web"]);
    let status = deleted["service"]["status"].as_str().unwrap();
    assert!(status == "DRAINING" || status == "INACTIVE", "{deleted:#}");
    wait_service(s, "web", "web INACTIVE", SETTLE, |svc| svc["status"] == "INACTIVE");
    assert!(live_tasks(s, "web").is_empty());

    // --force deletes a service above 0: its tasks are stopped, then it is INACTIVE.
    s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "forced", "--force"]);
    let gone = wait_service(s, "forced", "forced INACTIVE", SETTLE, |svc| svc["status"] == "INACTIVE");
    assert_eq!(gone["desiredCount"], 0, "{gone:#}");
    for task in &forced {
        let task = f.wait_status(task["taskArn"].as_str().unwrap(), "STOPPED", SETTLE);
        assert_eq!(task["stopCode"], "ServiceSchedulerInitiated", "{task:#}");
    }
    let listed = s.aws_json(&["ecs", "list-services", "--cluster", "default"]);
    assert_eq!(listed["serviceArns"], json!([]), "INACTIVE services are not listed");
    let err =
        s.aws_err(&["ecs", "update-service", "--cluster", "default", "--service", "forced", "--desired-count", "1"]);
    assert!(err.contains("ServiceNotActiveException") && err.contains("Service was not ACTIVE."), "{err}");
    // The name is free again once the service is INACTIVE.
    create_service(&f, "web", &td, 0, &network, &[]);
    assert_eq!(describe_service(s, "web")["status"], "ACTIVE");
    s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "web"]);
}

/// A Cloud Map service (A records) in a private namespace of the default VPC; its ARN.
fn cloud_map_service(server: &Server, namespace: &str, name: &str) -> String {
    let vpc = default_vpc(server);
    let op = server.aws_json(&["servicediscovery", "create-private-dns-namespace", "--name", namespace, "--vpc", &vpc]);
    let op_id = op["OperationId"].as_str().unwrap().to_owned();
    let mut namespace_id = String::new();
    wait_for("namespace created", Duration::from_secs(10), || {
        let op = server.aws_json(&["servicediscovery", "get-operation", "--operation-id", &op_id]);
        namespace_id = op["Operation"]["Targets"]["NAMESPACE"].as_str().unwrap_or_default().to_owned();
        op["Operation"]["Status"] == "SUCCESS"
    });
    let dns_config = format!("NamespaceId={namespace_id},DnsRecords=[{{Type=A,TTL=5}}]");
    let service = server.aws_json(&["servicediscovery", "create-service", "--name", name, "--dns-config", &dns_config]);
    service["Service"]["Arn"].as_str().unwrap().to_owned()
}

fn discovered(server: &Server) -> BTreeSet<Ipv4Addr> {
    instance_addresses(&server.discover(&["--namespace-name", "corp.local", "--service-name", "web"]))
}

fn instance_addresses(found: &Value) -> BTreeSet<Ipv4Addr> {
    let instances = found["Instances"].as_array().unwrap();
    instances.iter().map(|i| i["Attributes"]["AWS_INSTANCE_IPV4"].as_str().unwrap().parse().unwrap()).collect()
}

/// A task that asks the VPC resolver for `name` every half second and logs `dns:<addresses>`.
fn resolver_prober(f: &Fixture, name: &str) -> Value {
    let script = format!(
        "while true; do echo \"dns:$(nslookup {name} | awk '/^Name:/{{n=1}} n && /^Address/{{print $NF}}' | sort | tr '\\n' ' ')\"; sleep 0.5; done"
    );
    f.container("prober", &["sh", "-c", &script])
}

/// The addresses of the prober's latest answer.
fn last_answer(f: &Fixture, prober: &str) -> Option<BTreeSet<Ipv4Addr>> {
    let lines = f.logs(prober, "prober");
    let last = lines.iter().rev().find_map(|l| l.strip_prefix("dns:"))?;
    Some(last.split_whitespace().filter_map(|a| a.parse().ok()).collect())
}

#[test]
fn rolling_update_keeps_minimum_healthy_and_cloud_map_names_only_running_tasks() {
    let f = Fixture::new();
    let s = &f.server;
    let registry = cloud_map_service(s, "corp.local", "web");
    let v1 = f.register("web", json!([f.container("app", &["sh", "-c", SERVE])]), json!({}));
    let mut app = f.container("app", &["sh", "-c", SERVE]);
    app["environment"] = json!([{"name": "VERSION", "value": "2"}]);
    let v2 = f.register("web", json!([app]), json!({}));
    let network = seed_network(s, 2);
    let registries = format!("registryArn={registry}");
    let created = create_service(&f, "web", &v1, 2, &network, &["--service-registries", &registries]);
    assert_eq!(created["serviceRegistries"][0]["registryArn"], registry.as_str());
    wait_service(s, "web", "steady on v1", SETTLE, |svc| steady(svc, 2));
    let old = wait_running(s, "web", 2);
    let old_ips = ips(&old);
    wait_for("Cloud Map names the two RUNNING tasks", Duration::from_secs(30), || discovered(s) == old_ips);

    // The VPC resolver answers the same, to a task in the VPC.
    let prober_td = f.register("prober", json!([resolver_prober(&f, "web.corp.local")]), json!({}));
    let prober = f.run_in(&prober_td, &network.replace("ENABLED", "DISABLED"), &[]);
    wait_for("the resolver answers with the two tasks", Duration::from_secs(60), || {
        last_answer(&f, &prober) == Some(old_ips.clone())
    });

    // Roll to v2, looking at the service all along.
    s.aws_json(&["ecs", "update-service", "--cluster", "default", "--service", "web", "--task-definition", &v2]);
    let mut watch = Watch::new(&f, "web");
    let mut lowest = usize::MAX;
    let mut highest = 0;
    let start = Instant::now();
    let finished = loop {
        let look = watch.look(|w| {
            let found = w.f.rt.block_on(w.client.call(
                "servicediscovery",
                "Route53AutoNaming_v20170314.DiscoverInstances",
                &json!({"NamespaceName": "corp.local", "ServiceName": "web"}),
            ));
            instance_addresses(&found.unwrap())
        });
        if let Some((tasks, named)) = look {
            lowest = lowest.min(healthy(&tasks));
            highest = highest.max(in_flight(&tasks));
            assert!(healthy(&tasks) >= 2, "below minimumHealthyPercent 100 of 2: {tasks:#?}");
            assert!(in_flight(&tasks) <= 4, "above maximumPercent 200 of 2: {tasks:#?}");
            // Cloud Map only names tasks that were not STOPPED when it was asked.
            let live: BTreeSet<Ipv4Addr> =
                tasks.iter().filter(|t| t["lastStatus"] != "STOPPED").filter_map(task_address).collect();
            assert!(named.is_subset(&live), "Cloud Map names {named:?}, live tasks have {live:?}: {tasks:#?}");
        }
        let service = watch.service();
        if steady(&service, 2) && primary(&service)["taskDefinition"] == v2.as_str() {
            break service;
        }
        assert!(start.elapsed() < SETTLE, "the rollout did not complete: {service:#}");
        std::thread::sleep(PACE);
    };
    // The steady state itself, seen whole: the last look of the loop may have come just before
    // the last old task stopped, and under load every look before it may show three.
    let settled = loop {
        if let Some((tasks, ())) = watch.look(|_| ()) {
            break tasks;
        }
    };
    lowest = lowest.min(healthy(&settled));
    assert!(watch.looks >= 3, "too few untorn looks at the rollout to mean anything: {}", watch.looks);
    assert_eq!(lowest, 2, "never fewer than 2 healthy");
    assert!(highest > 2, "the rollout started new tasks before stopping old ones (maximumPercent 200)");

    let deployment = primary(&finished);
    let new_id = deployment["id"].as_str().unwrap();
    let evs = events(&finished);
    let completed = format!("(service web) (deployment {new_id}) deployment completed.");
    assert!(evs.contains(&completed), "{evs:#?}");
    let new = wait_running(s, "web", 2);
    assert!(new.iter().all(|t| t["taskDefinitionArn"] == v2.as_str() && t["startedBy"] == new_id), "{new:#?}");
    for task in &old {
        let task = f.wait_status(task["taskArn"].as_str().unwrap(), "STOPPED", SETTLE);
        assert_eq!(task["stopCode"], "ServiceSchedulerInitiated", "{task:#}");
    }
    let new_ips = ips(&new);
    wait_for("Cloud Map names the new tasks only", Duration::from_secs(30), || discovered(s) == new_ips);
    wait_for("the resolver answers with the new tasks only", Duration::from_secs(60), || {
        last_answer(&f, &prober) == Some(new_ips.clone())
    });

    s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "web", "--force"]);
    wait_service(s, "web", "INACTIVE", SETTLE, |svc| svc["status"] == "INACTIVE");
    assert!(discovered(s).is_empty(), "a deleted service's tasks are deregistered");
    f.stop_all(&[&prober]);
}

#[test]
fn circuit_breaker_rolls_back_to_the_last_completed_deployment() {
    let f = Fixture::new();
    let s = &f.server;
    let good = f.register("web", json!([f.container("app", &["sh", "-c", SERVE])]), json!({}));
    let bad = f.register("web", json!([f.container("app", &["sh", "-c", "exit 1"])]), json!({}));
    let network = seed_network(s, 2);
    let config = "deploymentCircuitBreaker={enable=true,rollback=true},maximumPercent=200,minimumHealthyPercent=50";
    let created = create_service(&f, "web", &good, 2, &network, &["--deployment-configuration", config]);
    assert_eq!(
        created["deploymentConfiguration"]["deploymentCircuitBreaker"],
        json!({"enable": true, "rollback": true})
    );
    let service = wait_service(s, "web", "steady on the good revision", SETTLE, |svc| steady(svc, 2));
    let good_id = primary(&service)["id"].as_str().unwrap().to_owned();

    s.aws_json(&["ecs", "update-service", "--cluster", "default", "--service", "web", "--task-definition", &bad]);
    let mut watch = Watch::new(&f, "web");
    // The failed deployment may leave DescribeServices at once (it has no task left), so a
    // sample that shows it FAILED is checked if there is one, and the history always.
    let mut failed: Option<Value> = None;
    let mut bad_id = None;
    let start = Instant::now();
    let rolled_back = loop {
        // No minimumHealthyPercent check here: a container that exits at once is RUNNING for a
        // moment, and a RUNNING task counts as healthy, so ECS may drain the old tasks too;
        // hence "running again" after the rollback.
        if let Some((tasks, ())) = watch.look(|_| ()) {
            assert!(in_flight(&tasks) <= 4, "above maximumPercent 200 of 2: {tasks:#?}");
        }
        let service = watch.service();
        for d in service["deployments"].as_array().unwrap() {
            if d["taskDefinition"] == bad.as_str() {
                bad_id = d["id"].as_str().map(str::to_owned);
                if d["rolloutState"] == "FAILED" {
                    failed = Some(d.clone());
                }
            }
        }
        let back = primary(&service)["taskDefinition"] == good.as_str();
        if back && steady(&service, 2) && events(&service).iter().any(|e| e.contains(") rolling back to deployment ")) {
            break service;
        }
        assert!(start.elapsed() < SETTLE, "no rollback: {service:#}");
        std::thread::sleep(PACE);
    };
    let bad_id = bad_id.expect("the bad deployment was PRIMARY for a while");
    let bad_id = bad_id.as_str();
    if let Some(failed) = failed {
        assert!(failed["failedTasks"].as_u64().unwrap() >= 3, "the threshold for 2 is 3 failed tasks: {failed:#}");
        assert!(failed["rolloutStateReason"].as_str().is_some_and(|r| !r.is_empty()), "{failed:#}");
    }
    // The service deployment history: the bad deployment was rolled back, its breaker tripped.
    let history = s.aws_json(&["ecs", "list-service-deployments", "--cluster", "default", "--service", "web"]);
    let digits = bad_id.strip_prefix("ecs-svc/").unwrap();
    let arn = history["serviceDeployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["serviceDeploymentArn"].as_str())
        .find(|a| a.ends_with(&format!("/{digits}")))
        .unwrap_or_else(|| panic!("{bad_id} in the history: {history:#}"))
        .to_owned();
    let described = s.aws_json(&["ecs", "describe-service-deployments", "--service-deployment-arns", &arn]);
    let deployment = &described["serviceDeployments"][0];
    assert_eq!(deployment["status"], "ROLLBACK_SUCCESSFUL", "{deployment:#}");
    let breaker = &deployment["deploymentCircuitBreaker"];
    assert_eq!(breaker["status"], "TRIGGERED", "{deployment:#}");
    assert_eq!(breaker["threshold"], 3, "min(200, max(3, ceil(2 / 2))): {deployment:#}");
    assert!(breaker["failureCount"].as_u64().is_some_and(|n| n >= 3), "{deployment:#}");
    let evs = events(&rolled_back);
    let failed_event = format!("(service web) (deployment {bad_id}) deployment failed: tasks failed to start.");
    assert!(evs.contains(&failed_event), "{evs:#?}");
    let rollback_event = format!("(service web) rolling back to deployment {good_id}.");
    assert!(evs.contains(&rollback_event), "{evs:#?}");
    let position = |m: &str| evs.iter().position(|e| e == m).unwrap();
    assert!(position(&rollback_event) <= position(&failed_event), "newest first: failed, then rolling back");

    // The good revision is PRIMARY and running; no bad task is left.
    assert_eq!(primary(&rolled_back)["taskDefinition"], good.as_str());
    let running = wait_running(s, "web", 2);
    assert!(running.iter().all(|t| t["taskDefinitionArn"] == good.as_str()), "{running:#?}");
    let bad_tasks = s.aws_json(&["ecs", "list-tasks", "--cluster", "default", "--started-by", bad_id]);
    assert_eq!(bad_tasks["taskArns"], json!([]), "no task of the failed deployment still runs");
    let bad_stopped = s.aws_json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "default",
        "--started-by",
        bad_id,
        "--desired-status",
        "STOPPED",
    ]);
    assert!(bad_stopped["taskArns"].as_array().unwrap().len() >= 3, "{bad_stopped}");
    s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "web", "--force"]);
    wait_service(s, "web", "INACTIVE", SETTLE, |svc| svc["status"] == "INACTIVE");
}

#[test]
fn server_kill_9_mid_deployment_resumes_without_duplicates() {
    let f = Fixture::new();
    let v1 = f.register("web", json!([f.container("app", &["sh", "-c", SERVE])]), json!({}));
    // New tasks count only once HEALTHY, a few seconds after RUNNING: the deployment is still
    // rolling when the server dies.
    let mut app = f.container("app", &["sh", "-c", &format!("sleep 3; touch /tmp/ready; {SERVE}")]);
    // The start period keeps an early probe's failure from counting (Docker probes first after
    // one interval; Flotilla's agent probes at once).
    app["healthCheck"] = json!({"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 10});
    let v2 = f.register("web", json!([app]), json!({}));
    let network = seed_network(&f.server, 3);
    create_service(&f, "web", &v1, 3, &network, &[]);
    wait_service(&f.server, "web", "steady on v1", SETTLE, |svc| steady(svc, 3));
    let old = wait_running(&f.server, "web", 3);
    f.server.aws_json(&["ecs", "update-service", "--cluster", "default", "--service", "web", "--task-definition", &v2]);

    let mut watch = Watch::new(&f, "web");
    let start = Instant::now();
    let new_id = loop {
        if let Some((tasks, ())) = watch.look(|_| ()) {
            assert!(in_flight(&tasks) <= 6, "above maximumPercent 200 of 3: {tasks:#?}");
            let service = watch.service();
            let rolling = service["deployments"].as_array().unwrap().len() == 2;
            let primary = primary(&service);
            let started = tasks.iter().any(|t| t["startedBy"] == primary["id"]);
            if rolling && started && primary["taskDefinition"] == v2.as_str() {
                break primary["id"].as_str().unwrap().to_owned();
            }
            assert!(start.elapsed() < SETTLE, "no v2 task while the deployment rolls: {service:#}");
        }
        std::thread::sleep(PACE);
    };
    drop(watch);

    let data_dir = f.server.data_dir.clone();
    let Fixture { mut server, subnet, _registry, image, rt } = f;
    server.kill9();
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };
    let s = &f.server;
    let mut watch = Watch::new(&f, "web");
    let start = Instant::now();
    let finished = loop {
        if let Some((tasks, ())) = watch.look(|_| ()) {
            assert!(healthy(&tasks) >= 3, "below minimumHealthyPercent 100 of 3 after the restart: {tasks:#?}");
            assert!(in_flight(&tasks) <= 6, "above maximumPercent 200 of 3 after the restart: {tasks:#?}");
        }
        let service = watch.service();
        if steady(&service, 3) && primary(&service)["taskDefinition"] == v2.as_str() {
            break service;
        }
        assert!(start.elapsed() < SETTLE, "the deployment did not finish after the restart: {service:#}");
        std::thread::sleep(PACE);
    };
    assert_eq!(primary(&finished)["id"], new_id.as_str(), "the deployment resumed; no other was made");
    let evs = events(&finished);
    assert!(evs.contains(&format!("(service web) (deployment {new_id}) deployment completed.")), "{evs:#?}");
    let running = wait_running(s, "web", 3);
    assert!(running.iter().all(|t| t["taskDefinitionArn"] == v2.as_str() && t["startedBy"] == new_id.as_str()));
    assert_one_per_zone(s, &running);
    // Every task record the deployment ever made: exactly the three running.
    let mut made = BTreeSet::new();
    for status in ["RUNNING", "STOPPED"] {
        let listed = s.aws_json(&[
            "ecs",
            "list-tasks",
            "--cluster",
            "default",
            "--started-by",
            &new_id,
            "--desired-status",
            status,
        ]);
        made.extend(listed["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()));
    }
    assert_eq!(made.len(), 3, "no duplicate task of the new revision: {made:#?}");
    for task in &old {
        f.wait_status(task["taskArn"].as_str().unwrap(), "STOPPED", SETTLE);
    }
    s.aws_json(&["ecs", "delete-service", "--cluster", "default", "--service", "web", "--force"]);
    wait_service(s, "web", "INACTIVE", SETTLE, |svc| svc["status"] == "INACTIVE");
    drop(f);
    drop(server);
}
