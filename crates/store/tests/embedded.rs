use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{Compare, EmbeddedStore, Event, Op, Store, Txn, TxnOutcome};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path().join("state.redb")).expect("open store")
}

#[tokio::test]
async fn put_if_absent_then_compare_on_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.txn(Txn::new().when(Compare::absent("a")).then(Op::put("a", "1"))).await.unwrap();
    let TxnOutcome::Committed(rev) = first else { panic!("first put must commit, got {first:?}") };
    // Absent no longer holds.
    assert_eq!(
        store.txn(Txn::new().when(Compare::absent("a")).then(Op::put("a", "2"))).await.unwrap(),
        TxnOutcome::Conflict
    );
    // A stale revision loses, the current one wins.
    let second = store.txn(Txn::new().when(Compare::revision("a", rev)).then(Op::put("a", "3"))).await.unwrap();
    assert!(matches!(second, TxnOutcome::Committed(r) if r == rev + 1));
    assert_eq!(
        store.txn(Txn::new().when(Compare::revision("a", rev)).then(Op::put("a", "4"))).await.unwrap(),
        TxnOutcome::Conflict
    );
    let kv = store.get("a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"3");
    assert_eq!(kv.create_revision, rev);
    assert_eq!(kv.mod_revision, rev + 1);
    assert_eq!(store.revision().await.unwrap(), rev + 1);
}

#[tokio::test]
async fn failed_compare_writes_nothing_of_the_txn() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.txn(Txn::new().then(Op::put("x", "1"))).await.unwrap();
    let out =
        store.txn(Txn::new().when(Compare::absent("x")).then(Op::put("y", "1")).then(Op::delete("x"))).await.unwrap();
    assert_eq!(out, TxnOutcome::Conflict);
    assert!(store.get("y").await.unwrap().is_none());
    assert!(store.get("x").await.unwrap().is_some());
}

#[tokio::test]
async fn list_prefix_is_ordered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for key in ["t/b", "t/a", "u/a", "s/z", "t/c"] {
        store.txn(Txn::new().then(Op::put(key, key))).await.unwrap();
    }
    let keys: Vec<String> = store.list_prefix("t/").await.unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["t/a", "t/b", "t/c"]);
    store.txn(Txn::new().then(Op::delete("t/b"))).await.unwrap();
    assert_eq!(store.list_prefix("t/").await.unwrap().len(), 2);
}

#[tokio::test]
async fn writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rev = {
        let store = open(&dir);
        store.txn(Txn::new().then(Op::put("k", "v"))).await.unwrap();
        store.revision().await.unwrap()
    };
    let store = open(&dir);
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(store.revision().await.unwrap(), rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_loses_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
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

#[tokio::test]
async fn watch_sees_changes_under_its_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut watch = store.watch("tasks/");
    store.txn(Txn::new().then(Op::put("clusters/x", "c"))).await.unwrap();
    store.txn(Txn::new().then(Op::put("tasks/1", "t"))).await.unwrap();
    store.txn(Txn::new().then(Op::delete("tasks/1"))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap();
    assert!(matches!(first, Event::Put(ref kv) if kv.key == "tasks/1" && kv.value == b"t"), "{first:?}");
    let second = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap();
    assert!(matches!(second, Event::Delete { ref key, .. } if key == "tasks/1"), "{second:?}");
}
