//! Queries: describing groups and streams, reading a stream (GetLogEvents and the agent's
//! follow), and searching a group (FilterLogEvents). All run on a redb read snapshot, without
//! locks, and each call's work is bounded so that no request scans a whole store.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};
use tokio::sync::watch;

use crate::error::backend;
use crate::filter::FilterPattern;
use crate::page::{Page, paginate};
use crate::record::{self, EVENTS, GROUPS, LogEvent, LogGroup, LogStream, Position, STREAMS};
use crate::{LogError, LogStore};

/// GetLogEvents and FilterLogEvents answer at most this many bytes (messages plus 26 each).
pub const MAX_RESPONSE_BYTES: u64 = 1_048_576;
/// ...and at most this many events.
pub const MAX_EVENTS: usize = 10_000;
/// FilterLogEvents examines at most this many events per call, then hands back a token, as
/// CloudWatch Logs does (a page may then be empty yet carry a nextToken).
const MAX_SCAN: usize = 100_000;
/// Describe operations return at most 50 items a page.
const MAX_DESCRIBE: usize = 50;

type EventTable = ReadOnlyTable<(u64, i64, u64), &'static [u8]>;
type EventRange = redb::Range<'static, (u64, i64, u64), &'static [u8]>;

#[derive(Clone, Debug, Default)]
pub struct GroupQuery {
    pub prefix: Option<String>,
    /// Case-insensitive substring of the name.
    pub pattern: Option<String>,
    pub class: Option<String>,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamOrder {
    #[default]
    LogStreamName,
    LastEventTime,
}

#[derive(Clone, Debug, Default)]
pub struct StreamQuery {
    pub prefix: Option<String>,
    pub order: StreamOrder,
    pub descending: bool,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Events at or after this time (ms).
    pub start_time: Option<i64>,
    /// Events before this time (ms).
    pub end_time: Option<i64>,
    pub limit: Option<usize>,
    /// Oldest events first when there is no token; otherwise the newest page.
    pub start_from_head: bool,
    /// `f/...` or `b/...` from a previous page.
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsPage {
    /// Oldest first.
    pub events: Vec<LogEvent>,
    pub next_forward_token: String,
    pub next_backward_token: String,
}

#[derive(Clone, Debug, Default)]
pub struct FilterQuery {
    pub stream_names: Option<Vec<String>>,
    pub stream_prefix: Option<String>,
    /// Events at or after this time (ms).
    pub start_time: Option<i64>,
    /// Events at or before this time (ms).
    pub end_time: Option<i64>,
    pub pattern: Option<String>,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilteredEvent {
    pub stream: String,
    pub event: LogEvent,
}

impl FilteredEvent {
    /// Unique within the store, and stable.
    pub fn event_id(&self) -> String {
        self.event.position().encode()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterPage {
    /// In (timestamp, arrival) order across streams.
    pub events: Vec<FilteredEvent>,
    pub next_token: Option<String>,
}

fn limit(requested: Option<usize>, max: usize) -> Result<usize, LogError> {
    match requested {
        None => Ok(max),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(LogError::invalid(format!("limit must be between 1 and {max}, got {n}."))),
    }
}

fn time_range(start: Option<i64>, end: Option<i64>) -> Result<(), LogError> {
    match (start, end) {
        (Some(s), Some(e)) if s > e => {
            Err(LogError::invalid(format!("startTime ({s}) must not be later than endTime ({e}).")))
        }
        _ => Ok(()),
    }
}

fn read_group(txn: &ReadTransaction, name: &str) -> Result<LogGroup, LogError> {
    let groups = txn.open_table(GROUPS).map_err(backend("read group"))?;
    match groups.get(name).map_err(backend("read group"))? {
        Some(raw) => record::from_json(name, raw.value()),
        None => Err(LogError::GroupNotFound { group: name.to_owned() }),
    }
}

fn read_stream(txn: &ReadTransaction, group: &LogGroup, name: &str) -> Result<LogStream, LogError> {
    let streams = txn.open_table(STREAMS).map_err(backend("read stream"))?;
    match streams.get((group.id, name)).map_err(backend("read stream"))? {
        Some(raw) => record::from_json(name, raw.value()),
        None => Err(LogError::StreamNotFound { group: group.name.clone(), stream: name.to_owned() }),
    }
}

fn list_streams(txn: &ReadTransaction, group: &LogGroup, prefix: &str) -> Result<Vec<LogStream>, LogError> {
    let streams = txn.open_table(STREAMS).map_err(backend("list streams"))?;
    let mut out = Vec::new();
    for item in streams.range((group.id, prefix)..(group.id + 1, "")).map_err(backend("list streams"))? {
        let (k, v) = item.map_err(backend("list streams"))?;
        let name = k.value().1;
        if !name.starts_with(prefix) {
            break;
        }
        out.push(record::from_json(name, v.value())?);
    }
    Ok(out)
}

/// Events of one stream in `[from, to)`, oldest first: the first ones, or with `newest` the
/// last ones; at most `limit` events and about [`MAX_RESPONSE_BYTES`]. The flag says whether
/// more events lie beyond those returned.
fn scan(
    events: &EventTable,
    stream: u64,
    from: Position,
    to: Position,
    newest: bool,
    limit: usize,
) -> Result<(Vec<LogEvent>, bool), LogError> {
    if from >= to {
        return Ok((Vec::new(), false));
    }
    let range = events.range(from.key(stream)..to.key(stream)).map_err(backend("read events"))?;
    let mut iter: Box<dyn Iterator<Item = _>> = if newest { Box::new(range.rev()) } else { Box::new(range) };
    let (mut out, mut bytes) = (Vec::new(), 0);
    for item in iter.by_ref() {
        let (k, v) = item.map_err(backend("read events"))?;
        let event = record::decode_event(k.value(), v.value())?;
        bytes += event.cost();
        if !out.is_empty() && bytes > MAX_RESPONSE_BYTES {
            if newest {
                out.reverse();
            }
            return Ok((out, true));
        }
        out.push(event);
        if out.len() == limit {
            break;
        }
    }
    let more = iter.next().is_some();
    if newest {
        out.reverse();
    }
    Ok((out, more))
}

fn parse_event_token(token: &str) -> Result<(bool, Position), LogError> {
    let bad = || {
        LogError::invalid("The specified nextToken is invalid: pass a nextForwardToken or nextBackwardToken unchanged.")
    };
    let (forward, rest) = match token.split_at_checked(2) {
        Some(("f/", rest)) => (true, rest),
        Some(("b/", rest)) => (false, rest),
        _ => return Err(bad()),
    };
    Ok((forward, Position::decode(rest).ok_or_else(bad)?))
}

fn event_token(forward: bool, position: Position) -> String {
    format!("{}/{}", if forward { 'f' } else { 'b' }, position.encode())
}

impl LogStore {
    fn snapshot(&self) -> Result<ReadTransaction, LogError> {
        self.db.begin_read().map_err(backend("begin read"))
    }

    pub fn log_group(&self, name: &str) -> Result<LogGroup, LogError> {
        read_group(&self.snapshot()?, name)
    }

    pub fn log_stream(&self, group: &str, stream: &str) -> Result<LogStream, LogError> {
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        read_stream(&txn, &group, stream)
    }

    /// Bytes stored over all groups (messages plus 26 per event).
    pub fn stored_bytes(&self) -> Result<u64, LogError> {
        let txn = self.snapshot()?;
        let meta = txn.open_table(record::META).map_err(backend("read counters"))?;
        Ok(meta.get(record::STORED_BYTES).map_err(backend("read counters"))?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn describe_log_groups(&self, query: &GroupQuery) -> Result<Page<LogGroup>, LogError> {
        if query.prefix.is_some() && query.pattern.is_some() {
            return Err(LogError::invalid("logGroupNamePrefix and logGroupNamePattern cannot both be specified."));
        }
        let limit = limit(query.limit, MAX_DESCRIBE)?;
        let prefix = query.prefix.as_deref().unwrap_or("");
        let pattern = query.pattern.as_deref().map(str::to_lowercase);
        let txn = self.snapshot()?;
        let groups = txn.open_table(GROUPS).map_err(backend("list groups"))?;
        let mut items = Vec::new();
        for item in groups.range(prefix..).map_err(backend("list groups"))? {
            let (k, v) = item.map_err(backend("list groups"))?;
            let name = k.value();
            if !name.starts_with(prefix) {
                break;
            }
            if pattern.as_ref().is_some_and(|p| !name.to_lowercase().contains(p.as_str())) {
                continue;
            }
            let group: LogGroup = record::from_json(name, v.value())?;
            if query.class.as_ref().is_some_and(|c| *c != group.class) {
                continue;
            }
            items.push((group.name.clone(), group));
        }
        paginate(items, false, limit, query.next_token.as_deref())
    }

    pub fn describe_log_streams(&self, group: &str, query: &StreamQuery) -> Result<Page<LogStream>, LogError> {
        if query.order == StreamOrder::LastEventTime && query.prefix.is_some() {
            return Err(LogError::invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
        }
        let limit = limit(query.limit, MAX_DESCRIBE)?;
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        let streams = list_streams(&txn, &group, query.prefix.as_deref().unwrap_or(""))?;
        let items = streams
            .into_iter()
            .map(|s| {
                let key = match query.order {
                    StreamOrder::LogStreamName => s.name.clone(),
                    StreamOrder::LastEventTime => {
                        let t = Position::at_time(s.last_event_timestamp.unwrap_or(0));
                        format!("{}{}", t.encode(), s.name)
                    }
                };
                (key, s)
            })
            .collect();
        paginate(items, query.descending, limit, query.next_token.as_deref())
    }

    /// GetLogEvents. Tokens name the gap after (`f/`) or before (`b/`) the page; when a
    /// direction holds nothing more, its token comes back unchanged, as CloudWatch Logs does.
    /// The token's direction wins over `start_from_head`.
    pub fn get_log_events(&self, group: &str, stream: &str, query: &EventQuery) -> Result<EventsPage, LogError> {
        time_range(query.start_time, query.end_time)?;
        let limit = limit(query.limit, MAX_EVENTS)?;
        let token = query.next_token.as_deref().map(parse_event_token).transpose()?;
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        let stream = read_stream(&txn, &group, stream)?;
        let events = txn.open_table(EVENTS).map_err(backend("read events"))?;

        let lo = query.start_time.map_or(Position::START, Position::at_time);
        let hi = query.end_time.map_or(Position::END, Position::at_time);
        let (forward, from) = match token {
            Some(t) => t,
            None if query.start_from_head => (true, lo),
            None => (false, hi),
        };
        let (page, _) = if forward {
            scan(&events, stream.id, from.max(lo), hi, false, limit)?
        } else {
            scan(&events, stream.id, lo, from.min(hi), true, limit)?
        };
        let (after, before) = match (page.first(), page.last()) {
            (Some(first), Some(last)) => (last.position_after(), first.position()),
            _ => {
                let here = token.map_or(lo, |(_, p)| p);
                (here, here)
            }
        };
        Ok(EventsPage {
            events: page,
            next_forward_token: event_token(true, after),
            next_backward_token: event_token(false, before),
        })
    }

    /// Up to `limit` events after `from`, oldest first, and the position after the last one
    /// (`from` itself when there are none): the agent's and `flotilla logs`' cursor.
    pub fn read_since(
        &self,
        group: &str,
        stream: &str,
        from: Position,
        limit: usize,
    ) -> Result<(Vec<LogEvent>, Position), LogError> {
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        let stream = read_stream(&txn, &group, stream)?;
        let events = txn.open_table(EVENTS).map_err(backend("read events"))?;
        let (page, _) = scan(&events, stream.id, from, Position::END, false, limit.clamp(1, MAX_EVENTS))?;
        let next = page.last().map_or(from, LogEvent::position_after);
        Ok((page, next))
    }

    /// The position after the stream's latest event: where a follower that wants only new
    /// events starts.
    pub fn end_position(&self, group: &str, stream: &str) -> Result<Position, LogError> {
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        let stream = read_stream(&txn, &group, stream)?;
        let events = txn.open_table(EVENTS).map_err(backend("read events"))?;
        let (page, _) = scan(&events, stream.id, Position::START, Position::END, true, 1)?;
        Ok(page.last().map_or(Position::START, LogEvent::position_after))
    }

    /// Follows a stream from `from`: [`Follow::next`] waits for events past it.
    pub fn follow(&self, group: &str, stream: &str, from: Position) -> Follow<'_> {
        Follow {
            store: self,
            group: group.to_owned(),
            stream: stream.to_owned(),
            position: from,
            changes: self.changes.subscribe(),
        }
    }

    /// FilterLogEvents: matching events of the chosen streams, interleaved in (timestamp,
    /// arrival) order. Names in `stream_names` that do not exist are skipped.
    pub fn filter_log_events(&self, group: &str, query: &FilterQuery) -> Result<FilterPage, LogError> {
        if query.stream_names.is_some() && query.stream_prefix.is_some() {
            return Err(LogError::invalid("logStreamNames and logStreamNamePrefix cannot both be specified."));
        }
        time_range(query.start_time, query.end_time)?;
        let limit = limit(query.limit, MAX_EVENTS)?;
        let pattern = FilterPattern::parse(query.pattern.as_deref().unwrap_or(""))?;
        let resume = match query.next_token.as_deref() {
            None => Position::START,
            Some(t) => Position::decode(t).ok_or_else(|| {
                LogError::invalid(
                    "The specified nextToken is invalid: pass the one from the previous response unchanged.",
                )
            })?,
        };
        let txn = self.snapshot()?;
        let group = read_group(&txn, group)?;
        let mut streams = list_streams(&txn, &group, query.stream_prefix.as_deref().unwrap_or(""))?;
        if let Some(names) = &query.stream_names {
            let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            streams.retain(|s| wanted.contains(s.name.as_str()));
        }
        let events = txn.open_table(EVENTS).map_err(backend("read events"))?;
        let lo = query.start_time.map_or(Position::START, Position::at_time).max(resume);
        let hi = query.end_time.map_or(Position::END, |t| Position { timestamp: t, seq: u64::MAX });

        // k-way merge of the streams' ranges, by (timestamp, sequence).
        let (mut ranges, mut pending) = (Vec::new(), Vec::new());
        if lo < hi {
            for stream in &streams {
                ranges.push(events.range(lo.key(stream.id)..hi.key(stream.id)).map_err(backend("read events"))?);
                pending.push(None);
            }
        }
        let mut heads = Heads { ranges, pending, heap: BinaryHeap::new() };
        for i in 0..heads.ranges.len() {
            heads.advance(i)?;
        }
        let (mut out, mut bytes, mut scanned) = (Vec::new(), 0, 0);
        let mut next_token = None;
        while let Some((i, event)) = heads.pop() {
            if pattern.matches(&event.message) {
                if !out.is_empty() && bytes + event.cost() > MAX_RESPONSE_BYTES {
                    next_token = Some(event.position().encode());
                    break;
                }
                bytes += event.cost();
                out.push(FilteredEvent { stream: streams[i].name.clone(), event: event.clone() });
            }
            scanned += 1;
            heads.advance(i)?;
            if (out.len() == limit || scanned == MAX_SCAN) && !heads.heap.is_empty() {
                next_token = Some(event.position_after().encode());
                break;
            }
        }
        Ok(FilterPage { events: out, next_token })
    }
}

/// The next unread event of each stream being merged.
struct Heads {
    ranges: Vec<EventRange>,
    pending: Vec<Option<LogEvent>>,
    heap: BinaryHeap<Reverse<(i64, u64, usize)>>,
}

impl Heads {
    fn advance(&mut self, i: usize) -> Result<(), LogError> {
        if let Some(item) = self.ranges[i].next() {
            let (k, v) = item.map_err(backend("read events"))?;
            let event = record::decode_event(k.value(), v.value())?;
            self.heap.push(Reverse((event.timestamp, event.seq, i)));
            self.pending[i] = Some(event);
        }
        Ok(())
    }

    fn pop(&mut self) -> Option<(usize, LogEvent)> {
        let Reverse((_, _, i)) = self.heap.pop()?;
        Some((i, self.pending[i].take().expect("a heap entry has its event")))
    }
}

/// A cursor on one stream that waits for new events; see [`LogStore::follow`].
pub struct Follow<'a> {
    store: &'a LogStore,
    group: String,
    stream: String,
    position: Position,
    changes: watch::Receiver<u64>,
}

impl Follow<'_> {
    /// Where the next call continues from.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The next events past the cursor (at most `limit`), waiting until there are some.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<LogEvent>, LogError> {
        loop {
            // Marked seen before reading, so a commit between the read and the wait still wakes us.
            self.changes.borrow_and_update();
            let (events, next) = self.store.read_since(&self.group, &self.stream, self.position, limit)?;
            if !events.is_empty() {
                self.position = next;
                return Ok(events);
            }
            self.changes.changed().await.map_err(|_| LogError::Closed)?;
        }
    }
}
