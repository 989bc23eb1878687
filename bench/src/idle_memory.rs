//! Host memory per idle task beyond the containers' own processes: Flotilla's per-task shim
//! (and any other per-task host process) vs conmon, podman's per-container monitor, each
//! supervising one runc container of the same busybox rootfs running the same `sleep`.
//!
//! `idle-memory ENDPOINT DATA_DIR IMAGE FLOTILLA_PID K`
//!
//! Memory is read from /proc/<pid>/smaps_rollup (Pss, Rss, Private_Dirty) after the tasks have
//! been idle for a few seconds. PSS splits pages shared between processes (the shim's code,
//! libc) among them, so K shims' PSS summed is what they cost together.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{
    Mem, Proc, client, descendants, mem, processes, register, run, run_task, runc_bundle, stop_all, wait_all,
};

const COMMAND: [&str; 2] = ["sleep", "1000000"];
const SETTLE: Duration = Duration::from_secs(3);

fn kib_to_mib(k: f64) -> f64 {
    k / 1024.0
}

struct Sample {
    supervisor: Mem,
    supervisors: usize,
    containers: Mem,
    container_procs: usize,
    others: Vec<Proc>,
}

fn flotilla_sample(data: &Path, ids: &[String]) -> anyhow::Result<Sample> {
    let data = data.to_string_lossy().into_owned();
    let procs = processes();
    let shims: Vec<&Proc> =
        procs.iter().filter(|p| p.comm == "flotilla-shim" && p.cmdline.iter().any(|a| a.starts_with(&data))).collect();
    let mut s = Sample {
        supervisor: Mem::default(),
        supervisors: shims.len(),
        containers: Mem::default(),
        container_procs: 0,
        others: Vec::new(),
    };
    for p in &shims {
        s.supervisor += mem(p.pid)?;
    }
    let roots: Vec<u32> = shims.iter().map(|p| p.pid).collect();
    for p in descendants(&procs, &roots) {
        if ids.iter().any(|id| p.cgroup.contains(&format!("/flotilla/{id}/"))) && p.comm != "runc:[2:INIT]" {
            s.containers += mem(p.pid)?;
            s.container_procs += 1;
        } else {
            s.others.push(p);
        }
    }
    // Lingering runc processes for these tasks, wherever they hang.
    for p in procs.iter().filter(|p| p.comm.starts_with("runc") && p.cmdline.iter().any(|a| a.contains(&data))) {
        if !s.others.iter().any(|o| o.pid == p.pid) {
            s.others.push(p.clone());
        }
    }
    Ok(s)
}

struct Conmon {
    id: String,
    dir: PathBuf,
}

fn conmon_start(bundle: &Path, dir: &Path, id: &str) -> anyhow::Result<Conmon> {
    std::fs::create_dir_all(dir.join("exits"))?;
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    // As podman runs it (less its exit command): conmon forks, runs `runc create` and stays as
    // the container's parent, logging its output; the foreground process exits once created.
    run(Command::new("conmon")
        .args(["--api-version", "1", "-c", id, "-u", id, "-n", id, "-r"])
        .arg(which("runc")?)
        .arg("-b")
        .arg(bundle)
        .args(["-p", &p("ctr.pid"), "-P", &p("conmon.pid"), "--exit-dir", &p("exits")])
        .args(["-l", &format!("k8s-file:{}", p("ctr.log")), "--socket-dir-path", &p(""), "--log-level", "warning"])
        .stdin(Stdio::null()))?;
    // Without podman's sync pipe the foreground conmon returns before `runc create` is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    while runc_status(id) != "created" {
        if Instant::now() > deadline {
            bail!(
                "conmon did not create {id}; its log: {}",
                std::fs::read_to_string(dir.join("ctr.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Conmon { id: id.to_owned(), dir: dir.to_owned() })
}

fn runc_status(id: &str) -> String {
    Command::new("runc")
        .args(["state", id])
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn which(binary: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .with_context(|| format!("{binary} not on PATH"))
}

fn pid_in(file: &Path) -> anyhow::Result<u32> {
    std::fs::read_to_string(file)?.trim().parse().with_context(|| format!("pid in {}", file.display()))
}

fn conmon_sample(conmons: &[Conmon]) -> anyhow::Result<Sample> {
    let procs = processes();
    let mut s = Sample {
        supervisor: Mem::default(),
        supervisors: 0,
        containers: Mem::default(),
        container_procs: 0,
        others: Vec::new(),
    };
    for c in conmons {
        if runc_status(&c.id) != "running" {
            bail!("{} is not running under conmon", c.id);
        }
        let pid = pid_in(&c.dir.join("conmon.pid"))?;
        s.supervisor += mem(pid)?;
        s.supervisors += 1;
        for p in descendants(&procs, &[pid]) {
            if p.comm == "sleep" {
                s.containers += mem(p.pid)?;
                s.container_procs += 1;
            } else {
                s.others.push(p);
            }
        }
    }
    Ok(s)
}

fn conmon_stop(conmons: &[Conmon]) {
    for c in conmons {
        // A container conmon is still creating cannot be killed yet.
        let deadline = Instant::now() + Duration::from_secs(20);
        while runc_status(&c.id).is_empty() && pid_in(&c.dir.join("conmon.pid")).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = Command::new("runc").args(["kill", &c.id, "KILL"]).output();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in conmons {
        // conmon writes the exit file, then exits.
        while !c.dir.join("exits").join(&c.id).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("runc").args(["delete", "-f", &c.id]).output();
    }
}

fn row(name: &str, k: usize, s: &Sample) {
    let per = |v: u64| kib_to_mib(v as f64 / k as f64);
    println!(
        "{name:<22} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>12.2}",
        s.supervisors,
        per(s.supervisor.pss),
        per(s.supervisor.rss),
        per(s.supervisor.private_dirty),
        s.supervisor.threads as f64 / k as f64,
        per(s.containers.pss),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: idle-memory ENDPOINT DATA_DIR IMAGE FLOTILLA_PID K");
    }
    let (endpoint, data, image) = (&args[1], PathBuf::from(&args[2]), &args[3]);
    let server_pid: u32 = args[4].parse().context("FLOTILLA_PID")?;
    let k: usize = args[5].parse().context("K")?;
    let c = client(endpoint)?;
    let td = register(&c, "bench-idle", image, &COMMAND, 0).await?;

    // Warm-up task: image cache, and the server's allocator past its first task.
    let warm = run_task(&c, &td, 1).await?;
    wait_all(&c, &warm, "RUNNING", Duration::from_secs(120), Duration::from_millis(50)).await?;
    stop_all(&c, &warm).await?;
    wait_all(&c, &warm, "STOPPED", Duration::from_secs(120), Duration::from_millis(50)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let server_before = mem(server_pid)?;
    let arns = run_task(&c, &td, k as i32).await?;
    let ids: Vec<String> = arns.iter().map(|a| flotilla_bench::task_id(a).to_owned()).collect();
    wait_all(&c, &arns, "RUNNING", Duration::from_secs(120), Duration::from_millis(50)).await?;
    tokio::time::sleep(SETTLE).await;
    let fl = flotilla_sample(&data, &ids)?;
    let server_after = mem(server_pid)?;
    stop_all(&c, &arns).await?;
    wait_all(&c, &arns, "STOPPED", Duration::from_secs(120), Duration::from_millis(50)).await?;

    let scratch = tempfile::tempdir()?;
    let bundle = runc_bundle(&scratch.path().join("bundle"), &COMMAND)?;
    let prefix = flotilla_bench::runc_prefix("idle");
    let mut conmons = Vec::new();
    let started = (|| -> anyhow::Result<()> {
        for i in 0..k {
            let id = format!("{prefix}-{i}");
            let dir = scratch.path().join(&id);
            conmons.push(Conmon { id: id.clone(), dir: dir.clone() });
            conmon_start(&bundle, &dir, &id)?;
            run(Command::new("runc").args(["start", &id]))?;
        }
        Ok(())
    })();
    let cm = match started {
        Ok(()) => {
            std::thread::sleep(SETTLE);
            conmon_sample(&conmons)
        }
        Err(e) => Err(e),
    };
    conmon_stop(&conmons);
    let cm = cm?;

    println!("idle memory per task, K={k} tasks running `sleep`, MiB per task (PSS sums shared pages once)");
    println!(
        "{:<22} {:>5} {:>9} {:>9} {:>9} {:>8} {:>12}",
        "supervisor", "procs", "PSS", "RSS", "priv_dirty", "threads", "container PSS"
    );
    row("flotilla-shim", k, &fl);
    row("conmon (podman)", k, &cm);
    println!(
        "{:<22} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>12}",
        "runc run -d", 0, 0.0, 0.0, 0.0, "-", "(no supervisor)"
    );
    println!(
        "ratio flotilla-shim/conmon PSS: {:.2}x; target at most 2 MiB per task: {}",
        fl.supervisor.pss as f64 / cm.supervisor.pss as f64,
        if kib_to_mib(fl.supervisor.pss as f64 / k as f64) <= 2.0 { "met" } else { "NOT met" }
    );
    let others = |s: &Sample| {
        if s.others.is_empty() {
            "none".to_owned()
        } else {
            s.others.iter().map(|p| format!("{} {}", p.pid, p.comm)).collect::<Vec<_>>().join(", ")
        }
    };
    println!("other per-task host processes: flotilla: {}; conmon: {}", others(&fl), others(&cm));
    println!(
        "container processes: flotilla {} ({:.2} MiB PSS each), conmon {}",
        fl.container_procs,
        kib_to_mib(fl.containers.pss as f64 / fl.container_procs.max(1) as f64),
        cm.container_procs
    );
    println!(
        "flotilla up (server + agent) grew by {:.2} MiB PSS / {:.2} MiB RSS per task",
        kib_to_mib((server_after.pss as f64 - server_before.pss as f64) / k as f64),
        kib_to_mib((server_after.rss as f64 - server_before.rss as f64) / k as f64)
    );
    Ok(())
}
