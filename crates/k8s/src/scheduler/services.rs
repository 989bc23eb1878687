//! Services' ClusterIPs for Fargate pods (kube-proxy's job on EKS): the cluster's worker
//! follows its Services and Endpoints (core/v1; the real kube-controller-manager fills the
//! Endpoints from Ready pods) and keeps the cluster's VPC's virtual services equal to every
//! Service with a ClusterIP, each port to its Ready endpoints' addresses and ports, under
//! owner `eks:<cluster>` ([`Control::set_virtual_services`]). The hosts serving the VPC DNAT
//! tasks' connections to them (`flotilla_net`'s `vip.rs`).
//!
//! Each carries its Service's names, `<name>.<namespace>.svc.cluster.local`, `.svc` and
//! `<name>.<namespace>`, which the VPC's resolver answers with the ClusterIP. Pods'
//! `resolv.conf` has no Kubernetes search path, but a name with a dot is tried as it is first
//! (`ndots:1`), so `web.default` resolves as on EKS; a bare `web` does not.
//!
//! `default/kubernetes` is left out: its endpoint is the API server on the host's own address,
//! which tasks have no route to (pods reach the API server through the cluster's endpoint
//! instead, as an out-of-cluster client would).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use flotilla_control::Control;
use flotilla_host::{RuleProtocol, ServiceBackend, VirtualService};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::ClusterContext;

/// The owner of a cluster's records.
pub fn owner(cluster: &str) -> String {
    format!("eks:{cluster}")
}

/// Objects of one kind by `namespace/name`, as a watcher's events leave them.
struct Mirror<K> {
    current: BTreeMap<String, K>,
    /// A re-list in progress: replaces `current` when done.
    relist: Option<BTreeMap<String, K>>,
}

impl<K: kube::Resource> Mirror<K> {
    fn new() -> Self {
        Mirror { current: BTreeMap::new(), relist: None }
    }

    fn key(object: &K) -> String {
        let meta = object.meta();
        format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
    }

    /// Applies one event; `true` when `current` may have changed.
    fn apply(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                self.relist.get_or_insert_default().insert(Self::key(&object), object);
                false
            }
            watcher::Event::InitDone => {
                self.current = self.relist.take().unwrap_or_default();
                true
            }
            watcher::Event::Apply(object) => {
                self.current.insert(Self::key(&object), object);
                true
            }
            watcher::Event::Delete(object) => {
                self.current.remove(&Self::key(&object));
                true
            }
        }
    }
}

fn parse_protocol(name: Option<&str>) -> Option<RuleProtocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(RuleProtocol::Tcp),
        "UDP" => Some(RuleProtocol::Udp),
        // SCTP: the data plane routes TCP and UDP.
        _ => None,
    }
}

/// The virtual services of `services` (by `namespace/name`) with the Ready addresses of their
/// `endpoints` (same keys) as backends.
pub fn virtual_services(
    services: &BTreeMap<String, Service>,
    endpoints: &BTreeMap<String, Endpoints>,
) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for (key, service) in services {
        if key == "default/kubernetes" {
            continue;
        }
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else { continue };
        let subsets = endpoints.get(key).and_then(|e| e.subsets.as_deref()).unwrap_or_default();
        for port in spec.ports.as_deref().unwrap_or_default() {
            let Some(protocol) = parse_protocol(port.protocol.as_deref()) else { continue };
            let Ok(number) = u16::try_from(port.port) else { continue };
            let name = port.name.as_deref().unwrap_or("");
            let mut backends = Vec::new();
            for subset in subsets {
                // The endpoints controller names each subset port after its Service port.
                let target = subset.ports.as_deref().unwrap_or_default().iter().find(|p| {
                    p.name.as_deref().unwrap_or("") == name && parse_protocol(p.protocol.as_deref()) == Some(protocol)
                });
                let Some(target) = target.and_then(|p| u16::try_from(p.port).ok()) else { continue };
                for address in subset.addresses.as_deref().unwrap_or_default() {
                    if let Ok(ip) = address.ip.parse::<Ipv4Addr>() {
                        backends.push(ServiceBackend { ip, port: target });
                    }
                }
            }
            backends.sort_by_key(|b| (b.ip, b.port));
            backends.dedup();
            let (namespace, service_name) = key.split_once('/').unwrap_or(("default", key));
            let short = format!("{service_name}.{namespace}");
            let names = vec![format!("{short}.svc.cluster.local"), format!("{short}.svc"), short];
            out.push(VirtualService { ip, port: number, protocol, backends, names });
        }
    }
    out
}

/// Keeps the cluster's VPC's virtual services in step with its Services until `stop`.
pub(super) async fn follow(ctx: std::sync::Arc<ClusterContext>, mut stop: watch::Receiver<bool>) {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let endpoints: Api<Endpoints> = Api::all(ctx.client.clone());
    let mut service_events = std::pin::pin!(watcher(services, watcher::Config::default()));
    let mut endpoint_events = std::pin::pin!(watcher(endpoints, watcher::Config::default()));
    let (mut svc, mut eps) = (Mirror::<Service>::new(), Mirror::<Endpoints>::new());
    let (mut svc_listed, mut eps_listed) = (false, false);
    let owner = owner(&ctx.name);
    // What the control plane holds as of the last write that succeeded.
    let mut written: Option<Vec<VirtualService>> = None;
    loop {
        let step = tokio::select! {
            event = service_events.next() => match event {
                Some(Ok(event)) => {
                    svc_listed |= matches!(event, watcher::Event::InitDone);
                    Some(svc.apply(event))
                }
                Some(Err(e)) => {
                    tracing::debug!(cluster = %ctx.name, error = %e, "service watch failed; it retries");
                    None
                }
                None => break,
            },
            event = endpoint_events.next() => match event {
                Some(Ok(event)) => {
                    eps_listed |= matches!(event, watcher::Event::InitDone);
                    Some(eps.apply(event))
                }
                Some(Err(e)) => {
                    tracing::debug!(cluster = %ctx.name, error = %e, "endpoints watch failed; it retries");
                    None
                }
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(changed) = step else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // Written once both lists are complete, so a restart never writes a partial set.
        if !(changed && svc_listed && eps_listed) {
            continue;
        }
        let wanted = virtual_services(&svc.current, &eps.current);
        if written.as_ref() == Some(&wanted) {
            continue;
        }
        match ctx.control.set_virtual_services(&owner, &ctx.vpc_id, wanted.clone()).await {
            Ok(()) => written = Some(wanted),
            Err(e) => {
                tracing::warn!(cluster = %ctx.name, error = %e, "cannot record the cluster's service addresses; retrying");
                written = None;
            }
        }
    }
}

/// Removes the virtual services of a cluster that is gone.
pub(super) async fn forget(control: &Control, cluster: &str) {
    if let Err(e) = control.remove_virtual_services_of(&owner(cluster)).await {
        tracing::warn!(%cluster, error = %e, "cannot remove the deleted cluster's service addresses");
    }
}

/// Removes the virtual services of every cluster not in `active` (deleted while Flotilla was
/// down, so no worker saw it go).
pub(super) async fn forget_all_but(control: &Control, active: &[String]) {
    let owners = match control.virtual_service_owners().await {
        Ok(owners) => owners,
        Err(e) => return tracing::warn!(error = %e, "cannot list the clusters' service addresses"),
    };
    for owner in owners {
        if let Some(cluster) = owner.strip_prefix("eks:")
            && !active.iter().any(|a| a == cluster)
        {
            forget(control, cluster).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_port_maps_to_the_ready_addresses_of_its_named_endpoint_port() {
        let service = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| -> (String, Service) {
            let s = json!({"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": ports}});
            (format!("{ns}/{name}"), serde_json::from_value(s).unwrap())
        };
        let services: BTreeMap<String, Service> = [
            service(
                "default",
                "web",
                "10.100.0.20",
                json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
            service("default", "kubernetes", "10.100.0.1", json!([{"name": "https", "port": 443}])),
            service("default", "headless", "None", json!([{"port": 80}])),
            service("default", "empty", "10.100.0.21", json!([{"port": 8080}])),
        ]
        .into_iter()
        .collect();
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.0.1.5"}, {"ip": "10.0.1.6"}],
                "notReadyAddresses": [{"ip": "10.0.1.7"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
            }]
        }))
        .unwrap();
        let kubernetes: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "kubernetes"},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"name": "https", "port": 6443}]}]
        }))
        .unwrap();
        let endpoints = [("default/web".to_string(), endpoints), ("default/kubernetes".to_string(), kubernetes)]
            .into_iter()
            .collect();
        let got = virtual_services(&services, &endpoints);
        let backend = |ip: &str, port| ServiceBackend { ip: ip.parse().unwrap(), port };
        let names = |svc: &str| {
            vec![format!("{svc}.default.svc.cluster.local"), format!("{svc}.default.svc"), format!("{svc}.default")]
        };
        assert_eq!(
            got,
            vec![
                VirtualService {
                    ip: "10.100.0.21".parse().unwrap(),
                    port: 8080,
                    protocol: RuleProtocol::Tcp,
                    backends: vec![],
                    names: names("empty"),
                },
                VirtualService {
                    ip: "10.100.0.20".parse().unwrap(),
                    port: 80,
                    protocol: RuleProtocol::Tcp,
                    backends: vec![backend("10.0.1.5", 8080), backend("10.0.1.6", 8080)],
                    names: names("web"),
                },
                VirtualService {
                    ip: "10.100.0.20".parse().unwrap(),
                    port: 53,
                    protocol: RuleProtocol::Udp,
                    backends: vec![backend("10.0.1.5", 5353), backend("10.0.1.6", 5353)],
                    names: names("web"),
                },
            ]
        );
    }
}
