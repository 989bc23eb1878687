//! "An acknowledged transaction has been fsynced", checked from outside the process: the test
//! runs itself again as a child under `strace` and reads the system calls. Each transaction
//! writes a marker before it is submitted and another once `txn` has answered; between the
//! two there must be a write of the transaction's value to the store file and, after it, an
//! fdatasync/fsync of the store file that succeeded. strace sees the kernel's order of events
//! across threads, so a store that answered before its sync (or never synced) fails here.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use flotilla_store::{EmbeddedStore, Op, Store, Txn, TxnOutcome};

/// Set in the child: the directory its store and marker file live in.
const CHILD_DIR: &str = "FLOTILLA_STORE_FSYNC_CHILD";
const TEST_NAME: &str = "acknowledged_transactions_were_fsynced_first";
const SEQUENTIAL: usize = 3;
const CONCURRENT: usize = 8;

fn value(k: usize) -> String {
    format!("durable-value-{k:04}")
}

/// One `write(2)` per marker: a `File` has no buffer.
fn mark(markers: &File, what: &str, k: usize) {
    (&*markers).write_all(format!("{what} {k}\n").as_bytes()).unwrap();
}

/// The child: sequential transactions, then a group the writer thread can batch into one
/// commit, each bracketed by markers.
fn child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.join("state.redb")).unwrap());
        let markers = Arc::new(File::create(dir.join("markers")).unwrap());
        for k in 0..SEQUENTIAL {
            mark(&markers, "submit", k);
            let out = store.txn(Txn::new().then(Op::put(format!("key-{k}"), value(k)))).await.unwrap();
            assert!(matches!(out, TxnOutcome::Committed(_)));
            mark(&markers, "ack", k);
        }
        let group: Vec<_> = (SEQUENTIAL..SEQUENTIAL + CONCURRENT)
            .map(|k| {
                let (store, markers) = (store.clone(), markers.clone());
                tokio::spawn(async move {
                    mark(&markers, "submit", k);
                    let out = store.txn(Txn::new().then(Op::put(format!("key-{k}"), value(k)))).await.unwrap();
                    assert!(matches!(out, TxnOutcome::Committed(_)));
                    mark(&markers, "ack", k);
                })
            })
            .collect();
        for task in group {
            task.await.unwrap();
        }
    });
}

#[derive(Debug)]
enum Event {
    Submit(usize),
    Ack(usize),
    /// A write to the store file, with the bytes strace showed.
    StoreWrite(String),
    /// A successful fsync or fdatasync of the store file.
    StoreSync,
}

/// The events of an `strace -f -y` log, in the order their system calls finished. A call
/// another thread interrupted appears as `<unfinished ...>` and later `<... name resumed>`;
/// the two halves are joined and count where the call finished.
fn events(trace: &str, store_file: &str, markers_file: &str) -> Vec<Event> {
    let mut pending: HashMap<&str, String> = HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, start.to_owned());
            continue;
        }
        let call = match rest.strip_prefix("<... ") {
            Some(resumed) => {
                let Some((_, tail)) = resumed.split_once("resumed>") else { continue };
                match pending.remove(pid) {
                    Some(start) => format!("{start}{tail}"),
                    None => continue,
                }
            }
            None => rest.to_owned(),
        };
        let Some((name, args)) = call.split_once('(') else { continue };
        let on = |file: &str| args.starts_with(|c: char| c.is_ascii_digit()) && args.contains(&format!("<{file}>"));
        match name {
            "fsync" | "fdatasync" if on(store_file) && call.trim_end().ends_with("= 0") => out.push(Event::StoreSync),
            "write" | "pwrite64" | "pwritev" | "pwritev2" if on(store_file) => out.push(Event::StoreWrite(call)),
            "write" if on(markers_file) => {
                let text = args.split('"').nth(1).unwrap_or_default().trim_end_matches("\\n");
                match text.split_once(' ') {
                    Some(("submit", k)) => out.push(Event::Submit(k.parse().unwrap())),
                    Some(("ack", k)) => out.push(Event::Ack(k.parse().unwrap())),
                    _ => panic!("unexpected marker write: {call}"),
                }
            }
            _ => {}
        }
    }
    out
}

/// Why transaction `k`'s acknowledgement is not backed by a write and a later sync, if it is not.
fn unsynced(events: &[Event], k: usize) -> Option<String> {
    let Some(submit) = events.iter().position(|e| matches!(e, Event::Submit(x) if *x == k)) else {
        return Some(format!("transaction {k} was never submitted"));
    };
    let Some(ack) = events.iter().position(|e| matches!(e, Event::Ack(x) if *x == k)) else {
        return Some(format!("transaction {k} was never acknowledged"));
    };
    let window = &events[submit..ack];
    let Some(sync) = window.iter().rposition(|e| matches!(e, Event::StoreSync)) else {
        return Some(format!(
            "transaction {k} was acknowledged with no fsync of the store file since it was submitted"
        ));
    };
    let written = window[..sync].iter().any(|e| matches!(e, Event::StoreWrite(bytes) if bytes.contains(&value(k))));
    (!written).then(|| format!("transaction {k}'s value was not written to the store file before the last fsync"))
}

#[test]
fn acknowledged_transactions_were_fsynced_first() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let this = std::env::current_exe().unwrap();
    let child = Command::new("strace")
        // -f: every thread; -y: file paths for descriptors; -s: enough of each write to find a
        // value in a page.
        .args(["-f", "-qq", "-y", "-s", "65536", "-e", "trace=write,pwrite64,pwritev,pwritev2,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(&this)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap_or_else(|e| panic!("strace cannot run ({e}); scripts/deps.sh installs it"));
    assert!(
        child.status.success(),
        "the traced child failed ({}): {}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );

    let trace = std::fs::read_to_string(&trace).unwrap();
    let store_file = dir.path().join("state.redb").display().to_string();
    let markers_file = dir.path().join("markers").display().to_string();
    let events = events(&trace, &store_file, &markers_file);
    let acks = events.iter().filter(|e| matches!(e, Event::Ack(_))).count();
    assert_eq!(acks, SEQUENTIAL + CONCURRENT, "every transaction acknowledged once; events: {events:?}");
    let problems: Vec<String> = (0..SEQUENTIAL + CONCURRENT).filter_map(|k| unsynced(&events, k)).collect();
    assert!(problems.is_empty(), "{problems:#?}\nevents: {:#?}", summary(&events));

    // And the values are really there for the next process.
    let store = EmbeddedStore::open(PathBuf::from(&store_file)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for k in 0..SEQUENTIAL + CONCURRENT {
        let kv = rt.block_on(store.get(&format!("key-{k}"))).unwrap().unwrap();
        assert_eq!(kv.value, value(k).as_bytes());
    }
}

/// The events without the page bytes, for failure messages.
fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::StoreWrite(call) => {
                let values: Vec<usize> = (0..SEQUENTIAL + CONCURRENT).filter(|k| call.contains(&value(*k))).collect();
                format!("store write holding values {values:?}")
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_trace_reader_joins_interrupted_calls() {
    let trace = "\
10 write(4</d/markers>, \"submit 0\\n\", 9) = 9
11 pwrite64(3</d/state.redb>, \"..durable-value-0000..\", 4096, 0) = 4096
11 fdatasync(3</d/state.redb> <unfinished ...>
10 write(1</dev/pts/0>, \"x\", 1) = 1
11 <... fdatasync resumed>) = 0
10 write(4</d/markers>, \"ack 0\\n\", 6) = 6
10 write(4</d/markers>, \"submit 1\\n\", 9) = 9
11 fdatasync(3</d/state.redb>) = -1 EIO (Input/output error)
10 write(4</d/markers>, \"ack 1\\n\", 6) = 6
";
    let events = events(trace, "/d/state.redb", "/d/markers");
    assert_eq!(unsynced(&events, 0), None, "{events:?}");
    // A failed sync is no sync.
    assert!(unsynced(&events, 1).unwrap().contains("no fsync"), "{events:?}");
}
