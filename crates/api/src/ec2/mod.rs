//! EC2's VPC networking subset over the Query protocol: `POST /` with a form body
//! (`Action=CreateVpc&Version=2016-11-15&...`, no `X-Amz-Target`), SigV4 with signing name
//! `ec2`, XML responses and EC2's error envelope.
//!
//! Requests are read (`query.rs`) and responses written (`xml.rs`) by walking the vendored
//! model (`model/ec2.json`), so member names, list encodings and element names are botocore's.
//! Handlers see the input as JSON keyed by the model's member names and answer JSON of the
//! output shape; `xml.rs` refuses anything the shape does not allow.
//!
//! Served: CreateVpc, DescribeVpcs, DeleteVpc, CreateSubnet, DescribeSubnets, DeleteSubnet,
//! CreateSecurityGroup, DescribeSecurityGroups, DeleteSecurityGroup,
//! Authorize/RevokeSecurityGroupIngress/Egress, DescribeNetworkInterfaces, CreateTags,
//! DeleteTags, DescribeAvailabilityZones.

mod error;
mod network_interfaces;
mod query;
mod security_groups;
#[cfg(test)]
mod tests;
mod vpcs;
mod xml;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use flotilla_control::{Control, ResourceFilter, Tag};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::error::{INTERNAL_ERROR, ec2_code, status};
use crate::error::ApiError;
use crate::query::model::EC2 as MODEL;
use crate::server::ApiState;

/// Serves one EC2 request (`crate::query::serve` routes it here).
pub async fn serve(state: &ApiState, uri: &Uri, headers: &HeaderMap, body: Body) -> Response {
    let request_id = state.next_request_id();
    let id = request_id.as_str();
    let work = |body: Bytes| async move { handle(state, uri, headers, &body, id).await };
    crate::query::serve_xml(headers, body, &request_id, INTERNAL_ERROR, "EC2", "text/xml;charset=UTF-8", work, |e| {
        let e = ec2_code(e);
        tracing::debug!(code = e.code, message = %e.message, "EC2 request refused");
        (status(&e), xml::error(e.code, &e.message, &request_id))
    })
    .await
}

async fn handle(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, ApiError> {
    let caller = crate::server::authenticate(state, uri, headers, body, "IncompleteSignature", "ec2").await?;

    let params = query::parse_form(body)?;
    let action = params
        .get("Action")
        .ok_or_else(|| ApiError::new("MissingAction", "The request must contain the parameter Action"))?
        .clone();
    let input = query::read_input(&MODEL, &action, &params).ok_or_else(|| {
        ApiError::new("InvalidAction", format!("The action {action} is not valid for this web service."))
    })??;
    tracing::debug!(operation = %action, caller = %caller.access_key_id, "request");
    // Before DryRun: EC2 answers a dry run with whether the caller may do it.
    crate::authz::authorize(state, &caller, "ec2", &action, &input, headers).await?;
    if input.get("DryRun") == Some(&Value::Bool(true)) {
        return Err(ApiError::new("DryRunOperation", "Request would have succeeded, but DryRun flag is set."));
    }
    let answer = execute(&state.control, Ec2Request::parse(&action, input)?).await?;
    xml::response(&MODEL, &action, request_id, &answer).map_err(|problem| {
        tracing::error!(operation = %action, problem, "EC2 answer does not fit the model");
        ApiError::new(INTERNAL_ERROR, "The server failed to write its answer; it has been logged.")
    })
}

/// Every EC2 action Flotilla serves, each with its typed input.
enum Ec2Request {
    CreateVpc(vpcs::CreateVpc),
    DescribeVpcs(vpcs::DescribeVpcs),
    DeleteVpc(vpcs::VpcRef),
    CreateSubnet(vpcs::CreateSubnet),
    DescribeSubnets(vpcs::DescribeSubnets),
    DeleteSubnet(vpcs::SubnetRef),
    DescribeAvailabilityZones(vpcs::DescribeAvailabilityZones),
    CreateTags(vpcs::CreateTags),
    DeleteTags(vpcs::DeleteTags),
    CreateSecurityGroup(security_groups::CreateSecurityGroup),
    DescribeSecurityGroups(security_groups::DescribeSecurityGroups),
    DeleteSecurityGroup(security_groups::GroupRef),
    AuthorizeSecurityGroupIngress(security_groups::ChangeRules),
    AuthorizeSecurityGroupEgress(security_groups::ChangeRules),
    RevokeSecurityGroupIngress(security_groups::ChangeRules),
    RevokeSecurityGroupEgress(security_groups::ChangeRules),
    DescribeNetworkInterfaces(network_interfaces::DescribeNetworkInterfaces),
}

impl Ec2Request {
    /// Reads one action's model-checked input into its variant; an action Flotilla does not
    /// serve is refused here, before anything runs.
    fn parse(action: &str, input: Value) -> Result<Ec2Request, ApiError> {
        use Ec2Request as R;
        Ok(match action {
            "CreateVpc" => R::CreateVpc(parse(input)?),
            "DescribeVpcs" => R::DescribeVpcs(parse(input)?),
            "DeleteVpc" => R::DeleteVpc(parse(input)?),
            "CreateSubnet" => R::CreateSubnet(parse(input)?),
            "DescribeSubnets" => R::DescribeSubnets(parse(input)?),
            "DeleteSubnet" => R::DeleteSubnet(parse(input)?),
            "DescribeAvailabilityZones" => R::DescribeAvailabilityZones(parse(input)?),
            "CreateTags" => R::CreateTags(parse(input)?),
            "DeleteTags" => R::DeleteTags(parse(input)?),
            "CreateSecurityGroup" => R::CreateSecurityGroup(parse(input)?),
            "DescribeSecurityGroups" => R::DescribeSecurityGroups(parse(input)?),
            "DeleteSecurityGroup" => R::DeleteSecurityGroup(parse(input)?),
            "AuthorizeSecurityGroupIngress" => R::AuthorizeSecurityGroupIngress(parse(input)?),
            "AuthorizeSecurityGroupEgress" => R::AuthorizeSecurityGroupEgress(parse(input)?),
            "RevokeSecurityGroupIngress" => R::RevokeSecurityGroupIngress(parse(input)?),
            "RevokeSecurityGroupEgress" => R::RevokeSecurityGroupEgress(parse(input)?),
            "DescribeNetworkInterfaces" => R::DescribeNetworkInterfaces(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "InvalidAction",
                    format!("The action {other} is not valid for this web service: Flotilla does not implement it."),
                ));
            }
        })
    }
}

/// Runs one request; its answer is JSON of the action's output shape.
async fn execute(control: &Control, request: Ec2Request) -> Result<Value, ApiError> {
    use Ec2Request as R;
    match request {
        R::CreateVpc(req) => vpcs::create_vpc(control, req).await,
        R::DescribeVpcs(req) => vpcs::describe_vpcs(control, req).await,
        R::DeleteVpc(req) => vpcs::delete_vpc(control, req).await,
        R::CreateSubnet(req) => vpcs::create_subnet(control, req).await,
        R::DescribeSubnets(req) => vpcs::describe_subnets(control, req).await,
        R::DeleteSubnet(req) => vpcs::delete_subnet(control, req).await,
        R::DescribeAvailabilityZones(req) => vpcs::describe_availability_zones(control, req),
        R::CreateTags(req) => vpcs::create_tags(control, req).await,
        R::DeleteTags(req) => vpcs::delete_tags(control, req).await,
        R::CreateSecurityGroup(req) => security_groups::create(control, req).await,
        R::DescribeSecurityGroups(req) => security_groups::describe(control, req).await,
        R::DeleteSecurityGroup(req) => security_groups::delete(control, req).await,
        R::AuthorizeSecurityGroupIngress(req) => security_groups::authorize(control, req, false).await,
        R::AuthorizeSecurityGroupEgress(req) => security_groups::authorize(control, req, true).await,
        R::RevokeSecurityGroupIngress(req) => security_groups::revoke(control, req, false).await,
        R::RevokeSecurityGroupEgress(req) => security_groups::revoke(control, req, true).await,
        R::DescribeNetworkInterfaces(req) => network_interfaces::describe(control, req).await,
    }
}

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input)
        .map_err(|e| ApiError::new("InvalidParameterValue", format!("Cannot read the request: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireFilter {
    name: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

fn filters(wire: Vec<WireFilter>) -> Result<Vec<ResourceFilter>, ApiError> {
    wire.into_iter()
        .map(|f| match f.name {
            Some(name) => Ok(ResourceFilter { name, values: f.values }),
            None => Err(ApiError::new("InvalidParameterValue", "The filter 'null' is invalid")),
        })
        .collect()
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagSpecification {
    resource_type: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

fn tags(wire: Vec<WireTag>) -> Result<Vec<Tag>, ApiError> {
    wire.into_iter()
        .map(|t| match t.key {
            Some(key) => Ok(Tag { key, value: t.value.unwrap_or_default() }),
            None => Err(ApiError::new("InvalidParameterValue", "Tag keys must not be empty.")),
        })
        .collect()
}

/// The tags of the specifications for `resource_type`; a specification for another type of
/// resource is refused, as EC2 does.
fn specified_tags(specs: Vec<TagSpecification>, resource_type: &str) -> Result<Vec<Tag>, ApiError> {
    let mut out = Vec::new();
    for spec in specs {
        match spec.resource_type.as_deref() {
            Some(t) if t == resource_type => out.extend(tags(spec.tags)?),
            Some(other) => {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!("'{other}' is not a valid taggable resource type for this operation."),
                ));
            }
            None => {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    "TagSpecification: ResourceType must be given with the tags.",
                ));
            }
        }
    }
    Ok(out)
}

fn tag_list(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|t| serde_json::json!({"Key": t.key, "Value": t.value})).collect())
}
