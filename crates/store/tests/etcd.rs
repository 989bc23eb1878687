//! The etcd backend against real etcd members (Debian's etcd-server): the shared behaviour
//! (`behaviour/mod.rs`) on a one-member cluster each, then what only a cluster can show.

mod behaviour;

use std::any::Any;
use std::sync::Arc;

use flotilla_store::Store;
use flotilla_store::testing::EtcdCluster;

async fn open_etcd() -> (Arc<dyn Store>, Box<dyn Any>) {
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await.expect("connect to etcd");
    (Arc::new(store), Box::new(cluster))
}

store_behaviour!(open_etcd);

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_store::{Compare, EtcdStore, Event, Op, StoreError, Txn, TxnOutcome};
use tokio::time::Instant;

/// A store on only the members `members` of `cluster`.
async fn store_on(cluster: &EtcdCluster, members: &[usize]) -> EtcdStore {
    let mut options = cluster.options("flotilla/");
    options.endpoints = members.iter().map(|&i| cluster.endpoints()[i].clone()).collect();
    EtcdStore::connect(options).await.expect("connect to etcd")
}

/// Writes `key` exactly once however often etcd fails meanwhile: a retry after an unknown
/// outcome that finds the key already there means the earlier attempt applied.
async fn write_once(store: &dyn Store, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.txn(Txn::new().when(Compare::absent(key)).then(Op::put(key, "v"))).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "writing {key} kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn wait_for(what: &str, deadline: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_resumes_after_its_member_dies_losing_and_repeating_nothing() {
    let mut cluster = EtcdCluster::start(3).await;
    // The watch runs over one of the three members; killing each in turn kills its member.
    let watcher = cluster.store().await.unwrap();
    let writer: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let mut watch = watcher.watch("w/");
    let n = 240;
    let written = Arc::new(AtomicUsize::new(0));
    let writing = tokio::spawn({
        let (writer, written) = (writer.clone(), written.clone());
        async move {
            for i in 0..n {
                write_once(&*writer, &format!("w/{i:04}")).await;
                written.store(i + 1, Ordering::SeqCst);
            }
        }
    });
    let collecting = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < n {
            match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
                Ok(Ok(Event::Put(kv))) => seen.push(kv.key),
                Ok(Ok(other)) => panic!("unexpected {other:?}"),
                Ok(Err(e)) => panic!("watch failed: {e}"),
                Err(_) => break,
            }
        }
        seen
    });
    for member in 0..3 {
        let at = (member + 1) * n / 4;
        wait_for("the writer's progress", Duration::from_secs(60), async || written.load(Ordering::SeqCst) >= at).await;
        cluster.stop(member);
        let after = at + n / 8;
        wait_for("writes with a member down", Duration::from_secs(60), async || {
            written.load(Ordering::SeqCst) >= after
        })
        .await;
        cluster.restart(member);
        cluster.wait_healthy().await;
    }
    writing.await.unwrap();
    let seen = collecting.await.unwrap();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "the watch repeated an event");
    let expected: Vec<String> = (0..n).map(|i| format!("w/{i:04}")).collect();
    assert_eq!(seen, expected, "the watch lost or reordered events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_member_of_three_changes_nothing() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = cluster.store().await.unwrap();
    let mut watch = store.watch("k/");
    let mut expected = 0;
    for member in 0..3 {
        cluster.stop(member);
        for i in 0..20 {
            let key = format!("k/{member}-{i:02}");
            let out = store.txn(Txn::new().when(Compare::absent(&key)).then(Op::put(&key, "v"))).await;
            assert!(matches!(out, Ok(TxnOutcome::Committed(_))), "with member {member} down: {out:?}");
            expected += 1;
            assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"v");
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
            assert_eq!(event.key(), key);
        }
        assert_eq!(store.list_prefix("k/").await.unwrap().len(), expected);
        cluster.restart(member);
        cluster.wait_healthy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_quorum_fails_writes_promptly_and_loses_no_acknowledged_write() {
    let mut cluster = EtcdCluster::start(3).await;
    let store: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("ack/{w}-{i:05}");
                    i += 1;
                    if let Ok(TxnOutcome::Committed(_)) = store.txn(Txn::new().then(Op::put(&key, "v"))).await {
                        acknowledged.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();
    wait_for("acknowledged writes", Duration::from_secs(30), async || acknowledged.lock().unwrap().len() >= 200).await;
    // Two of three members die while the writers write.
    cluster.stop(1);
    cluster.stop(2);

    let deadline = store_deadline();
    let started = Instant::now();
    let out = store.txn(Txn::new().then(Op::put("after", "v"))).await;
    let took = started.elapsed();
    let Err(e @ StoreError::Unavailable { .. }) = out else { panic!("a write without quorum gave {out:?}") };
    assert!(took < deadline + Duration::from_secs(1), "the failing write took {took:?}");
    assert!(e.to_string().contains("quorum"), "{e}");
    let started = Instant::now();
    assert!(matches!(store.get("after").await, Err(StoreError::Unavailable { .. })));
    assert!(started.elapsed() < deadline + Duration::from_secs(1));

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    cluster.restart(1);
    cluster.restart(2);
    let listed = wait_list(&*store, "ack/").await;
    let present: BTreeSet<String> = listed.into_iter().collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let missing: Vec<&String> = acknowledged.iter().filter(|k| !present.contains(*k)).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged writes lost: {missing:?}", missing.len(), acknowledged.len());
}

fn store_deadline() -> Duration {
    flotilla_store::EtcdOptions::from_url("etcd://h:1", Default::default()).unwrap().deadline
}

/// Lists `prefix` once the cluster answers again.
async fn wait_list(store: &dyn Store, prefix: &str) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match store.list_prefix(prefix).await {
            Ok(kvs) => return kvs.into_iter().map(|kv| kv.key).collect(),
            Err(e) => assert!(Instant::now() < until, "the cluster did not come back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resigned_role_passes_at_once() {
    let cluster = EtcdCluster::start(1).await;
    let (a, b) = (cluster.store().await.unwrap(), cluster.store().await.unwrap());
    let first = a.acquire("scheduler", "a").await.unwrap();
    let mut second = tokio::spawn(async move { b.acquire("scheduler", "b").await.map(|l| (l, b)) });
    // While the first holds it, the second waits.
    assert!(tokio::time::timeout(Duration::from_secs(2), &mut second).await.is_err(), "two holders at once");
    let dropped = Instant::now();
    drop(first);
    let (role, _b) = tokio::time::timeout(Duration::from_secs(4), second).await.unwrap().unwrap().unwrap();
    assert!(role.is_held());
    // Well before the lease would have expired on its own.
    assert!(dropped.elapsed() < Duration::from_secs(3), "{:?}", dropped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_passes_when_its_holder_is_cut_off_and_the_holder_knows_first() {
    let mut cluster = EtcdCluster::start(3).await;
    let holder = store_on(&cluster, &[0]).await;
    let other = store_on(&cluster, &[1, 2]).await;
    let mut held = holder.acquire("detector", "holder").await.unwrap();
    let campaign = tokio::spawn(async move {
        let role = other.acquire("detector", "other").await.unwrap();
        (Instant::now(), role, other)
    });
    cluster.stop(0);
    let cut = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), held.lost()).await.expect("the holder notices it lost the role");
    let lost_at = Instant::now();
    let (acquired_at, role, _other) = tokio::time::timeout(Duration::from_secs(15), campaign).await.unwrap().unwrap();
    assert!(role.is_held());
    assert!(lost_at <= acquired_at, "the new holder started before the old one stopped");
    assert!(acquired_at - cut < Duration::from_secs(12), "handover took {:?}", acquired_at - cut);
}

/// Run by `a_role_passes_when_its_holder_process_dies` in a child process: holds a role until
/// killed. A no-op in the normal test run.
#[tokio::test]
async fn campaigner_child() {
    let Ok(url) = std::env::var("FLOTILLA_TEST_CAMPAIGNER_URL") else { return };
    let store = flotilla_store::open(&url, &Default::default()).await.unwrap();
    let _role = store.acquire("scheduler", "child").await.unwrap();
    println!("HELD");
    std::future::pending::<()>().await;
}

/// The child campaigner dies with the test, whatever happens.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_passes_when_its_holder_process_dies() {
    let cluster = EtcdCluster::start(3).await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "campaigner_child", "--nocapture", "--test-threads=1"])
        .env("FLOTILLA_TEST_CAMPAIGNER_URL", cluster.url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    // libtest prints "test campaigner_child ... " before the child's own output.
    let held = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.trim_end().ends_with("HELD"))
    });
    assert!(tokio::time::timeout(Duration::from_secs(30), held).await.unwrap().unwrap(), "the child took the role");
    let store = cluster.store().await.unwrap();
    let mut campaign = tokio::spawn(async move { store.acquire("scheduler", "parent").await.map(|l| (l, store)) });
    assert!(tokio::time::timeout(Duration::from_secs(2), &mut campaign).await.is_err(), "two holders at once");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed = Instant::now();
    let (role, _store) = tokio::time::timeout(Duration::from_secs(15), campaign).await.unwrap().unwrap().unwrap();
    assert!(role.is_held());
    // The child's lease (5 s) expires; no more than that plus a campaign round.
    assert!(killed.elapsed() < Duration::from_secs(9), "handover took {:?}", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_that_falls_behind_a_compaction_loses_nothing_silently() {
    let mut cluster = EtcdCluster::start(3).await;
    let watcher = store_on(&cluster, &[0]).await;
    let writer = store_on(&cluster, &[1, 2]).await;
    let mut watch = watcher.watch("c/");
    writer.txn(Txn::new().then(Op::put("c/1", "v"))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
    assert_eq!(first.key(), "c/1");
    cluster.stop(0);
    writer.txn(Txn::new().then(Op::put("c/2", "v"))).await.unwrap();
    let TxnOutcome::Committed(last) = writer.txn(Txn::new().then(Op::put("c/3", "v"))).await.unwrap() else {
        panic!("unconditional txn conflicted")
    };
    let mut raw = etcd_client::Client::connect(&cluster.endpoints()[1..], None).await.unwrap();
    raw.compact(i64::try_from(last).unwrap(), None).await.unwrap();
    cluster.restart(0);
    // Either the watch replays what it missed (its member caught up before the compaction
    // reached it), or it says it lagged and a re-list finds everything: never a silent gap.
    match tokio::time::timeout(Duration::from_secs(20), watch.next()).await.unwrap() {
        Err(StoreError::WatchLagged { .. }) => {
            let keys = wait_list(&watcher, "c/").await;
            assert_eq!(keys, ["c/1", "c/2", "c/3"]);
            // Watching again goes on from the compaction point: it may repeat what the re-list
            // already showed, then carries on with what comes after.
            let mut again = watcher.watch("c/");
            writer.txn(Txn::new().then(Op::put("c/4", "v"))).await.unwrap();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(10), again.next()).await.unwrap().unwrap();
                if next.key() == "c/4" {
                    break;
                }
                assert!(keys.iter().any(|k| k == next.key()), "unexpected {next:?}");
            }
        }
        Ok(event) => {
            assert_eq!(event.key(), "c/2");
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
            assert_eq!(event.key(), "c/3");
        }
        Err(e) => panic!("watch failed: {e}"),
    }
}

#[tokio::test]
async fn opening_an_unreachable_cluster_names_it_and_says_what_to_check() {
    let url = format!("etcd://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let e = flotilla_store::open(&url, &Default::default()).await.err().expect("nothing listens there");
    assert!(started.elapsed() < store_deadline() + Duration::from_secs(2));
    let text = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
    assert!(text.contains(&url[7..]) && text.contains("majority"), "{text}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_client_certificate_as_etcds_own_flags() {
    let cluster = EtcdCluster::start_tls(1).await;
    let tls = cluster.tls().unwrap().clone();
    let store = flotilla_store::open(&cluster.url(), &tls).await.expect("open over TLS");
    let mut watch = store.watch("");
    store.txn(Txn::new().when(Compare::absent("k")).then(Op::put("k", "v"))).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().key(), "k");

    // Without a client certificate, or without TLS at all, the cluster refuses; the error
    // names the URL.
    let no_cert = flotilla_store::TlsFiles { ca: tls.ca.clone(), cert: None, key: None };
    for files in [no_cert, Default::default()] {
        let e = flotilla_store::open(&cluster.url(), &files).await.err().expect("refused");
        assert!(e.to_string().contains(&cluster.endpoints()[0]), "{e}");
    }
    // A certificate without its key is a usage error, said before dialling.
    let half = flotilla_store::TlsFiles { key: None, ..tls };
    let e = flotilla_store::open(&cluster.url(), &half).await.err().expect("refused");
    let text = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
    assert!(text.contains("--key"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_whose_key_an_operator_deletes_is_lost_at_once() {
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await.unwrap();
    let mut role = store.acquire("scheduler", "me").await.unwrap();
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None).await.unwrap();
    let deleted = raw.delete("flotilla/roles/scheduler", None).await.unwrap();
    assert_eq!(deleted.deleted(), 1, "the role key lives where ARCHITECTURE.md says");
    tokio::time::timeout(Duration::from_secs(2), role.lost()).await.expect("the holder notices");
    assert!(!role.is_held());
}

/// A store that only hears of writes through its watch (another process made them) still
/// reads them stale at once: what it heard raises its floor, and a member behind the floor is
/// not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_see_what_the_watch_delivered_and_fall_back_behind_the_floor() {
    let cluster = EtcdCluster::start(3).await;
    let writer: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let reader = cluster.store().await.unwrap();
    let mut watch = reader.watch("heard/");
    let n = 200;
    let writing = tokio::spawn({
        let writer = writer.clone();
        async move {
            for i in 0..n {
                writer.txn(Txn::new().then(Op::put(format!("heard/{i:04}"), i.to_string()))).await.unwrap();
            }
        }
    });
    for _ in 0..n {
        let Event::Put(heard) = watch.next().await.unwrap() else { panic!("only puts were made") };
        let read = reader.get_stale(&heard.key).await.unwrap();
        assert_eq!(read.as_ref(), Some(&heard), "a stale read after the watch delivered {}", heard.key);
    }
    writing.await.unwrap();
    assert_eq!(reader.list_prefix_stale("heard/").await.unwrap().len(), n);

    // A floor past anything etcd has: every stale read is made again linearizably, and
    // still answers.
    let before = reader.stale_fallbacks();
    reader.raise_floor(reader.revision().await.unwrap() + 1_000);
    assert_eq!(reader.get_stale("heard/0007").await.unwrap().map(|kv| kv.value), Some(b"7".to_vec()));
    assert_eq!(reader.list_prefix_stale("heard/").await.unwrap().len(), n);
    assert_eq!(reader.stale_fallbacks(), before + 2);
}

/// A stale listing longer than a page reads every page at the first page's revision, though
/// later pages may reach a member that has not applied it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_listing_of_many_pages_is_whole() {
    let cluster = EtcdCluster::start(3).await;
    let store: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let n = 2_500;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let txn = chunk.iter().fold(Txn::new(), |t, i| t.then(Op::put(format!("many/{i:05}"), "v")));
        store.txn(txn).await.unwrap();
    }
    // Writes from elsewhere keep the members' revisions moving while the listings page.
    let other: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let writing = tokio::spawn(async move {
        for i in 0..200 {
            other.txn(Txn::new().then(Op::put(format!("other/{i}"), "v"))).await.unwrap();
        }
    });
    for _ in 0..20 {
        let listed = store.list_prefix_stale("many/").await.unwrap();
        assert_eq!(listed.len(), n);
    }
    writing.await.unwrap();
}
