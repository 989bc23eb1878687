//! The stored records and their keys. Listeners and rules live inside their load balancer's
//! record; targets have a record each, so the data plane's reports never contend with changes
//! to their group.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use flotilla_host::lb::{
    ActionSpec, HealthCheckSpec, LbKind, LbScheme, ListenerProtocol, RuleCondition, TargetProtocol,
};
use flotilla_types::{Identity, Tag};
use serde::{Deserialize, Serialize};

use crate::attributes::{LbAttributes, TgAttributes};

pub(crate) const LB_PREFIX: &str = "elbv2/loadbalancers/";
pub(crate) const TG_PREFIX: &str = "elbv2/targetgroups/";
pub(crate) const TARGET_PREFIX: &str = "elbv2/targets/";
pub(crate) const PORT_PREFIX: &str = "elbv2/ports/";

pub(crate) fn lb_key(name: &str) -> String {
    format!("{LB_PREFIX}{name}")
}

pub(crate) fn tg_key(name: &str) -> String {
    format!("{TG_PREFIX}{name}")
}

/// Targets are keyed by their group's id, not its name: a group deleted and made again under
/// the same name starts with no targets.
pub(crate) fn targets_prefix(group_id: &str) -> String {
    format!("{TARGET_PREFIX}{group_id}/")
}

pub(crate) fn target_key(group_id: &str, ip: Ipv4Addr, port: u16) -> String {
    format!("{TARGET_PREFIX}{group_id}/{ip}:{port}")
}

/// Who holds a port of the host's load-balancer address: internet-facing listeners all listen
/// there, so two of them may not share a port.
pub(crate) fn port_key(port: u16) -> String {
    format!("{PORT_PREFIX}{port}")
}

/// The internet-facing listener holding a port of the host's load-balancer address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortClaim {
    pub listener_arn: String,
    pub load_balancer_arn: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    pub id: String,
    pub kind: LbKind,
    pub scheme: LbScheme,
    pub vpc_id: String,
    pub dns_name: String,
    pub created: f64,
    /// One per subnet, in the order they were given.
    pub zones: Vec<Zone>,
    /// Application load balancers only.
    pub security_groups: Vec<String>,
    pub attributes: LbAttributes,
    pub tags: Vec<Tag>,
    /// In the order they were made.
    pub listeners: Vec<Listener>,
}

impl LoadBalancer {
    /// `app` or `net`, as ARNs spell the type.
    pub fn kind_word(&self) -> &'static str {
        kind_word(self.kind)
    }

    /// ELB's `Type`: `application` or `network`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            LbKind::Application => "application",
            LbKind::Network => "network",
        }
    }

    pub fn scheme_name(&self) -> &'static str {
        match self.scheme {
            LbScheme::Internal => "internal",
            LbScheme::InternetFacing => "internet-facing",
        }
    }

    pub fn listener(&self, arn: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.arn == arn)
    }

    pub(crate) fn listener_mut(&mut self, arn: &str) -> Option<&mut Listener> {
        self.listeners.iter_mut().find(|l| l.arn == arn)
    }
}

pub(crate) fn kind_word(kind: LbKind) -> &'static str {
    match kind {
        LbKind::Application => "app",
        LbKind::Network => "net",
    }
}

/// A load balancer's presence in one subnet: its node's addresses there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub subnet_id: String,
    pub zone_name: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub arn: String,
    pub id: String,
    pub load_balancer_arn: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// ACM ARNs, the default first (HTTPS and TLS).
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    pub alpn_policy: Vec<String>,
    pub default_action: ActionSpec,
    /// The default rule's ARN (DescribeRules lists it, `IsDefault`).
    pub default_rule_arn: String,
    /// Lowest priority first.
    pub rules: Vec<Rule>,
    pub tags: Vec<Tag>,
}

impl Listener {
    pub fn rule(&self, arn: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.arn == arn)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub arn: String,
    pub priority: u32,
    pub conditions: Vec<RuleCondition>,
    pub action: ActionSpec,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub id: String,
    pub protocol: TargetProtocol,
    /// `HTTP1`, `HTTP2` or `GRPC` for HTTP and HTTPS groups.
    pub protocol_version: Option<String>,
    pub port: u16,
    pub vpc_id: String,
    pub health_check: HealthCheckSpec,
    pub attributes: TgAttributes,
    pub tags: Vec<Tag>,
    pub created: f64,
    /// The listeners and rules that forward here, each with its load balancer's ARN.
    pub forwarders: BTreeMap<String, String>,
}

impl TargetGroup {
    /// The load balancers that forward here (at most one, as ELB allows).
    pub fn load_balancer_arns(&self) -> Vec<String> {
        let mut arns: Vec<String> = self.forwarders.values().cloned().collect();
        arns.sort();
        arns.dedup();
        arns
    }

    /// ELB's `TargetType`: Fargate's tasks are only ever registered by address.
    pub fn target_type(&self) -> &'static str {
        "ip"
    }
}

/// One registered target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub registered: f64,
    /// The data plane's last verdict (`None`: no report yet, still `initial`).
    pub verdict: Option<Verdict>,
    /// Deregistered: draining until then (seconds since the epoch), or until the data plane
    /// reports it has nothing in flight.
    pub draining_until: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Healthy,
    Unhealthy { reason: String, description: String },
}

/// The parts of an ELB ARN this installation made, or `None` (another region or account, not
/// an ELB ARN, or malformed): so every lookup by ARN is also a check of it.
pub(crate) struct ArnParts<'a> {
    pub kind: LbKind,
    pub parts: Vec<&'a str>,
}

/// Splits `arn` of resource type `resource` (`loadbalancer`, `listener`, `listener-rule`)
/// into its kind and `count` path parts after the kind.
pub(crate) fn split_arn<'a>(identity: &Identity, arn: &'a str, resource: &str, count: usize) -> Option<ArnParts<'a>> {
    let prefix = format!("arn:aws:elasticloadbalancing:{}:{}:{resource}/", identity.region, identity.account);
    let rest = arn.strip_prefix(&prefix)?;
    let mut it = rest.split('/');
    let kind = match it.next()? {
        "app" => LbKind::Application,
        "net" => LbKind::Network,
        _ => return None,
    };
    let parts: Vec<&str> = it.collect();
    (parts.len() == count && parts.iter().all(|p| !p.is_empty())).then_some(ArnParts { kind, parts })
}

/// A target group ARN's name and id.
pub(crate) fn split_tg_arn<'a>(identity: &Identity, arn: &'a str) -> Option<(&'a str, &'a str)> {
    let prefix = format!("arn:aws:elasticloadbalancing:{}:{}:targetgroup/", identity.region, identity.account);
    let (name, id) = arn.strip_prefix(&prefix)?.split_once('/')?;
    (!name.is_empty() && !id.is_empty() && !id.contains('/')).then_some((name, id))
}
