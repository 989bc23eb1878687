//! What every `Store` backend must do, written once: `tests/embedded.rs` and `tests/etcd.rs`
//! run these against their backend through [`store_behaviour!`].

use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{Compare, Event, Mirror, Op, Store, Txn, TxnOutcome};

/// Expands to one `#[tokio::test]` per behaviour below; `$open` is an async fn returning the
/// store and whatever must outlive it (its directory, its cluster).
#[macro_export]
macro_rules! store_behaviour {
    ($open:path) => {
        $crate::store_behaviour!(
            $open;
            put_if_absent_then_compare_on_revision,
            failed_compare_writes_nothing_of_the_txn,
            later_ops_on_a_key_win_within_a_txn,
            a_large_txn_is_written_listed_and_watched,
            list_prefix_is_ordered_and_bounded,
            concurrent_compare_and_swap_loses_no_increment,
            watch_sees_changes_under_its_prefix_only,
            every_watcher_sees_every_change_in_order,
            a_watch_skips_the_puts_it_does_not_want,
            acquire_returns_a_held_role,
            stale_reads_see_this_stores_own_writes,
            a_mirror_follows_puts_and_deletes_and_holds_its_own_writes,
            a_mirror_opened_during_writes_ends_equal_to_a_listing,
            a_mirror_shows_its_own_writes_before_the_watch_brings_them
        );
    };
    ($open:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _keep) = $open().await;
                behaviour::$name(store).await;
            }
        )*
    };
}

pub async fn put_if_absent_then_compare_on_revision(store: Arc<dyn Store>) {
    let first = store.txn(Txn::new().when(Compare::absent("a")).then(Op::put("a", "1"))).await.unwrap();
    let TxnOutcome::Committed(rev) = first else { panic!("first put must commit, got {first:?}") };
    // Absent no longer holds.
    assert_eq!(
        store.txn(Txn::new().when(Compare::absent("a")).then(Op::put("a", "2"))).await.unwrap(),
        TxnOutcome::Conflict
    );
    // A stale revision loses, the current one wins.
    let second = store.txn(Txn::new().when(Compare::revision("a", rev)).then(Op::put("a", "3"))).await.unwrap();
    assert!(matches!(second, TxnOutcome::Committed(r) if r == rev + 1), "{second:?}");
    assert_eq!(
        store.txn(Txn::new().when(Compare::revision("a", rev)).then(Op::put("a", "4"))).await.unwrap(),
        TxnOutcome::Conflict
    );
    let kv = store.get("a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"3");
    assert_eq!(kv.create_revision, rev);
    assert_eq!(kv.mod_revision, rev + 1);
    assert_eq!(store.revision().await.unwrap(), rev + 1);
    assert!(store.get("missing").await.unwrap().is_none());
}

pub async fn failed_compare_writes_nothing_of_the_txn(store: Arc<dyn Store>) {
    store.txn(Txn::new().then(Op::put("x", "1"))).await.unwrap();
    let out =
        store.txn(Txn::new().when(Compare::absent("x")).then(Op::put("y", "1")).then(Op::delete("x"))).await.unwrap();
    assert_eq!(out, TxnOutcome::Conflict);
    assert!(store.get("y").await.unwrap().is_none());
    assert!(store.get("x").await.unwrap().is_some());
    // Several compares: all must hold.
    let x = store.get("x").await.unwrap().unwrap().mod_revision;
    let both = Txn::new().when(Compare::revision("x", x)).when(Compare::absent("x")).then(Op::put("y", "1"));
    assert_eq!(store.txn(both).await.unwrap(), TxnOutcome::Conflict);
    let both = Txn::new().when(Compare::revision("x", x)).when(Compare::absent("y")).then(Op::put("y", "1"));
    assert!(matches!(store.txn(both).await.unwrap(), TxnOutcome::Committed(_)));
}

pub async fn later_ops_on_a_key_win_within_a_txn(store: Arc<dyn Store>) {
    let txn = Txn::new().then(Op::put("a", "1")).then(Op::put("a", "2")).then(Op::put("b", "1")).then(Op::delete("b"));
    assert!(matches!(store.txn(txn).await.unwrap(), TxnOutcome::Committed(_)));
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"2");
    assert!(store.get("b").await.unwrap().is_none());
    let txn = Txn::new().then(Op::delete("a")).then(Op::put("a", "3"));
    assert!(matches!(store.txn(txn).await.unwrap(), TxnOutcome::Committed(_)));
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"3");
}

/// As a service scaling by a thousand tasks writes them: over etcd's default limits (128
/// operations, 1.5 MiB a request) and tonic's (4 MiB an answer).
pub async fn a_large_txn_is_written_listed_and_watched(store: Arc<dyn Store>) {
    let mut watch = store.watch("big/");
    let n = 1500;
    let value = vec![b'r'; 4096];
    let mut txn = Txn::new();
    for i in 0..n {
        txn = txn.then(Op::put(format!("big/{i:05}"), value.clone()));
    }
    assert!(matches!(store.txn(txn).await.unwrap(), TxnOutcome::Committed(_)));
    let listed = store.list_prefix("big/").await.unwrap();
    assert_eq!(listed.len(), n);
    assert!(listed.iter().all(|kv| kv.value == value));
    for i in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
        assert_eq!(event.key(), format!("big/{i:05}"));
    }
}

pub async fn list_prefix_is_ordered_and_bounded(store: Arc<dyn Store>) {
    for key in ["t/b", "t/a", "u/a", "s/z", "t/c", "t", "t0"] {
        store.txn(Txn::new().then(Op::put(key, key))).await.unwrap();
    }
    let keys: Vec<String> = store.list_prefix("t/").await.unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["t/a", "t/b", "t/c"]);
    store.txn(Txn::new().then(Op::delete("t/b"))).await.unwrap();
    assert_eq!(store.list_prefix("t/").await.unwrap().len(), 2);
    assert_eq!(store.list_prefix("").await.unwrap().len(), 6);
    // More keys than one page of a paged backend, all at one revision.
    let many = 2500;
    for chunk in (0..many).collect::<Vec<_>>().chunks(100) {
        let mut txn = Txn::new();
        for i in chunk {
            txn = txn.then(Op::put(format!("many/{i:05}"), i.to_string()));
        }
        store.txn(txn).await.unwrap();
    }
    let listed = store.list_prefix("many/").await.unwrap();
    assert_eq!(listed.len(), many);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
}

pub async fn concurrent_compare_and_swap_loses_no_increment(store: Arc<dyn Store>) {
    let mut handles = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let current = store.get("counter").await.unwrap();
                let (value, rev) = match &current {
                    Some(kv) => (String::from_utf8(kv.value.clone()).unwrap().parse::<u32>().unwrap(), kv.mod_revision),
                    None => (0, 0),
                };
                let txn = Txn::new()
                    .when(Compare::revision("counter", rev))
                    .then(Op::put("counter", (value + 1).to_string()));
                if let TxnOutcome::Committed(_) = store.txn(txn).await.unwrap() {
                    return;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(store.get("counter").await.unwrap().unwrap().value, b"40");
}

pub async fn watch_sees_changes_under_its_prefix_only(store: Arc<dyn Store>) {
    let mut watch = store.watch("tasks/");
    store.txn(Txn::new().then(Op::put("clusters/x", "c"))).await.unwrap();
    let TxnOutcome::Committed(put) = store.txn(Txn::new().then(Op::put("tasks/1", "t"))).await.unwrap() else {
        panic!("unconditional txn conflicted")
    };
    store.txn(Txn::new().then(Op::delete("tasks/1"))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap();
    assert!(
        matches!(first, Event::Put(ref kv) if kv.key == "tasks/1" && kv.value == b"t" && kv.mod_revision == put),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap();
    assert!(
        matches!(second, Event::Delete { ref key, revision } if key == "tasks/1" && revision == put + 1),
        "{second:?}"
    );
}

pub async fn every_watcher_sees_every_change_in_order(store: Arc<dyn Store>) {
    let mut watches = [store.watch("w/"), store.watch("w/"), store.watch("")];
    let n = 200;
    for i in 0..n {
        store.txn(Txn::new().then(Op::put(format!("w/{i:03}"), i.to_string()))).await.unwrap();
    }
    for watch in &mut watches {
        let mut last = 0;
        for i in 0..n {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
            let Event::Put(kv) = event else { panic!("expected a put, got {event:?}") };
            assert_eq!(kv.key, format!("w/{i:03}"));
            assert!(kv.mod_revision > last);
            last = kv.mod_revision;
        }
    }
}

pub async fn a_watch_skips_the_puts_it_does_not_want(store: Arc<dyn Store>) {
    let mut watch = store.watch("f/").puts_where(|value| value.starts_with(b"mine"));
    let txn = Txn::new().then(Op::put("f/1", "other")).then(Op::put("f/2", "mine 2")).then(Op::put("g/3", "mine 3"));
    store.txn(txn).await.unwrap();
    store.txn(Txn::new().then(Op::delete("f/1"))).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap() {
            Event::Put(kv) => seen.push(format!("put {} {}", kv.key, String::from_utf8_lossy(&kv.value))),
            Event::Delete { key, .. } => seen.push(format!("delete {key}")),
        }
    }
    assert_eq!(seen, ["put f/2 mine 2", "delete f/1"]);
}

pub async fn acquire_returns_a_held_role(store: Arc<dyn Store>) {
    let role = tokio::time::timeout(Duration::from_secs(10), store.acquire("scheduler", "me")).await.unwrap().unwrap();
    assert!(role.is_held());
    // A different role is independent.
    let other = tokio::time::timeout(Duration::from_secs(10), store.acquire("detector", "me")).await.unwrap().unwrap();
    assert!(other.is_held() && role.is_held());
}

/// Whatever a backend's stale reads skip, never what the same store just committed.
pub async fn stale_reads_see_this_stores_own_writes(store: Arc<dyn Store>) {
    for i in 0..50u32 {
        let key = format!("stale/{i:03}");
        let TxnOutcome::Committed(rev) = store.txn(Txn::new().then(Op::put(&key, i.to_string()))).await.unwrap() else {
            panic!("an unconditional put commits")
        };
        let kv = store.get_stale(&key).await.unwrap().expect("a stale read sees this store's write");
        assert_eq!((kv.value, kv.mod_revision), (i.to_string().into_bytes(), rev));
        let listed = store.list_prefix_stale("stale/").await.unwrap();
        assert_eq!(listed.len(), i as usize + 1, "a stale listing sees every write of this store");
        assert_eq!(listed.last().map(|kv| kv.key.as_str()), Some(key.as_str()));
    }
    assert!(store.get_stale("stale/missing").await.unwrap().is_none());
}

fn committed(outcome: TxnOutcome) -> u64 {
    match outcome {
        TxnOutcome::Committed(rev) => rev,
        TxnOutcome::Conflict => panic!("an unconditional txn conflicted"),
    }
}

/// What a mirror holds under `prefix`: (key, value, mod revision).
fn copy_of(mirror: &Mirror, prefix: &str) -> Vec<(String, String, u64)> {
    mirror
        .under(prefix)
        .map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision))
        .collect()
}

async fn listing_of(store: &dyn Store, prefix: &str) -> Vec<(String, String, u64)> {
    let kvs = store.list_prefix(prefix).await.unwrap();
    kvs.into_iter().map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision)).collect()
}

pub async fn a_mirror_follows_puts_and_deletes_and_holds_its_own_writes(store: Arc<dyn Store>) {
    let txn = Txn::new().then(Op::put("m/a/1", "one")).then(Op::put("m/a/2", "two")).then(Op::put("m/b/x", "x"));
    store.txn(txn).await.unwrap();
    let mut mirror = Mirror::open(store.clone(), "m/", &["m/a/"]).await.unwrap();
    assert_eq!(copy_of(&mirror, "m/a/"), listing_of(store.as_ref(), "m/a/").await);
    assert_eq!(copy_of(&mirror, "m/").len(), 2, "only the kept prefix is copied");

    let rev = committed(store.txn(Txn::new().then(Op::put("m/a/3", "three")).then(Op::delete("m/a/1"))).await.unwrap());
    mirror.reach(rev, Duration::from_secs(10)).await.unwrap();
    assert!(mirror.revision() >= rev);
    let keys: Vec<String> = copy_of(&mirror, "m/a/").into_iter().map(|(k, v, _)| format!("{k}={v}")).collect();
    assert_eq!(keys, ["m/a/2=two", "m/a/3=three"]);

    // A write under the watched prefix but outside the kept one still advances the copy's
    // revision (so a writer there can wait for it); one outside the watch does not arrive.
    let other = committed(store.txn(Txn::new().then(Op::put("m/b/y", "y"))).await.unwrap());
    mirror.reach(other, Duration::from_secs(10)).await.unwrap();
    assert!(mirror.revision() >= other);
    assert_eq!(copy_of(&mirror, "m/a/"), listing_of(store.as_ref(), "m/a/").await);

    // `changed` wakes for the next change and applies it.
    let writer = store.clone();
    tokio::spawn(async move { writer.txn(Txn::new().then(Op::put("m/a/2", "deux"))).await.unwrap() });
    tokio::time::timeout(Duration::from_secs(10), mirror.changed()).await.unwrap().unwrap();
    assert_eq!(copy_of(&mirror, "m/a/"), listing_of(store.as_ref(), "m/a/").await);
}

/// The mirror opens (watch, then list) while another task writes, deletes and writes again:
/// once it holds the writer's last revision it equals a fresh listing, key for key.
pub async fn a_mirror_opened_during_writes_ends_equal_to_a_listing(store: Arc<dyn Store>) {
    let writer = store.clone();
    let writes = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..150u32 {
            let key = format!("r/k/{:02}", i % 20);
            let txn = if i % 7 == 3 {
                Txn::new().then(Op::delete(&key))
            } else {
                Txn::new().then(Op::put(&key, i.to_string()))
            };
            last = committed(writer.txn(txn).await.unwrap());
        }
        last
    });
    // Let some writes land first, so that the listing races the rest.
    loop {
        if store.list_prefix("r/k/").await.unwrap().len() >= 5 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut mirror = Mirror::open(store.clone(), "r/", &["r/k/"]).await.unwrap();
    let last = writes.await.unwrap();
    mirror.reach(last, Duration::from_secs(20)).await.unwrap();
    assert_eq!(copy_of(&mirror, "r/k/"), listing_of(store.as_ref(), "r/k/").await);
}

pub async fn a_mirror_shows_its_own_writes_before_the_watch_brings_them(store: Arc<dyn Store>) {
    store.txn(Txn::new().then(Op::put("o/k/3", "three"))).await.unwrap();
    let mut mirror = Mirror::open(store.clone(), "o/", &["o/k/"]).await.unwrap();
    let ops =
        [Op::put("o/k/1", "a"), Op::put("o/k/1", "b"), Op::put("o/k/2", "c"), Op::delete("o/k/3"), Op::put("o/x", "x")];
    let txn = ops.iter().cloned().fold(Txn::new(), Txn::then);
    let rev = committed(store.txn(txn).await.unwrap());
    let before = mirror.revision();
    mirror.wrote(&ops, rev);
    let expected = vec![("o/k/1".to_owned(), "b".to_owned(), rev), ("o/k/2".to_owned(), "c".to_owned(), rev)];
    assert_eq!(copy_of(&mirror, "o/"), expected, "later operations on a key win; only kept keys");
    assert_eq!(mirror.revision(), before, "others' changes before the write may still be on their way");
    // The same changes arriving through the watch change nothing, and the copy equals a listing.
    mirror.reach(rev, Duration::from_secs(10)).await.unwrap();
    assert_eq!(copy_of(&mirror, "o/"), expected);
    assert_eq!(copy_of(&mirror, "o/k/"), listing_of(store.as_ref(), "o/k/").await);
}
