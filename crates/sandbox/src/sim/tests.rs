//! `SimSandbox` itself: its semantics are what supervisor tests rely on.

use std::time::Instant;

use super::*;
use crate::task::ContainerSpec;

const SIGTERM: i32 = 15;

fn spec(task_id: &str, containers: &[&str]) -> TaskSpec {
    TaskSpec {
        task_id: task_id.to_string(),
        cpu_units: 256,
        memory_mib: 512,
        pids_limit: None,
        pid_mode_task: false,
        ephemeral_storage_gib: None,
        hostname: None,
        volumes: Vec::new(),
        efs_volumes: Vec::new(),
        containers: containers.iter().map(|c| ContainerSpec::new(*c, vec!["/layers/busybox".into()])).collect(),
    }
}

fn state_of(sim: &SimSandbox, task: &str, container: &str) -> ContainerStatus {
    sim.status(task).unwrap().container(container).unwrap().clone()
}

#[tokio::test]
async fn create_start_exit() {
    let sim = SimSandbox::new();
    let handle = sim.create_task(spec("t1", &["app", "sidecar"])).await.unwrap();
    assert_eq!(handle.network, NetworkAttachment::NetNs { path: sim.network_namespace("t1") });
    let st = sim.state("t1").await.unwrap();
    assert_eq!(st.phase, TaskPhase::Ready);
    assert!(st.containers.iter().all(|c| c.state == ContainerState::Created), "{st:?}");
    assert_ne!(st.generation, 0);
    // Idempotent with the same spec, refused with another one; invalid specs refused.
    sim.create_task(spec("t1", &["app", "sidecar"])).await.unwrap();
    let other = sim.create_task(spec("t1", &["app"])).await.unwrap_err();
    assert!(matches!(other, SandboxError::AlreadyExists { .. }), "{other}");
    let invalid = sim.create_task(spec("t2", &[])).await.unwrap_err();
    assert!(matches!(invalid, SandboxError::InvalidSpec(_)), "{invalid}");
    // Simulated images have no layers; that alone is no reason to refuse.
    let mut layerless = spec("t3", &["app"]);
    layerless.containers[0].layers.clear();
    sim.create_task(layerless).await.unwrap();

    let started = sim.start_container("t1", "app").await.unwrap();
    let app = state_of(&sim, "t1", "app");
    assert_eq!((app.state, app.pid), (ContainerState::Running, Some(started.pid)));
    assert!(app.started_at.is_some());
    let again = sim.start_container("t1", "app").await.unwrap_err();
    assert!(matches!(again, SandboxError::InvalidState { .. }), "{again}");
    let missing = sim.start_container("t1", "nope").await.unwrap_err();
    assert!(matches!(missing, SandboxError::NotFound { .. }), "{missing}");
    let no_task = sim.start_container("t9", "app").await.unwrap_err();
    assert!(matches!(no_task, SandboxError::TaskNotFound { .. }), "{no_task}");

    let before = sim.status("t1").unwrap().generation;
    assert!(sim.exit("t1", "app", 3));
    let app = state_of(&sim, "t1", "app");
    assert_eq!((app.state, app.exit_code, app.pid), (ContainerState::Exited, Some(3), None));
    assert!(!app.oom_killed && app.exited_at >= app.started_at);
    assert!(sim.status("t1").unwrap().generation > before);
    assert!(!sim.exit("t1", "app", 4), "an exited container cannot exit again");
    assert!(!sim.exit("t1", "sidecar", 0), "a created container is not running");
    assert_eq!(state_of(&sim, "t1", "app").exit_code, Some(3));

    sim.start_container("t1", "sidecar").await.unwrap();
    assert!(sim.oom("t1", "sidecar"));
    let sidecar = state_of(&sim, "t1", "sidecar");
    assert_eq!((sidecar.exit_code, sidecar.oom_killed), (Some(137), true));
    assert_eq!(sidecar.reason.as_deref(), Some(OOM_REASON));

    assert_eq!(sim.adopt_existing().await.unwrap(), ["t1", "t3"]);
    sim.destroy("t1").await.unwrap();
    sim.destroy("t1").await.unwrap();
    assert_eq!(sim.tasks(), ["t3"]);
    let gone = sim.state("t1").await.unwrap_err();
    assert!(matches!(gone, SandboxError::TaskNotFound { .. }), "{gone}");
}

#[tokio::test]
async fn wait_change_wakes_on_changes_and_times_out_otherwise() {
    let sim = SimSandbox::new();
    sim.create_task(spec("t1", &["app"])).await.unwrap();
    // Nothing seen yet: at once.
    let first = tokio::time::timeout(Duration::from_secs(5), sim.wait_change("t1", 0, Duration::from_secs(600)))
        .await
        .expect("seen = 0 must return at once")
        .unwrap();
    assert_ne!(first.generation, 0);

    // No change: the same generation, after the timeout.
    let t = Instant::now();
    let same = sim.wait_change("t1", first.generation, Duration::from_millis(50)).await.unwrap();
    assert_eq!(same.generation, first.generation);
    assert!(t.elapsed() >= Duration::from_millis(50), "{:?}", t.elapsed());

    // A start, then an exit, each wake a waiter that is already blocked.
    for step in 0..2 {
        let seen = sim.status("t1").unwrap().generation;
        let waiter = tokio::spawn({
            let sim = sim.clone();
            async move { sim.wait_change("t1", seen, Duration::from_secs(600)).await }
        });
        tokio::task::yield_now().await;
        // Another task's change is not this one's.
        sim.create_task(spec(&format!("other{step}"), &["x"])).await.unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woke for another task's change");
        if step == 0 {
            sim.start_container("t1", "app").await.unwrap();
        } else {
            sim.exit("t1", "app", 0);
        }
        let st = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter must wake on the change")
            .unwrap()
            .unwrap();
        assert!(st.generation > seen);
        let want = if step == 0 { ContainerState::Running } else { ContainerState::Exited };
        assert_eq!(st.container("app").unwrap().state, want);
    }

    // A task that vanishes under a waiter: TaskNotFound.
    let seen = sim.status("t1").unwrap().generation;
    let waiter = tokio::spawn({
        let sim = sim.clone();
        async move { sim.wait_change("t1", seen, Duration::from_secs(600)).await }
    });
    tokio::task::yield_now().await;
    sim.lose("t1");
    let err = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, SandboxError::TaskNotFound { .. }), "{err}");
}

#[tokio::test]
async fn fail_next_fails_exactly_the_next_call() {
    let sim = SimSandbox::new();
    sim.fail_next(SimOp::Create, "no space");
    let err = sim.create_task(spec("t1", &["a", "b"])).await.unwrap_err();
    assert!(matches!(&err, SandboxError::Runtime { message, .. } if message == "no space"), "{err}");
    assert!(sim.tasks().is_empty());
    sim.create_task(spec("t1", &["a", "b"])).await.unwrap();

    // A failed start leaves the container exited, as the shim records it.
    sim.fail_next(SimOp::Start, "exec format error");
    sim.start_container("t1", "a").await.unwrap_err();
    let a = state_of(&sim, "t1", "a");
    assert_eq!((a.state, a.exit_code), (ContainerState::Exited, None));
    assert!(a.reason.unwrap().starts_with("CannotStartContainerError: "));
    sim.start_container("t1", "b").await.unwrap();

    sim.fail_next(SimOp::Signal, "runc kill failed");
    sim.signal("t1", "b", SIGTERM).await.unwrap_err();
    assert_eq!(state_of(&sim, "t1", "b").state, ContainerState::Running);

    sim.fail_next(SimOp::Exec, "runc exec failed");
    sim.exec("t1", "b", ExecSpec { argv: vec!["true".into()], timeout_ms: 1000 }).await.unwrap_err();
    sim.exec("t1", "b", ExecSpec { argv: vec!["true".into()], timeout_ms: 1000 }).await.unwrap();

    // Queued: both observations fail, the third works.
    sim.fail_next(SimOp::State, "shim gone");
    sim.fail_next(SimOp::State, "shim gone");
    sim.state("t1").await.unwrap_err();
    sim.wait_change("t1", 0, Duration::from_secs(1)).await.unwrap_err();
    sim.state("t1").await.unwrap();

    sim.fail_next(SimOp::Destroy, "device busy");
    sim.destroy("t1").await.unwrap_err();
    assert_eq!(sim.tasks(), ["t1"], "a failed destroy leaves the task");
    sim.destroy("t1").await.unwrap();
    assert!(sim.tasks().is_empty());
}

#[tokio::test]
async fn lose_makes_the_task_vanish() {
    let sim = SimSandbox::new();
    sim.create_task(spec("t1", &["app"])).await.unwrap();
    sim.create_task(spec("t2", &["app"])).await.unwrap();
    sim.start_container("t1", "app").await.unwrap();
    sim.lose("t1");
    for err in [
        sim.state("t1").await.unwrap_err(),
        sim.wait_change("t1", 0, Duration::from_secs(1)).await.unwrap_err(),
        sim.signal("t1", "app", SIGTERM).await.unwrap_err(),
    ] {
        assert!(matches!(err, SandboxError::TaskNotFound { .. }), "{err}");
    }
    // A fresh agent over the same sandbox adopts only what exists.
    let fresh: Arc<dyn Sandbox> = sim.clone();
    assert_eq!(fresh.adopt_existing().await.unwrap(), ["t2"]);
    sim.destroy("t1").await.unwrap();
}

#[tokio::test]
async fn stop_semantics_and_the_operation_log() {
    let sim = SimSandbox::new();
    // Set before the task exists, as a test of the agent must.
    sim.ignore_sigterm("t1", "stubborn");
    sim.create_task(spec("t1", &["web", "stubborn"])).await.unwrap();
    sim.start_container("t1", "web").await.unwrap();
    sim.start_container("t1", "stubborn").await.unwrap();

    sim.signal("t1", "stubborn", SIGTERM).await.unwrap();
    assert_eq!(state_of(&sim, "t1", "stubborn").state, ContainerState::Running);
    sim.signal("t1", "web", SIGTERM).await.unwrap();
    assert_eq!(state_of(&sim, "t1", "web").exit_code, Some(143));
    sim.signal("t1", "stubborn", SIGKILL).await.unwrap();
    assert_eq!(state_of(&sim, "t1", "stubborn").exit_code, Some(137));
    let err = sim.signal("t1", "web", SIGKILL).await.unwrap_err();
    assert!(matches!(err, SandboxError::InvalidState { .. }), "{err}");
    let err = sim.exec("t1", "web", ExecSpec { argv: vec!["true".into()], timeout_ms: 1 }).await.unwrap_err();
    assert!(matches!(err, SandboxError::InvalidState { .. }), "{err}");
    sim.destroy("t1").await.unwrap();

    let (task, c) = ("t1".to_string(), |n: &str| n.to_string());
    assert_eq!(
        sim.log(),
        [
            SimEvent::Create { task: task.clone() },
            SimEvent::Start { task: task.clone(), container: c("web") },
            SimEvent::Start { task: task.clone(), container: c("stubborn") },
            SimEvent::Signal { task: task.clone(), container: c("stubborn"), signal: SIGTERM },
            SimEvent::Signal { task: task.clone(), container: c("web"), signal: SIGTERM },
            SimEvent::Signal { task: task.clone(), container: c("stubborn"), signal: SIGKILL },
            SimEvent::Signal { task: task.clone(), container: c("web"), signal: SIGKILL },
            SimEvent::Exec { task: task.clone(), container: c("web"), argv: vec!["true".into()] },
            SimEvent::Destroy { task },
        ]
    );
}

#[tokio::test]
async fn exit_on_start_makes_a_one_shot_container() {
    let sim = SimSandbox::new();
    sim.exit_on_start("t1", "init", 0);
    sim.exit_on_start("t1", "broken", 1);
    sim.create_task(spec("t1", &["init", "broken", "app"])).await.unwrap();
    for (name, code) in [("init", 0), ("broken", 1)] {
        let seen = sim.status("t1").unwrap().generation;
        sim.start_container("t1", name).await.unwrap();
        let c = sim.wait_change("t1", seen, Duration::from_secs(5)).await.unwrap().container(name).unwrap().clone();
        assert_eq!((c.state, c.exit_code), (ContainerState::Exited, Some(code)), "{c:?}");
        assert!(c.started_at.is_some() && c.reason.is_none(), "{c:?}");
    }
    sim.start_container("t1", "app").await.unwrap();
    assert_eq!(state_of(&sim, "t1", "app").state, ContainerState::Running);
}

#[tokio::test]
async fn exec_results_logs_and_files() {
    let sim = SimSandbox::new();
    sim.create_task(spec("t1", &["app"])).await.unwrap();
    sim.start_container("t1", "app").await.unwrap();
    let check = || sim.exec("t1", "app", ExecSpec { argv: vec!["check".into()], timeout_ms: 1000 });
    assert_eq!(check().await.unwrap().exit_code, Some(0));
    let unhealthy = ExecResult { exit_code: Some(1), timed_out: false, output: "down\n".into() };
    sim.set_exec_result("t1", "app", unhealthy.clone());
    assert_eq!(check().await.unwrap(), unhealthy);

    assert!(sim.network_namespace("t1").is_file());
    let resolv = sim.resolv_conf("t1");
    assert!(std::fs::read_to_string(&resolv).unwrap().starts_with("nameserver "));
    let log = sim.container_log("t1", "app");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    sim.write_log("t1", "app", "hello \"world\"").unwrap();
    sim.write_log_stream("t1", "app", "stderr", "oops").unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["stream"].as_str(), lines[0]["line"].as_str()), (Some("stdout"), Some("hello \"world\"")));
    assert_eq!((lines[1]["stream"].as_str(), lines[1]["line"].as_str()), (Some("stderr"), Some("oops")));
    assert!(lines[0]["t"].as_u64().unwrap() > 1_600_000_000_000);

    // Destroy removes every trace, logs included; dropping the sim removes its directory.
    sim.destroy("t1").await.unwrap();
    assert!(!log.exists() && !resolv.exists());
    let root = sim.root().to_path_buf();
    drop(sim);
    assert!(!root.exists());
}

#[tokio::test]
async fn fail_task_fails_one_task_until_healed() {
    let sim = SimSandbox::new();
    sim.create_task(spec("t1", &["app"])).await.unwrap();
    sim.create_task(spec("t2", &["app"])).await.unwrap();
    sim.fail_next(SimOp::Destroy, "one-off");
    sim.fail_task("t1", SimOp::Destroy, "device busy");
    for _ in 0..3 {
        let err = sim.destroy("t1").await.unwrap_err();
        assert!(matches!(&err, SandboxError::Runtime { message, .. } if message == "device busy"), "{err}");
    }
    assert_eq!(sim.tasks(), ["t1", "t2"], "a failed destroy leaves the task");
    // Other tasks are not affected, and the queued one-off failure is still there for them.
    sim.destroy("t2").await.unwrap_err();
    sim.destroy("t2").await.unwrap();
    sim.heal("t1");
    sim.destroy("t1").await.unwrap();
    assert!(sim.tasks().is_empty());
    let destroys = sim.log().iter().filter(|e| matches!(e, SimEvent::Destroy { .. })).count();
    assert_eq!(destroys, 6, "failed calls are logged too");
}
