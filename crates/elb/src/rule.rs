//! Listener rules of application load balancers: CreateRule, ModifyRule, DescribeRules,
//! DeleteRule and SetRulePriorities. Conditions come in ELB's two forms (`Values`, or the
//! field's `*Config`) and are kept in one; priorities are unique per listener; each listener's
//! default rule is its default action, shown with `IsDefault`.

use std::collections::BTreeMap;

use flotilla_host::lb::{ActionSpec, LbKind, QueryMatch, RuleCondition};
use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Tag;
use flotilla_types::page::Page;
use ipnet::Ipv4Net;

use crate::action::{ActionInput, groups_of, parse_actions};
use crate::record::{Listener, LoadBalancer, Rule, lb_key};
use crate::tags::check_tags;
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode, new_id, paginate};

/// ELB's limits: rules per listener, condition values per rule.
const MAX_RULES: usize = 100;
const MAX_VALUES: usize = 5;

/// One condition as requests carry it (ELB's `RuleCondition`): `values` is the older form of
/// `path_pattern` and `host_header`.
#[derive(Clone, Debug, Default)]
pub struct ConditionInput {
    pub field: Option<String>,
    pub values: Vec<String>,
    pub host_header: Option<Vec<String>>,
    pub path_pattern: Option<Vec<String>>,
    /// Header name and values.
    pub http_header: Option<(Option<String>, Vec<String>)>,
    /// Key (optional) and value pairs.
    pub query_string: Option<Vec<(Option<String>, Option<String>)>>,
    pub http_request_method: Option<Vec<String>>,
    pub source_ip: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct RuleInput {
    pub listener_arn: String,
    pub priority: i64,
    pub conditions: Vec<ConditionInput>,
    pub actions: Vec<ActionInput>,
    pub tags: Vec<Tag>,
}

/// ModifyRule: `None` keeps what the rule has.
#[derive(Clone, Debug, Default)]
pub struct RuleChange {
    pub conditions: Option<Vec<ConditionInput>>,
    pub actions: Option<Vec<ActionInput>>,
}

/// A rule as DescribeRules shows it: a listener's default rule has no priority (`default`) and
/// no conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleView {
    pub arn: String,
    /// `None`: the default rule.
    pub priority: Option<u32>,
    pub conditions: Vec<RuleCondition>,
    pub action: ActionSpec,
}

impl RuleView {
    fn of(rule: &Rule) -> RuleView {
        RuleView {
            arn: rule.arn.clone(),
            priority: Some(rule.priority),
            conditions: rule.conditions.clone(),
            action: rule.action.clone(),
        }
    }

    fn default_of(listener: &Listener) -> RuleView {
        RuleView {
            arn: listener.default_rule_arn.clone(),
            priority: None,
            conditions: Vec::new(),
            action: listener.default_action.clone(),
        }
    }

    pub fn is_default(&self) -> bool {
        self.priority.is_none()
    }
}

fn invalid(message: impl Into<String>) -> ElbError {
    ElbError::Validation(message.into())
}

fn priority(p: i64) -> Result<u32> {
    if !(1..=50000).contains(&p) {
        return Err(invalid(format!("Priority '{p}' must be between 1 and 50000")));
    }
    Ok(p as u32)
}

/// `values` checked: at least one, each non-empty and at most `max` characters.
fn values(field: &str, values: Vec<String>, max: usize) -> Result<Vec<String>> {
    if values.is_empty() {
        return Err(invalid(format!("A '{field}' condition must have at least one value")));
    }
    if let Some(v) = values.iter().find(|v| v.is_empty() || v.chars().count() > max) {
        return Err(invalid(format!("Condition value '{v}' of '{field}' must be 1 to {max} characters")));
    }
    Ok(values)
}

/// The older `Values` form or the `*Config` form, not both.
fn either(field: &str, plain: Vec<String>, config: Option<Vec<String>>) -> Result<Vec<String>> {
    match (plain.is_empty(), config) {
        (true, Some(c)) => Ok(c),
        (false, None) => Ok(plain),
        (true, None) => Err(invalid(format!("A '{field}' condition must have values"))),
        (false, Some(_)) => {
            Err(invalid(format!("A '{field}' condition takes either Values or its configuration, not both")))
        }
    }
}

fn only_config(field: &str, c: &ConditionInput) -> Result<()> {
    if !c.values.is_empty() {
        return Err(invalid(format!("A '{field}' condition takes its configuration, not Values")));
    }
    Ok(())
}

pub(crate) fn parse_condition(c: ConditionInput) -> Result<RuleCondition> {
    let field = c.field.clone().ok_or_else(|| invalid("A condition must have a field"))?;
    Ok(match field.as_str() {
        "path-pattern" => {
            RuleCondition::PathPattern { values: values(&field, either(&field, c.values, c.path_pattern)?, 128)? }
        }
        "host-header" => {
            RuleCondition::HostHeader { values: values(&field, either(&field, c.values, c.host_header)?, 128)? }
        }
        "http-header" => {
            only_config(&field, &c)?;
            let (name, vals) =
                c.http_header.ok_or_else(|| invalid("An 'http-header' condition needs its configuration"))?;
            let name = name
                .filter(|n| !n.is_empty() && n.len() <= 40 && n.chars().all(|ch| ch.is_ascii_graphic() && ch != ':'))
                .ok_or_else(|| invalid("An 'http-header' condition needs a header name of 1 to 40 characters"))?;
            RuleCondition::HttpHeader { name, values: values(&field, vals, 128)? }
        }
        "http-request-method" => {
            only_config(&field, &c)?;
            let vals = values(&field, c.http_request_method.unwrap_or_default(), 40)?;
            if let Some(v) =
                vals.iter().find(|v| !v.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_' || ch == '-'))
            {
                return Err(invalid(format!("HTTP request method '{v}' may have only A-Z, '_' and '-'")));
            }
            RuleCondition::HttpRequestMethod { values: vals }
        }
        "query-string" => {
            only_config(&field, &c)?;
            let pairs = c.query_string.unwrap_or_default();
            if pairs.is_empty() {
                return Err(invalid("A 'query-string' condition must have at least one key/value pair"));
            }
            let mut out = Vec::new();
            for (key, value) in pairs {
                let value = value
                    .filter(|v| !v.is_empty() && v.len() <= 128)
                    .ok_or_else(|| invalid("Each query string pair needs a value of 1 to 128 characters"))?;
                out.push(QueryMatch { key: key.filter(|k| !k.is_empty()), value });
            }
            RuleCondition::QueryString { values: out }
        }
        "source-ip" => {
            only_config(&field, &c)?;
            let vals = values(&field, c.source_ip.unwrap_or_default(), 64)?;
            let nets = vals
                .iter()
                .map(|v| {
                    v.parse::<Ipv4Net>().map_err(|_| invalid(format!("Source IP '{v}' must be an IPv4 CIDR block")))
                })
                .collect::<Result<Vec<_>>>()?;
            RuleCondition::SourceIp { values: nets }
        }
        other => {
            return Err(invalid(format!(
                "Condition field '{other}' must be one of 'path-pattern, host-header, http-header, http-request-method, query-string, source-ip'"
            )));
        }
    })
}

fn value_count(c: &RuleCondition) -> usize {
    match c {
        RuleCondition::PathPattern { values }
        | RuleCondition::HostHeader { values }
        | RuleCondition::HttpRequestMethod { values }
        | RuleCondition::HttpHeader { values, .. } => values.len(),
        RuleCondition::QueryString { values } => values.len(),
        RuleCondition::SourceIp { values } => values.len(),
    }
}

pub(crate) fn parse_conditions(conditions: Vec<ConditionInput>) -> Result<Vec<RuleCondition>> {
    if conditions.is_empty() {
        return Err(invalid("At least one condition must be specified"));
    }
    let parsed = conditions.into_iter().map(parse_condition).collect::<Result<Vec<_>>>()?;
    for (i, c) in parsed.iter().enumerate() {
        let once = !matches!(c, RuleCondition::HttpHeader { .. } | RuleCondition::QueryString { .. });
        if once && parsed[..i].iter().any(|d| std::mem::discriminant(d) == std::mem::discriminant(c)) {
            return Err(invalid(
                "Each of path-pattern, host-header, http-request-method and source-ip can appear once in a rule",
            ));
        }
    }
    if parsed.iter().map(value_count).sum::<usize>() > MAX_VALUES {
        return Err(invalid(format!("A rule can only have '{MAX_VALUES}' condition values")));
    }
    Ok(parsed)
}

impl Elb {
    /// The listener `arn` names, checked to take rules (application load balancers only).
    async fn rule_listener(&self, arn: &str) -> Result<(LoadBalancer, u64)> {
        let (lb, rev) = self.listener_lb(arn).await?;
        if lb.kind != LbKind::Application {
            return Err(invalid("Rules can be created only on listeners of application load balancers"));
        }
        Ok((lb, rev))
    }

    pub async fn create_rule(&self, input: RuleInput) -> Result<RuleView> {
        let priority = priority(input.priority)?;
        let conditions = parse_conditions(input.conditions.clone())?;
        check_tags(&input.tags)?;
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.rule_listener(&input.listener_arn).await?;
            let action = parse_actions(lb.kind, &input.actions)?;
            let (lb_name, lb_id, kind) = (lb.name.clone(), lb.id.clone(), lb.kind_word());
            let listener = lb.listener(&input.listener_arn).expect("found above").clone();
            if listener.rules.iter().any(|r| r.priority == priority) {
                return Err(ElbError::PriorityInUse { priority });
            }
            if listener.rules.len() >= MAX_RULES {
                return Err(invalid(format!("A listener can have at most {MAX_RULES} rules")));
            }
            let rule = Rule {
                arn: self.identity.listener_rule(kind, &lb_name, &lb_id, &listener.id, &new_id()),
                priority,
                conditions: conditions.clone(),
                action,
                tags: input.tags.clone(),
            };
            let key = lb_key(&lb_name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            let changes = BTreeMap::from([(rule.arn.clone(), groups_of(&rule.action))]);
            txn = self.forward_changes(txn, &lb, &changes).await?;
            let l = lb.listener_mut(&input.listener_arn).expect("found above");
            l.rules.push(rule.clone());
            l.rules.sort_by_key(|r| r.priority);
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(RuleView::of(&rule));
            }
        }
        Err(busy("The listener"))
    }

    /// ModifyRule: a default rule's actions are its listener's default action; its conditions
    /// cannot change.
    pub async fn modify_rule(&self, arn: &str, change: &RuleChange) -> Result<RuleView> {
        let conditions = change.conditions.clone().map(parse_conditions).transpose()?;
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.rule_lb(arn).await?;
            let action = change.actions.as_ref().map(|a| parse_actions(lb.kind, a)).transpose()?;
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            let listener_idx = lb
                .listeners
                .iter()
                .position(|l| l.default_rule_arn == arn || l.rule(arn).is_some())
                .ok_or_else(|| ElbError::RuleNotFound { arn: arn.to_owned() })?;
            let is_default = lb.listeners[listener_idx].default_rule_arn == arn;
            if is_default && conditions.is_some() {
                return Err(ElbError::OperationNotPermitted(
                    "The conditions of a default rule cannot be changed".into(),
                ));
            }
            if let Some(action) = &action {
                let forwarder = if is_default { lb.listeners[listener_idx].arn.clone() } else { arn.to_owned() };
                let changes = BTreeMap::from([(forwarder, groups_of(action))]);
                txn = self.forward_changes(txn, &lb, &changes).await?;
            }
            let listener = &mut lb.listeners[listener_idx];
            let view = if is_default {
                if let Some(action) = action {
                    listener.default_action = action;
                }
                RuleView::default_of(listener)
            } else {
                let rule = listener.rules.iter_mut().find(|r| r.arn == arn).expect("found above");
                if let Some(c) = &conditions {
                    rule.conditions = c.clone();
                }
                if let Some(action) = action {
                    rule.action = action;
                }
                RuleView::of(rule)
            };
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(view);
            }
        }
        Err(busy("The listener"))
    }

    pub async fn delete_rule(&self, arn: &str) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.rule_lb(arn).await?;
            if lb.listeners.iter().any(|l| l.default_rule_arn == arn) {
                return Err(ElbError::OperationNotPermitted("A default rule cannot be deleted".into()));
            }
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            let changes = BTreeMap::from([(arn.to_owned(), Vec::new())]);
            txn = self.forward_changes(txn, &lb, &changes).await?;
            for l in &mut lb.listeners {
                l.rules.retain(|r| r.arn != arn);
            }
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The listener"))
    }

    /// SetRulePriorities: all the rules of one listener, changed together; the priorities
    /// after the change must be unique.
    pub async fn set_rule_priorities(&self, changes: &[(String, i64)]) -> Result<Vec<RuleView>> {
        let Some((first, _)) = changes.first() else {
            return Err(invalid("At least one rule priority must be specified"));
        };
        let wanted = changes.iter().map(|(arn, p)| Ok((arn.clone(), priority(*p)?))).collect::<Result<Vec<_>>>()?;
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.rule_lb(first).await?;
            let listener_idx = lb
                .listeners
                .iter()
                .position(|l| l.default_rule_arn == *first || l.rule(first).is_some())
                .ok_or_else(|| ElbError::RuleNotFound { arn: first.clone() })?;
            let listener = &mut lb.listeners[listener_idx];
            for (arn, p) in &wanted {
                if listener.default_rule_arn == *arn {
                    return Err(ElbError::OperationNotPermitted(
                        "The priority of a default rule cannot be changed".into(),
                    ));
                }
                let rule = listener.rules.iter_mut().find(|r| r.arn == *arn).ok_or_else(|| {
                    invalid(format!(
                        "Rule '{arn}' is not a rule of listener '{}': all rules must be of one listener",
                        listener.arn
                    ))
                })?;
                rule.priority = *p;
            }
            let mut seen = std::collections::BTreeSet::new();
            for r in &listener.rules {
                if !seen.insert(r.priority) {
                    return Err(ElbError::PriorityInUse { priority: r.priority });
                }
            }
            listener.rules.sort_by_key(|r| r.priority);
            let views = wanted.iter().filter_map(|(arn, _)| listener.rule(arn).map(RuleView::of)).collect();
            let key = lb_key(&lb.name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(views);
            }
        }
        Err(busy("The listener"))
    }

    /// DescribeRules: a listener's rules by priority then its default rule, or the rules named
    /// (each must exist).
    pub async fn describe_rules(
        &self,
        listener_arn: Option<&str>,
        arns: &[String],
        page_size: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<RuleView>> {
        let views: Vec<(String, RuleView)> = match (listener_arn, arns.is_empty()) {
            (Some(arn), true) => {
                let (listener, _) = self.listener(arn).await?;
                listener
                    .rules
                    .iter()
                    .map(|r| (format!("{:05}", r.priority), RuleView::of(r)))
                    .chain(std::iter::once(("99999".to_owned(), RuleView::default_of(&listener))))
                    .collect()
            }
            (None, false) => {
                let mut out: Vec<(String, RuleView)> = Vec::new();
                for arn in arns {
                    let (lb, _) = self.rule_lb(arn).await?;
                    for l in &lb.listeners {
                        let view = if l.default_rule_arn == *arn {
                            Some(RuleView::default_of(l))
                        } else {
                            l.rule(arn).map(RuleView::of)
                        };
                        if let Some(v) = view
                            && !out.iter().any(|(_, o)| o.arn == v.arn)
                        {
                            out.push((format!("{:05}", out.len()), v));
                        }
                    }
                }
                out
            }
            _ => {
                return Err(invalid("You must specify either a listener ARN or rule ARNs, not both"));
            }
        };
        Ok(paginate(views, |(k, _)| k.clone(), page_size, marker)?.map(|(_, v)| v))
    }
}
