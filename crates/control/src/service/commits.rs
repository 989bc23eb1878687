//! The scheduler pass's group commit of placements. Services of a pass place one after another
//! under the pass's [`Placer`] (each sees the hosts as the services before it left them) but
//! need not commit one after another: each queues its transaction with what its placements
//! added to each host (a [`Delta`]) and lets the placer go at once. Whoever finds no commit
//! under way commits everything queued as one transaction, adding for each host the group
//! touched a compare on the allocation record's revision as last read or committed and one
//! write of the stored allocation plus the group's deltas; services that queue meanwhile form
//! the next group. On etcd, where each transaction is a quorum round trip, a pass of fifty
//! services is then a few transactions instead of fifty in a row.
//!
//! Every guarantee of a transaction per service holds: the group compares on every record its
//! entries read (service records, the tasks they stop) and on every allocation it changes, so
//! two servers still never overbook a host. A group that conflicts is committed again entry by
//! entry, so one stale service never fails the others; an entry that does not commit has its
//! delta taken back out of the placer (placements made on top of it keep theirs: they only had
//! less room than they could have had).

use std::collections::VecDeque;
use std::sync::Mutex;

use flotilla_store::{Op, Store, StoreError, Txn, TxnOutcome};
use tokio::sync::oneshot;

use crate::ControlError;
use crate::host::{Delta, Placer};

/// Bounds of one group: compares or writes, and bytes of keys and values. Half of what the
/// etcd members of the tests, `bench/cluster.sh` and `scripts/dev-cluster.sh` accept
/// (`--max-txn-ops 10000 --max-request-bytes 33554432`); a single entry above them is still
/// sent alone, as before groups.
const MAX_GROUP_OPS: usize = 5_000;
const MAX_GROUP_BYTES: usize = 16 << 20;

/// A pass's placer and commit queue.
pub(crate) struct Commits<'a> {
    store: &'a dyn Store,
    /// Read by the first service that places (a pass with nothing to start reads no hosts).
    placer: tokio::sync::OnceCell<Mutex<Placer>>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// A commit is under way: its committer takes what is queued when it is done.
    committing: bool,
}

struct Entry {
    txn: Txn,
    delta: Delta,
    done: oneshot::Sender<Result<TxnOutcome, ControlError>>,
}

impl Entry {
    /// An upper bound of what the entry adds to a group: (compares or writes, bytes).
    fn weight(&self) -> (usize, usize) {
        let ops = self.txn.compares.len().max(self.txn.ops.len()) + self.delta.hosts();
        let bytes = self
            .txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } => key.len(),
            })
            .sum::<usize>()
            + self.txn.compares.len() * 128
            + self.delta.hosts() * 256;
        (ops, bytes)
    }
}

/// One service's placements, made under the pass's placer and not committed yet: taken back
/// out of the placer if dropped without [`Commits::commit`].
pub(crate) struct Placed<'c> {
    placer: &'c Mutex<Placer>,
    delta: Option<Delta>,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        if let Some(delta) = self.delta.take() {
            lock(self.placer).take_back(&delta);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<'a> Commits<'a> {
    /// Commits whose placer is read by [`Commits::ready`]'s first caller.
    pub(crate) fn lazy(store: &'a dyn Store) -> Commits<'a> {
        Commits { store, placer: tokio::sync::OnceCell::new(), queue: Mutex::default() }
    }

    /// Reads the pass's one view of the hosts with `read` unless a service did already.
    pub(crate) async fn ready(
        &self,
        read: impl std::future::Future<Output = Result<Placer, ControlError>>,
    ) -> Result<(), ControlError> {
        self.placer.get_or_try_init(|| async { Ok::<_, ControlError>(Mutex::new(read.await?)) }).await?;
        Ok(())
    }

    fn placer(&self) -> &Mutex<Placer> {
        self.placer.get().expect("Commits::ready runs before a service places")
    }

    /// Runs `place` (no waiting inside) with the placer to itself; returns what it returned and
    /// the placements it made.
    pub(crate) fn place<T>(&self, place: impl FnOnce(&mut Placer) -> T) -> (T, Placed<'_>) {
        let mut placer = lock(self.placer());
        let mark = placer.mark();
        let out = place(&mut placer);
        let delta = placer.since(&mark);
        (out, Placed { placer: self.placer(), delta: Some(delta) })
    }

    /// Commits `txn` with the allocations of `placed`, in a group with whatever else is queued.
    pub(crate) async fn commit(&self, txn: Txn, mut placed: Placed<'_>) -> Result<TxnOutcome, ControlError> {
        let delta = placed.delta.take().unwrap_or_default();
        if delta.is_empty() {
            return Ok(self.store.txn(txn).await?);
        }
        let (done, outcome) = oneshot::channel();
        let lead = {
            let mut queue = lock(&self.queue);
            queue.entries.push_back(Entry { txn, delta, done });
            !std::mem::replace(&mut queue.committing, true)
        };
        if lead {
            self.drive().await;
        }
        // Every entry is answered before the committer goes; the pass's services are polled
        // together, so the committer is never dropped while others wait.
        outcome.await.unwrap_or(Err(ControlError::Store(StoreError::Closed)))
    }

    /// Commits groups until nothing is queued.
    async fn drive(&self) {
        loop {
            // Services that are about to queue join this group.
            tokio::task::yield_now().await;
            let group = {
                let mut queue = lock(&self.queue);
                if queue.entries.is_empty() {
                    queue.committing = false;
                    return;
                }
                take_group(&mut queue.entries)
            };
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&self, group: Vec<Entry>) {
        if group.len() == 1 {
            let entry = group.into_iter().next().expect("one entry");
            return self.commit_alone(entry).await;
        }
        let txn = {
            let placer = lock(self.placer());
            let mut txn = Txn::new();
            for entry in &group {
                txn.compares.extend(entry.txn.compares.iter().cloned());
                txn.ops.extend(entry.txn.ops.iter().cloned());
            }
            placer.group_ops(txn, group.iter().map(|e| &e.delta))
        };
        let started = std::time::Instant::now();
        let (ops, bytes) = group.iter().fold((0, 0), |(o, b), e| {
            let (eo, eb) = e.weight();
            (o + eo, b + eb)
        });
        let outcome = self.store.txn(txn).await;
        tracing::debug!(entries = group.len(), ops, bytes, ms = started.elapsed().as_millis() as u64, "group commit");
        match outcome {
            Ok(TxnOutcome::Committed(revision)) => {
                lock(self.placer()).group_committed(group.iter().map(|e| &e.delta), revision);
                for entry in group {
                    let _ = entry.done.send(Ok(TxnOutcome::Committed(revision)));
                }
            }
            Ok(TxnOutcome::Conflict) => {
                tracing::debug!(entries = group.len(), "group commit conflicted; committing its entries one by one");
                for entry in group {
                    self.commit_alone(entry).await;
                }
            }
            Err(e) => {
                let mut placer = lock(self.placer());
                for entry in group {
                    placer.take_back(&entry.delta);
                    let _ = entry.done.send(Err(ControlError::Store(copy(&e))));
                }
            }
        }
    }

    async fn commit_alone(&self, entry: Entry) {
        let Entry { txn, delta, done } = entry;
        let txn_len = txn.ops.len();
        let txn = lock(self.placer()).group_ops(txn, [&delta]);
        let started = std::time::Instant::now();
        let outcome = self.store.txn(txn).await;
        tracing::debug!(entries = 1, ops = txn_len, ms = started.elapsed().as_millis() as u64, "group commit");
        let mut placer = lock(self.placer());
        match &outcome {
            Ok(TxnOutcome::Committed(revision)) => placer.group_committed([&delta], *revision),
            _ => placer.take_back(&delta),
        }
        let _ = done.send(outcome.map_err(ControlError::from));
    }
}

/// The entries at the head of the queue that fit one group (at least one).
fn take_group(entries: &mut VecDeque<Entry>) -> Vec<Entry> {
    // The etcd backend adds one compare and one write of its own.
    let (mut ops, mut bytes) = (1, 0);
    let mut group = Vec::new();
    while let Some(entry) = entries.front() {
        let (o, b) = entry.weight();
        if !group.is_empty() && (ops + o > MAX_GROUP_OPS || bytes + b > MAX_GROUP_BYTES) {
            break;
        }
        ops += o;
        bytes += b;
        group.extend(entries.pop_front());
    }
    group
}

/// The same failure for each entry of a group that failed as a whole.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { operation, reason } => StoreError::Unavailable { operation, reason: reason.clone() },
        StoreError::Closed => StoreError::Closed,
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            StoreError::Backend { operation: "txn", source: message.into() }
        }
    }
}

#[cfg(test)]
#[path = "commits_tests.rs"]
mod tests;
