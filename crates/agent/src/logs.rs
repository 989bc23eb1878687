//! The `awslogs` driver: container output from the shim's log files to log groups/streams,
//! through the host API (the logs live with the servers, not on the host).
//!
//! The shim writes each container's output as JSON lines; the agent ships whole lines from a
//! persisted byte offset, so a restart neither loses nor repeats events. Stream names follow
//! Fargate: `<awslogs-stream-prefix>/<container-name>/<task-id>`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flotilla_host::{HostApi, HostApiError, LogEvent};
use flotilla_types::task::Task;
use flotilla_types::task_definition::{ContainerDefinition, TaskDefinition};
use serde::Deserialize;

/// Most bytes read from one log file per pass, so one chatty container cannot stall the rest.
const MAX_READ: u64 = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct Line {
    t: i64,
    line: String,
}

struct Target {
    group: String,
    stream: String,
    create_group: bool,
}

fn target(def: &ContainerDefinition, task_id: &str) -> Option<Target> {
    let log = def.log_configuration.as_ref()?;
    if log.log_driver != "awslogs" {
        return None;
    }
    let options = log.options.as_ref()?;
    let group = options.get("awslogs-group")?.clone();
    let name = def.name.as_deref().unwrap_or_default();
    let stream = match options.get("awslogs-stream-prefix") {
        Some(prefix) => format!("{prefix}/{name}/{task_id}"),
        None => task_id.to_owned(),
    };
    let create_group = options.get("awslogs-create-group").is_some_and(|v| v == "true");
    Some(Target { group, stream, create_group })
}

pub(crate) struct Shipper {
    /// Where the output goes; `None` ships nothing (simulated hosts).
    sink: Option<Arc<dyn HostApi>>,
    offsets_dir: PathBuf,
    /// (task id, container) -> bytes of the current log file already shipped.
    offsets: Mutex<HashMap<(String, String), u64>>,
}

impl Shipper {
    pub fn new(sink: Option<Arc<dyn HostApi>>, state_dir: PathBuf) -> Shipper {
        Shipper { sink, offsets_dir: state_dir.join("log-offsets"), offsets: Mutex::new(HashMap::new()) }
    }

    /// Checks (or creates) every log group the task writes to. `Refused` carries the
    /// stoppedReason; any other error is the control plane's, worth a retry.
    pub async fn prepare(&self, task: &Task, definition: &TaskDefinition) -> Result<(), HostApiError> {
        let Some(sink) = &self.sink else { return Ok(()) };
        for def in &definition.container_definitions {
            let Some(t) = target(def, task.id()) else { continue };
            sink.ensure_log_group(&t.group, t.create_group).await?;
        }
        Ok(())
    }

    fn offset_file(&self, task_id: &str, container: &str) -> PathBuf {
        self.offsets_dir.join(format!("{task_id}.{container}"))
    }

    fn offset(&self, task_id: &str, container: &str) -> u64 {
        let key = (task_id.to_owned(), container.to_owned());
        let mut offsets = self.offsets.lock().expect("offsets poisoned");
        *offsets.entry(key).or_insert_with(|| {
            std::fs::read_to_string(self.offset_file(task_id, container))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        })
    }

    fn set_offset(&self, task_id: &str, container: &str, offset: u64) {
        self.offsets.lock().expect("offsets poisoned").insert((task_id.to_owned(), container.to_owned()), offset);
        let path = self.offset_file(task_id, container);
        let _ = std::fs::create_dir_all(&self.offsets_dir);
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, offset.to_string()).is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }

    /// Whether any container of the task ships its output (and so wants regular passes).
    pub fn ships(&self, task_id: &str, definition: &TaskDefinition) -> bool {
        self.sink.is_some() && definition.container_definitions.iter().any(|d| target(d, task_id).is_some())
    }

    /// Ships whatever new output every awslogs container has written.
    pub async fn ship(&self, task: &Task, definition: &TaskDefinition, log_path: impl Fn(&str) -> PathBuf) {
        let Some(sink) = &self.sink else { return };
        for def in &definition.container_definitions {
            let Some(t) = target(def, task.id()) else { continue };
            let name = def.name.as_deref().unwrap_or_default();
            let path = log_path(name);
            let offset = self.offset(task.id(), name);
            let Ok((events, new_offset)) = read_new(&path, offset) else { continue };
            if events.is_empty() && new_offset == offset {
                continue;
            }
            let events = events.into_iter().map(|(timestamp, message)| LogEvent { timestamp, message }).collect();
            match sink.put_logs(&t.group, &t.stream, events).await {
                Ok(()) => self.set_offset(task.id(), name, new_offset),
                Err(e) => {
                    tracing::warn!(task = task.id(), container = name, error = %e, "log shipping failed; will retry")
                }
            }
        }
    }

    pub fn forget(&self, task_id: &str) {
        let mut offsets = self.offsets.lock().expect("offsets poisoned");
        let containers: Vec<String> = offsets.keys().filter(|(t, _)| t == task_id).map(|(_, c)| c.clone()).collect();
        for c in containers {
            offsets.remove(&(task_id.to_owned(), c.clone()));
            let _ = std::fs::remove_file(self.offset_file(task_id, &c));
        }
    }
}

/// Complete lines after `offset`; when the file is shorter than `offset` it was rotated, and
/// the rest of the rotated file (`<path>.1`) is read first.
fn read_new(path: &Path, offset: u64) -> std::io::Result<(Vec<(i64, String)>, u64)> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut events = Vec::new();
    let mut start = offset;
    if len < offset {
        let rotated = PathBuf::from(format!("{}.1", path.display()));
        if let Ok(bytes) = read_range(&rotated, offset, u64::MAX) {
            parse_complete(&bytes, &mut events);
        }
        start = 0;
    }
    let bytes = read_range(path, start, MAX_READ)?;
    let consumed = parse_complete(&bytes, &mut events);
    Ok((events, start + consumed as u64))
}

fn read_range(path: &Path, from: u64, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Parses whole lines into events; returns the bytes consumed (up to the last newline).
fn parse_complete(bytes: &[u8], events: &mut Vec<(i64, String)>) -> usize {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return 0 };
    for raw in bytes[..end].split(|b| *b == b'\n') {
        if let Ok(line) = serde_json::from_slice::<Line>(raw) {
            events.push((line.t, line.line));
        }
    }
    end + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_only_whole_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(
            &path,
            "{\"t\":1,\"stream\":\"stdout\",\"line\":\"a\"}\n{\"t\":2,\"stream\":\"stdout\",\"line\":\"b",
        )
        .unwrap();
        let (events, offset) = read_new(&path, 0).unwrap();
        assert_eq!(events, vec![(1, "a".to_owned())]);
        // The partial line completes later.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"\"}\n").unwrap();
        let (events, offset2) = read_new(&path, offset).unwrap();
        assert_eq!(events, vec![(2, "b".to_owned())]);
        // Rotation: the old file becomes .1 with one more line; a new file starts.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"{\"t\":3,\"stream\":\"stderr\",\"line\":\"c\"}\n").unwrap();
        std::fs::rename(&path, dir.path().join("log.jsonl.1")).unwrap();
        std::fs::write(&path, "{\"t\":4,\"stream\":\"stdout\",\"line\":\"d\"}\n").unwrap();
        let (events, _) = read_new(&path, offset2).unwrap();
        assert_eq!(events, vec![(3, "c".to_owned()), (4, "d".to_owned())]);
    }
}
