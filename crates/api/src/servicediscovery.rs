//! AWS Cloud Map (`Route53AutoNaming_v20170314`) operations: request members in, discovery
//! call, response shape out.
//!
//! Cloud Map's wire is PascalCase and its timestamps are epoch seconds. `DiscoverInstances` is
//! modelled with the `data-` host prefix: SDKs send it to `data-<endpoint host>`, which this
//! server accepts like any other host (the signature covers whatever host the client used).

use std::collections::BTreeMap;

use flotilla_discovery::{
    Discovered, DiscoveryError, HealthFilter, HealthStatus, Instance, NameMatch, Namespace, NamespaceQuery,
    NamespaceType, NewPrivateDnsNamespace, NewService, Operation, OperationQuery, OperationStatus, OperationType,
    RecordType, RoutingPolicy, Service, Tag,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

/// What `flotilla up` needs to run service discovery, without depending on the crate itself.
pub use flotilla_discovery::Discovery;
pub use flotilla_discovery::dns::{DnsError, DnsServer, Upstreams};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidInput", message)
}

fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTag {
    key: String,
    value: String,
}

fn tags_in(tags: Vec<WireTag>) -> Vec<Tag> {
    tags.into_iter().map(|t| Tag { key: t.key, value: t.value }).collect()
}

fn tags_out(tags: &[Tag]) -> Value {
    tags.iter().map(|t| json!({"Key": t.key, "Value": t.value})).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Filter {
    name: String,
    values: Vec<String>,
    condition: Option<String>,
}

impl Filter {
    /// The filter's values under the conditions `allowed` (the first is the default).
    fn values<'a>(&'a self, allowed: &[&'a str]) -> Result<(&'a str, &'a [String]), ApiError> {
        let condition = self.condition.as_deref().unwrap_or(allowed[0]);
        if !allowed.contains(&condition) {
            return Err(invalid(format!(
                "Filter {} supports the conditions {}, not {condition}.",
                self.name,
                allowed.join(", ")
            )));
        }
        let count_ok = match condition {
            "IN" => !self.values.is_empty(),
            "BETWEEN" => self.values.len() == 2,
            _ => self.values.len() == 1,
        };
        if !count_ok {
            return Err(invalid(format!("Filter {} has the wrong number of values for {condition}.", self.name)));
        }
        Ok((condition, &self.values))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Listing {
    #[serde(default)]
    filters: Vec<Filter>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SoaIn {
    #[serde(rename = "TTL")]
    ttl: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DnsPropertiesIn {
    #[serde(rename = "SOA")]
    soa: SoaIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NamespacePropertiesIn {
    dns_properties: DnsPropertiesIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreatePrivateDnsNamespace {
    name: String,
    vpc: String,
    creator_request_id: Option<String>,
    description: Option<String>,
    properties: Option<NamespacePropertiesIn>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ById {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DnsRecordIn {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "TTL")]
    ttl: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DnsConfigIn {
    namespace_id: Option<String>,
    routing_policy: Option<String>,
    dns_records: Vec<DnsRecordIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CustomHealthIn {
    failure_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateService {
    name: String,
    namespace_id: Option<String>,
    creator_request_id: Option<String>,
    description: Option<String>,
    dns_config: Option<DnsConfigIn>,
    health_check_config: Option<Value>,
    health_check_custom_config: Option<CustomHealthIn>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterInstance {
    service_id: String,
    instance_id: String,
    attributes: BTreeMap<String, String>,
    creator_request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InstanceRef {
    service_id: String,
    instance_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListInstances {
    service_id: String,
    max_results: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DiscoverInstances {
    namespace_name: String,
    service_name: String,
    #[serde(default)]
    query_parameters: BTreeMap<String, String>,
    #[serde(default)]
    optional_parameters: BTreeMap<String, String>,
    health_status: Option<String>,
    max_results: Option<usize>,
    owner_account: Option<String>,
}

impl DiscoverInstances {
    /// Namespaces shared from other accounts do not exist here.
    fn check_owner(&self, sd: &Discovery) -> Result<(), ApiError> {
        match &self.owner_account {
            Some(a) if a != sd.account() => {
                Err(ApiError::from(DiscoveryError::NamespaceNotFound { id: self.namespace_name.clone() }))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetOperation {
    operation_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateHealth {
    service_id: String,
    instance_id: String,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthStatuses {
    service_id: String,
    instances: Option<Vec<String>>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagResource {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

fn namespace_json(sd: &Discovery, ns: &Namespace, full: bool) -> Value {
    let mut v = json!({
        "Id": ns.id,
        "Arn": ns.arn,
        "Name": ns.name,
        "Type": ns.kind.as_str(),
        "Description": ns.description,
        "ServiceCount": ns.service_count,
        "Properties": {
            "DnsProperties": {"HostedZoneId": ns.hosted_zone_id, "SOA": {"TTL": ns.soa_ttl}},
            "HttpProperties": {"HttpName": ns.name},
        },
        "CreateDate": seconds(ns.created_millis),
        "ResourceOwner": sd.account(),
    });
    if full {
        v["CreatorRequestId"] = json!(ns.creator_request_id);
    }
    v
}

fn service_json(sd: &Discovery, s: &Service, full: bool) -> Value {
    let dns = s.dns.as_ref().map(|d| {
        let records: Vec<Value> = d.records.iter().map(|r| json!({"Type": r.kind.as_str(), "TTL": r.ttl})).collect();
        json!({"NamespaceId": s.namespace_id, "RoutingPolicy": d.routing_policy.as_str(), "DnsRecords": records})
    });
    let custom = s.custom_health.map(|threshold| json!({"FailureThreshold": threshold}));
    let mut v = json!({
        "Id": s.id,
        "Arn": s.arn,
        "Name": s.name,
        "Type": s.kind.as_str(),
        "Description": s.description,
        "InstanceCount": s.instance_count,
        "DnsConfig": dns,
        "HealthCheckCustomConfig": custom,
        "CreateDate": seconds(s.created_millis),
        "CreatedByAccount": sd.account(),
        "ResourceOwner": sd.account(),
    });
    if full {
        v["NamespaceId"] = json!(s.namespace_id);
        v["CreatorRequestId"] = json!(s.creator_request_id);
    }
    v
}

fn instance_json(sd: &Discovery, i: &Instance, full: bool) -> Value {
    let mut v = json!({"Id": i.id, "Attributes": i.attributes, "CreatedByAccount": sd.account()});
    if full {
        v["CreatorRequestId"] = json!(i.creator_request_id);
    }
    v
}

fn operation_json(sd: &Discovery, op: &Operation) -> Value {
    let mut targets = Map::new();
    for (kind, id) in [("NAMESPACE", &op.namespace_id), ("SERVICE", &op.service_id), ("INSTANCE", &op.instance_id)] {
        if let Some(id) = id {
            targets.insert(kind.into(), json!(id));
        }
    }
    json!({
        "Id": op.id,
        "OwnerAccount": sd.account(),
        "Type": op.kind.as_str(),
        "Status": op.status.as_str(),
        "ErrorCode": op.error_code,
        "ErrorMessage": op.error_message,
        "CreateDate": seconds(op.created_millis),
        "UpdateDate": seconds(op.updated_millis),
        "Targets": targets,
    })
}

fn discovered_json(found: &Discovered) -> Value {
    let instances: Vec<Value> = found
        .instances
        .iter()
        .map(|i| {
            json!({
                "InstanceId": i.id,
                "NamespaceName": found.namespace_name,
                "ServiceName": found.service_name,
                "HealthStatus": i.health,
                "Attributes": i.attributes,
            })
        })
        .collect();
    json!({"Instances": instances, "InstancesRevision": found.revision})
}

fn namespace_query(req: Listing) -> Result<NamespaceQuery, ApiError> {
    let mut query = NamespaceQuery { max_results: req.max_results, next_token: req.next_token, ..Default::default() };
    for f in &req.filters {
        match f.name.as_str() {
            "TYPE" => {
                let (_, values) = f.values(&["EQ", "IN"])?;
                let mut types = Vec::new();
                for v in values {
                    match v.as_str() {
                        "DNS_PRIVATE" => types.push(NamespaceType::DnsPrivate),
                        // Served by AWS, not by Flotilla: a filter for them matches nothing.
                        "DNS_PUBLIC" | "HTTP" => {}
                        other => return Err(invalid(format!("'{other}' is not a namespace type."))),
                    }
                }
                query.types = Some(types);
            }
            "NAME" | "HTTP_NAME" => {
                let (condition, values) = f.values(&["EQ", "BEGINS_WITH"])?;
                let value = values[0].clone();
                query.name = Some(if condition == "EQ" { NameMatch::Eq(value) } else { NameMatch::BeginsWith(value) });
            }
            // Nothing is shared from other accounts.
            "RESOURCE_OWNER" => {
                if f.values(&["EQ"])?.1[0] == "OTHER_ACCOUNTS" {
                    query.types = Some(Vec::new());
                }
            }
            other => return Err(invalid(format!("'{other}' is not a namespace filter."))),
        }
    }
    Ok(query)
}

fn operation_query(req: Listing) -> Result<OperationQuery, ApiError> {
    let mut query = OperationQuery { max_results: req.max_results, next_token: req.next_token, ..Default::default() };
    for f in &req.filters {
        match f.name.as_str() {
            "NAMESPACE_ID" => query.namespace_ids = Some(f.values(&["EQ"])?.1.to_vec()),
            "SERVICE_ID" => query.service_ids = Some(f.values(&["EQ"])?.1.to_vec()),
            "STATUS" => {
                let statuses = f.values(&["EQ", "IN"])?.1.iter().map(|v| match v.as_str() {
                    "SUBMITTED" => Ok(OperationStatus::Submitted),
                    "PENDING" => Ok(OperationStatus::Pending),
                    "SUCCESS" => Ok(OperationStatus::Success),
                    "FAIL" => Ok(OperationStatus::Fail),
                    other => Err(invalid(format!("'{other}' is not an operation status."))),
                });
                query.statuses = Some(statuses.collect::<Result<_, _>>()?);
            }
            "TYPE" => {
                let types = f.values(&["EQ", "IN"])?.1.iter().filter_map(|v| match v.as_str() {
                    "CREATE_NAMESPACE" => Some(OperationType::CreateNamespace),
                    "DELETE_NAMESPACE" => Some(OperationType::DeleteNamespace),
                    "REGISTER_INSTANCE" => Some(OperationType::RegisterInstance),
                    "DEREGISTER_INSTANCE" => Some(OperationType::DeregisterInstance),
                    _ => None,
                });
                query.types = Some(types.collect());
            }
            "UPDATE_DATE" => {
                let values = f.values(&["BETWEEN"])?.1;
                let at = |v: &str| {
                    v.parse::<f64>()
                        .map(|s| (s * 1000.0) as i64)
                        .map_err(|_| invalid(format!("UPDATE_DATE value '{v}' is not epoch seconds.")))
                };
                query.updated_between = Some((at(&values[0])?, at(&values[1])?));
            }
            other => return Err(invalid(format!("'{other}' is not an operation filter."))),
        }
    }
    Ok(query)
}

fn new_service(req: CreateService) -> Result<NewService, ApiError> {
    if req.health_check_config.is_some() {
        return Err(invalid(
            "HealthCheckConfig (Route 53 health checks) applies to public DNS namespaces, which Flotilla does not serve; use HealthCheckCustomConfig.",
        ));
    }
    let http_only = match req.kind.as_deref() {
        None => false,
        Some("HTTP") => true,
        Some(other) => return Err(invalid(format!("Type '{other}' is not a service type you can request."))),
    };
    let (dns_namespace_id, routing_policy, dns_records) = match req.dns_config {
        None => (None, None, None),
        Some(dns) => {
            let policy = match dns.routing_policy.as_deref() {
                None => None,
                Some("MULTIVALUE") => Some(RoutingPolicy::Multivalue),
                Some("WEIGHTED") => Some(RoutingPolicy::Weighted),
                Some(other) => return Err(invalid(format!("'{other}' is not a routing policy."))),
            };
            let records = dns.dns_records.into_iter().map(|r| {
                let kind = match r.kind.as_str() {
                    "A" => RecordType::A,
                    "AAAA" => RecordType::Aaaa,
                    "SRV" => RecordType::Srv,
                    "CNAME" => RecordType::Cname,
                    other => return Err(invalid(format!("'{other}' is not a DNS record type Cloud Map creates."))),
                };
                Ok(flotilla_discovery::DnsRecord { kind, ttl: r.ttl })
            });
            (dns.namespace_id, policy, Some(records.collect::<Result<Vec<_>, ApiError>>()?))
        }
    };
    Ok(NewService {
        name: req.name,
        namespace_id: req.namespace_id,
        dns_namespace_id,
        description: req.description,
        creator_request_id: req.creator_request_id,
        routing_policy,
        dns_records,
        custom_health: req.health_check_custom_config.map(|c| c.failure_threshold),
        http_only,
        tags: tags_in(req.tags),
    })
}

/// Every Cloud Map operation Flotilla serves, each with its typed input.
pub(crate) enum CloudMapRequest {
    CreatePrivateDnsNamespace(CreatePrivateDnsNamespace),
    GetNamespace(ById),
    ListNamespaces(Listing),
    DeleteNamespace(ById),
    CreateService(CreateService),
    GetService(ById),
    ListServices(Listing),
    DeleteService(ById),
    RegisterInstance(RegisterInstance),
    DeregisterInstance(InstanceRef),
    GetInstance(InstanceRef),
    ListInstances(ListInstances),
    DiscoverInstances(DiscoverInstances),
    DiscoverInstancesRevision(DiscoverInstances),
    GetOperation(GetOperation),
    ListOperations(Listing),
    UpdateInstanceCustomHealthStatus(UpdateHealth),
    GetInstancesHealthStatus(HealthStatuses),
    ListTagsForResource(TagResource),
    TagResource(TagResource),
    UntagResource(TagResource),
}

impl CloudMapRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<CloudMapRequest, ApiError> {
        Ok(match operation {
            "CreatePrivateDnsNamespace" => CloudMapRequest::CreatePrivateDnsNamespace(parse(input)?),
            "GetNamespace" => CloudMapRequest::GetNamespace(parse(input)?),
            "ListNamespaces" => CloudMapRequest::ListNamespaces(parse(input)?),
            "DeleteNamespace" => CloudMapRequest::DeleteNamespace(parse(input)?),
            "CreateService" => CloudMapRequest::CreateService(parse(input)?),
            "GetService" => CloudMapRequest::GetService(parse(input)?),
            "ListServices" => CloudMapRequest::ListServices(parse(input)?),
            "DeleteService" => CloudMapRequest::DeleteService(parse(input)?),
            "RegisterInstance" => CloudMapRequest::RegisterInstance(parse(input)?),
            "DeregisterInstance" => CloudMapRequest::DeregisterInstance(parse(input)?),
            "GetInstance" => CloudMapRequest::GetInstance(parse(input)?),
            "ListInstances" => CloudMapRequest::ListInstances(parse(input)?),
            "DiscoverInstances" => CloudMapRequest::DiscoverInstances(parse(input)?),
            "DiscoverInstancesRevision" => CloudMapRequest::DiscoverInstancesRevision(parse(input)?),
            "GetOperation" => CloudMapRequest::GetOperation(parse(input)?),
            "ListOperations" => CloudMapRequest::ListOperations(parse(input)?),
            "UpdateInstanceCustomHealthStatus" => CloudMapRequest::UpdateInstanceCustomHealthStatus(parse(input)?),
            "GetInstancesHealthStatus" => CloudMapRequest::GetInstancesHealthStatus(parse(input)?),
            "ListTagsForResource" => CloudMapRequest::ListTagsForResource(parse(input)?),
            "TagResource" => CloudMapRequest::TagResource(parse(input)?),
            "UntagResource" => CloudMapRequest::UntagResource(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnsupportedOperation",
                    format!("Flotilla does not implement Cloud Map {other}: it serves private DNS namespaces only."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(sd: &Discovery, request: CloudMapRequest) -> Result<Value, ApiError> {
    let answer = match request {
        CloudMapRequest::CreatePrivateDnsNamespace(req) => {
            let op = sd
                .create_private_dns_namespace(NewPrivateDnsNamespace {
                    name: req.name,
                    vpc: req.vpc,
                    description: req.description,
                    creator_request_id: req.creator_request_id,
                    soa_ttl: req.properties.map(|p| p.dns_properties.soa.ttl),
                    tags: tags_in(req.tags),
                })
                .await?;
            json!({"OperationId": op})
        }
        CloudMapRequest::GetNamespace(req) => {
            json!({"Namespace": namespace_json(sd, &sd.namespace(&req.id).await?, true)})
        }
        CloudMapRequest::ListNamespaces(req) => {
            let page = sd.list_namespaces(&namespace_query(req)?).await?;
            let items: Vec<Value> = page.items.iter().map(|ns| namespace_json(sd, ns, false)).collect();
            json!({"Namespaces": items, "NextToken": page.next_token})
        }
        CloudMapRequest::DeleteNamespace(req) => {
            json!({"OperationId": sd.delete_namespace(&req.id).await?})
        }
        CloudMapRequest::CreateService(req) => {
            let service = sd.create_service(new_service(req)?).await?;
            json!({"Service": service_json(sd, &service, true)})
        }
        CloudMapRequest::GetService(req) => {
            json!({"Service": service_json(sd, &sd.service(&req.id).await?, true)})
        }
        CloudMapRequest::ListServices(req) => {
            let mut namespaces: Option<Vec<String>> = None;
            for f in &req.filters {
                match f.name.as_str() {
                    "NAMESPACE_ID" => namespaces = Some(f.values(&["EQ", "IN"])?.1.to_vec()),
                    "RESOURCE_OWNER" if f.values(&["EQ"])?.1[0] == "OTHER_ACCOUNTS" => namespaces = Some(vec![]),
                    "RESOURCE_OWNER" => {}
                    other => return Err(invalid(format!("'{other}' is not a service filter."))),
                }
            }
            let page = sd.list_services(namespaces.as_deref(), req.max_results, req.next_token.as_deref()).await?;
            let items: Vec<Value> = page.items.iter().map(|s| service_json(sd, s, false)).collect();
            json!({"Services": items, "NextToken": page.next_token})
        }
        CloudMapRequest::DeleteService(req) => {
            sd.delete_service(&req.id).await?;
            json!({})
        }
        CloudMapRequest::RegisterInstance(req) => {
            let op =
                sd.register_instance(&req.service_id, &req.instance_id, req.attributes, req.creator_request_id).await?;
            json!({"OperationId": op})
        }
        CloudMapRequest::DeregisterInstance(req) => {
            json!({"OperationId": sd.deregister_instance(&req.service_id, &req.instance_id).await?})
        }
        CloudMapRequest::GetInstance(req) => {
            let instance = sd.instance(&req.service_id, &req.instance_id).await?;
            json!({"Instance": instance_json(sd, &instance, true), "ResourceOwner": sd.account()})
        }
        CloudMapRequest::ListInstances(req) => {
            let page = sd.list_instances(&req.service_id, req.max_results, req.next_token.as_deref()).await?;
            let items: Vec<Value> = page.items.iter().map(|i| instance_json(sd, i, false)).collect();
            json!({"Instances": items, "NextToken": page.next_token, "ResourceOwner": sd.account()})
        }
        CloudMapRequest::DiscoverInstances(req) => {
            req.check_owner(sd)?;
            let health = match req.health_status.as_deref() {
                None | Some("HEALTHY") => HealthFilter::Healthy,
                Some("UNHEALTHY") => HealthFilter::Unhealthy,
                Some("ALL") => HealthFilter::All,
                Some(_) => HealthFilter::HealthyOrElseAll,
            };
            let found = sd
                .discover_instances(
                    &req.namespace_name,
                    &req.service_name,
                    &req.query_parameters,
                    &req.optional_parameters,
                    health,
                    req.max_results,
                )
                .await?;
            discovered_json(&found)
        }
        CloudMapRequest::DiscoverInstancesRevision(req) => {
            req.check_owner(sd)?;
            let revision = sd.instances_revision(&req.namespace_name, &req.service_name).await?;
            json!({"InstancesRevision": revision})
        }
        CloudMapRequest::GetOperation(req) => {
            json!({"Operation": operation_json(sd, &sd.operation(&req.operation_id).await?)})
        }
        CloudMapRequest::ListOperations(req) => {
            let page = sd.list_operations(&operation_query(req)?).await?;
            let items: Vec<Value> =
                page.items.iter().map(|op| json!({"Id": op.id, "Status": op.status.as_str()})).collect();
            json!({"Operations": items, "NextToken": page.next_token})
        }
        CloudMapRequest::UpdateInstanceCustomHealthStatus(req) => {
            sd.update_custom_health(&req.service_id, &req.instance_id, req.status == "HEALTHY").await?;
            json!({})
        }
        CloudMapRequest::GetInstancesHealthStatus(req) => {
            let page = sd
                .health_statuses(&req.service_id, req.instances.as_deref(), req.max_results, req.next_token.as_deref())
                .await?;
            let status: Map<String, Value> =
                page.items.iter().map(|(id, h): &(String, HealthStatus)| (id.clone(), json!(h))).collect();
            json!({"Status": status, "NextToken": page.next_token})
        }
        CloudMapRequest::ListTagsForResource(req) => {
            json!({"Tags": tags_out(&sd.tags(&req.resource_arn).await?)})
        }
        CloudMapRequest::TagResource(req) => {
            sd.tag_resource(&req.resource_arn, tags_in(req.tags)).await?;
            json!({})
        }
        CloudMapRequest::UntagResource(req) => {
            sd.untag_resource(&req.resource_arn, &req.tag_keys).await?;
            json!({})
        }
    };
    Ok(strip_nulls(answer))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::model::ServiceModel;

    fn model() -> ServiceModel {
        ServiceModel::parse(include_str!("../model/servicediscovery.json"))
    }

    async fn call(sd: &Discovery, operation: &str, body: Value) -> Result<Value, ApiError> {
        let input = model().check_input(operation, body).expect("operation in the model")?;
        execute(sd, CloudMapRequest::parse(operation, input)?).await
    }

    async fn succeeded(sd: &Discovery, answer: Value) -> Value {
        let id = answer["OperationId"].as_str().expect("an operation id").to_owned();
        let start = Instant::now();
        loop {
            let op = call(sd, "GetOperation", json!({"OperationId": id})).await.unwrap()["Operation"].clone();
            if op["Status"] == "SUCCESS" {
                return op;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{op}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn signs_as_servicediscovery() {
        assert_eq!(model().signing_name(), "servicediscovery");
        assert_eq!(model().metadata.target_prefix.as_deref(), Some("Route53AutoNaming_v20170314"));
    }

    #[tokio::test]
    async fn operations_answer_in_wire_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
        let sd = Discovery::start(store, "us-east-1", "000000000000");

        let body = json!({"Name": "example.local", "Vpc": "vpc-12345678", "CreatorRequestId": "r1"});
        let op = succeeded(&sd, call(&sd, "CreatePrivateDnsNamespace", body).await.unwrap()).await;
        assert_eq!(op["Type"], "CREATE_NAMESPACE");
        assert!(op.get("ErrorCode").is_none(), "absent, not null: {op}");
        let ns_id = op["Targets"]["NAMESPACE"].as_str().unwrap().to_owned();
        let ns = call(&sd, "GetNamespace", json!({"Id": ns_id})).await.unwrap();
        assert_eq!(ns["Namespace"]["Type"], "DNS_PRIVATE");
        assert!(ns["Namespace"]["CreateDate"].is_f64());
        assert!(ns["Namespace"].get("Description").is_none());

        let body =
            json!({"Name": "web", "DnsConfig": {"NamespaceId": ns_id, "DnsRecords": [{"Type": "A", "TTL": 60}]}});
        let service = call(&sd, "CreateService", body).await.unwrap()["Service"].clone();
        assert_eq!(service["Type"], "DNS_HTTP");
        assert_eq!(service["NamespaceId"], ns_id.as_str());
        let srv_id = service["Id"].as_str().unwrap().to_owned();
        let body = json!({"ServiceId": srv_id, "InstanceId": "i-1", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.9"}});
        succeeded(&sd, call(&sd, "RegisterInstance", body).await.unwrap()).await;
        let found = call(&sd, "DiscoverInstances", json!({"NamespaceName": "example.local", "ServiceName": "web"}))
            .await
            .unwrap();
        assert_eq!(found["Instances"][0]["HealthStatus"], "UNKNOWN", "no health check configured");
        assert!(found["InstancesRevision"].is_u64());

        let errors = [
            ("GetNamespace", json!({"Id": "ns-none"}), "NamespaceNotFound"),
            ("GetService", json!({"Id": "srv-none"}), "ServiceNotFound"),
            ("GetInstance", json!({"ServiceId": srv_id, "InstanceId": "i-9"}), "InstanceNotFound"),
            ("GetOperation", json!({"OperationId": "none"}), "OperationNotFound"),
            ("DeleteService", json!({"Id": srv_id}), "ResourceInUse"),
            ("CreateService", json!({"Name": "web", "NamespaceId": ns_id}), "ServiceAlreadyExists"),
            (
                "CreatePrivateDnsNamespace",
                json!({"Name": "example.local", "Vpc": "vpc-1", "CreatorRequestId": "r2"}),
                "NamespaceAlreadyExists",
            ),
            (
                "ListNamespaces",
                json!({"Filters": [{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "BETWEEN"}]}),
                "InvalidInput",
            ),
            (
                "CreateService",
                json!({"Name": "x", "NamespaceId": ns_id, "HealthCheckConfig": {"Type": "HTTP"}}),
                "InvalidInput",
            ),
            ("CreateHttpNamespace", json!({"Name": "h"}), "UnsupportedOperation"),
        ];
        for (operation, body, code) in errors {
            let e = call(&sd, operation, body).await.unwrap_err();
            assert_eq!(e.code, code, "{operation}: {}", e.message);
        }
        // A retried create (same CreatorRequestId) is the same operation.
        let retry = json!({"Name": "example.local", "Vpc": "vpc-12345678", "CreatorRequestId": "r1"});
        assert_eq!(call(&sd, "CreatePrivateDnsNamespace", retry).await.unwrap()["OperationId"], op["Id"]);
    }
}
