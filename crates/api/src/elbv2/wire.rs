//! ELBv2 requests as the model names their members (PascalCase JSON from the Query reader),
//! read into the domain's inputs. Parts of ELB Flotilla does not serve (authentication actions,
//! regex conditions, transforms, mutual TLS) are refused here by name rather than ignored.

use std::net::Ipv4Addr;

use flotilla_elb::{
    ActionInput, Attribute, ConditionInput, FixedResponseInput, ForwardInput, HealthCheckInput, RedirectInput,
    TargetId, WeightInput,
};
use flotilla_types::Tag;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

pub(super) fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationError", message)
}

/// Refuses a member Flotilla does not serve, if the request set it.
pub(super) fn unsupported(value: &Option<Value>, member: &str) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(_) => Err(validation(format!("{member} is not supported by Flotilla's Elastic Load Balancing"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireTag {
    pub key: String,
    pub value: Option<String>,
}

pub(super) fn tags(wire: Vec<WireTag>) -> Vec<Tag> {
    wire.into_iter().map(|t| Tag::new(t.key, t.value.unwrap_or_default())).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireAttribute {
    pub key: Option<String>,
    pub value: Option<String>,
}

pub(super) fn attributes(wire: Vec<WireAttribute>) -> Result<Vec<Attribute>, ApiError> {
    wire.into_iter()
        .map(|a| match a.key {
            Some(key) => Ok(Attribute::new(key, a.value.unwrap_or_default())),
            None => Err(validation("Each attribute must have a key")),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireMatcher {
    pub http_code: Option<String>,
    pub grpc_code: Option<String>,
}

/// The health check members CreateTargetGroup and ModifyTargetGroup share.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireHealthCheck {
    pub health_check_protocol: Option<String>,
    pub health_check_port: Option<String>,
    pub health_check_enabled: Option<bool>,
    pub health_check_path: Option<String>,
    pub health_check_interval_seconds: Option<i64>,
    pub health_check_timeout_seconds: Option<i64>,
    pub healthy_threshold_count: Option<i64>,
    pub unhealthy_threshold_count: Option<i64>,
    pub matcher: Option<WireMatcher>,
}

impl WireHealthCheck {
    pub fn into_input(self) -> Result<HealthCheckInput, ApiError> {
        let matcher = match self.matcher {
            Some(WireMatcher { grpc_code: Some(_), .. }) => {
                return Err(validation("A gRPC matcher is not supported: target groups speak HTTP1"));
            }
            Some(m) => m.http_code,
            None => None,
        };
        Ok(HealthCheckInput {
            enabled: self.health_check_enabled,
            protocol: self.health_check_protocol,
            port: self.health_check_port,
            path: self.health_check_path,
            interval_s: self.health_check_interval_seconds,
            timeout_s: self.health_check_timeout_seconds,
            healthy_threshold: self.healthy_threshold_count,
            unhealthy_threshold: self.unhealthy_threshold_count,
            matcher,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireTarget {
    pub id: String,
    pub port: Option<i64>,
    pub availability_zone: Option<String>,
}

/// A target of an `ip` group: its Id is an IPv4 address.
pub(super) fn targets(wire: Vec<WireTarget>) -> Result<Vec<TargetId>, ApiError> {
    wire.into_iter()
        .map(|t| {
            let ip: Ipv4Addr =
                t.id.parse()
                    .map_err(|_| validation(format!("The IP address '{}' is not a valid IPv4 address", t.id)))?;
            let port = match t.port {
                None => None,
                Some(p) => Some(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| validation(format!("Target port '{p}' must be between 1 and 65535")))?,
                ),
            };
            if let Some(zone) = t.availability_zone.as_deref().filter(|z| *z != "all") {
                // Targets are found by address; a zone names nothing more.
                tracing::debug!(zone, "target availability zone ignored");
            }
            Ok(TargetId { ip, port })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireAction {
    #[serde(rename = "Type")]
    pub kind: String,
    pub target_group_arn: Option<String>,
    pub order: Option<i64>,
    pub forward_config: Option<WireForward>,
    pub redirect_config: Option<WireRedirect>,
    pub fixed_response_config: Option<WireFixedResponse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireForward {
    #[serde(default)]
    pub target_groups: Vec<WireTuple>,
    pub target_group_stickiness_config: Option<WireStickiness>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireTuple {
    pub target_group_arn: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireStickiness {
    pub enabled: Option<bool>,
    pub duration_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireRedirect {
    pub protocol: Option<String>,
    pub port: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub status_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireFixedResponse {
    pub message_body: Option<String>,
    pub status_code: String,
    pub content_type: Option<String>,
}

pub(super) fn actions(wire: Vec<WireAction>) -> Vec<ActionInput> {
    wire.into_iter()
        .map(|a| ActionInput {
            kind: a.kind,
            order: a.order,
            target_group_arn: a.target_group_arn,
            forward: a.forward_config.map(|f| ForwardInput {
                target_groups: f
                    .target_groups
                    .into_iter()
                    .map(|t| WeightInput { arn: t.target_group_arn, weight: t.weight })
                    .collect(),
                stickiness_enabled: f.target_group_stickiness_config.as_ref().and_then(|s| s.enabled),
                stickiness_s: f.target_group_stickiness_config.and_then(|s| s.duration_seconds),
            }),
            redirect: a.redirect_config.map(|r| RedirectInput {
                protocol: r.protocol,
                port: r.port,
                host: r.host,
                path: r.path,
                query: r.query,
                status_code: r.status_code,
            }),
            fixed_response: a.fixed_response_config.map(|f| FixedResponseInput {
                status_code: f.status_code,
                content_type: f.content_type,
                message_body: f.message_body,
            }),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireValues {
    #[serde(default)]
    pub values: Vec<String>,
    pub regex_values: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireHeader {
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    pub regex_values: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireQuery {
    #[serde(default)]
    pub values: Vec<WirePair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WirePair {
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireCondition {
    pub field: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    pub host_header_config: Option<WireValues>,
    pub path_pattern_config: Option<WireValues>,
    pub http_header_config: Option<WireHeader>,
    pub query_string_config: Option<WireQuery>,
    pub http_request_method_config: Option<WireValues>,
    pub source_ip_config: Option<WireValues>,
    pub regex_values: Option<Value>,
}

pub(super) fn conditions(wire: Vec<WireCondition>) -> Result<Vec<ConditionInput>, ApiError> {
    let mut out = Vec::new();
    for c in wire {
        unsupported(&c.regex_values, "RegexValues")?;
        for v in [&c.host_header_config, &c.path_pattern_config, &c.http_request_method_config, &c.source_ip_config]
            .into_iter()
            .flatten()
        {
            unsupported(&v.regex_values, "RegexValues")?;
        }
        if let Some(h) = &c.http_header_config {
            unsupported(&h.regex_values, "RegexValues")?;
        }
        let values = |v: Option<WireValues>| v.map(|v| v.values);
        out.push(ConditionInput {
            field: c.field,
            values: c.values,
            host_header: values(c.host_header_config),
            path_pattern: values(c.path_pattern_config),
            http_header: c.http_header_config.map(|h| (h.http_header_name, h.values)),
            query_string: c.query_string_config.map(|q| q.values.into_iter().map(|p| (p.key, p.value)).collect()),
            http_request_method: values(c.http_request_method_config),
            source_ip: values(c.source_ip_config),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireCertificate {
    pub certificate_arn: Option<String>,
}

pub(super) fn certificates(wire: Vec<WireCertificate>) -> Result<Vec<String>, ApiError> {
    wire.into_iter()
        .map(|c| c.certificate_arn.ok_or_else(|| validation("Each certificate must have a CertificateArn")))
        .collect()
}
