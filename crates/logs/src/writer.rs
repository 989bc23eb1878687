//! The single writer: group commit over one redb file, and the mutations a batch can apply.
//!
//! Every write is a closure queued to one thread. The thread drains whatever is queued, runs the
//! closures in order inside one redb write transaction, trims the store to its byte budget,
//! commits once (one fsync for the whole batch, `Durability::Immediate`) and only then answers
//! the callers. Many small appends from many containers therefore cost one fsync per batch,
//! and an acknowledged write is durable.
//!
//! A closure either fails before it changes anything (not found, invalid) or succeeds; a
//! storage failure half-way aborts the whole batch, so nothing partial is ever committed.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::mpsc as std_mpsc;

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::watch;

use crate::error::backend;
use crate::record::{
    self, EVENTS, GROUPS, InputEvent, LogGroup, LogStream, META, NEXT_GROUP_ID, NEXT_SEQ, NEXT_STREAM_ID, Position,
    STORED_BYTES, STREAMS,
};
use crate::{LogError, now_millis};

/// Most writes one batch (one fsync) takes.
const MAX_BATCH: usize = 256;

/// Called once the batch a write was part of has committed (`Ok`) or failed as a whole.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), &LogError>) + Send>;
pub(crate) type Job = Box<dyn for<'a, 't> FnOnce(&'a mut Batch<'t>) -> Completion + Send>;

/// The open tables of one write transaction, and counters cached for its duration.
pub(crate) struct Batch<'t> {
    groups: Table<'t, &'static str, &'static [u8]>,
    streams: Table<'t, (u64, &'static str), &'static [u8]>,
    events: Table<'t, (u64, i64, u64), &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    next_group_id: u64,
    next_stream_id: u64,
    next_seq: u64,
    stored_bytes: u64,
    /// Set when a write failed inside the storage: the batch must not commit.
    pub(crate) poisoned: bool,
}

/// What [`Batch::append`] stored.
pub(crate) struct Appended {
    pub(crate) end: Position,
    pub(crate) stream: LogStream,
}

fn counter(meta: &Table<'_, &'static str, u64>, key: &str, default: u64) -> Result<u64, LogError> {
    Ok(meta.get(key).map_err(backend("read counters"))?.map(|v| v.value()).unwrap_or(default))
}

impl<'t> Batch<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Batch<'t>, LogError> {
        let op = "open tables";
        let meta = txn.open_table(META).map_err(backend(op))?;
        Ok(Batch {
            next_group_id: counter(&meta, NEXT_GROUP_ID, 1)?,
            next_stream_id: counter(&meta, NEXT_STREAM_ID, 1)?,
            next_seq: counter(&meta, NEXT_SEQ, 1)?,
            stored_bytes: counter(&meta, STORED_BYTES, 0)?,
            groups: txn.open_table(GROUPS).map_err(backend(op))?,
            streams: txn.open_table(STREAMS).map_err(backend(op))?,
            events: txn.open_table(EVENTS).map_err(backend(op))?,
            meta,
            poisoned: false,
        })
    }

    fn finish(mut self) -> Result<(), LogError> {
        let op = "write counters";
        self.meta.insert(NEXT_GROUP_ID, self.next_group_id).map_err(backend(op))?;
        self.meta.insert(NEXT_STREAM_ID, self.next_stream_id).map_err(backend(op))?;
        self.meta.insert(NEXT_SEQ, self.next_seq).map_err(backend(op))?;
        self.meta.insert(STORED_BYTES, self.stored_bytes).map_err(backend(op))?;
        Ok(())
    }

    pub(crate) fn group(&self, name: &str) -> Result<Option<LogGroup>, LogError> {
        match self.groups.get(name).map_err(backend("read group"))? {
            Some(raw) => Ok(Some(record::from_json(name, raw.value())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn existing_group(&self, name: &str) -> Result<LogGroup, LogError> {
        self.group(name)?.ok_or_else(|| LogError::GroupNotFound { group: name.to_owned() })
    }

    pub(crate) fn put_group(&mut self, group: &LogGroup) -> Result<(), LogError> {
        self.groups.insert(group.name.as_str(), record::to_json(group).as_slice()).map_err(backend("write group"))?;
        Ok(())
    }

    pub(crate) fn stream(&self, group: &LogGroup, name: &str) -> Result<Option<LogStream>, LogError> {
        match self.streams.get((group.id, name)).map_err(backend("read stream"))? {
            Some(raw) => Ok(Some(record::from_json(name, raw.value())?)),
            None => Ok(None),
        }
    }

    fn put_stream(&mut self, stream: &LogStream) -> Result<(), LogError> {
        self.streams
            .insert((stream.group_id, stream.name.as_str()), record::to_json(stream).as_slice())
            .map_err(backend("write stream"))?;
        Ok(())
    }

    /// Creates the group; `Ok(false)` if it already existed (and is left as it was).
    pub(crate) fn create_group(&mut self, mut group: LogGroup) -> Result<bool, LogError> {
        record::check_group_name(&group.name)?;
        if self.group(&group.name)?.is_some() {
            return Ok(false);
        }
        group.id = self.next_group_id;
        self.next_group_id += 1;
        self.put_group(&group)?;
        Ok(true)
    }

    pub(crate) fn delete_group(&mut self, name: &str) -> Result<(), LogError> {
        let group = self.existing_group(name)?;
        if group.deletion_protection {
            return Err(LogError::DeletionProtected { group: name.to_owned() });
        }
        for stream in self.streams_of(group.id)? {
            self.drop_stream(&stream)?;
        }
        self.groups.remove(name).map_err(backend("delete group"))?;
        Ok(())
    }

    fn streams_of(&self, group_id: u64) -> Result<Vec<LogStream>, LogError> {
        let mut out = Vec::new();
        for item in self.streams.range((group_id, "")..(group_id + 1, "")).map_err(backend("list streams"))? {
            let (k, v) = item.map_err(backend("list streams"))?;
            out.push(record::from_json(k.value().1, v.value())?);
        }
        Ok(out)
    }

    /// Creates the stream; `Ok(false)` if it already existed.
    pub(crate) fn create_stream(&mut self, group: &str, name: &str, now: i64) -> Result<bool, LogError> {
        record::check_stream_name(name)?;
        let group = self.existing_group(group)?;
        if self.stream(&group, name)?.is_some() {
            return Ok(false);
        }
        let stream = LogStream {
            id: self.next_stream_id,
            group_id: group.id,
            name: name.to_owned(),
            creation_time: now,
            first_event_timestamp: None,
            last_event_timestamp: None,
            last_ingestion_time: None,
            stored_bytes: 0,
            uploads: 0,
        };
        self.next_stream_id += 1;
        self.put_stream(&stream)?;
        Ok(true)
    }

    pub(crate) fn delete_stream(&mut self, group: &str, name: &str) -> Result<(), LogError> {
        let mut group = self.existing_group(group)?;
        let stream = self
            .stream(&group, name)?
            .ok_or_else(|| LogError::StreamNotFound { group: group.name.clone(), stream: name.to_owned() })?;
        self.drop_stream(&stream)?;
        group.stored_bytes = group.stored_bytes.saturating_sub(stream.stored_bytes);
        self.put_group(&group)
    }

    /// Removes a stream and its events; the caller fixes up its group's byte count.
    fn drop_stream(&mut self, stream: &LogStream) -> Result<(), LogError> {
        let range = Position::START.key(stream.id)..Position::END.key(stream.id);
        self.events.retain_in(range, |_, _| false).map_err(backend("delete events"))?;
        self.streams.remove((stream.group_id, stream.name.as_str())).map_err(backend("delete stream"))?;
        self.stored_bytes = self.stored_bytes.saturating_sub(stream.stored_bytes);
        Ok(())
    }

    /// Stores `events` (any order) in an existing stream, ingested at `now`.
    pub(crate) fn append(
        &mut self,
        group: &mut LogGroup,
        stream: &str,
        events: &[InputEvent],
        now: i64,
    ) -> Result<Appended, LogError> {
        let mut stream = self
            .stream(group, stream)?
            .ok_or_else(|| LogError::StreamNotFound { group: group.name.clone(), stream: stream.to_owned() })?;
        let mut end = Position::START;
        let mut bytes = 0;
        for event in events.iter().filter(|e| !e.message.is_empty()) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let key = (stream.id, event.timestamp, seq);
            self.events.insert(key, record::encode_event(now, &event.message).as_slice()).map_err(backend("append"))?;
            bytes += event.cost();
            end = end.max(Position { timestamp: event.timestamp, seq: seq + 1 });
            stream.first_event_timestamp =
                Some(stream.first_event_timestamp.map_or(event.timestamp, |t| t.min(event.timestamp)));
            stream.last_event_timestamp =
                Some(stream.last_event_timestamp.map_or(event.timestamp, |t| t.max(event.timestamp)));
        }
        if bytes > 0 {
            stream.last_ingestion_time = Some(now);
            stream.stored_bytes += bytes;
            group.stored_bytes += bytes;
            self.stored_bytes += bytes;
            self.put_group(group)?;
        }
        stream.uploads += 1;
        self.put_stream(&stream)?;
        Ok(Appended { end, stream })
    }

    /// Deletes the events older than each group's retention; returns how many.
    pub(crate) fn expire(&mut self, now: i64) -> Result<u64, LogError> {
        let mut groups = Vec::new();
        for item in self.groups.iter().map_err(backend("list groups"))? {
            let (k, v) = item.map_err(backend("list groups"))?;
            groups.push(record::from_json::<LogGroup>(k.value(), v.value())?);
        }
        let mut removed = 0;
        for mut group in groups {
            let Some(days) = group.retention_in_days else { continue };
            let cutoff = Position::at_time(now.saturating_sub(i64::from(days) * record::DAY_MS));
            let mut freed = 0;
            for mut stream in self.streams_of(group.id)? {
                let (count, bytes) = self.trim_stream(&mut stream, cutoff, u64::MAX)?;
                removed += count;
                freed += bytes;
            }
            if freed > 0 {
                group.stored_bytes = group.stored_bytes.saturating_sub(freed);
                self.put_group(&group)?;
            }
        }
        Ok(removed)
    }

    /// Removes the oldest events of `stream` that lie before `before`, until at least `want`
    /// bytes are gone; saves the stream and returns (events, bytes) removed. The group's byte
    /// count is the caller's to fix.
    fn trim_stream(&mut self, stream: &mut LogStream, before: Position, want: u64) -> Result<(u64, u64), LogError> {
        let (mut count, mut bytes) = (0, 0);
        {
            let range = Position::START.key(stream.id)..before.key(stream.id);
            // Extraction removes exactly the entries read from it.
            let mut doomed = self.events.extract_from_if(range, |_, _| true).map_err(backend("trim"))?;
            while bytes < want {
                let Some(item) = doomed.next() else { break };
                let (_, v) = item.map_err(backend("trim"))?;
                count += 1;
                bytes += record::stored_cost(v.value());
            }
        }
        if count == 0 {
            return Ok((0, 0));
        }
        let rest = Position::START.key(stream.id)..Position::END.key(stream.id);
        stream.first_event_timestamp = match self.events.range(rest).map_err(backend("trim"))?.next() {
            Some(item) => Some(item.map_err(backend("trim"))?.0.value().1),
            None => None,
        };
        stream.stored_bytes = stream.stored_bytes.saturating_sub(bytes);
        self.stored_bytes = self.stored_bytes.saturating_sub(bytes);
        self.put_stream(stream)?;
        Ok((count, bytes))
    }

    /// Drops the oldest events of the largest streams until the store is within `budget`.
    fn enforce_budget(&mut self, budget: u64) -> Result<(), LogError> {
        if self.stored_bytes <= budget {
            return Ok(());
        }
        // Trim a little below the budget so that the next batches do not each trim again.
        let target = budget - budget / 100;
        let mut group_names = HashMap::new();
        for item in self.groups.iter().map_err(backend("list groups"))? {
            let (k, v) = item.map_err(backend("list groups"))?;
            let group: LogGroup = record::from_json(k.value(), v.value())?;
            group_names.insert(group.id, group.name);
        }
        let mut heap = BinaryHeap::new();
        for item in self.streams.iter().map_err(backend("list streams"))? {
            let (k, v) = item.map_err(backend("list streams"))?;
            let stream: LogStream = record::from_json(k.value().1, v.value())?;
            if stream.stored_bytes > 0 {
                heap.push((stream.stored_bytes, stream.id, StreamByBytes(stream)));
            }
        }
        let mut freed_per_group: BTreeMap<u64, u64> = BTreeMap::new();
        let mut dropped = 0;
        while self.stored_bytes > target {
            let Some((_, _, StreamByBytes(mut stream))) = heap.pop() else { break };
            let runner_up = heap.peek().map_or(0, |(bytes, _, _)| *bytes);
            let excess = self.stored_bytes - target;
            let start = stream.stored_bytes;
            // Take the stream down to the next largest one (at least 64 KiB at a time, so equal
            // streams are not trimmed one event each), or just what the budget needs.
            let want = excess.min(start.saturating_sub(runner_up).max(64 * 1024));
            let (count, bytes) = self.trim_stream(&mut stream, Position::END, want)?;
            dropped += count;
            *freed_per_group.entry(stream.group_id).or_default() += bytes;
            if count > 0 && stream.stored_bytes > 0 {
                heap.push((stream.stored_bytes, stream.id, StreamByBytes(stream)));
            }
        }
        for (group_id, freed) in freed_per_group {
            let Some(name) = group_names.get(&group_id) else { continue };
            if let Some(mut group) = self.group(name)? {
                group.stored_bytes = group.stored_bytes.saturating_sub(freed);
                self.put_group(&group)?;
            }
        }
        tracing::warn!(
            dropped,
            budget,
            "log store over its byte budget: dropped the oldest events of the largest streams"
        );
        Ok(())
    }
}

/// Heap entries compare by (bytes, id) only.
struct StreamByBytes(LogStream);

impl PartialEq for StreamByBytes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for StreamByBytes {}
impl PartialOrd for StreamByBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StreamByBytes {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Runs until every sender (the store) is gone.
pub(crate) fn write_loop(db: &Database, queue: &std_mpsc::Receiver<Job>, budget: u64, changes: &watch::Sender<u64>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (completions, result) = run_batch(db, jobs, budget);
        if let Err(e) = &result {
            tracing::error!(error = %e, "log store batch failed; none of it was acknowledged");
        }
        let shared = result.as_ref().map_err(LogError::for_batch);
        for done in completions {
            done(shared.as_ref().map(|_| ()));
        }
        if shared.is_ok() {
            changes.send_modify(|n| *n += 1);
        }
    }
}

fn run_batch(db: &Database, jobs: Vec<Job>, budget: u64) -> (Vec<Completion>, Result<(), LogError>) {
    let mut completions = Vec::with_capacity(jobs.len());
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        // The jobs are dropped unrun; their callers learn that the write was not applied.
        Err(e) => return (completions, Err(backend("begin write")(e))),
    };
    let applied = (|| {
        let mut batch = Batch::open(&txn)?;
        for job in jobs {
            // A bug in one write must not take the writer thread (and every later write) down.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut batch))) {
                Ok(done) => completions.push(done),
                Err(_) => {
                    tracing::error!("a log store write panicked; its batch is abandoned");
                    batch.poisoned = true;
                }
            }
        }
        if batch.poisoned {
            return Err(LogError::Backend { operation: "apply", source: "a write failed in storage".into() });
        }
        batch.enforce_budget(budget)?;
        batch.finish()
    })();
    let result = applied.and_then(|()| txn.commit().map_err(backend("commit")));
    (completions, result)
}

/// Wraps a write so that its answer is sent only once its batch is durable.
pub(crate) fn job<T, F>(op: F) -> (Job, tokio::sync::oneshot::Receiver<Result<T, LogError>>)
where
    T: Send + 'static,
    F: for<'a, 't> FnOnce(&'a mut Batch<'t>) -> Result<T, LogError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |batch: &mut Batch<'_>| {
        let result = op(batch);
        if let Err(e) = &result
            && e.is_internal()
        {
            batch.poisoned = true;
        }
        Box::new(move |committed: Result<(), &LogError>| {
            let _ = tx.send(match committed {
                Ok(()) => result,
                Err(e) => Err(e.for_batch()),
            });
        })
    });
    (job, rx)
}

/// The creation time recorded for new groups and streams.
pub(crate) fn creation_time() -> i64 {
    now_millis()
}
