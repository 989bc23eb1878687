//! One etcd watch per store, feeding every [`crate::Watch`] of that store.
//!
//! The watch covers the whole data prefix from the revision after the store opened. When the
//! stream breaks (the member died, lost its leader, a partition) it is opened again from the
//! revision after the last one delivered, so watchers see nothing twice and lose nothing. If
//! etcd compacted past that revision, watchers get `WatchLagged` (they re-list) and the watch
//! resumes from the oldest revision etcd still has.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::broadcast;

use super::stale::Floor;
use super::{EtcdOptions, MAX_MESSAGE, decode, revision_u64};
use crate::{Batch, Event};

/// Watches `data` from revision `next` until the store drops this task.
pub(super) async fn run(
    client: Client,
    options: Arc<EtcdOptions>,
    data: String,
    mut next: i64,
    events: broadcast::Sender<Arc<Batch>>,
    floor: Arc<Floor>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match follow(&client, &options, &data, &mut next, &events, &floor).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(error = %e, next, "etcd watch broke; resuming");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Opens one etcd watch from `next` and delivers its events until it ends. `Ok` means it ended
/// in a way worth retrying at once (etcd cancelled it after a compaction).
async fn follow(
    client: &Client,
    options: &EtcdOptions,
    data: &str,
    next: &mut i64,
    events: &broadcast::Sender<Arc<Batch>>,
    floor: &Floor,
) -> Result<(), etcd_client::Error> {
    let watch = WatchOptions::new().with_prefix().with_start_revision(*next).with_progress_notify();
    let mut stream = match tokio::time::timeout(
        options.deadline,
        client.watch_client().max_decoding_message_size(MAX_MESSAGE).watch(data.to_owned(), Some(watch)),
    )
    .await
    {
        Ok(stream) => stream?,
        Err(_) => return Err(etcd_client::Error::WatchError("creating the watch timed out".into())),
    };
    loop {
        let Some(response) = stream.message().await? else {
            return Err(etcd_client::Error::WatchError("etcd ended the watch stream".into()));
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                let missed = revision_u64(response.compact_revision() - *next).max(1);
                tracing::warn!(next, compacted = response.compact_revision(), "etcd compacted past the watch");
                let _ = events.send(Arc::new(Batch::Lagged { missed }));
                *next = response.compact_revision();
                return Ok(());
            }
            return Err(etcd_client::Error::WatchError(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            )));
        }
        if response.events().is_empty() {
            // A progress notification: every change up to its header's revision was sent.
            if !response.created()
                && let Some(revision) = response.header().map(|h| h.revision())
            {
                *next = (*next).max(revision + 1);
                floor.raise(revision);
            }
            continue;
        }
        let mut batch = Vec::with_capacity(response.events().len());
        let mut last = *next - 1;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() < *next {
                // Already delivered before a reconnect.
                continue;
            }
            last = last.max(kv.mod_revision());
            match decode(data, kv) {
                Ok(kv) => batch.push(match event.event_type() {
                    EventType::Put => Event::Put(kv),
                    EventType::Delete => Event::Delete { key: kv.key, revision: kv.mod_revision },
                }),
                Err(e) => tracing::warn!(error = %e, "skipping an etcd event this store cannot read"),
            }
        }
        *next = last + 1;
        // Before the watchers hear of it: a stale read made on hearing sees at least this.
        floor.raise(last);
        if !batch.is_empty() {
            // Nobody listening is fine.
            let _ = events.send(Arc::new(Batch::Events(batch)));
        }
    }
}
