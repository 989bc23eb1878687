//! The shim outlives whoever started it, and a task outlives its shim: a fresh agent (a new
//! `LinuxSandbox`) adopts what it finds on the host.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use flotilla_sandbox::protocol::{SOCKET_FILE, STATE_FILE};
use flotilla_sandbox::{ContainerState, LinuxSandbox, Sandbox};

#[tokio::test]
async fn the_shim_survives_its_parent_and_records_exits_while_nobody_listens() {
    let env = env();
    let id = task_id("orphan");
    let _guard = env.guard(&id);
    let dir = env.sandbox.task_dir(&id);
    std::fs::create_dir_all(&dir).unwrap();

    // Launch the shim from a throw-away parent, then SIGKILL that parent.
    // `exec sleep` so that killing the parent leaves no stray process behind.
    let script =
        format!("'{SHIM}' --task-dir '{}' --runc runc --cgroup-parent flotilla; exec sleep 1000", dir.display());
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the shim socket", Duration::from_secs(20), || async {
        std::os::unix::net::UnixStream::connect(dir.join(SOCKET_FILE)).ok().map(drop)
    })
    .await;
    let shim = shim_pid(&dir).expect("no shim holds the task lock");
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(process_alive(shim), "the shim died with its parent");
    let ppid = parent_pid(shim).unwrap();
    assert_ne!(ppid, parent.id());
    assert_ne!(ppid, std::process::id(), "the shim must not be the test's child");

    // An agent creates the task through the orphaned shim, starts two containers and goes away.
    {
        let agent = LinuxSandbox::new(config(env.root.path()));
        let short = container("short", &["sh", "-c", "sleep 0.5; echo bye; exit 7"]);
        let long = container("long", &["sleep", "1000"]);
        agent.create_task(task(&id, vec![short, long])).await.unwrap();
        agent.start_container(&id, "long").await.unwrap();
        agent.start_container(&id, "short").await.unwrap();
    }
    // Nobody is connected now; the exit must still be recorded, on disk.
    wait_for("the exit in state.json", Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
        text.contains("\"exitCode\": 7").then_some(())
    })
    .await;

    // A restarted agent finds the task, with the real exit code.
    let agent = LinuxSandbox::new(config(env.root.path()));
    let adopted = agent.adopt_existing().await.unwrap();
    assert_eq!(adopted, vec![id.clone()]);
    assert_eq!(shim_pid(&dir), Some(shim), "the live shim was reused, not replaced");
    let st = agent.state(&id).await.unwrap();
    let short = st.container("short").unwrap();
    assert_eq!((short.state, short.exit_code), (ContainerState::Exited, Some(7)), "{short:?}");
    assert_eq!(st.container("long").unwrap().state, ContainerState::Running);
    assert!(stdout_of(&env, &id, "short").contains("bye"));
    agent.destroy(&id).await.unwrap();
    wait_for("the shim to exit", Duration::from_secs(10), || async { (!process_alive(shim)).then_some(()) }).await;
}

#[tokio::test]
async fn a_killed_shim_is_replaced_and_its_containers_keep_running() {
    let env = env();
    let id = task_id("reshim");
    let _guard = env.guard(&id);
    let dir = env.sandbox.task_dir(&id);
    // Writes a numbered line every 50 ms, also while no shim reads its output.
    let chatty = container("chatty", &["sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.05; done"]);
    env.sandbox.create_task(task(&id, vec![chatty])).await.unwrap();
    let pid = env.sandbox.start_container(&id, "chatty").await.unwrap().pid;
    wait_for("first output", Duration::from_secs(10), || async {
        stdout_of(&env, &id, "chatty").contains("line-3").then_some(())
    })
    .await;

    let old_shim = shim_pid(&dir).unwrap();
    // SAFETY: kill(2) of the shim process found above.
    unsafe { libc::kill(old_shim as i32, libc::SIGKILL) };
    wait_for("the shim to die", Duration::from_secs(10), || async { (!process_alive(old_shim)).then_some(()) }).await;
    let lines_then = stdout_of(&env, &id, "chatty").lines().count();
    tokio::time::sleep(Duration::from_millis(500)).await; // the container writes into the FIFO meanwhile
    assert!(process_alive(pid), "the container died with its shim");

    // A new agent adopts the task: a new shim starts and re-attaches.
    let agent = LinuxSandbox::new(config(env.root.path()));
    assert_eq!(agent.adopt_existing().await.unwrap(), vec![id.clone()]);
    let new_shim = shim_pid(&dir).expect("no new shim");
    assert_ne!(new_shim, old_shim);
    // In the task's own mount namespace, the one its predecessor pinned, with the task's
    // scratch filesystem still mounted there.
    use std::os::unix::fs::MetadataExt;
    let pinned = std::fs::metadata(dir.join("ns/mnt")).unwrap().ino();
    assert_eq!(std::fs::metadata(format!("/proc/{new_shim}/ns/mnt")).unwrap().ino(), pinned);
    assert!(task_mounts(&dir).iter().any(|m| m.mount_point == dir.join("data")));
    let st = agent.state(&id).await.unwrap();
    let c = st.container("chatty").unwrap();
    assert_eq!((c.state, c.pid), (ContainerState::Running, Some(pid)), "{c:?}");
    // Output continues, with nothing lost across the gap: the line numbers are contiguous.
    wait_for("output after adoption", Duration::from_secs(10), || async {
        (stdout_of(&env, &id, "chatty").lines().count() > lines_then + 20).then_some(())
    })
    .await;
    let numbers: Vec<u64> =
        stdout_of(&env, &id, "chatty").lines().map(|l| l.strip_prefix("line-").unwrap().parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "gap in output: {numbers:?}");

    // The process is not the new shim's child: it sees the exit, not the status.
    agent.signal(&id, "chatty", libc::SIGKILL).await.unwrap();
    let c = wait_exited(&agent, &id, "chatty", Duration::from_secs(10)).await;
    assert_eq!(c.exit_code, None, "{c:?}");
    assert!(c.reason.as_deref().unwrap_or("").contains("lost"), "{c:?}");
    agent.destroy(&id).await.unwrap();
    assert!(!dir.exists());
    let left = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!left.contains(dir.to_str().unwrap()), "host mounts left under {}:\n{left}", dir.display());
}

/// The shared scratch filesystem outlives its agent: the task keeps writing into its subvolume
/// after the agent that made it is gone, a new agent on the same root mounts the same
/// filesystem (the loop device the tasks still hold, not a second one), sees the task's
/// subvolume, and deletes it with the task; with nobody left, the filesystem goes.
#[tokio::test]
async fn the_shared_scratch_filesystem_outlives_its_agent() {
    let Env { sandbox: first, root } = env_with(|c| c.shared_scratch = true);
    assert!(first.shared_scratch().is_some(), "no shared btrfs (apt-get install -y btrfs-progs)");
    let id = task_id("scratch-survivor");
    let _guard = TaskGuard(first.task_dir(&id));
    let c = container("writer", &["sh", "-c", "while true; do date >> /log; sleep 0.05; done"]);
    first.create_task(task(&id, vec![c])).await.unwrap();
    first.start_container(&id, "writer").await.unwrap();
    drop(first);

    let mut config = config(root.path());
    config.shared_scratch = true;
    let second = LinuxSandbox::new(config);
    let shared = second.shared_scratch().expect("the second agent has the shared filesystem");
    assert_eq!(shared.subvolumes(), vec![id.clone()]);
    let image = root.path().join(flotilla_sandbox::shared_scratch::IMAGE);
    let devices = Command::new("losetup").arg("-j").arg(&image).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&devices.stdout).lines().count(), 1, "one loop device for the image");
    // Still writing, into its subvolume.
    let log = in_task(&second.task_dir(&id), &second.task_dir(&id).join("data"));
    let size = || {
        let found =
            Command::new("sh").arg("-c").arg(format!("cat $(find {} -name log) | wc -l", log.display())).output();
        String::from_utf8_lossy(&found.unwrap().stdout).trim().parse::<u64>().unwrap_or(0)
    };
    let before = size();
    wait_for("the task to go on writing", Duration::from_secs(20), || async { (size() > before).then_some(()) }).await;
    assert_eq!(second.state(&id).await.unwrap().container("writer").unwrap().state, ContainerState::Running);

    second.destroy(&id).await.unwrap();
    assert!(second.shared_scratch().unwrap().subvolumes().is_empty());
    drop(second);
    wait_for("the shared filesystem's loop device to detach", Duration::from_secs(20), || async {
        let out = Command::new("losetup").arg("-j").arg(&image).output().unwrap();
        out.stdout.is_empty().then_some(())
    })
    .await;
}
