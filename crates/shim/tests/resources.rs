//! Limits and storage: OOM kills, rlimits, read-only roots, task volumes, the size-limited
//! scratch filesystem, and the optional init process.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use flotilla_sandbox::{MountPoint, Sandbox, Ulimit, VolumeFrom};

#[tokio::test]
async fn exceeding_the_memory_limit_is_an_oom_kill() {
    let env = env();
    // The shell keeps the whole command substitution in memory: 200 MiB against a 32 MiB limit.
    let mut c = container("hog", &["sh", "-c", "x=$(head -c 200m /dev/zero | tr '\\0' a); echo survived"]);
    c.memory_mib = Some(32);
    let (status, out) = run_once(&env, "oom", c).await;
    assert!(status.oom_killed, "{status:?} / {out}");
    assert_eq!(status.exit_code, Some(137), "{status:?}");
    assert!(status.reason.as_deref().unwrap_or("").starts_with("OutOfMemoryError"), "{status:?}");
    assert!(!out.contains("survived"));
}

#[tokio::test]
async fn a_normal_exit_is_not_an_oom_kill() {
    let env = env();
    let mut c = container("fine", &["sh", "-c", "x=$(head -c 1m /dev/zero | tr '\\0' a); echo ${#x}"]);
    c.memory_mib = Some(32);
    let (status, out) = run_once(&env, "nooom", c).await;
    assert_eq!((status.exit_code, status.oom_killed), (Some(0), false), "{status:?}");
    assert_eq!(out.trim(), "1048576");
}

/// The memory cgroup a process is in (v1), as /proc/PID/cgroup names it.
fn memory_cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.to_string())
    })
}

/// A task's only container, with no memory limit of its own, counts in its task's memory
/// cgroup rather than one of its own (each memory cgroup costs the kernel state for every
/// mounted filesystem); its usage still reads per container, and the task's limit OOM-kills
/// it as the container's own limit would. A task of two keeps one per container. The layout
/// is the built-in runtime's on cgroup v1 (runc and v2 give every container its own).
#[tokio::test]
async fn a_lone_container_without_a_memory_limit_shares_its_task_memory_cgroup() {
    let env = env();
    let builtin_v1 = flotilla_sandbox::cgroup::Cgroups::detect("flotilla").unwrap().version() == 1
        && std::env::var("FLOTILLA_RUNTIME").map_or(true, |r| r != "runc");
    let id = task_id("lone");
    let _guard = env.guard(&id);
    // The agent repeats the task's limit on a container that has none of its own.
    let mut main = container("main", &["sleep", "1000"]);
    main.memory_mib = Some(1024);
    env.sandbox.create_task(task(&id, vec![main])).await.unwrap();
    env.sandbox.start_container(&id, "main").await.unwrap();
    let pid = wait_running(&env.sandbox, &id, "main").await.pid.unwrap();
    let stats = env.sandbox.stats(&id).await.unwrap();
    let main = &stats.containers["main"];
    assert!(main.pids >= 1 && main.memory_usage_bytes > 0, "{main:?}");
    if builtin_v1 {
        assert_eq!(main.memory_limit_bytes, Some(1024 << 20), "the task's limit is the container's: {main:?}");
        assert_eq!(memory_cgroup_of(pid).as_deref(), Some(format!("/flotilla/{id}").as_str()));
        assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory/flotilla/{id}/main")).exists());
        // cpu keeps a level (the container's shares weigh it against its siblings).
        assert!(std::path::Path::new(&format!("/sys/fs/cgroup/cpu/flotilla/{id}/main")).is_dir());
    }
    env.sandbox.destroy(&id).await.unwrap();

    let two = task_id("pair");
    let _guard2 = env.guard(&two);
    let pair = vec![container("a", &["sleep", "1000"]), container("b", &["sleep", "1000"])];
    env.sandbox.create_task(task(&two, pair)).await.unwrap();
    for name in ["a", "b"] {
        env.sandbox.start_container(&two, name).await.unwrap();
        let pid = wait_running(&env.sandbox, &two, name).await.pid.unwrap();
        if builtin_v1 {
            assert_eq!(memory_cgroup_of(pid), Some(format!("/flotilla/{two}/{name}")));
        }
    }
    env.sandbox.destroy(&two).await.unwrap();

    // 200 MiB held by the shell against the task's 64 MiB, no container limit.
    let oom = task_id("taskoom");
    let _guard3 = env.guard(&oom);
    let hog = container("hog", &["sh", "-c", "x=$(head -c 200m /dev/zero | tr '\\0' a); echo survived"]);
    let mut spec = task(&oom, vec![hog]);
    spec.memory_mib = 64;
    env.sandbox.create_task(spec).await.unwrap();
    env.sandbox.start_container(&oom, "hog").await.unwrap();
    let status = wait_exited(&env.sandbox, &oom, "hog", Duration::from_secs(30)).await;
    assert!(status.oom_killed, "{status:?}");
    assert!(status.reason.as_deref().unwrap_or("").starts_with("OutOfMemoryError"), "{status:?}");
    env.sandbox.destroy(&oom).await.unwrap();
}

fn host_hard_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the exclusively borrowed struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}

#[tokio::test]
async fn ulimits_are_applied_and_clamped() {
    let env = env();
    let mut c = container("limits", &["sh", "-c", "echo soft=$(ulimit -n) hard=$(ulimit -Hn) core=$(ulimit -c)"]);
    c.ulimits = vec![
        Ulimit { name: "nofile".into(), soft_limit: 1234, hard_limit: 4321 },
        Ulimit { name: "core".into(), soft_limit: 0, hard_limit: 0 },
    ];
    let (status, out) = run_once(&env, "ulimit", c).await;
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(out.trim(), "soft=1234 hard=4321 core=0");

    // Fargate's default nofile (65535), cut down to what this host allows.
    let c = container("defaults", &["sh", "-c", "echo soft=$(ulimit -n) hard=$(ulimit -Hn)"]);
    let (status, out) = run_once(&env, "ulimitdef", c).await;
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    let want = 65535.min(host_hard_nofile());
    assert_eq!(out.trim(), format!("soft={want} hard={want}"));

    // Asking for more than the host allows is clamped rather than failing the start.
    let mut c = container("greedy", &["sh", "-c", "echo hard=$(ulimit -Hn)"]);
    c.ulimits = vec![Ulimit { name: "nofile".into(), soft_limit: 1 << 30, hard_limit: 1 << 30 }];
    let (status, out) = run_once(&env, "ulimitbig", c).await;
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(out.trim(), format!("hard={}", host_hard_nofile().min(1 << 30)));
}

#[tokio::test]
async fn read_only_root_and_shared_volumes() {
    let env = env();
    let id = task_id("volumes");
    let _guard = env.guard(&id);
    let mp =
        |v: &str, path: &str, ro| MountPoint { source_volume: v.into(), container_path: path.into(), read_only: ro };

    let mut writer = container(
        "writer",
        &["sh", "-c", "echo from-writer > /out/message && touch /rootfile 2>/dev/null && echo root=rw || echo root=ro"],
    );
    writer.readonly_root_filesystem = true;
    writer.mount_points = vec![mp("shared", "/out", false)];

    let mut reader = container(
        "reader",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do [ -f /in/message ] && break; sleep 0.1; done; \
         echo got=$(cat /in/message); (echo x > /in/other) 2>/dev/null && echo vol=rw || echo vol=ro; \
         touch /rootfile && echo root=rw",
        ],
    );
    reader.mount_points = vec![mp("shared", "/in", true)];

    let mut inheritor = container("inheritor", &["sh", "-c", "cat /out/message"]);
    inheritor.volumes_from = vec![VolumeFrom { source_container: "writer".into(), read_only: false }];

    let mut spec = task(&id, vec![writer, reader, inheritor]);
    spec.volumes = vec!["shared".into()];
    env.sandbox.create_task(spec).await.unwrap();

    env.sandbox.start_container(&id, "writer").await.unwrap();
    let w = wait_exited(&env.sandbox, &id, "writer", Duration::from_secs(20)).await;
    assert_eq!(w.exit_code, Some(0), "{w:?}");
    assert!(stdout_of(&env, &id, "writer").contains("root=ro"), "read-only root was writable");

    env.sandbox.start_container(&id, "reader").await.unwrap();
    let r = wait_exited(&env.sandbox, &id, "reader", Duration::from_secs(20)).await;
    let out = stdout_of(&env, &id, "reader");
    assert_eq!(r.exit_code, Some(0), "{out}");
    assert!(out.contains("got=from-writer"), "{out}");
    assert!(out.contains("vol=ro"), "read-only mount point was writable: {out}");
    assert!(out.contains("root=rw"), "{out}");

    env.sandbox.start_container(&id, "inheritor").await.unwrap();
    let i = wait_exited(&env.sandbox, &id, "inheritor", Duration::from_secs(20)).await;
    assert_eq!(i.exit_code, Some(0));
    assert_eq!(stdout_of(&env, &id, "inheritor").trim(), "from-writer");
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn ephemeral_storage_is_size_limited() {
    let env = env();
    // 1 GiB of scratch space; writing 1.2 GiB must hit ENOSPC, and df sees the limit.
    let c = container(
        "filler",
        &[
            "sh",
            "-c",
            "df -k / | tail -1; if dd if=/dev/zero of=/big bs=1M count=1200 2>/dev/null; then echo wrote-all; else echo nospace; fi; rm -f /big",
        ],
    );
    let started = std::time::Instant::now();
    let (status, out) = run_once(&env, "ephemeral", c).await;
    assert_eq!(status.exit_code, Some(0), "{out}");
    assert!(out.contains("nospace") && !out.contains("wrote-all"), "{out}");
    eprintln!("filling 1 GiB took {:?}", started.elapsed());
}

/// With the shared scratch filesystem on (it needs btrfs: CI installs btrfs-progs), every
/// task's scratch space is a subvolume of one filesystem, capped by its quota group, bound at
/// the task's `data` and deleted with it; the filesystem is in no directory (nothing to leave
/// mounted) and goes with its last holder.
#[tokio::test]
async fn scratch_space_is_a_capped_subvolume_of_the_shared_filesystem() {
    let env = env_with(|c| c.shared_scratch = true);
    let Some(shared) = env.sandbox.shared_scratch() else {
        let why = flotilla_sandbox::shared_scratch::SharedScratch::try_open(env.root.path()).unwrap_err();
        panic!("no shared btrfs: {}", flotilla_sandbox::error::chain(&why));
    };
    let image = env.root.path().join(flotilla_sandbox::shared_scratch::IMAGE);
    let (a, b) = (task_id("scratch-a"), task_id("scratch-b"));
    let (_ga, _gb) = (env.guard(&a), env.guard(&b));
    let write = |marker: &str| container("app", &["sh", "-c", &format!("echo {marker} > /mine; sleep 30")]);
    for (id, marker) in [(&a, "from-a"), (&b, "from-b")] {
        let handle = env.sandbox.create_task(task(id, vec![write(marker)])).await.unwrap();
        assert_eq!(handle.timings.get("ephemeral_fs_pooled"), Some(&3), "{:?}", handle.timings);
        env.sandbox.start_container(id, "app").await.unwrap();
    }
    // Each task writes into its own subvolume and sees only its own.
    for (id, marker) in [(&a, "from-a"), (&b, "from-b")] {
        let data = in_task(&env.sandbox.task_dir(id), &env.sandbox.task_dir(id).join("data"));
        assert!(flotilla_sandbox::shared_scratch::is_subvolume(&data), "{} is not a subvolume", data.display());
        let found = wait_for("the task's file in its subvolume", Duration::from_secs(20), || async {
            let out = Command::new("grep").args(["-rl", marker]).arg(&data).output().unwrap();
            (!out.stdout.is_empty()).then_some(String::from_utf8_lossy(&out.stdout).to_string())
        })
        .await;
        let other = if marker == "from-a" { "from-b" } else { "from-a" };
        let theirs = Command::new("grep").args(["-rl", other]).arg(&data).output().unwrap();
        assert!(theirs.stdout.is_empty(), "{found}: {}", String::from_utf8_lossy(&theirs.stdout));
        // A quota group counts what the filesystem has committed (every 30 s by default).
        assert!(Command::new("sync").arg("-f").arg(&data).status().unwrap().success());
        let stats = env.sandbox.stats(id).await.unwrap();
        assert_eq!(stats.ephemeral_storage.size_bytes, 1 << 30, "{:?}", stats.ephemeral_storage);
        assert!(stats.ephemeral_storage.used_bytes > 0, "{:?}", stats.ephemeral_storage);
    }
    // Nothing of the shared filesystem is in the mount table but the tasks' own `data`.
    let root = env.root.path().to_path_buf();
    let mounted: Vec<_> = flotilla_sandbox::mount::mounts_under(&root).unwrap();
    assert!(mounted.iter().all(|m| !m.ends_with(".scratch")), "{mounted:?}");
    let (mut both, mut only_b) = (vec![a.clone(), b.clone()], vec![b.clone()]);
    both.sort();
    assert_eq!(shared.subvolumes(), both);
    env.sandbox.destroy(&a).await.unwrap();
    assert_eq!(shared.subvolumes(), only_b, "the destroyed task's subvolume is still there, or the other went");
    env.sandbox.destroy(&b).await.unwrap();
    only_b.clear();
    assert_eq!(shared.subvolumes(), only_b);
    drop(env.sandbox);
    // The last holder gone, the filesystem and its loop device go.
    wait_for("the shared filesystem's loop device to detach", Duration::from_secs(20), || async {
        let out = Command::new("losetup").arg("-j").arg(&image).output().unwrap();
        out.stdout.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn init_process_runs_tini_as_pid_1() {
    if !std::path::Path::new("/usr/bin/tini-static").exists() {
        panic!("initProcessEnabled needs a static tini: apt-get install -y tini");
    }
    let env = env();
    let mut c = container("inited", &["sh", "-c", "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); exit 5"]);
    c.init_process_enabled = true;
    let (status, out) = run_once(&env, "init", c).await;
    assert!(out.contains("pid1=/sbin/docker-init -- sh -c"), "{out}");
    // tini passes the child's exit code through.
    assert_eq!(status.exit_code, Some(5), "{status:?}");
}
