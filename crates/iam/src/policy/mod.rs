//! IAM policy documents and AWS's evaluation logic: parsing (identity policies and trust
//! policies), validation with IAM's `MalformedPolicyDocument` messages, and the decision for one
//! request (default deny, an explicit `Deny` wins, `Action`/`NotAction`,
//! `Resource`/`NotResource` with `*` and `?`, `Principal` for trust policies, conditions).
//!
//! CONTRACT (lead, 2026-12-07): the names and signatures below are what `crates/iam` and
//! `crates/api` call. The helper owning this module fills the bodies in and may add to it, but
//! must not change these signatures without the lead.

use std::collections::BTreeMap;

/// What kind of document is parsed: the rules differ (a trust policy needs `Principal` and
/// only allows `sts:` actions; an identity policy must not have `Principal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Identity,
    Trust,
}

/// A parsed, validated policy document.
#[derive(Clone, Debug)]
pub struct Policy {
    // Filled in by the policy helper.
}

/// Why a document was refused: the text of IAM's `MalformedPolicyDocument` message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Who is asking, as a trust policy's `Principal` matches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestPrincipal {
    /// An IAM identity: `arn` is the user's, the assumed role's session ARN
    /// (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) or the account root's.
    Aws { arn: String, account: String },
    /// An AWS service, e.g. `ecs-tasks.amazonaws.com`.
    Service(String),
}

/// One request's facts, as policies see them.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// `service:Operation`, e.g. `ecs:RunTask`.
    pub action: String,
    /// The resource's ARN, or `*` for actions on no particular resource.
    pub resource: String,
    pub principal: RequestPrincipal,
    /// Condition keys with their values, key names lowercased (`aws:sourceip`,
    /// `aws:requestedregion`, `aws:username`, `aws:principalarn`, `aws:currenttime`,
    /// `aws:securetransport`, `ecs:cluster`, ...). A key absent here is absent from the request.
    pub keys: BTreeMap<String, Vec<String>>,
}

/// AWS's three outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allow
    }
}

impl Policy {
    /// Parses and validates `text` (IAM's size limits are the caller's: they differ by entity).
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let _ = (text, kind);
        todo!("policy helper")
    }
}

/// AWS's decision for `ctx` under `policies` (all of one principal's policies, or one trust
/// policy): an explicit `Deny` in any wins, else an `Allow` in any, else the implicit deny.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &RequestContext) -> Decision {
    let _ = (policies.into_iter().count(), ctx);
    todo!("policy helper")
}
