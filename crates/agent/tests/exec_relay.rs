//! The agent's exec relay (`flotilla_agent::exec::relay`) between a real process's terminal
//! or pipes and an `ExecChannel`: bytes both ways, stdin's EOF, resize, the exit status last,
//! and a dropped input sender ending the process. (Inside containers, through the shim, in
//! crates/shim/tests/exec.rs; through the API, in crates/cli/tests/exec*.rs.)

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_agent::exec::relay;
use flotilla_host::exec::{ExecChannel, ExecInput, ExecOutput, TermSize};
use flotilla_sandbox::{ExecProcess, ExecStdio, SandboxError};

/// Kills the process group when the exit future is dropped unfinished, as the shim does
/// when its connection closes.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain integers.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

fn exit_future(mut child: std::process::Child) -> flotilla_sandbox::BoxFuture<'static, Result<i32, SandboxError>> {
    // Owned by the future from the start, as the shim's connection is.
    let guard = KillOnDrop(child.id() as i32);
    Box::pin(async move {
        let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        std::mem::forget(guard);
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    })
}

fn piped(script: &str) -> ExecProcess {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdio = ExecStdio::Pipes {
        stdin: child.stdin.take().unwrap().into(),
        stdout: child.stdout.take().unwrap().into(),
        stderr: child.stderr.take().unwrap().into(),
    };
    ExecProcess { pid: child.id(), stdio, exit: exit_future(child) }
}

/// `sh` on a new terminal of the host's, as its session's controlling terminal.
fn on_a_terminal() -> ExecProcess {
    // SAFETY: plain libc calls on descriptors this function owns.
    let (master, slave) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(s >= 0);
        (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    };
    let mut cmd = Command::new("sh");
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(slave);
    ExecProcess { pid: child.id(), stdio: ExecStdio::Tty { master }, exit: exit_future(child) }
}

/// Everything the channel says until it ends: stdout, stderr, and the exit (if any).
async fn collect(channel: &mut ExecChannel) -> (String, String, Option<i32>) {
    let (mut out, mut err, mut exit) = (String::new(), String::new(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, channel.output.recv()).await.expect("the channel never ended");
        match msg {
            Some(ExecOutput::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(ExecOutput::Stderr(b)) => err.push_str(&String::from_utf8_lossy(&b)),
            Some(ExecOutput::Exit(code)) => {
                assert!(exit.is_none(), "two exits");
                exit = Some(code);
            }
            None => return (out, err, exit),
        }
    }
}

#[tokio::test]
async fn pipes_relay_stdin_its_end_stdout_stderr_and_the_exit() {
    let mut ch = relay(piped("cat; echo to-stderr >&2; exit 7")).unwrap();
    ch.input.send(ExecInput::Stdin(b"through the relay\n".to_vec())).await.unwrap();
    ch.input.send(ExecInput::CloseStdin).await.unwrap();
    let (out, err, exit) = collect(&mut ch).await;
    assert_eq!(out, "through the relay\n");
    assert_eq!(err, "to-stderr\n");
    assert_eq!(exit, Some(7));
}

#[tokio::test]
async fn a_terminal_relays_resizes_and_merged_output() {
    let mut ch = relay(on_a_terminal()).unwrap();
    ch.input.send(ExecInput::Resize(TermSize { cols: 100, rows: 30 })).await.unwrap();
    ch.input.send(ExecInput::Stdin(b"stty size; echo oops >&2; exit 4\n".to_vec())).await.unwrap();
    let (out, err, exit) = collect(&mut ch).await;
    assert!(out.contains("30 100"), "{out:?}");
    assert!(out.contains("oops"), "stderr is the terminal too: {out:?}");
    assert_eq!(err, "");
    assert_eq!(exit, Some(4));
}

#[tokio::test]
async fn dropping_the_input_ends_the_process() {
    for process in [piped("sleep 1000"), on_a_terminal()] {
        let pid = process.pid;
        let ExecChannel { input, mut output } = relay(process).unwrap();
        drop(input);
        // The stream ends without an exit status: the session ended it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), output.recv()).await.unwrap() {
            assert!(!matches!(msg, ExecOutput::Exit(_)), "{msg:?}");
        }
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        {
            assert!(Instant::now() < deadline, "process {pid} survived its session");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
