//! What the log store keeps and how it is laid out in redb.
//!
//! - `groups`: group name -> [`LogGroup`] as JSON (few, small, rarely written).
//! - `streams`: (group id, stream name) -> [`LogStream`] as JSON, so a group's streams list in
//!   name order with one range scan.
//! - `events`: (stream id, timestamp, sequence) -> [ingestion time: i64 BE][message]. The
//!   sequence is global and only grows, so keys are unique and events with equal timestamps
//!   keep their arrival order.
//! - `meta`: counters (next ids, next sequence, total bytes stored).

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::LogError;

pub(crate) const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
pub(crate) const STREAMS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("streams");
pub(crate) const EVENTS: TableDefinition<(u64, i64, u64), &[u8]> = TableDefinition::new("events");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const NEXT_GROUP_ID: &str = "next_group_id";
pub(crate) const NEXT_STREAM_ID: &str = "next_stream_id";
pub(crate) const NEXT_SEQ: &str = "next_seq";
pub(crate) const STORED_BYTES: &str = "stored_bytes";

/// What CloudWatch Logs charges per event on top of its message, and what the store counts.
pub const EVENT_OVERHEAD: u64 = 26;

/// The values `PutRetentionPolicy` accepts, in days.
pub const RETENTION_DAYS: [i32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

pub const DAY_MS: i64 = 86_400_000;

/// A log group as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroup {
    #[serde(default)]
    pub(crate) id: u64,
    pub name: String,
    /// Milliseconds since the epoch.
    pub creation_time: i64,
    pub retention_in_days: Option<i32>,
    /// `STANDARD` unless created otherwise; recorded and echoed, it changes nothing here.
    pub class: String,
    pub deletion_protection: bool,
    /// Message bytes plus [`EVENT_OVERHEAD`] per event, over all its streams.
    pub stored_bytes: u64,
    pub tags: BTreeMap<String, String>,
}

/// A log stream as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStream {
    #[serde(default)]
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) group_id: u64,
    pub name: String,
    pub creation_time: i64,
    pub first_event_timestamp: Option<i64>,
    pub last_event_timestamp: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub stored_bytes: u64,
    /// How many appends the stream has taken; the basis of its (ignored) sequence token.
    pub uploads: u64,
}

impl LogStream {
    /// The `uploadSequenceToken` CloudWatch Logs still reports, although it ignores it on input.
    pub fn upload_sequence_token(&self) -> String {
        format!("{:020}{:020}", self.id, self.uploads + 1)
    }
}

/// An event to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
}

impl InputEvent {
    pub fn new(timestamp: i64, message: impl Into<String>) -> InputEvent {
        InputEvent { timestamp, message: message.into() }
    }

    pub(crate) fn cost(&self) -> u64 {
        self.message.len() as u64 + EVENT_OVERHEAD
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
    /// The store-wide arrival sequence: orders events with equal timestamps.
    pub seq: u64,
}

impl LogEvent {
    /// The position just before this event.
    pub fn position(&self) -> Position {
        Position { timestamp: self.timestamp, seq: self.seq }
    }

    /// The position just after this event.
    pub fn position_after(&self) -> Position {
        Position { timestamp: self.timestamp, seq: self.seq + 1 }
    }

    pub(crate) fn cost(&self) -> u64 {
        self.message.len() as u64 + EVENT_OVERHEAD
    }
}

/// A place between two events, in the (timestamp, sequence) order events are kept in. Reading
/// "from" a position returns the events after it; positions stay valid across writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub(crate) timestamp: i64,
    pub(crate) seq: u64,
}

impl Position {
    /// Before every event.
    pub const START: Position = Position { timestamp: i64::MIN, seq: 0 };
    /// After every event.
    pub const END: Position = Position { timestamp: i64::MAX, seq: u64::MAX };

    /// Before every event with this timestamp or a later one.
    pub fn at_time(timestamp: i64) -> Position {
        Position { timestamp, seq: 0 }
    }

    /// Fixed-width digits, so that a token round-trips to exactly the same text.
    pub fn encode(self) -> String {
        format!("{:020}{:020}", (self.timestamp as u64) ^ (1 << 63), self.seq)
    }

    pub fn decode(text: &str) -> Option<Position> {
        if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let timestamp = text[..20].parse::<u64>().ok()? ^ (1 << 63);
        let seq = text[20..].parse::<u64>().ok()?;
        Some(Position { timestamp: timestamp as i64, seq })
    }

    pub(crate) fn key(self, stream: u64) -> (u64, i64, u64) {
        (stream, self.timestamp, self.seq)
    }
}

pub(crate) fn encode_event(ingestion_time: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + message.len());
    out.extend_from_slice(&ingestion_time.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

pub(crate) fn decode_event(key: (u64, i64, u64), raw: &[u8]) -> Result<LogEvent, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt { key: format!("event {key:?}"), reason: reason.to_owned() };
    if raw.len() < 8 {
        return Err(corrupt("shorter than its header"));
    }
    let ingestion_time = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let message = std::str::from_utf8(&raw[8..]).map_err(|_| corrupt("message is not UTF-8"))?.to_owned();
    Ok(LogEvent { timestamp: key.1, ingestion_time, message, seq: key.2 })
}

/// The bytes an event counts for, from its stored value.
pub(crate) fn stored_cost(raw: &[u8]) -> u64 {
    raw.len().saturating_sub(8) as u64 + EVENT_OVERHEAD
}

pub(crate) fn to_json<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("log store records serialise")
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(key: &str, raw: &[u8]) -> Result<T, LogError> {
    serde_json::from_slice(raw).map_err(|e| LogError::Corrupt { key: key.to_owned(), reason: e.to_string() })
}

/// Log group names: 1-512 of `[.\-_/#A-Za-z0-9]`.
pub fn check_group_name(name: &str) -> Result<(), LogError> {
    let ok = (1..=512).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'));
    if ok {
        Ok(())
    } else {
        Err(LogError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+ and have length 1 to 512"
        )))
    }
}

/// Log stream names: 1-512 characters, no `:` or `*`.
pub fn check_stream_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty() && name.chars().count() <= 512 && !name.contains([':', '*']);
    if ok {
        Ok(())
    } else {
        Err(LogError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]* and have length 1 to 512"
        )))
    }
}

pub fn check_retention(days: i32) -> Result<(), LogError> {
    if RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let allowed: Vec<String> = RETENTION_DAYS.iter().map(i32::to_string).collect();
    Err(LogError::invalid(format!(
        "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    )))
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_keep_order() {
        let ps = [Position::START, Position::at_time(-5), Position::at_time(0), Position { timestamp: 7, seq: 9 }];
        for w in ps.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].encode() < w[1].encode(), "text order follows position order");
        }
        for p in ps.into_iter().chain([Position::END]) {
            assert_eq!(Position::decode(&p.encode()), Some(p));
        }
        assert_eq!(Position::decode("12"), None);
        assert_eq!(Position::decode(&"x".repeat(40)), None);
        assert_eq!(Position::decode(&"9".repeat(40)), None, "overflowing digits are refused");
    }

    #[test]
    fn names_and_retention() {
        assert!(check_group_name("/ecs/fargate-task").is_ok());
        assert!(check_group_name("bad name").is_err());
        assert!(check_group_name("").is_err());
        assert!(check_stream_name("ecs/web/0123").is_ok());
        assert!(check_stream_name("a:b").is_err());
        assert!(check_retention(14).is_ok());
        let err = check_retention(2).unwrap_err().to_string();
        assert!(err.contains("retentionInDays") && err.contains("3653"), "{err}");
    }
}
