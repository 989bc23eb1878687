//! Elastic Load Balancing v2 over the Query protocol. The protocol layer (`crate::query`) reads
//! the form into JSON keyed by the model's member names and writes the answer's JSON as XML;
//! here each action is parsed into one closed [`ElbRequest`], run on `flotilla-elb`, and
//! answered with JSON of its output shape.
//!
//! Served: Create/Describe/DeleteLoadBalancer(s), Describe/ModifyLoadBalancerAttributes,
//! Create/Modify/Describe/DeleteTargetGroup(s), Describe/ModifyTargetGroupAttributes,
//! Create/Modify/Describe/DeleteListener(s), Create/Modify/Describe/DeleteRule(s),
//! SetRulePriorities, Register/DeregisterTargets, DescribeTargetHealth, Add/Remove/DescribeTags.

mod error;
mod output;
#[cfg(test)]
mod tests;
mod wire;

use flotilla_elb::{
    Elb, ListenerChange, ListenerInput, LoadBalancerInput, RuleChange, RuleInput, SubnetMapping, TargetGroupFilter,
    TargetGroupInput,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use self::wire::{
    WireAction, WireAttribute, WireCertificate, WireCondition, WireHealthCheck, WireTag, WireTarget, unsupported,
    validation,
};
use crate::error::ApiError;
use crate::server::ApiState;

/// Runs one ELBv2 action; its answer is JSON of the action's output shape.
pub(crate) async fn execute(state: &ApiState, action: &str, input: Value) -> Result<Value, ApiError> {
    let Some(elb) = state.elb.as_deref() else {
        return Err(ApiError::new(
            "ServiceUnavailable",
            "Elastic Load Balancing is not served here: this server runs without load balancing.",
        ));
    };
    run(elb, ElbRequest::parse(action, input)?).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateLoadBalancer {
    name: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    subnet_mappings: Vec<WireSubnetMapping>,
    security_groups: Option<Vec<String>>,
    scheme: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    ip_address_type: Option<String>,
    customer_owned_ipv4_pool: Option<Value>,
    ipam_pools: Option<Value>,
}

#[derive(Deserialize)]
struct WireSubnetMapping {
    #[serde(rename = "SubnetId")]
    subnet_id: String,
    #[serde(rename = "AllocationId")]
    allocation_id: Option<String>,
    #[serde(rename = "PrivateIPv4Address")]
    private_ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    ipv6_address: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Paging {
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeLoadBalancers {
    #[serde(default)]
    load_balancer_arns: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(flatten)]
    paging: Paging,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoadBalancerRef {
    load_balancer_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyLoadBalancerAttributes {
    load_balancer_arn: String,
    attributes: Vec<WireAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateTargetGroup {
    name: String,
    protocol: Option<String>,
    protocol_version: Option<String>,
    port: Option<i64>,
    vpc_id: Option<String>,
    target_type: Option<String>,
    ip_address_type: Option<String>,
    #[serde(flatten)]
    health_check: WireHealthCheck,
    #[serde(default)]
    tags: Vec<WireTag>,
    target_control_port: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyTargetGroup {
    target_group_arn: String,
    #[serde(flatten)]
    health_check: WireHealthCheck,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeTargetGroups {
    load_balancer_arn: Option<String>,
    #[serde(default)]
    target_group_arns: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(flatten)]
    paging: Paging,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetGroupRef {
    target_group_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyTargetGroupAttributes {
    target_group_arn: String,
    attributes: Vec<WireAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateListener {
    load_balancer_arn: String,
    protocol: Option<String>,
    port: Option<i64>,
    ssl_policy: Option<String>,
    #[serde(default)]
    certificates: Vec<WireCertificate>,
    #[serde(default)]
    default_actions: Vec<WireAction>,
    #[serde(default)]
    alpn_policy: Vec<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    mutual_authentication: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyListener {
    listener_arn: String,
    protocol: Option<String>,
    port: Option<i64>,
    ssl_policy: Option<String>,
    certificates: Option<Vec<WireCertificate>>,
    default_actions: Option<Vec<WireAction>>,
    alpn_policy: Option<Vec<String>>,
    mutual_authentication: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeListeners {
    load_balancer_arn: Option<String>,
    #[serde(default)]
    listener_arns: Vec<String>,
    #[serde(flatten)]
    paging: Paging,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListenerRef {
    listener_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRule {
    listener_arn: String,
    #[serde(default)]
    conditions: Vec<WireCondition>,
    priority: i64,
    #[serde(default)]
    actions: Vec<WireAction>,
    #[serde(default)]
    tags: Vec<WireTag>,
    transforms: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyRule {
    rule_arn: String,
    conditions: Option<Vec<WireCondition>>,
    actions: Option<Vec<WireAction>>,
    transforms: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeRules {
    listener_arn: Option<String>,
    #[serde(default)]
    rule_arns: Vec<String>,
    #[serde(flatten)]
    paging: Paging,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuleRef {
    rule_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetRulePriorities {
    rule_priorities: Vec<RulePriorityPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RulePriorityPair {
    rule_arn: String,
    priority: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Targets {
    target_group_arn: String,
    targets: Vec<WireTarget>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeTargetHealth {
    target_group_arn: String,
    targets: Option<Vec<WireTarget>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddTags {
    resource_arns: Vec<String>,
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoveTags {
    resource_arns: Vec<String>,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeTags {
    resource_arns: Vec<String>,
}

/// Every ELBv2 action Flotilla serves, each with its typed input.
enum ElbRequest {
    CreateLoadBalancer(CreateLoadBalancer),
    DescribeLoadBalancers(DescribeLoadBalancers),
    DeleteLoadBalancer(LoadBalancerRef),
    DescribeLoadBalancerAttributes(LoadBalancerRef),
    ModifyLoadBalancerAttributes(ModifyLoadBalancerAttributes),
    CreateTargetGroup(CreateTargetGroup),
    ModifyTargetGroup(ModifyTargetGroup),
    DescribeTargetGroups(DescribeTargetGroups),
    DeleteTargetGroup(TargetGroupRef),
    DescribeTargetGroupAttributes(TargetGroupRef),
    ModifyTargetGroupAttributes(ModifyTargetGroupAttributes),
    CreateListener(CreateListener),
    ModifyListener(ModifyListener),
    DescribeListeners(DescribeListeners),
    DeleteListener(ListenerRef),
    CreateRule(CreateRule),
    ModifyRule(ModifyRule),
    DescribeRules(DescribeRules),
    DeleteRule(RuleRef),
    SetRulePriorities(SetRulePriorities),
    RegisterTargets(Targets),
    DeregisterTargets(Targets),
    DescribeTargetHealth(DescribeTargetHealth),
    AddTags(AddTags),
    RemoveTags(RemoveTags),
    DescribeTags(DescribeTags),
}

impl ElbRequest {
    /// Reads one action's model-checked input into its variant; an action Flotilla does not
    /// serve is refused here, before anything runs.
    fn parse(action: &str, input: Value) -> Result<ElbRequest, ApiError> {
        use ElbRequest as R;
        Ok(match action {
            "CreateLoadBalancer" => R::CreateLoadBalancer(parse(input)?),
            "DescribeLoadBalancers" => R::DescribeLoadBalancers(parse(input)?),
            "DeleteLoadBalancer" => R::DeleteLoadBalancer(parse(input)?),
            "DescribeLoadBalancerAttributes" => R::DescribeLoadBalancerAttributes(parse(input)?),
            "ModifyLoadBalancerAttributes" => R::ModifyLoadBalancerAttributes(parse(input)?),
            "CreateTargetGroup" => R::CreateTargetGroup(parse(input)?),
            "ModifyTargetGroup" => R::ModifyTargetGroup(parse(input)?),
            "DescribeTargetGroups" => R::DescribeTargetGroups(parse(input)?),
            "DeleteTargetGroup" => R::DeleteTargetGroup(parse(input)?),
            "DescribeTargetGroupAttributes" => R::DescribeTargetGroupAttributes(parse(input)?),
            "ModifyTargetGroupAttributes" => R::ModifyTargetGroupAttributes(parse(input)?),
            "CreateListener" => R::CreateListener(parse(input)?),
            "ModifyListener" => R::ModifyListener(parse(input)?),
            "DescribeListeners" => R::DescribeListeners(parse(input)?),
            "DeleteListener" => R::DeleteListener(parse(input)?),
            "CreateRule" => R::CreateRule(parse(input)?),
            "ModifyRule" => R::ModifyRule(parse(input)?),
            "DescribeRules" => R::DescribeRules(parse(input)?),
            "DeleteRule" => R::DeleteRule(parse(input)?),
            "SetRulePriorities" => R::SetRulePriorities(parse(input)?),
            "RegisterTargets" => R::RegisterTargets(parse(input)?),
            "DeregisterTargets" => R::DeregisterTargets(parse(input)?),
            "DescribeTargetHealth" => R::DescribeTargetHealth(parse(input)?),
            "AddTags" => R::AddTags(parse(input)?),
            "RemoveTags" => R::RemoveTags(parse(input)?),
            "DescribeTags" => R::DescribeTags(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "InvalidAction",
                    format!("The action {other} is not valid for this web service: Flotilla does not implement it."),
                ));
            }
        })
    }
}

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| validation(format!("Cannot read the request: {e}")))
}

/// A page's items under `member`, with `NextMarker` when there is more.
fn page(member: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = json!({ member: items });
    if let Some(next) = next {
        out["NextMarker"] = json!(next);
    }
    out
}

async fn run(elb: &Elb, request: ElbRequest) -> Result<Value, ApiError> {
    use ElbRequest as R;
    Ok(match request {
        R::CreateLoadBalancer(req) => {
            unsupported(&req.customer_owned_ipv4_pool, "CustomerOwnedIpv4Pool")?;
            unsupported(&req.ipam_pools, "IpamPools")?;
            for m in &req.subnet_mappings {
                unsupported(&m.ipv6_address, "IPv6Address")?;
            }
            let input = LoadBalancerInput {
                name: req.name,
                kind: req.kind,
                scheme: req.scheme,
                subnets: req.subnets,
                subnet_mappings: req
                    .subnet_mappings
                    .into_iter()
                    .map(|m| SubnetMapping {
                        subnet_id: m.subnet_id,
                        allocation_id: m.allocation_id,
                        private_ipv4_address: m.private_ipv4_address,
                    })
                    .collect(),
                security_groups: req.security_groups,
                ip_address_type: req.ip_address_type,
                tags: wire::tags(req.tags),
            };
            json!({"LoadBalancers": [output::load_balancer(&elb.create_load_balancer(input).await?)]})
        }
        R::DescribeLoadBalancers(req) => {
            let p = &req.paging;
            let found = elb
                .describe_load_balancers(&req.load_balancer_arns, &req.names, p.page_size, p.marker.as_deref())
                .await?;
            page("LoadBalancers", found.items.iter().map(output::load_balancer).collect(), found.next_token)
        }
        R::DeleteLoadBalancer(req) => {
            elb.delete_load_balancer(&req.load_balancer_arn).await?;
            json!({})
        }
        R::DescribeLoadBalancerAttributes(req) => {
            output::attributes(&elb.load_balancer_attributes(&req.load_balancer_arn).await?)
        }
        R::ModifyLoadBalancerAttributes(req) => {
            let changes = wire::attributes(req.attributes)?;
            output::attributes(&elb.modify_load_balancer_attributes(&req.load_balancer_arn, &changes).await?)
        }
        R::CreateTargetGroup(req) => {
            unsupported(&req.target_control_port, "TargetControlPort")?;
            let input = TargetGroupInput {
                name: req.name,
                protocol: req.protocol,
                protocol_version: req.protocol_version,
                port: req.port,
                vpc_id: req.vpc_id,
                target_type: req.target_type,
                ip_address_type: req.ip_address_type,
                health_check: req.health_check.into_input()?,
                tags: wire::tags(req.tags),
            };
            json!({"TargetGroups": [output::target_group(&elb.create_target_group(input).await?)]})
        }
        R::ModifyTargetGroup(req) => {
            let change = req.health_check.into_input()?;
            json!({"TargetGroups": [output::target_group(&elb.modify_target_group(&req.target_group_arn, &change).await?)]})
        }
        R::DescribeTargetGroups(req) => {
            let filter = TargetGroupFilter {
                arns: req.target_group_arns,
                names: req.names,
                load_balancer_arn: req.load_balancer_arn,
            };
            let p = &req.paging;
            let found = elb.describe_target_groups(&filter, p.page_size, p.marker.as_deref()).await?;
            page("TargetGroups", found.items.iter().map(output::target_group).collect(), found.next_token)
        }
        R::DeleteTargetGroup(req) => {
            elb.delete_target_group(&req.target_group_arn).await?;
            json!({})
        }
        R::DescribeTargetGroupAttributes(req) => {
            output::attributes(&elb.target_group_attributes(&req.target_group_arn).await?)
        }
        R::ModifyTargetGroupAttributes(req) => {
            let changes = wire::attributes(req.attributes)?;
            output::attributes(&elb.modify_target_group_attributes(&req.target_group_arn, &changes).await?)
        }
        R::CreateListener(req) => {
            unsupported(&req.mutual_authentication, "MutualAuthentication")?;
            let input = ListenerInput {
                load_balancer_arn: req.load_balancer_arn,
                protocol: req.protocol,
                port: req.port,
                ssl_policy: req.ssl_policy,
                certificates: wire::certificates(req.certificates)?,
                default_actions: wire::actions(req.default_actions),
                alpn_policy: req.alpn_policy,
                tags: wire::tags(req.tags),
            };
            json!({"Listeners": [output::listener(&elb.create_listener(input).await?)]})
        }
        R::ModifyListener(req) => {
            unsupported(&req.mutual_authentication, "MutualAuthentication")?;
            let change = ListenerChange {
                protocol: req.protocol,
                port: req.port,
                ssl_policy: req.ssl_policy,
                certificates: req.certificates.map(wire::certificates).transpose()?,
                default_actions: req.default_actions.map(wire::actions),
                alpn_policy: req.alpn_policy,
            };
            json!({"Listeners": [output::listener(&elb.modify_listener(&req.listener_arn, &change).await?)]})
        }
        R::DescribeListeners(req) => {
            let p = &req.paging;
            let found = elb
                .describe_listeners(
                    req.load_balancer_arn.as_deref(),
                    &req.listener_arns,
                    p.page_size,
                    p.marker.as_deref(),
                )
                .await?;
            page("Listeners", found.items.iter().map(output::listener).collect(), found.next_token)
        }
        R::DeleteListener(req) => {
            elb.delete_listener(&req.listener_arn).await?;
            json!({})
        }
        R::CreateRule(req) => {
            unsupported(&req.transforms, "Transforms")?;
            let input = RuleInput {
                listener_arn: req.listener_arn,
                priority: req.priority,
                conditions: wire::conditions(req.conditions)?,
                actions: wire::actions(req.actions),
                tags: wire::tags(req.tags),
            };
            json!({"Rules": [output::rule(&elb.create_rule(input).await?)]})
        }
        R::ModifyRule(req) => {
            unsupported(&req.transforms, "Transforms")?;
            let change = RuleChange {
                conditions: req.conditions.map(wire::conditions).transpose()?,
                actions: req.actions.map(wire::actions),
            };
            json!({"Rules": [output::rule(&elb.modify_rule(&req.rule_arn, &change).await?)]})
        }
        R::DescribeRules(req) => {
            let p = &req.paging;
            let found = elb
                .describe_rules(req.listener_arn.as_deref(), &req.rule_arns, p.page_size, p.marker.as_deref())
                .await?;
            page("Rules", found.items.iter().map(output::rule).collect(), found.next_token)
        }
        R::DeleteRule(req) => {
            elb.delete_rule(&req.rule_arn).await?;
            json!({})
        }
        R::SetRulePriorities(req) => {
            let changes: Vec<(String, i64)> =
                req.rule_priorities.into_iter().map(|p| (p.rule_arn, p.priority)).collect();
            let rules = elb.set_rule_priorities(&changes).await?;
            json!({"Rules": rules.iter().map(output::rule).collect::<Vec<_>>()})
        }
        R::RegisterTargets(req) => {
            elb.register_targets(&req.target_group_arn, &wire::targets(req.targets)?).await?;
            json!({})
        }
        R::DeregisterTargets(req) => {
            elb.deregister_targets(&req.target_group_arn, &wire::targets(req.targets)?).await?;
            json!({})
        }
        R::DescribeTargetHealth(req) => {
            let named = req.targets.map(wire::targets).transpose()?;
            let health = elb.target_health(&req.target_group_arn, named.as_deref()).await?;
            json!({"TargetHealthDescriptions": health.iter().map(output::target_health).collect::<Vec<_>>()})
        }
        R::AddTags(req) => {
            elb.add_tags(&req.resource_arns, &wire::tags(req.tags)).await?;
            json!({})
        }
        R::RemoveTags(req) => {
            elb.remove_tags(&req.resource_arns, &req.tag_keys).await?;
            json!({})
        }
        R::DescribeTags(req) => {
            let described = elb.describe_tags(&req.resource_arns).await?;
            let descriptions: Vec<Value> =
                described.iter().map(|(arn, tags)| json!({"ResourceArn": arn, "Tags": output::tags(tags)})).collect();
            json!({"TagDescriptions": descriptions})
        }
    })
}
