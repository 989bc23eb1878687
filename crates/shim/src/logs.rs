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

    pub fn sync(&mut self) {
        if self.dirty {
            let _ = self.file.sync_data();
            self.dirty = false;
        }
    }
}

/// Syncs every open log once a second, so a burst of lines costs one fsync.
#[derive(Default)]
pub struct Syncer {
    logs: Mutex<Vec<Weak<Mutex<LogFile>>>>,
}

impl Syncer {
    pub fn start() -> Arc<Syncer> {
        let s = Arc::new(Syncer::default());
        let weak = Arc::downgrade(&s);
        std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(s) = weak.upgrade() else { return };
                    let logs: Vec<SharedLog> = {
                        let mut list = s.logs.lock().unwrap_or_else(|e| e.into_inner());
                        list.retain(|w| w.strong_count() > 0);
                        list.iter().filter_map(Weak::upgrade).collect()
                    };
                    for log in logs {
                        log.lock().unwrap_or_else(|e| e.into_inner()).sync();
                    }
                }
            })
            .expect("spawning the log syncer");
        s
    }

    pub fn register(&self, log: &SharedLog) {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(log));
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

/// Copies one stream into the log until EOF, then reports on `done`.
pub fn pump(mut reader: File, stream: &'static str, log: SharedLog, done: Sender<()>) {
    let limits = log.lock().unwrap_or_else(|e| e.into_inner()).limits;
    std::thread::Builder::new()
        .name(format!("log-{stream}"))
        .spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => 0,
                };
                let t = now_millis();
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    if !pending.is_empty() {
                        let _ = log.write_line(stream, t, &pending);
                    }
                    log.sync();
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
                for line in split_lines(&mut pending, limits.max_line) {
                    if let Err(e) = log.write_line(stream, t, &line) {
                        tracing::warn!(error = %e, "writing container log");
                    }
                }
            }
            let _ = done.send(());
        })
        .expect("spawning a log pump");
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
