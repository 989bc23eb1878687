//! Security groups and their rules: request members in, control-plane call, output shape out.
//!
//! Rules arrive as `IpPermissions` (protocol, ports, and any number of IP ranges and group
//! pairs) or in the legacy flat form (`IpProtocol`, `FromPort`, `ToPort`, `CidrIp`,
//! `SourceSecurityGroupName`); the control plane stores one rule per peer, and answers group
//! them back into `IpPermissions` by protocol and ports.

use flotilla_control::{
    Control, GroupSelector, IpProtocol, RuleDirection, RulePeer, RulePeerSpec, RuleSpec, SecurityGroup,
    SecurityGroupRule,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{TagSpecification, WireFilter, filters, specified_tags, tag_list};
use crate::error::ApiError;

fn group_arn(control: &Control, id: &str) -> String {
    control.identity().security_group(id)
}

/// What rules share to be one `IpPermission`: protocol and ports.
type PermissionKey = (IpProtocol, Option<i32>, Option<i32>);

/// Rules grouped into `IpPermission`s by protocol and ports, in first-seen order.
fn permissions_json(control: &Control, rules: &[SecurityGroupRule]) -> Value {
    let mut grouped: Vec<(PermissionKey, Vec<&SecurityGroupRule>)> = Vec::new();
    for rule in rules {
        let key = (rule.protocol, rule.from_port, rule.to_port);
        match grouped.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(rule),
            None => grouped.push((key, vec![rule])),
        }
    }
    let account = &control.identity().account;
    let permissions: Vec<Value> = grouped
        .into_iter()
        .map(|((protocol, from, to), members)| {
            let mut ranges = Vec::new();
            let mut pairs = Vec::new();
            for rule in members {
                match &rule.peer {
                    RulePeer::Cidr(cidr) => {
                        let mut range = json!({"CidrIp": cidr.to_string()});
                        if let Some(d) = &rule.description {
                            range["Description"] = json!(d);
                        }
                        ranges.push(range);
                    }
                    RulePeer::Group(group) => {
                        let mut pair = json!({"GroupId": group, "UserId": account});
                        if let Some(d) = &rule.description {
                            pair["Description"] = json!(d);
                        }
                        pairs.push(pair);
                    }
                }
            }
            let mut permission = json!({
                "IpProtocol": protocol.as_ec2(),
                "IpRanges": ranges,
                "Ipv6Ranges": [],
                "PrefixListIds": [],
                "UserIdGroupPairs": pairs,
            });
            if let (Some(from), Some(to)) = (from, to) {
                permission["FromPort"] = json!(from);
                permission["ToPort"] = json!(to);
            }
            permission
        })
        .collect();
    Value::Array(permissions)
}

fn group_json(control: &Control, g: &SecurityGroup) -> Value {
    let mut v = json!({
        "GroupId": g.id,
        "GroupName": g.name,
        "Description": g.description,
        "VpcId": g.vpc_id,
        "OwnerId": control.identity().account,
        "SecurityGroupArn": group_arn(control, &g.id),
        "IpPermissions": permissions_json(control, &g.ingress),
        "IpPermissionsEgress": permissions_json(control, &g.egress),
    });
    if !g.tags.is_empty() {
        v["Tags"] = tag_list(&g.tags);
    }
    v
}

/// One rule as `SecurityGroupRule` (what Authorize answers).
fn rule_json(control: &Control, group_id: &str, egress: bool, rule: &SecurityGroupRule) -> Value {
    let identity = control.identity();
    let mut v = json!({
        "SecurityGroupRuleId": rule.id,
        "GroupId": group_id,
        "GroupOwnerId": identity.account,
        "IsEgress": egress,
        "IpProtocol": rule.protocol.as_ec2(),
        "FromPort": rule.from_port.unwrap_or(-1),
        "ToPort": rule.to_port.unwrap_or(-1),
        "SecurityGroupRuleArn": identity.security_group_rule(&rule.id),
        "Tags": [],
    });
    match &rule.peer {
        RulePeer::Cidr(cidr) => v["CidrIpv4"] = json!(cidr.to_string()),
        RulePeer::Group(group) => v["ReferencedGroupInfo"] = json!({"GroupId": group, "UserId": identity.account}),
    }
    if let Some(d) = &rule.description {
        v["Description"] = json!(d);
    }
    v
}

/// One rule as `RevokedSecurityGroupRule`.
fn revoked_json(group_id: &str, egress: bool, rule: &SecurityGroupRule) -> Value {
    let mut v = json!({
        "SecurityGroupRuleId": rule.id,
        "GroupId": group_id,
        "IsEgress": egress,
        "IpProtocol": rule.protocol.as_ec2(),
        "FromPort": rule.from_port.unwrap_or(-1),
        "ToPort": rule.to_port.unwrap_or(-1),
    });
    match &rule.peer {
        RulePeer::Cidr(cidr) => v["CidrIpv4"] = json!(cidr.to_string()),
        RulePeer::Group(group) => v["ReferencedGroupId"] = json!(group),
    }
    if let Some(d) = &rule.description {
        v["Description"] = json!(d);
    }
    v
}

/// Rules that matched nothing, as `IpPermission`s.
fn unknown_json(specs: &[RuleSpec]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|s| {
                let (ranges, pairs) = match &s.peer {
                    RulePeerSpec::Cidr(c) => (vec![json!({"CidrIp": c})], vec![]),
                    RulePeerSpec::GroupId(g) => (vec![], vec![json!({"GroupId": g})]),
                    RulePeerSpec::GroupName(n) => (vec![], vec![json!({"GroupName": n})]),
                };
                let mut v = json!({"IpProtocol": s.protocol, "IpRanges": ranges, "UserIdGroupPairs": pairs});
                if let Some(p) = s.from_port {
                    v["FromPort"] = json!(p);
                }
                if let Some(p) = s.to_port {
                    v["ToPort"] = json!(p);
                }
                v
            })
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateSecurityGroup {
    group_name: String,
    description: String,
    vpc_id: Option<String>,
    #[serde(default)]
    tag_specifications: Vec<TagSpecification>,
}

pub(super) async fn create(control: &Control, req: CreateSecurityGroup) -> Result<Value, ApiError> {
    let tags = specified_tags(req.tag_specifications, "security-group")?;
    let group = control.create_security_group(&req.group_name, &req.description, req.vpc_id.as_deref(), tags).await?;
    let mut v = json!({"GroupId": group.id, "SecurityGroupArn": group_arn(control, &group.id)});
    if !group.tags.is_empty() {
        v["Tags"] = tag_list(&group.tags);
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeSecurityGroups {
    #[serde(default)]
    group_ids: Vec<String>,
    #[serde(default)]
    group_names: Vec<String>,
    #[serde(default)]
    filters: Vec<WireFilter>,
}

pub(super) async fn describe(control: &Control, req: DescribeSecurityGroups) -> Result<Value, ApiError> {
    let groups = control.describe_security_groups(&req.group_ids, &req.group_names, &filters(req.filters)?).await?;
    Ok(json!({ "SecurityGroups": groups.iter().map(|g| group_json(control, g)).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GroupRef {
    group_id: Option<String>,
    group_name: Option<String>,
}

fn selector(group_id: Option<String>, group_name: Option<String>) -> Result<GroupSelector, ApiError> {
    match (group_id, group_name) {
        (Some(id), _) => Ok(GroupSelector::Id(id)),
        (None, Some(name)) => Ok(GroupSelector::Name(name)),
        (None, None) => {
            Err(ApiError::new("MissingParameter", "The request must contain the parameter GroupId or GroupName"))
        }
    }
}

pub(super) async fn delete(control: &Control, req: GroupRef) -> Result<Value, ApiError> {
    let group = control.delete_security_group(&selector(req.group_id, req.group_name)?).await?;
    Ok(json!({"Return": true, "GroupId": group.id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpRange {
    cidr_ip: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupPair {
    group_id: Option<String>,
    group_name: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpPermission {
    ip_protocol: Option<String>,
    from_port: Option<i32>,
    to_port: Option<i32>,
    #[serde(default)]
    ip_ranges: Vec<IpRange>,
    #[serde(default)]
    user_id_group_pairs: Vec<GroupPair>,
    #[serde(default)]
    ipv6_ranges: Vec<Value>,
    #[serde(default)]
    prefix_list_ids: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ChangeRules {
    group_id: Option<String>,
    group_name: Option<String>,
    #[serde(default)]
    ip_permissions: Vec<IpPermission>,
    // The legacy flat form of one rule.
    ip_protocol: Option<String>,
    from_port: Option<i32>,
    to_port: Option<i32>,
    cidr_ip: Option<String>,
    source_security_group_name: Option<String>,
    #[serde(default)]
    security_group_rule_ids: Vec<String>,
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidPermission.Malformed", message)
}

/// Every rule the request describes, one per peer.
fn rule_specs(req: &ChangeRules) -> Result<Vec<RuleSpec>, ApiError> {
    let flat = req.ip_protocol.is_some()
        || req.from_port.is_some()
        || req.to_port.is_some()
        || req.cidr_ip.is_some()
        || req.source_security_group_name.is_some();
    if flat && !req.ip_permissions.is_empty() {
        return Err(ApiError::new(
            "InvalidParameterCombination",
            "Give rules either as IpPermissions or as IpProtocol/FromPort/ToPort/CidrIp/SourceSecurityGroupName, not both.",
        ));
    }
    let mut specs = Vec::new();
    if flat {
        let peer = match (&req.cidr_ip, &req.source_security_group_name) {
            (Some(cidr), None) => RulePeerSpec::Cidr(cidr.clone()),
            (None, Some(name)) => RulePeerSpec::GroupName(name.clone()),
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    "InvalidParameterCombination",
                    "A rule allows either a CIDR range (CidrIp) or a security group (SourceSecurityGroupName), not both.",
                ));
            }
            (None, None) => return Err(malformed("The rule names no peer: give CidrIp or SourceSecurityGroupName.")),
        };
        // A source group without a protocol allows everything from it.
        let protocol = req.ip_protocol.clone().unwrap_or_else(|| "-1".into());
        specs.push(RuleSpec { protocol, from_port: req.from_port, to_port: req.to_port, peer, description: None });
    }
    for (i, p) in req.ip_permissions.iter().enumerate() {
        let n = i + 1;
        if !p.ipv6_ranges.is_empty() || !p.prefix_list_ids.is_empty() {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!(
                    "IpPermissions.{n}: Flotilla security groups take IPv4 ranges and groups only, not IPv6 ranges or prefix lists."
                ),
            ));
        }
        let protocol = p.ip_protocol.clone().ok_or_else(|| {
            ApiError::new(
                "MissingParameter",
                format!("The request must contain the parameter IpPermissions.{n}.IpProtocol"),
            )
        })?;
        let before = specs.len();
        for range in &p.ip_ranges {
            let cidr = range
                .cidr_ip
                .clone()
                .ok_or_else(|| malformed(format!("IpPermissions.{n}.IpRanges: CidrIp is missing.")))?;
            specs.push(RuleSpec {
                protocol: protocol.clone(),
                from_port: p.from_port,
                to_port: p.to_port,
                peer: RulePeerSpec::Cidr(cidr),
                description: range.description.clone(),
            });
        }
        for pair in &p.user_id_group_pairs {
            let peer = match (&pair.group_id, &pair.group_name) {
                (Some(id), _) => RulePeerSpec::GroupId(id.clone()),
                (None, Some(name)) => RulePeerSpec::GroupName(name.clone()),
                (None, None) => return Err(malformed(format!("IpPermissions.{n}.Groups: GroupId is missing."))),
            };
            specs.push(RuleSpec {
                protocol: protocol.clone(),
                from_port: p.from_port,
                to_port: p.to_port,
                peer,
                description: pair.description.clone(),
            });
        }
        if specs.len() == before {
            return Err(malformed(format!(
                "IpPermissions.{n} names no peer: give IpRanges (CidrIp) or Groups (GroupId)."
            )));
        }
    }
    Ok(specs)
}

fn direction(egress: bool) -> RuleDirection {
    if egress { RuleDirection::Egress } else { RuleDirection::Ingress }
}

pub(super) async fn authorize(control: &Control, req: ChangeRules, egress: bool) -> Result<Value, ApiError> {
    let specs = rule_specs(&req)?;
    let group = selector(req.group_id, req.group_name)?;
    let change = control.authorize_security_group(&group, direction(egress), &specs).await?;
    let rules: Vec<Value> = change.rules.iter().map(|r| rule_json(control, &change.group.id, egress, r)).collect();
    Ok(json!({"Return": true, "SecurityGroupRules": rules}))
}

pub(super) async fn revoke(control: &Control, req: ChangeRules, egress: bool) -> Result<Value, ApiError> {
    let specs = rule_specs(&req)?;
    let group = selector(req.group_id.clone(), req.group_name.clone())?;
    let change = control.revoke_security_group(&group, direction(egress), &specs, &req.security_group_rule_ids).await?;
    let revoked: Vec<Value> = change.rules.iter().map(|r| revoked_json(&change.group.id, egress, r)).collect();
    let mut v = json!({"Return": true, "RevokedSecurityGroupRules": revoked});
    if !change.unknown.is_empty() {
        v["UnknownIpPermissions"] = unknown_json(&change.unknown);
    }
    Ok(v)
}
