//! Flotilla's own OCI runtime, for the subset of the runtime spec Flotilla writes
//! (`flotilla_oci`). It speaks runc's command line for the commands the shim uses
//! (`create`, `run --detach`, `start`, `kill [--all]`, `delete [--force]`, `state`,
//! `exec --detach [--tty --console-socket PATH]`) and keeps runc's exec-FIFO protocol, so the shim drives either the same
//! way. Each command is a fresh single-threaded process (`flotilla-shim oci ...`): create and
//! exec fork, which is only safe without other threads; `kill`, `delete` and `state` do not,
//! and the shim runs them in its own process ([`in_process`]).
//!
//! Why not runc: runc is a Go program that starts twice per container (`runc create`, then
//! `runc init`), about 35 ms here before the container's first instruction; this runtime does
//! the same work in a few milliseconds.

pub mod cgroup;
mod container;
mod devices;
mod fifo;
mod init;
pub mod mountinfo;
mod mounts;
mod process;
pub mod pty;
pub mod seccomp;
mod state;
mod sys;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use cgroup::shares_to_weight;
pub use fifo::complete_start;

/// `kill`, `delete --force` and `state` in the caller's process: none of them forks, changes
/// namespaces or the working directory, so a multi-threaded caller (the shim) can run them
/// itself instead of starting `flotilla-shim oci` for each (an exec, the dynamic loader and
/// libc's start-up: a few milliseconds of CPU each, three times per task). Errors and output
/// are the command's.
pub mod in_process {
    use std::io;
    use std::path::Path;

    /// `kill [--all] ID SIGNAL`.
    pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> io::Result<()> {
        crate::container::kill(root, id, signal, all)
    }

    /// `delete [--force] ID`.
    pub fn delete(root: &Path, id: &str, force: bool) -> io::Result<()> {
        crate::container::delete(root, id, force)
    }

    /// `state ID`: the JSON runc prints.
    pub fn state(root: &Path, id: &str) -> io::Result<String> {
        crate::container::state_json(root, id)
    }
}

/// Attaches the eBPF device filter for `rules` to the cgroup v2 directory `cgroup` (what
/// `create` does for each container on cgroup v2 hosts).
pub fn attach_device_filter(cgroup: &Path, rules: &[flotilla_oci::DeviceRule]) -> std::io::Result<()> {
    devices::attach(cgroup, rules)
}

const USAGE: &str =
    "usage: flotilla-shim oci [--root DIR] [--log FILE] [--log-format json] [--seccomp-cache DIR] COMMAND
  create --bundle DIR [--pid-file FILE] ID
  run --detach --bundle DIR [--pid-file FILE] ID
  start ID
  kill [--all] ID SIGNAL
  delete [--force] ID
  state ID
  exec --detach [--tty --console-socket PATH] [--pid-file FILE] ID ARG...";

/// The default state root, as runc's `/run/runc`.
const DEFAULT_ROOT: &str = "/run/flotilla-runtime";

struct Global {
    root: PathBuf,
    /// Opened before the command runs: exec fails inside the container's mount namespace,
    /// where the path means nothing.
    log: Option<std::fs::File>,
    /// Where compiled seccomp filters are kept between runs (`seccomp.rs`); none: compile each time.
    seccomp_cache: Option<PathBuf>,
}

/// Runs one runtime command; the process exit code.
pub fn main(args: &[String]) -> i32 {
    let mut global = Global { root: PathBuf::from(DEFAULT_ROOT), log: None, seccomp_cache: None };
    let mut it = args.iter().peekable();
    while let Some(a) = it.peek() {
        match a.as_str() {
            "--root" | "--log" | "--log-format" | "--seccomp-cache" => {
                let flag = it.next().cloned().unwrap_or_default();
                let Some(value) = it.next() else { return usage(&format!("{flag} needs a value")) };
                match flag.as_str() {
                    "--root" => global.root = PathBuf::from(value),
                    "--seccomp-cache" => global.seccomp_cache = Some(PathBuf::from(value)),
                    "--log" => {
                        global.log = std::fs::OpenOptions::new().create(true).append(true).open(value).ok();
                    }
                    _ => {}
                }
            }
            _ => break,
        }
    }
    let Some(command) = it.next() else { return usage("no command") };
    let rest: Vec<String> = it.cloned().collect();
    match run(&global, command, rest) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            fail(&global, &e);
            1
        }
    }
}

fn usage(msg: &str) -> i32 {
    eprintln!("flotilla-runtime: {msg}\n{USAGE}");
    2
}

/// Reports an error with its causes on stderr and, like runc, as a JSON line in `--log`.
fn fail(global: &Global, e: &std::io::Error) {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    eprintln!("flotilla-runtime: {msg}");
    if let Some(mut f) = global.log.as_ref() {
        let line = serde_json::json!({"level": "error", "msg": msg});
        let _ = writeln!(f, "{line}");
    }
}

/// Flags with a value and boolean flags of one command, then its positional arguments (all
/// remaining arguments once the positionals start, for exec's command).
struct Parsed {
    bundle: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    all: bool,
    force: bool,
    detach: bool,
    tty: bool,
    console_socket: Option<PathBuf>,
    positional: Vec<String>,
}

fn parse(args: Vec<String>) -> std::io::Result<Parsed> {
    let mut p = Parsed {
        bundle: None,
        pid_file: None,
        all: false,
        force: false,
        detach: false,
        tty: false,
        console_socket: None,
        positional: vec![],
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| bad(&format!("{a} needs a value")));
        match a.as_str() {
            "--bundle" | "-b" => p.bundle = Some(PathBuf::from(value()?)),
            "--pid-file" => p.pid_file = Some(PathBuf::from(value()?)),
            "--all" | "-a" => p.all = true,
            "--force" | "-f" => p.force = true,
            "--detach" | "-d" => p.detach = true,
            "--tty" | "-t" => p.tty = true,
            "--console-socket" => p.console_socket = Some(PathBuf::from(value()?)),
            other if other.starts_with('-') => return Err(bad(&format!("unknown flag {other}"))),
            _ => {
                p.positional.push(a);
                p.positional.extend(it);
                break;
            }
        }
    }
    Ok(p)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.to_string())
}

fn signal_number(s: &str) -> std::io::Result<i32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG");
    Ok(match name {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        _ => return Err(bad(&format!("unknown signal {s:?}"))),
    })
}

fn run(g: &Global, command: &str, args: Vec<String>) -> std::io::Result<Option<String>> {
    let p = parse(args)?;
    let id = || p.positional.first().cloned().ok_or_else(|| bad("the container id is missing"));
    let bundle = || p.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    let root: &Path = &g.root;
    let cache = g.seccomp_cache.as_deref();
    match command {
        "create" => container::create(root, &id()?, &bundle(), p.pid_file.as_deref(), false, cache).map(|_| None),
        "run" if p.detach => {
            container::create(root, &id()?, &bundle(), p.pid_file.as_deref(), true, cache).map(|_| None)
        }
        "run" => Err(bad("only `run --detach` is supported")),
        "start" => container::start(root, &id()?).map(|_| None),
        "kill" => {
            let signal = p.positional.get(1).map_or(Ok(libc::SIGTERM), |s| signal_number(s))?;
            container::kill(root, &id()?, signal, p.all).map(|_| None)
        }
        "delete" => container::delete(root, &id()?, p.force).map(|_| None),
        "state" => container::state_json(root, &id()?).map(Some),
        "exec" if p.detach => {
            let id = id()?;
            let argv: Vec<String> = p.positional[1..].to_vec();
            if argv.is_empty() {
                return Err(bad("exec needs a command"));
            }
            // As runc: a terminal is made inside the container and its master sent to the
            // console socket; without one the process keeps this command's stdio.
            let console = match (p.tty, &p.console_socket) {
                (true, Some(path)) => Some(path.as_path()),
                (true, None) => return Err(bad("--tty needs --console-socket")),
                (false, Some(_)) => return Err(bad("--console-socket needs --tty")),
                (false, None) => None,
            };
            container::exec(root, &id, p.pid_file.as_deref(), argv, console, cache).map(|_| None)
        }
        "exec" => Err(bad("only `exec --detach` is supported")),
        other => Err(bad(&format!("unknown command {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_then_positionals_and_exec_keeps_its_command_verbatim() {
        let p =
            parse(["--detach", "--pid-file", "/p", "c1", "sh", "-c", "echo --all"].map(String::from).to_vec()).unwrap();
        assert!(p.detach && !p.all);
        assert_eq!(p.pid_file, Some(PathBuf::from("/p")));
        assert_eq!(p.positional, ["c1", "sh", "-c", "echo --all"]);
        assert!(parse(vec!["--bogus".into()]).is_err());
        assert!(parse(vec!["--bundle".into()]).is_err());
        let p = parse(["-d", "-t", "--console-socket", "/s", "c1", "sh"].map(String::from).to_vec()).unwrap();
        assert!(p.tty && p.detach);
        assert_eq!(p.console_socket, Some(PathBuf::from("/s")));
        assert_eq!(p.positional, ["c1", "sh"]);
    }

    #[test]
    fn signals_by_number_or_name() {
        assert_eq!(signal_number("9").unwrap(), 9);
        assert_eq!(signal_number("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(signal_number("KILL").unwrap(), libc::SIGKILL);
        assert!(signal_number("NOPE").is_err());
    }
}
