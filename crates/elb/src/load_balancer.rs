//! Load balancers: CreateLoadBalancer (application or network, internet-facing or internal,
//! one node per subnet from the VPC side), DescribeLoadBalancers, DeleteLoadBalancer and their
//! attributes.

use flotilla_host::lb::{LbKind, LbScheme};
use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Tag;
use flotilla_types::page::Page;

use crate::attributes::{Attribute, LbAttributes};
use crate::record::{LB_PREFIX, LoadBalancer, PortClaim, TargetGroup, Zone, lb_key, port_key, split_arn, tg_key};
use crate::tags::check_tags;
use crate::target_group::check_name;
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode, new_id, now, paginate};

/// CreateLoadBalancer's input; strings are ELB's words, checked here.
#[derive(Clone, Debug, Default)]
pub struct LoadBalancerInput {
    pub name: String,
    /// `application` (the default) or `network`.
    pub kind: Option<String>,
    /// `internet-facing` (the default) or `internal`.
    pub scheme: Option<String>,
    pub subnets: Vec<String>,
    pub subnet_mappings: Vec<SubnetMapping>,
    /// `None`: the VPC's default group (application load balancers).
    pub security_groups: Option<Vec<String>>,
    pub ip_address_type: Option<String>,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Default)]
pub struct SubnetMapping {
    pub subnet_id: String,
    /// Elastic IPs and chosen private addresses are not served: addresses come from the pool.
    pub allocation_id: Option<String>,
    pub private_ipv4_address: Option<String>,
}

impl Elb {
    /// The load balancer an ARN names, with the revision of its record.
    pub(crate) async fn lb_record(&self, arn: &str) -> Result<(LoadBalancer, u64)> {
        let not_found = || ElbError::LoadBalancerNotFound { name: arn.to_owned() };
        let parts = split_arn(&self.identity, arn, "loadbalancer", 2).ok_or_else(not_found)?;
        match self.get::<LoadBalancer>(&lb_key(parts.parts[0])).await? {
            Some((lb, rev)) if lb.arn == arn => Ok((lb, rev)),
            _ => Err(not_found()),
        }
    }

    /// The load balancer `arn` names; `LoadBalancerNotFound` if there is none.
    pub async fn load_balancer(&self, arn: &str) -> Result<LoadBalancer> {
        Ok(self.lb_record(arn).await?.0)
    }

    /// The load balancer holding the listener `arn`.
    pub(crate) async fn listener_lb(&self, arn: &str) -> Result<(LoadBalancer, u64)> {
        let not_found = || ElbError::ListenerNotFound { arn: arn.to_owned() };
        let parts = split_arn(&self.identity, arn, "listener", 3).ok_or_else(not_found)?;
        let lb_arn = self.identity.load_balancer(crate::record::kind_word(parts.kind), parts.parts[0], parts.parts[1]);
        match self.lb_record(&lb_arn).await {
            Ok((lb, rev)) if lb.listener(arn).is_some() => Ok((lb, rev)),
            Ok(_) | Err(ElbError::LoadBalancerNotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// The load balancer holding the rule `arn` (a listener's default rule included).
    pub(crate) async fn rule_lb(&self, arn: &str) -> Result<(LoadBalancer, u64)> {
        let not_found = || ElbError::RuleNotFound { arn: arn.to_owned() };
        let parts = split_arn(&self.identity, arn, "listener-rule", 4).ok_or_else(not_found)?;
        let lb_arn = self.identity.load_balancer(crate::record::kind_word(parts.kind), parts.parts[0], parts.parts[1]);
        match self.lb_record(&lb_arn).await {
            Ok((lb, rev)) if lb.listeners.iter().any(|l| l.default_rule_arn == arn || l.rule(arn).is_some()) => {
                Ok((lb, rev))
            }
            Ok(_) | Err(ElbError::LoadBalancerNotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    pub async fn create_load_balancer(&self, input: LoadBalancerInput) -> Result<LoadBalancer> {
        check_name(&input.name, "Load balancer")?;
        if input.name.starts_with("internal-") {
            return Err(ElbError::Validation(format!(
                "Load balancer name '{}' cannot begin with 'internal-'",
                input.name
            )));
        }
        let kind = match input.kind.as_deref() {
            None | Some("application") => LbKind::Application,
            Some("network") => LbKind::Network,
            Some(other) => {
                return Err(ElbError::Validation(format!(
                    "Load balancer type '{other}' is not supported: use 'application' or 'network'"
                )));
            }
        };
        let scheme = match input.scheme.as_deref() {
            None | Some("internet-facing") => LbScheme::InternetFacing,
            Some("internal") => LbScheme::Internal,
            Some(other) => {
                return Err(ElbError::Validation(format!(
                    "Scheme '{other}' is not valid: use 'internet-facing' or 'internal'"
                )));
            }
        };
        if let Some(t) = input.ip_address_type.as_deref().filter(|t| *t != "ipv4") {
            return Err(ElbError::Validation(format!("IpAddressType '{t}' is not supported: use 'ipv4'")));
        }
        check_tags(&input.tags)?;
        if !input.subnets.is_empty() && !input.subnet_mappings.is_empty() {
            return Err(ElbError::Validation("You can specify subnets or subnet mappings, not both".into()));
        }
        if input.subnet_mappings.iter().any(|m| m.allocation_id.is_some() || m.private_ipv4_address.is_some()) {
            return Err(ElbError::Validation(
                "Subnet mappings with an allocation ID or a private IPv4 address are not supported: addresses are assigned from the subnet and the public pool".into(),
            ));
        }
        let subnet_ids: Vec<String> = if input.subnets.is_empty() {
            input.subnet_mappings.iter().map(|m| m.subnet_id.clone()).collect()
        } else {
            input.subnets.clone()
        };
        let mut subnets = Vec::new();
        for id in &subnet_ids {
            let subnet = self.vpcs.subnet(id).await?.ok_or_else(|| ElbError::SubnetNotFound { id: id.clone() })?;
            if subnets.iter().any(|s: &crate::SubnetInfo| s.id == subnet.id) {
                continue;
            }
            if subnets.iter().any(|s| s.availability_zone == subnet.availability_zone) {
                return Err(ElbError::InvalidConfigurationRequest(format!(
                    "A load balancer cannot be attached to multiple subnets in the same Availability Zone '{}'",
                    subnet.availability_zone
                )));
            }
            if let Some(first) = subnets.first()
                && first.vpc_id != subnet.vpc_id
            {
                return Err(ElbError::InvalidConfigurationRequest(
                    "All subnets of a load balancer must be in the same VPC".into(),
                ));
            }
            subnets.push(subnet);
        }
        match kind {
            LbKind::Application if subnets.len() < 2 => {
                return Err(ElbError::Validation(
                    "At least two subnets in two different Availability Zones must be specified".into(),
                ));
            }
            LbKind::Network if subnets.is_empty() => {
                return Err(ElbError::Validation("At least one subnet must be specified".into()));
            }
            _ => {}
        }
        let vpc_id = subnets[0].vpc_id.clone();
        let security_groups = match (kind, &input.security_groups) {
            (LbKind::Network, Some(groups)) if !groups.is_empty() => {
                return Err(ElbError::Validation(
                    "Security groups are supported only for application load balancers".into(),
                ));
            }
            (LbKind::Network, _) => Vec::new(),
            (LbKind::Application, None) => vec![self.vpcs.default_security_group(&vpc_id).await?],
            (LbKind::Application, Some(groups)) => {
                let mut out: Vec<String> = Vec::new();
                for g in groups {
                    match self.vpcs.security_group_vpc(g).await? {
                        Some(v) if v == vpc_id => {}
                        Some(_) => {
                            return Err(ElbError::InvalidSecurityGroup(format!(
                                "Security group '{g}' does not belong to VPC '{vpc_id}'"
                            )));
                        }
                        None => {
                            return Err(ElbError::InvalidSecurityGroup(format!("Security group '{g}' does not exist")));
                        }
                    }
                    if !out.contains(g) {
                        out.push(g.clone());
                    }
                }
                if out.is_empty() { vec![self.vpcs.default_security_group(&vpc_id).await?] } else { out }
            }
        };
        let key = lb_key(&input.name);
        let same = |existing: &LoadBalancer| {
            let mut a: Vec<&str> = existing.zones.iter().map(|z| z.subnet_id.as_str()).collect();
            let mut b: Vec<&str> = subnets.iter().map(|s| s.id.as_str()).collect();
            a.sort();
            b.sort();
            existing.kind == kind && existing.scheme == scheme && a == b && existing.security_groups == security_groups
        };
        if let Some((existing, _)) = self.get::<LoadBalancer>(&key).await? {
            // ELB answers a repeated request with the load balancer it made.
            return if same(&existing) {
                Ok(existing)
            } else {
                Err(ElbError::DuplicateLoadBalancerName { name: input.name })
            };
        }
        let id = new_id();
        let kind_word = crate::record::kind_word(kind);
        let arn = self.identity.load_balancer(kind_word, &input.name, &id);
        let description = format!("ELB {kind_word}/{}/{id}", input.name);
        let public = scheme == LbScheme::InternetFacing;
        let mut zones = Vec::new();
        for subnet in &subnets {
            let node = match self.vpcs.ensure_node(&arn, &description, &subnet.id, &security_groups, public).await {
                Ok(node) => node,
                Err(e) => {
                    self.release(&arn).await;
                    return Err(e);
                }
            };
            zones.push(Zone {
                subnet_id: subnet.id.clone(),
                zone_name: subnet.availability_zone.clone(),
                private_ip: node.private_ip,
                public_ip: node.public_ip,
            });
        }
        let prefix = if public { "" } else { "internal-" };
        let number = rand::random::<u64>() % 10_000_000_000;
        let lb = LoadBalancer {
            dns_name: format!("{prefix}{}-{number:010}.{}.elb.amazonaws.com", input.name, self.identity.region),
            arn: arn.clone(),
            name: input.name.clone(),
            id,
            kind,
            scheme,
            vpc_id,
            created: now(),
            zones,
            security_groups: security_groups.clone(),
            attributes: LbAttributes::default(),
            tags: input.tags.clone(),
            listeners: Vec::new(),
        };
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&lb)));
        match self.commit(txn).await {
            Ok(true) => Ok(lb),
            outcome => {
                self.release(&arn).await;
                outcome?;
                // Another request made one under this name meanwhile.
                match self.get::<LoadBalancer>(&key).await? {
                    Some((existing, _)) if same(&existing) => Ok(existing),
                    _ => Err(ElbError::DuplicateLoadBalancerName { name: input.name }),
                }
            }
        }
    }

    /// Gives back a load balancer's nodes; a failure is logged (the addresses stay leased to
    /// an owner that no longer exists, which the next delete of the same ARN would release).
    async fn release(&self, arn: &str) {
        if let Err(e) = self.vpcs.release_nodes(arn).await {
            tracing::warn!(load_balancer = arn, error = %e, "cannot release the load balancer's interfaces");
        }
    }

    /// DescribeLoadBalancers: all, or those named by ARN or name (each must exist); by name.
    pub async fn describe_load_balancers(
        &self,
        arns: &[String],
        names: &[String],
        page_size: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<LoadBalancer>> {
        if !arns.is_empty() && !names.is_empty() {
            return Err(ElbError::Validation("Load balancer ARNs and names cannot be specified together".into()));
        }
        let mut found = Vec::new();
        if !arns.is_empty() {
            for arn in arns {
                found.push(self.load_balancer(arn).await?);
            }
        } else if !names.is_empty() {
            for name in names {
                match self.get::<LoadBalancer>(&lb_key(name)).await? {
                    Some((lb, _)) => found.push(lb),
                    None => return Err(ElbError::LoadBalancerNotFound { name: name.clone() }),
                }
            }
        } else {
            found = self.list::<LoadBalancer>(LB_PREFIX).await?.into_iter().map(|(lb, _)| lb).collect();
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.arn == b.arn);
        paginate(found, |lb| lb.name.clone(), page_size, marker)
    }

    /// DeleteLoadBalancer: its listeners and rules go with it (their target groups are free
    /// again) and its nodes are released. An unknown load balancer is already gone, as ELB
    /// answers.
    pub async fn delete_load_balancer(&self, arn: &str) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (lb, rev) = match self.lb_record(arn).await {
                Ok(found) => found,
                Err(ElbError::LoadBalancerNotFound { .. }) => {
                    // A delete that failed after its record went may have left nodes.
                    self.release(arn).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if lb.attributes.deletion_protection() {
                return Err(ElbError::OperationNotPermitted(format!(
                    "Load balancer '{arn}' cannot be deleted because deletion protection is enabled"
                )));
            }
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key));
            let forwarders: Vec<String> = lb
                .listeners
                .iter()
                .flat_map(|l| std::iter::once(l.arn.clone()).chain(l.rules.iter().map(|r| r.arn.clone())))
                .collect();
            txn = self.unforward(txn, &lb.arn, &forwarders).await?;
            txn = self.release_ports(txn, &lb, lb.listeners.iter().map(|l| l.port).collect()).await?;
            if self.commit(txn).await? {
                self.release(arn).await;
                return Ok(());
            }
        }
        Err(busy("The load balancer"))
    }

    /// Adds to `txn` the removal of `forwarders` (listener and rule ARNs of `lb_arn`) from
    /// every target group they forward to, compared on each group's record.
    pub(crate) async fn unforward(&self, mut txn: Txn, lb_arn: &str, forwarders: &[String]) -> Result<Txn> {
        for (group, rev) in self.list::<TargetGroup>(crate::record::TG_PREFIX).await? {
            let mut changed = group.clone();
            changed.forwarders.retain(|f, lb| !(lb == lb_arn && forwarders.contains(f)));
            if changed.forwarders != group.forwarders {
                let key = tg_key(&group.name);
                txn = txn.when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&changed)));
            }
        }
        Ok(txn)
    }

    /// Adds to `txn` the release of the host ports `ports` that `lb`'s listeners hold.
    pub(crate) async fn release_ports(&self, mut txn: Txn, lb: &LoadBalancer, ports: Vec<u16>) -> Result<Txn> {
        if lb.scheme != LbScheme::InternetFacing {
            return Ok(txn);
        }
        for port in ports {
            let key = port_key(port);
            if let Some((claim, rev)) = self.get::<PortClaim>(&key).await?
                && claim.load_balancer_arn == lb.arn
            {
                txn = txn.when(Compare::revision(&key, rev)).then(Op::delete(&key));
            }
        }
        Ok(txn)
    }

    pub async fn load_balancer_attributes(&self, arn: &str) -> Result<Vec<Attribute>> {
        let lb = self.load_balancer(arn).await?;
        Ok(lb.attributes.all(lb.kind))
    }

    pub async fn modify_load_balancer_attributes(&self, arn: &str, changes: &[Attribute]) -> Result<Vec<Attribute>> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.lb_record(arn).await?;
            lb.attributes.modify(lb.kind, changes)?;
            let key = lb_key(&lb.name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(lb.attributes.all(lb.kind));
            }
        }
        Err(busy("The load balancer"))
    }
}
