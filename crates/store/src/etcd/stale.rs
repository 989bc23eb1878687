//! Read-your-writes for serializable reads.
//!
//! A serializable read is answered by whichever member the request reaches, from its own copy,
//! without asking the leader: no ReadIndex round trip, so it stays fast when the leader is busy
//! committing. That copy may lag the cluster by the entries the member has not applied yet.
//! The store keeps a floor: the highest revision this process has committed (its transactions'
//! answers) or observed (linearizable reads, its watch's events and progress notifications). A
//! serializable answer at a revision below the floor might miss something this process already
//! acted on, so it is thrown away and the read is made again linearizably.
//!
//! **Architecture Invariant:** a stale read never goes back in time for its process: what a
//! server wrote, or told an agent about through a watch, a later stale read on that server sees.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Floor {
    revision: AtomicI64,
    /// Serializable answers found behind the floor (and read again linearizably).
    fallbacks: AtomicU64,
    /// Serializable answers checked against the floor.
    reads: AtomicU64,
}

impl Floor {
    /// This process has seen etcd at `revision`.
    pub(crate) fn raise(&self, revision: i64) {
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> i64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// Whether an answer at `revision` is as new as everything this process had seen when
    /// it asked (`floor`, read before the request); counts it when not.
    pub(crate) fn covers(&self, floor: i64, revision: i64) -> bool {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let covered = revision >= floor;
        if !covered {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(revision, floor, "a member is behind this process; reading linearizably");
        }
        covered
    }

    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

/// How often the store says how many stale reads fell back.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Logs, once a minute when there were any, how many stale reads found their member behind
/// this process: many mean the members lag the leader (a slow disk, an overloaded member) and
/// stale reads cost a linearizable read on top.
pub(crate) async fn report(floor: std::sync::Arc<Floor>) {
    let (mut reads, mut fallbacks) = (0, 0);
    loop {
        tokio::time::sleep(REPORT_EVERY).await;
        let (now_reads, now_fallbacks) = (floor.reads.load(Ordering::Relaxed), floor.fallbacks());
        if now_fallbacks > fallbacks {
            tracing::info!(
                fallbacks = now_fallbacks - fallbacks,
                stale_reads = now_reads - reads,
                total_fallbacks = now_fallbacks,
                "stale reads answered by a member behind this server were read again linearizably"
            );
        }
        (reads, fallbacks) = (now_reads, now_fallbacks);
    }
}
