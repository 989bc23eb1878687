//! Placement over many hosts and host loss, without root: the real store, control plane,
//! in-process host API, agent loops (over `SimSandbox`), service scheduler and host-failure
//! detector; only containers pretend. Three hosts, one per zone, with short fence and grace
//! times so that losing a host takes a second or two.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_agent::Liveness;
use flotilla_control::{
    Control, CreateClusterInput, CreateServiceInput, HostLiveness, Identity, LocalHostApi, RunTaskInput,
};
use flotilla_host::{
    AssignmentWatch, BoxFuture, Host, HostApi, HostApiError, HostSpec, HostStatus, InterfaceLease, NetworkWatch,
    TaskReport, TaskSecrets, VpcView,
};
use flotilla_sandbox::{Sandbox, SimSandbox};
use flotilla_store::EmbeddedStore;
use flotilla_types::task::{AwsvpcConfiguration, DesiredStatus, NetworkConfiguration, StopCode, Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinitionSpec;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod common;

const REGION: &str = "us-east-1";
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);
const FENCE: Duration = Duration::from_millis(600);
/// The fence time plus a margin, as in production (10 s + 10 s).
const GRACE: Duration = Duration::from_millis(1500);

/// The in-process host API with a switch that cuts the host off (heartbeats and reports
/// fail), as a network partition between a host and every server would.
struct Partitionable {
    inner: LocalHostApi,
    cut: Arc<AtomicBool>,
}

impl Partitionable {
    fn refuse<T>(&self) -> Option<Result<T, HostApiError>> {
        self.cut.load(Ordering::SeqCst).then(|| Err(HostApiError::Unavailable { reason: "partitioned".into() }))
    }
}

impl HostApi for Partitionable {
    fn register(&self, spec: HostSpec) -> BoxFuture<'_, Result<Host, HostApiError>> {
        if let Some(e) = self.refuse() {
            return Box::pin(async move { e });
        }
        self.inner.register(spec)
    }
    fn assignments(&self, host_id: &str, since: Option<u64>) -> AssignmentWatch {
        self.inner.assignments(host_id, since)
    }
    fn report(&self, report: TaskReport) -> BoxFuture<'_, Result<Task, HostApiError>> {
        if let Some(e) = self.refuse() {
            return Box::pin(async move { e });
        }
        self.inner.report(report)
    }
    fn ensure_interface<'a>(
        &'a self,
        task_arn: &'a str,
        attachment_id: &'a str,
        awsvpc: &'a AwsvpcConfiguration,
    ) -> BoxFuture<'a, Result<InterfaceLease, HostApiError>> {
        self.inner.ensure_interface(task_arn, attachment_id, awsvpc)
    }
    fn interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<Option<InterfaceLease>, HostApiError>> {
        self.inner.interface(task_arn)
    }
    fn release_interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        self.inner.release_interface(task_arn)
    }
    fn interfaces<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<Vec<InterfaceLease>, HostApiError>> {
        self.inner.interfaces(host_id)
    }
    fn vpc<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<Option<VpcView>, HostApiError>> {
        self.inner.vpc(vpc_id)
    }
    fn network_changes(&self) -> NetworkWatch {
        self.inner.network_changes()
    }
    fn task_secrets<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, HostApiError>> {
        self.inner.task_secrets(task_arn)
    }
    fn load_balancers(&self, host_id: &str) -> flotilla_host::lb::LbWatch {
        self.inner.load_balancers(host_id)
    }
    fn report_targets(&self, reports: Vec<flotilla_host::lb::TargetReport>) -> BoxFuture<'_, Result<(), HostApiError>> {
        self.inner.report_targets(reports)
    }
    fn heartbeat<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        if let Some(e) = self.refuse() {
            return Box::pin(async move { e });
        }
        self.inner.heartbeat(host_id)
    }
    fn ensure_log_group<'a>(&'a self, group: &'a str, create: bool) -> BoxFuture<'a, Result<(), HostApiError>> {
        self.inner.ensure_log_group(group, create)
    }
    fn put_logs<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        events: Vec<flotilla_host::LogEvent>,
    ) -> BoxFuture<'a, Result<(), HostApiError>> {
        self.inner.put_logs(group, stream, events)
    }
    fn service_discovery(&self) -> flotilla_host::discovery::DiscoveryWatch {
        self.inner.service_discovery()
    }
}

/// A background loop and the way to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

impl Running {
    fn start<F: std::future::Future<Output = ()> + Send + 'static>(
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Running {
        let (stop, stopped) = oneshot::channel();
        Running { stop, done: tokio::spawn(run(stopped)) }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.done).await.expect("stops in time").expect("does not panic");
    }
}

struct SimHost {
    spec: HostSpec,
    sandbox: Arc<SimSandbox>,
    cut: Arc<AtomicBool>,
    agent: Option<Running>,
}

struct Fleet {
    control: Arc<Control>,
    hosts: Vec<SimHost>,
    /// One default subnet per zone, in zone order.
    subnets: Vec<String>,
    loops: Vec<Running>,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// `hosts` hosts (`host-a`, `host-b`, ... one per zone in turn) of `cpu` units and
    /// `memory` MiB, the service scheduler and the host-failure detector.
    async fn new(hosts: usize, cpu: u32, memory: u32) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<EmbeddedStore> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).expect("store"));
        let control =
            Arc::new(Control::new(store.clone(), Identity { region: REGION.into(), account: "123456789012".into() }));
        control.ensure_default_network().await.expect("default network");
        control.create_cluster(CreateClusterInput::default()).await.expect("default cluster");
        let mut subnets: Vec<(String, String)> = control
            .describe_subnets(&[], &[])
            .await
            .expect("subnets")
            .into_iter()
            .filter(|s| s.default_for_az)
            .map(|s| (s.availability_zone, s.id))
            .collect();
        subnets.sort();
        subnets.truncate(3);
        let zones: Vec<String> = subnets.iter().map(|(z, _)| z.clone()).collect();
        let mut fleet = Fleet {
            control: control.clone(),
            hosts: Vec::new(),
            subnets: subnets.into_iter().map(|(_, id)| id).collect(),
            loops: Vec::new(),
            dir,
        };
        for i in 0..hosts {
            let spec = HostSpec {
                id: format!("host-{}", (b'a' + i as u8) as char),
                availability_zone: zones[i % zones.len()].clone(),
                cpu,
                memory,
                ..Default::default()
            };
            fleet.hosts.push(SimHost { spec, sandbox: SimSandbox::new(), cut: Arc::default(), agent: None });
            fleet.start_agent(i).await;
        }
        let c = control.clone();
        fleet.loops.push(Running::start(move |stop| c.run_service_scheduler(async move { drop(stop.await) })));
        let c = control.clone();
        let liveness = HostLiveness { grace: GRACE };
        fleet
            .loops
            .push(Running::start(move |stop| c.run_host_failure_detector(liveness, async move { drop(stop.await) })));
        fleet
    }

    async fn start_agent(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        assert!(host.agent.is_none());
        let api: Arc<dyn HostApi> =
            Arc::new(Partitionable { inner: LocalHostApi::new(self.control.clone(), None), cut: host.cut.clone() });
        let agent = flotilla_agent::sim::agent_with(
            api,
            host.spec.clone(),
            host.sandbox.clone(),
            REGION,
            self.dir.path().join("agent").join(&host.spec.id),
            Liveness::with_fence(FENCE),
        );
        host.agent = Some(Running::start(move |stop| agent.run(async move { drop(stop.await) })));
        let id = host.spec.id.clone();
        self.until("the host registered", || async {
            self.control.hosts().await.unwrap().iter().any(|h| h.spec.id == id && h.status == HostStatus::Active)
        })
        .await;
    }

    async fn stop(mut self) {
        for h in &mut self.hosts {
            if let Some(a) = h.agent.take() {
                a.stop().await;
            }
        }
        for l in self.loops.drain(..) {
            l.stop().await;
        }
    }

    async fn register(&self, memory: &str) -> String {
        let spec: TaskDefinitionSpec = serde_json::from_value(json!({
            "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": memory,
            "containerDefinitions": [{"name": "app", "image": "busybox:latest", "essential": true}],
        }))
        .expect("a task definition");
        self.control.register_task_definition(spec, None).await.expect("register").0.task_definition_arn
    }

    fn network(&self) -> NetworkConfiguration {
        NetworkConfiguration {
            awsvpc_configuration: Some(AwsvpcConfiguration { subnets: self.subnets.clone(), ..Default::default() }),
        }
    }

    async fn create_service(&self, name: &str, definition: &str, desired: i32) {
        let input: CreateServiceInput = serde_json::from_value(json!({
            "serviceName": name, "taskDefinition": definition, "desiredCount": desired,
            "launchType": "FARGATE", "networkConfiguration": self.network(),
        }))
        .expect("a CreateService input");
        self.control.create_service(input).await.expect("create the service");
    }

    async fn run_task(&self, definition: &str, count: i32) -> (Vec<Task>, Vec<(String, String)>) {
        let input = RunTaskInput {
            task_definition: definition.into(),
            count: Some(count),
            launch_type: Some("FARGATE".into()),
            network_configuration: Some(self.network()),
            ..Default::default()
        };
        self.control.run_task(input).await.expect("RunTask answers")
    }

    /// Every task record with its host.
    async fn placed(&self) -> Vec<(Task, Option<String>)> {
        self.control.all_tasks().await.expect("tasks").into_iter().map(|r| (r.task, r.host_id)).collect()
    }

    async fn until<F: std::future::Future<Output = bool>>(&self, what: &str, ok: impl Fn() -> F) {
        let deadline = Instant::now() + DEADLINE;
        while !ok().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every task in `ids` is recorded STOPPED.
    async fn until_stopped(&self, ids: &[String]) {
        self.until("the tasks recorded STOPPED", || async {
            self.placed()
                .await
                .iter()
                .filter(|(t, _)| ids.iter().any(|id| id == t.id()))
                .all(|(t, _)| t.last_status == TaskStatus::Stopped)
        })
        .await;
    }

    /// Live (desired RUNNING) tasks of the service per host, once all of them are RUNNING.
    async fn running_per_host(&self, service: &str, want: usize) -> BTreeMap<String, usize> {
        let group = format!("service:{service}");
        let mut out = BTreeMap::new();
        self.until(&format!("{want} running tasks of {service}"), || async {
            let live: Vec<_> = self
                .placed()
                .await
                .into_iter()
                .filter(|(t, _)| {
                    t.group.as_deref() == Some(group.as_str()) && t.desired_status == DesiredStatus::Running
                })
                .collect();
            live.len() == want && live.iter().all(|(t, _)| t.last_status == TaskStatus::Running)
        })
        .await;
        for (t, host) in self.placed().await {
            if t.group.as_deref() == Some(group.as_str()) && t.desired_status == DesiredStatus::Running {
                *out.entry(host.expect("placed on a host")).or_default() += 1;
            }
        }
        out
    }
}

#[tokio::test]
async fn a_service_spreads_over_zones_then_hosts() {
    let fleet = Fleet::new(3, 4096, 8192).await;
    let definition = fleet.register("512").await;
    fleet.create_service("web", &definition, 6).await;
    let per_host = fleet.running_per_host("web", 6).await;
    let expected: BTreeMap<String, usize> = ["host-a", "host-b", "host-c"].iter().map(|h| (h.to_string(), 2)).collect();
    assert_eq!(per_host, expected, "two tasks on each host, one host per zone");
    // Each task runs in its host's zone, and its reservation shows on the host.
    let hosts: BTreeMap<String, String> =
        fleet.hosts.iter().map(|h| (h.spec.id.clone(), h.spec.availability_zone.clone())).collect();
    for (t, host) in fleet.placed().await {
        assert_eq!(t.availability_zone, hosts[host.as_deref().unwrap()], "{}", t.task_arn);
    }
    for view in fleet.control.host_overview().await.expect("hosts") {
        assert_eq!((view.allocated_cpu, view.allocated_memory, view.tasks), (512, 1024, 2), "{view:?}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn run_task_beyond_capacity_fails_with_ecs_resource_reasons() {
    // One host with room for two 512 MiB tasks by memory, plenty of CPU.
    let fleet = Fleet::new(1, 4096, 1024).await;
    let definition = fleet.register("512").await;
    let (tasks, failures) = fleet.run_task(&definition, 3).await;
    assert_eq!(tasks.len(), 2, "two fit");
    let instance = "arn:aws:ecs:us-east-1:123456789012:container-instance/default/host-a";
    assert_eq!(failures, vec![(instance.to_owned(), "RESOURCE:MEMORY".to_owned())]);
    let (tasks, failures) = fleet.run_task(&definition, 1).await;
    assert!(tasks.is_empty());
    assert_eq!(failures, vec![(instance.to_owned(), "RESOURCE:MEMORY".to_owned())]);

    // Stopping one gives its reservation back.
    fleet.control.stop_task(None, &fleet.placed().await[0].0.task_arn, None).await.expect("stop");
    fleet
        .until("the room of the stopped task", || async {
            fleet.control.host_overview().await.unwrap()[0].allocated_memory == 512
        })
        .await;
    let (tasks, _) = fleet.run_task(&definition, 1).await;
    assert_eq!(tasks.len(), 1);

    // CPU runs out first on a host with more memory than CPU.
    let fleet2 = Fleet::new(1, 256, 65536).await;
    let definition = fleet2.register("512").await;
    let (tasks, failures) = fleet2.run_task(&definition, 2).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(failures[0].1, "RESOURCE:CPU");
    fleet.stop().await;
    fleet2.stop().await;
}

#[tokio::test]
async fn concurrent_placers_never_overbook_a_host() {
    // Room for exactly 8 tasks of 256 CPU / 512 MiB; two control planes over one store.
    let fleet = Fleet::new(1, 2048, 4096).await;
    let definition = fleet.register("512").await;
    let other = Arc::new(Control::new(
        fleet.control.store().clone(),
        Identity { region: REGION.into(), account: "123456789012".into() },
    ));
    let mut calls = Vec::new();
    for i in 0..40 {
        let control = if i % 2 == 0 { fleet.control.clone() } else { other.clone() };
        let input = RunTaskInput {
            task_definition: definition.clone(),
            count: Some(1),
            launch_type: Some("FARGATE".into()),
            network_configuration: Some(fleet.network()),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move { control.run_task(input).await.expect("RunTask answers") }));
    }
    let mut placed = 0;
    let mut refused = 0;
    for call in calls {
        let (tasks, failures) = call.await.expect("no panic");
        placed += tasks.len();
        refused += failures.len();
    }
    assert_eq!((placed, refused), (8, 32));
    let records = fleet.placed().await;
    assert_eq!(records.len(), 8, "no task beyond the host's room was recorded");
    let view = &fleet.control.host_overview().await.unwrap()[0];
    assert_eq!((view.allocated_cpu, view.allocated_memory), (2048, 4096));
    fleet.stop().await;
}

#[tokio::test]
async fn a_lost_host_s_tasks_stop_and_come_back_elsewhere_and_its_copies_go_when_it_returns() {
    let mut fleet = Fleet::new(3, 4096, 8192).await;
    let definition = fleet.register("512").await;
    fleet.create_service("web", &definition, 6).await;
    fleet.running_per_host("web", 6).await;
    let on_a: Vec<String> = fleet
        .placed()
        .await
        .into_iter()
        .filter(|(_, h)| h.as_deref() == Some("host-a"))
        .map(|(t, _)| t.id().to_owned())
        .collect();
    assert_eq!(on_a.len(), 2);

    // host-a's agent dies (its containers keep running under their shims).
    fleet.hosts[0].agent.take().expect("running").stop().await;
    let died = Instant::now();
    fleet
        .until("host-a lost", || async {
            fleet.control.hosts().await.unwrap().iter().any(|h| h.spec.id == "host-a" && h.status == HostStatus::Lost)
        })
        .await;
    assert!(died.elapsed() >= GRACE - Duration::from_millis(200), "not lost before the grace: {:?}", died.elapsed());
    fleet.until_stopped(&on_a).await;
    let records = fleet.placed().await;
    for (t, _) in records.iter().filter(|(t, _)| on_a.iter().any(|x| x == t.id())) {
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.stop_code, Some(StopCode::TerminationNotice));
        let reason = t.stopped_reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("Host host-a was lost"), "{reason}");
    }
    // Replaced on the other hosts, and host-a holds nothing.
    let per_host = fleet.running_per_host("web", 6).await;
    assert!(!per_host.contains_key("host-a"), "{per_host:?}");
    assert_eq!(per_host.values().sum::<usize>(), 6);
    let views = fleet.control.host_overview().await.unwrap();
    let a = views.iter().find(|v| v.id == "host-a").unwrap();
    assert_eq!((a.status, a.allocated_cpu, a.tasks), (HostStatus::Lost, 0, 0), "{a:?}");
    for id in &on_a {
        assert!(fleet.hosts[0].sandbox.state(id).await.is_ok(), "host-a's copy still runs while its agent is gone");
    }

    // The agent comes back: ACTIVE again, and its stale copies are stopped.
    fleet.start_agent(0).await;
    for id in &on_a {
        let sandbox = fleet.hosts[0].sandbox.clone();
        fleet.until("the stale copy stopped", || async { sandbox.state(id).await.is_err() }).await;
    }
    fleet.stop().await;
}

#[tokio::test]
async fn an_agent_cut_off_past_its_fence_stops_its_tasks_before_the_host_is_lost() {
    let fleet = Fleet::new(2, 4096, 8192).await;
    let definition = fleet.register("512").await;
    fleet.create_service("web", &definition, 4).await;
    fleet.running_per_host("web", 4).await;
    let on_a: Vec<String> = fleet
        .placed()
        .await
        .into_iter()
        .filter(|(_, h)| h.as_deref() == Some("host-a"))
        .map(|(t, _)| t.id().to_owned())
        .collect();
    assert!(!on_a.is_empty());

    fleet.hosts[0].cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let sandbox = fleet.hosts[0].sandbox.clone();
    for id in &on_a {
        fleet.until("fenced", || async { sandbox.state(id).await.is_err() }).await;
    }
    let fenced_after = cut.elapsed();
    assert!(fenced_after >= FENCE - Duration::from_millis(100), "fenced too early: {fenced_after:?}");
    // Fenced before the control plane gives up on the host: never two copies.
    let hosts = fleet.control.hosts().await.unwrap();
    let a = hosts.iter().find(|h| h.spec.id == "host-a").unwrap();
    if a.status == HostStatus::Lost {
        assert!(fenced_after < GRACE, "the host was lost before its tasks were fenced");
    }
    fleet
        .until("host-a lost", || async {
            fleet.control.hosts().await.unwrap().iter().any(|h| h.spec.id == "host-a" && h.status == HostStatus::Lost)
        })
        .await;
    fleet.until_stopped(&on_a).await;
    let per_host = fleet.running_per_host("web", 4).await;
    assert_eq!(per_host.get("host-b"), Some(&4), "{per_host:?}");

    // Reconnected: the host is ACTIVE again and starts nothing of what was replaced.
    fleet.hosts[0].cut.store(false, Ordering::SeqCst);
    fleet
        .until("host-a active", || async {
            fleet.control.hosts().await.unwrap().iter().any(|h| h.spec.id == "host-a" && h.status == HostStatus::Active)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &on_a {
        assert!(sandbox.state(id).await.is_err(), "a replaced task started again on its old host");
    }
    fleet.stop().await;
}

#[test]
fn run_task_beyond_capacity_answers_resource_failures_through_the_aws_cli() {
    // One simulated host: a pretend 4-vCPU, 16 GiB machine less its reserve (15360 units,
    // 15360 MiB with the default overcommit, given here because the test harness raises it).
    let flags = ["--simulated-hosts", "1", "--overcommit-cpu", "4", "--overcommit-memory", "1"];
    let server = common::Server::start_flags(&flags.map(str::to_owned));
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let out = server.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let ids: Vec<&str> = out["Subnets"].as_array().unwrap().iter().map(|s| s["SubnetId"].as_str().unwrap()).collect();
    let network = format!("awsvpcConfiguration={{subnets=[{}]}}", ids.join(","));
    let register = |family: &str, cpu: &str, memory: &str| {
        let mut body = common::task_definition(family);
        body["cpu"] = json!(cpu);
        body["memory"] = json!(memory);
        server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
    };
    register("big", "4096", "8192");
    register("huge", "16384", "32768");

    let out = server.aws_json(&[
        "ecs",
        "run-task",
        "--task-definition",
        "big",
        "--count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    assert_eq!(out["tasks"].as_array().unwrap().len(), 1, "{out:#}");
    let failures = out["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{out:#}");
    assert_eq!(failures[0]["reason"], "RESOURCE:MEMORY");
    assert!(failures[0]["arn"].as_str().unwrap().ends_with(":container-instance/default/sim-1"), "{out:#}");

    let out = server.aws_json(&[
        "ecs",
        "run-task",
        "--task-definition",
        "huge",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    assert!(out["tasks"].as_array().unwrap().is_empty(), "{out:#}");
    assert_eq!(out["failures"][0]["reason"], "RESOURCE:CPU", "{out:#}");
}

#[tokio::test]
async fn a_service_that_does_not_fit_says_so_in_its_events_once() {
    // Room for two of its three tasks, by memory.
    let fleet = Fleet::new(1, 4096, 1024).await;
    let definition = fleet.register("512").await;
    fleet.create_service("web", &definition, 3).await;
    let message = "(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance host-a) has insufficient memory available. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";
    fleet
        .until("the unplaceable event", || async {
            let (services, _) = fleet.control.describe_services(None, &["web".to_owned()], false).await.unwrap();
            services[0].events.iter().any(|e| e.message == message)
        })
        .await;
    assert_eq!(fleet.running_per_host("web", 2).await.get("host-a"), Some(&2));
    // Passes keep running (every second at least); the event is not repeated.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (services, _) = fleet.control.describe_services(None, &["web".to_owned()], false).await.unwrap();
    assert_eq!(services[0].events.iter().filter(|e| e.message == message).count(), 1, "{:#?}", services[0].events);
    fleet.stop().await;
}
