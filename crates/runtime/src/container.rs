//! The runtime's commands, each run by a fresh single-threaded `flotilla-shim oci` process:
//! create (and run), start, kill, delete, state, exec.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_oci::Spec;
use rustix::fs::OFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::cgroup::{self, CgroupManager, Cgroups};
use crate::state::{self, EXEC_FIFO, State, Status};
use crate::sys::{self, Fork, err_at};
use crate::{init, seccomp};

fn not_found(id: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("container {id} does not exist"))
}

fn load(root: &Path, id: &str) -> io::Result<State> {
    State::load(root, id)?.ok_or_else(|| not_found(id))
}

fn read_spec(bundle: &Path) -> io::Result<Spec> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| err_at("read", &path, e))?;
    let mut spec: Spec = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    if spec.root.path.is_relative() {
        spec.root.path = bundle.join(&spec.root.path);
    }
    Ok(spec)
}

/// `/proc/<pid>/ns/<kind>` or a configured path, opened before any namespace is entered.
struct Join {
    fd: OwnedFd,
    ns: LinkNameSpaceType,
    kind: &'static str,
}

/// The flag that makes a new namespace of `kind`, and the type that joins one.
fn ns_flag(kind: &str) -> Option<(UnshareFlags, LinkNameSpaceType, &'static str)> {
    Some(match kind {
        "pid" => (UnshareFlags::NEWPID, LinkNameSpaceType::ProcessID, "pid"),
        "network" => (UnshareFlags::NEWNET, LinkNameSpaceType::Network, "network"),
        "ipc" => (UnshareFlags::NEWIPC, LinkNameSpaceType::InterProcessCommunication, "ipc"),
        "uts" => (UnshareFlags::NEWUTS, LinkNameSpaceType::HostNameAndNISDomainName, "uts"),
        "mount" => (UnshareFlags::NEWNS, LinkNameSpaceType::Mount, "mount"),
        "cgroup" => (UnshareFlags::NEWCGROUP, LinkNameSpaceType::ControlGroup, "cgroup"),
        _ => return None,
    })
}

/// Reads what the child wrote before exec'ing or dying: empty means it exec'd (the pipe was
/// close-on-exec); "ok" that the init is waiting for start; anything else is its error.
fn read_report(r: OwnedFd) -> String {
    let mut text = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut text);
    text
}

fn report_error(w: OwnedFd, e: &io::Error) -> ! {
    use std::io::Write;
    let _ = std::fs::File::from(w).write_all(format!("{e}").as_bytes());
    // SAFETY: leaving the forked child without running the parent's destructors.
    unsafe { libc::_exit(1) }
}

/// `create`: sets the container up and leaves its init waiting on the exec FIFO; `start`
/// also starts it (`run --detach`). Writes the init's pid to `pid_file`.
pub fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    start_now: bool,
    seccomp_cache: Option<&Path>,
) -> io::Result<()> {
    if !state::valid_id(id) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid container id {id:?}")));
    }
    let spec = read_spec(bundle)?;
    std::fs::create_dir_all(root).map_err(|e| err_at("mkdir", root, e))?;
    let dir = state::dir(root, id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(e.kind(), format!("container with id {id} exists already")));
        }
        Err(e) => return Err(err_at("mkdir", &dir, e)),
    }
    let mut placed = cgroup::Placement::default();
    let result = create_in(root, id, bundle, &spec, &dir, &mut placed, pid_file, start_now, seccomp_cache);
    if result.is_err() {
        // This process joined the container's cgroup so that its init would start there; it
        // moves up to the parent cgroup first, or the container's could never be removed.
        let parents: Vec<PathBuf> = placed.own.iter().filter_map(|d| d.parent().map(Path::to_path_buf)).collect();
        let _ = cgroup::join(&parents);
        let _ = cgroup::remove(&placed.own, Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn create_in(
    root: &Path,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    dir: &Path,
    placed: &mut cgroup::Placement,
    pid_file: Option<&Path>,
    start_now: bool,
    seccomp_cache: Option<&Path>,
) -> io::Result<()> {
    // Before the fork: the cache is a host path.
    let filter = seccomp::prepare(&spec.linux.seccomp, seccomp_cache)?;
    let fifo = dir.join(EXEC_FIFO);
    sys::mkfifo(&fifo, 0o622)?;
    // Writable by the container's user whatever the umask; only the init reaches it, through
    // the descriptor it opened before the pivot (the directory is root's alone).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622)).map_err(|e| err_at("chmod", &fifo, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| err_at("chmod", dir, e))?;
    let cgroups = Cgroups::detect().map_err(io::Error::other)?;
    let rel = cgroup::relative(&spec.linux.cgroups_path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let at_parent: Vec<&str> = spec
        .annotations
        .get(flotilla_oci::CGROUPS_AT_PARENT)
        .map(|list| list.split(',').map(str::trim).filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    *placed = cgroups.create(&rel, &spec.linux.resources, &at_parent).map_err(io::Error::other)?;
    sys::cloexec_from_3();

    // Namespaces with a path are joined; the others are new. Open every path first.
    let mut joins = Vec::new();
    let mut fresh = UnshareFlags::empty();
    for ns in &spec.linux.namespaces {
        let (flag, join, kind) = ns_flag(&ns.kind)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown namespace {:?}", ns.kind)))?;
        match &ns.path {
            Some(p) => joins.push(Join { fd: sys::open(p, OFlags::RDONLY)?, ns: join, kind }),
            None => fresh |= flag,
        }
    }
    // The cgroup first: a new cgroup namespace is rooted where its creator stands.
    cgroup::join(&placed.all()).map_err(io::Error::other)?;
    for j in &joins {
        sys::setns(&j.fd, j.ns, j.kind)?;
    }
    // Mount and cgroup namespaces are the child's alone: a pivot_root in a namespace the
    // parent shared would move the parent's root too.
    let child_fresh = fresh & (UnshareFlags::NEWNS | UnshareFlags::NEWCGROUP);
    sys::unshare(fresh - child_fresh)?;
    if fresh.contains(UnshareFlags::NEWUTS)
        && let Some(h) = &spec.hostname
    {
        rustix::system::sethostname(h.as_bytes()).map_err(|e| io::Error::other(format!("sethostname: {e}")))?;
    }

    let (r, w) = sys::pipe()?;
    let pid = match sys::fork()? {
        Fork::Child => {
            drop(r);
            init::container_init(spec, &filter, &cgroups, child_fresh, &fifo, w)
        }
        Fork::Parent(pid) => pid,
    };
    drop(w);
    let report = read_report(r);
    if report != "ok" {
        let _ = sys::kill(pid, libc::SIGKILL);
        sys::waitpid(pid);
        let why = if report.is_empty() { "the container's init died during set-up".to_string() } else { report };
        return Err(io::Error::other(why));
    }
    let record = || -> io::Result<()> {
        let start_time = sys::start_time(pid).ok_or_else(|| io::Error::other("the container's init vanished"))?;
        let st = State {
            id: id.to_string(),
            pid,
            start_time,
            bundle: std::path::absolute(bundle)?,
            cgroups: placed.own.clone(),
            parent_cgroups: placed.parents.clone(),
        };
        st.save(root)?;
        if let Some(pf) = pid_file {
            std::fs::write(pf, pid.to_string()).map_err(|e| err_at("write", pf, e))?;
        }
        if start_now {
            start(root, id)?;
        }
        Ok(())
    };
    record().inspect_err(|_| {
        // Nobody would ever start or reap an init whose create failed.
        let _ = sys::kill(pid, libc::SIGKILL);
        sys::waitpid(pid);
    })
}

/// Completes the exec-FIFO hand-shake: the init's byte is read, the FIFO removed, and the
/// init execs the command.
pub fn start(root: &Path, id: &str) -> io::Result<()> {
    let st = load(root, id)?;
    let fifo = state::dir(root, id).join(EXEC_FIFO);
    if st.status(root) == Status::Stopped {
        return Err(io::Error::other(format!("container {id} has stopped")));
    }
    if !crate::fifo::complete_start(&fifo, &|| sys::alive(st.pid, st.start_time))? {
        return Err(io::Error::other(format!("container {id} is not in the created state")));
    }
    Ok(())
}

/// Signals the init, or with `all` every process in the container's cgroup.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> io::Result<()> {
    let st = load(root, id)?;
    if all {
        for pid in st.pids() {
            let _ = sys::kill(pid, signal);
        }
        return Ok(());
    }
    if st.status(root) == Status::Stopped {
        return Err(io::Error::other(format!("container {id} is not running")));
    }
    sys::kill(st.pid, signal).map_err(|e| io::Error::new(e.kind(), format!("signalling {id}: {e}")))
}

/// Removes the container: with `force` its processes are killed first; without it a live
/// container is refused.
pub fn delete(root: &Path, id: &str, force: bool) -> io::Result<()> {
    let dir = state::dir(root, id);
    let Some(st) = State::load(root, id)? else {
        if dir.exists() {
            // A create that died half-way: nothing ran, only the directory is left.
            return std::fs::remove_dir_all(&dir).map_err(|e| err_at("remove", &dir, e));
        }
        return Err(not_found(id));
    };
    if st.status(root) != Status::Stopped && !force {
        return Err(io::Error::other(format!("container {id} is still running; stop it or use --force")));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = st.pids();
        let init_alive = sys::alive(st.pid, st.start_time);
        if pids.is_empty() && !init_alive {
            break;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("container {id}: processes {pids:?} survive SIGKILL")));
        }
        for pid in pids {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        if init_alive {
            let _ = sys::kill(st.pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cgroup::remove(&st.cgroups, Duration::from_secs(5)).map_err(io::Error::other)?;
    std::fs::remove_dir_all(&dir).map_err(|e| err_at("remove", &dir, e))
}

/// The container's state as runc prints it.
pub fn state_json(root: &Path, id: &str) -> io::Result<String> {
    let st = load(root, id)?;
    let status = st.status(root);
    let pid = if status == Status::Stopped { 0 } else { st.pid };
    Ok(serde_json::json!({
        "ociVersion": flotilla_oci::OCI_VERSION,
        "id": st.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": st.bundle,
    })
    .to_string())
}

/// Runs `args` inside the running container with its process settings (user, capabilities,
/// seccomp, rlimits, environment, working directory, cgroup, namespaces); returns once it has
/// exec'd, writing its pid. With `console`, the process gets a new terminal of the container's
/// as its controlling terminal and stdio, whose master goes to that socket (runc's
/// `--console-socket`); without, it keeps this command's stdio. Either way it leads a session
/// of its own, so whoever ends it can kill what it started.
pub fn exec(
    root: &Path,
    id: &str,
    pid_file: Option<&Path>,
    args: Vec<String>,
    console: Option<&Path>,
    seccomp_cache: Option<&Path>,
) -> io::Result<()> {
    let st = load(root, id)?;
    if st.status(root) == Status::Stopped {
        return Err(io::Error::other(format!("container {id} is not running")));
    }
    let spec = read_spec(&st.bundle)?;
    let filter = seccomp::prepare(&spec.linux.seccomp, seccomp_cache)?;
    // Opened now: once in the container's mount namespace, host paths mean nothing.
    let pid_out = pid_file
        .map(|pf| std::fs::File::create(pf).map_err(|e| err_at("create", pf, e)).map(|f| (pf.to_path_buf(), f)))
        .transpose()?;
    sys::cloexec_from_3();
    // Connected now, while the path still means the host's socket.
    let console = console
        .map(|path| {
            std::os::unix::net::UnixStream::connect(path)
                .map(OwnedFd::from)
                .map_err(|e| err_at("connecting to the console socket", path, e))
        })
        .transpose()?;
    // The mount namespace last: entering it moves our root.
    let order = [
        ("cgroup", LinkNameSpaceType::ControlGroup),
        ("ipc", LinkNameSpaceType::InterProcessCommunication),
        ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
        ("net", LinkNameSpaceType::Network),
        ("pid", LinkNameSpaceType::ProcessID),
        ("mnt", LinkNameSpaceType::Mount),
    ];
    let mut joins = Vec::new();
    for (kind, ns) in order {
        let path = PathBuf::from(format!("/proc/{}/ns/{kind}", st.pid));
        joins.push(Join { fd: sys::open(&path, OFlags::RDONLY)?, ns, kind });
    }
    if !sys::alive(st.pid, st.start_time) {
        return Err(io::Error::other(format!("container {id} is not running")));
    }
    cgroup::join(&st.joined_cgroups()).map_err(io::Error::other)?;
    for j in &joins {
        sys::setns(&j.fd, j.ns, j.kind)?;
    }
    let mut process = spec.process.clone();
    process.args = args;
    let (r, w) = sys::pipe()?;
    let pid = match sys::fork()? {
        Fork::Child => {
            drop(r);
            if let Some(console) = console {
                // A forked child is never a group leader, so this cannot fail.
                let _ = rustix::process::setsid();
                if let Err(e) = crate::pty::attach_console(&console, process.user.uid) {
                    report_error(w, &e)
                }
                drop(console);
            }
            let e = init::exec_process(&process, &filter);
            report_error(w, &e)
        }
        Fork::Parent(pid) => pid,
    };
    drop(w);
    let report = read_report(r);
    if !report.is_empty() {
        sys::waitpid(pid);
        return Err(io::Error::other(report));
    }
    if let Some((pf, mut f)) = pid_out {
        use std::io::Write;
        f.write_all(pid.to_string().as_bytes()).map_err(|e| err_at("write", &pf, e))?;
    }
    Ok(())
}
