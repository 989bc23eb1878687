//! `flotilla hosts`: the hosts, their capacity, what their tasks reserve and when they were
//! last heard from; `add` issues a host's token, `revoke` withdraws it.

use flotilla_cli::client::Client;
use flotilla_cli::output::{Output, text, time};
use serde_json::{Value, json};

use crate::HostAction;

const TARGET: &str = "Flotilla_20261206";
/// A host not heard from for this long is shown as unreachable (the control plane's own
/// verdict, when the record carries one, wins).
const UNREACHABLE_AFTER_MS: i64 = 30_000;

async fn call(client: &Client, operation: &str, body: Value) -> anyhow::Result<Value> {
    client.call("flotilla", &format!("{TARGET}.{operation}"), &body).await
}

fn status(host: &Value, now_ms: i64) -> String {
    if let Some(s) = host["status"].as_str() {
        return s.to_owned();
    }
    // Timestamps travel as epoch seconds.
    match host["lastSeen"].as_f64().map(|s| (s * 1000.0) as i64) {
        Some(seen) if now_ms - seen <= UNREACHABLE_AFTER_MS => "ACTIVE".into(),
        Some(_) => "UNREACHABLE".into(),
        None => "-".into(),
    }
}

fn rows(hosts: &[Value], now_ms: i64) -> Vec<Vec<String>> {
    hosts
        .iter()
        .map(|h| {
            vec![
                text(h, "id"),
                text(h, "availabilityZone"),
                format!("{} / {}", text(h, "cpu"), text(h, "memory")),
                format!("{} / {}", text(h, "allocatedCpu"), text(h, "allocatedMemory")),
                text(h, "runningTasksCount"),
                status(h, now_ms),
                time(h, "lastSeen"),
            ]
        })
        .collect()
}

const HEADERS: &[&str] = &["HOST", "ZONE", "CAPACITY (CPU / MIB)", "ALLOCATED", "TASKS", "STATUS", "LAST SEEN"];

pub async fn run(client: &Client, out: &Output, action: Option<HostAction>) -> anyhow::Result<()> {
    match action {
        None => {
            let answer = call(client, "ListHosts", json!({})).await?;
            let hosts = answer["hosts"].as_array().cloned().unwrap_or_default();
            let now_ms = flotilla_types::Timestamp::now().0;
            out.print(&answer, HEADERS, rows(&hosts, now_ms));
        }
        Some(HostAction::Add { host_id }) => {
            let answer = call(client, "AddHost", json!({ "hostId": host_id })).await?;
            let token = text(&answer, "token");
            if out.format == flotilla_cli::output::Format::Json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("Token for host {host_id} (shown once; a token it had before no longer works):");
                println!("  {token}");
                println!("Start its agent with:");
                println!("  flotilla agent --host-id {host_id} --token {token} --zone ZONE --server URL");
            }
        }
        Some(HostAction::Revoke { host_id }) => {
            call(client, "RevokeHost", json!({ "hostId": host_id })).await?;
            println!("Revoked the token of host {host_id}: its agent is disconnected.");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_last_heartbeat_unless_the_record_has_one() {
        assert_eq!(status(&json!({ "lastSeen": 1.0 }), 2_000), "ACTIVE");
        assert_eq!(status(&json!({ "lastSeen": 1.0 }), 100_000), "UNREACHABLE");
        assert_eq!(status(&json!({ "lastSeen": 1.0, "status": "LOST" }), 2_000), "LOST");
        assert_eq!(status(&json!({}), 2_000), "-");
    }
}
