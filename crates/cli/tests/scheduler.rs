//! The service scheduler over `SimSandbox`, without root: the real store, control plane,
//! Cloud Map, in-process host API, agent loop and scheduler loop; only containers pretend.
//! Each test drives a service through `Control` as the API would and checks what ECS users
//! see (the service's counts, deployments and events, its tasks) and what must never happen
//! on the way (fewer healthy tasks than minimumHealthyPercent, more than maximumPercent
//! running, a duplicate after a restart, a Cloud Map answer for a stopped task).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_control::{
    Control, CreateClusterInput, CreateServiceInput, DeleteServiceInput, DeploymentStatus, Identity, LocalHostApi,
    RolloutState, Service, ServiceDeploymentStatus, ServiceRegistry, ServiceStatus, UpdateServiceInput,
};
use flotilla_discovery::{Discovery, DnsRecord, NewPrivateDnsNamespace, NewService, RecordType};
use flotilla_host::{HostApi, HostSpec};
use flotilla_sandbox::{ExecResult, SimSandbox};
use flotilla_store::EmbeddedStore;
use flotilla_types::task::{AwsvpcConfiguration, DesiredStatus, NetworkConfiguration, StopCode, Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinitionSpec;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REGION: &str = "us-east-1";
/// Transitions take milliseconds; every one is an fsync and CI machines are shared.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(5);
/// Health probes run one interval (at least 5 s on Fargate) after a start, then every interval;
/// a throttled run of failing replacements takes a few of them.
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);

/// A background loop and the way to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.done).await.expect("stops in time").expect("does not panic");
    }
}

struct Cluster {
    control: Arc<Control>,
    discovery: Arc<Discovery>,
    sandbox: Arc<SimSandbox>,
    /// Two default subnets in two zones, in that order.
    subnets: Vec<(String, String)>,
    agent: Running,
    scheduler: Option<Running>,
    _dir: tempfile::TempDir,
}

fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox:latest", "essential": true})
}

impl Cluster {
    async fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<EmbeddedStore> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).expect("store"));
        let control =
            Arc::new(Control::new(store.clone(), Identity { region: REGION.into(), account: "123456789012".into() }));
        control.ensure_default_network().await.expect("default network");
        control.create_cluster(CreateClusterInput::default()).await.expect("default cluster");
        let discovery = Discovery::start(store.clone(), REGION, "123456789012");
        control.attach_discovery(discovery.clone());
        let spec = HostSpec {
            id: "sim".into(),
            availability_zone: format!("{REGION}a"),
            cpu: 16384,
            memory: 65536,
            ..Default::default()
        };
        control.register_host(spec.clone()).await.expect("register the host");
        let mut subnets: Vec<(String, String)> = control
            .describe_subnets(&[], &[])
            .await
            .expect("subnets")
            .into_iter()
            .filter(|s| s.default_for_az)
            .map(|s| (s.id, s.availability_zone))
            .collect();
        subnets.sort_by(|a, b| a.1.cmp(&b.1));
        subnets.truncate(2);
        let host: Arc<dyn HostApi> = Arc::new(LocalHostApi::new(control.clone(), None));
        let sandbox = SimSandbox::new();
        let agent = flotilla_agent::sim::agent(host, spec, sandbox.clone(), REGION, dir.path().join("agent"));
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        let mut c =
            Cluster { control, discovery, sandbox, subnets, agent: Running { stop, done }, scheduler: None, _dir: dir };
        c.start_scheduler();
        c
    }

    fn start_scheduler(&mut self) {
        assert!(self.scheduler.is_none(), "one scheduler at a time");
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(self.control.clone().run_service_scheduler(async move {
            let _ = stopped.await;
        }));
        self.scheduler = Some(Running { stop, done });
    }

    async fn register(&self, family: &str, containers: Value) -> String {
        let spec: TaskDefinitionSpec = serde_json::from_value(json!({
            "family": family, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": containers,
        }))
        .expect("a task definition");
        let (definition, _) = self.control.register_task_definition(spec, None).await.expect("register");
        definition.task_definition_arn
    }

    fn network(&self) -> NetworkConfiguration {
        NetworkConfiguration {
            awsvpc_configuration: Some(AwsvpcConfiguration {
                subnets: self.subnets.iter().map(|(id, _)| id.clone()).collect(),
                ..Default::default()
            }),
        }
    }

    async fn create(&self, name: &str, task_definition: &str, desired: i32, more: Value) -> Service {
        let mut input = json!({
            "serviceName": name, "taskDefinition": task_definition, "desiredCount": desired,
            "launchType": "FARGATE", "networkConfiguration": self.network(),
        });
        input.as_object_mut().expect("object").extend(more.as_object().cloned().unwrap_or_default());
        let input: CreateServiceInput = serde_json::from_value(input).expect("a CreateService input");
        self.control.create_service(input).await.expect("create the service")
    }

    async fn update(&self, name: &str, change: Value) -> Service {
        let mut input = json!({"service": name});
        input.as_object_mut().expect("object").extend(change.as_object().cloned().unwrap_or_default());
        let input: UpdateServiceInput = serde_json::from_value(input).expect("an UpdateService input");
        self.control.update_service(input).await.expect("update the service")
    }

    async fn service(&self, name: &str) -> Service {
        let (mut found, _) = self.control.describe_services(None, &[name.to_owned()], false).await.expect("describe");
        found.pop().expect("the service")
    }

    /// Every task of the service, stopped ones included.
    async fn tasks(&self, name: &str) -> Vec<Task> {
        let group = format!("service:{name}");
        let all = self.control.all_tasks().await.expect("tasks");
        all.into_iter().map(|r| r.task).filter(|t| t.group.as_deref() == Some(group.as_str())).collect()
    }

    async fn live(&self, name: &str) -> Vec<Task> {
        self.tasks(name).await.into_iter().filter(|t| t.desired_status == DesiredStatus::Running).collect()
    }

    /// Waits until `ok` holds for the service and its tasks; `each` sees every sample first.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        each: impl FnMut(&Service, &[Task]),
        ok: impl Fn(&Service, &[Task]) -> bool,
    ) -> (Service, Vec<Task>) {
        self.wait_within(DEADLINE, name, what, each, ok).await
    }

    async fn wait_within(
        &self,
        limit: Duration,
        name: &str,
        what: &str,
        mut each: impl FnMut(&Service, &[Task]),
        ok: impl Fn(&Service, &[Task]) -> bool,
    ) -> (Service, Vec<Task>) {
        let deadline = Instant::now() + limit;
        loop {
            let service = self.service(name).await;
            let tasks = self.tasks(name).await;
            each(&service, &tasks);
            if ok(&service, &tasks) {
                return (service, tasks);
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {service:#?}");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_steady(&self, name: &str) -> (Service, Vec<Task>) {
        self.wait(name, "a steady state", |_, _| {}, |s, _| steady(s)).await
    }
}

fn steady(s: &Service) -> bool {
    s.deployments.len() == 1
        && s.deployments[0].rollout_state == RolloutState::Completed
        && s.running_count == s.desired_count
        && s.pending_count == 0
}

fn messages(s: &Service) -> Vec<&str> {
    s.events.iter().map(|e| e.message.as_str()).collect()
}

fn running_of<'a>(tasks: &'a [Task], definition: &str) -> Vec<&'a Task> {
    tasks
        .iter()
        .filter(|t| t.desired_status == DesiredStatus::Running && t.last_status == TaskStatus::Running)
        .filter(|t| t.task_definition_arn == definition)
        .collect()
}

#[tokio::test]
async fn a_service_spreads_its_tasks_and_replaces_the_ones_that_die() {
    let c = Cluster::new().await;
    let v1 = c.register("web", json!([container("app")])).await;
    let created = c.create("web", &v1, 2, json!({})).await;
    assert_eq!(created.status, ServiceStatus::Active);
    assert_eq!(created.deployments.len(), 1);
    let deployment = created.deployments[0].id.clone();
    assert!(deployment.starts_with("ecs-svc/") && deployment.len() == "ecs-svc/".len() + 19, "{deployment}");

    let (service, tasks) = c.wait_steady("web").await;
    let live: Vec<&Task> = tasks.iter().filter(|t| t.desired_status == DesiredStatus::Running).collect();
    assert_eq!(live.len(), 2);
    let zones: BTreeSet<&str> = live.iter().map(|t| t.availability_zone.as_str()).collect();
    let expected: BTreeSet<&str> = c.subnets.iter().map(|(_, z)| z.as_str()).collect();
    assert_eq!(zones, expected, "one task in each zone");
    for t in &live {
        assert_eq!(t.started_by.as_deref(), Some(deployment.as_str()));
        assert_eq!(t.group.as_deref(), Some("service:web"));
    }
    let events = messages(&service);
    assert_eq!(events[0], "(service web) has reached a steady state.");
    let started = format!("(service web) has started 2 tasks: (task {}) (task {}).", live[0].id(), live[1].id());
    let started_other = format!("(service web) has started 2 tasks: (task {}) (task {}).", live[1].id(), live[0].id());
    assert!(events.contains(&started.as_str()) || events.contains(&started_other.as_str()), "{events:#?}");

    // The first task's essential container dies: a replacement starts, in the zone it left.
    let dead = live[0].clone();
    assert!(c.sandbox.exit(dead.id(), "app", 1));
    let (service, tasks) = c
        .wait(
            "web",
            "a replacement",
            |_, _| {},
            |s, t| steady(s) && t.iter().any(|x| x.id() == dead.id() && x.last_status == TaskStatus::Stopped),
        )
        .await;
    let now_live: Vec<&Task> = tasks.iter().filter(|t| t.desired_status == DesiredStatus::Running).collect();
    assert_eq!(now_live.len(), 2);
    let replacement = now_live.iter().find(|t| t.id() != live[1].id()).expect("a replacement");
    assert_eq!(replacement.availability_zone, dead.availability_zone, "the zone that lost a task gets it back");
    let replaced = format!("(service web) has started 1 tasks: (task {}).", replacement.id());
    assert!(messages(&service).contains(&replaced.as_str()), "{:#?}", messages(&service));
    let stopped = tasks.iter().find(|t| t.id() == dead.id()).expect("the dead task");
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    c.agent.stop().await;
}

#[tokio::test]
async fn a_rolling_update_never_drops_below_minimum_healthy_and_ends_with_one_primary() {
    let c = Cluster::new().await;
    let v1 = c.register("roll", json!([container("app")])).await;
    c.create("roll", &v1, 4, json!({"deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 150}}))
        .await;
    c.wait_steady("roll").await;
    let v2 = c.register("roll", json!([container("app")])).await;
    let updated = c.update("roll", json!({"taskDefinition": v2})).await;
    assert_eq!(updated.deployments.len(), 2);
    assert_eq!(updated.deployments[0].status, DeploymentStatus::Primary);
    assert_eq!(updated.deployments[0].task_definition, v2);
    assert_eq!(updated.deployments[1].status, DeploymentStatus::Active);

    let mut fewest = usize::MAX;
    let mut most = 0;
    let (service, tasks) = c
        .wait(
            "roll",
            "the rollout to complete",
            |_, tasks| {
                let running = tasks
                    .iter()
                    .filter(|t| t.desired_status == DesiredStatus::Running && t.last_status == TaskStatus::Running)
                    .count();
                let live = tasks.iter().filter(|t| t.last_status != TaskStatus::Stopped).count();
                fewest = fewest.min(running);
                most = most.max(live);
            },
            |s, t| steady(s) && s.deployments[0].task_definition == v2 && running_of(t, &v1).is_empty(),
        )
        .await;
    assert!(fewest >= 2, "minimumHealthyPercent 50 of 4 keeps 2 running; saw {fewest}");
    assert!(most <= 6, "maximumPercent 150 of 4 allows 6 tasks; saw {most}");
    assert_eq!(running_of(&tasks, &v2).len(), 4);
    assert_eq!(service.deployments.len(), 1);
    let done = format!("(service roll) (deployment {}) deployment completed.", service.deployments[0].id);
    assert!(messages(&service).contains(&done.as_str()), "{:#?}", messages(&service));
    let page = c
        .control
        .list_service_deployments(serde_json::from_value(json!({"service": "roll"})).expect("input"))
        .await
        .expect("deployments");
    let statuses: Vec<ServiceDeploymentStatus> = page.items.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [ServiceDeploymentStatus::Successful, ServiceDeploymentStatus::Successful]);
    c.agent.stop().await;
}

#[tokio::test]
async fn the_circuit_breaker_fails_a_crashing_revision_and_rolls_back() {
    let c = Cluster::new().await;
    let good = c.register("cb", json!([container("app")])).await;
    let breaker = json!({"deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}});
    c.create("cb", &good, 2, breaker).await;
    let (before, _) = c.wait_steady("cb").await;
    let good_deployment = before.deployments[0].id.clone();

    c.sandbox.exit_on_start_everywhere("crash", 1);
    let bad = c.register("cb", json!([container("crash")])).await;
    let update = c.update("cb", json!({"taskDefinition": bad})).await;
    let bad_deployment = update.deployments[0].id.clone();

    let (service, tasks) = c
        .wait("cb", "the rollback to complete", |_, _| {}, |s, _| steady(s) && s.deployments[0].id == good_deployment)
        .await;
    assert_eq!(service.task_definition, good, "the service runs the good revision again");
    assert_eq!(running_of(&tasks, &good).len(), 2);
    let failed_tasks = tasks.iter().filter(|t| t.task_definition_arn == bad).count();
    assert!(failed_tasks >= 3, "the breaker waits for 3 failures; {failed_tasks} tasks were tried");
    assert!(failed_tasks <= 6, "and does not retry forever: {failed_tasks}");
    let events = messages(&service);
    let failed = format!("(service cb) (deployment {bad_deployment}) deployment failed: tasks failed to start.");
    let rolling = format!("(service cb) rolling back to deployment {good_deployment}.");
    assert!(events.contains(&failed.as_str()) && events.contains(&rolling.as_str()), "{events:#?}");
    let page = c
        .control
        .list_service_deployments(serde_json::from_value(json!({"service": "cb"})).expect("input"))
        .await
        .expect("deployments");
    assert_eq!(page.items[0].status, ServiceDeploymentStatus::RollbackSuccessful, "{:#?}", page.items);
    c.agent.stop().await;
}

#[tokio::test]
async fn an_unhealthy_task_is_stopped_and_replaced() {
    let c = Cluster::new().await;
    let mut app = container("app");
    app["healthCheck"] = json!({"command": ["CMD", "check"], "interval": 5, "timeout": 2, "retries": 1});
    let checked = c.register("health", json!([app])).await;
    let failing = ExecResult { exit_code: Some(1), timed_out: false, output: "down".into() };
    c.sandbox.set_exec_result_everywhere("app", failing);
    c.create("health", &checked, 1, json!({})).await;
    let (_, tasks) = c
        .wait_within(
            HEALTH_DEADLINE,
            "health",
            "a health-check stop",
            |_, _| {},
            |_, t| t.iter().any(|x| x.stopped_reason.as_deref() == Some("Task failed container health checks")),
        )
        .await;
    let sick = tasks.iter().find(|t| t.desired_status == DesiredStatus::Stopped).expect("the stopped task");
    assert_eq!(sick.stop_code, Some(StopCode::ServiceSchedulerInitiated));
    let event = format!("(service health) (task {}) failed container health checks.", sick.id());
    // Read after the tasks: the event and the stop were written together.
    let service = c.service("health").await;
    assert!(messages(&service).contains(&event.as_str()), "{:#?}", messages(&service));
    // Replacements that fail their checks at once are throttled like tasks that fail to start.
    let (_, tasks) = c
        .wait_within(
            HEALTH_DEADLINE,
            "health",
            "the launch throttle",
            |_, _| {},
            |s, _| messages(s).contains(&"(service health) is unable to consistently start tasks successfully."),
        )
        .await;
    assert!(tasks.len() <= 6, "throttled after 3 failures, not a hot loop: {} tasks", tasks.len());
    // Healthy from now on: the replacement is counted once HEALTHY and the service settles.
    c.sandbox
        .set_exec_result_everywhere("app", ExecResult { exit_code: Some(0), timed_out: false, output: String::new() });
    let (_, tasks) = c.wait_within(HEALTH_DEADLINE, "health", "a steady state", |_, _| {}, |s, _| steady(s)).await;
    assert!(tasks.iter().any(|t| t.desired_status == DesiredStatus::Running && t.id() != sick.id()));
    c.agent.stop().await;
}

#[tokio::test]
async fn scale_in_spares_protected_tasks_and_delete_drains_to_inactive() {
    let c = Cluster::new().await;
    let v1 = c.register("scale", json!([container("app")])).await;
    c.create("scale", &v1, 3, json!({})).await;
    let (_, tasks) = c.wait_steady("scale").await;
    let newest = tasks.iter().max_by_key(|t| t.created_at).expect("a task").clone();
    let (protected, failures) = c
        .control
        .update_task_protection("default", std::slice::from_ref(&newest.task_arn), true, Some(5))
        .await
        .expect("protect");
    assert!(failures.is_empty() && protected[0].protection_enabled, "{protected:?} {failures:?}");

    c.update("scale", json!({"desiredCount": 1})).await;
    let (service, _) = c.wait_steady("scale").await;
    let live = c.live("scale").await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id(), newest.id(), "the protected task is the one kept");
    assert!(messages(&service).iter().any(|m| m.starts_with("(service scale) has stopped 2 running tasks")
        || m.starts_with("(service scale) has stopped 1 running tasks")));

    let refused = c
        .control
        .delete_service(DeleteServiceInput { service: "scale".into(), ..Default::default() })
        .await
        .expect_err("a service above 0 needs force");
    assert!(refused.to_string().contains("scaled above 0"), "{refused}");
    let draining = c
        .control
        .delete_service(DeleteServiceInput { service: "scale".into(), force: Some(true), ..Default::default() })
        .await
        .expect("forced delete");
    assert_eq!(draining.status, ServiceStatus::Draining);
    // Protection holds against scale-in, not against the service's deletion.
    c.control
        .update_task_protection("default", std::slice::from_ref(&newest.task_arn), false, None)
        .await
        .expect("unprotect");
    c.wait("scale", "INACTIVE", |_, _| {}, |s, _| s.status == ServiceStatus::Inactive).await;
    assert!(c.live("scale").await.is_empty());
    c.agent.stop().await;
}

#[tokio::test]
async fn a_restarted_scheduler_finishes_a_deployment_without_duplicates() {
    let mut c = Cluster::new().await;
    let v1 = c.register("resume", json!([container("app")])).await;
    c.create("resume", &v1, 3, json!({})).await;
    c.wait_steady("resume").await;
    let v2 = c.register("resume", json!([container("app")])).await;
    c.update("resume", json!({"taskDefinition": v2})).await;
    // Stop the scheduler as soon as the rollout has begun, then run a fresh one.
    c.wait("resume", "the rollout to begin", |_, _| {}, |_, t| t.iter().any(|x| x.task_definition_arn == v2)).await;
    c.scheduler.take().expect("running").stop().await;
    c.start_scheduler();
    let (service, tasks) = c
        .wait(
            "resume",
            "the rollout to complete",
            |_, _| {},
            |s, t| steady(s) && s.deployments[0].task_definition == v2 && running_of(t, &v1).is_empty(),
        )
        .await;
    let new_tasks =
        tasks.iter().filter(|t| t.started_by.as_deref() == Some(service.deployments[0].id.as_str())).count();
    assert_eq!(new_tasks, 3, "exactly the desired count was started for the new deployment");
    c.agent.stop().await;
}

#[tokio::test]
async fn cloud_map_answers_only_for_running_tasks() {
    let c = Cluster::new().await;
    let vpc = c.control.subnet(&c.subnets[0].0).await.expect("subnet").vpc_id;
    c.discovery
        .create_private_dns_namespace(NewPrivateDnsNamespace {
            name: "local".into(),
            vpc,
            description: None,
            creator_request_id: None,
            soa_ttl: None,
            tags: Vec::new(),
        })
        .await
        .expect("namespace");
    let deadline = Instant::now() + DEADLINE;
    let namespace = loop {
        if let Some(ns) = c.discovery.namespace_named("local").await.expect("lookup") {
            break ns;
        }
        assert!(Instant::now() < deadline, "the namespace is created");
        tokio::time::sleep(POLL).await;
    };
    let registry = c
        .discovery
        .create_service(NewService {
            name: "api".into(),
            namespace_id: Some(namespace.id.clone()),
            dns_namespace_id: None,
            description: None,
            creator_request_id: None,
            routing_policy: None,
            dns_records: Some(vec![DnsRecord { kind: RecordType::A, ttl: 10 }]),
            custom_health: None,
            http_only: false,
            tags: Vec::new(),
        })
        .await
        .expect("a Cloud Map service");
    let v1 = c.register("api", json!([container("app")])).await;
    let registries = vec![ServiceRegistry {
        registry_arn: Some(registry.arn.clone()),
        port: None,
        container_name: None,
        container_port: None,
    }];
    c.create("api", &v1, 2, json!({"serviceRegistries": registries})).await;

    registered_are_running(&c, &registry.id, &v1).await;
    let v2 = c.register("api", json!([container("app")])).await;
    c.update("api", json!({"taskDefinition": v2})).await;
    registered_are_running(&c, &registry.id, &v2).await;
    let (found, _) = c.control.describe_services(None, &["api".into()], false).await.expect("describe");
    assert_eq!(found[0].service_registries[0].registry_arn.as_deref(), Some(registry.arn.as_str()));
    c.agent.stop().await;
}

/// Waits until Cloud Map answers with exactly the two running tasks of `definition`; on the
/// way, whenever a task is seen stopping, Cloud Map must already have dropped it (the task is
/// read first, so a stop seen before the instance list means the deregistration came first).
async fn registered_are_running(c: &Cluster, registry_id: &str, definition: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let tasks = c.tasks("api").await;
        let page = c.discovery.list_instances(registry_id, None, None).await.expect("instances");
        let answered: BTreeSet<String> = page.items.into_iter().map(|i| i.id).collect();
        for t in tasks.iter().filter(|t| t.desired_status == DesiredStatus::Stopped) {
            assert!(!answered.contains(t.id()), "Cloud Map still answers for stopping task {}", t.id());
        }
        let running: BTreeSet<String> = running_of(&tasks, definition).iter().map(|t| t.id().to_owned()).collect();
        if running.len() == 2 && answered == running && steady(&c.service("api").await) {
            return;
        }
        assert!(Instant::now() < deadline, "Cloud Map {answered:?} never matched the running tasks {running:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn tasks_that_keep_failing_to_start_are_retried_with_growing_delays() {
    let c = Cluster::new().await;
    c.sandbox.exit_on_start_everywhere("crash", 1);
    let broken = c.register("flaky", json!([container("crash")])).await;
    c.create("flaky", &broken, 1, json!({})).await;
    let (service, tasks) = c
        .wait(
            "flaky",
            "five attempts",
            |_, _| {},
            |_, t| t.len() >= 5 && t[..5].iter().all(|x| x.last_status == TaskStatus::Stopped),
        )
        .await;
    let mut created: Vec<i64> = tasks.iter().map(|t| t.created_at.0).collect();
    created.sort();
    let gaps: Vec<i64> = created.windows(2).map(|w| w[1] - w[0]).collect();
    // Three failures in a row start the throttle: 1 s, then 2 s, before the next attempts.
    assert!(gaps[2] >= 900 && gaps[3] >= 1900, "launch gaps {gaps:?} ms do not grow");
    assert!(gaps[3] > gaps[2], "launch gaps {gaps:?} ms do not grow");
    let throttled = "(service flaky) is unable to consistently start tasks successfully.";
    assert!(messages(&service).contains(&throttled), "{:#?}", messages(&service));
    assert_eq!(messages(&service).iter().filter(|m| **m == throttled).count(), 1, "said once per run of failures");
    c.agent.stop().await;
}

#[tokio::test]
async fn tasks_carry_the_service_s_providers_tags_and_settings_and_a_forced_deployment_replaces_them() {
    let c = Cluster::new().await;
    c.control
        .put_cluster_capacity_providers("default", vec!["FARGATE".into(), "FARGATE_SPOT".into()], Vec::new())
        .await
        .expect("providers");
    let v1 = c.register("mixed", json!([container("app")])).await;
    let mut input = json!({
        "serviceName": "mixed", "taskDefinition": v1, "desiredCount": 4,
        "networkConfiguration": c.network(),
        "capacityProviderStrategy": [
            {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 1},
        ],
        "propagateTags": "SERVICE", "enableECSManagedTags": true,
        "tags": [{"key": "team", "value": "web"}],
    });
    input["enableExecuteCommand"] = json!(false);
    let input: CreateServiceInput = serde_json::from_value(input).expect("a CreateService input");
    let created = c.control.create_service(input).await.expect("create");
    assert_eq!(created.launch_type, None, "a strategy, not a launch type");
    let (_, tasks) = c.wait_steady("mixed").await;
    let mut providers: Vec<String> = tasks.iter().filter_map(|t| t.capacity_provider_name.clone()).collect();
    providers.sort();
    // base 1 on FARGATE, then the other 3 split 1:1 by weight: FARGATE 2 or 3, SPOT the rest.
    assert_eq!(providers.len(), 4, "{providers:?}");
    let spot = providers.iter().filter(|p| *p == "FARGATE_SPOT").count();
    assert!((1..=2).contains(&spot) && providers.contains(&"FARGATE".to_owned()), "{providers:?}");
    for t in &tasks {
        let tags = t.tags.clone().unwrap_or_default();
        let has = |k: &str, v: &str| tags.iter().any(|tag| tag.key == k && tag.value == v);
        assert!(
            has("team", "web") && has("aws:ecs:serviceName", "mixed") && has("aws:ecs:clusterName", "default"),
            "{tags:?}"
        );
        assert!(!t.enable_execute_command);
    }

    // A forced deployment of the same revision, now with ECS Exec, replaces every task.
    let before: BTreeSet<String> = tasks.iter().map(|t| t.id().to_owned()).collect();
    let updated = c.update("mixed", json!({"forceNewDeployment": true, "enableExecuteCommand": true})).await;
    assert_eq!(updated.deployments.len(), 2, "a new deployment even with the same task definition");
    let new_id = updated.deployments[0].id.clone();
    let (_, tasks) = c
        .wait(
            "mixed",
            "the forced deployment to complete",
            |_, _| {},
            |s, _| steady(s) && s.deployments[0].id == new_id,
        )
        .await;
    let live: Vec<&Task> = tasks.iter().filter(|t| t.desired_status == DesiredStatus::Running).collect();
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| !before.contains(t.id()) && t.enable_execute_command), "{live:#?}");
    c.agent.stop().await;
}
