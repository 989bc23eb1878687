//! Load balancers as a host's agent serves them: the whole configuration of every Elastic Load
//! Balancing v2 load balancer the host runs ([`LbSnapshot`], sent again after each change),
//! and what the load balancers saw of their targets ([`TargetReport`], sent on each change of
//! a verdict). The control plane keeps the records (`flotilla-elb`); the data plane
//! (`flotilla-lb`) proxies, health-checks and drains.
//!
//! Everything here is plain data, resolved for the data plane: certificates as PEM, rules in
//! priority order, target groups with their targets and the state the control plane holds for
//! them, so the data plane never asks for anything else.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Events;

/// Every load balancer and target group a host serves. Target groups not attached to any of
/// its load balancers are left out (nothing health-checks them, as on ELB: `unused`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbSnapshot {
    pub load_balancers: Vec<LoadBalancerSpec>,
    pub target_groups: Vec<TargetGroupSpec>,
}

impl LbSnapshot {
    pub fn target_group(&self, arn: &str) -> Option<&TargetGroupSpec> {
        self.target_groups.iter().find(|g| g.arn == arn)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LbKind {
    /// HTTP and HTTPS listeners; rules; layer 7.
    Application,
    /// TCP and TLS listeners; layer 4.
    Network,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LbScheme {
    /// Reachable from the VPC only: listens on its private address in each subnet.
    Internal,
    /// Also reachable from outside: listens on the host's load-balancer address
    /// (`flotilla up --lb-address`) and on its public addresses (1:1 NAT to the private ones).
    InternetFacing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    pub arn: String,
    pub name: String,
    pub kind: LbKind,
    pub scheme: LbScheme,
    pub vpc_id: String,
    /// `<name>-<id>.<region>.elb.amazonaws.com` (internal ones prefixed `internal-`); the VPC
    /// resolver answers it with the private addresses, outside resolvers with the public ones.
    pub dns_name: String,
    /// One per subnet, leased by the control plane like an interface's.
    pub addresses: Vec<LbAddress>,
    /// The load balancer's security groups (application load balancers only): its private
    /// addresses count as their members, so targets may admit "traffic from the LB's group".
    pub security_groups: Vec<String>,
    /// `idle_timeout.timeout_seconds` (application, default 60) or 350 s (network).
    pub idle_timeout_s: u32,
    pub listeners: Vec<ListenerSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbAddress {
    pub subnet_id: String,
    pub private_ip: Ipv4Addr,
    /// Internet-facing load balancers only.
    pub public_ip: Option<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    pub arn: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// HTTPS and TLS: the default certificate first, then the others (chosen by SNI).
    pub certificates: Vec<CertificatePem>,
    /// Rules other than the default, lowest priority number first.
    pub rules: Vec<RuleSpec>,
    /// What happens when no rule matches (network load balancers: always this).
    pub default_action: ActionSpec,
}

/// A certificate and its private key, from ACM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePem {
    pub arn: String,
    /// The certificate, then its chain.
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificatePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePem").field("arn", &self.arn).finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    pub arn: String,
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<RuleCondition>,
    pub action: ActionSpec,
}

/// ELB's rule conditions. Within one condition any value may match; `*` and `?` are
/// wildcards in path, host and header values; host and header names compare without case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "field")]
pub enum RuleCondition {
    PathPattern {
        values: Vec<String>,
    },
    HostHeader {
        values: Vec<String>,
    },
    HttpHeader {
        name: String,
        values: Vec<String>,
    },
    HttpRequestMethod {
        values: Vec<String>,
    },
    /// Each pair matches a query parameter; a pair without a key matches any key's value.
    QueryString {
        values: Vec<QueryMatch>,
    },
    SourceIp {
        values: Vec<Ipv4Net>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryMatch {
    pub key: Option<String>,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ActionSpec {
    /// Weighted across target groups (one group: weight irrelevant). `stickiness_s`: the
    /// group-level stickiness of a multi-group forward (ELB's `TargetGroupStickinessConfig`).
    Forward {
        target_groups: Vec<WeightedGroup>,
        stickiness_s: Option<u32>,
    },
    Redirect(RedirectSpec),
    FixedResponse {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedGroup {
    pub arn: String,
    pub weight: u32,
}

/// ELB's redirect: each part may use `#{protocol}`, `#{host}`, `#{port}`, `#{path}` (without
/// its leading `/`) and `#{query}`; defaults keep the request's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectSpec {
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub path: String,
    pub query: String,
    /// 301 or 302.
    pub status: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupSpec {
    pub arn: String,
    pub name: String,
    pub protocol: TargetProtocol,
    /// The default port of targets registered without one.
    pub port: u16,
    pub vpc_id: String,
    pub health_check: HealthCheckSpec,
    /// `deregistration_delay.timeout_seconds` (default 300).
    pub deregistration_delay_s: u32,
    /// `slow_start.duration_seconds` (0: off): a target that turns healthy gets a share of
    /// requests growing linearly to its full share over this time.
    pub slow_start_s: u32,
    /// `stickiness.enabled` with `stickiness.type` `lb_cookie`: the `AWSALB` cookie's lifetime
    /// (`stickiness.lb_cookie.duration_seconds`).
    pub stickiness_s: Option<u32>,
    pub targets: Vec<TargetSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    pub enabled: bool,
    pub protocol: HealthProtocol,
    /// `None`: the target's own (traffic) port.
    pub port: Option<u16>,
    /// HTTP(S) only.
    pub path: String,
    pub interval_s: u32,
    pub timeout_s: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP codes that pass: `200`, `200,202`, `200-299`.
    pub matcher: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Deregistered: no new requests or connections; once it has none in flight the data
    /// plane reports it [`TargetObservation::Drained`] (the control plane also ends the
    /// draining when the deregistration delay has passed).
    pub draining: bool,
    /// The verdict last recorded (`None`: still `initial`), so a restarted data plane routes
    /// as before until its own checks decide.
    pub healthy: Option<bool>,
}

/// What a load balancer saw of one target of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    pub target_group_arn: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub observation: TargetObservation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum TargetObservation {
    /// Passed `healthy_threshold` checks in a row.
    Healthy,
    /// Failed `unhealthy_threshold` checks in a row. `reason` is ELB's code
    /// (`Target.ResponseCodeMismatch`, `Target.Timeout`, `Target.FailedHealthChecks`),
    /// `description` its words (`Health checks failed with these codes: [500]`).
    Unhealthy { reason: String, description: String },
    /// A draining target has no request or connection left in flight.
    Drained,
}

/// A stream of whole configurations: one now, then one after every change.
pub type LbWatch = Events<LbSnapshot>;
