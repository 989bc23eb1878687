//! Store-level benchmark (issue 12, benchmark a at the store): transaction and read latency
//! and throughput of the etcd backend (a real 3-member cluster on loopback) against the
//! embedded store, in one run on the same machine, with the ratio. `bench/store.sh` runs it
//! in release mode.
//!
//! Usage: store-bench [--members N] [--ops N] [--concurrency N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_store::testing::EtcdCluster;
use flotilla_store::{Compare, EmbeddedStore, Op, Store, Txn, TxnOutcome};

struct Args {
    members: usize,
    ops: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut args = Args { members: 3, ops: 1000, concurrency: 32 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--members" => args.members = value,
            "--ops" => args.ops = value,
            "--concurrency" => args.concurrency = value,
            other => panic!("unknown flag {other}; usage: store-bench [--members N] [--ops N] [--concurrency N]"),
        }
    }
    args
}

/// One measurement: latencies of sequential calls, and the rate of concurrent ones.
struct Result {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn put(store: &dyn Store, key: String) {
    let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, vec![b'x'; 256]));
    let outcome = store.txn(txn).await.expect("txn");
    assert!(matches!(outcome, TxnOutcome::Committed(_)), "{key}: {outcome:?}");
}

async fn measure<F, Fut>(store: &Arc<dyn Store>, args: &Args, label: &str, op: F) -> Result
where
    F: Fn(Arc<dyn Store>, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut latencies = Vec::with_capacity(args.ops);
    for i in 0..args.ops {
        let started = Instant::now();
        op(store.clone(), format!("{label}/seq/{i:06}")).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let per_task = args.ops.div_ceil(args.concurrency).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|t| {
            let (store, op, label) = (store.clone(), op.clone(), label.to_owned());
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(store.clone(), format!("{label}/par/{t:03}-{i:06}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    let elapsed = started.elapsed();
    Result {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_second: (per_task * args.concurrency) as f64 / elapsed.as_secs_f64(),
    }
}

async fn run(store: Arc<dyn Store>, args: &Args) -> (Result, Result) {
    let txn = measure(&store, args, "txn", |store, key| async move { put(&*store, key).await }).await;
    // Reads of keys the writes above created, spread over them.
    let keys: Arc<Vec<String>> = Arc::new((0..args.ops).map(|i| format!("txn/seq/{i:06}")).collect());
    let get = measure(&store, args, "get", move |store, name| {
        let keys = keys.clone();
        async move {
            let n: usize = name.rsplit(['/', '-']).next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let key = &keys[n % keys.len()];
            assert!(store.get(key).await.expect("get").is_some(), "{key} missing");
        }
    })
    .await;
    (txn, get)
}

fn row(what: &str, embedded: &Result, etcd: &Result) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<4} | {:>8.2} {:>8.2} {:>9.0} | {:>8.2} {:>8.2} {:>9.0} | {:>6.2}x {:>6.2}x",
        ms(embedded.p50),
        ms(embedded.p99),
        embedded.per_second,
        ms(etcd.p50),
        ms(etcd.p99),
        etcd.per_second,
        ms(etcd.p50) / ms(embedded.p50),
        etcd.per_second / embedded.per_second,
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path().join("bench.redb")).expect("embedded store"));
    let (e_txn, e_get) = run(embedded, &args).await;

    let cluster = EtcdCluster::start(args.members).await;
    let etcd: Arc<dyn Store> = Arc::new(cluster.store().await.expect("etcd store"));
    let (c_txn, c_get) = run(etcd, &args).await;

    println!(
        "store benchmark: {} ops sequential (latency) and {} ops over {} tasks (throughput), 256-byte values",
        args.ops, args.ops, args.concurrency
    );
    println!("etcd: {} members on loopback, data dirs in {}", args.members, cluster.dir().display());
    println!("     |        embedded (redb)       |        etcd ({} members)       | etcd/embedded", args.members);
    println!("op   |  p50 ms   p99 ms     ops/s |  p50 ms   p99 ms     ops/s | p50     ops/s");
    row("txn", &e_txn, &c_txn);
    row("get", &e_get, &c_get);
}
