//! `flotilla-shim pause`: the first process of a task-wide PID namespace (`pidMode: task`).
//! A PID namespace dies with its first process, so that process must be ours, not a
//! container's. It only reaps orphans until it is killed at destroy.

use std::io::Write;

/// Unshares a PID namespace, forks its PID 1, prints that process's host PID and exits.
/// The PID 1 is re-parented to the shim (a subreaper), which reaps it at destroy.
pub fn run() -> ! {
    // SAFETY: called at the start of main, single-threaded, before anything else.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        eprintln!("unshare(CLONE_NEWPID): {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: single-threaded; the child only calls async-signal-safe functions below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if pid > 0 {
        println!("{pid}");
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    // PID 1 of the new namespace. Drop the stdio the shim is reading so it sees EOF, then
    // wait for orphans forever. Signals from inside the namespace cannot kill PID 1; the
    // shim's SIGKILL from outside can.
    // SAFETY: plain syscalls on constant arguments; `set` is initialised before use.
    unsafe {
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        }
    }
}
