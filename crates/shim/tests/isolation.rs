//! Isolation seen from inside the containers (and checked from the host where the kernel is
//! the authority): processes, hostname, capabilities, seccomp, /proc, fds, cgroup limits,
//! networking between containers of one task and between tasks.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use flotilla_sandbox::cgroup::{Cgroups, task_budget};
use flotilla_sandbox::spec::{cap_mask, resolve_caps};
use flotilla_sandbox::{ContainerState, Sandbox};

/// Lines `key=value` printed by a probe script.
fn probe_values(out: &str) -> BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

const PROBE: &str = r#"
echo "cmdline=$(tr '\0\n' '  ' < /proc/1/cmdline)"
echo "pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
echo "ps=$(ps -o comm | tail -n +2 | sort -u | tr '\n' ' ')"
echo "hostname=$(hostname)"
echo "capeff=$(grep '^CapEff:' /proc/self/status | cut -f2)"
echo "capbnd=$(grep '^CapBnd:' /proc/self/status | cut -f2)"
echo "nnp=$(grep '^NoNewPrivs:' /proc/self/status | cut -f2)"
echo "seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)"
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  echo "memlimit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  echo "shares=$(cat /sys/fs/cgroup/cpu/cpu.shares)"
else
  echo "memlimit=$(cat /sys/fs/cgroup/memory.max)"
fi
if (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; then echo procsys=writable; else echo procsys=denied; fi
if (echo x > /proc/sysrq-trigger) 2>/dev/null; then echo sysrq=writable; else echo sysrq=denied; fi
echo "kcore=$(wc -c < /proc/kcore 2>/dev/null)"
echo "id=$(id)"
echo "masked=$(ls -A /proc/acpi /sys/firmware 2>&1 | grep -v ':$' | tr -d '\n')"
if touch /sys/firmware/x 2>/dev/null; then echo maskwrite=writable; else echo maskwrite=denied; fi
echo done=yes
"#;

#[tokio::test]
async fn the_inside_view_is_isolated_and_limited() {
    let env = env();
    let id = task_id("inside");
    let _guard = env.guard(&id);
    // The last argument becomes the script's $0: a marker at the end of PID 1's command line.
    let mut c = container("probe", &["sh", "-c", &format!("{PROBE}\nsleep 1000"), "probe-marker"]);
    c.memory_mib = Some(96);
    c.cpu_units = 256;
    let idle = container("idle", &["sleep", "1000"]);
    let mut spec = task(&id, vec![c, idle]);
    spec.hostname = Some("ip-10-1-2-3".into());
    env.sandbox.create_task(spec.clone()).await.unwrap();
    env.sandbox.start_container(&id, "probe").await.unwrap();
    env.sandbox.start_container(&id, "idle").await.unwrap();
    let out = wait_for("the probe output", Duration::from_secs(20), || async {
        let out = stdout_of(&env, &id, "probe");
        out.lines().any(|l| l == "done=yes").then_some(out)
    })
    .await;
    let v = probe_values(&out);

    assert!(v["cmdline"].starts_with("sh -c") && v["cmdline"].ends_with("probe-marker"), "{}", v["cmdline"]);
    // Only the probe's own processes: sh, and the short-lived helpers it ran.
    for pid in v["pids"].split_whitespace() {
        assert!(pid.parse::<u32>().unwrap() < 100, "a foreign pid is visible: {}", v["pids"]);
    }
    assert!(
        !v["ps"].contains("flotilla-shim") && !v["ps"].contains("runc") && !v["ps"].contains("cargo"),
        "{}",
        v["ps"]
    );
    // busybox runs some applets by re-executing /proc/self/exe: those show up as "exe".
    let commands: Vec<&str> = v["ps"].split_whitespace().collect();
    assert!(
        commands.contains(&"sh") && commands.iter().all(|c| ["sh", "ps", "tail", "sort", "tr", "exe"].contains(c)),
        "{commands:?}"
    );
    assert_eq!(v["hostname"], "ip-10-1-2-3");

    let fargate = cap_mask(&resolve_caps(&[], &[]).unwrap());
    assert_eq!(u64::from_str_radix(&v["capeff"], 16).unwrap(), fargate, "CapEff {}", v["capeff"]);
    assert_eq!(u64::from_str_radix(&v["capbnd"], 16).unwrap(), fargate);
    assert_eq!(v["nnp"], "1");
    assert_eq!(v["seccomp"], "2");
    assert_eq!(v["memlimit"], (96u64 << 20).to_string());
    if let Some(shares) = v.get("shares") {
        assert_eq!(shares, "256");
    }
    // Masked directories (one empty read-only tmpfs, bound over each): empty, not writable.
    assert_eq!(v["masked"], "", "masked directories show something");
    assert_eq!(v["maskwrite"], "denied");
    assert_eq!(v["procsys"], "denied");
    assert_eq!(v["sysrq"], "denied");
    assert!(v["kcore"].is_empty() || v["kcore"] == "0", "kcore readable: {}", v["kcore"]);
    // A container's first process holds stdin, stdout, stderr and nothing of the host's.
    // (Checked on `sleep`: a shell keeps descriptors of its own.)
    let ls = |argv: &[&str]| flotilla_sandbox::ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: 5000,
    };
    let fds = env.sandbox.exec(&id, "idle", ls(&["ls", "/proc/1/fd"])).await.unwrap();
    assert_eq!(fds.output.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"], "{fds:?}");
    let targets = env.sandbox.exec(&id, "idle", ls(&["ls", "-l", "/proc/1/fd"])).await.unwrap().output;
    assert!(targets.contains("0 -> /dev/null"), "{targets}");
    assert_eq!(v["id"], "uid=0(root) gid=0(root) groups=0(root)");

    // On a v1 host whose hierarchies sit in one tmpfs, the builtin runtime gives the container
    // that directory bound read-only as its /sys/fs/cgroup (no filesystem of its own), and the
    // hierarchies mounted on it stay in the container: no hierarchy is mounted twice on the host.
    let idle = wait_running(&env.sandbox, &id, "idle").await.pid.unwrap();
    let fields = |line: &str| line.split(' ').map(str::to_string).collect::<Vec<_>>();
    let entry = |table: &str, at: &str| table.lines().map(fields).find(|f| f[4] == at);
    let host_table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let inside = std::fs::read_to_string(format!("/proc/{idle}/mountinfo")).unwrap();
    let host_cg = entry(&host_table, "/sys/fs/cgroup");
    let builtin = std::env::var("FLOTILLA_RUNTIME").map_or(true, |r| r != "runc");
    if builtin && host_cg.as_ref().is_some_and(|f| f.iter().any(|x| x == "tmpfs")) {
        let (host_cg, in_cg) = (host_cg.unwrap(), entry(&inside, "/sys/fs/cgroup").expect("no /sys/fs/cgroup inside"));
        assert_eq!(in_cg[2], host_cg[2], "the host's directory, not a tmpfs of its own: {in_cg:?}");
        assert!(in_cg[5].split(',').any(|o| o == "ro"), "{in_cg:?}");
        let cgroup_points =
            |t: &str| t.lines().filter(|l| l.contains(" - cgroup")).map(|l| fields(l)[4].clone()).collect::<Vec<_>>();
        let host_points = cgroup_points(&host_table);
        let distinct: std::collections::BTreeSet<_> = host_points.iter().collect();
        assert_eq!(distinct.len(), host_points.len(), "a hierarchy mounted twice on the host: {host_points:?}");
        assert!(cgroup_points(&inside).len() >= 4, "the hierarchies are mounted inside: {inside}");
    }

    // Host side: the task budget is what the spec asked for.
    let cgroups = Cgroups::detect("flotilla").unwrap();
    assert_eq!(cgroups.read_budget(&id).unwrap(), task_budget(&spec));
    if cgroups.version() == 1 {
        let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/flotilla/{id}/cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota.trim(), "50000"); // 512 units = half a CPU per 100 ms period
        let mem =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory/flotilla/{id}/memory.limit_in_bytes")).unwrap();
        assert_eq!(mem.trim(), (1024u64 << 20).to_string());
        let pids = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/flotilla/{id}/pids.max")).unwrap();
        assert_eq!(pids.trim(), "256");
        let memsw = format!("/sys/fs/cgroup/memory/flotilla/{id}/memory.memsw.limit_in_bytes");
        if let Ok(memsw) = std::fs::read_to_string(memsw) {
            assert_eq!(memsw.trim(), (1024u64 << 20).to_string(), "swap must be off");
        }
    }
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn a_non_root_user_has_no_effective_capabilities() {
    let env = env();
    let mut c =
        container("user", &["sh", "-c", "id; grep -E '^Cap(Eff|Prm):' /proc/self/status; touch /etc/x || echo denied"]);
    c.user = Some("app".into());
    let (status, out) = run_once(&env, "nonroot", c).await;
    assert_eq!(status.exit_code, Some(0), "{out}");
    assert!(out.contains("uid=1000(app) gid=1000(app) groups="), "{out}");
    assert!(out.contains("50(staff)") && out.contains(",1000(app)"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000") && out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(out.contains("denied"), "{out}");
}

#[tokio::test]
async fn containers_of_a_task_share_localhost_but_not_processes() {
    let env = env();
    let id = task_id("localhost");
    let _guard = env.guard(&id);
    let web = container("web", &["httpd", "-f", "-p", "8080", "-h", "/var/www"]);
    let client = container(
        "client",
        &[
            "sh",
            "-c",
            "echo host=$(hostname); echo ps=$(ps -o args | grep -c '[h]ttpd -f'); \
         for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1",
        ],
    );
    env.sandbox.create_task(task(&id, vec![web, client])).await.unwrap();
    env.sandbox.start_container(&id, "web").await.unwrap();
    env.sandbox.start_container(&id, "client").await.unwrap();
    let status = wait_exited(&env.sandbox, &id, "client", Duration::from_secs(30)).await;
    let out = stdout_of(&env, &id, "client");
    assert_eq!(status.exit_code, Some(0), "client could not reach the web container: {out}");
    assert!(out.contains("hello from the web container"), "{out}");
    // Own PID namespace: httpd runs in the same task but is invisible here.
    assert!(out.contains("ps=0"), "{out}");
    assert!(out.contains(&format!("host={}", task(&id, vec![]).hostname())), "{out}");
    wait_running(&env.sandbox, &id, "web").await;
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn another_task_sees_neither_processes_nor_ports() {
    let env = env();
    let a = task_id("iso-a");
    let _ga = env.guard(&a);
    let web = container("web", &["httpd", "-f", "-p", "8081", "-h", "/var/www"]);
    let marker = container("marker", &["sleep", "4242"]);
    env.sandbox.create_task(task(&a, vec![web, marker])).await.unwrap();
    env.sandbox.start_container(&a, "web").await.unwrap();
    env.sandbox.start_container(&a, "marker").await.unwrap();
    // The web server is up (checked from inside its own task).
    wait_for("task A's httpd", Duration::from_secs(20), || async {
        let r = env
            .sandbox
            .exec(
                &a,
                "marker",
                flotilla_sandbox::ExecSpec {
                    argv: vec!["wget".into(), "-q".into(), "-O".into(), "-".into(), "http://127.0.0.1:8081/".into()],
                    timeout_ms: 5000,
                },
            )
            .await
            .unwrap();
        (r.exit_code == Some(0)).then_some(())
    })
    .await;

    let c = container(
        "snoop",
        &[
            "sh",
            "-c",
            "echo procs=$(ps -o args | grep -c '[4]242'); wget -q -T 2 -O - http://127.0.0.1:8081/ && echo reached || echo unreachable",
        ],
    );
    let (status, out) = run_once(&env, "iso-b", c).await;
    assert_eq!(status.exit_code, Some(0), "{out}");
    assert!(out.contains("procs=0"), "task B sees task A's processes: {out}");
    assert!(out.contains("unreachable") && !out.contains("reached\n"), "task B reached task A's port: {out}");
    let st = env.sandbox.state(&a).await.unwrap();
    assert!(st.containers.iter().all(|c| c.state == ContainerState::Running), "{st:?}");
    env.sandbox.destroy(&a).await.unwrap();
}

#[tokio::test]
async fn pid_mode_task_shares_one_pid_namespace() {
    let env = env();
    let id = task_id("pidtask");
    let _guard = env.guard(&id);
    let a = container("a", &["sleep", "4343"]);
    let b = container(
        "b",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do ps -o args | grep -q '^sleep 4343' && exit 0; sleep 0.1; done; exit 1",
        ],
    );
    let mut spec = task(&id, vec![a, b]);
    spec.pid_mode_task = true;
    env.sandbox.create_task(spec).await.unwrap();
    env.sandbox.start_container(&id, "a").await.unwrap();
    env.sandbox.start_container(&id, "b").await.unwrap();
    let status = wait_exited(&env.sandbox, &id, "b", Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, Some(0), "b did not see a's process");
    // a keeps running although b, a sibling in the same namespace, has ended.
    wait_running(&env.sandbox, &id, "a").await;
    env.sandbox.signal(&id, "a", libc::SIGKILL).await.unwrap();
    let a = wait_exited(&env.sandbox, &id, "a", Duration::from_secs(10)).await;
    assert_eq!(a.exit_code, Some(137));
    env.sandbox.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn an_image_link_cannot_send_a_volume_mount_to_the_host() {
    let env = env();
    let id = task_id("linkmount");
    let _guard = env.guard(&id);
    // A layer whose /evil is a link to a host directory: the volume at /evil/inside must land
    // in the container's own /tmp/..., never in the host's.
    let host_target = PathBuf::from(format!("/tmp/flotilla-escape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_target);
    let layer = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&host_target, layer.path().join("evil")).unwrap();
    let mut c = container("probe", &["sh", "-c", "echo hi > /evil/inside/f && cat /evil/inside/f"]);
    c.layers.push(layer.path().to_path_buf());
    c.mount_points = vec![flotilla_sandbox::MountPoint {
        source_volume: "shared".into(),
        container_path: "/evil/inside".into(),
        read_only: false,
    }];
    let mut spec = task(&id, vec![c]);
    spec.volumes = vec!["shared".into()];
    env.sandbox.create_task(spec).await.unwrap();
    env.sandbox.start_container(&id, "probe").await.unwrap();
    let status = wait_exited(&env.sandbox, &id, "probe", Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(stdout_of(&env, &id, "probe"), "hi\n");
    assert!(!host_target.exists(), "the mount followed the image's link to the host: {}", host_target.display());
    let volume = env.sandbox.volume_dir(&id, "shared").unwrap().join("f");
    assert_eq!(std::fs::read_to_string(&volume).unwrap(), "hi\n", "the volume got the write");
}
