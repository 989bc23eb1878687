//! awsvpc on this host: each task's elastic network interface, from the control plane's
//! record (address, MAC, groups) to the data plane (`flotilla_net`) and the VPC's resolver.
//!
//! The control plane owns everything durable: the interface record and its address leases
//! (`Control::create_network_interface`, keyed by the task ARN so a resumed launch finds the
//! same one). This module makes the kernel match it: the VPC's host addresses, the security
//! groups of the VPC, the task's veth, the DNS listener on the VPC's resolver address, and the
//! task's `/etc/resolv.conf`.
//!
//! **Architecture Invariant:** the kernel state is derived. After a crash, `cleanup` removes
//! every interface whose task is not live and `attach` (idempotent) restores the rest; a
//! security group change re-applies every group of the VPCs this host serves.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use flotilla_control::{
    Control, IpProtocol, NetworkInterface, NetworkInterfaceSpec, ResourceFilter, RulePeer, SecurityGroup,
    SecurityGroupRule,
};
use flotilla_discovery::dns::DnsServer;
use flotilla_net::{InterfaceSpec, Network, Peer, Protocol, Rule, SecurityGroupSpec, VpcSpec};
use serde_json::{Value, json};

/// What RunTask asked for in `networkConfiguration.awsvpcConfiguration`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsvpcRequest {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

impl AwsvpcRequest {
    /// `None` when the task has no awsvpc configuration (RunTask requires one for awsvpc
    /// task definitions, the only mode Fargate has).
    pub fn from_network_configuration(config: Option<&Value>) -> Option<AwsvpcRequest> {
        let awsvpc = config?.get("awsvpcConfiguration")?;
        let strings = |key: &str| -> Vec<String> {
            awsvpc[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        Some(AwsvpcRequest {
            subnets: strings("subnets"),
            security_groups: strings("securityGroups"),
            assign_public_ip: awsvpc["assignPublicIp"].as_str() == Some("ENABLED"),
        })
    }
}

/// The task's DescribeTasks view of its interface: the `ElasticNetworkInterface` attachment.
pub fn eni_attachment(attachment_id: &str, status: &str, eni: Option<&NetworkInterface>) -> Value {
    let details: Vec<Value> = match eni {
        None => Vec::new(),
        Some(eni) => [
            ("subnetId", eni.subnet_id.clone()),
            ("networkInterfaceId", eni.id.clone()),
            ("macAddress", eni.mac.clone()),
            ("privateDnsName", eni.private_dns_name.clone()),
            ("privateIPv4Address", eni.private_ip.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect(),
    };
    json!({"id": attachment_id, "type": "ElasticNetworkInterface", "status": status, "details": details})
}

/// The host's awsvpc machinery: one data plane and one DNS server for every VPC.
pub struct Networking {
    control: Arc<Control>,
    net: Arc<Network>,
    dns: Arc<DnsServer>,
    /// Serialises VPC-level changes (first interface in, last interface out) so a VPC is
    /// never removed under an interface being added to it.
    vpc_turn: tokio::sync::Mutex<()>,
    /// VPCs whose resolver this process serves.
    served: std::sync::Mutex<HashSet<String>>,
    /// VPCs whose groups the data plane holds as of the last change (each change to a group
    /// re-applies them), and those groups: an attach applies groups only when these miss one.
    synced: std::sync::Mutex<(HashSet<String>, HashMap<String, String>)>,
}

fn parse_mac(mac: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| format!("interface MAC '{mac}' is malformed"))
}

fn net_rule(rule: &SecurityGroupRule) -> Option<Rule> {
    let port = |p: Option<i32>| p.filter(|p| (0..=65535).contains(p)).map(|p| p as u16);
    let protocol = match rule.protocol {
        IpProtocol::All => Protocol::All,
        IpProtocol::Tcp => Protocol::Tcp,
        IpProtocol::Udp => Protocol::Udp,
        IpProtocol::Icmp => Protocol::Icmp,
        // The data plane filters TCP, UDP and ICMP by port; a rule for another protocol
        // number admits nothing rather than more than it says.
        IpProtocol::Other(_) => return None,
    };
    let peer = match &rule.peer {
        RulePeer::Cidr(c) => Peer::Cidr(ipnet::Ipv4Net::new(c.network(), c.prefix()).ok()?),
        RulePeer::Group(g) => Peer::SecurityGroup(g.clone()),
    };
    let (from_port, to_port) = match protocol {
        // TCP/UDP 0-65535 or -1: every port.
        Protocol::Tcp | Protocol::Udp => match (port(rule.from_port), port(rule.to_port)) {
            (Some(0), Some(65535)) | (None, _) | (_, None) => (None, None),
            (from, to) => (from, to),
        },
        Protocol::Icmp => (port(rule.from_port), port(rule.to_port)),
        Protocol::All => (None, None),
    };
    Some(Rule { protocol, from_port, to_port, peer })
}

fn group_spec(group: &SecurityGroup) -> SecurityGroupSpec {
    SecurityGroupSpec {
        id: group.id.clone(),
        vpc_id: group.vpc_id.clone(),
        ingress: group.ingress.iter().filter_map(net_rule).collect(),
        egress: group.egress.iter().filter_map(net_rule).collect(),
    }
}

impl Networking {
    pub fn new(control: Arc<Control>, net: Arc<Network>, dns: Arc<DnsServer>) -> Networking {
        Networking {
            control,
            net,
            dns,
            vpc_turn: tokio::sync::Mutex::new(()),
            served: std::sync::Mutex::new(HashSet::new()),
            synced: std::sync::Mutex::new((HashSet::new(), HashMap::new())),
        }
    }

    pub fn network(&self) -> &Arc<Network> {
        &self.net
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Network) -> Result<T, flotilla_net::NetError> + Send + 'static,
    ) -> Result<T, String> {
        let net = self.net.clone();
        match tokio::task::spawn_blocking(move || f(&net)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("network setup panicked: {e}")),
        }
    }

    /// The task's interface record: found if it exists, else made in the first of the
    /// requested subnets (starting at one picked by the task id, as Fargate spreads tasks)
    /// with a free address. Errors are the task's stopped reason.
    pub async fn create_interface(
        &self,
        task_arn: &str,
        attachment_id: &str,
        request: &AwsvpcRequest,
    ) -> Result<NetworkInterface, String> {
        if let Some(existing) = self.control.network_interface_for(task_arn).await.map_err(|e| e.to_string())? {
            return Ok(existing);
        }
        let placement = self
            .control
            .validate_awsvpc(&request.subnets, &request.security_groups)
            .await
            .map_err(|e| format!("ResourceInitializationError: invalid awsvpcConfiguration: {e}"))?;
        let n = placement.subnets.len();
        let first = task_arn.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % n;
        let identity = self.control.identity();
        let mut last = String::new();
        for i in 0..n {
            let subnet = &placement.subnets[(first + i) % n];
            let spec = NetworkInterfaceSpec {
                subnet_id: subnet.id.clone(),
                security_group_ids: placement.security_group_ids.clone(),
                description: Some(format!(
                    "arn:aws:ecs:{}:{}:attachment/{attachment_id}",
                    identity.region, identity.account
                )),
                assign_public_ip: request.assign_public_ip,
                attachment: Some(task_arn.to_owned()),
            };
            match self.control.create_network_interface(spec).await {
                Ok(eni) => return Ok(eni),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("ResourceInitializationError: unable to create the task's network interface: {last}"))
    }

    /// Plumbs `eni` into the namespace at `netns` and points `resolv_conf` at the VPC's
    /// resolver. Idempotent: an adopted task's interface is checked the same way.
    pub async fn attach(&self, eni: &NetworkInterface, netns: &Path, resolv_conf: &Path) -> Result<(), String> {
        let subnet = self.control.subnet(&eni.subnet_id).await.map_err(|e| e.to_string())?;
        let vpc = self.control.vpc(&eni.vpc_id).await.map_err(|e| e.to_string())?;
        let _turn = self.vpc_turn.lock().await;
        let vpc_spec = VpcSpec {
            id: vpc.id.clone(),
            cidr: ipnet::Ipv4Net::new(vpc.cidr.network(), vpc.cidr.prefix()).map_err(|e| e.to_string())?,
        };
        let status = self.blocking(move |net| net.ensure_vpc(&vpc_spec)).await?;
        let current = {
            let synced = self.synced.lock().expect("synced lock");
            synced.0.contains(&vpc.id) && eni.groups.iter().all(|g| synced.1.contains_key(&g.id))
        };
        if !current {
            self.sync_groups(&vpc.id).await?;
        }
        self.serve_dns(&vpc.id, status.resolver).await?;
        let spec = InterfaceSpec {
            id: eni.id.clone(),
            vpc_id: eni.vpc_id.clone(),
            netns: netns.to_owned(),
            ip: eni.private_ip,
            prefix_len: subnet.cidr.prefix(),
            mac: parse_mac(&eni.mac)?,
            security_groups: eni.groups.iter().map(|g| g.id.clone()).collect(),
            public_ip: eni.public_ip,
        };
        self.blocking(move |net| net.ensure_interface(&spec)).await?;
        let search = search_domain(&self.control.identity().region);
        rewrite_in_place(resolv_conf, &status.resolv_conf(&[search.as_str()]))
            .map_err(|e| format!("cannot write {}: {e}", resolv_conf.display()))?;
        Ok(())
    }

    /// Removes the task's interface from the data plane and releases its addresses.
    /// Idempotent. The VPC's host side (router and resolver addresses, its groups) stays
    /// while the VPC exists, so the next task in it starts without rebuilding it.
    pub async fn detach(&self, task_arn: &str) -> Result<(), String> {
        let Some(eni) = self.control.network_interface_for(task_arn).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let _turn = self.vpc_turn.lock().await;
        let id = eni.id.clone();
        self.blocking(move |net| net.remove_interface(&id)).await?;
        self.control.delete_network_interface(&eni.id).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn release_vpc_if_unused(&self, vpc_id: &str) -> Result<(), String> {
        let interfaces = self.blocking(|net| net.list_interfaces()).await?;
        if interfaces.iter().any(|i| i.vpc_id.as_deref() == Some(vpc_id)) {
            return Ok(());
        }
        let mut groups = self.groups_in(vpc_id).await;
        {
            let mut synced = self.synced.lock().expect("synced lock");
            synced.0.remove(vpc_id);
            groups.extend(synced.1.iter().filter(|(_, v)| *v == vpc_id).map(|(g, _)| g.clone()));
            groups.sort();
            groups.dedup();
        }
        let removed = self.served.lock().expect("served lock").remove(vpc_id);
        if removed {
            for (addr, vpc) in self.dns.bindings() {
                if vpc == vpc_id {
                    self.dns.unbind(addr);
                }
            }
        }
        self.remove_groups(groups).await?;
        let vpc = vpc_id.to_owned();
        self.blocking(move |net| net.remove_vpc(&vpc)).await
    }

    /// Removes groups from the data plane, in turns (groups may name each other); a group
    /// still used or named elsewhere stays. Forgets the ones removed.
    async fn remove_groups(&self, groups: Vec<String>) -> Result<(), String> {
        let removed = self
            .blocking(move |net| {
                let mut left = groups;
                let mut removed = Vec::new();
                loop {
                    let before = left.len();
                    let mut failure = None;
                    left.retain(|g| match net.remove_security_group(g) {
                        Ok(()) => {
                            removed.push(g.clone());
                            false
                        }
                        Err(
                            flotilla_net::NetError::SecurityGroupReferenced { .. }
                            | flotilla_net::NetError::SecurityGroupInUse { .. },
                        ) => true,
                        Err(e) => {
                            failure.get_or_insert(e);
                            true
                        }
                    });
                    if let Some(e) = failure {
                        return Err(e);
                    }
                    if left.is_empty() || left.len() == before {
                        return Ok(removed);
                    }
                }
            })
            .await?;
        let mut synced = self.synced.lock().expect("synced lock");
        for g in removed {
            synced.1.remove(&g);
        }
        Ok(())
    }

    /// The security groups of `vpc_id`, as the control plane has them now.
    async fn groups_of(&self, vpc_id: &str) -> Result<Vec<SecurityGroup>, String> {
        let filter = ResourceFilter { name: "vpc-id".into(), values: vec![vpc_id.to_owned()] };
        self.control.describe_security_groups(&[], &[], &[filter]).await.map_err(|e| e.to_string())
    }

    /// Ids of the groups the data plane holds for `vpc_id`, as the control plane knows them.
    async fn groups_in(&self, vpc_id: &str) -> Vec<String> {
        self.groups_of(vpc_id).await.map(|gs| gs.into_iter().map(|g| g.id).collect()).unwrap_or_default()
    }

    /// Applies every security group of `vpc_id` as the control plane has it now.
    async fn sync_groups(&self, vpc_id: &str) -> Result<(), String> {
        let groups = self.groups_of(vpc_id).await?;
        let specs: Vec<SecurityGroupSpec> = groups.iter().map(group_spec).collect();
        self.blocking(move |net| specs.iter().try_for_each(|s| net.ensure_security_group(s))).await?;
        // Groups deleted from the control plane (never while an interface uses them) go.
        let stale: Vec<String> = {
            let mut synced = self.synced.lock().expect("synced lock");
            synced.0.insert(vpc_id.to_owned());
            let stale = synced
                .1
                .iter()
                .filter(|(g, v)| *v == vpc_id && !groups.iter().any(|x| &x.id == *g))
                .map(|(g, _)| g.clone())
                .collect();
            synced.1.extend(groups.into_iter().map(|g| (g.id, vpc_id.to_owned())));
            stale
        };
        self.remove_groups(stale).await
    }

    /// Re-applies the groups of every VPC this host serves (after a group changed), and
    /// removes the host side of VPCs that were deleted. A group deleted from the control plane (which refuses while an interface
    /// uses it) stays in the data plane, unused, until its VPC's host side goes.
    pub async fn resync(&self) -> Result<(), String> {
        // In turn with attaches, so none can read the set below before a change lands.
        let _turn = self.vpc_turn.lock().await;
        let interfaces = self.blocking(|net| net.list_interfaces()).await?;
        let mut vpcs: HashSet<String> = interfaces.iter().filter_map(|i| i.vpc_id.clone()).collect();
        vpcs.extend(self.synced.lock().expect("synced lock").0.iter().cloned());
        for vpc in vpcs {
            match self.control.vpc(&vpc).await {
                // Deleted (which the control plane allows only once its subnets, and so its
                // interfaces, are gone): its host side goes too.
                Err(flotilla_control::NetworkError::NotFound { .. }) => self.release_vpc_if_unused(&vpc).await?,
                Err(e) => return Err(e.to_string()),
                Ok(_) => self.sync_groups(&vpc).await?,
            }
        }
        Ok(())
    }

    async fn serve_dns(&self, vpc_id: &str, resolver: Ipv4Addr) -> Result<(), String> {
        if self.served.lock().expect("served lock").contains(vpc_id) {
            return Ok(());
        }
        let addr = SocketAddr::from((resolver, 53));
        let bind = move || -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
            Ok((std::net::UdpSocket::bind(addr)?, std::net::TcpListener::bind(addr)?))
        };
        let sockets = match self.net.host_netns() {
            None => bind(),
            Some(ns) => flotilla_net::netns::run_in_file(ns, bind).and_then(|r| r),
        };
        let (udp, tcp) = sockets.map_err(|e| format!("cannot serve DNS on {addr} for {vpc_id}: {e}"))?;
        self.dns.serve_vpc(vpc_id, udp, tcp).map_err(|e| e.to_string())?;
        self.served.lock().expect("served lock").insert(vpc_id.to_owned());
        Ok(())
    }

    /// On a clean shutdown with no task interface left, removes the host side entirely (VPC
    /// devices, groups, the nft table), so a host that runs no tasks keeps nothing of ours.
    pub async fn shutdown(&self) {
        let _turn = self.vpc_turn.lock().await;
        match self.blocking(|net| net.dismantle()).await {
            Ok(true) => tracing::debug!("task network removed"),
            Ok(false) => tracing::debug!("tasks still have interfaces; the task network stays for them"),
            Err(e) => tracing::warn!(error = %e, "could not remove the task network; the next start cleans it"),
        }
    }

    /// After a restart: removes every interface (and VPC, group) of the data plane that no
    /// live task holds, and deletes interface records whose task is gone or stopped.
    pub async fn cleanup(&self, live_task_arns: &HashSet<String>) -> Result<(), String> {
        let all = self.control.describe_network_interfaces(&[], &[]).await.map_err(|e| e.to_string())?;
        let mut keep = Vec::new();
        for eni in all {
            let Some(task_arn) = eni.attachment.as_deref().filter(|a| a.starts_with("arn:aws:ecs:")) else {
                continue;
            };
            if live_task_arns.contains(task_arn) {
                keep.push(eni);
            } else {
                tracing::info!(eni = %eni.id, task = task_arn, "releasing the interface of a task that is gone");
                self.control.delete_network_interface(&eni.id).await.map_err(|e| e.to_string())?;
            }
        }
        let keep_ids: Vec<String> = keep.iter().map(|e| e.id.clone()).collect();
        let keep_vpcs: Vec<String> = keep.iter().map(|e| e.vpc_id.clone()).collect();
        let mut keep_sgs = Vec::new();
        for vpc in &keep_vpcs {
            keep_sgs.extend(self.groups_in(vpc).await);
        }
        let report = self.blocking(move |net| net.cleanup(&keep_ids, &keep_vpcs, &keep_sgs)).await?;
        if !report.interfaces.is_empty() || !report.vpcs.is_empty() {
            tracing::info!(?report, "removed network plumbing left by tasks that are gone");
        }
        Ok(())
    }
}

/// The search domain of the region's private DNS names, as on EC2.
fn search_domain(region: &str) -> String {
    if region == "us-east-1" { "ec2.internal".to_owned() } else { format!("{region}.compute.internal") }
}

/// Rewrites a file that is bind-mounted into containers: truncating and writing keeps the
/// inode, so every container's mount sees the new text.
fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_awsvpc_configuration() {
        let config = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "ENABLED"}});
        let request = AwsvpcRequest::from_network_configuration(Some(&config)).unwrap();
        assert_eq!(request.subnets, ["subnet-1"]);
        assert_eq!(request.security_groups, ["sg-1"]);
        assert!(request.assign_public_ip);
        let disabled = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"]}});
        assert!(!AwsvpcRequest::from_network_configuration(Some(&disabled)).unwrap().assign_public_ip);
        assert_eq!(AwsvpcRequest::from_network_configuration(None), None);
    }

    #[test]
    fn macs_parse_or_are_refused() {
        assert_eq!(parse_mac("02:0a:ff:00:01:02").unwrap(), [2, 10, 255, 0, 1, 2]);
        assert!(parse_mac("02:0a").is_err());
    }

    fn rule(protocol: IpProtocol, from: Option<i32>, to: Option<i32>) -> SecurityGroupRule {
        SecurityGroupRule {
            id: "sgr-1".into(),
            protocol,
            from_port: from,
            to_port: to,
            peer: RulePeer::Cidr("10.0.0.0/16".parse().unwrap()),
            description: None,
        }
    }

    #[test]
    fn rules_translate_to_the_data_plane() {
        let tcp = net_rule(&rule(IpProtocol::Tcp, Some(80), Some(90))).unwrap();
        assert_eq!((tcp.protocol, tcp.from_port, tcp.to_port), (Protocol::Tcp, Some(80), Some(90)));
        assert_eq!(tcp.peer, Peer::Cidr("10.0.0.0/16".parse().unwrap()));
        let every_port = net_rule(&rule(IpProtocol::Udp, Some(0), Some(65535))).unwrap();
        assert_eq!((every_port.from_port, every_port.to_port), (None, None));
        let any_icmp = net_rule(&rule(IpProtocol::Icmp, Some(-1), Some(-1))).unwrap();
        assert_eq!((any_icmp.from_port, any_icmp.to_port), (None, None));
        let echo = net_rule(&rule(IpProtocol::Icmp, Some(8), Some(-1))).unwrap();
        assert_eq!((echo.from_port, echo.to_port), (Some(8), None));
        assert_eq!(net_rule(&rule(IpProtocol::All, None, None)).unwrap().protocol, Protocol::All);
        assert!(net_rule(&rule(IpProtocol::Other(47), None, None)).is_none(), "GRE admits nothing");
    }

    #[test]
    fn attachments_look_like_fargate_ones() {
        let pending = eni_attachment("a-1", "PRECREATED", None);
        assert_eq!(pending["type"], "ElasticNetworkInterface");
        assert_eq!(pending["details"], json!([]));
    }
}
