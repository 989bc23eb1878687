//! Heartbeats that bulk work cannot starve. A host's first heartbeat to a server is written to
//! its host record before it is answered (as registration is); after that the server answers
//! from memory and one writer per server records every host it heard since its last write in
//! one transaction, so that fifty hosts beating every two seconds cost one transaction at a
//! time instead of a read and a write each, queued behind thousands of task starts.
//!
//! **Invariant:** a heartbeat is answered from memory only while the store holds a `last_seen`
//! for its host written by this server at most [`Heartbeats::fresh_within`] ago; otherwise it
//! is written before it is answered, as the first one. So when an agent is answered, the
//! store's `last_seen` is at most `fresh_within` older than that answer, and the host-failure
//! detector's grace must exceed the agents' fence plus their heartbeat period plus
//! `fresh_within` plus a margin: `fresh_within` is a quarter of the grace (5 s of the default
//! 20 s, against a 10 s fence and 2 s heartbeats; 1.5 s of the 6 s the failover tests use with a
//! 3 s fence). A store too slow to record heartbeats within it gets them written one by one
//! again, and an agent that cannot get through that way fences itself, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flotilla_host::{Host, HostStatus};
use flotilla_store::{Compare, Op, Store, Txn, TxnOutcome};
use flotilla_types::Timestamp;
use tokio::sync::mpsc;

use super::{HOSTS, HostLiveness, host_key};
use crate::record::{decode, encode};

/// Conflicting attempts of one write (a host registered or was marked lost meanwhile) before
/// its heartbeats wait for the next one.
const ATTEMPTS: usize = 3;

pub(crate) struct Heartbeats {
    table: Mutex<HashMap<String, Beat>>,
    fresh_within: Duration,
    /// Wakes the writer; one wake-up pending at most (heartbeats meanwhile join it).
    wake: mpsc::Sender<()>,
    /// The writer's end, until the first heartbeat answered from memory starts it.
    woken: Mutex<Option<mpsc::Receiver<()>>>,
}

#[derive(Default)]
struct Beat {
    /// Heard, not yet written.
    pending: Option<Timestamp>,
    /// The newest `last_seen` this server wrote for the host.
    written: Option<Timestamp>,
}

impl Heartbeats {
    /// With `fresh_within` a quarter of the host grace (`FLOTILLA_HOST_GRACE`).
    pub(crate) fn from_env() -> Heartbeats {
        Heartbeats::new(HostLiveness::from_env().grace / 4)
    }

    pub(crate) fn new(fresh_within: Duration) -> Heartbeats {
        let (wake, woken) = mpsc::channel(1);
        Heartbeats { table: Default::default(), fresh_within, wake, woken: Mutex::new(Some(woken)) }
    }

    /// Notes a heartbeat from `host_id` heard at `now`. True when it is answered: the store
    /// recorded the host recently enough, and the writer will record this one.
    pub(crate) fn heard(self: &Arc<Self>, store: &Arc<dyn Store>, host_id: &str, now: Timestamp) -> bool {
        {
            let mut table = self.table.lock().expect("heartbeat table poisoned");
            let Some(beat) = table.get_mut(host_id) else { return false };
            let fresh = beat.written.is_some_and(|w| now.0 - w.0 <= self.fresh_within.as_millis() as i64);
            if !fresh {
                return false;
            }
            beat.pending = beat.pending.max(Some(now));
        }
        self.start_writer(store);
        let _ = self.wake.try_send(());
        true
    }

    /// The store holds `last_seen` = `at` for `host_id`, written by this server.
    pub(crate) fn written(&self, host_id: &str, at: Timestamp) {
        let mut table = self.table.lock().expect("heartbeat table poisoned");
        let beat = table.entry(host_id.to_owned()).or_default();
        beat.written = beat.written.max(Some(at));
    }

    fn start_writer(self: &Arc<Self>, store: &Arc<dyn Store>) {
        let Some(woken) = self.woken.lock().expect("heartbeat writer slot poisoned").take() else { return };
        tokio::spawn(write_loop(Arc::downgrade(self), store.clone(), woken));
    }

    fn take_pending(&self) -> Vec<(String, Timestamp)> {
        let mut table = self.table.lock().expect("heartbeat table poisoned");
        table.iter_mut().filter_map(|(id, beat)| beat.pending.take().map(|at| (id.clone(), at))).collect()
    }

    /// Puts back heartbeats a write did not record (a newer one heard meanwhile wins).
    fn restore(&self, beats: Vec<(String, Timestamp)>) {
        let mut table = self.table.lock().expect("heartbeat table poisoned");
        for (id, at) in beats {
            if let Some(beat) = table.get_mut(&id) {
                beat.pending = beat.pending.max(Some(at));
            }
        }
    }

    /// Forgets a host the store no longer has ACTIVE: its next heartbeat is written first.
    fn forget(&self, host_id: &str) {
        self.table.lock().expect("heartbeat table poisoned").remove(host_id);
    }
}

/// Writes what was heard whenever woken, until the heartbeats (their control plane) are gone.
async fn write_loop(heartbeats: Weak<Heartbeats>, store: Arc<dyn Store>, mut woken: mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        let Some(heartbeats) = heartbeats.upgrade() else { return };
        let beats = heartbeats.take_pending();
        if beats.is_empty() {
            continue;
        }
        if let Err(e) = write(&heartbeats, store.as_ref(), &beats).await {
            tracing::warn!(error = %e, hosts = beats.len(), "cannot record heartbeats; retrying");
            heartbeats.restore(beats);
            // Not at once: the store is failing. Heartbeats meanwhile are answered only while
            // the last write is fresh, then written one by one.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = heartbeats.wake.try_send(());
        }
    }
}

/// One transaction recording `beats` in their host records (compare-and-write on each).
async fn write(
    heartbeats: &Heartbeats,
    store: &dyn Store,
    beats: &[(String, Timestamp)],
) -> Result<(), crate::ControlError> {
    for _ in 0..ATTEMPTS {
        let current: HashMap<String, _> =
            store.list_prefix(HOSTS).await?.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let mut txn = Txn::new();
        let mut recorded = Vec::new();
        for (id, at) in beats {
            let key = host_key(id);
            let Some(kv) = current.get(&key) else {
                heartbeats.forget(id);
                continue;
            };
            let mut host: Host = decode(kv)?;
            if host.status != HostStatus::Active {
                // Lost meanwhile: the host's next heartbeat makes it ACTIVE, written first.
                heartbeats.forget(id);
                continue;
            }
            host.last_seen = host.last_seen.max(Some(*at));
            txn = txn.when(Compare::revision(&key, kv.mod_revision)).then(Op::put(&key, encode(&host)));
            recorded.push((id, *at));
        }
        if recorded.is_empty() {
            return Ok(());
        }
        if let TxnOutcome::Committed(_) = store.txn(txn).await? {
            for (id, at) in recorded {
                heartbeats.written(id, at);
            }
            return Ok(());
        }
    }
    heartbeats.restore(beats.to_vec());
    let _ = heartbeats.wake.try_send(());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use flotilla_host::HostSpec;
    use flotilla_store::testing::{Hooked, TxnHook};
    use flotilla_store::{EmbeddedStore, StoreError};
    use tokio::time::Instant;

    use super::*;
    use crate::{Control, Identity};

    /// Transactions hang while `stuck` (a store too loaded to commit anything).
    #[derive(Default)]
    struct Stuck {
        stuck: AtomicBool,
        unstuck: tokio::sync::Notify,
    }

    #[async_trait]
    impl TxnHook for Stuck {
        async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnOutcome, StoreError> {
            while self.stuck.load(Ordering::SeqCst) {
                let unstuck = self.unstuck.notified();
                if !self.stuck.load(Ordering::SeqCst) {
                    break;
                }
                unstuck.await;
            }
            inner.txn(txn).await
        }
    }

    async fn last_seen(store: &dyn Store) -> Timestamp {
        let kv = store.get(&host_key("host-a")).await.unwrap().unwrap();
        decode::<Host>(&kv).unwrap().last_seen.unwrap()
    }

    /// Whether a heartbeat is answered within `within` (else it waits on the store).
    async fn beat(control: &Control, within: Duration) -> bool {
        tokio::time::timeout(within, control.host_heartbeat("host-a")).await.is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn heartbeats_are_answered_from_memory_only_while_the_store_recorded_the_host_recently() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Hooked {
            inner: EmbeddedStore::open(dir.path().join("store.redb")).unwrap(),
            hook: Stuck::default(),
        });
        let fresh_within = Duration::from_millis(600);
        let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
        let control =
            Control { heartbeats: Arc::new(Heartbeats::new(fresh_within)), ..Control::new(store.clone(), identity) };
        let spec = HostSpec {
            id: "host-a".into(),
            availability_zone: "us-east-1a".into(),
            cpu: 4096,
            memory: 8192,
            underlay_ip: None,
            max_tasks: None,
        };
        control.register_host(spec).await.unwrap();
        let registered = last_seen(store.as_ref()).await;

        // Answered at once, and written soon after by the server's writer.
        assert!(beat(&control, Duration::from_millis(200)).await);
        let deadline = Instant::now() + Duration::from_secs(5);
        while last_seen(store.as_ref()).await <= registered {
            assert!(Instant::now() < deadline, "the heartbeat was never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // The store stops committing: heartbeats are answered only while its record of the
        // host is fresh, then they wait for the store (and the agent would fence).
        store.hook.stuck.store(true, Ordering::SeqCst);
        let recorded = last_seen(store.as_ref()).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let asked = Timestamp::now();
            if !beat(&control, Duration::from_millis(100)).await {
                assert!(asked.0 - recorded.0 >= fresh_within.as_millis() as i64 - 50, "refused while fresh");
                break;
            }
            assert!(asked.0 - recorded.0 <= fresh_within.as_millis() as i64, "answered with the store's record stale");
            assert!(Instant::now() < deadline, "heartbeats kept being answered without the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(last_seen(store.as_ref()).await, recorded, "nothing was written while stuck");

        // Committing again: written before answered, then from memory again.
        store.hook.stuck.store(false, Ordering::SeqCst);
        store.hook.unstuck.notify_waiters();
        assert!(beat(&control, Duration::from_secs(5)).await);
        assert!(last_seen(store.as_ref()).await > recorded);
        assert!(beat(&control, Duration::from_millis(200)).await);
    }
}
