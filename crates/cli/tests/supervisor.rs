//! The agent's task supervisor over `SimSandbox`, without root: the real store (in a
//! tempdir), control plane and in-process host API, the real agent loop, and containers that
//! only pretend. Each test drives tasks through `Control` as the API would and checks both the
//! task record (what DescribeTasks shows) and the operations the sandbox received, for every
//! failure path of issue 9: essential and non-essential exits, OOM, a lost sandbox,
//! `DependencyError`, a failed teardown, stop order and SIGKILL, re-adoption, a failed start,
//! and health checks; and for the start path around them: `dependsOn` conditions, a sandbox
//! or image that cannot be had, a task stopped before it started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_control::{Control, CreateClusterInput, Identity, LocalHostApi, RunTaskInput};
use flotilla_host::{HostApi, HostSpec};
use flotilla_sandbox::{ExecResult, SimEvent, SimOp, SimSandbox};
use flotilla_store::EmbeddedStore;
use flotilla_types::task::{
    AttachmentStatus, AwsvpcConfiguration, ContainerStatus, DesiredStatus, HealthStatus, NetworkConfiguration,
    StopCode, Task, TaskStatus,
};
use flotilla_types::task_definition::TaskDefinitionSpec;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REGION: &str = "us-east-1";
const HOST: &str = "sim-host";
/// Longest any transition here may take: they take milliseconds, but every report is an
/// fsync and CI machines are shared.
const DEADLINE: Duration = Duration::from_secs(10);
/// Health probes run at most every 5 s (Fargate's minimum interval), so health waits are longer.
const HEALTH_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(5);
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

struct RunningAgent {
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

/// One control plane with its store, one simulated host, and (while started) its agent.
struct Fixture {
    control: Arc<Control>,
    host: Arc<dyn HostApi>,
    sandbox: Arc<SimSandbox>,
    subnet: String,
    agent: Option<RunningAgent>,
    dir: tempfile::TempDir,
}

fn host_spec() -> HostSpec {
    HostSpec {
        id: HOST.into(),
        availability_zone: format!("{REGION}a"),
        cpu: 4096,
        memory: 16384,
        ..Default::default()
    }
}

/// A container that runs until told otherwise.
fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox:latest", "essential": true})
}

impl Fixture {
    /// The control plane with the default network and cluster, and the agent running.
    async fn new() -> Fixture {
        let mut f = Fixture::without_agent().await;
        f.start_agent();
        f
    }

    /// The host is registered, so tasks are assigned to it as they are made, but no agent
    /// runs yet: a test can script containers of a task before anything starts them.
    async fn without_agent() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path().join("store.redb")).expect("open the store");
        let identity = Identity { region: REGION.into(), account: "123456789012".into() };
        let control = Arc::new(Control::new(Arc::new(store), identity));
        control.ensure_default_network().await.expect("default network");
        control.create_cluster(CreateClusterInput::default()).await.expect("default cluster");
        control.register_host(host_spec()).await.expect("register the host");
        let subnets = control.describe_subnets(&[], &[]).await.expect("subnets");
        let subnet = subnets.iter().find(|s| s.default_for_az).expect("a default subnet").id.clone();
        let host: Arc<dyn HostApi> = Arc::new(LocalHostApi::new(control.clone(), None));
        Fixture { control, host, sandbox: SimSandbox::new(), subnet, agent: None, dir }
    }

    /// Starts a fresh agent for the host, over the fixture's sandbox and store.
    fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "one agent at a time");
        let agent = flotilla_agent::sim::agent(
            self.host.clone(),
            host_spec(),
            self.sandbox.clone(),
            REGION,
            self.dir.path().join("agent"),
        );
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        self.agent = Some(RunningAgent { stop, done });
    }

    /// Shuts the agent down as `flotilla up` does; its tasks keep their sandboxes.
    async fn stop_agent(&mut self) {
        let agent = self.agent.take().expect("an agent is running");
        let _ = agent.stop.send(());
        tokio::time::timeout(DEADLINE, agent.done)
            .await
            .expect("the agent shuts down in time")
            .expect("the agent does not panic");
    }

    async fn register(&self, family: &str, containers: Value) {
        let spec: TaskDefinitionSpec = serde_json::from_value(json!({
            "family": family,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": containers,
        }))
        .expect("a task definition");
        self.control.register_task_definition(spec, None).await.expect("register the task definition");
    }

    async fn run(&self, family: &str) -> Task {
        let input = RunTaskInput {
            task_definition: family.into(),
            network_configuration: Some(NetworkConfiguration {
                awsvpc_configuration: Some(AwsvpcConfiguration {
                    subnets: vec![self.subnet.clone()],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let (mut tasks, failures) = self.control.run_task(input).await.expect("run the task");
        assert!(failures.is_empty(), "{failures:?}");
        tasks.pop().expect("one task")
    }

    async fn stop(&self, task: &Task) {
        self.control.stop_task(None, &task.task_arn, None).await.expect("stop the task");
    }

    async fn describe(&self, task: &Task) -> Task {
        let (mut found, missing) =
            self.control.describe_tasks(None, std::slice::from_ref(&task.task_arn), false).await.expect("describe");
        assert!(missing.is_empty(), "{missing:?}");
        found.pop().expect("the task")
    }

    /// The task's record once `ok` holds, polled every few ms; fails with the last record.
    async fn wait_for(&self, task: &Task, what: &str, ok: impl Fn(&Task) -> bool) -> Task {
        self.wait_within(DEADLINE, task, what, ok).await
    }

    async fn wait_within(&self, limit: Duration, task: &Task, what: &str, ok: impl Fn(&Task) -> bool) -> Task {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.describe(task).await;
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}; the task is {t:#?}");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_status(&self, task: &Task, status: TaskStatus) -> Task {
        self.wait_for(task, status.as_str(), |t| t.last_status == status).await
    }

    /// Waits until `ok` (about what the sandbox saw or has) holds.
    async fn wait_until(&self, what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; operations: {:#?}", self.sandbox.log());
            tokio::time::sleep(POLL).await;
        }
    }

    /// The containers started in `task`, in order.
    fn starts(&self, task: &Task) -> Vec<String> {
        self.sandbox
            .log()
            .into_iter()
            .filter_map(|e| match e {
                SimEvent::Start { task: t, container } if t == task.id() => Some(container),
                _ => None,
            })
            .collect()
    }

    /// The signals sent to `task`'s containers, in order.
    fn signals(&self, task: &Task) -> Vec<(String, i32)> {
        self.sandbox
            .log()
            .into_iter()
            .filter_map(|e| match e {
                SimEvent::Signal { task: t, container, signal } if t == task.id() => Some((container, signal)),
                _ => None,
            })
            .collect()
    }

    fn count(&self, ok: impl Fn(&SimEvent) -> bool) -> usize {
        self.sandbox.log().iter().filter(|e| ok(e)).count()
    }

    /// How many times `task`'s sandbox was asked to go, failed attempts included.
    fn destroys(&self, task: &Task) -> usize {
        self.count(|e| matches!(e, SimEvent::Destroy { task: t } if t == task.id()))
    }

    /// The ids of the network interfaces that `task` holds.
    async fn interfaces(&self, task: &Task) -> Vec<String> {
        let all = self.control.describe_network_interfaces(&[], &[]).await.expect("describe interfaces");
        all.into_iter().filter(|e| e.attachment.as_deref() == Some(task.task_arn.as_str())).map(|e| e.id).collect()
    }

    /// What every STOPPED task shows once torn down: the interface gone from the record and
    /// from EC2, the sandbox destroyed, every container STOPPED.
    async fn assert_torn_down(&self, t: &Task) {
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.desired_status, DesiredStatus::Stopped);
        assert!(t.stopped_at.is_some() && t.execution_stopped_at.is_some(), "{t:#?}");
        let attachment = t.eni_attachment().expect("the task has its ENI attachment");
        assert_eq!(attachment.status, AttachmentStatus::Deleted, "{t:#?}");
        assert!(self.interfaces(t).await.is_empty(), "the interface is released");
        assert!(!self.sandbox.tasks().contains(&t.id().to_owned()), "the sandbox is gone");
        assert!(t.containers.iter().all(|c| c.last_status == ContainerStatus::Stopped), "{t:#?}");
    }
}

fn container_of<'a>(t: &'a Task, name: &str) -> &'a flotilla_types::task::Container {
    t.container(name).unwrap_or_else(|| panic!("no container {name} in {t:#?}"))
}

#[tokio::test]
async fn a_task_runs_then_stops_when_asked() {
    let f = Fixture::new().await;
    f.register("web", json!([container("app"), container("sidecar")])).await;
    let task = f.run("web").await;
    let running = f.wait_status(&task, TaskStatus::Running).await;
    assert!(running.started_at.is_some() && running.pull_started_at.is_some() && running.pull_stopped_at.is_some());
    assert_eq!(running.connectivity.as_deref(), Some("CONNECTED"));
    let attachment = running.eni_attachment().expect("an ENI attachment");
    assert_eq!(attachment.status, AttachmentStatus::Attached);
    let interfaces = f.interfaces(&task).await;
    assert_eq!(interfaces.len(), 1, "one interface for the task");
    let eni = attachment.details.iter().find(|d| d.name.as_deref() == Some("networkInterfaceId"));
    assert_eq!(eni.and_then(|d| d.value.as_deref()), Some(interfaces[0].as_str()), "{attachment:#?}");
    for c in &running.containers {
        assert_eq!(c.last_status, ContainerStatus::Running, "{c:#?}");
        assert!(c.image_digest.as_deref().is_some_and(|d| d.starts_with("sha256:")), "{c:#?}");
        assert!(c.network_interfaces[0].private_ipv4_address.as_deref().is_some_and(|ip| ip.starts_with("172.31.")));
    }
    assert_eq!(f.count(|e| matches!(e, SimEvent::Create { .. })), 1);
    assert_eq!(f.starts(&task), ["app", "sidecar"]);

    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(stopped.stopped_reason.as_deref(), Some("Task stopped by user"));
    assert!(stopped.stopping_at.is_some());
    for c in &stopped.containers {
        assert_eq!(c.exit_code, Some(143), "SIGTERM ends {}: {c:#?}", c.name);
    }
    let mut signalled = f.signals(&task);
    signalled.sort();
    assert_eq!(signalled, [("app".to_owned(), SIGTERM), ("sidecar".to_owned(), SIGTERM)]);
    assert!(matches!(f.sandbox.log().last(), Some(SimEvent::Destroy { .. })), "{:#?}", f.sandbox.log());
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn an_essential_exit_stops_the_task_and_a_non_essential_one_does_not() {
    let f = Fixture::new().await;
    let mut helper = container("helper");
    helper["essential"] = json!(false);
    f.register("jobs", json!([container("app"), helper, container("sidecar")])).await;
    let task = f.run("jobs").await;
    f.wait_status(&task, TaskStatus::Running).await;

    assert!(f.sandbox.exit(task.id(), "helper", 0));
    let t = f
        .wait_for(&task, "helper STOPPED", |t| container_of(t, "helper").last_status == ContainerStatus::Stopped)
        .await;
    // The exit and any stop it causes are one report, so the task's fate is already decided.
    assert_eq!(t.last_status, TaskStatus::Running);
    assert_eq!(t.desired_status, DesiredStatus::Running);
    assert_eq!(t.stop_code, None);
    assert_eq!(container_of(&t, "helper").exit_code, Some(0));

    assert!(f.sandbox.exit(task.id(), "app", 3));
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(stopped.stopped_reason.as_deref(), Some("Essential container in task exited"));
    assert_eq!(container_of(&stopped, "app").exit_code, Some(3));
    assert_eq!(container_of(&stopped, "helper").exit_code, Some(0));
    assert_eq!(container_of(&stopped, "sidecar").exit_code, Some(143));
    assert_eq!(f.signals(&task), [("sidecar".to_owned(), SIGTERM)], "only the container still running is signalled");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn an_oom_kill_is_reported_with_ecs_reason() {
    let f = Fixture::new().await;
    f.register("hungry", json!([container("app"), container("sidecar")])).await;
    let task = f.run("hungry").await;
    f.wait_status(&task, TaskStatus::Running).await;
    assert!(f.sandbox.oom(task.id(), "app"));
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    let app = container_of(&stopped, "app");
    assert_eq!(app.exit_code, Some(137));
    assert!(app.reason.as_deref().is_some_and(|r| r.starts_with("OutOfMemoryError")), "{app:#?}");
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_of(&stopped, "sidecar").exit_code, Some(143));
    assert_eq!(container_of(&stopped, "sidecar").reason, None);
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_sandbox_lost_while_running_stops_the_task() {
    let f = Fixture::new().await;
    f.register("fragile", json!([container("app")])).await;
    let task = f.run("fragile").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.sandbox.lose(task.id());
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("Task sandbox failed: "), "{reason}");
    assert!(f.signals(&task).is_empty(), "nothing is left to signal");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_sandbox_lost_while_the_agent_was_away_stops_the_task() {
    let mut f = Fixture::new().await;
    f.register("fragile", json!([container("app")])).await;
    let task = f.run("fragile").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.stop_agent().await;
    // As after a host reboot: the sandbox is gone, the record still says RUNNING.
    f.sandbox.lose(task.id());
    assert_eq!(f.describe(&task).await.last_status, TaskStatus::Running);
    f.start_agent();
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert_eq!(stopped.stopped_reason.as_deref(), Some("Task stopped: its sandbox was lost while the agent was away"));
    assert_eq!(f.count(|e| matches!(e, SimEvent::Create { .. })), 1, "the lost task is not made again");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_failed_success_dependency_is_a_dependency_error() {
    let f = Fixture::new().await;
    let mut init = container("init");
    init["essential"] = json!(false);
    let mut app = container("app");
    app["dependsOn"] = json!([{"containerName": "init", "condition": "SUCCESS"}]);
    f.register("migrate", json!([init, app])).await;
    let task = f.run("migrate").await;
    let t =
        f.wait_for(&task, "init RUNNING", |t| container_of(t, "init").last_status == ContainerStatus::Running).await;
    assert_eq!(container_of(&t, "app").last_status, ContainerStatus::Pending, "app waits for init to succeed");
    assert!(t.last_status < TaskStatus::Running, "{t:#?}");

    assert!(f.sandbox.exit(task.id(), "init", 1));
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("DependencyError: "), "{reason}");
    assert!(reason.contains("app") && reason.contains("init"), "{reason}");
    assert_eq!(f.starts(&task), ["init"], "app never started");
    assert_eq!(container_of(&stopped, "app").exit_code, None);
    assert_eq!(container_of(&stopped, "init").exit_code, Some(1));
    assert_eq!(stopped.started_at, None, "the task never ran");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_failed_teardown_is_retried_until_the_sandbox_is_gone() {
    let f = Fixture::new().await;
    f.register("sticky", json!([container("app")])).await;
    let task = f.run("sticky").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.sandbox.fail_next(SimOp::Destroy, "device or resource busy");
    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(f.count(|e| matches!(e, SimEvent::Destroy { .. })), 2, "{:#?}", f.sandbox.log());
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(container_of(&stopped, "app").exit_code, Some(143));
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_task_whose_teardown_keeps_failing_is_not_stopped() {
    let f = Fixture::new().await;
    f.register("sticky", json!([container("app")])).await;
    let task = f.run("sticky").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.sandbox.fail_task(task.id(), SimOp::Destroy, "device or resource busy");
    f.stop(&task).await;
    // A second destroy is the agent retrying (on an event or its periodic resync).
    f.wait_until("a retried destroy", || f.destroys(&task) >= 2).await;
    let t = f.describe(&task).await;
    assert_eq!(t.last_status, TaskStatus::Deprovisioning, "not STOPPED while its sandbox exists: {t:#?}");
    assert_eq!(t.desired_status, DesiredStatus::Stopped);
    assert_eq!(container_of(&t, "app").exit_code, Some(143), "the containers did stop");
    assert_eq!(f.sandbox.tasks(), [task.id()]);

    f.sandbox.heal(task.id());
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_failed_teardown_is_retried_while_other_tasks_keep_the_agent_busy() {
    let f = Fixture::new().await;
    f.register("sticky", json!([container("app")])).await;
    let task = f.run("sticky").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.sandbox.fail_task(task.id(), SimOp::Destroy, "device or resource busy");
    f.stop(&task).await;
    f.wait_until("the first destroy", || f.destroys(&task) >= 1).await;

    // Other tasks come and go several times a second, so the agent always has news. The
    // task's own reports can cause at most two more attempts (its STOPPING and DEPROVISIONING
    // records arriving after the first attempt failed); a fourth is the periodic retry, which
    // must not wait for a quiet moment that never comes.
    let deadline = Instant::now() + 2 * DEADLINE;
    let mut churn = tokio::time::interval(Duration::from_millis(200));
    let mut healed = false;
    loop {
        if !healed && f.destroys(&task) >= 4 {
            f.sandbox.heal(task.id());
            healed = true;
        }
        if healed && f.describe(&task).await.last_status == TaskStatus::Stopped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the teardown was not retried: {} destroys; {:#?}",
            f.destroys(&task),
            f.describe(&task).await
        );
        churn.tick().await;
        let other = f.run("sticky").await;
        f.stop(&other).await;
    }
    f.assert_torn_down(&f.describe(&task).await).await;
}

#[tokio::test]
async fn containers_stop_in_reverse_dependency_order() {
    let f = Fixture::new().await;
    let mut b = container("b");
    b["dependsOn"] = json!([{"containerName": "a", "condition": "START"}]);
    f.register("ordered", json!([b, container("a")])).await;
    let task = f.run("ordered").await;
    f.wait_status(&task, TaskStatus::Running).await;
    assert_eq!(f.starts(&task), ["a", "b"], "a starts first, whatever the definition's order");
    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(f.signals(&task), [("b".to_owned(), SIGTERM), ("a".to_owned(), SIGTERM)], "b stops before a");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_container_that_ignores_sigterm_is_killed_after_its_stop_timeout() {
    let f = Fixture::new().await;
    let mut stubborn = container("stubborn");
    stubborn["stopTimeout"] = json!(1);
    f.register("stubborn", json!([stubborn])).await;
    let task = f.run("stubborn").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.sandbox.ignore_sigterm(task.id(), "stubborn");
    let asked = Instant::now();
    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert!(asked.elapsed() >= Duration::from_secs(1), "SIGKILL waits for stopTimeout: {:?}", asked.elapsed());
    assert_eq!(f.signals(&task), [("stubborn".to_owned(), SIGTERM), ("stubborn".to_owned(), SIGKILL)]);
    assert_eq!(container_of(&stopped, "stubborn").exit_code, Some(137));
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_tasks() {
    let mut f = Fixture::new().await;
    let mut helper = container("helper");
    helper["essential"] = json!(false);
    f.register("durable", json!([container("app"), helper])).await;
    let task = f.run("durable").await;
    f.wait_status(&task, TaskStatus::Running).await;
    f.stop_agent().await;
    // The task runs on without an agent; what happens meanwhile is seen by the next one.
    assert!(f.sandbox.exit(task.id(), "helper", 0));
    f.start_agent();
    let t = f
        .wait_for(&task, "the new agent to see helper exit", |t| {
            container_of(t, "helper").last_status == ContainerStatus::Stopped
        })
        .await;
    assert_eq!(t.last_status, TaskStatus::Running);
    assert_eq!(container_of(&t, "helper").exit_code, Some(0));
    assert_eq!(container_of(&t, "app").last_status, ContainerStatus::Running);
    assert_eq!(f.count(|e| matches!(e, SimEvent::Create { .. })), 1, "adopted, not made again");
    assert_eq!(f.starts(&task), ["app", "helper"], "nothing started twice");

    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(container_of(&stopped, "app").exit_code, Some(143));
    assert_eq!(f.signals(&task), [("app".to_owned(), SIGTERM)]);
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_container_that_cannot_start_fails_the_task() {
    let f = Fixture::new().await;
    f.register("broken", json!([container("app")])).await;
    f.sandbox.fail_next(SimOp::Start, "exec format error");
    let task = f.run("broken").await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("CannotStartContainerError: ") && reason.contains("exec format error"), "{reason}");
    let app = container_of(&stopped, "app");
    assert_eq!(app.reason.as_deref(), Some(reason), "{app:#?}");
    assert_eq!(stopped.started_at, None, "the task never ran");
    assert_eq!(f.starts(&task), ["app"], "one attempt");
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn health_checks_make_the_container_and_task_unhealthy_then_healthy() {
    let mut f = Fixture::without_agent().await;
    let mut app = container("app");
    app["healthCheck"] =
        json!({"command": ["CMD-SHELL", "curl -f localhost"], "interval": 5, "timeout": 2, "retries": 1});
    f.register("checked", json!([app])).await;
    let task = f.run("checked").await;
    assert_eq!(task.health_status, Some(HealthStatus::Unknown));
    let failing = ExecResult { exit_code: Some(1), timed_out: false, output: "connection refused".into() };
    f.sandbox.set_exec_result(task.id(), "app", failing);
    f.start_agent();

    let unhealthy =
        f.wait_within(HEALTH_DEADLINE, &task, "UNHEALTHY", |t| t.health_status == Some(HealthStatus::Unhealthy)).await;
    assert_eq!(container_of(&unhealthy, "app").health_status, Some(HealthStatus::Unhealthy));
    assert_eq!(unhealthy.last_status, TaskStatus::Running, "an unhealthy task keeps running");
    let probe = f.sandbox.log().into_iter().find_map(|e| match e {
        SimEvent::Exec { container, argv, .. } if container == "app" => Some(argv),
        _ => None,
    });
    assert_eq!(probe.expect("a probe ran"), ["/bin/sh", "-c", "curl -f localhost"]);

    let passing = ExecResult { exit_code: Some(0), timed_out: false, output: String::new() };
    f.sandbox.set_exec_result(task.id(), "app", passing);
    let healthy =
        f.wait_within(HEALTH_DEADLINE, &task, "HEALTHY", |t| t.health_status == Some(HealthStatus::Healthy)).await;
    assert_eq!(container_of(&healthy, "app").health_status, Some(HealthStatus::Healthy));

    f.stop(&task).await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_a_task_s_health_until_its_next_probe() {
    let mut f = Fixture::new().await;
    let mut app = container("app");
    app["healthCheck"] = json!({"command": ["CMD", "check"], "interval": 5, "timeout": 2, "retries": 1});
    f.register("kept", json!([app])).await;
    let task = f.run("kept").await;
    f.wait_within(HEALTH_DEADLINE, &task, "HEALTHY", |t| t.health_status == Some(HealthStatus::Healthy)).await;
    f.stop_agent().await;
    let probes = |f: &Fixture| f.count(|e| matches!(e, SimEvent::Exec { .. }));
    let before = probes(&f);
    f.start_agent();
    // Until the adopted task's next probe, what it reports is the verdict it had: never UNKNOWN.
    let deadline = Instant::now() + HEALTH_DEADLINE;
    while probes(&f) == before {
        let t = f.describe(&task).await;
        assert_eq!(t.health_status, Some(HealthStatus::Healthy), "health regressed after the restart: {t:#?}");
        assert!(Instant::now() < deadline, "no probe ran after the restart");
        tokio::time::sleep(POLL).await;
    }
    let t = f.describe(&task).await;
    assert_eq!(t.health_status, Some(HealthStatus::Healthy));
    assert_eq!(t.last_status, TaskStatus::Running);
}

#[tokio::test]
async fn a_task_stopped_before_the_agent_gets_to_it_never_gets_a_sandbox() {
    let mut f = Fixture::without_agent().await;
    f.register("late", json!([container("app")])).await;
    let task = f.run("late").await;
    f.stop(&task).await;
    f.start_agent();
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(stopped.started_at, None);
    assert!(f.sandbox.log().is_empty(), "nothing was made: {:#?}", f.sandbox.log());
    assert!(f.interfaces(&task).await.is_empty());
    assert!(stopped.containers.iter().all(|c| c.last_status == ContainerStatus::Stopped), "{stopped:#?}");
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_made_fails_the_task() {
    let f = Fixture::new().await;
    f.register("nospace", json!([container("app")])).await;
    f.sandbox.fail_next(SimOp::Create, "no space left on device");
    let task = f.run("nospace").await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError: ") && reason.contains("no space left on device"),
        "{reason}"
    );
    assert!(f.starts(&task).is_empty());
    f.assert_torn_down(&stopped).await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_task() {
    let f = Fixture::new().await;
    let mut app = container("app");
    app["image"] = json!("busybox:missing");
    f.register("unpullable", json!([container("sidecar"), app])).await;
    let task = f.run("unpullable").await;
    let stopped = f.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert_eq!(container_of(&stopped, "app").reason.as_deref(), Some(reason), "the container to blame says why");
    assert_eq!(container_of(&stopped, "sidecar").reason, None);
    assert!(f.sandbox.log().is_empty(), "no sandbox for a task whose images are not there");
    assert!(f.interfaces(&task).await.is_empty());
}

#[tokio::test]
async fn a_container_starts_once_its_dependency_succeeded_or_is_healthy() {
    let mut f = Fixture::without_agent().await;
    let mut init = container("init");
    init["essential"] = json!(false);
    let mut db = container("db");
    db["healthCheck"] = json!({"command": ["CMD", "pg_isready"], "interval": 5, "timeout": 2, "retries": 1});
    let mut app = container("app");
    app["dependsOn"] = json!([
        {"containerName": "init", "condition": "SUCCESS"},
        {"containerName": "db", "condition": "HEALTHY"},
    ]);
    f.register("stack", json!([app, db, init])).await;
    let task = f.run("stack").await;
    // A one-shot job: it exits 0 as soon as it starts.
    f.sandbox.exit_on_start(task.id(), "init", 0);
    f.start_agent();
    let running = f.wait_status(&task, TaskStatus::Running).await;
    assert_eq!(container_of(&running, "init").exit_code, Some(0));
    assert_eq!(container_of(&running, "db").health_status, Some(HealthStatus::Healthy));
    assert_eq!(container_of(&running, "app").last_status, ContainerStatus::Running);
    let log = f.sandbox.log();
    let position = |wanted: &SimEvent| log.iter().position(|e| e == wanted).expect("the operation happened");
    let id = task.id().to_owned();
    let start = |c: &str| SimEvent::Start { task: id.clone(), container: c.into() };
    let probe = SimEvent::Exec { task: id.clone(), container: "db".into(), argv: vec!["pg_isready".into()] };
    assert!(position(&start("app")) > position(&probe), "app starts after db's first (passing) probe: {log:#?}");
    assert!(position(&start("app")) > position(&start("init")), "{log:#?}");
    assert_eq!(f.starts(&task).len(), 3, "each container starts once: {log:#?}");
}

/// The assignment stream resumes from a revision: a host that follows it again is sent only
/// what changed since, and told which of its tasks are still its own.
#[tokio::test]
async fn a_resumed_assignment_stream_sends_only_what_changed() {
    use flotilla_host::AssignmentEvent;
    let f = Fixture::without_agent().await;
    f.register("resume", json!([container("app")])).await;
    let first = f.run("resume").await;
    let second = f.run("resume").await;

    let mut stream = f.host.assignments(HOST, None);
    let Ok(AssignmentEvent::Snapshot { assignments, unchanged, revision }) = stream.next().await else {
        panic!("a stream opens with a snapshot");
    };
    let mut arns: Vec<&str> = assignments.iter().map(|a| a.task_arn()).collect();
    arns.sort();
    let mut expected = vec![first.task_arn.as_str(), second.task_arn.as_str()];
    expected.sort();
    assert_eq!(arns, expected);
    assert!(unchanged.is_empty(), "{unchanged:?}");
    drop(stream);

    f.stop(&second).await;
    let mut resumed = f.host.assignments(HOST, Some(revision));
    let Ok(AssignmentEvent::Snapshot { assignments, unchanged, .. }) = resumed.next().await else {
        panic!("a resumed stream opens with a snapshot");
    };
    let changed: Vec<&str> = assignments.iter().map(|a| a.task_arn()).collect();
    assert_eq!(changed, [second.task_arn.as_str()], "only the stopped task changed");
    assert_eq!(assignments[0].task.desired_status, DesiredStatus::Stopped);
    assert_eq!(unchanged, std::slice::from_ref(&first.task_arn));
}
