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

use std::cell::RefCell;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use flotilla_iam::{BorrowedContext, BorrowedPrincipal, ContextKeys, Decision, Principal, PrincipalKind};
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
    let decision =
        with_context(&caller.principal, region, action, target, |ctx| iam.decide_borrowed(&caller.principal, ctx));
    match decision {
        Decision::Allow => Ok(()),
        denied => Err(access_denied(signing_name, &caller.principal.arn, action, &target.resource, denied)),
    }
}

/// Runs `f` on the request's facts as policies see them: the global condition keys AWS sets on
/// every request, and the target's own. Every request of a principal other than the root comes
/// here, so the facts are borrowed from what the request already holds, not copied.
pub(crate) fn with_context<R>(
    principal: &Principal,
    region: &str,
    action: &str,
    target: &Target,
    f: impl FnOnce(&BorrowedContext<'_>) -> R,
) -> R {
    // An address is at most 45 characters: formatted on the stack.
    let mut ip_text = [0u8; 64];
    let mut ip_len = 0;
    if let Ok(ip) = PEER.try_with(|ip| *ip) {
        let mut rest = &mut ip_text[..];
        if write!(rest, "{ip}").is_ok() {
            ip_len = 64 - rest.len();
        }
    }
    let source_ip = std::str::from_utf8(&ip_text[..ip_len]).ok().filter(|ip| !ip.is_empty());
    with_clock(crate::server::now_secs(), |time, epoch| {
        let mut keys: Vec<(&str, &str)> = Vec::with_capacity(12 + target.keys.len());
        if let Some(ip) = source_ip {
            keys.push(("aws:sourceip", ip));
        }
        keys.extend([
            ("aws:currenttime", time),
            ("aws:epochtime", epoch),
            ("aws:securetransport", "false"),
            ("aws:requestedregion", region),
            ("aws:principalaccount", principal.account.as_str()),
            ("aws:userid", principal.user_id.as_str()),
        ]);
        match &principal.kind {
            PrincipalKind::Root => {
                keys.extend([("aws:principalarn", principal.arn.as_str()), ("aws:principaltype", "Account")]);
            }
            PrincipalKind::User { name } => keys.extend([
                ("aws:principalarn", principal.arn.as_str()),
                ("aws:username", name.as_str()),
                ("aws:principaltype", "User"),
            ]),
            PrincipalKind::AssumedRole { role_arn, .. } => {
                keys.extend([("aws:principalarn", role_arn.as_str()), ("aws:principaltype", "AssumedRole")]);
            }
        }
        keys.extend(target.keys.iter().map(|(k, v)| (*k, v.as_str())));
        f(&BorrowedContext {
            action,
            resource: &target.resource,
            principal: BorrowedPrincipal::Aws { arn: &principal.arn, account: &principal.account },
            keys: ContextKeys(&keys),
        })
    })
}

/// The current second as `aws:CurrentTime` and `aws:EpochTime` show it, formatted once a second
/// per thread rather than on every request.
struct Clock {
    secs: i64,
    time: String,
    epoch: String,
}

thread_local! {
    static CLOCK: RefCell<Clock> = const { RefCell::new(Clock { secs: i64::MIN, time: String::new(), epoch: String::new() }) };
}

fn with_clock<R>(now: i64, f: impl FnOnce(&str, &str) -> R) -> R {
    CLOCK.with_borrow_mut(|clock| {
        if clock.secs != now {
            *clock = Clock { secs: now, time: iso8601(now), epoch: now.to_string() };
        }
        f(&clock.time, &clock.epoch)
    })
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

    /// The facts policies see: the global keys of the principal's kind, then the target's, and
    /// `aws:SourceIp` only where the connection's address is known.
    #[test]
    fn contexts_carry_the_global_and_target_keys() {
        let user = Principal {
            arn: "arn:aws:iam::123456789012:user/alice".to_owned(),
            account: "123456789012".to_owned(),
            user_id: "AIDAEXAMPLE".to_owned(),
            kind: PrincipalKind::User { name: "alice".to_owned() },
        };
        let cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/prod";
        let target = Target::new("arn:aws:ecs:us-east-1:123456789012:task/prod/abc").with("ecs:cluster", cluster);
        let (action, resource, principal, keys) = with_context(&user, "us-east-1", "ecs:StopTask", &target, |ctx| {
            let keys: Vec<(String, String)> =
                ctx.keys.0.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            (ctx.action.to_owned(), ctx.resource.to_owned(), format!("{:?}", ctx.principal), keys)
        });
        assert_eq!((action.as_str(), resource.as_str()), ("ecs:StopTask", target.resource.as_str()));
        assert!(principal.contains("user/alice"), "{principal}");
        let get = |k: &str| keys.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert!(get("aws:sourceip").is_empty(), "no connection, no address: {keys:?}");
        assert_eq!(get("aws:requestedregion"), ["us-east-1"]);
        assert_eq!(get("aws:username"), ["alice"]);
        assert_eq!(get("aws:principalarn"), [user.arn.as_str()]);
        assert_eq!(get("aws:principaltype"), ["User"]);
        assert_eq!(get("aws:userid"), ["AIDAEXAMPLE"]);
        assert_eq!(get("aws:securetransport"), ["false"]);
        assert_eq!(get("ecs:cluster"), [cluster]);
        let epoch: i64 = get("aws:epochtime")[0].parse().unwrap();
        assert!((epoch - crate::server::now_secs()).abs() <= 5);
        assert_eq!(get("aws:currenttime"), [iso8601(epoch).as_str()]);

        let ip = "203.0.113.9".parse().unwrap();
        let seen = PEER.sync_scope(ip, || {
            with_context(&user, "us-east-1", "ecs:StopTask", &target, |ctx| {
                ctx.keys.0.iter().find(|(k, _)| *k == "aws:sourceip").map(|(_, v)| (*v).to_owned())
            })
        });
        assert_eq!(seen.as_deref(), Some("203.0.113.9"));
    }

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
