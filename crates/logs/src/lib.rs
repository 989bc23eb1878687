//! The log store: CloudWatch Logs' groups, streams and events, durable, in a redb file of its
//! own so that log volume never bloats the control-plane store.
//!
//! Writes go through one thread with group commit (see `writer.rs`): the agent's many small
//! appends share fsyncs, and an acknowledged write survives a crash. Reads are lock-free redb
//! snapshots. A byte budget bounds the disk the logs may take: past it, the oldest events of
//! the largest streams are dropped first. Retention is applied by [`LogStore::expire`], which
//! the server calls periodically.
//!
//! **Architecture Invariant:** this crate knows CloudWatch Logs' rules (names, batch limits,
//! retention values, token semantics) but not HTTP, JSON wire shapes or AWS error codes; `api`
//! maps [`LogError`] to those.

mod error;
mod filter;
mod page;
mod read;
mod record;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use redb::Database;
use tokio::sync::watch;

pub use error::LogError;
pub use filter::FilterPattern;
pub use page::Page;
pub use read::{
    EventQuery, EventsPage, FilterPage, FilterQuery, FilteredEvent, Follow, GroupQuery, StreamOrder, StreamQuery,
};
pub use record::{
    DAY_MS, EVENT_OVERHEAD, InputEvent, LogEvent, LogGroup, LogStream, Position, RETENTION_DAYS, check_group_name,
    check_retention, check_stream_name, now_millis,
};
use writer::Job;

/// Largest PutLogEvents batch: message bytes plus 26 per event.
pub const MAX_BATCH_BYTES: u64 = 1_048_576;
/// Most events in one PutLogEvents batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// PutLogEvents rejects events more than this far in the future...
pub const MAX_FUTURE_MS: i64 = 2 * 3_600_000;
/// ...or older than this.
pub const MAX_AGE_MS: i64 = 14 * DAY_MS;
/// The valid events of one batch may span at most this.
pub const MAX_BATCH_SPAN_MS: i64 = DAY_MS;

#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    /// Past this many stored bytes (messages plus 26 per event), the oldest events of the
    /// largest streams are dropped.
    pub byte_budget: u64,
}

impl Default for LogStoreOptions {
    fn default() -> LogStoreOptions {
        LogStoreOptions { byte_budget: 4 << 30 }
    }
}

/// A new log group.
#[derive(Clone, Debug, Default)]
pub struct NewLogGroup {
    pub name: String,
    /// `STANDARD` when absent.
    pub class: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub deletion_protection: bool,
}

/// Which events of a PutLogEvents batch were refused, as CloudWatch Logs reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Events from this index on were more than 2 hours in the future.
    pub too_new_start: Option<usize>,
    /// Events up to this index were older than 14 days.
    pub too_old_end: Option<usize>,
    /// Events up to this index were older than the group's retention.
    pub expired_end: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub next_sequence_token: String,
    /// `None` when every event was stored.
    pub rejected: Option<Rejected>,
}

pub struct LogStore {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` once dropped, which ends the writer thread.
    writer: Option<std_mpsc::Sender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Bumped after every committed batch; followers wait on it.
    changes: watch::Sender<u64>,
}

impl LogStore {
    /// Opens (or creates) the log store in directory `dir`, with the default byte budget.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore, LogError> {
        LogStore::open_with(dir, LogStoreOptions::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, options: LogStoreOptions) -> Result<LogStore, LogError> {
        let dir = dir.as_ref();
        let path = dir.join("logs.redb");
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| LogError::Open {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        let db = Database::create(&path).map_err(|e| open_err(Box::new(redb::Error::from(e))))?;
        // Create every table up front so that readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| open_err(Box::new(redb::Error::from(e))))?;
        writer::Batch::open(&txn).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(Box::new(redb::Error::from(e))))?;

        let db = Arc::new(db);
        let (changes, _) = watch::channel(0);
        let (writer, queue) = std_mpsc::channel();
        let (thread_db, thread_changes, budget) = (db.clone(), changes.clone(), options.byte_budget);
        let writer_thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer::write_loop(&thread_db, &queue, budget, &thread_changes))
            .map_err(|e| open_err(e.into()))?;
        Ok(LogStore { db, path, writer: Some(writer), writer_thread: Some(writer_thread), changes })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `op` for the writer and waits until its batch is durable.
    async fn write<T, F>(&self, op: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: for<'a, 't> FnOnce(&'a mut writer::Batch<'t>) -> Result<T, LogError> + Send + 'static,
    {
        let (job, answer) = writer::job(op);
        self.writer.as_ref().ok_or(LogError::Closed)?.send(job).map_err(|_| LogError::Closed)?;
        // A dropped answer means the writer could not even start the batch (it logged why).
        answer
            .await
            .map_err(|_| LogError::Backend { operation: "write", source: "the write was not applied".into() })?
    }

    pub async fn create_log_group(&self, spec: NewLogGroup) -> Result<(), LogError> {
        check_group_name(&spec.name)?;
        check_tags(&spec.tags)?;
        let group = LogGroup {
            id: 0,
            name: spec.name,
            creation_time: writer::creation_time(),
            retention_in_days: None,
            class: spec.class.unwrap_or_else(|| "STANDARD".to_owned()),
            deletion_protection: spec.deletion_protection,
            stored_bytes: 0,
            tags: spec.tags,
        };
        self.write(move |batch| {
            let name = group.name.clone();
            if batch.create_group(group)? { Ok(()) } else { Err(LogError::GroupExists { group: name }) }
        })
        .await
    }

    /// Deletes the group with all its streams and events.
    pub async fn delete_log_group(&self, name: &str) -> Result<(), LogError> {
        let name = name.to_owned();
        self.write(move |batch| batch.delete_group(&name)).await
    }

    /// Changes one group under the writer.
    async fn update_group(
        &self,
        name: &str,
        change: impl FnOnce(&mut LogGroup) -> Result<(), LogError> + Send + 'static,
    ) -> Result<(), LogError> {
        let name = name.to_owned();
        self.write(move |batch| {
            let mut group = batch.existing_group(&name)?;
            change(&mut group)?;
            batch.put_group(&group)
        })
        .await
    }

    pub async fn put_retention_policy(&self, name: &str, days: i32) -> Result<(), LogError> {
        check_retention(days)?;
        self.update_group(name, move |g| {
            g.retention_in_days = Some(days);
            Ok(())
        })
        .await
    }

    pub async fn delete_retention_policy(&self, name: &str) -> Result<(), LogError> {
        self.update_group(name, |g| {
            g.retention_in_days = None;
            Ok(())
        })
        .await
    }

    pub async fn put_deletion_protection(&self, name: &str, enabled: bool) -> Result<(), LogError> {
        self.update_group(name, move |g| {
            g.deletion_protection = enabled;
            Ok(())
        })
        .await
    }

    /// Adds or overwrites tags (at most 50 in all).
    pub async fn tag_log_group(&self, name: &str, tags: BTreeMap<String, String>) -> Result<(), LogError> {
        check_tags(&tags)?;
        self.update_group(name, move |g| {
            let mut merged = g.tags.clone();
            merged.extend(tags);
            check_tags(&merged)?;
            g.tags = merged;
            Ok(())
        })
        .await
    }

    pub async fn untag_log_group(&self, name: &str, keys: Vec<String>) -> Result<(), LogError> {
        self.update_group(name, move |g| {
            for key in &keys {
                g.tags.remove(key);
            }
            Ok(())
        })
        .await
    }

    pub async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), LogError> {
        let (group, stream) = (group.to_owned(), stream.to_owned());
        self.write(move |batch| {
            if batch.create_stream(&group, &stream, writer::creation_time())? {
                Ok(())
            } else {
                Err(LogError::StreamExists { group, stream })
            }
        })
        .await
    }

    pub async fn delete_log_stream(&self, group: &str, stream: &str) -> Result<(), LogError> {
        let (group, stream) = (group.to_owned(), stream.to_owned());
        self.write(move |batch| batch.delete_stream(&group, &stream)).await
    }

    /// PutLogEvents with CloudWatch Logs' rules: at most 10,000 events and 1,048,576 bytes
    /// (26 per event included), in chronological order; events more than 2 hours ahead of
    /// `now`, older than 14 days or older than the group's retention are reported in
    /// [`Rejected`] while the rest are stored; the stored ones may span at most 24 hours.
    pub async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: Vec<InputEvent>,
        now: i64,
    ) -> Result<PutOutcome, LogError> {
        if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
            return Err(LogError::invalid(format!(
                "logEvents must hold 1 to {MAX_BATCH_EVENTS} events, got {}.",
                events.len()
            )));
        }
        let bytes: u64 = events.iter().map(InputEvent::cost).sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(LogError::invalid(format!(
                "Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES} (message bytes plus 26 per event)."
            )));
        }
        if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
            return Err(LogError::invalid(
                "Log events in a single PutLogEvents request must be in chronological order.",
            ));
        }
        let (group, stream) = (group.to_owned(), stream.to_owned());
        self.write(move |batch| {
            let mut group = batch.existing_group(&group)?;
            let rejected = classify(&events, now, group.retention_in_days);
            let start = rejected.too_old_end.max(rejected.expired_end).map_or(0, |i| i + 1);
            let end = rejected.too_new_start.unwrap_or(events.len()).max(start);
            let valid = &events[start..end];
            if let (Some(first), Some(last)) = (valid.first(), valid.last())
                && last.timestamp - first.timestamp > MAX_BATCH_SPAN_MS
            {
                return Err(LogError::invalid(
                    "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
                ));
            }
            let appended = batch.append(&mut group, &stream, valid, now)?;
            Ok(PutOutcome {
                next_sequence_token: appended.stream.upload_sequence_token(),
                rejected: (rejected != Rejected::default()).then_some(rejected),
            })
        })
        .await
    }

    /// Creates the group unless it exists; `true` if this call created it.
    pub async fn ensure_group(&self, name: &str) -> Result<bool, LogError> {
        check_group_name(name)?;
        let group = LogGroup {
            id: 0,
            name: name.to_owned(),
            creation_time: writer::creation_time(),
            retention_in_days: None,
            class: "STANDARD".to_owned(),
            deletion_protection: false,
            stored_bytes: 0,
            tags: BTreeMap::new(),
        };
        self.write(move |batch| batch.create_group(group)).await
    }

    /// Creates the stream unless it exists (the group must exist); `true` if this call created it.
    pub async fn ensure_stream(&self, group: &str, stream: &str) -> Result<bool, LogError> {
        let (group, stream) = (group.to_owned(), stream.to_owned());
        self.write(move |batch| batch.create_stream(&group, &stream, writer::creation_time())).await
    }

    /// The agent's fast path: stores `events` in an existing stream with none of PutLogEvents'
    /// batch limits (any size, any order, any age). Empty messages are skipped, as CloudWatch
    /// Logs cannot hold them. Returns the position just after the latest event stored.
    pub async fn append(&self, group: &str, stream: &str, events: Vec<InputEvent>) -> Result<Position, LogError> {
        let (group, stream) = (group.to_owned(), stream.to_owned());
        self.write(move |batch| {
            let mut group = batch.existing_group(&group)?;
            Ok(batch.append(&mut group, &stream, &events, now_millis())?.end)
        })
        .await
    }

    /// Deletes every event older than its group's retention at `now` (ms); returns how many.
    pub async fn expire(&self, now: i64) -> Result<u64, LogError> {
        self.write(move |batch| batch.expire(now)).await
    }
}

impl Drop for LogStore {
    /// Finishes queued writes and releases the file, so that it can be reopened.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn classify(events: &[InputEvent], now: i64, retention_in_days: Option<i32>) -> Rejected {
    let too_old = now - MAX_AGE_MS;
    let expired = retention_in_days.map(|d| now - i64::from(d) * DAY_MS);
    let last_index = |pred: &dyn Fn(&InputEvent) -> bool| events.iter().rposition(pred);
    Rejected {
        too_new_start: events.iter().position(|e| e.timestamp > now + MAX_FUTURE_MS),
        too_old_end: last_index(&|e| e.timestamp < too_old),
        expired_end: expired.and_then(|cutoff| last_index(&|e| e.timestamp < cutoff)),
    }
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), LogError> {
    if tags.len() > 50 {
        return Err(LogError::invalid(format!(
            "A log group can have at most 50 tags; this would give it {}.",
            tags.len()
        )));
    }
    if let Some(key) = tags.keys().find(|k| k.to_ascii_lowercase().starts_with("aws:")) {
        return Err(LogError::invalid(format!("Tag keys may not start with 'aws:', which is reserved: '{key}'.")));
    }
    Ok(())
}
