//! Each task's mounts live in its shim's own mount namespace (`flotilla_sandbox::mntns`): the
//! host's table holds only two pins per task, and no task's namespace holds another's mounts,
//! so a new mount namespace (every container's) copies a table that does not grow with the
//! number of tasks.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use flotilla_sandbox::Sandbox;

fn host_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = flotilla_sandbox::mount::mountinfo()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_tasks_mounts_are_in_its_shims_namespace_and_the_host_keeps_two_pins() {
    require_prerequisites();
    let env = env();
    let (a, b) = (task_id("mnt-a"), task_id("mnt-b"));
    let (_ga, _gb) = (env.guard(&a), env.guard(&b));
    for id in [&a, &b] {
        let c = container("app", &["sleep", "30"]);
        env.sandbox.create_task(task(id, vec![c, container("side", &["sleep", "30"])])).await.unwrap();
        env.sandbox.start_container(id, "app").await.unwrap();
    }
    let (dir_a, dir_b) = (env.sandbox.task_dir(&a), env.sandbox.task_dir(&b));

    // The host: the pins of the shim's mount namespace and of the network namespace, nothing else.
    assert_eq!(host_mounts_under(&dir_a), vec![dir_a.join("ns/mnt"), dir_a.join("ns/net")]);

    // The task's namespace: its scratch filesystem, one root per container, its namespace pins,
    // and nothing of the other task.
    let mounts: Vec<PathBuf> = task_mounts(&dir_a).into_iter().map(|m| m.mount_point).collect();
    for expected in ["data", "containers/app/rootfs", "containers/side/rootfs", "ns/net", "ns/uts", "ns/ipc"] {
        assert!(mounts.contains(&dir_a.join(expected)), "{expected} not mounted in the task's namespace: {mounts:?}");
    }
    assert!(!mounts.iter().any(|m| m.starts_with(&dir_b)), "task b's mounts in task a's namespace: {mounts:?}");
    assert!(!mounts.contains(&dir_a.join("ns/mnt")), "the namespace pins itself: {mounts:?}");

    // The host's pin is the shim's namespace, and the network namespace the agent opens there is
    // the one the container runs in.
    let shim = shim_pid(&dir_a).unwrap();
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(dir_a.join("ns/mnt").to_str().unwrap()), ino(&format!("/proc/{shim}/ns/mnt")));
    let pid = env.sandbox.state(&a).await.unwrap().container("app").unwrap().pid.unwrap();
    let netns = env.sandbox.network_namespace(&a);
    assert_eq!(ino(netns.to_str().unwrap()), ino(&format!("/proc/{pid}/ns/net")));

    // Teardown takes the host's pins with it.
    env.sandbox.destroy(&a).await.unwrap();
    assert_eq!(host_mounts_under(&dir_a), Vec::<PathBuf>::new());
    assert!(!dir_a.exists());
    wait_for("the task's shim to exit", Duration::from_secs(10), || async { (!process_alive(shim)).then_some(()) })
        .await;
    env.sandbox.destroy(&b).await.unwrap();
    assert_eq!(host_mounts_under(env.root.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn without_a_template_the_mounts_stay_in_the_hosts_namespace() {
    require_prerequisites();
    let env = env_with(|c| c.own_mount_namespaces = false);
    let id = task_id("mnt-host");
    let _guard = env.guard(&id);
    env.sandbox.create_task(task(&id, vec![container("app", &["true"])])).await.unwrap();
    let dir = env.sandbox.task_dir(&id);
    let host = host_mounts_under(&dir);
    assert!(host.contains(&dir.join("containers/app/rootfs")) && host.contains(&dir.join("data")), "{host:?}");
    assert!(!dir.join("ns/mnt").exists());
    assert_eq!(env.sandbox.volume_dir(&id, "v"), Some(dir.join("data/volumes/v")));
    env.sandbox.destroy(&id).await.unwrap();
    assert_eq!(host_mounts_under(&dir), Vec::<PathBuf>::new());
}
