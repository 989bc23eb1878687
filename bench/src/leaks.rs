//! What a run of Flotilla tasks left on the host (shared by the churn and density drivers).

use std::path::Path;
use std::process::Command;

use crate::{processes, run};

/// `flotilla_sandbox::scratch_pool::POOL_DIR`, under `<data>/tasks`.
pub const POOL_DIR: &str = ".scratch-pool";
/// `flotilla_sandbox::shared_scratch::IMAGE`, under `<data>/tasks`: the host's shared scratch
/// filesystem (`FLOTILLA_SHARED_SCRATCH=1`).
pub const SHARED_IMAGE: &str = ".scratch.img";
/// `flotilla_sandbox::protocol::SECCOMP_CACHE_DIR`: compiled seccomp filters, one per profile,
/// kept for the host's next tasks (not a task's leftover).
pub const SECCOMP_CACHE_DIR: &str = ".seccomp-cache";

/// Everything of these tasks still on the host, one line per leak.
pub fn leaks(data: &Path, ids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let parent = entry.path().join("flotilla");
        for id in ids {
            let dir = parent.join(id);
            if dir.exists() {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
    }
    let data_str = data.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        if let Some(point) = line.split(' ').nth(4)
            && point.starts_with(&data_str)
        {
            found.push(format!("mount {point}"));
        }
    }
    // The scratch filesystem pool's ready filesystems (`<data>/tasks/.scratch-pool`) and the
    // shared scratch filesystem (`<data>/tasks/.scratch.img`) are not leaks: they belong to the
    // running server and go with it (checked after it exits by bench/common.sh). Anything else
    // backed by a file under the data dir is.
    let pool = data.join("tasks").join(POOL_DIR).to_string_lossy().into_owned();
    let shared = data.join("tasks").join(SHARED_IMAGE).to_string_lossy().into_owned();
    if let Ok(out) = run(Command::new("losetup").arg("-a")) {
        for line in out.lines().filter(|l| l.contains(&data_str) && !l.contains(&pool) && !l.contains(&shared)) {
            found.push(format!("loop device {line}"));
        }
    }
    let procs = processes();
    let shims: Vec<_> = procs
        .iter()
        .filter(|p| p.comm == "flotilla-shim" && p.cmdline.iter().any(|a| a.starts_with(&data_str)))
        .collect();
    for p in &shims {
        found.push(format!("process {} {}", p.pid, p.cmdline.join(" ")));
    }
    for p in procs.iter().filter(|p| ids.iter().any(|id| p.cgroup.contains(&format!("/flotilla/{id}")))) {
        found.push(format!("container process {} {}", p.pid, p.cmdline.join(" ")));
    }
    let mine = |a: &String| a.starts_with(&data_str) || ids.iter().any(|id| a.contains(id.as_str()));
    for p in procs.iter().filter(|p| p.comm.starts_with("runc") && p.cmdline.iter().any(mine)) {
        found.push(format!("runc process {} {}", p.pid, p.cmdline.join(" ")));
    }
    for id in ids {
        let dir = data.join("tasks").join(id);
        if dir.exists() {
            found.push(format!("task dir {}", dir.display()));
        }
    }
    if let Ok(entries) = std::fs::read_dir(data.join("tasks")) {
        let kept = [POOL_DIR, SHARED_IMAGE, SECCOMP_CACHE_DIR];
        for e in entries.flatten().filter(|e| !kept.iter().any(|k| e.file_name() == *k)) {
            found.push(format!("task dir entry {}", e.path().display()));
        }
    }
    found
}
