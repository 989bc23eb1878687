//! Interactive exec (ECS Exec's host side) through the real shim, with both OCI runtimes:
//! a shell on a terminal made inside the container runs with exactly the container's process
//! settings, resizes, reports its exit; a session that ends early leaves nothing behind;
//! without a terminal, pipes carry stdin (and its EOF), stdout and stderr apart.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use flotilla_sandbox::{
    EnvVar, ExecProcess, ExecSpec, ExecStdio, InteractiveSpec, LinuxSandbox, Sandbox, SandboxError, TaskSpec,
};

const RUNTIMES: [&str; 2] = ["builtin", "runc"];

fn env_with(runtime: &str) -> Env {
    require_prerequisites();
    let root = tempfile::Builder::new().prefix("flotilla-sandbox-").tempdir_in("/var/tmp").unwrap();
    let mut cfg = config(root.path());
    cfg.runtime = runtime.to_string();
    Env { sandbox: LinuxSandbox::new(cfg), root }
}

/// A long-running container as an unprivileged user, with its own environment, working
/// directory and capabilities.
fn service_task(id: &str) -> TaskSpec {
    let mut c = container("svc", &["sleep", "1000"]);
    c.user = Some("app".into());
    c.working_directory = Some("/home/app".into());
    c.environment = vec![EnvVar { name: "FOO".into(), value: "from-the-task".into() }];
    c.cap_drop = vec!["CHOWN".into()];
    task(id, vec![c])
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn interactive(a: &[&str], tty: bool) -> InteractiveSpec {
    InteractiveSpec { argv: argv(a), tty, cols: 80, rows: 24 }
}

/// A terminal's master side, read without blocking against a deadline.
struct Term {
    master: OwnedFd,
    seen: String,
}

impl Term {
    fn new(master: OwnedFd) -> Term {
        set_nonblocking(&master);
        Term { master, seen: String::new() }
    }

    fn send(&self, text: &str) {
        rustix::io::write(&self.master, text.as_bytes()).unwrap();
    }

    /// Runs `cmd` in the shell and returns what it printed (between two markers that the
    /// terminal's echo of the command line cannot contain).
    async fn run(&mut self, cmd: &str) -> String {
        let n = self.seen.len();
        self.send(&format!("echo B$((40+2)); {cmd}; echo E$((40+2))\n"));
        let out = self.expect_from(n, "E42\r\n").await;
        let start = out.find("B42\r\n").unwrap_or_else(|| panic!("no start marker in {out:?}")) + 5;
        let end = out.rfind("E42\r\n").unwrap();
        out[start..end].replace("\r\n", "\n")
    }

    /// Reads until the output since offset `from` contains `pattern`; returns that output.
    async fn expect_from(&mut self, from: usize, pattern: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.seen[from..].find(pattern) {
                return self.seen[from..from + i + pattern.len()].to_string();
            }
            let mut buf = [0u8; 4096];
            match rustix::io::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Ok(_) => panic!("the terminal closed; output so far {:?}", self.seen),
                Err(rustix::io::Errno::AGAIN) => {
                    assert!(Instant::now() < deadline, "timed out waiting for {pattern:?} in {:?}", self.seen);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reading the terminal: {e}; output so far {:?}", self.seen),
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    let flags = rustix::fs::fcntl_getfl(fd).unwrap();
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
}

/// Lines of `/proc/<pid>/status` that say what a process may do.
fn privileges(pid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp:"].iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

fn namespaces(pid: u32) -> Vec<String> {
    ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
        .iter()
        .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap().display().to_string())
        .collect()
}

/// The container's processes running `needle` (by their command line), zombies excluded.
async fn running_in(env: &Env, id: &str, needle: &str) -> Vec<String> {
    let spec = ExecSpec { argv: argv(&["ps", "-o", "pid,stat,args"]), timeout_ms: 5000 };
    let out = env.sandbox.exec(id, "svc", spec).await.unwrap().output;
    out.lines().filter(|l| l.contains(needle) && !l.contains(" Z ") && !l.contains("ps -o")).map(String::from).collect()
}

async fn wait_gone(env: &Env, id: &str, needle: &str) {
    wait_for(&format!("no {needle} left in the container"), Duration::from_secs(10), || async {
        running_in(env, id, needle).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_terminal_session_runs_as_the_container_does() {
    for runtime in RUNTIMES {
        let env = env_with(runtime);
        let id = task_id(&format!("tty-{runtime}"));
        let _guard = env.guard(&id);
        env.sandbox.create_task(service_task(&id)).await.unwrap();
        let init = env.sandbox.start_container(&id, "svc").await.unwrap().pid;

        let ExecProcess { pid, stdio, exit } =
            env.sandbox.exec_interactive(&id, "svc", interactive(&["sh"], true)).await.unwrap();
        let ExecStdio::Tty { master } = stdio else { panic!("{runtime}: no terminal") };
        let mut term = Term::new(master);

        let tty = term.run("tty").await;
        assert!(tty.trim().starts_with("/dev/pts/"), "{runtime}: {tty:?}");
        let id_out = term.run("id").await;
        assert!(id_out.contains("uid=1000(app) gid=1000(app)"), "{runtime}: {id_out:?}");
        assert_eq!(term.run("pwd").await.trim(), "/home/app", "{runtime}");
        assert_eq!(term.run("echo $FOO").await.trim(), "from-the-task", "{runtime}");
        let root = term.run("ls /").await;
        assert!(root.contains("home") && !root.contains("work"), "{runtime}: the host's root? {root:?}");
        let same = term.run("[ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same").await;
        assert_eq!(same.trim(), "same", "{runtime}: another cgroup");

        // From the host: the shell has exactly the container's identity, limits and place.
        assert_eq!(privileges(pid), privileges(init), "{runtime}");
        assert_eq!(namespaces(pid), namespaces(init), "{runtime}");
        let cgroup = |p: u32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
        assert_eq!(cgroup(pid), cgroup(init), "{runtime}");

        flotilla_runtime::pty::set_size(term.master.as_fd(), 120, 40).unwrap();
        assert_eq!(term.run("stty size").await.trim(), "40 120", "{runtime}");

        term.send("exit 3\n");
        assert_eq!(exit.await.unwrap(), 3, "{runtime}");
        env.sandbox.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn an_abandoned_session_leaves_nothing_running() {
    for runtime in RUNTIMES {
        let env = env_with(runtime);
        let id = task_id(&format!("abandon-{runtime}"));
        let _guard = env.guard(&id);
        env.sandbox.create_task(service_task(&id)).await.unwrap();
        env.sandbox.start_container(&id, "svc").await.unwrap();

        // With a terminal: a background job and a foreground one.
        let p = env.sandbox.exec_interactive(&id, "svc", interactive(&["sh"], true)).await.unwrap();
        let ExecStdio::Tty { master } = p.stdio else { panic!("no terminal") };
        let term = Term::new(master);
        term.send("sleep 2001 & sleep 2002\n");
        wait_for("both sleeps", Duration::from_secs(10), || async {
            (running_in(&env, &id, "sleep 200").await.len() == 2).then_some(())
        })
        .await;
        drop(p.exit);
        drop(term);
        wait_gone(&env, &id, "sleep 200").await;
        assert!(!process_alive(p.pid), "{runtime}: the shell survived");

        // Without: a process that ignores its hang-up and starts another.
        let p = env
            .sandbox
            .exec_interactive(&id, "svc", interactive(&["sh", "-c", "trap '' HUP; sleep 2003 & sleep 2004"], false))
            .await
            .unwrap();
        wait_for("both sleeps", Duration::from_secs(10), || async {
            (running_in(&env, &id, "sleep 200").await.len() == 2).then_some(())
        })
        .await;
        drop(p);
        wait_gone(&env, &id, "sleep 200").await;
        env.sandbox.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn pipes_carry_stdin_eof_stdout_and_stderr() {
    for runtime in RUNTIMES {
        let env = env_with(runtime);
        let id = task_id(&format!("pipes-{runtime}"));
        let _guard = env.guard(&id);
        env.sandbox.create_task(service_task(&id)).await.unwrap();
        env.sandbox.start_container(&id, "svc").await.unwrap();

        let p = env.sandbox.exec_interactive(&id, "svc", interactive(&["cat"], false)).await.unwrap();
        let ExecStdio::Pipes { stdin, stdout, stderr } = p.stdio else { panic!("no pipes") };
        rustix::io::write(&stdin, b"through the pipe\n").unwrap();
        drop(stdin);
        assert_eq!(read_all(stdout), "through the pipe\n", "{runtime}");
        assert_eq!(read_all(stderr), "", "{runtime}");
        assert_eq!(p.exit.await.unwrap(), 0, "{runtime}: cat saw EOF");

        let p = env
            .sandbox
            .exec_interactive(&id, "svc", interactive(&["sh", "-c", "echo out; echo err >&2; exit 5"], false))
            .await
            .unwrap();
        let ExecStdio::Pipes { stdout, stderr, .. } = p.stdio else { panic!("no pipes") };
        assert_eq!(read_all(stdout), "out\n", "{runtime}");
        assert_eq!(read_all(stderr), "err\n", "{runtime}");
        assert_eq!(p.exit.await.unwrap(), 5, "{runtime}");

        // Killed by a signal: 128 + its number, as a shell says.
        let p =
            env.sandbox.exec_interactive(&id, "svc", interactive(&["sh", "-c", "kill -9 $$"], false)).await.unwrap();
        assert_eq!(p.exit.await.unwrap(), 137, "{runtime}");
        env.sandbox.destroy(&id).await.unwrap();
    }
}

fn read_all(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    s
}

#[tokio::test]
async fn what_cannot_run_is_refused_clearly() {
    for runtime in RUNTIMES {
        let env = env_with(runtime);
        let id = task_id(&format!("refuse-{runtime}"));
        let _guard = env.guard(&id);
        let mut spec = service_task(&id);
        spec.containers.push(container("idle", &["true"]));
        env.sandbox.create_task(spec).await.unwrap();
        env.sandbox.start_container(&id, "svc").await.unwrap();

        let missing = env.sandbox.exec_interactive(&id, "svc", interactive(&["/no/such/binary"], true)).await;
        let err = missing.unwrap_err();
        assert!(matches!(err, SandboxError::InvalidSpec(_)), "{runtime}: {err}");
        assert!(err.to_string().contains("/no/such/binary"), "{runtime}: {err}");
        let err = env.sandbox.exec_interactive(&id, "svc", interactive(&["no-such-tool"], false)).await.unwrap_err();
        assert!(err.to_string().contains("executable file not found in $PATH"), "{runtime}: {err}");
        let err = env.sandbox.exec_interactive(&id, "nope", interactive(&["sh"], true)).await.unwrap_err();
        assert!(matches!(err, SandboxError::NotFound { .. }), "{runtime}: {err}");
        let err = env.sandbox.exec_interactive(&id, "idle", interactive(&["sh"], false)).await.unwrap_err();
        assert!(matches!(err, SandboxError::InvalidState { .. }), "{runtime}: {err}");
        let err = env.sandbox.exec_interactive("no-such-task", "svc", interactive(&["sh"], false)).await.unwrap_err();
        assert!(matches!(err, SandboxError::TaskNotFound { .. }), "{runtime}: {err}");
        // Nothing was left running, and the console sockets are gone.
        let dir = env.sandbox.task_dir(&id);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sock") && e.file_name() != "shim.sock")
            .collect();
        assert!(leftovers.is_empty(), "{runtime}: {leftovers:?}");
        env.sandbox.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn a_shim_that_adopts_the_task_ends_the_sessions_its_predecessor_served() {
    for runtime in RUNTIMES {
        let env = env_with(runtime);
        let id = task_id(&format!("adopt-{runtime}"));
        let _guard = env.guard(&id);
        env.sandbox.create_task(service_task(&id)).await.unwrap();
        env.sandbox.start_container(&id, "svc").await.unwrap();
        let p = env.sandbox.exec_interactive(&id, "svc", interactive(&["sh"], true)).await.unwrap();
        let ExecStdio::Tty { master } = p.stdio else { panic!("no terminal") };
        let mut term = Term::new(master);
        term.run("true").await;

        let dir = env.sandbox.task_dir(&id);
        let shim = shim_pid(&dir).expect("no shim");
        // SAFETY: plain integers.
        unsafe { libc::kill(shim as i32, libc::SIGKILL) };
        // The session's lifeline went with the shim.
        assert!(p.exit.await.is_err(), "{runtime}: an exit status from a dead shim");
        wait_for("the old shim to die", Duration::from_secs(10), || async { (!process_alive(shim)).then_some(()) })
            .await;
        assert!(process_alive(p.pid), "{runtime}: only the new shim should end the shell");
        // The next request starts a shim, which adopts the task and ends the orphaned shell
        // (the terminal stays open here, so nothing but the new shim can end it).
        env.sandbox.state(&id).await.unwrap();
        wait_for("the orphaned shell to end", Duration::from_secs(10), || async {
            (!process_alive(p.pid)).then_some(())
        })
        .await;
        assert!(!dir.join("exec").join(p.pid.to_string()).exists(), "{runtime}: its record is left");
        wait_running(&env.sandbox, &id, "svc").await;
        drop(term);
        env.sandbox.destroy(&id).await.unwrap();
    }
}
