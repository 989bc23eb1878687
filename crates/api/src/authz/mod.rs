//! Authorisation of every request: each operation of each service Flotilla serves maps to its
//! IAM action, resource ARN and condition keys (`resources.rs`, `ecs.rs`), and the caller's
//! policies decide ([`flotilla_iam::Iam::authorize`]). A refusal is the service's access-denied
//! error naming the principal, the action and the resource.
//!
//! CONTRACT (lead, 2026-12-07): `authorize` and `check` are what every dispatch site calls;
//! the helper owning this module fills them in and inserts the calls, keeping the signatures.
//!
//! **Architecture Invariant:** every dispatch site (JSON 1.1 `dispatch`, the Query protocol's
//! EC2 and ELBv2, EFS's REST-JSON, IAM/STS, KMS) calls [`authorize`] once the input has passed
//! the service model and before the operation runs; a service whose operations this module does
//! not map is authorised as `prefix:Operation` on `*`, never skipped.

mod ecs;
mod resources;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use flotilla_iam::{Decision, Principal, PrincipalKind, RequestContext, RequestPrincipal};
use serde_json::Value;

use crate::error::ApiError;
use crate::server::ApiState;
use crate::sigv4::Caller;

/// One thing an operation acts on, as policies see it: a resource ARN (or `*`) and the
/// condition keys that come with it (`ecs:cluster`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub resource: String,
    pub keys: Vec<(&'static str, String)>,
}

impl Target {
    pub(crate) fn new(resource: impl Into<String>) -> Target {
        Target { resource: resource.into(), keys: Vec::new() }
    }

    pub(crate) fn any() -> Target {
        Target::new("*")
    }

    pub(crate) fn with(mut self, key: &'static str, value: impl Into<String>) -> Target {
        self.keys.push((key, value.into()));
        self
    }
}

tokio::task_local! {
    /// The address the request came from: `aws:SourceIp`.
    static PEER: IpAddr;
}

/// Middleware keeping the connection's peer address for the request's authorisation (served
/// with `into_make_service_with_connect_info::<SocketAddr>()`; without it `aws:SourceIp` is
/// absent from the request, as a policy's `IpAddress` then sees it: no match).
pub async fn remember_peer(request: Request, next: Next) -> Response {
    match request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        Some(ip) => PEER.scope(canonical_ip(ip), next.run(request)).await,
        None => next.run(request).await,
    }
}

/// An IPv4 client of a dual-stack socket shows as `::ffff:a.b.c.d`; policies name it as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The IAM action prefix of the service whose SigV4 signing name is `signing_name`.
fn action_prefix(signing_name: &str) -> &str {
    match signing_name {
        // Flotilla's own service (hosts and their tokens).
        "flotilla" => "flotilla",
        other => other,
    }
}

/// Authorises `caller` for `operation` of the service whose SigV4 signing name is
/// `signing_name`, with its checked `input`.
pub(crate) async fn authorize(
    state: &ApiState,
    caller: &Caller,
    signing_name: &str,
    operation: &str,
    input: &Value,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let _ = headers;
    let Some(iam) = state.iam.as_deref() else { return Ok(()) };
    if caller.principal.is_root() || resources::always_allowed(signing_name, operation) {
        return Ok(());
    }
    let action = format!("{}:{operation}", action_prefix(signing_name));
    let identity = state.control.identity();
    let targets = match signing_name {
        "ecs" => ecs::targets(state, operation, input).await,
        _ => resources::targets(state, identity, signing_name, operation, input).await,
    };
    let region = identity.region.as_str();
    for target in &targets {
        decide(iam, caller, signing_name, region, &action, target).await?;
    }
    if signing_name == "ecs" {
        for role in ecs::passed_roles(state, operation, input).await {
            decide(iam, caller, signing_name, region, "iam:PassRole", &Target::new(role)).await?;
        }
    }
    Ok(())
}

/// Authorises `caller` for one `action` on `resource` beyond the operation's own (for example
/// `kms:Decrypt` when a parameter is read `WithDecryption`, or `iam:PassRole`).
pub(crate) async fn check(state: &ApiState, caller: &Caller, action: &str, resource: &str) -> Result<(), ApiError> {
    let Some(iam) = state.iam.as_deref() else { return Ok(()) };
    if caller.principal.is_root() {
        return Ok(());
    }
    let signing_name = action.split_once(':').map_or(action, |(p, _)| p);
    let region = state.control.identity().region.as_str();
    decide(iam, caller, signing_name, region, action, &Target::new(resource)).await
}

async fn decide(
    iam: &flotilla_iam::Iam,
    caller: &Caller,
    signing_name: &str,
    region: &str,
    action: &str,
    target: &Target,
) -> Result<(), ApiError> {
    let ctx = context(&caller.principal, region, action, target);
    let decision = iam.authorize(&caller.principal, &ctx).await.map_err(|e| {
        tracing::error!(error = %e, action, "authorisation failed inside IAM");
        ApiError::new("ServerException", "The server failed to authorise the request; it has been logged.")
    })?;
    match decision {
        Decision::Allow => Ok(()),
        denied => Err(access_denied(signing_name, &caller.principal.arn, action, &target.resource, denied)),
    }
}

/// The request's facts as policies see them: the global condition keys AWS sets on every
/// request, and the target's own.
pub(crate) fn context(principal: &Principal, region: &str, action: &str, target: &Target) -> RequestContext {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut put = |k: &str, v: String| keys.entry(k.to_owned()).or_default().push(v);
    if let Ok(ip) = PEER.try_with(|ip| *ip) {
        put("aws:sourceip", ip.to_string());
    }
    let now = crate::server::now_secs();
    put("aws:currenttime", iso8601(now));
    put("aws:epochtime", now.to_string());
    put("aws:securetransport", "false".to_owned());
    put("aws:requestedregion", region.to_owned());
    put("aws:principalaccount", principal.account.clone());
    put("aws:userid", principal.user_id.clone());
    match &principal.kind {
        PrincipalKind::Root => {
            put("aws:principalarn", principal.arn.clone());
            put("aws:principaltype", "Account".to_owned());
        }
        PrincipalKind::User { name } => {
            put("aws:principalarn", principal.arn.clone());
            put("aws:username", name.clone());
            put("aws:principaltype", "User".to_owned());
        }
        PrincipalKind::AssumedRole { role_arn, .. } => {
            put("aws:principalarn", role_arn.clone());
            put("aws:principaltype", "AssumedRole".to_owned());
        }
    }
    for (k, v) in &target.keys {
        put(k, v.clone());
    }
    RequestContext {
        action: action.to_owned(),
        resource: target.resource.clone(),
        principal: RequestPrincipal::Aws { arn: principal.arn.clone(), account: principal.account.clone() },
        keys,
    }
}

/// `2026-12-07T00:40:00Z`.
fn iso8601(secs: i64) -> String {
    let b = flotilla_types::time::format_basic(secs);
    format!("{}-{}-{}T{}:{}:{}Z", &b[0..4], &b[4..6], &b[6..8], &b[9..11], &b[11..13], &b[13..15])
}

/// The protocol's access-denied error in AWS's words.
pub(crate) fn access_denied(
    signing_name: &str,
    who: &str,
    action: &str,
    resource: &str,
    decision: Decision,
) -> ApiError {
    let why = match decision {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_owned(),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    let text = format!("User: {who} is not authorized to perform: {action} on resource: {resource} {why}");
    match signing_name {
        "ec2" => {
            ApiError::new("UnauthorizedOperation", format!("You are not authorized to perform this operation. {text}"))
        }
        "elasticloadbalancing" | "iam" | "sts" => ApiError::new("AccessDenied", text),
        _ => ApiError::new("AccessDeniedException", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_aws() {
        let e = access_denied(
            "ecs",
            "arn:aws:iam::123456789012:user/alice",
            "ecs:RunTask",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1",
            Decision::ImplicitDeny,
        );
        assert_eq!(e.code, "AccessDeniedException");
        assert_eq!(
            e.message,
            "User: arn:aws:iam::123456789012:user/alice is not authorized to perform: ecs:RunTask on resource: \
             arn:aws:ecs:us-east-1:123456789012:task-definition/web:1 because no identity-based policy allows the \
             ecs:RunTask action"
        );
        let e = access_denied("ec2", "u", "ec2:DescribeVpcs", "*", Decision::ExplicitDeny);
        assert_eq!(e.code, "UnauthorizedOperation");
        assert!(e.message.starts_with("You are not authorized to perform this operation. User: u"));
        assert!(e.message.ends_with("with an explicit deny in an identity-based policy"));
        assert_eq!(access_denied("elasticloadbalancing", "u", "a:b", "*", Decision::ImplicitDeny).code, "AccessDenied");
        assert_eq!(iso8601(86_400 + 3661), "1970-01-02T01:01:01Z");
    }
}
