//! `flotilla agent`: one host's agent, connected to the servers over the link. It runs the
//! tasks placed on this host with the real sandbox, networking, load balancers and images,
//! all under its own data dir (tasks, nftables table, agent state), so several agents can
//! share one machine in separate network namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use std::collections::HashMap;

use flotilla_discovery::PREFIX;
use flotilla_host::discovery::DiscoverySnapshot;
use flotilla_host::{HostApi, HostApiError};
use flotilla_link::{LinkStatus, RemoteHostApi};
use flotilla_store::{EmbeddedStore, Op, Store, Txn};

use crate::home::Home;
use crate::plane::shutdown_signal;
use crate::up::{AgentSetup, image_store_options, start_agent, this_host};

pub struct AgentOptions {
    pub servers: Vec<String>,
    pub token: String,
    pub host_id: String,
    pub zone: String,
    pub underlay_ip: Option<Ipv4Addr>,
    pub overcommit_cpu: f64,
    pub overcommit_memory: f64,
    /// `--max-tasks`: this host takes at most this many tasks.
    pub max_tasks: Option<u32>,
    pub data_dir: std::path::PathBuf,
    pub net_namespace: Option<std::path::PathBuf>,
    pub lb_address: IpAddr,
    pub registry_ca: Option<std::path::PathBuf>,
    /// Where EFS file systems' directories are (default `<data-dir>/efs`): the servers'
    /// `--efs-root`, seen through a mount they share.
    pub efs_root: Option<std::path::PathBuf>,
}

/// `us-east-1a` -> `us-east-1`.
pub(crate) fn region_of(zone: &str) -> anyhow::Result<String> {
    let region = zone.trim_end_matches(|c: char| c.is_ascii_lowercase());
    if region.is_empty() || region.len() == zone.len() || !region.ends_with(|c: char| c.is_ascii_digit()) {
        bail!("--zone '{zone}' is not an availability zone name such as us-east-1a");
    }
    Ok(region.to_owned())
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let image_options = image_store_options(opts.registry_ca.as_deref())?;
    let region = region_of(&opts.zone)?;
    if opts.servers.is_empty() {
        bail!("--server names no server");
    }
    let home = Home::open(&opts.data_dir)?;
    let remote = Arc::new(RemoteHostApi::connect(opts.servers.clone(), opts.host_id.clone(), opts.token.clone()));
    match remote.connected(Duration::from_secs(10)).await {
        Ok(()) => {}
        Err(LinkStatus::Refused { reason }) => bail!("the server refused this host: {reason}"),
        Err(status) => tracing::warn!(?status, "no server reachable yet; the agent keeps trying"),
    }
    let overcommit = flotilla_agent::capacity::Overcommit { cpu: opts.overcommit_cpu, memory: opts.overcommit_memory };
    let mut spec = this_host(&region, overcommit, opts.max_tasks);
    spec.id = opts.host_id.clone();
    spec.availability_zone = opts.zone.clone();
    spec.underlay_ip = opts.underlay_ip;
    // Cloud Map's records are in the servers' store, which agents never open: the VPC
    // resolvers answer from a local replica that the host API keeps current.
    let dns_path = home.dir.join("service-discovery.redb");
    let replica: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dns_path)
            .with_context(|| format!("cannot open {}; is another agent using this --data-dir?", dns_path.display()))?,
    );
    let mirror = tokio::spawn(mirror_service_discovery(remote.clone(), replica.clone()));
    let setup = AgentSetup {
        region,
        spec,
        dns_store: replica,
        net_namespace: opts.net_namespace,
        lb_address: opts.lb_address,
        image_options,
        efs_root: opts.efs_root.clone().unwrap_or_else(|| home.dir.join("efs")),
        // The API runs in the servers' processes, not here: the task endpoint answers tasks'
        // API calls with a 404 saying so.
        api: None,
    };
    let agent = start_agent(&home, remote.clone(), setup).await?;
    // The servers reach this host's containers for ECS Exec through the link.
    remote.serve_exec(agent.clone());
    println!("Flotilla agent for host {} ({}) following {}", opts.host_id, opts.zone, opts.servers.join(", "));
    agent.run(shutdown_signal()).await;
    mirror.abort();
    println!("Flotilla agent stopped; its tasks keep running and the next agent adopts them.");
    Ok(())
}

/// Keeps `replica` equal to the servers' Cloud Map records.
async fn mirror_service_discovery(host: Arc<RemoteHostApi>, replica: Arc<dyn Store>) {
    let mut snapshots = host.service_discovery();
    loop {
        match snapshots.next().await {
            Ok(snapshot) => {
                if let Err(e) = replace(replica.as_ref(), snapshot).await {
                    tracing::warn!(error = %e, "cannot update the Cloud Map replica; the next change retries");
                }
            }
            Err(HostApiError::Closed) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                snapshots = host.service_discovery();
            }
            Err(e) => tracing::warn!(error = %e, "Cloud Map records"),
        }
    }
}

/// Makes the replica hold exactly `snapshot` (records outside Cloud Map's prefix are ignored),
/// in one transaction.
async fn replace(replica: &dyn Store, snapshot: DiscoverySnapshot) -> Result<(), flotilla_store::StoreError> {
    let current: HashMap<String, Vec<u8>> =
        replica.list_prefix(PREFIX).await?.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let wanted: HashMap<&str, &str> = snapshot
        .records
        .iter()
        .filter(|r| r.key.starts_with(PREFIX))
        .map(|r| (r.key.as_str(), r.value.as_str()))
        .collect();
    let mut txn = Txn::new();
    let mut changed = false;
    for key in current.keys().filter(|k| !wanted.contains_key(k.as_str())) {
        txn = txn.then(Op::delete(key.clone()));
        changed = true;
    }
    for (key, value) in &wanted {
        if current.get(*key).is_none_or(|v| v.as_slice() != value.as_bytes()) {
            txn = txn.then(Op::put(*key, value.as_bytes().to_vec()));
            changed = true;
        }
    }
    if changed {
        replica.txn(txn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_zones() {
        assert_eq!(region_of("us-east-1a").unwrap(), "us-east-1");
        assert_eq!(region_of("eu-west-3c").unwrap(), "eu-west-3");
        assert!(region_of("us-east-1").is_err());
        assert!(region_of("a").is_err());
    }
}
