//! `flotilla-shim`: the per-task supervisor.
//!
//! ```text
//! flotilla-shim --task-dir DIR [--runtime auto|builtin|runc] [--runc PATH] [--cgroup-parent NAME]
//!               [--init PATH] [--scratch-holder PID:FD:FSID] [--mount-template PATH] [--foreground]
//! flotilla-shim pause        (internal: PID 1 of a task-wide PID namespace)
//! flotilla-shim oci ...      (internal: the builtin OCI runtime, `flotilla_runtime`)
//! ```
//!
//! Started by the agent once per task. It detaches (double fork, setsid), becomes a child
//! subreaper so container processes end up as its children, listens on `DIR/shim.sock`, and
//! keeps `DIR/state.json` current. Started on a directory that already has a state file, it
//! adopts the task a previous shim left (see `runtime/container.rs`). With `--mount-template`
//! (the agent's, see `flotilla_sandbox::mntns`) the task's mounts live in a mount namespace
//! of the shim's own.
//!
//! Architecture Invariant: the shim is the only process that changes a task on the host
//! once it exists; the agent only sends it requests.

mod daemon;
mod logs;
mod pause;
mod reaper;
mod runc;
mod runtime;
mod server;
mod state;

use std::path::PathBuf;

use flotilla_sandbox::protocol::SHIM_LOG_FILE;

use crate::daemon::Ready;
use crate::runtime::{Runtime, RuntimeKind, ShimConfig};

const USAGE: &str = "usage: flotilla-shim --task-dir DIR [--runtime auto|builtin|runc] [--runc PATH] [--cgroup-parent NAME] [--init PATH] [--scratch-holder PID:FD:FSID] [--mount-template PATH] [--foreground]";

struct Options {
    task_dir: PathBuf,
    runc: PathBuf,
    runtime: RuntimeKind,
    cgroup_parent: String,
    init: Option<PathBuf>,
    foreground: bool,
    scratch_holder: Option<flotilla_sandbox::shared_scratch::Holder>,
    mount_template: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut task_dir = None;
    let mut runc = PathBuf::from("runc");
    let mut runtime = RuntimeKind::Auto;
    let mut cgroup_parent = "flotilla".to_string();
    let mut init = None;
    let mut foreground = false;
    let mut scratch_holder = None;
    let mut mount_template = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--task-dir" => task_dir = Some(PathBuf::from(value()?)),
            "--runc" => runc = PathBuf::from(value()?),
            "--runtime" => runtime = RuntimeKind::parse(&value()?)?,
            "--cgroup-parent" => cgroup_parent = value()?,
            "--init" => init = Some(PathBuf::from(value()?)),
            "--foreground" => foreground = true,
            "--scratch-holder" => scratch_holder = Some(value()?.parse()?),
            "--mount-template" => mount_template = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let task_dir = task_dir.ok_or("--task-dir is required")?;
    let task_dir = std::path::absolute(&task_dir).map_err(|e| format!("{}: {e}", task_dir.display()))?;
    if !task_dir.is_dir() {
        return Err(format!("task dir {} does not exist", task_dir.display()));
    }
    Ok(Options { task_dir, runc, runtime, cgroup_parent, init, foreground, scratch_holder, mount_template })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("pause") {
        pause::run();
    }
    if args.first().map(String::as_str) == Some("oci") {
        std::process::exit(flotilla_runtime::main(&args[1..]));
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("flotilla-shim: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Everything up to here ran single-threaded, as fork requires.
    let ready = if opts.foreground {
        Ready::none()
    } else {
        match daemon::daemonize(&opts.task_dir.join(SHIM_LOG_FILE)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("flotilla-shim: detaching: {e}");
                std::process::exit(1);
            }
        }
    };
    // One malloc arena: glibc gives threads arenas of their own, and a shim's few threads
    // (connections, reaper, log readers) held ~250 KiB of them, a fifth of an idle task's
    // memory. Nothing in the shim allocates hard enough from several threads to miss them.
    // SAFETY: mallopt only sets an allocator tunable; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    reaper::block_sigchld();
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    if let Err(msg) = run(opts, ready) {
        tracing::error!("{msg}");
        std::process::exit(1);
    }
}

fn run(opts: Options, ready: Ready) -> Result<(), String> {
    let setup = || -> Result<_, String> {
        let lock = server::lock_task_dir(&opts.task_dir)?;
        // Still single-threaded, as entering a mount namespace requires; before anything
        // is mounted. Only the lock's holder may make or enter the task's namespace.
        let has_state = opts.task_dir.join(flotilla_sandbox::protocol::STATE_FILE).exists();
        let placement = flotilla_sandbox::mntns::enter(&opts.task_dir, opts.mount_template.as_deref(), has_state)
            .map_err(|e| format!("the task's mount namespace: {}", flotilla_sandbox::error::chain(&e)))?;
        let listener = server::bind(&opts.task_dir)?;
        let reaper = reaper::Reaper::start();
        let self_exe = std::env::current_exe().map_err(|e| format!("locating own binary: {e}"))?;
        let cfg = ShimConfig {
            task_dir: opts.task_dir.clone(),
            runc: opts.runc.clone(),
            runtime: opts.runtime,
            cgroup_parent: opts.cgroup_parent.clone(),
            init: opts.init.clone(),
            self_exe,
            log_limits: logs::LogLimits::default(),
            host_mounts: match placement {
                flotilla_sandbox::mntns::Placement::Own { host } => Some(host),
                flotilla_sandbox::mntns::Placement::Host => None,
            },
            // Taken while the agent that launched this shim waits for it: the shared scratch
            // filesystem, held from now on by this shim too (shared_scratch.rs).
            shared_scratch: opts.scratch_holder.as_ref().and_then(|h| match h.take() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %flotilla_sandbox::error::chain(&e), "shared scratch filesystem not taken");
                    None
                }
            }),
        };
        let runtime = Runtime::open(cfg, reaper.clone())?;
        Ok((lock, listener, runtime, reaper))
    };
    match setup() {
        Ok((_lock, listener, runtime, reaper)) => {
            tracing::info!(task_dir = %opts.task_dir.display(), pid = std::process::id(), "shim ready");
            ready.ok();
            // Never returns: the lock is held for the life of the process.
            server::serve(listener, runtime, &reaper)
        }
        Err(msg) => {
            ready.fail(&msg);
            Err(msg)
        }
    }
}
