//! Load balancers on this host: the agent follows `HostApi::load_balancers`, gives each load
//! balancer its addresses in the task network (`TaskNetwork::ensure_load_balancers`), makes
//! every snapshot real with the data plane (`flotilla_lb::Plane`), and sends the plane's
//! target verdicts back (`HostApi::report_targets`).
//!
//! **Architecture Invariant:** nothing here outlives the process that needs it. The plane's
//! listeners are sockets of this process (a killed server leaves none), addresses of load
//! balancers that are gone are removed after each snapshot (so the first one after a restart
//! clears what a crash left), and a clean stop closes every listener and removes every
//! address.

pub mod sockets;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_host::lb::{ActionSpec, LbSnapshot, TargetReport};
use flotilla_host::{HostApi, HostApiError};
use flotilla_lb::Plane;
use tokio::sync::{mpsc, watch};

use crate::network::TaskNetwork;
pub use sockets::LbSockets;

/// How long to wait before asking the control plane again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Where this host's load balancers live.
#[derive(Clone, Debug)]
pub struct LbConfig {
    /// Where internet-facing listeners listen on the host (`flotilla up --lb-address`);
    /// `None`: only on their addresses in the task network.
    pub host_address: Option<IpAddr>,
    /// The task network's namespace (`flotilla up --net-namespace`); `None`: this process's.
    pub vpc_netns: Option<PathBuf>,
}

/// Runs the load balancers until `stop` turns true, then closes them.
pub(crate) async fn run(
    host: Arc<dyn HostApi>,
    host_id: String,
    network: Arc<dyn TaskNetwork>,
    config: LbConfig,
    mut stop: watch::Receiver<bool>,
) {
    let netns = match config.vpc_netns.as_deref().map(std::fs::File::open).transpose() {
        Ok(ns) => ns,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the task network's namespace: no load balancers on this host");
            return;
        }
    };
    let sockets = match LbSockets::new(netns) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot make sockets in the task network: no load balancers on this host");
            return;
        }
    };
    let (plane, reports) = match Plane::new(sockets.clone(), config.host_address) {
        Ok(plane) => plane,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the load balancer threads: no load balancers on this host");
            return;
        }
    };
    let forwarder = tokio::spawn(forward_reports(host.clone(), reports));
    let mut snapshots = host.load_balancers(&host_id);
    // A snapshot whose addresses could not all be made (a VPC's host side being cleaned up
    // at start, say), applied again after a pause: the stream only sends changes.
    let mut unfinished: Option<LbSnapshot> = None;
    loop {
        let again = async {
            match &unfinished {
                Some(_) => tokio::time::sleep(RETRY).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = again => {
                if let Some(snapshot) = unfinished.take() {
                    unfinished = apply(&plane, &sockets, network.as_ref(), snapshot).await;
                }
            }
            event = snapshots.next() => match event {
                Ok(mut snapshot) => {
                    // Only the newest configuration matters.
                    while let Some(Ok(newer)) = snapshots.try_next() {
                        snapshot = newer;
                    }
                    unfinished = apply(&plane, &sockets, network.as_ref(), snapshot).await;
                }
                Err(HostApiError::Closed) => {
                    tracing::warn!("the load balancer stream closed; following it again");
                    tokio::time::sleep(RETRY).await;
                    snapshots = host.load_balancers(&host_id);
                }
                Err(e) => tracing::warn!(error = %e, "load balancer stream error"),
            },
        }
    }
    plane.shutdown().await;
    if let Err(e) = network.retire_load_balancers(&[]).await {
        tracing::warn!(error = %e, "cannot remove the load balancers' addresses; the next start does");
    }
    forwarder.abort();
}

/// Addresses first (listeners bind to them), then the plane, then the addresses of load
/// balancers that are gone (their listeners are closed by then). Returns the snapshot when
/// some of it could not be done, to be applied again.
async fn apply(
    plane: &Plane,
    sockets: &LbSockets,
    network: &dyn TaskNetwork,
    snapshot: LbSnapshot,
) -> Option<LbSnapshot> {
    let mut done = network.ensure_load_balancers(&snapshot.load_balancers).await;
    sockets.set_sources(upstream_sources(&snapshot));
    for problem in plane.apply(&snapshot).await {
        tracing::warn!(listener = %problem.listener_arn, problem = %problem.problem, "a listener is not served");
    }
    if let Err(e) = network.retire_load_balancers(&snapshot.load_balancers).await {
        tracing::warn!(error = %e, "cannot remove the addresses of deleted load balancers; retrying");
        done = false;
    }
    (!done).then_some(snapshot)
}

/// For each target, the address of a load balancer that forwards to it: connections (and
/// health checks) come from there, as on ELB, where targets see the load balancer's node.
fn upstream_sources(snapshot: &LbSnapshot) -> HashMap<Ipv4Addr, Ipv4Addr> {
    let mut sources = HashMap::new();
    for lb in &snapshot.load_balancers {
        let Some(address) = lb.addresses.first() else { continue };
        let actions = lb
            .listeners
            .iter()
            .flat_map(|l| std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action)));
        for action in actions {
            let ActionSpec::Forward { target_groups, .. } = action else { continue };
            for group in target_groups.iter().filter_map(|g| snapshot.target_group(&g.arn)) {
                for target in &group.targets {
                    sources.entry(target.ip).or_insert(address.private_ip);
                }
            }
        }
    }
    sources
}

/// Sends the plane's verdicts to the control plane, retrying while it cannot answer.
async fn forward_reports(host: Arc<dyn HostApi>, mut reports: mpsc::Receiver<Vec<TargetReport>>) {
    while let Some(batch) = reports.recv().await {
        loop {
            match host.report_targets(batch.clone()).await {
                Ok(()) => break,
                Err(HostApiError::Unavailable { reason }) => {
                    tracing::debug!(reason, "cannot record target health yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "target health report refused");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_host::lb::*;

    use super::*;

    fn target(ip: &str) -> TargetSpec {
        TargetSpec { ip: ip.parse().unwrap(), port: 80, draining: false, healthy: None }
    }

    fn group(arn: &str, targets: Vec<TargetSpec>) -> TargetGroupSpec {
        TargetGroupSpec {
            arn: arn.into(),
            name: arn.into(),
            protocol: TargetProtocol::Http,
            port: 80,
            vpc_id: "vpc-1".into(),
            health_check: HealthCheckSpec {
                enabled: true,
                protocol: HealthProtocol::Http,
                port: None,
                path: "/".into(),
                interval_s: 30,
                timeout_s: 5,
                healthy_threshold: 5,
                unhealthy_threshold: 2,
                matcher: "200".into(),
            },
            deregistration_delay_s: 300,
            slow_start_s: 0,
            stickiness_s: None,
            targets,
        }
    }

    fn forward(arn: &str) -> ActionSpec {
        ActionSpec::Forward { target_groups: vec![WeightedGroup { arn: arn.into(), weight: 1 }], stickiness_s: None }
    }

    #[test]
    fn targets_are_reached_from_the_address_of_a_load_balancer_forwarding_to_them() {
        let lb = LoadBalancerSpec {
            arn: "lb".into(),
            name: "web".into(),
            kind: LbKind::Application,
            scheme: LbScheme::Internal,
            vpc_id: "vpc-1".into(),
            dns_name: "internal-web-1.us-east-1.elb.amazonaws.com".into(),
            addresses: vec![LbAddress {
                subnet_id: "subnet-1".into(),
                private_ip: "10.0.0.9".parse().unwrap(),
                public_ip: None,
            }],
            security_groups: vec![],
            idle_timeout_s: 60,
            listeners: vec![ListenerSpec {
                arn: "l".into(),
                port: 80,
                protocol: ListenerProtocol::Http,
                certificates: vec![],
                rules: vec![RuleSpec {
                    arn: "r".into(),
                    priority: 1,
                    conditions: vec![RuleCondition::PathPattern { values: vec!["/api/*".into()] }],
                    action: forward("tg-api"),
                }],
                default_action: forward("tg-web"),
            }],
        };
        let snapshot = LbSnapshot {
            load_balancers: vec![lb],
            target_groups: vec![
                group("tg-web", vec![target("10.0.1.5")]),
                group("tg-api", vec![target("10.0.1.6")]),
                group("tg-alone", vec![target("10.0.1.7")]),
            ],
        };
        let sources = upstream_sources(&snapshot);
        let lb_ip: Ipv4Addr = "10.0.0.9".parse().unwrap();
        assert_eq!(sources.get(&"10.0.1.5".parse().unwrap()), Some(&lb_ip));
        assert_eq!(sources.get(&"10.0.1.6".parse().unwrap()), Some(&lb_ip));
        assert_eq!(sources.get(&"10.0.1.7".parse().unwrap()), None, "no load balancer forwards to it");
    }
}
