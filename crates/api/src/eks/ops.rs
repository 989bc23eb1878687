//! Each EKS operation Flotilla serves: its model-checked input as a typed request, the
//! `flotilla_eks` call, and its output shape.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use base64::Engine;
use flotilla_eks::{ClusterStatus, Eks, FargateProfile, NewCluster, NewProfile, Selector, StoredCluster};
use flotilla_types::Tag;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Answer, EksApiError};
use crate::json::{ResourceArn, UntagResource, strip_nulls};
use crate::server::ApiState;
use crate::sigv4::Caller;

fn tags(wire: BTreeMap<String, String>) -> Vec<Tag> {
    wire.into_iter().map(|(k, v)| Tag::new(k, v)).collect()
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Object(tags.iter().map(|t| (t.key.clone(), Value::String(t.value.clone()))).collect::<Map<_, _>>())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VpcConfigRequest {
    subnet_ids: Vec<String>,
    security_group_ids: Vec<String>,
    endpoint_public_access: Option<bool>,
    endpoint_private_access: Option<bool>,
    public_access_cidrs: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct KubernetesNetworkConfigRequest {
    service_ipv4_cidr: Option<String>,
    ip_family: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateCluster {
    name: String,
    role_arn: String,
    resources_vpc_config: VpcConfigRequest,
    #[serde(default)]
    kubernetes_network_config: KubernetesNetworkConfigRequest,
    version: Option<String>,
    client_request_token: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterName {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct List {
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSelector {
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateFargateProfile {
    cluster_name: String,
    fargate_profile_name: String,
    pod_execution_role_arn: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    selectors: Vec<WireSelector>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListFargateProfiles {
    cluster_name: String,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProfileName {
    cluster_name: String,
    fargate_profile_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagResource {
    resource_arn: String,
    tags: BTreeMap<String, String>,
}

/// Every EKS operation Flotilla serves, each with its typed input.
pub(crate) enum EksRequest {
    CreateCluster(CreateCluster),
    DescribeCluster(ClusterName),
    ListClusters(List),
    DeleteCluster(ClusterName),
    CreateFargateProfile(CreateFargateProfile),
    DescribeFargateProfile(ProfileName),
    ListFargateProfiles(ListFargateProfiles),
    DeleteFargateProfile(ProfileName),
    TagResource(TagResource),
    UntagResource(UntagResource),
    ListTagsForResource(ResourceArn),
}

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, EksApiError> {
    serde_json::from_value(input).map_err(|e| EksApiError::invalid_parameter(format!("Cannot read the request: {e}")))
}

impl EksRequest {
    pub(crate) fn parse(operation: &str, input: Value) -> Result<EksRequest, EksApiError> {
        Ok(match operation {
            "CreateCluster" => EksRequest::CreateCluster(parse(input)?),
            "DescribeCluster" => EksRequest::DescribeCluster(parse(input)?),
            "ListClusters" => EksRequest::ListClusters(parse(input)?),
            "DeleteCluster" => EksRequest::DeleteCluster(parse(input)?),
            "CreateFargateProfile" => EksRequest::CreateFargateProfile(parse(input)?),
            "DescribeFargateProfile" => EksRequest::DescribeFargateProfile(parse(input)?),
            "ListFargateProfiles" => EksRequest::ListFargateProfiles(parse(input)?),
            "DeleteFargateProfile" => EksRequest::DeleteFargateProfile(parse(input)?),
            "TagResource" => EksRequest::TagResource(parse(input)?),
            "UntagResource" => EksRequest::UntagResource(parse(input)?),
            "ListTagsForResource" => EksRequest::ListTagsForResource(parse(input)?),
            other => return Err(EksApiError::invalid_parameter(format!("EKS operation {other} is not served."))),
        })
    }
}

/// With IAM attached, a role handed to EKS must exist.
pub(crate) async fn check_role_exists(state: &ApiState, field: &str, arn: &str) -> Result<(), EksApiError> {
    let Some(iam) = state.iam.as_deref() else { return Ok(()) };
    match iam.find_role_by_arn(arn).await {
        Ok(_) => Ok(()),
        Err(flotilla_iam::IamError::NoSuchEntity(_) | flotilla_iam::IamError::InvalidInput(_)) => {
            Err(EksApiError::invalid_parameter(format!("{field}: the role {arn} does not exist.")))
        }
        Err(e) => {
            let crate::error::ApiError { code, message } = crate::error::internal("ServerException", "eks", &e);
            Err(EksApiError::new(code, message))
        }
    }
}

pub(crate) async fn execute(eks: &Eks, caller: &Caller, request: EksRequest) -> Result<Answer, EksApiError> {
    let ok = |v: Value| Ok((StatusCode::OK, strip_nulls(v)));
    match request {
        EksRequest::CreateCluster(r) => {
            if r.kubernetes_network_config.ip_family.as_deref().is_some_and(|f| f != "ipv4") {
                return Err(EksApiError::invalid_parameter(
                    "kubernetesNetworkConfig.ipFamily: only ipv4 is supported.",
                ));
            }
            let name = r.name.clone();
            let vpc = r.resources_vpc_config;
            let new = NewCluster {
                name: r.name,
                role_arn: r.role_arn,
                subnet_ids: vpc.subnet_ids,
                security_group_ids: vpc.security_group_ids,
                endpoint_public_access: vpc.endpoint_public_access,
                endpoint_private_access: vpc.endpoint_private_access,
                public_access_cidrs: vpc.public_access_cidrs,
                service_ipv4_cidr: r.kubernetes_network_config.service_ipv4_cidr,
                version: r.version,
                client_request_token: r.client_request_token,
                tags: tags(r.tags),
                creator_arn: caller.principal.arn.clone(),
                registered: None,
            };
            let about = |e: flotilla_eks::EksError| EksApiError::from(e).about(Some(&name), None);
            eks.create_cluster(new).await.map_err(about)?;
            let stored = eks.describe_cluster(&name).await.map_err(about)?;
            ok(json!({"cluster": cluster_json(&stored)}))
        }
        EksRequest::DescribeCluster(r) => {
            let stored = eks.describe_cluster(&r.name).await?;
            ok(json!({"cluster": cluster_json(&stored)}))
        }
        EksRequest::ListClusters(r) => {
            let page = eks.list_clusters(r.max_results, r.next_token.as_deref()).await?;
            ok(json!({"clusters": page.items, "nextToken": page.next_token}))
        }
        EksRequest::DeleteCluster(r) => {
            let about = |e: flotilla_eks::EksError| EksApiError::from(e).about(Some(&r.name), None);
            eks.delete_cluster(&r.name).await.map_err(about)?;
            let stored = eks.describe_cluster(&r.name).await.map_err(about);
            match stored {
                Ok(stored) => ok(json!({"cluster": cluster_json(&stored)})),
                // Already forgotten (nothing to stop): describe it as it was asked to go.
                Err(_) => ok(json!({"cluster": {"name": r.name, "status": "DELETING"}})),
            }
        }
        EksRequest::CreateFargateProfile(r) => {
            let (cluster, name) = (r.cluster_name.clone(), r.fargate_profile_name.clone());
            let about = |e: flotilla_eks::EksError| EksApiError::from(e).about(Some(&cluster), Some(&name));
            let mut selectors = Vec::with_capacity(r.selectors.len());
            for (i, s) in r.selectors.into_iter().enumerate() {
                let Some(namespace) = s.namespace else {
                    return Err(about(flotilla_eks::EksError::InvalidParameter(format!(
                        "selectors[{i}].namespace: every selector needs a namespace."
                    ))));
                };
                selectors.push(Selector { namespace, labels: s.labels });
            }
            let new = NewProfile {
                cluster_name: r.cluster_name,
                name: r.fargate_profile_name,
                pod_execution_role_arn: r.pod_execution_role_arn,
                subnets: r.subnets,
                selectors,
                tags: tags(r.tags),
            };
            let profile = eks.create_profile(new).await.map_err(about)?;
            ok(json!({"fargateProfile": profile_json(&profile)}))
        }
        EksRequest::DescribeFargateProfile(r) => {
            let profile = eks
                .describe_profile(&r.cluster_name, &r.fargate_profile_name)
                .await
                .map_err(|e| EksApiError::from(e).about(Some(&r.cluster_name), Some(&r.fargate_profile_name)))?;
            ok(json!({"fargateProfile": profile_json(&profile)}))
        }
        EksRequest::ListFargateProfiles(r) => {
            let page = eks
                .list_profiles(&r.cluster_name, r.max_results, r.next_token.as_deref())
                .await
                .map_err(|e| EksApiError::from(e).about(Some(&r.cluster_name), None))?;
            ok(json!({"fargateProfileNames": page.items, "nextToken": page.next_token}))
        }
        EksRequest::DeleteFargateProfile(r) => {
            let profile = eks
                .delete_profile(&r.cluster_name, &r.fargate_profile_name)
                .await
                .map_err(|e| EksApiError::from(e).about(Some(&r.cluster_name), Some(&r.fargate_profile_name)))?;
            ok(json!({"fargateProfile": profile_json(&profile)}))
        }
        EksRequest::TagResource(r) => {
            eks.tag_resource(&r.resource_arn, tags(r.tags)).await?;
            ok(json!({}))
        }
        EksRequest::UntagResource(r) => {
            eks.untag_resource(&r.resource_arn, &r.tag_keys).await?;
            ok(json!({}))
        }
        EksRequest::ListTagsForResource(r) => {
            let tags = eks.list_tags(&r.resource_arn).await?;
            ok(json!({"tags": tags_json(&tags)}))
        }
    }
}

/// A cluster as DescribeCluster shows it: the endpoint and CA once ACTIVE, a FAILED cluster's
/// reason as a health issue; no OIDC identity.
fn cluster_json(stored: &StoredCluster) -> Value {
    let c = &stored.cluster;
    let health = match (&c.status, &c.failure) {
        (ClusterStatus::Failed, Some(reason)) => {
            json!({"issues": [{"code": "Other", "message": reason, "resourceIds": [c.name]}]})
        }
        _ => Value::Null,
    };
    json!({
        "name": c.name,
        "arn": c.arn,
        "createdAt": c.created_at,
        "version": c.version,
        "endpoint": c.endpoint,
        "roleArn": c.role_arn,
        "resourcesVpcConfig": {
            "subnetIds": c.subnet_ids,
            "securityGroupIds": c.security_group_ids,
            "vpcId": c.vpc_id,
            "endpointPublicAccess": stored.endpoint_public_access,
            "endpointPrivateAccess": stored.endpoint_private_access,
            "publicAccessCidrs": stored.public_access_cidrs,
        },
        "kubernetesNetworkConfig": {"serviceIpv4Cidr": c.service_ipv4_cidr, "ipFamily": "ipv4"},
        "status": c.status.as_str(),
        "certificateAuthority": c.ca_pem.as_ref().map(|pem| json!({"data": base64::engine::general_purpose::STANDARD.encode(pem)})),
        "clientRequestToken": stored.client_request_token,
        "platformVersion": "eks.1",
        "tags": tags_json(&c.tags),
        "health": health,
    })
}

fn profile_json(p: &FargateProfile) -> Value {
    json!({
        "fargateProfileName": p.name,
        "fargateProfileArn": p.arn,
        "clusterName": p.cluster_name,
        "createdAt": p.created_at,
        "podExecutionRoleArn": p.pod_execution_role_arn,
        "subnets": p.subnets,
        "selectors": p.selectors.iter().map(|s| json!({"namespace": s.namespace, "labels": s.labels})).collect::<Vec<_>>(),
        "status": p.status.as_str(),
        "tags": tags_json(&p.tags),
    })
}
