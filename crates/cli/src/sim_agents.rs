//! `flotilla agent --simulated-hosts FILE`: many simulated hosts in one process, each an agent
//! with its own link to the servers (its own stream and token, exactly as a real host's), over
//! containers that only pretend. For placement benchmarks with real servers and a real store:
//! everything but the containers is what a cluster of real hosts runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_agent::capacity::{Overcommit, allocatable};
use flotilla_link::{LinkStatus, RemoteHostApi};

use crate::home::Home;
use crate::plane::shutdown_signal;

/// One simulated host, a line `HOST_ID ZONE TOKEN` of the hosts file.
#[derive(Debug, PartialEq, Eq)]
pub struct SimHost {
    pub id: String,
    pub zone: String,
    pub token: String,
}

/// The hosts file: one host a line, `HOST_ID ZONE TOKEN`; blank lines and `#` comments skipped.
pub fn parse_hosts(text: &str) -> anyhow::Result<Vec<SimHost>> {
    let mut hosts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, zone, token] = fields[..] else {
            bail!("line {}: want `HOST_ID ZONE TOKEN`, got {} fields", n + 1, fields.len());
        };
        hosts.push(SimHost { id: id.to_owned(), zone: zone.to_owned(), token: token.to_owned() });
    }
    if hosts.is_empty() {
        bail!("no hosts in the file");
    }
    Ok(hosts)
}

/// Runs the hosts of `hosts_file` against `servers` until SIGINT/SIGTERM. Each is a pretend
/// 4-vCPU, 16 GiB machine (what `flotilla up --simulated-hosts` offers), with `overcommit`.
pub async fn run(
    servers: Vec<String>,
    hosts_file: &std::path::Path,
    data_dir: &std::path::Path,
    overcommit: Overcommit,
) -> anyhow::Result<()> {
    if servers.is_empty() {
        bail!("--server names no server");
    }
    let text = std::fs::read_to_string(hosts_file).with_context(|| format!("cannot read {}", hosts_file.display()))?;
    let hosts = parse_hosts(&text).with_context(|| format!("in {}", hosts_file.display()))?;
    let home = Home::open(data_dir)?;
    let (cpu, memory) = allocatable(4, 16 * 1024, overcommit);
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut running = Vec::new();
    for host in &hosts {
        let region = crate::agent::region_of(&host.zone)?;
        let remote = Arc::new(RemoteHostApi::connect(servers.clone(), host.id.clone(), host.token.clone()));
        if let Err(LinkStatus::Refused { reason }) = remote.connected(Duration::from_secs(10)).await {
            bail!("the server refused host {}: {reason}", host.id);
        }
        let spec = flotilla_host::HostSpec {
            id: host.id.clone(),
            availability_zone: host.zone.clone(),
            cpu,
            memory,
            underlay_ip: None,
            max_tasks: None,
        };
        let sandbox = flotilla_sandbox::sim::SimSandbox::new();
        let state_dir = home.dir.join("agent").join(&host.id);
        let agent = flotilla_agent::sim::agent(remote.clone(), spec, sandbox, &region, state_dir);
        remote.serve_exec(agent.clone());
        let mut stopped = stop.subscribe();
        running.push(tokio::spawn(agent.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    println!("Flotilla simulated agents for {} hosts following {}", hosts.len(), servers.join(", "));
    shutdown_signal().await;
    let _ = stop.send(true);
    // An agent whose servers are gone may be in the middle of a call that waits for them: the
    // simulated tasks have nothing to keep, so a few seconds is all the agents get.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for agent in running {
        if tokio::time::timeout_at(deadline, agent).await.is_err() {
            tracing::warn!("some simulated agents did not stop within 5 s; leaving them");
            break;
        }
    }
    println!("Flotilla simulated agents stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_are_read_line_by_line() {
        let hosts = parse_hosts("# id zone token\nhost-1 us-east-1a t1\n\n  host-2  us-east-1b  t2 \n").unwrap();
        assert_eq!(
            hosts,
            vec![
                SimHost { id: "host-1".into(), zone: "us-east-1a".into(), token: "t1".into() },
                SimHost { id: "host-2".into(), zone: "us-east-1b".into(), token: "t2".into() },
            ]
        );
        assert!(parse_hosts("host-1 us-east-1a\n").is_err(), "a token is required");
        assert!(parse_hosts("# nothing\n").is_err(), "no hosts is an error");
    }
}
