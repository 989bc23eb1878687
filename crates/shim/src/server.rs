//! The socket: one thread per connection, JSON lines in and out (see
//! `flotilla_sandbox::protocol`). A `destroy` that succeeds ends the process after replying.

use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use flotilla_sandbox::protocol::{
    LOCK_FILE, Reply, Request, SOCKET_FILE, ShimError, ShimErrorKind, read_message, write_message,
};

use crate::reaper::Reaper;
use crate::runtime::Runtime;

/// Takes the task's lock file for the life of the process: one shim per task directory.
/// The descriptor is close-on-exec, so runc and containers never inherit the lock.
pub fn lock_task_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(format!("another shim already runs for {}", dir.display()));
    }
    Ok(f)
}

pub fn bind(dir: &Path) -> Result<UnixListener, String> {
    let path = dir.join(SOCKET_FILE);
    // We hold the lock: any socket file left is a dead shim's.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves connections, one thread each, on the calling thread, which from now on is the
/// reaper's too (see [`Reaper::reap_on_this_thread`]).
pub fn serve(listener: UnixListener, runtime: Arc<Runtime>, reaper: &Reaper) -> ! {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!(error = %e, "listener left blocking");
    }
    reaper.reap_on_this_thread(listener.as_fd(), || match listener.accept() {
        Ok((stream, _)) => {
            let rt = runtime.clone();
            let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || connection(stream, rt));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "spawning a connection thread");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => tracing::warn!(error = %e, "accept"),
    })
}

fn connection(stream: UnixStream, rt: Arc<Runtime>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let req: Request = match read_message(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let reply = Reply::Error(ShimError::new(ShimErrorKind::Protocol, format!("bad request: {e}")));
                let _ = write_message(&mut writer, &reply);
                return;
            }
        };
        if let Request::ExecStream { container, exec } = req {
            // The connection now belongs to the process: it carries its exit, and its end
            // ends the process.
            rt.exec_stream(&container, &exec, reader.get_ref());
            return;
        }
        let destroy = matches!(req, Request::Destroy);
        // What a create, a start or an exec allocates (specs, runtime output) is freed
        // by the time it replies, but glibc keeps the freed pages: give them back, since the
        // shim then idles for the life of the task.
        let trim = matches!(req, Request::Create { .. } | Request::Start { .. } | Request::Exec { .. });
        tracing::debug!(?req, "request");
        let reply = rt.handle(req);
        let _ = write_message(&mut writer, &reply);
        if trim {
            // SAFETY: malloc_trim only returns free heap pages to the kernel; any thread may call it.
            unsafe { libc::malloc_trim(0) };
        }
        if destroy && reply == Reply::Destroyed {
            tracing::info!("task destroyed; shim exiting");
            std::process::exit(0);
        }
    }
}
