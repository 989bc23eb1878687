//! IAM policy documents and AWS's evaluation logic: parsing (identity policies and trust
//! policies), validation with IAM's `MalformedPolicyDocument` messages, and the decision for one
//! request (default deny, an explicit `Deny` wins, `Action`/`NotAction`,
//! `Resource`/`NotResource` with `*` and `?`, `Principal` for trust policies, conditions).
//!
//! CONTRACT (lead, 2026-12-07): the names and signatures below are what `crates/iam` and
//! `crates/api` call. The helper owning this module fills the bodies in and may add to it, but
//! must not change these signatures without the lead.

mod condition;
mod document;
mod glob;
mod set;

use std::borrow::Cow;
use std::collections::BTreeMap;

use condition::Condition;
use glob::Template;

pub use set::PolicySet;

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
    statements: Vec<Statement>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    /// Trust policies only: who the statement is about, and whether it is `NotPrincipal`.
    principal: Option<(PrincipalMatcher, bool)>,
    action: Matcher,
    /// `None` in trust policies (they have no `Resource`).
    resource: Option<Matcher>,
    /// All must hold.
    conditions: Vec<Condition>,
}

/// `Action`/`NotAction` or `Resource`/`NotResource`: patterns, any of which matches.
#[derive(Clone, Debug)]
struct Matcher {
    not: bool,
    patterns: Vec<Template>,
}

/// A trust policy's `Principal`: `*`, account ids (`123456789012` or its `:root` ARN: any
/// identity of the account), IAM ARNs, service names.
#[derive(Clone, Debug, Default)]
struct PrincipalMatcher {
    any: bool,
    accounts: Vec<String>,
    arns: Vec<String>,
    services: Vec<String>,
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

/// One request's facts, borrowed: what evaluation reads. The hot path (every API request)
/// builds one from what it already holds without allocating per key; [`RequestContext`] is the
/// owned form the other callers build.
#[derive(Clone, Copy, Debug)]
pub struct BorrowedContext<'a> {
    /// `service:Operation`, in any case.
    pub action: &'a str,
    /// The resource's ARN, or `*`.
    pub resource: &'a str,
    pub principal: BorrowedPrincipal<'a>,
    pub keys: ContextKeys<'a>,
}

/// [`RequestPrincipal`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorrowedPrincipal<'a> {
    Aws { arn: &'a str, account: &'a str },
    Service(&'a str),
}

/// A request's condition keys as `(name, value)` pairs, names lowercased; a key with several
/// values appears once per value, in order. A key with no pair is absent from the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextKeys<'a>(pub &'a [(&'a str, &'a str)]);

impl<'a> ContextKeys<'a> {
    /// The values of `key` (a lowercased name), in order.
    pub(crate) fn values<'k>(self, key: &'k str) -> impl Iterator<Item = &'a str> + Clone + use<'a, 'k> {
        self.0.iter().filter(move |(name, _)| *name == key).map(|(_, value)| *value)
    }

    /// The first value of `key`: what a policy variable resolves to.
    pub(crate) fn first(self, key: &str) -> Option<&'a str> {
        self.values(key).next()
    }
}

impl RequestPrincipal {
    pub fn borrowed(&self) -> BorrowedPrincipal<'_> {
        match self {
            RequestPrincipal::Aws { arn, account } => BorrowedPrincipal::Aws { arn, account },
            RequestPrincipal::Service(name) => BorrowedPrincipal::Service(name),
        }
    }
}

impl RequestContext {
    /// Runs `f` on this context, borrowed.
    pub fn with_borrowed<R>(&self, f: impl FnOnce(&BorrowedContext<'_>) -> R) -> R {
        let pairs: Vec<(&str, &str)> =
            self.keys.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str()))).collect();
        f(&BorrowedContext {
            action: &self.action,
            resource: &self.resource,
            principal: self.principal.borrowed(),
            keys: ContextKeys(&pairs),
        })
    }
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
        let (statements, _variables) = document::parse(text, kind)?;
        Ok(Policy { statements })
    }

    /// Refuses a trust policy naming an `AWS` principal of an account other than `account`:
    /// Flotilla is one account, so such a principal could never be anyone (AWS itself accepts
    /// them; callers of CreateRole and UpdateAssumeRolePolicy call this after [`Policy::parse`]).
    pub fn check_principal_account(&self, account: &str) -> Result<(), PolicyError> {
        for statement in &self.statements {
            let Some((principal, _)) = &statement.principal else { continue };
            let foreign = principal.accounts.iter().find(|a| *a != account).map(|a| a.to_owned()).or_else(|| {
                principal.arns.iter().find(|arn| document::iam_principal_account(arn) != Some(account)).cloned()
            });
            if let Some(value) = foreign {
                return Err(PolicyError(format!("Invalid principal in policy: \"AWS\":\"{value}\"")));
            }
        }
        Ok(())
    }

    /// The statements' `Sid`s, in order (for tests and diagnostics).
    pub fn sids(&self) -> impl Iterator<Item = Option<&str>> {
        self.statements.iter().map(|s| s.sid.as_deref())
    }
}

impl Statement {
    /// Whether the statement's `Action`/`NotAction` covers `action` (lowercased). Actions have
    /// no variables: the answer depends on the action alone, which [`PolicySet`] relies on.
    fn covers(&self, action: &str) -> bool {
        self.action.any(action, ContextKeys::default())
    }

    /// Whether the statement applies to a request whose action it covers (its effect then
    /// counts).
    fn applies_beyond_action(&self, ctx: &BorrowedContext<'_>) -> bool {
        if let Some(resource) = &self.resource
            && !resource.any(ctx.resource, ctx.keys)
        {
            return false;
        }
        if let Some((principal, not)) = &self.principal
            && principal.matches(ctx.principal) == *not
        {
            return false;
        }
        self.conditions.iter().all(|c| c.holds(ctx.keys))
    }
}

impl Matcher {
    /// Whether `subject` is matched (for `Not...`, matched by none of the patterns).
    fn any(&self, subject: &str, keys: ContextKeys<'_>) -> bool {
        self.patterns.iter().any(|p| p.matches(subject, keys)) != self.not
    }
}

impl PrincipalMatcher {
    fn matches(&self, who: BorrowedPrincipal<'_>) -> bool {
        if self.any {
            return true;
        }
        match who {
            BorrowedPrincipal::Service(name) => self.services.iter().any(|s| s.eq_ignore_ascii_case(name)),
            BorrowedPrincipal::Aws { arn, account } => {
                self.accounts.iter().any(|a| a == account)
                    || self.arns.iter().any(|p| p == arn || session_of_role(arn, p))
            }
        }
    }
}

/// Whether `session` (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) is a session of the
/// role `role` (`arn:aws:iam::ACCOUNT:role/PATH/NAME`): a trust policy naming a role trusts
/// its sessions.
fn session_of_role(session: &str, role: &str) -> bool {
    let Some((prefix, rest)) = session.split_once(":assumed-role/") else { return false };
    let Some((name, _)) = rest.split_once('/') else { return false };
    let Some(account) = prefix.strip_prefix("arn:aws:sts::") else { return false };
    let Some(role_path) = role.strip_prefix(&format!("arn:aws:iam::{account}:role/")) else { return false };
    role_path.rsplit('/').next() == Some(name)
}

/// AWS's decision for `ctx` under `policies` (all of one principal's policies, or one trust
/// policy): an explicit `Deny` in any wins, else an `Allow` in any, else the implicit deny.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &RequestContext) -> Decision {
    ctx.with_borrowed(|ctx| evaluate_borrowed(policies, ctx))
}

/// [`evaluate`] for a borrowed context. A principal's policies evaluated on every request are
/// better held as a [`PolicySet`], which remembers which statements each action concerns.
pub fn evaluate_borrowed<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &BorrowedContext<'_>) -> Decision {
    // Actions compare case-insensitively; patterns are lowercased when parsed.
    let action = lowercase(ctx.action);
    let mut decision = Decision::ImplicitDeny;
    for policy in policies {
        for statement in &policy.statements {
            // Once an Allow applies only a Deny can change the answer: the remaining Allows
            // (their conditions are most of the work) need no evaluation.
            if decision == Decision::Allow && statement.effect == Effect::Allow {
                continue;
            }
            if statement.covers(&action) && statement.applies_beyond_action(ctx) {
                match statement.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => decision = Decision::Allow,
                }
            }
        }
    }
    decision
}

/// `text` in lowercase, borrowed when it already is.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}
