//! The state store: everything the control plane knows lives here.
//!
//! The interface is deliberately the subset of etcd's that Flotilla needs — get, list by
//! prefix, an atomic compare-and-write transaction, watch, and leased singleton roles — so that
//! the embedded backend (one machine, [`EmbeddedStore`]) and the etcd backend (many machines,
//! [`EtcdStore`]) are interchangeable; [`open`] picks one from a URL.
//!
//! **Architecture Invariant:** a transaction the store acknowledges is durable: it has been
//! fsynced and survives `kill -9` of the process (`tests/fsync.rs` checks the order of the
//! write, the fsync and the answer in an strace of a child process). Every key carries the
//! global revision of the transaction that last wrote it, which is what compare-and-write
//! compares against.

mod embedded;
mod etcd;
mod mirror;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;

pub use embedded::EmbeddedStore;
pub use etcd::{EtcdOptions, EtcdStore, TlsFiles, open};
pub use mirror::Mirror;

/// The store's global revision; every committed write transaction increases it by one.
pub type Revision = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created this key.
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote this key.
    pub mod_revision: Revision,
}

/// A condition a transaction checks before it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this; `0` means the key must not exist.
    ModRevision { key: String, revision: Revision },
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::ModRevision { key: key.into(), revision: 0 }
    }

    pub fn revision(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::ModRevision { key: key.into(), revision }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// All-or-nothing: if every compare holds, every op is applied in one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    pub fn then(mut self, op: Op) -> Txn {
        self.ops.push(op);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied and durable at this revision.
    Committed(Revision),
    /// A compare failed; nothing was written.
    Conflict,
}

/// A change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("store backend failed during {operation}")]
    Backend { operation: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("store record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: &'static str },
    /// The store cannot answer now (etcd lost its quorum, or no member is reachable); the
    /// message says what to check. Nothing was written unless the message says the outcome is
    /// unknown.
    #[error("the store is unavailable during {operation}: {reason}")]
    Unavailable { operation: &'static str, reason: String },
    #[error("the store is shut down")]
    Closed,
    #[error("watcher fell behind by {missed} events; re-list and watch again")]
    WatchLagged { missed: u64 },
}

/// What a backend broadcasts to its watchers: the changes of one or more transactions, or the
/// news that some were lost (etcd compacted past where its watch had to resume).
#[derive(Debug)]
pub(crate) enum Batch {
    Events(Vec<Event>),
    Lagged { missed: u64 },
}

/// Which puts a [`Watch`] keeps, by value.
type PutFilter = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A stream of changes under one prefix, in revision order.
pub struct Watch {
    prefix: String,
    rx: tokio::sync::broadcast::Receiver<Arc<Batch>>,
    pending: std::collections::VecDeque<Event>,
    /// Puts whose value this rejects are skipped (see [`Watch::puts_where`]).
    keep_put: Option<PutFilter>,
}

impl Watch {
    pub(crate) fn new(prefix: String, rx: tokio::sync::broadcast::Receiver<Arc<Batch>>) -> Watch {
        Watch { prefix, rx, pending: Default::default(), keep_put: None }
    }

    /// Skips the puts whose value `keep` rejects (deletions all come through), before they
    /// are copied out of the batch every watcher shares: for a watcher that wants few of
    /// many large records, e.g. one host's of every task record.
    pub fn puts_where(mut self, keep: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> Watch {
        self.keep_put = Some(Box::new(keep));
        self
    }

    fn wants(&self, event: &Event) -> bool {
        event.key().starts_with(self.prefix.as_str())
            && match (event, &self.keep_put) {
                (Event::Put(kv), Some(keep)) => keep(&kv.value),
                _ => true,
            }
    }

    /// The next change already delivered, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event, StoreError>> {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match self.rx.try_recv() {
                Ok(batch) => {
                    if let Some(err) = self.take(&batch) {
                        return Some(Err(err));
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(missed)) => return Some(Err(StoreError::WatchLagged { missed })),
                Err(TryRecvError::Closed) => return Some(Err(StoreError::Closed)),
            }
        }
    }

    /// Queues a batch's wanted events; the error a lost batch means.
    fn take(&mut self, batch: &Batch) -> Option<StoreError> {
        match batch {
            Batch::Events(events) => {
                let wanted: Vec<Event> = events.iter().filter(|e| self.wants(e)).cloned().collect();
                self.pending.extend(wanted);
                None
            }
            Batch::Lagged { missed } => Some(StoreError::WatchLagged { missed: *missed }),
        }
    }

    /// The next change under the prefix. `Err(WatchLagged)` means events were dropped
    /// because this watcher was too slow: re-list, then watch again.
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Some(err) = self.take(&batch) {
                        return Err(err);
                    }
                }
                Err(RecvError::Lagged(missed)) => return Err(StoreError::WatchLagged { missed }),
                Err(RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }
}

/// The store interface. Implementations: [`EmbeddedStore`], [`EtcdStore`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key starting with `prefix`, in key order.
    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError>;
    /// As [`Store::get`], but the answer may be stale: it reflects some committed revision at
    /// least as new as every one this process has written or seen (its own transactions,
    /// its watches' events, its linearizable reads), possibly older than another process's
    /// latest write. For reads where that is harmless (AWS's own read APIs are eventually
    /// consistent; immutable records); never for a read whose revision feeds a compare that
    /// must not fail for staleness. The embedded store has one process and answers as `get`.
    async fn get_stale(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.get(key).await
    }
    /// As [`Store::list_prefix`], possibly stale as [`Store::get_stale`] is.
    async fn list_prefix_stale(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        self.list_prefix(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// Changes under `prefix` committed after this call.
    fn watch(&self, prefix: &str) -> Watch;
    /// The revision of the latest committed transaction.
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// Campaigns for the singleton role `name` (the service scheduler, the host-failure
    /// detector) as `holder`, and returns once this process holds it. Only one holder at a
    /// time among every process sharing the store; when the holder dies its role passes to
    /// another campaigner. The embedded store has one process, which holds every role at once.
    async fn acquire(&self, name: &str, holder: &str) -> Result<Leadership, StoreError> {
        let _ = (name, holder);
        Ok(Leadership::forever())
    }
}

/// A singleton role this process holds, until [`Leadership::lost`] resolves or it is dropped
/// (which resigns it).
pub struct Leadership {
    held: tokio::sync::watch::Receiver<bool>,
    /// Whatever keeps the role (an etcd lease's keep-alive); dropped on resignation.
    _keeper: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Leadership {
    /// A role held until `held` turns false; `keeper` is dropped with the leadership.
    pub fn new(held: tokio::sync::watch::Receiver<bool>, keeper: Option<Box<dyn std::any::Any + Send + Sync>>) -> Self {
        Leadership { held, _keeper: keeper }
    }

    /// A role nobody else can hold (one process owns the store).
    pub fn forever() -> Leadership {
        let (tx, held) = tokio::sync::watch::channel(true);
        Leadership { held, _keeper: Some(Box::new(tx)) }
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once the role is lost (the lease expired or could not be renewed): stop
    /// acting as its holder at once.
    pub async fn lost(&mut self) {
        let _ = self.held.wait_for(|held| !*held).await;
    }
}
