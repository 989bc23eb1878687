//! Acknowledged writes survive SIGKILL; concurrent registrations never gap or repeat.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, task_definition, wait_for};
use serde_json::json;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    let client = server.client();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            let acked = acknowledged.clone();
            rt.spawn(async move {
                for i in 0.. {
                    let family = format!("crash-{w}");
                    let mut body = task_definition(&family);
                    body["containerDefinitions"][0]["environment"] = json!([{"name": "SEQ", "value": i.to_string()}]);
                    match client.ecs("RegisterTaskDefinition", body).await {
                        Ok(v) => {
                            let rev = v["taskDefinition"]["revision"].as_u64().unwrap();
                            acked.lock().unwrap().insert((family, rev, i));
                        }
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    wait_for("writes to be acknowledged", Duration::from_secs(60), || acknowledged.lock().unwrap().len() >= 300);
    server.kill9();
    for w in writers {
        rt.block_on(w).unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let server = Server::start_in(dir.path());
    let client = server.client();
    for (family, rev, seq) in &acked {
        let v = rt
            .block_on(client.ecs("DescribeTaskDefinition", json!({"taskDefinition": format!("{family}:{rev}")})))
            .unwrap_or_else(|e| panic!("acknowledged {family}:{rev} lost after kill -9: {e}"));
        assert_eq!(v["taskDefinition"]["containerDefinitions"][0]["environment"][0]["value"], seq.to_string());
    }
    // The next revision continues after the last acknowledged one, without reuse.
    let last = acked.iter().filter(|(f, _, _)| f == "crash-0").map(|(_, r, _)| *r).max().unwrap();
    let next = rt.block_on(client.ecs("RegisterTaskDefinition", task_definition("crash-0"))).unwrap();
    assert!(next["taskDefinition"]["revision"].as_u64().unwrap() > last);
}

#[test]
fn fifty_concurrent_registrations_get_revisions_one_to_fifty() {
    let server = Server::start();
    let client = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let revisions: Vec<u64> = rt.block_on(async {
        let calls = (0..50).map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.ecs("RegisterTaskDefinition", task_definition("busy")).await })
        });
        let mut out = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            out.push(call.await.unwrap().unwrap()["taskDefinition"]["revision"].as_u64().unwrap());
        }
        out
    });
    let unique: BTreeSet<u64> = revisions.iter().copied().collect();
    assert_eq!(unique, (1..=50).collect::<BTreeSet<u64>>(), "revisions: {revisions:?}");
    let listed =
        rt.block_on(client.ecs("ListTaskDefinitions", json!({"familyPrefix": "busy", "maxResults": 100}))).unwrap();
    assert_eq!(listed["taskDefinitionArns"].as_array().unwrap().len(), 50);
}

#[test]
fn clean_shutdown_on_sigterm_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(server.client().ecs("CreateCluster", json!({"clusterName": "kept"}))).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends flotilla up cleanly: {status:?}");
    let server = Server::start_in(dir.path());
    let v = rt.block_on(server.client().ecs("DescribeClusters", json!({"clusters": ["kept"]}))).unwrap();
    assert_eq!(v["clusters"][0]["status"], "ACTIVE");
}
