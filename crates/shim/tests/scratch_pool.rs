//! The scratch filesystem pool: pooled filesystems are used once, a hand-off that does not
//! check out is never used, and nothing outlives the pool. Privileged: run as root.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use flotilla_sandbox::ephemeral::{self, DirectRunner, HeldMount, PooledScratch};
use flotilla_sandbox::protocol::{Reply, Request, SOCKET_FILE, request_blocking};
use flotilla_sandbox::scratch_pool::POOL_DIR;
use flotilla_sandbox::{LinuxSandbox, Sandbox};

/// Loop devices whose backing file is under `dir`: device -> backing file.
fn loops_under(dir: &Path) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = PathBuf::from(backing.trim().trim_end_matches(" (deleted)"));
        if backing.starts_with(dir) {
            found.insert(name, backing);
        }
    }
    found
}

/// The source device of the task's scratch filesystem (at `<dir>/data`, in the task's mount
/// namespace), if one is mounted there.
fn scratch_source(dir: &Path) -> Option<String> {
    let point = dir.join("data");
    task_mounts(dir).into_iter().rev().find(|m| m.mount_point == point).map(|m| m.source)
}

async fn wait_ready(sandbox: &LinuxSandbox, size: u64, n: usize) {
    let pool = sandbox.scratch_pool().expect("this host has loop devices: the pool must be on");
    wait_for(&format!("{n} pooled {size} GiB filesystems"), Duration::from_secs(30), || async {
        (pool.ready().get(&size).copied().unwrap_or(0) >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pooled_filesystems_serve_one_task_each_and_nothing_outlives_the_pool() {
    let env = env_per_task_scratch();
    let root = env.root.path().to_path_buf();
    // The first task of a size asks for it; the pool then keeps one ready.
    let first = task_id("pool-first");
    let _g1 = env.guard(&first);
    let handle = env.sandbox.create_task(task(&first, vec![container("app", &["true"])])).await.unwrap();
    assert_eq!(handle.timings.get("ephemeral_fs_pooled"), Some(&0), "{:?}", handle.timings);
    wait_ready(&env.sandbox, 1, 1).await;

    let second = task_id("pool-second");
    let _g2 = env.guard(&second);
    let spec =
        task(&second, vec![container("app", &["sh", "-c", "df -k / | tail -1; echo x > /written; cat /written"])]);
    let handle = env.sandbox.create_task(spec).await.unwrap();
    // 2: the pool's detached mount was attached in place.
    assert_eq!(handle.timings.get("ephemeral_fs_pooled"), Some(&2), "{:?}", handle.timings);
    assert!(handle.ephemeral_storage_limited);
    env.sandbox.start_container(&second, "app").await.unwrap();
    let status = wait_exited(&env.sandbox, &second, "app", Duration::from_secs(30)).await;
    let out = stdout_of(&env, &second, "app");
    assert_eq!(status.exit_code, Some(0), "{out}");
    // A 1 GiB filesystem (df's 1K-blocks column), writable.
    let blocks: u64 = out.split_whitespace().nth(1).and_then(|b| b.parse().ok()).unwrap_or(0);
    assert!((900_000..=1_100_000).contains(&blocks), "{out}");
    assert!(out.contains("\nx\n"), "{out}");

    // Each task has its own device, backed by the image in its own directory.
    let dev1 = scratch_source(&env.sandbox.task_dir(&first)).unwrap();
    let dev2 = scratch_source(&env.sandbox.task_dir(&second)).unwrap();
    assert_ne!(dev1, dev2);
    let loops = loops_under(&root);
    let backing2 = &loops[dev2.trim_start_matches("/dev/")];
    assert_eq!(backing2, &env.sandbox.task_dir(&second).join("ephemeral.img"));

    env.sandbox.destroy(&first).await.unwrap();
    env.sandbox.destroy(&second).await.unwrap();
    // Only the pool's own devices are left, all backed by files in the pool directory.
    wait_for("task loop devices to detach", Duration::from_secs(10), || async {
        loops_under(&root).values().all(|b| b.starts_with(root.join(POOL_DIR))).then_some(())
    })
    .await;

    let Env { sandbox, root: dir } = env;
    drop(sandbox);
    wait_for("the pool's loop devices to detach", Duration::from_secs(10), || async {
        loops_under(dir.path()).is_empty().then_some(())
    })
    .await;
    assert!(!dir.path().join(POOL_DIR).exists(), "the pool directory outlived the pool");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(dir.path().to_str().unwrap()), "mounts left:\n{mountinfo}");
}

#[tokio::test]
async fn a_hand_off_that_does_not_check_out_is_not_used() {
    use std::os::fd::AsRawFd;
    let env = env_per_task_scratch();
    let root = env.root.path().to_path_buf();
    // Somebody else's filesystem: formatted, attached, and mounted (detached) by this process.
    let other = root.join("other.img");
    ephemeral::make_image(&other, 1, &DirectRunner).unwrap();
    let other_dev = ephemeral::attach_loop(&other).unwrap();
    let other_mount = flotilla_sandbox::mount::detached_mount(other_dev.path(), "ext4", &["noinit_itable"]).unwrap();
    let not_a_mount = std::fs::File::open("/proc/self/status").unwrap();
    let pid = std::process::id();

    // (case, attach the claimed image to a device of its own?, device named, mount fd, pooled)
    let cases = [
        ("device-backs-another-image", false, Some(other_dev.path().to_path_buf()), Some(other_mount.as_raw_fd()), 0),
        ("no-such-device", false, Some(PathBuf::from("/dev/loop999999")), None, 0),
        ("mount-of-another-filesystem", true, None, Some(other_mount.as_raw_fd()), 1),
        ("descriptor-is-no-mount", true, None, Some(not_a_mount.as_raw_fd()), 1),
    ];
    for (case, attach, device, mount_fd, pooled) in cases {
        let claimed = root.join(format!("{case}.img"));
        ephemeral::make_image(&claimed, 1, &DirectRunner).unwrap();
        let own = attach.then(|| ephemeral::attach_loop(&claimed).unwrap());
        let device = device.unwrap_or_else(|| own.as_ref().unwrap().path().to_path_buf());
        let id = task_id(&format!("handoff-{pooled}"));
        let _guard = env.guard(&id);
        let dir = env.sandbox.task_dir(&id);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Command::new(SHIM).arg("--task-dir").arg(&dir).status().unwrap().success());
        let mount = mount_fd.map(|fd| HeldMount { pid, fd });
        let scratch = PooledScratch { image: claimed.clone(), device: device.clone(), size_gib: 1, mount };
        let spec = task(&id, vec![container("app", &["true"])]);
        let req = Request::Create { spec: Box::new(spec), scratch: Some(scratch) };
        let reply = request_blocking(&dir.join(SOCKET_FILE), &req, Duration::from_secs(60)).unwrap();
        let Reply::Created(report) = reply else { panic!("{case}: {reply:?}") };
        assert_eq!(report.timings.get("ephemeral_fs_pooled"), Some(&pooled), "{case}: {:?}", report.timings);
        // Whatever happened, the task's filesystem is backed by the image in its directory,
        // never by the other one.
        let source = scratch_source(&dir).unwrap();
        assert_ne!(Path::new(&source), other_dev.path(), "{case}");
        if attach {
            assert_eq!(Path::new(&source), device, "{case}");
        }
        assert_eq!(loops_under(&root)[source.trim_start_matches("/dev/")], dir.join("ephemeral.img"), "{case}");
        env.sandbox.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn a_new_pool_removes_what_a_dead_one_left() {
    require_prerequisites();
    let root = tempfile::Builder::new().prefix("flotilla-sandbox-").tempdir_in("/var/tmp").unwrap();
    let pool_dir = root.path().join(POOL_DIR);
    std::fs::create_dir_all(&pool_dir).unwrap();
    let stale = pool_dir.join("20g-1-1.img");
    std::fs::write(&stale, b"left by a killed agent").unwrap();
    let mut config = config(root.path());
    config.shared_scratch = false;
    let sandbox = LinuxSandbox::new(config);
    assert!(!stale.exists(), "the stale image survived a new pool");
    wait_ready(&sandbox, 20, 2).await;
    drop(sandbox);
    wait_for("the pool's loop devices to detach", Duration::from_secs(10), || async {
        loops_under(root.path()).is_empty().then_some(())
    })
    .await;
    assert!(!pool_dir.exists());
}

#[tokio::test]
async fn a_burst_of_starts_keeps_as_many_ready_for_the_next_one() {
    require_prerequisites();
    let root = tempfile::Builder::new().prefix("flotilla-sandbox-").tempdir_in("/var/tmp").unwrap();
    let mut config = config(root.path());
    config.shared_scratch = false;
    config.scratch_pool.default_ready = 1;
    config.scratch_pool.burst_ready = 3;
    let sandbox = LinuxSandbox::new(config);
    wait_ready(&sandbox, 20, 1).await;
    let pool = sandbox.scratch_pool().unwrap();
    // Four starts at once (as RunTask count=4 makes them): the pool then keeps three, its cap,
    // where it kept one.
    let taken: Vec<_> = (0..4).map(|_| pool.take(20)).collect();
    assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1, "only one was ready for the first burst");
    drop(taken);
    wait_ready(&sandbox, 20, 3).await;
    drop(sandbox);
    wait_for("the pool's loop devices to detach", Duration::from_secs(10), || async {
        loops_under(root.path()).is_empty().then_some(())
    })
    .await;
}
