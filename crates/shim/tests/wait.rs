//! `wait_change` through the real shim: a container's start and exit reach a blocked waiter
//! within milliseconds, and nothing else does.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flotilla_sandbox::{ContainerState, Sandbox, SandboxError, TaskPhase, TaskStatus};

/// Far longer than any test here may take: a waiter that returns did so because of a change.
const LONG: Duration = Duration::from_secs(60);
/// How soon after a change a blocked waiter must have its answer.
const PROMPT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_blocked_waiter_learns_of_a_start_and_an_exit_at_once() {
    let env = env();
    let id = task_id("wait");
    let _guard = env.guard(&id);
    let c = container("app", &["sleep", "1000"]);
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    let created = env.sandbox.state(&id).await.unwrap();
    assert_ne!(created.generation, 0);

    // The start.
    let waiter = async {
        let st = env.sandbox.wait_change(&id, created.generation, LONG).await.unwrap();
        (st, Instant::now())
    };
    let starter = async {
        env.sandbox.start_container(&id, "app").await.unwrap();
        Instant::now()
    };
    let ((st, woke), started): ((TaskStatus, Instant), Instant) = tokio::join!(waiter, starter);
    assert!(st.generation > created.generation, "{st:?}");
    assert_eq!(st.container("app").unwrap().state, ContainerState::Running, "{st:?}");
    assert!(woke.saturating_duration_since(started) < PROMPT, "woke {:?} after the start", woke - started);

    // The exit, caused by a signal the shim only learns of through its reaper.
    let running = st.generation;
    let waiter = async {
        let st = env.sandbox.wait_change(&id, running, LONG).await.unwrap();
        (st, Instant::now())
    };
    let killer = async {
        env.sandbox.signal(&id, "app", libc::SIGKILL).await.unwrap();
        Instant::now()
    };
    let ((st, woke), signalled): ((TaskStatus, Instant), Instant) = tokio::join!(waiter, killer);
    let app = st.container("app").unwrap();
    assert_eq!((app.state, app.exit_code), (ContainerState::Exited, Some(137)), "{st:?}");
    let latency = woke.saturating_duration_since(signalled);
    eprintln!("the waiter had the exit {latency:?} after the kill returned");
    assert!(latency < PROMPT, "woke {latency:?} after the kill");
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn a_container_that_ends_by_itself_wakes_the_waiter() {
    let env = env();
    let id = task_id("waitexit");
    let _guard = env.guard(&id);
    let c = container("job", &["sh", "-c", "sleep 0.3; exit 7"]);
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    env.sandbox.start_container(&id, "job").await.unwrap();
    // The job began before the start returned, so it ends before `started + 300 ms`.
    let started = Instant::now();
    let mut seen = env.sandbox.state(&id).await.unwrap().generation;
    let st = loop {
        let st = env.sandbox.wait_change(&id, seen, LONG).await.unwrap();
        if st.container("job").unwrap().state == ContainerState::Exited {
            break st;
        }
        seen = st.generation;
    };
    let after = started.elapsed();
    assert_eq!(st.container("job").unwrap().exit_code, Some(7), "{st:?}");
    assert!(after < Duration::from_millis(300) + PROMPT, "the exit took {after:?} to reach the waiter");
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn without_a_change_the_wait_lasts_its_timeout() {
    let env = env();
    let id = task_id("waitidle");
    let _guard = env.guard(&id);
    env.sandbox.create_task(task(&id, vec![container("app", &["sleep", "1000"])])).await.unwrap();
    env.sandbox.start_container(&id, "app").await.unwrap();

    // Nothing seen yet: at once, whatever the timeout.
    let t = Instant::now();
    let now = env.sandbox.wait_change(&id, 0, LONG).await.unwrap();
    assert!(t.elapsed() < PROMPT, "seen = 0 waited {:?}", t.elapsed());
    assert_ne!(now.generation, 0);

    let timeout = Duration::from_millis(300);
    let t = Instant::now();
    let same = env.sandbox.wait_change(&id, now.generation, timeout).await.unwrap();
    let waited = t.elapsed();
    assert_eq!(same.generation, now.generation, "{same:?}");
    assert_eq!(same.container("app").unwrap().state, ContainerState::Running);
    assert!(waited >= timeout && waited < timeout + PROMPT, "waited {waited:?} for a {timeout:?} timeout");

    // A destroy wakes the waiter (it sees the teardown begin, or the task gone).
    let waiter = async { (env.sandbox.wait_change(&id, now.generation, LONG).await, Instant::now()) };
    let destroyer = async {
        env.sandbox.destroy(&id).await.unwrap();
        Instant::now()
    };
    let ((result, woke), destroyed) = tokio::join!(waiter, destroyer);
    match result {
        Ok(st) => assert_eq!(st.phase, TaskPhase::Destroying, "{st:?}"),
        Err(e) => assert!(matches!(e, SandboxError::TaskNotFound { .. }), "{e}"),
    }
    assert!(woke.saturating_duration_since(destroyed) < PROMPT);
    let gone = env.sandbox.wait_change(&id, now.generation, LONG).await.unwrap_err();
    assert!(matches!(gone, SandboxError::TaskNotFound { .. }), "{gone}");
}

#[tokio::test]
async fn a_new_shim_is_a_change_for_a_waiter_of_the_old_one() {
    let env = env();
    let id = task_id("waitshim");
    let _guard = env.guard(&id);
    let dir = env.sandbox.task_dir(&id);
    env.sandbox.create_task(task(&id, vec![container("app", &["sleep", "1000"])])).await.unwrap();
    env.sandbox.start_container(&id, "app").await.unwrap();
    let before = env.sandbox.state(&id).await.unwrap();
    let old_shim = shim_pid(&dir).unwrap();

    // The shim dies under a blocked waiter: the waiter gets the new shim's state.
    let waiter = async { env.sandbox.wait_change(&id, before.generation, LONG).await.unwrap() };
    let killer = async {
        // SAFETY: kill(2) of the shim process found above.
        unsafe { libc::kill(old_shim as i32, libc::SIGKILL) };
    };
    let t = Instant::now();
    let (st, ()) = tokio::join!(waiter, killer);
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert!(st.generation > before.generation, "{st:?} after {before:?}");
    assert_eq!(st.container("app").unwrap().state, ContainerState::Running, "{st:?}");
    assert_ne!(shim_pid(&dir), Some(old_shim));
    // And the new shim's generation stays put while nothing happens.
    let same = env.sandbox.wait_change(&id, st.generation, Duration::from_millis(200)).await.unwrap();
    assert_eq!(same.generation, st.generation);
    env.sandbox.destroy(&id).await.unwrap();
}
