//! What runs in the container's first process between fork and exec (and, shorter, in an
//! exec'd process): the filesystem, limits, identity, seccomp, then the wait for `start`.
//!
//! Order matters and follows runc: mounts and the pivot need every capability; rlimits before
//! the user switch (raising one needs root); seccomp is compiled before the fork and loaded last, once
//! nothing but opening the exec FIFO and execve remains (both allowed by any sane profile);
//! without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use flotilla_oci::{Process, Spec};
use rustix::fs::OFlags;
use rustix::thread::UnshareFlags;

use crate::cgroup::Cgroups;
use crate::{mounts, process, seccomp, sys};

/// The executable, arguments and environment, ready for execve.
pub struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

/// Identity, limits and seccomp for `p`, shared by a container's init and exec'd processes.
/// Returns what to exec; `filter` is loaded when this returns.
fn become_process(p: &Process, filter: &seccomp::Filter) -> io::Result<Exec> {
    // A session of its own, as runc gives it: signals meant for the shim's group never reach it.
    // A forked child is never a group leader, so this cannot fail.
    let _ = rustix::process::setsid();
    process::set_rlimits(&p.rlimits)?;
    if !p.no_new_privileges {
        filter.load()?;
    }
    process::set_user_and_caps(p)?;
    // Changing uid made us non-dumpable, which makes /proc/self/fd root's; the exec FIFO is
    // reopened through it. execve sets dumpable again anyway, for any non-setuid program.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(|e| io::Error::other(format!("prctl(PR_SET_DUMPABLE): {e}")))?;
    if p.no_new_privileges {
        rustix::thread::set_no_new_privs(true)
            .map_err(|e| io::Error::other(format!("prctl(PR_SET_NO_NEW_PRIVS): {e}")))?;
    }
    sys::chdir(Path::new(&p.cwd))?;
    let first = p.args.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "process.args is empty"))?;
    let exe = process::lookup(first, &p.env)?;
    let exec = Exec { path: sys::cstr(&exe)?, args: process::c_strings(&p.args)?, env: process::c_strings(&p.env)? };
    if p.no_new_privileges {
        filter.load()?;
    }
    Ok(exec)
}

/// The container's init: builds its world, reports readiness on `ready`, waits for `start`
/// on the exec FIFO, and execs. A failure before readiness is reported on `ready`; one after
/// (the command cannot be exec'd) goes to the container's stderr, as runc does.
pub fn container_init(
    spec: &Spec,
    filter: &seccomp::Filter,
    cgroups: &Cgroups,
    unshare: UnshareFlags,
    fifo: &Path,
    ready: OwnedFd,
) -> ! {
    let mut ready = Some(std::fs::File::from(ready));
    let mut run = || -> io::Result<io::Error> {
        sys::unshare(unshare)?;
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        mounts::prepare_root(spec, cgroups)?;
        let fifo = sys::open(fifo, OFlags::PATH)?;
        mounts::pivot(&spec.root.path)?;
        mounts::mask(&spec.linux.masked_paths)?;
        mounts::read_only(&spec.linux.readonly_paths)?;
        if spec.root.readonly {
            mounts::root_read_only()?;
        }
        let exec = become_process(&spec.process, filter)?;
        if let Some(mut r) = ready.take() {
            r.write_all(b"ok")?;
        }
        // Blocks until `start` opens the FIFO for reading.
        let reopen = format!("/proc/self/fd/{}", fifo.as_raw_fd());
        let mut w = std::fs::File::from(sys::open(Path::new(&reopen), OFlags::WRONLY)?);
        w.write_all(b"0")?;
        drop(w);
        drop(fifo);
        let e = sys::execve(&exec.path, &exec.args, &exec.env);
        Ok(io::Error::new(e.kind(), format!("exec {:?}: {e}", spec.process.args.first().map_or("", |a| a.as_str()))))
    };
    let e = match run() {
        Ok(e) | Err(e) => e,
    };
    match ready.take() {
        Some(mut r) => {
            let _ = r.write_all(e.to_string().as_bytes());
        }
        None => {
            let _ = writeln!(io::stderr(), "flotilla-runtime: {e}");
        }
    }
    // SAFETY: leaving the forked child without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

/// An exec'd process, already in the container's namespaces and cgroup.
pub fn exec_process(p: &Process, filter: &seccomp::Filter) -> io::Error {
    match become_process(p, filter) {
        Ok(exec) => {
            let e = sys::execve(&exec.path, &exec.args, &exec.env);
            io::Error::new(e.kind(), format!("exec {:?}: {e}", p.args.first().unwrap_or(&String::new())))
        }
        Err(e) => e,
    }
}
