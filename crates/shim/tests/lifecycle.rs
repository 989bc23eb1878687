//! Container lifecycle through the real shim and runc: output capture, exit codes, signals,
//! exec, and a destroy that leaves nothing behind.

mod common;

use std::time::Duration;

use common::*;
use flotilla_sandbox::protocol::STATE_FILE;
use flotilla_sandbox::{ContainerState, ExecSpec, Sandbox, SandboxError};

#[tokio::test]
async fn output_lands_in_the_log_and_exit_code_is_reported() {
    let env = env();
    let id = task_id("logs");
    let _guard = env.guard(&id);
    let c = container("app", &["sh", "-c", "echo to-stdout; echo to-stderr >&2; echo second line; exit 3"]);
    let before = flotilla_now();
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    let state = env.sandbox.state(&id).await.unwrap();
    assert_eq!(state.container("app").unwrap().state, ContainerState::Created);

    let started = env.sandbox.start_container(&id, "app").await.unwrap();
    assert!(started.pid > 1);
    let status = wait_exited(&env.sandbox, &id, "app", Duration::from_secs(20)).await;
    assert_eq!(status.exit_code, Some(3), "{status:?}");
    assert!(!status.oom_killed);
    assert!(status.started_at.is_some() && status.exited_at >= status.started_at);

    let log = read_log(&env.sandbox.container_log(&id, "app"));
    let lines: Vec<(&str, &str)> = log.iter().map(|r| (r.stream.as_str(), r.line.as_str())).collect();
    assert!(lines.contains(&("stdout", "to-stdout")), "{lines:?}");
    assert!(lines.contains(&("stderr", "to-stderr")), "{lines:?}");
    assert!(lines.contains(&("stdout", "second line")), "{lines:?}");
    for r in &log {
        assert!(r.t >= before && r.t <= flotilla_now(), "timestamp {} out of range", r.t);
    }
    // The exit is on disk, not only in the shim's memory.
    let on_disk = std::fs::read_to_string(env.sandbox.task_dir(&id).join(STATE_FILE)).unwrap();
    assert!(on_disk.contains("\"exitCode\": 3"), "{on_disk}");

    // An ended container starts again in place (a pod's restartPolicy): a new process on the
    // same bundle, its output appended to the same log, its exit recorded afresh.
    let again = env.sandbox.start_container(&id, "app").await.unwrap();
    assert!(again.pid > 1);
    let second = wait_exited(&env.sandbox, &id, "app", Duration::from_secs(20)).await;
    assert_eq!(second.exit_code, Some(3), "{second:?}");
    assert!(second.started_at >= status.exited_at, "{status:?} then {second:?}");
    wait_for("the second run's output", Duration::from_secs(10), || async {
        let log = read_log(&env.sandbox.container_log(&id, "app"));
        (log.iter().filter(|r| r.line == "to-stdout").count() == 2).then_some(())
    })
    .await;
    env.sandbox.destroy(&id).await.unwrap();
}

fn flotilla_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn ignored_sigterm_needs_sigkill() {
    let env = env();
    let id = task_id("sig");
    let _guard = env.guard(&id);
    let c = container("stubborn", &["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"]);
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    env.sandbox.start_container(&id, "stubborn").await.unwrap();
    wait_for("the trap to be installed", Duration::from_secs(10), || async {
        stdout_of(&env, &id, "stubborn").contains("ready").then_some(())
    })
    .await;

    env.sandbox.signal(&id, "stubborn", libc::SIGTERM).await.unwrap();
    // Give SIGTERM every chance to (wrongly) work: still running after the shell would have
    // handled it several times over.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        wait_running(&env.sandbox, &id, "stubborn").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    env.sandbox.signal(&id, "stubborn", libc::SIGKILL).await.unwrap();
    let status = wait_exited(&env.sandbox, &id, "stubborn", Duration::from_secs(10)).await;
    assert_eq!(status.exit_code, Some(137), "{status:?}");
    assert!(!status.oom_killed);
    let err = env.sandbox.signal(&id, "stubborn", libc::SIGKILL).await.unwrap_err();
    assert!(matches!(err, SandboxError::InvalidState { .. }), "{err}");
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn exec_reports_exit_codes_and_times_out() {
    let env = env();
    let id = task_id("exec");
    let _guard = env.guard(&id);
    let c = container("svc", &["sh", "-c", "echo up > /tmp/health; sleep 1000"]);
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    env.sandbox.start_container(&id, "svc").await.unwrap();

    let exec = |argv: &[&str], timeout_ms| ExecSpec { argv: argv.iter().map(|s| s.to_string()).collect(), timeout_ms };
    let ok = wait_for("the health file", Duration::from_secs(10), || async {
        let r = env.sandbox.exec(&id, "svc", exec(&["cat", "/tmp/health"], 5000)).await.unwrap();
        (r.exit_code == Some(0)).then_some(r)
    })
    .await;
    assert_eq!(ok.output, "up\n");
    assert!(!ok.timed_out);

    let failed = env.sandbox.exec(&id, "svc", exec(&["sh", "-c", "exit 4"], 5000)).await.unwrap();
    assert_eq!(failed.exit_code, Some(4));

    let missing = env.sandbox.exec(&id, "svc", exec(&["/no/such/binary"], 5000)).await.unwrap();
    assert_eq!(missing.exit_code, Some(126), "{missing:?}");

    let started = std::time::Instant::now();
    let slow = env.sandbox.exec(&id, "svc", exec(&["sleep", "30"], 500)).await.unwrap();
    assert!(slow.timed_out && slow.exit_code.is_none(), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The health check runs inside the container: same PID namespace, same view.
    let inside = env.sandbox.exec(&id, "svc", exec(&["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], 5000)).await;
    assert!(inside.unwrap().output.contains("sleep 1000"));
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn stats_report_usage_per_container_and_task() {
    let env = env();
    let id = task_id("stats");
    let _guard = env.guard(&id);
    let mut c = container("busy", &["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1000"]);
    c.memory_mib = Some(64);
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    env.sandbox.start_container(&id, "busy").await.unwrap();
    let stats = wait_for("cpu usage to show", Duration::from_secs(20), || async {
        let s = env.sandbox.stats(&id).await.unwrap();
        (s.containers.get("busy").is_some_and(|c| c.cpu_usage_ns > 10_000_000)).then_some(s)
    })
    .await;
    let busy = &stats.containers["busy"];
    assert_eq!(busy.memory_limit_bytes, Some(64 << 20));
    assert!(busy.memory_usage_bytes > 0 && busy.pids >= 1, "{busy:?}");
    assert_eq!(stats.task.memory_limit_bytes, Some(1024 << 20));
    assert!(stats.task.cpu_usage_ns >= busy.cpu_usage_ns);
    // 1 GiB scratch filesystem.
    let gib = 1u64 << 30;
    assert!(stats.ephemeral_storage.size_bytes > gib * 9 / 10 && stats.ephemeral_storage.size_bytes <= gib);
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn destroy_leaves_nothing_behind() {
    let env = env();
    let id = task_id("destroy");
    let _guard = env.guard(&id);
    let mut spec = task(
        &id,
        vec![
            container("a", &["sleep", "1000"]),
            container("b", &["sh", "-c", "sleep 1000 & sleep 1000"]),
            container("never-started", &["true"]),
        ],
    );
    spec.volumes = vec!["shared".into()];
    spec.pid_mode_task = false;
    spec.containers[0].mount_points = vec![flotilla_sandbox::MountPoint {
        source_volume: "shared".into(),
        container_path: "/v".into(),
        read_only: false,
    }];
    env.sandbox.create_task(spec).await.unwrap();
    env.sandbox.start_container(&id, "a").await.unwrap();
    env.sandbox.start_container(&id, "b").await.unwrap();
    let pids: Vec<u32> = {
        let st = env.sandbox.state(&id).await.unwrap();
        st.containers.iter().filter_map(|c| c.pid).collect()
    };
    assert_eq!(pids.len(), 2);
    let dir = env.sandbox.task_dir(&id);
    let shim_pid = shim_pid(&dir).expect("no shim holds the task lock");

    env.sandbox.destroy(&id).await.unwrap();

    assert!(!dir.exists(), "task dir still exists");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(dir.to_str().unwrap()), "mounts left under {}:\n{mountinfo}", dir.display());
    for pid in pids.iter().copied().chain([shim_pid]) {
        wait_for(&format!("pid {pid} to disappear"), Duration::from_secs(10), || async {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let leftover = hierarchy.path().join("flotilla").join(&id);
        assert!(!leftover.exists(), "cgroup {} left behind", leftover.display());
    }
    // Destroy is idempotent.
    env.sandbox.destroy(&id).await.unwrap();
    let err = env.sandbox.state(&id).await.unwrap_err();
    assert!(matches!(err, SandboxError::TaskNotFound { .. }), "{err}");
}

#[tokio::test]
async fn create_is_idempotent_and_failures_are_clean() {
    let env = env();
    let id = task_id("idem");
    let _guard = env.guard(&id);
    let spec = task(&id, vec![container("app", &["sleep", "1000"]), container("broken", &["/no/such/binary"])]);
    let first = env.sandbox.create_task(spec.clone()).await.unwrap();
    let second = env.sandbox.create_task(spec.clone()).await.unwrap();
    assert_eq!(first, second);
    let mut different = spec.clone();
    different.memory_mib = 2048;
    let err = env.sandbox.create_task(different).await.unwrap_err();
    assert!(matches!(err, SandboxError::AlreadyExists { .. }), "{err}");

    // A container whose command does not exist fails to start, visibly.
    let err = env.sandbox.start_container(&id, "broken").await.unwrap_err();
    assert!(matches!(err, SandboxError::Runtime { .. }), "{err}");
    let st = env.sandbox.state(&id).await.unwrap();
    let broken = st.container("broken").unwrap();
    assert_eq!(broken.state, ContainerState::Exited);
    assert!(broken.reason.as_deref().unwrap_or("").starts_with("CannotStartContainerError"), "{broken:?}");
    assert!(broken.reason.as_deref().unwrap_or("").contains("/no/such/binary"), "{broken:?}");
    // The task is unaffected.
    env.sandbox.start_container(&id, "app").await.unwrap();
    wait_running(&env.sandbox, &id, "app").await;
    env.sandbox.destroy(&id).await.unwrap();

    // Specs the image cannot satisfy fail the create and leave nothing behind.
    for (tag, c) in [
        ("user", {
            let mut c = container("app", &["true"]);
            c.user = Some("ghost".into());
            c
        }),
        ("cmd", {
            let mut c = container("app", &["true"]);
            c.entry_point = None;
            c
        }),
        ("cap", {
            let mut c = container("app", &["true"]);
            c.cap_add = vec!["SYS_ADMIN".into()];
            c
        }),
    ] {
        let id = task_id(&format!("bad-{tag}"));
        let _guard = env.guard(&id);
        let err = env.sandbox.create_task(task(&id, vec![c])).await.unwrap_err();
        assert!(matches!(err, SandboxError::InvalidSpec(_)), "{tag}: {err}");
        assert!(!env.sandbox.task_dir(&id).exists(), "{tag}: task dir left behind");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            assert!(!hierarchy.path().join("flotilla").join(&id).exists(), "{tag}: cgroup left behind");
        }
    }
}

/// The OCI runtime's `state` of a container of the task (builtin or runc, whichever made it).
fn runc_status(env: &Env, id: &str, name: &str) -> Option<String> {
    let dir = env.sandbox.task_dir(id);
    let mut cmd = if dir.join("oci").exists() {
        let mut c = std::process::Command::new(SHIM);
        c.arg("oci").arg("--root").arg(dir.join("oci"));
        c
    } else {
        let mut c = std::process::Command::new("runc");
        c.arg("--root").arg(dir.join("runc"));
        c
    };
    let out = cmd.args(["state", name]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["status"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn containers_are_created_ahead_but_run_nothing_before_their_start() {
    let env = env();
    let id = task_id("ahead");
    let _guard = env.guard(&id);
    let mut spec = task(
        &id,
        vec![
            container("first", &["sh", "-c", "touch /v/first-ran; echo first"]),
            container("second", &["sh", "-c", "touch /v/second-ran; echo second"]),
        ],
    );
    spec.volumes = vec!["shared".into()];
    for c in &mut spec.containers {
        c.mount_points = vec![flotilla_sandbox::MountPoint {
            source_volume: "shared".into(),
            container_path: "/v".into(),
            read_only: false,
        }];
    }
    env.sandbox.create_task(spec).await.unwrap();
    // Both are created by runc in the background: their inits exist, their commands do not.
    for name in ["first", "second"] {
        wait_for(&format!("{name} created ahead"), Duration::from_secs(30), || async {
            (runc_status(&env, &id, name).as_deref() == Some("created")).then_some(())
        })
        .await;
    }
    // On the task's scratch filesystem, in the shim's mount namespace: reached through it.
    let volume = env.sandbox.volume_dir(&id, "shared").expect("the volume's directory");
    assert!(!volume.join("first-ran").exists() && !volume.join("second-ran").exists());
    assert_eq!(env.sandbox.state(&id).await.unwrap().container("first").unwrap().state, ContainerState::Created);

    let started = env.sandbox.start_container(&id, "first").await.unwrap();
    assert_eq!(started.timings.get("precreated"), Some(&1), "{:?}", started.timings);
    let status = wait_exited(&env.sandbox, &id, "first", Duration::from_secs(20)).await;
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(stdout_of(&env, &id, "first"), "first\n");
    assert!(volume.join("first-ran").exists());
    // The other one still waits, untouched, until it is started in turn.
    assert!(!volume.join("second-ran").exists());
    assert_eq!(runc_status(&env, &id, "second").as_deref(), Some("created"));
    env.sandbox.start_container(&id, "second").await.unwrap();
    let status = wait_exited(&env.sandbox, &id, "second", Duration::from_secs(20)).await;
    assert_eq!(status.exit_code, Some(0));
    assert!(volume.join("second-ran").exists());
    env.sandbox.destroy(&id).await.unwrap();
}
