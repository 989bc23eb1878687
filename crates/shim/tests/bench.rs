//! What a task sandbox costs to create, against the floor: `runc run` of the same container
//! config (same rootfs, mounts, seccomp, capabilities) without the task around it.
//! Run with `--nocapture` to see the table; the test itself only checks that both paths work.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use flotilla_sandbox::Sandbox;

const ROUNDS: usize = 5;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::test]
async fn task_sandbox_cost_against_plain_runc_run() {
    let env = env();
    let mut rows: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut push = |k: &str, v: u64| rows.entry(k.to_string()).or_default().push(v);
    let bench_root = tempfile::tempdir_in("/var/tmp").unwrap();

    for round in 0..ROUNDS {
        let id = task_id("bench");
        let _guard = env.guard(&id);
        let t = Instant::now();
        let handle = env.sandbox.create_task(task(&id, vec![container("app", &["true"])])).await.unwrap();
        let create_total = t.elapsed().as_micros() as u64;
        let phases: u64 = handle.timings.values().sum();
        push("A  create_task total (agent side)", create_total);
        push("A1   shim launch + socket round trips", create_total.saturating_sub(phases));
        for (k, v) in &handle.timings {
            push(&format!("A2   {k}"), *v);
        }
        let t = Instant::now();
        let started = env.sandbox.start_container(&id, "app").await.unwrap();
        push("B  start_container total", t.elapsed().as_micros() as u64);
        for (k, v) in &started.timings {
            push(&format!("B1   {k}"), *v);
        }
        let st = wait_exited(&env.sandbox, &id, "app", Duration::from_secs(20)).await;
        assert_eq!(st.exit_code, Some(0), "{st:?}");

        // The peer: runc run of this container's own config, minus the task (new namespaces
        // instead of the task's, its own cgroup).
        let dir = env.sandbox.task_dir(&id);
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("containers/app/config.json")).unwrap()).unwrap();
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            ns.as_object_mut().unwrap().remove("path");
        }
        config["linux"]["cgroupsPath"] = format!("/flotilla-bench/{id}").into();
        let bundle = bench_root.path().join(format!("bundle-{round}"));
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        let t = Instant::now();
        // In the task's mount namespace, where its root filesystem is mounted (and where the
        // shim runs its runtime: the same copy of the same mount table).
        let out = in_task_mounts(&mut Command::new("runc"), &dir)
            .arg("--root")
            .arg(bench_root.path().join("runc"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("bench-{round}"))
            .output()
            .unwrap();
        push("R  runc run (create+start+wait+delete)", t.elapsed().as_micros() as u64);
        assert!(out.status.success(), "runc run failed: {}", String::from_utf8_lossy(&out.stderr));

        let t = Instant::now();
        env.sandbox.destroy(&id).await.unwrap();
        push("D  destroy", t.elapsed().as_micros() as u64);
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("flotilla-bench"));
    }

    eprintln!("\nmedian of {ROUNDS} rounds, milliseconds (one busybox container running `true`):");
    for (k, v) in rows {
        eprintln!("  {k:<45} {:>8.1}", ms(median(v)));
    }
}

/// An interactive exec of `true` (request, descriptors, exit status) through the shim with
/// each runtime, against `runc exec` of the same running container (a runc-made task's state).
/// Run with `--nocapture` to see the table; the test itself only checks that all three work.
#[tokio::test]
async fn interactive_exec_against_runc_exec() {
    let mut rows: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for runtime in ["builtin", "runc"] {
        let root = tempfile::Builder::new().prefix("flotilla-sandbox-").tempdir_in("/var/tmp").unwrap();
        let mut cfg = config(root.path());
        cfg.runtime = runtime.into();
        let sandbox = flotilla_sandbox::LinuxSandbox::new(cfg);
        let id = task_id(&format!("xbench-{runtime}"));
        let _guard = TaskGuard(sandbox.task_dir(&id));
        sandbox.create_task(task(&id, vec![container("app", &["sleep", "1000"])])).await.unwrap();
        sandbox.start_container(&id, "app").await.unwrap();
        for round in 0..=ROUNDS * 4 {
            let spec = flotilla_sandbox::InteractiveSpec { argv: vec!["true".into()], tty: false, cols: 0, rows: 0 };
            let t = Instant::now();
            let p = sandbox.exec_interactive(&id, "app", spec).await.unwrap();
            assert_eq!(p.exit.await.unwrap(), 0);
            // The first round warms the page cache.
            if round > 0 {
                rows.entry(format!("E  exec_interactive `true`, {runtime}"))
                    .or_default()
                    .push(t.elapsed().as_micros() as u64);
            }
            if runtime == "runc" {
                let t = Instant::now();
                let out = Command::new("runc")
                    .arg("--root")
                    .arg(sandbox.task_dir(&id).join("runc"))
                    .args(["exec", "app", "true"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "runc exec failed: {}", String::from_utf8_lossy(&out.stderr));
                if round > 0 {
                    rows.entry("R  runc exec `true` (same container)".into())
                        .or_default()
                        .push(t.elapsed().as_micros() as u64);
                }
            }
        }
        sandbox.destroy(&id).await.unwrap();
    }
    eprintln!("\nmedian of {} rounds, milliseconds:", ROUNDS * 4);
    for (k, v) in rows {
        eprintln!("  {k:<45} {:>8.1}", ms(median(v)));
    }
}
