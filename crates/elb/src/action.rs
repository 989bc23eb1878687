//! Listener and rule actions: `forward` (one target group, or several weighted, with
//! group-level stickiness), `redirect` and `fixed-response` (application load balancers), and
//! the bookkeeping that ties target groups to what forwards to them.

use std::collections::BTreeMap;

use flotilla_host::lb::{ActionSpec, LbKind, RedirectSpec, WeightedGroup};
use flotilla_store::{Compare, Op, Txn};

use crate::record::{LoadBalancer, TG_PREFIX, TargetGroup, tg_key};
use crate::target_group::{is_layer7, protocol_name};
use crate::{Elb, ElbError, Result, encode};

/// One action as requests carry it (ELB's `Action`).
#[derive(Clone, Debug, Default)]
pub struct ActionInput {
    /// `forward`, `redirect` or `fixed-response`.
    pub kind: String,
    pub order: Option<i64>,
    pub target_group_arn: Option<String>,
    pub forward: Option<ForwardInput>,
    pub redirect: Option<RedirectInput>,
    pub fixed_response: Option<FixedResponseInput>,
}

#[derive(Clone, Debug, Default)]
pub struct ForwardInput {
    pub target_groups: Vec<WeightInput>,
    pub stickiness_enabled: Option<bool>,
    pub stickiness_s: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct WeightInput {
    pub arn: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct RedirectInput {
    pub protocol: Option<String>,
    pub port: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    /// `HTTP_301` or `HTTP_302`.
    pub status_code: String,
}

#[derive(Clone, Debug, Default)]
pub struct FixedResponseInput {
    /// `2XX`, `4XX` or `5XX`.
    pub status_code: String,
    pub content_type: Option<String>,
    pub message_body: Option<String>,
}

const CONTENT_TYPES: [&str; 5] = ["text/plain", "text/css", "text/html", "application/javascript", "application/json"];

fn invalid(message: impl Into<String>) -> ElbError {
    ElbError::Validation(message.into())
}

/// Checks a listener's or rule's actions for a load balancer of `kind` (the target groups
/// themselves are checked against the store by [`Elb::forward_changes`]).
pub(crate) fn parse_actions(kind: LbKind, actions: &[ActionInput]) -> Result<ActionSpec> {
    let action = match actions {
        [] => return Err(invalid("At least one action must be specified")),
        [one] => one,
        _ => {
            return Err(invalid(
                "Only one action per listener or rule is supported: forward, redirect or fixed-response",
            ));
        }
    };
    if let Some(order) = action.order
        && !(1..=50000).contains(&order)
    {
        return Err(invalid(format!("Action order '{order}' must be between 1 and 50000")));
    }
    if kind == LbKind::Network && action.kind != "forward" {
        return Err(invalid(format!(
            "Action type '{}' is not supported by network load balancers: use 'forward'",
            action.kind
        )));
    }
    match action.kind.as_str() {
        "forward" => forward(kind, action),
        "redirect" => {
            let r = action.redirect.as_ref().ok_or_else(|| invalid("A redirect configuration must be specified"))?;
            redirect(r)
        }
        "fixed-response" => {
            let f = action
                .fixed_response
                .as_ref()
                .ok_or_else(|| invalid("A fixed-response configuration must be specified"))?;
            fixed_response(f)
        }
        other => Err(invalid(format!(
            "Action type '{other}' is not supported: use 'forward', 'redirect' or 'fixed-response'"
        ))),
    }
}

fn forward(kind: LbKind, action: &ActionInput) -> Result<ActionSpec> {
    let mut groups: Vec<WeightedGroup> = Vec::new();
    let mut stickiness_s = None;
    if let Some(config) = &action.forward {
        for g in &config.target_groups {
            let arn = g.arn.clone().ok_or_else(|| invalid("A target group ARN must be specified"))?;
            let weight = g.weight.unwrap_or(1);
            if !(0..=999).contains(&weight) {
                return Err(invalid(format!("Target group weight '{weight}' must be between 0 and 999")));
            }
            if groups.iter().any(|w| w.arn == arn) {
                return Err(invalid(format!("Target group '{arn}' is given more than once")));
            }
            groups.push(WeightedGroup { arn, weight: weight as u32 });
        }
        if config.stickiness_enabled == Some(true) {
            let s = config
                .stickiness_s
                .ok_or_else(|| invalid("A stickiness duration must be specified when stickiness is enabled"))?;
            if !(1..=604800).contains(&s) {
                return Err(invalid(format!("Stickiness duration '{s}' must be between 1 and 604800 seconds")));
            }
            stickiness_s = Some(s as u32);
        }
    }
    match (&action.target_group_arn, groups.as_slice()) {
        (Some(arn), []) => groups.push(WeightedGroup { arn: arn.clone(), weight: 1 }),
        (Some(arn), [one]) if one.arn == *arn => {}
        (Some(_), _) => {
            return Err(invalid(
                "A target group ARN and a forward configuration must name the same single target group",
            ));
        }
        (None, []) => return Err(invalid("A target group ARN or a forward configuration must be specified")),
        (None, _) => {}
    }
    if groups.len() > 5 {
        return Err(invalid("A forward action can name at most 5 target groups"));
    }
    if kind == LbKind::Network && (groups.len() > 1 || stickiness_s.is_some()) {
        return Err(invalid("Network load balancers forward to one target group, without group stickiness"));
    }
    Ok(ActionSpec::Forward { target_groups: groups, stickiness_s })
}

fn redirect(r: &RedirectInput) -> Result<ActionSpec> {
    let status = match r.status_code.as_str() {
        "HTTP_301" => 301,
        "HTTP_302" => 302,
        other => return Err(invalid(format!("Redirect status code '{other}' must be 'HTTP_301' or 'HTTP_302'"))),
    };
    let protocol = r.protocol.clone().unwrap_or_else(|| "#{protocol}".into());
    if !["HTTP", "HTTPS", "#{protocol}"].contains(&protocol.as_str()) {
        return Err(invalid(format!("Redirect protocol '{protocol}' must be 'HTTP', 'HTTPS' or '#{{protocol}}'")));
    }
    let port = r.port.clone().unwrap_or_else(|| "#{port}".into());
    if port != "#{port}" && !port.parse::<u16>().is_ok_and(|p| p >= 1) {
        return Err(invalid(format!("Redirect port '{port}' must be a port or '#{{port}}'")));
    }
    let host = r.host.clone().unwrap_or_else(|| "#{host}".into());
    let path = r.path.clone().unwrap_or_else(|| "/#{path}".into());
    if !path.starts_with('/') {
        return Err(invalid(format!("Redirect path '{path}' must begin with '/'")));
    }
    let query = r.query.clone().unwrap_or_else(|| "#{query}".into());
    if host.is_empty() || host.len() > 128 || path.len() > 128 || query.len() > 128 {
        return Err(invalid("Redirect host, path and query must each be at most 128 characters (host non-empty)"));
    }
    if protocol == "#{protocol}" && port == "#{port}" && host == "#{host}" && path == "/#{path}" {
        return Err(ElbError::InvalidLoadBalancerAction(
            "The redirect configuration is not valid: it redirects to the original URL, which would loop".into(),
        ));
    }
    Ok(ActionSpec::Redirect(RedirectSpec { protocol, host, port, path, query, status }))
}

fn fixed_response(f: &FixedResponseInput) -> Result<ActionSpec> {
    let status = f
        .status_code
        .parse::<u16>()
        .ok()
        .filter(|s| f.status_code.len() == 3 && matches!(s / 100, 2 | 4 | 5))
        .ok_or_else(|| {
            invalid(format!("Fixed response status code '{}' must be a 2XX, 4XX or 5XX code", f.status_code))
        })?;
    if let Some(t) = &f.content_type
        && !CONTENT_TYPES.contains(&t.as_str())
    {
        return Err(invalid(format!("Content type '{t}' must be one of {}", CONTENT_TYPES.join(", "))));
    }
    if f.message_body.as_ref().is_some_and(|b| b.len() > 1024) {
        return Err(invalid("A fixed response message body can be at most 1024 characters"));
    }
    Ok(ActionSpec::FixedResponse { status, content_type: f.content_type.clone(), body: f.message_body.clone() })
}

/// The target group ARNs an action forwards to.
pub(crate) fn groups_of(action: &ActionSpec) -> Vec<String> {
    match action {
        ActionSpec::Forward { target_groups, .. } => target_groups.iter().map(|g| g.arn.clone()).collect(),
        _ => Vec::new(),
    }
}

impl Elb {
    /// Adds to `txn` what `changes` (listener or rule ARN of `lb` → the groups it now forwards
    /// to; none when it goes) does to target groups' records, after checking each group named:
    /// it exists, is in the load balancer's VPC, speaks a protocol of its type and is used by
    /// no other load balancer. Every group named is compared, so a group deleted meanwhile
    /// fails the transaction.
    pub(crate) async fn forward_changes(
        &self,
        mut txn: Txn,
        lb: &LoadBalancer,
        changes: &BTreeMap<String, Vec<String>>,
    ) -> Result<Txn> {
        let groups = self.list::<TargetGroup>(TG_PREFIX).await?;
        for arn in changes.values().flatten() {
            let Some((group, _)) = groups.iter().find(|(g, _)| &g.arn == arn) else {
                return Err(ElbError::TargetGroupNotFound { name: arn.clone() });
            };
            if group.vpc_id != lb.vpc_id {
                return Err(invalid(format!(
                    "Target group '{arn}' is in VPC '{}', not in the load balancer's VPC '{}'",
                    group.vpc_id, lb.vpc_id
                )));
            }
            if is_layer7(group.protocol) != (lb.kind == LbKind::Application) {
                return Err(ElbError::IncompatibleProtocols(format!(
                    "Target group '{arn}' has protocol {}, which a load balancer of type '{}' cannot forward to",
                    protocol_name(group.protocol),
                    lb.type_name()
                )));
            }
            if group.forwarders.values().any(|other| *other != lb.arn) {
                return Err(ElbError::TargetGroupAssociationLimit { arn: arn.clone() });
            }
        }
        for (group, rev) in groups {
            let mut changed = group.forwarders.clone();
            let mut named = false;
            for (forwarder, to) in changes {
                changed.remove(forwarder);
                if to.contains(&group.arn) {
                    changed.insert(forwarder.clone(), lb.arn.clone());
                    named = true;
                }
            }
            let key = tg_key(&group.name);
            if changed != group.forwarders {
                let updated = TargetGroup { forwarders: changed, ..group };
                txn = txn.when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&updated)));
            } else if named {
                txn = txn.when(Compare::revision(&key, rev));
            }
        }
        Ok(txn)
    }
}
