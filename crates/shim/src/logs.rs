//! Container output -> `log.jsonl`. The container writes into FIFOs the shim reads; each line
//! becomes `{"t": epoch_ms, "stream": ..., "line": ...}`. Bounded on every axis: a line longer
//! than `max_line` is split, the file rotates to `log.jsonl.1` (one generation kept) past
//! `max_file`, and fsync is batched by a background syncer rather than done per line.
//!
//! Why FIFOs and not pipes: the container holds its end opened read-write, so if the shim
//! dies its writes do not fail with EPIPE (they block once the 64 KiB buffer is full), and a
//! new shim can open the same FIFOs and carry on reading.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, poll};
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_line: usize,
    pub max_file: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_line: 256 << 10, max_file: 64 << 20 }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    t: u64,
    stream: &'a str,
    line: &'a str,
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    dirty: bool,
    limits: LogLimits,
}

pub type SharedLog = Arc<Mutex<LogFile>>;

impl LogFile {
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { path: path.to_path_buf(), file, size, dirty: false, limits })
    }

    pub fn write_line(&mut self, stream: &str, t: u64, line: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let mut json = serde_json::to_vec(&Record { t, stream, line: &text }).map_err(io::Error::other)?;
        json.push(b'\n');
        if self.size > 0 && self.size + json.len() as u64 > self.limits.max_file {
            self.rotate()?;
        }
        self.file.write_all(&json)?;
        self.size += json.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let _ = self.file.sync_data();
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Syncs the file if lines were written since the last sync; says whether they were.
    pub fn sync(&mut self) -> bool {
        if !self.dirty {
            return false;
        }
        let _ = self.file.sync_data();
        self.dirty = false;
        true
    }
}

/// Syncs every dirty log once a second, so a burst of lines costs one fsync.
///
/// Its thread runs only while logs are being written: an idle task (most of a host's tasks)
/// has no syncer thread at all, since every thread a shim keeps is kernel and stack memory
/// paid once per task. A pump calls [`Syncer::wake`] after writing; the thread exits after a
/// pass that found nothing to sync and no wake since it began.
#[derive(Default)]
pub struct Syncer {
    state: Mutex<SyncerState>,
}

#[derive(Default)]
struct SyncerState {
    logs: Vec<Weak<Mutex<LogFile>>>,
    running: bool,
    /// A pump wrote since the thread's current pass began.
    woken: bool,
}

impl Syncer {
    pub fn new() -> Arc<Syncer> {
        Arc::new(Syncer::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, log: &SharedLog) {
        self.lock().logs.push(Arc::downgrade(log));
    }

    /// Says that a log has unsynced lines: starts the thread unless it runs.
    pub fn wake(self: &Arc<Self>) {
        let mut state = self.lock();
        state.woken = true;
        if state.running {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("log-sync".into()).spawn(move || Self::run(weak));
        match spawned {
            Ok(_) => state.running = true,
            // The lines are written; only their fsync waits for the next wake.
            Err(e) => tracing::warn!(error = %e, "spawning the log syncer"),
        }
    }

    fn run(weak: Weak<Syncer>) {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(s) = weak.upgrade() else { return };
            let logs: Vec<SharedLog> = {
                let mut state = s.lock();
                state.woken = false;
                state.logs.retain(|w| w.strong_count() > 0);
                state.logs.iter().filter_map(Weak::upgrade).collect()
            };
            let mut synced = false;
            for log in logs {
                synced |= log.lock().unwrap_or_else(|e| e.into_inner()).sync();
            }
            let mut state = s.lock();
            if !synced && !state.woken {
                state.running = false;
                return;
            }
        }
    }
}

/// Creates the container's stdout and stderr FIFOs (idempotent).
pub fn make_fifos(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let out = dir.join("stdout.fifo");
    let err = dir.join("stderr.fifo");
    for p in [&out, &err] {
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        match rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, mode, 0) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((out, err))
}

/// The container's end: read-write, so that it never sees EPIPE and opening never blocks.
pub fn open_writer(fifo: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(fifo)
}

/// Our end. Opened non-blocking (a read-only open would otherwise wait for a writer), then
/// switched to blocking reads: EOF means every writer is gone.
pub fn open_reader(fifo: &Path) -> io::Result<File> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(fifo)?;
    let flags = rustix::fs::fcntl_getfl(&f)?;
    rustix::fs::fcntl_setfl(&f, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(f)
}

/// One stream of a container's output being read: its FIFO and its unfinished line.
struct Stream {
    name: &'static str,
    reader: File,
    pending: Vec<u8>,
    open: bool,
}

/// Copies a container's streams (stdout and stderr) into its log on one thread, reporting on
/// `done` as each reaches EOF. One thread for both rather than one each: a shim's threads are
/// paid once per task (kernel stack, task struct, touched stack pages), and an idle task's
/// pumps only ever wait.
pub fn pump(
    streams: Vec<(&'static str, File)>,
    log: SharedLog,
    syncer: Arc<Syncer>,
    done: Sender<()>,
) -> io::Result<()> {
    let limits = log.lock().unwrap_or_else(|e| e.into_inner()).limits;
    let mut streams: Vec<Stream> =
        streams.into_iter().map(|(name, reader)| Stream { name, reader, pending: Vec::new(), open: true }).collect();
    std::thread::Builder::new().name("log-pump".into()).spawn(move || {
        // Allocated on the first output, so an idle container's pump holds no buffer.
        let mut chunk = Vec::new();
        while streams.iter().any(|s| s.open) {
            let ready = {
                let mut fds: Vec<PollFd<'_>> =
                    streams.iter().filter(|s| s.open).map(|s| PollFd::new(&s.reader, PollFlags::IN)).collect();
                match poll(&mut fds, None) {
                    Ok(_) => fds.iter().map(|f| !f.revents().is_empty()).collect::<Vec<_>>(),
                    Err(rustix::io::Errno::INTR) => continue,
                    // Not expected for two open descriptors; read them blocking, as before.
                    Err(_) => vec![true; fds.len()],
                }
            };
            let mut wrote = false;
            for (s, ready) in streams.iter_mut().filter(|s| s.open).zip(ready) {
                if !ready {
                    continue;
                }
                if chunk.is_empty() {
                    chunk = vec![0u8; 64 << 10];
                }
                let n = match s.reader.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => continue,
                    Err(_) => 0,
                };
                let t = now_millis();
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    if !s.pending.is_empty() {
                        let _ = log.write_line(s.name, t, &s.pending);
                    }
                    log.sync();
                    s.open = false;
                    let _ = done.send(());
                    continue;
                }
                s.pending.extend_from_slice(&chunk[..n]);
                for line in split_lines(&mut s.pending, limits.max_line) {
                    if let Err(e) = log.write_line(s.name, t, &line) {
                        tracing::warn!(error = %e, "writing container log");
                    }
                    wrote = true;
                }
            }
            if wrote {
                syncer.wake();
            }
        }
    })?;
    Ok(())
}

/// Takes every complete line out of `pending`, and cuts over-long partial lines into
/// `max_line`-byte pieces (at a UTF-8 boundary where possible).
fn split_lines(pending: &mut Vec<u8>, max_line: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rest = &pending[start..];
        if let Some(pos) = rest.iter().take(max_line + 1).position(|b| *b == b'\n') {
            out.push(rest[..pos].to_vec());
            start += pos + 1;
        } else if rest.len() > max_line {
            let mut cut = max_line;
            // Do not start the next piece on a UTF-8 continuation byte (back up at most 3).
            while cut > 0 && max_line - cut < 3 && (rest[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            if cut == 0 {
                cut = max_line;
            }
            out.push(rest[..cut].to_vec());
            start += cut;
        } else {
            break;
        }
    }
    pending.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_lines_and_keeps_the_partial_one() {
        let mut p = b"one\ntwo\nthr".to_vec();
        assert_eq!(split_lines(&mut p, 100), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(p, b"thr");
    }

    #[test]
    fn cuts_long_lines_at_utf8_boundaries() {
        let mut p = "aé".repeat(5).into_bytes(); // 15 bytes, no newline
        let lines = split_lines(&mut p, 4);
        for l in &lines {
            assert!(std::str::from_utf8(l).is_ok(), "{l:?}");
            assert!(l.len() <= 4);
        }
        let mut joined: Vec<u8> = lines.concat();
        joined.extend_from_slice(&p);
        assert_eq!(joined, "aé".repeat(5).into_bytes());
        let mut p = b"0123456789\nab".to_vec();
        assert_eq!(split_lines(&mut p, 4), vec![b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]);
    }

    #[test]
    fn rotates_past_the_size_cap_keeping_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = LogFile::open(&path, LogLimits { max_line: 100, max_file: 200 }).unwrap();
        for i in 0..20 {
            log.write_line("stdout", 1, format!("line {i:02} {}", "x".repeat(20)).as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("log.jsonl.1")).unwrap();
        assert!(current.len() <= 200 && old.len() <= 200);
        assert!(current.contains("line 19"));
        assert!(!dir.path().join("log.jsonl.2").exists());
        let rec: serde_json::Value = serde_json::from_str(current.lines().next().unwrap()).unwrap();
        assert_eq!(rec["stream"], "stdout");
        assert_eq!(rec["t"], 1);
    }
}
