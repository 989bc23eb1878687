//! ELBv2's answers: the domain's records as JSON of the model's output shapes. Members Flotilla
//! has no value for are left out (never `null`), as ELB leaves them out.

use flotilla_elb::{
    ActionSpec, Attribute, HealthProtocol, Listener, LoadBalancer, RuleCondition, RuleView, TargetGroup, TargetHealth,
    health_protocol_name, listener_protocol_name, target_protocol_name,
};
use flotilla_types::Tag;
use serde_json::{Value, json};

/// Drops `null` members, at any depth.
pub(super) fn compact(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, compact(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(compact).collect()),
        other => other,
    }
}

/// The hosted zone Route 53 aliases of ELB's DNS names point at (us-east-1's; Flotilla's
/// names are answered by its own resolvers, so the value only has to be well-formed).
fn hosted_zone(lb: &LoadBalancer) -> &'static str {
    match lb.type_name() {
        "network" => "Z26RNL4JYFTOTI",
        _ => "Z35SXDOTRQ7X7K",
    }
}

pub(super) fn load_balancer(lb: &LoadBalancer) -> Value {
    let zones: Vec<Value> = lb
        .zones
        .iter()
        .map(|z| {
            json!({
                "ZoneName": z.zone_name,
                "SubnetId": z.subnet_id,
                "LoadBalancerAddresses": [{
                    "IpAddress": z.public_ip.map(|ip| ip.to_string()),
                    "PrivateIPv4Address": z.private_ip.to_string(),
                }],
            })
        })
        .collect();
    compact(json!({
        "LoadBalancerArn": lb.arn,
        "DNSName": lb.dns_name,
        "CanonicalHostedZoneId": hosted_zone(lb),
        "CreatedTime": lb.created,
        "LoadBalancerName": lb.name,
        "Scheme": lb.scheme_name(),
        "VpcId": lb.vpc_id,
        "State": {"Code": "active"},
        "Type": lb.type_name(),
        "AvailabilityZones": zones,
        "SecurityGroups": if lb.security_groups.is_empty() { Value::Null } else { json!(lb.security_groups) },
        "IpAddressType": "ipv4",
    }))
}

pub(super) fn target_group(g: &TargetGroup) -> Value {
    let hc = &g.health_check;
    let http = hc.protocol != HealthProtocol::Tcp;
    compact(json!({
        "TargetGroupArn": g.arn,
        "TargetGroupName": g.name,
        "Protocol": target_protocol_name(g.protocol),
        "Port": g.port,
        "VpcId": g.vpc_id,
        "HealthCheckProtocol": health_protocol_name(hc.protocol),
        "HealthCheckPort": hc.port.map_or_else(|| "traffic-port".to_owned(), |p| p.to_string()),
        "HealthCheckEnabled": hc.enabled,
        "HealthCheckIntervalSeconds": hc.interval_s,
        "HealthCheckTimeoutSeconds": hc.timeout_s,
        "HealthyThresholdCount": hc.healthy_threshold,
        "UnhealthyThresholdCount": hc.unhealthy_threshold,
        "HealthCheckPath": http.then(|| hc.path.clone()),
        "Matcher": http.then(|| json!({"HttpCode": hc.matcher})),
        "LoadBalancerArns": g.load_balancer_arns(),
        "TargetType": g.target_type(),
        "ProtocolVersion": g.protocol_version,
        "IpAddressType": "ipv4",
    }))
}

pub(super) fn action(a: &ActionSpec) -> Value {
    compact(match a {
        ActionSpec::Forward { target_groups, stickiness_s } => json!({
            "Type": "forward",
            "Order": 1,
            "TargetGroupArn": match target_groups.as_slice() {
                [one] => Some(one.arn.clone()),
                _ => None,
            },
            "ForwardConfig": {
                "TargetGroups": target_groups
                    .iter()
                    .map(|g| json!({"TargetGroupArn": g.arn, "Weight": g.weight}))
                    .collect::<Vec<_>>(),
                "TargetGroupStickinessConfig": match stickiness_s {
                    Some(s) => json!({"Enabled": true, "DurationSeconds": s}),
                    None => json!({"Enabled": false}),
                },
            },
        }),
        ActionSpec::Redirect(r) => json!({
            "Type": "redirect",
            "Order": 1,
            "RedirectConfig": {
                "Protocol": r.protocol,
                "Port": r.port,
                "Host": r.host,
                "Path": r.path,
                "Query": r.query,
                "StatusCode": format!("HTTP_{}", r.status),
            },
        }),
        ActionSpec::FixedResponse { status, content_type, body } => json!({
            "Type": "fixed-response",
            "Order": 1,
            "FixedResponseConfig": {
                "MessageBody": body,
                "StatusCode": status.to_string(),
                "ContentType": content_type,
            },
        }),
    })
}

pub(super) fn listener(l: &Listener) -> Value {
    compact(json!({
        "ListenerArn": l.arn,
        "LoadBalancerArn": l.load_balancer_arn,
        "Port": l.port,
        "Protocol": listener_protocol_name(l.protocol),
        "Certificates": if l.certificates.is_empty() {
            Value::Null
        } else {
            json!(l.certificates.iter().map(|c| json!({"CertificateArn": c})).collect::<Vec<_>>())
        },
        "SslPolicy": l.ssl_policy,
        "DefaultActions": [action(&l.default_action)],
        "AlpnPolicy": if l.alpn_policy.is_empty() { Value::Null } else { json!(l.alpn_policy) },
    }))
}

fn condition(c: &RuleCondition) -> Value {
    match c {
        RuleCondition::PathPattern { values } => {
            json!({"Field": "path-pattern", "Values": values, "PathPatternConfig": {"Values": values}})
        }
        RuleCondition::HostHeader { values } => {
            json!({"Field": "host-header", "Values": values, "HostHeaderConfig": {"Values": values}})
        }
        RuleCondition::HttpHeader { name, values } => json!({
            "Field": "http-header",
            "HttpHeaderConfig": {"HttpHeaderName": name, "Values": values},
        }),
        RuleCondition::HttpRequestMethod { values } => {
            json!({"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": values}})
        }
        RuleCondition::QueryString { values } => compact(json!({
            "Field": "query-string",
            "QueryStringConfig": {
                "Values": values.iter().map(|q| json!({"Key": q.key, "Value": q.value})).collect::<Vec<_>>(),
            },
        })),
        RuleCondition::SourceIp { values } => json!({
            "Field": "source-ip",
            "SourceIpConfig": {"Values": values.iter().map(|n| n.to_string()).collect::<Vec<_>>()},
        }),
    }
}

pub(super) fn rule(r: &RuleView) -> Value {
    json!({
        "RuleArn": r.arn,
        "Priority": r.priority.map_or_else(|| "default".to_owned(), |p| p.to_string()),
        "Conditions": r.conditions.iter().map(condition).collect::<Vec<_>>(),
        "Actions": [action(&r.action)],
        "IsDefault": r.is_default(),
    })
}

pub(super) fn target_health(t: &TargetHealth) -> Value {
    compact(json!({
        "Target": {"Id": t.ip.to_string(), "Port": t.port},
        "HealthCheckPort": t.health_check_port.to_string(),
        "TargetHealth": {
            "State": t.state.name(),
            "Reason": t.state.reason(),
            "Description": t.state.description(),
        },
    }))
}

pub(super) fn attributes(attrs: &[Attribute]) -> Value {
    json!({"Attributes": attrs.iter().map(|a| json!({"Key": a.key, "Value": a.value})).collect::<Vec<_>>()})
}

pub(super) fn tags(tags: &[Tag]) -> Vec<Value> {
    tags.iter().map(|t| json!({"Key": t.key, "Value": t.value})).collect()
}
