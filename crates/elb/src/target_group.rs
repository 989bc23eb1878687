//! Target groups: CreateTargetGroup (target type `ip` only, as Fargate requires),
//! ModifyTargetGroup, DescribeTargetGroups, DeleteTargetGroup and their attributes. Health
//! check settings take ELB's defaults and ranges.

use flotilla_host::lb::{HealthCheckSpec, HealthProtocol, TargetProtocol};
use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Tag;
use flotilla_types::page::Page;

use crate::attributes::{Attribute, TgAttributes};
use crate::record::{LoadBalancer, TG_PREFIX, TargetGroup, split_tg_arn, targets_prefix, tg_key};
use crate::tags::check_tags;
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode, new_id, now, paginate};

/// CreateTargetGroup's input. Strings are ELB's words (`HTTP`, `ip`, `traffic-port`), checked
/// here.
#[derive(Clone, Debug, Default)]
pub struct TargetGroupInput {
    pub name: String,
    pub protocol: Option<String>,
    pub protocol_version: Option<String>,
    pub port: Option<i64>,
    pub vpc_id: Option<String>,
    /// `None` is taken as `ip`, the only type Fargate tasks can be registered as.
    pub target_type: Option<String>,
    pub ip_address_type: Option<String>,
    pub health_check: HealthCheckInput,
    pub tags: Vec<Tag>,
}

/// Health check settings as CreateTargetGroup and ModifyTargetGroup take them; `None` keeps
/// the default (create) or the current value (modify).
#[derive(Clone, Debug, Default)]
pub struct HealthCheckInput {
    pub enabled: Option<bool>,
    pub protocol: Option<String>,
    /// `traffic-port` or a port number.
    pub port: Option<String>,
    pub path: Option<String>,
    pub interval_s: Option<i64>,
    pub timeout_s: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    /// `Matcher.HttpCode`.
    pub matcher: Option<String>,
}

/// ModifyTargetGroup changes only health checks.
pub type TargetGroupChange = HealthCheckInput;

/// Which target groups DescribeTargetGroups shows (at most one of these).
#[derive(Clone, Debug, Default)]
pub struct TargetGroupFilter {
    pub arns: Vec<String>,
    pub names: Vec<String>,
    pub load_balancer_arn: Option<String>,
}

pub(crate) fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(ElbError::Validation(format!(
            "{what} name '{name}' is not valid: it must have 1 to 32 letters, digits and hyphens, and must not begin or end with a hyphen"
        )));
    }
    Ok(())
}

pub(crate) fn port(value: i64, what: &str) -> Result<u16> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ElbError::Validation(format!("{what} '{value}' must be between 1 and 65535")))
}

fn protocol(word: &str) -> Result<TargetProtocol> {
    Ok(match word {
        "HTTP" => TargetProtocol::Http,
        "HTTPS" => TargetProtocol::Https,
        "TCP" => TargetProtocol::Tcp,
        "TLS" => TargetProtocol::Tls,
        other => {
            return Err(ElbError::Validation(format!(
                "Protocol '{other}' is not supported for target groups: use HTTP, HTTPS, TCP or TLS"
            )));
        }
    })
}

pub fn protocol_name(p: TargetProtocol) -> &'static str {
    match p {
        TargetProtocol::Http => "HTTP",
        TargetProtocol::Https => "HTTPS",
        TargetProtocol::Tcp => "TCP",
        TargetProtocol::Tls => "TLS",
    }
}

pub fn health_protocol_name(p: HealthProtocol) -> &'static str {
    match p {
        HealthProtocol::Http => "HTTP",
        HealthProtocol::Https => "HTTPS",
        HealthProtocol::Tcp => "TCP",
    }
}

/// Whether a group is served by application load balancers (HTTP, HTTPS) or network ones.
pub(crate) fn is_layer7(p: TargetProtocol) -> bool {
    matches!(p, TargetProtocol::Http | TargetProtocol::Https)
}

fn range(value: Option<i64>, current: u32, lo: u32, hi: u32, what: &str) -> Result<u32> {
    match value {
        None => Ok(current),
        Some(v) if v >= lo as i64 && v <= hi as i64 => Ok(v as u32),
        Some(v) => Err(ElbError::Validation(format!("{what} '{v}' must be between {lo} and {hi}"))),
    }
}

/// `200`, `200,202`, `200-299`: codes within `lo..=hi`.
fn check_matcher(matcher: &str, lo: u16, hi: u16) -> Result<()> {
    let code = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (lo..=hi).contains(c));
    let ok = !matcher.is_empty()
        && matcher.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => matches!((code(a), code(b)), (Some(a), Some(b)) if a <= b),
            None => code(part).is_some(),
        });
    if !ok {
        return Err(ElbError::Validation(format!(
            "Health check matcher HTTP code '{matcher}' must be a code, a list (200,202) or a range (200-299) of codes from {lo} to {hi}"
        )));
    }
    Ok(())
}

/// The health check of a group of `protocol`: `base` (the current settings, or `None` for
/// ELB's defaults) with `input` applied, checked as a whole.
pub(crate) fn health_check(
    protocol: TargetProtocol,
    base: Option<&HealthCheckSpec>,
    input: &HealthCheckInput,
) -> Result<HealthCheckSpec> {
    if input.enabled == Some(false) {
        return Err(ElbError::Validation(
            "Health checks cannot be disabled for target groups with target type 'ip'".into(),
        ));
    }
    let hc_protocol = match input.protocol.as_deref() {
        None => base.map(|b| b.protocol).unwrap_or(match protocol {
            TargetProtocol::Http => HealthProtocol::Http,
            TargetProtocol::Https => HealthProtocol::Https,
            TargetProtocol::Tcp | TargetProtocol::Tls => HealthProtocol::Tcp,
        }),
        Some("HTTP") => HealthProtocol::Http,
        Some("HTTPS") => HealthProtocol::Https,
        Some("TCP") if !is_layer7(protocol) => HealthProtocol::Tcp,
        Some(other) => {
            return Err(ElbError::Validation(format!(
                "Health check protocol '{other}' is not supported for target groups with the {} protocol",
                protocol_name(protocol)
            )));
        }
    };
    let http = hc_protocol != HealthProtocol::Tcp;
    // A change of protocol starts from that protocol's defaults for what depends on it.
    let base = base.filter(|b| b.protocol == hc_protocol);
    let hc_port = match input.port.as_deref() {
        None => base.and_then(|b| b.port),
        Some("traffic-port") => None,
        Some(p) => Some(
            p.parse::<i64>()
                .map_err(|_| ElbError::Validation(format!("Health check port '{p}' must be 'traffic-port' or a port")))
                .and_then(|v| port(v, "Health check port"))?,
        ),
    };
    let path = match (&input.path, http) {
        (Some(_), false) => {
            return Err(ElbError::Validation(
                "Health check path is supported only for HTTP and HTTPS health checks".into(),
            ));
        }
        (Some(p), true) => {
            if !p.starts_with('/') || p.len() > 1024 {
                return Err(ElbError::Validation(format!(
                    "Health check path '{p}' must begin with '/' and be at most 1024 characters"
                )));
            }
            p.clone()
        }
        (None, true) => base.map(|b| b.path.clone()).filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into()),
        (None, false) => String::new(),
    };
    let (matcher_lo, matcher_hi, matcher_default) =
        if is_layer7(protocol) { (200, 499, "200") } else { (200, 599, "200-399") };
    let matcher = match (&input.matcher, http) {
        (Some(_), false) => {
            return Err(ElbError::Validation("A matcher is supported only for HTTP and HTTPS health checks".into()));
        }
        (Some(m), true) => {
            check_matcher(m, matcher_lo, matcher_hi)?;
            m.clone()
        }
        (None, true) => base.map(|b| b.matcher.clone()).filter(|m| !m.is_empty()).unwrap_or(matcher_default.into()),
        (None, false) => String::new(),
    };
    let default_timeout = match (is_layer7(protocol), http) {
        (true, _) => 5,
        (false, true) => 6,
        (false, false) => 10,
    };
    let interval_s = range(input.interval_s, base.map_or(30, |b| b.interval_s), 5, 300, "Health check interval")?;
    let timeout_s =
        range(input.timeout_s, base.map_or(default_timeout, |b| b.timeout_s), 2, 120, "Health check timeout")?;
    if timeout_s >= interval_s {
        return Err(ElbError::Validation(format!(
            "Health check timeout '{timeout_s}' must be smaller than the interval '{interval_s}'"
        )));
    }
    let healthy_threshold =
        range(input.healthy_threshold, base.map_or(5, |b| b.healthy_threshold), 2, 10, "Healthy threshold count")?;
    let unhealthy_threshold = range(
        input.unhealthy_threshold,
        base.map_or(2, |b| b.unhealthy_threshold),
        2,
        10,
        "Unhealthy threshold count",
    )?;
    Ok(HealthCheckSpec {
        enabled: true,
        protocol: hc_protocol,
        port: hc_port,
        path,
        interval_s,
        timeout_s,
        healthy_threshold,
        unhealthy_threshold,
        matcher,
    })
}

impl Elb {
    pub async fn create_target_group(&self, input: TargetGroupInput) -> Result<TargetGroup> {
        check_name(&input.name, "Target group")?;
        match input.target_type.as_deref() {
            None | Some("ip") => {}
            Some(other) => {
                return Err(ElbError::Validation(format!(
                    "TargetType '{other}' is not supported: Fargate tasks are registered by IP address, use TargetType 'ip'"
                )));
            }
        }
        if let Some(t) = input.ip_address_type.as_deref().filter(|t| *t != "ipv4") {
            return Err(ElbError::Validation(format!("IpAddressType '{t}' is not supported: use 'ipv4'")));
        }
        let protocol = protocol(
            input.protocol.as_deref().ok_or_else(|| ElbError::Validation("A protocol must be specified".into()))?,
        )?;
        let port = port(input.port.ok_or_else(|| ElbError::Validation("A port must be specified".into()))?, "Port")?;
        let vpc_id = input.vpc_id.clone().ok_or_else(|| ElbError::Validation("A VPC ID must be specified".into()))?;
        if !self.vpcs.vpc_exists(&vpc_id).await? {
            return Err(ElbError::Validation(format!("The VPC ID '{vpc_id}' is not found")));
        }
        let protocol_version = match (input.protocol_version.as_deref(), is_layer7(protocol)) {
            (None, true) | (Some("HTTP1"), true) => Some("HTTP1".to_owned()),
            (None, false) => None,
            (Some(v), true) => {
                return Err(ElbError::Validation(format!("Protocol version '{v}' is not supported: use HTTP1")));
            }
            (Some(_), false) => {
                return Err(ElbError::Validation(
                    "A protocol version can be given only for HTTP and HTTPS target groups".into(),
                ));
            }
        };
        let health_check = health_check(protocol, None, &input.health_check)?;
        check_tags(&input.tags)?;
        let id = new_id();
        let group = TargetGroup {
            arn: self.identity.target_group(&input.name, &id),
            name: input.name.clone(),
            id,
            protocol,
            protocol_version,
            port,
            vpc_id,
            health_check,
            attributes: TgAttributes::default(),
            tags: input.tags,
            created: now(),
            forwarders: Default::default(),
        };
        let key = tg_key(&group.name);
        for _ in 0..CONFLICT_RETRIES {
            if let Some((existing, _)) = self.get::<TargetGroup>(&key).await? {
                // ELB answers a repeated request with the group it made.
                let same = existing.protocol == group.protocol
                    && existing.port == group.port
                    && existing.vpc_id == group.vpc_id
                    && existing.health_check == group.health_check;
                return if same { Ok(existing) } else { Err(ElbError::DuplicateTargetGroupName { name: group.name }) };
            }
            let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&group)));
            if self.commit(txn).await? {
                return Ok(group);
            }
        }
        Err(busy("The target group"))
    }

    /// The target group an ARN names, with the revision of its record.
    pub(crate) async fn group_record(&self, arn: &str) -> Result<(TargetGroup, u64)> {
        let not_found = || ElbError::TargetGroupNotFound { name: arn.to_owned() };
        let (name, id) = split_tg_arn(&self.identity, arn).ok_or_else(not_found)?;
        match self.get::<TargetGroup>(&tg_key(name)).await? {
            Some((g, rev)) if g.id == id => Ok((g, rev)),
            _ => Err(not_found()),
        }
    }

    /// The target group `arn` names: its protocol, port, VPC, the load balancers forwarding to
    /// it ([`TargetGroup::load_balancer_arns`]) and its attributes
    /// ([`TgAttributes::deregistration_delay_s`]). `TargetGroupNotFound` if there is none.
    pub async fn target_group(&self, arn: &str) -> Result<TargetGroup> {
        Ok(self.group_record(arn).await?.0)
    }

    pub async fn modify_target_group(&self, arn: &str, change: &TargetGroupChange) -> Result<TargetGroup> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut group, rev) = self.group_record(arn).await?;
            group.health_check = health_check(group.protocol, Some(&group.health_check), change)?;
            let key = tg_key(&group.name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&group)));
            if self.commit(txn).await? {
                return Ok(group);
            }
        }
        Err(busy("The target group"))
    }

    /// DescribeTargetGroups: every group, or those named by ARN or name (each must exist), or
    /// those a load balancer forwards to; by name.
    pub async fn describe_target_groups(
        &self,
        filter: &TargetGroupFilter,
        page_size: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<TargetGroup>> {
        let given = [!filter.arns.is_empty(), !filter.names.is_empty(), filter.load_balancer_arn.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ElbError::Validation(
                "Only one of load balancer ARN, target group ARNs or names can be specified".into(),
            ));
        }
        let all: Vec<TargetGroup> = self.list::<TargetGroup>(TG_PREFIX).await?.into_iter().map(|(g, _)| g).collect();
        let groups = if !filter.arns.is_empty() {
            let mut out = Vec::new();
            for arn in &filter.arns {
                match all.iter().find(|g| &g.arn == arn) {
                    Some(g) => out.push(g.clone()),
                    None => return Err(ElbError::TargetGroupNotFound { name: arn.clone() }),
                }
            }
            out
        } else if !filter.names.is_empty() {
            let mut out = Vec::new();
            for name in &filter.names {
                match all.iter().find(|g| &g.name == name) {
                    Some(g) => out.push(g.clone()),
                    None => return Err(ElbError::TargetGroupNotFound { name: name.clone() }),
                }
            }
            out
        } else if let Some(lb) = &filter.load_balancer_arn {
            let lb: LoadBalancer = self.load_balancer(lb).await?;
            all.into_iter().filter(|g| g.forwarders.values().any(|a| *a == lb.arn)).collect()
        } else {
            all
        };
        let mut groups = groups;
        groups.dedup_by(|a, b| a.arn == b.arn);
        paginate(groups, |g| g.name.clone(), page_size, marker)
    }

    /// DeleteTargetGroup: refused while a listener or rule forwards to it; its targets go with
    /// it. An unknown group is already gone, as ELB answers.
    pub async fn delete_target_group(&self, arn: &str) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (group, rev) = match self.group_record(arn).await {
                Ok(found) => found,
                Err(ElbError::TargetGroupNotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if !group.forwarders.is_empty() {
                return Err(ElbError::ResourceInUse(format!(
                    "Target group '{arn}' is currently in use by a listener or a rule"
                )));
            }
            let key = tg_key(&group.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key));
            for kv in self.store.list_prefix(&targets_prefix(&group.id)).await? {
                txn = txn.then(Op::delete(kv.key));
            }
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The target group"))
    }

    pub async fn target_group_attributes(&self, arn: &str) -> Result<Vec<Attribute>> {
        let group = self.target_group(arn).await?;
        Ok(group.attributes.all(group.protocol))
    }

    pub async fn modify_target_group_attributes(&self, arn: &str, changes: &[Attribute]) -> Result<Vec<Attribute>> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut group, rev) = self.group_record(arn).await?;
            if !is_layer7(group.protocol) && changes.iter().any(|a| a.key == "stickiness.enabled" && a.value == "true")
            {
                return Err(ElbError::Validation(
                    "Stickiness is supported only for HTTP and HTTPS target groups here".into(),
                ));
            }
            group.attributes.modify(group.protocol, changes)?;
            let key = tg_key(&group.name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&group)));
            if self.commit(txn).await? {
                return Ok(group.attributes.all(group.protocol));
            }
        }
        Err(busy("The target group"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_defaults_and_ranges() {
        let http = health_check(TargetProtocol::Http, None, &HealthCheckInput::default()).unwrap();
        assert_eq!((http.path.as_str(), http.interval_s, http.timeout_s), ("/", 30, 5));
        assert_eq!((http.healthy_threshold, http.unhealthy_threshold, http.matcher.as_str()), (5, 2, "200"));
        let tcp = health_check(TargetProtocol::Tcp, None, &HealthCheckInput::default()).unwrap();
        assert_eq!((tcp.protocol, tcp.timeout_s, tcp.path.as_str()), (HealthProtocol::Tcp, 10, ""));
        let bad = [
            HealthCheckInput { interval_s: Some(4), ..Default::default() },
            HealthCheckInput { timeout_s: Some(30), ..Default::default() },
            HealthCheckInput { healthy_threshold: Some(11), ..Default::default() },
            HealthCheckInput { path: Some("health".into()), ..Default::default() },
            HealthCheckInput { matcher: Some("600".into()), ..Default::default() },
            HealthCheckInput { matcher: Some("300-200".into()), ..Default::default() },
            HealthCheckInput { protocol: Some("TCP".into()), ..Default::default() },
            HealthCheckInput { port: Some("0".into()), ..Default::default() },
            HealthCheckInput { enabled: Some(false), ..Default::default() },
        ];
        for input in bad {
            assert!(health_check(TargetProtocol::Http, None, &input).is_err(), "{input:?}");
        }
        let ok = HealthCheckInput {
            matcher: Some("200,202-204".into()),
            port: Some("8081".into()),
            path: Some("/health".into()),
            ..Default::default()
        };
        let hc = health_check(TargetProtocol::Http, None, &ok).unwrap();
        assert_eq!((hc.port, hc.matcher.as_str()), (Some(8081), "200,202-204"));
        // Modify keeps what it is not told.
        let hc2 = health_check(
            TargetProtocol::Http,
            Some(&hc),
            &HealthCheckInput { interval_s: Some(10), ..Default::default() },
        )
        .unwrap();
        assert_eq!((hc2.path.as_str(), hc2.interval_s, hc2.port), ("/health", 10, Some(8081)));
    }
}
