//! The group commit against the real embedded store, with a hook that records each
//! transaction and can change a record just before a transaction that writes it (another
//! server's write landing between a service's read and its commit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flotilla_host::HostSpec;
use flotilla_store::testing::{Hooked, TxnHook};
use flotilla_store::{Compare, EmbeddedStore, Op, Store, StoreError, Txn, TxnOutcome};
use serde_json::json;

use super::Commits;
use crate::host::{Allocation, Reservation};
use crate::service::{CreateServiceInput, service_key};
use crate::{Control, Identity};

/// Records the keys each transaction writes, and rewrites `stale` (as it is) just before the
/// first transaction that writes it, so that its compare fails.
#[derive(Default)]
struct Interfering {
    stale: Mutex<Option<String>>,
    written: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl TxnHook for Interfering {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let stale = {
            let mut stale = self.stale.lock().unwrap();
            match stale.as_deref() {
                Some(key) if txn.ops.iter().any(|op| op.key() == key) => stale.take(),
                _ => None,
            }
        };
        if let Some(key) = stale {
            let kv = inner.get(&key).await?.expect("the record to change exists");
            inner.txn(Txn::new().then(Op::put(&key, kv.value))).await?;
        }
        self.written.lock().unwrap().push(txn.ops.iter().map(|op| op.key().to_owned()).collect());
        inner.txn(txn).await
    }
}

type Interfered = Hooked<EmbeddedStore, Interfering>;

async fn control() -> (Arc<Control>, Arc<Interfered>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Hooked {
        inner: EmbeddedStore::open(dir.path().join("store.redb")).unwrap(),
        hook: Interfering::default(),
    });
    let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
    let control = Arc::new(Control::new(store.clone(), identity));
    for (id, zone) in [("host-a", "us-east-1a"), ("host-b", "us-east-1b")] {
        let spec = HostSpec {
            id: id.into(),
            availability_zone: zone.into(),
            cpu: 16384,
            memory: 32768,
            underlay_ip: None,
            max_tasks: None,
        };
        control.register_host(spec).await.unwrap();
    }
    (control, store, dir)
}

/// Every host's allocation as the store holds it, by host.
async fn stored_allocations(control: &Control) -> HashMap<String, Allocation> {
    let placer = control.placer().await.unwrap();
    placer.hosts().map(|(h, a)| (h.spec.id.clone(), a)).collect()
}

fn total(allocations: &HashMap<String, Allocation>) -> (u32, u32, u32) {
    allocations.values().fold((0, 0, 0), |(c, m, t), a| (c + a.cpu, m + a.memory, t + a.tasks))
}

#[tokio::test]
async fn a_group_that_conflicts_commits_its_entries_one_by_one_and_takes_back_only_the_failed() {
    let (control, store, _dir) = control().await;
    let size = Reservation { cpu: 256, memory: 512 };
    let mut read = Vec::new();
    for name in ["a", "b", "c"] {
        let key = format!("test/{name}");
        let TxnOutcome::Committed(rev) = store.txn(Txn::new().then(Op::put(&key, "0"))).await.unwrap() else {
            panic!("the record is written");
        };
        read.push((key, rev));
    }
    let commits = Commits::lazy(store.as_ref());
    commits.ready(control.placer()).await.unwrap();
    // a places 1 task, b 2, c 3, one after another under the placer.
    let mut queued = Vec::new();
    for (n, (key, rev)) in read.iter().enumerate() {
        let ((), placed) = commits.place(|placer| {
            for _ in 0..=n {
                placer.place(None, size, &HashMap::new()).expect("room");
            }
        });
        let txn = Txn::new().when(Compare::revision(key, *rev)).then(Op::put(key, "1"));
        queued.push((txn, placed));
    }
    // Another writer changes b between its read and its commit.
    *store.hook.stale.lock().unwrap() = Some("test/b".into());
    store.hook.written.lock().unwrap().clear();
    let outcomes =
        futures_util::future::join_all(queued.into_iter().map(|(txn, placed)| commits.commit(txn, placed))).await;
    let outcomes: Vec<bool> = outcomes.into_iter().map(|o| matches!(o.unwrap(), TxnOutcome::Committed(_))).collect();
    assert_eq!(outcomes, [true, false, true], "only b fails");

    // One group of the three, then each alone.
    let written = store.hook.written.lock().unwrap().clone();
    let services = |keys: &Vec<String>| keys.iter().filter(|k| k.starts_with("test/")).count();
    assert_eq!(written.iter().map(services).collect::<Vec<_>>(), [3, 1, 1, 1], "{written:?}");

    // What is stored is a's and c's placements exactly: b's taken back though c placed on top.
    let stored = stored_allocations(&control).await;
    assert_eq!(total(&stored), (4 * 256, 4 * 512, 4));
    let in_placer: HashMap<String, Allocation> =
        lock(commits.placer()).hosts().map(|(h, a)| (h.spec.id.clone(), a)).collect();
    assert_eq!(in_placer, stored, "the placer holds what is stored");

    // The next commit compares on the revisions the fallback committed.
    let ((), placed) = commits.place(|placer| {
        placer.place(None, size, &HashMap::new()).expect("room");
    });
    let outcome = commits.commit(Txn::new().then(Op::put("test/d", "1")), placed).await.unwrap();
    assert!(matches!(outcome, TxnOutcome::Committed(_)));
    assert_eq!(total(&stored_allocations(&control).await), (5 * 256, 5 * 512, 5));
}

#[tokio::test]
async fn a_service_changed_during_a_pass_does_not_keep_the_others_from_starting() {
    let (control, store, _dir) = control().await;
    control.ensure_default_network().await.unwrap();
    control.create_cluster(Default::default()).await.unwrap();
    let subnets: Vec<String> = control
        .describe_subnets(&[], &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.default_for_az && ["us-east-1a", "us-east-1b"].contains(&s.availability_zone.as_str()))
        .map(|s| s.id)
        .collect();
    let spec = serde_json::from_value(json!({
        "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "busybox:latest", "essential": true}],
    }))
    .unwrap();
    let definition = control.register_task_definition(spec, None).await.unwrap().0.task_definition_arn;
    let names = ["s1", "s2", "s3", "s4", "s5"];
    for name in names {
        let input: CreateServiceInput = serde_json::from_value(json!({
            "serviceName": name, "taskDefinition": definition, "desiredCount": 4, "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": subnets}},
        }))
        .unwrap();
        control.create_service(input).await.unwrap();
    }
    let started = |name: &'static str| {
        let control = control.clone();
        async move {
            let group = format!("service:{name}");
            control.all_tasks().await.unwrap().iter().filter(|r| r.task.group.as_deref() == Some(&group)).count()
        }
    };

    // s3's record changes under the pass, after the pass read it.
    *store.hook.stale.lock().unwrap() = Some(service_key("default", "s3"));
    let summary = control.reconcile_services().await.unwrap();
    assert_eq!(summary.started, 16, "every service but s3 started its tasks");
    for name in names {
        assert_eq!(started(name).await, if name == "s3" { 0 } else { 4 }, "{name}");
    }
    assert_eq!(total(&stored_allocations(&control).await), (16 * 256, 16 * 512, 16), "no room kept for s3");

    // The next pass decides s3 again, from what won.
    let summary = control.reconcile_services().await.unwrap();
    assert_eq!(summary.started, 4);
    assert_eq!(started("s3").await, 4);
    assert_eq!(total(&stored_allocations(&control).await), (20 * 256, 20 * 512, 20));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}
