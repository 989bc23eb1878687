//! A copy of the records under a few prefixes, kept current by one watch: for a process that
//! reads them all again and again (the service scheduler's pass reads every task and service
//! record), so that a pass costs no listing, and on etcd does not wait behind the very
//! transactions it just committed.
//!
//! The copy is exact as of [`Mirror::revision`]: the watch is opened before the listing, so no
//! change falls between the two, and events come in revision order. Every event under the
//! watched prefix, kept or not, advances the revision, so a caller that committed at revision
//! `r` (under that prefix) can wait for the copy to hold its own write ([`Mirror::reach`])
//! before deciding again from it, or put its committed writes into the copy at once
//! ([`Mirror::wrote`]). A watch that falls behind, or a wait that times out, makes the copy
//! list everything again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{Event, KeyValue, Op, Revision, Store, StoreError, Watch};

pub struct Mirror {
    store: Arc<dyn Store>,
    watched: String,
    kept: Vec<String>,
    watch: Watch,
    records: BTreeMap<String, KeyValue>,
    /// Every change up to this revision is in `records`.
    revision: Revision,
    /// Events at or below this were already in the listing (the store's revision before it).
    listed_at: Revision,
    /// The watch lost events: the copy must be listed again before it is read.
    lost: bool,
}

/// A fresh listing with the watch opened before it.
struct Listing {
    watch: Watch,
    records: BTreeMap<String, KeyValue>,
    before: Revision,
}

impl Mirror {
    /// Watches `watched` and copies the records under each of `kept` (prefixes within it).
    pub async fn open(store: Arc<dyn Store>, watched: &str, kept: &[&str]) -> Result<Mirror, StoreError> {
        debug_assert!(kept.iter().all(|k| k.starts_with(watched)));
        let kept: Vec<String> = kept.iter().map(|k| (*k).to_owned()).collect();
        let listing = list(store.as_ref(), watched, &kept).await?;
        let mut mirror = Mirror {
            store,
            watched: watched.to_owned(),
            kept,
            watch: listing.watch,
            records: BTreeMap::new(),
            revision: 0,
            listed_at: 0,
            lost: false,
        };
        mirror.records = listing.records;
        mirror.listed(listing.before);
        Ok(mirror)
    }

    /// The revision every change up to which the copy holds.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The records under `prefix` (one of the kept prefixes, or within one), in key order.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.records.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix)).map(|(_, kv)| kv)
    }

    /// Lists everything again, with a new watch opened first. Cancel-safe: the copy changes
    /// only once the listing is complete.
    pub async fn resync(&mut self) -> Result<(), StoreError> {
        let listing = list(self.store.as_ref(), &self.watched, &self.kept).await?;
        self.watch = listing.watch;
        self.records = listing.records;
        self.listed(listing.before);
        Ok(())
    }

    fn listed(&mut self, before: Revision) {
        let newest = self.records.values().map(|kv| kv.mod_revision).max().unwrap_or(0);
        self.listed_at = before;
        self.revision = before.max(newest);
        self.lost = false;
    }

    /// Waits for the next change under the watched prefix and applies it with every other
    /// change already delivered. A watch that fell behind makes the copy list everything
    /// again (which counts as a change). Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        if !self.lost {
            match self.watch.next().await {
                Ok(event) => self.apply(event),
                Err(StoreError::WatchLagged { .. }) => self.lost = true,
                Err(e) => return Err(e),
            }
        }
        self.apply_delivered().await
    }

    /// Applies every change already delivered, without waiting for more.
    pub async fn apply_delivered(&mut self) -> Result<(), StoreError> {
        while !self.lost {
            match self.watch.try_next() {
                Some(Ok(event)) => self.apply(event),
                Some(Err(StoreError::WatchLagged { .. })) => self.lost = true,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
        self.resync().await
    }
    /// Waits until the copy holds every change up to `revision` (a transaction this process
    /// committed under the watched prefix); lists again if that takes longer than `patience`.
    pub async fn reach(&mut self, revision: Revision, patience: Duration) -> Result<(), StoreError> {
        self.apply_delivered().await?;
        let deadline = tokio::time::Instant::now() + patience;
        while self.revision < revision {
            match tokio::time::timeout_at(deadline, self.changed()).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::debug!(revision, have = self.revision, "mirror behind its own write; listing again");
                    return self.resync().await;
                }
            }
        }
        Ok(())
    }

    /// Applies this process's own transaction's writes, committed at `revision`, before they
    /// come back through the watch, so that a reader sees them at once. The copy's revision
    /// does not move: others' changes before `revision` may still be on their way, and their
    /// events, older than these writes, do not undo them. (A key deleted here may show again
    /// for a moment if an older put of it arrives before the deletion's own event.)
    pub fn wrote(&mut self, ops: &[Op], revision: Revision) {
        for op in ops {
            if !self.keeps(op.key()) {
                continue;
            }
            // Later operations of one transaction on a key win, hence `<=`.
            let current = self.records.get(op.key()).is_none_or(|old| old.mod_revision <= revision);
            match op {
                Op::Put { key, value } if current => {
                    let create_revision = self.records.get(key).map_or(revision, |old| old.create_revision);
                    let kv =
                        KeyValue { key: key.clone(), value: value.clone(), create_revision, mod_revision: revision };
                    self.records.insert(key.clone(), kv);
                }
                Op::Delete { key } if current => {
                    self.records.remove(key);
                }
                _ => {}
            }
        }
    }

    fn keeps(&self, key: &str) -> bool {
        self.kept.iter().any(|k| key.starts_with(k.as_str()))
    }

    fn apply(&mut self, event: Event) {
        let revision = match &event {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        };
        self.revision = self.revision.max(revision);
        if revision <= self.listed_at || !self.keeps(event.key()) {
            return;
        }
        match event {
            Event::Put(kv) => {
                if self.records.get(&kv.key).is_none_or(|old| old.mod_revision < kv.mod_revision) {
                    self.records.insert(kv.key.clone(), kv);
                }
            }
            Event::Delete { key, revision } => {
                if self.records.get(&key).is_some_and(|old| old.mod_revision < revision) {
                    self.records.remove(&key);
                }
            }
        }
    }
}

async fn list(store: &dyn Store, watched: &str, kept: &[String]) -> Result<Listing, StoreError> {
    let watch = store.watch(watched);
    let before = store.revision().await?;
    let mut records = BTreeMap::new();
    for prefix in kept {
        for kv in store.list_prefix(prefix).await? {
            records.insert(kv.key.clone(), kv);
        }
    }
    Ok(Listing { watch, records, before })
}
