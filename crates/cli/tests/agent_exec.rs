//! The agent as an exec target, without root: the real store, control plane, in-process host
//! API and agent loop over `SimSandbox`. A task the agent runs is found by its ARN; the
//! simulated host refuses clearly after the checks a real one makes; unknown tasks and
//! containers get their own errors. (The real thing, a shell in a container, is in
//! crates/shim/tests/exec.rs and crates/agent/tests/exec_relay.rs; through the API in
//! crates/cli/tests/exec*.rs.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_control::{Control, CreateClusterInput, Identity, LocalHostApi, RunTaskInput};
use flotilla_host::exec::{ExecError, ExecRequest, ExecTarget, ExecTargets};
use flotilla_host::{HostApi, HostSpec};
use flotilla_sandbox::SimSandbox;
use flotilla_store::EmbeddedStore;
use flotilla_types::task::{AwsvpcConfiguration, NetworkConfiguration, TaskStatus};
use flotilla_types::task_definition::TaskDefinitionSpec;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_simulated_host_finds_its_task_and_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let control =
        Arc::new(Control::new(store, Identity { region: "us-east-1".into(), account: "123456789012".into() }));
    control.ensure_default_network().await.unwrap();
    control.create_cluster(CreateClusterInput::default()).await.unwrap();
    let subnet = control.describe_subnets(&[], &[]).await.unwrap().into_iter().find(|s| s.default_for_az).unwrap();
    let spec = HostSpec {
        id: "host-a".into(),
        availability_zone: subnet.availability_zone.clone(),
        cpu: 4096,
        memory: 8192,
        ..Default::default()
    };
    let api: Arc<dyn HostApi> = Arc::new(LocalHostApi::new(control.clone(), None));
    let agent = flotilla_agent::sim::agent(api, spec, SimSandbox::new(), "us-east-1", dir.path().join("agent"));
    // As `flotilla up` registers its agents.
    let targets = ExecTargets::new();
    targets.register(agent.host_id(), agent.clone() as Arc<dyn ExecTarget>);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.clone().run(async move { drop(stopped.await) }));
    // The task is placed on a registered host: wait for the agent to register this one.
    let deadline = Instant::now() + DEADLINE;
    while !control.hosts().await.unwrap().iter().any(|h| h.spec.id == "host-a") {
        assert!(Instant::now() < deadline, "the agent never registered its host");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let definition: TaskDefinitionSpec = serde_json::from_value(json!({
        "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "busybox:latest", "essential": true}],
    }))
    .unwrap();
    let arn = control.register_task_definition(definition, None).await.unwrap().0.task_definition_arn;
    let input = RunTaskInput {
        task_definition: arn,
        count: Some(1),
        launch_type: Some("FARGATE".into()),
        network_configuration: Some(NetworkConfiguration {
            awsvpc_configuration: Some(AwsvpcConfiguration { subnets: vec![subnet.id], ..Default::default() }),
        }),
        ..Default::default()
    };
    let (tasks, failures) = control.run_task(input).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let task_arn = tasks[0].task_arn.clone();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = control.all_tasks().await.unwrap();
        if all.iter().any(|r| r.task.task_arn == task_arn && r.task.last_status == TaskStatus::Running) {
            break;
        }
        assert!(Instant::now() < deadline, "the task never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let target = targets.get("host-a").expect("registered");
    let request = |task_arn: &str, container: &str| ExecRequest {
        task_arn: task_arn.into(),
        container: container.into(),
        command: vec!["/bin/sh".into()],
        tty: true,
        size: None,
    };
    match target.exec(request(&task_arn, "app")).await {
        Err(ExecError::Failed(message)) => assert!(message.contains("simulated host"), "{message}"),
        other => panic!("expected a clear refusal, got {other:?}"),
    }
    let err = target.exec(request(&task_arn, "nope")).await.unwrap_err();
    assert_eq!(err, ExecError::ContainerNotFound("nope".into()));
    let other = task_arn.replace(tasks[0].id(), "0123456789abcdef0123456789abcdef");
    assert_eq!(target.exec(request(&other, "app")).await.unwrap_err(), ExecError::TaskNotFound(other.clone()));
    let mut empty = request(&task_arn, "app");
    empty.command.clear();
    assert!(matches!(target.exec(empty).await.unwrap_err(), ExecError::Failed(_)));

    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, running).await.unwrap().unwrap();
}
