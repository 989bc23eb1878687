//! Pseudo-terminals and descriptor passing for interactive exec: the runtime allocates a
//! process's terminal inside the container (from the container's own `/dev/pts`) and sends
//! its master over a console socket with `SCM_RIGHTS`, as runc does; the shim passes the
//! master (or pipe ends) on to the agent the same way. Shared by the runtime, the shim and
//! the sandbox's client, so one side's message is exactly what the other expects.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Most descriptors one message carries (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Sends `data` with `fds` attached, in one message (the fds arrive with its first byte).
pub fn send_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    let mut sent = 0;
    while sent < data.len() {
        let n = loop {
            match rustix::net::sendmsg(socket, &[IoSlice::new(&data[sent..])], &mut control, SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        // The descriptors went with the first chunk.
        control = SendAncillaryBuffer::new(&mut []);
        sent += n;
    }
    Ok(())
}

/// Receives one chunk into `buf` and the descriptors attached to it (close-on-exec).
/// `Ok((0, _))` is the end of the stream.
pub fn recv_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok((msg.bytes, fds))
}

/// Sets a terminal's size (on the master or the slave).
pub fn set_size(tty: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A new pseudo-terminal from the `/dev/ptmx` of the current mount namespace: the master and
/// the slave's path (`/dev/pts/N`).
pub fn open_pty() -> io::Result<(OwnedFd, String)> {
    let master = rustix::fs::open("/dev/ptmx", OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("open /dev/ptmx: {e}")))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int; TIOCGPTN writes one; both pointers are valid.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::other(format!("unlocking the pty: {}", io::Error::last_os_error())));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: as above.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(io::Error::other(format!("naming the pty: {}", io::Error::last_os_error())));
    }
    Ok((master, format!("/dev/pts/{n}")))
}

/// In a fresh session's leader: a new terminal in the container becomes the process's
/// controlling terminal and its stdin, stdout and stderr (owned by `uid`, as runc leaves it);
/// the master goes out over `console` and is closed here.
pub fn attach_console(console: &OwnedFd, uid: u32) -> io::Result<()> {
    let (master, slave_path) = open_pty()?;
    let slave = rustix::fs::open(Path::new(&slave_path), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("open {slave_path}: {e}")))?;
    // SAFETY: plain ioctl on a descriptor we own.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::other(format!("TIOCSCTTY: {}", io::Error::last_os_error())));
    }
    // SAFETY: fchown on a descriptor we own; -1 keeps the group.
    if unsafe { libc::fchown(slave.as_raw_fd(), uid, u32::MAX) } < 0 {
        return Err(io::Error::other(format!("chown {slave_path}: {}", io::Error::last_os_error())));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; the old ones are closed by it.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(io::Error::other(format!("dup2: {}", io::Error::last_os_error())));
        }
    }
    send_fds(console.as_fd(), slave_path.as_bytes(), &[master.as_fd()])
        .map_err(|e| io::Error::new(e.kind(), format!("sending the pty master: {e}")))
}

/// Receives a pty master sent by a runtime (runc's console socket protocol: one message,
/// the terminal's name, the master attached).
pub fn recv_master(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let (_, mut fds) = recv_fds(socket, &mut buf)?;
    if fds.len() != 1 {
        return Err(io::Error::other(format!("the console socket carried {} descriptors, not one", fds.len())));
    }
    Ok(fds.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        send_fds(a.as_fd(), b"hello\n", &[w.as_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, mut fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 1);
        let w = fds.remove(0);
        rustix::io::write(&w, b"x").unwrap();
        let mut got = [0u8; 1];
        rustix::io::read(&r, &mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn a_pty_takes_a_size() {
        let (master, name) = open_pty().unwrap();
        assert!(name.starts_with("/dev/pts/"));
        set_size(master.as_fd(), 100, 30).unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        assert!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
    }
}
