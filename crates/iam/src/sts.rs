//! STS: temporary credentials for a role, assumed by an IAM identity (AssumeRole) or by an AWS
//! service (a task's role), kept as `iam/sessions/<ASIA...>` so that every server accepts them,
//! and collected a while after they expire.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_store::{Compare, Op, Store, Txn, TxnOutcome};

use crate::policy::{self, Decision, PolicyKind, RequestContext, RequestPrincipal};
use crate::record::{self, Session, decode, encode, now_secs};
use crate::{Iam, IamError, Principal, PrincipalKind, TemporaryCredentials, Tuning, names};

/// AssumeRole's default session length.
const DEFAULT_DURATION: u32 = 3600;
/// The longest a role assumed with a role's credentials may last (role chaining).
const CHAINED_MAX: u32 = 3600;
/// The longest any session lasts.
const MAX_DURATION: u32 = 43_200;

impl Iam {
    /// STS AssumeRole for `caller`: the role's trust policy must allow the caller (or its
    /// account) `sts:AssumeRole`, and unless the caller is the root, its own policies must too.
    pub async fn assume_role(
        &self,
        caller: &Principal,
        role_arn: &str,
        session_name: &str,
        duration_secs: Option<u32>,
    ) -> Result<TemporaryCredentials, IamError> {
        let who = RequestPrincipal::Aws { arn: caller.arn.clone(), account: caller.account.clone() };
        self.assume_role_as(who, Some(caller), role_arn, session_name, duration_secs).await
    }

    /// Issues a session for `role_arn` to `who` (a service when `caller` is `None`).
    pub(crate) async fn assume_role_as(
        &self,
        who: RequestPrincipal,
        caller: Option<&Principal>,
        role_arn: &str,
        session_name: &str,
        duration_secs: Option<u32>,
    ) -> Result<TemporaryCredentials, IamError> {
        names::check_session_name(session_name)?;
        let denied = || {
            let subject = match (&who, caller) {
                (_, Some(c)) => format!("User: {}", c.arn),
                (RequestPrincipal::Service(s), None) => format!("Service: {s}"),
                (RequestPrincipal::Aws { arn, .. }, None) => format!("User: {arn}"),
            };
            IamError::AccessDenied(format!(
                "{subject} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            ))
        };
        let role = match self.find_role_by_arn(role_arn).await {
            // An identity is not told whether a role it may not assume exists.
            Err(IamError::NoSuchEntity(_)) if caller.is_some() => return Err(denied()),
            r => r?,
        };
        let duration = match caller {
            Some(c) => {
                let chained = matches!(c.kind, PrincipalKind::AssumedRole { .. });
                let d = duration_secs.unwrap_or(DEFAULT_DURATION);
                if d < self.tuning.min_session {
                    return Err(IamError::InvalidInput(format!(
                        "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {}",
                        self.tuning.min_session
                    )));
                }
                if d > MAX_DURATION {
                    return Err(IamError::InvalidInput(format!(
                        "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {MAX_DURATION}"
                    )));
                }
                if chained && d > CHAINED_MAX {
                    return Err(IamError::InvalidInput(
                        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.".into(),
                    ));
                }
                if d > role.max_session_duration {
                    return Err(IamError::InvalidInput(
                        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.".into(),
                    ));
                }
                d
            }
            // Services ask for what they need; they get what the limits allow.
            None => duration_secs.unwrap_or(DEFAULT_DURATION).clamp(self.tuning.min_session, MAX_DURATION),
        };
        let mut keys = BTreeMap::new();
        keys.insert("sts:rolesessionname".to_owned(), vec![session_name.to_owned()]);
        if let Some(c) = caller {
            keys.insert("aws:principalarn".to_owned(), vec![c.arn.clone()]);
            keys.insert("aws:principalaccount".to_owned(), vec![c.account.clone()]);
        }
        let ctx = RequestContext {
            action: "sts:AssumeRole".into(),
            resource: role.arn.clone(),
            principal: who.clone(),
            keys,
        };
        let trust = names::parse_policy(&role.trust, PolicyKind::Trust).map_err(|_| denied())?;
        if policy::evaluate([&trust], &ctx) != Decision::Allow {
            return Err(denied());
        }
        if let Some(c) = caller
            && !c.is_root()
            && !names_caller_itself(&trust, &ctx)
            && !self.decide(c, &ctx).allowed()
        {
            return Err(denied());
        }
        self.issue_session(&role, session_name, duration).await
    }

    async fn issue_session(
        &self,
        role: &record::Role,
        session_name: &str,
        duration: u32,
    ) -> Result<TemporaryCredentials, IamError> {
        let session = Session {
            id: record::unique_id("ASIA", 16),
            secret: record::secret_key(),
            token: record::session_token(),
            expiration: now_secs() + i64::from(duration),
            role_name: role.name.clone(),
            role_arn: role.arn.clone(),
            role_id: role.id.clone(),
            session_name: session_name.to_owned(),
        };
        let key = record::session_key(&session.id);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&session)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(rev) => self.view.seen(rev).await,
            // 2^80 ids: a collision is not worth a retry loop, but is not a success either.
            TxnOutcome::Conflict => {
                return Err(IamError::InvalidInput("temporary credentials could not be issued; retry".into()));
            }
        }
        let principal = self.session_principal(&session);
        Ok(TemporaryCredentials {
            access_key_id: session.id,
            secret_access_key: session.secret,
            session_token: session.token,
            expiration: session.expiration,
            assumed_role_arn: principal.arn,
            assumed_role_id: principal.user_id,
        })
    }
}

/// Whether the trust policy allows the caller by its own ARN rather than through its account:
/// then, as in AWS, the caller's identity policies need not allow `sts:AssumeRole` too.
fn names_caller_itself(trust: &policy::Policy, ctx: &RequestContext) -> bool {
    let RequestPrincipal::Aws { arn, .. } = &ctx.principal else { return false };
    let alone =
        RequestContext { principal: RequestPrincipal::Aws { arn: arn.clone(), account: String::new() }, ..ctx.clone() };
    policy::evaluate([trust], &alone) == Decision::Allow
}

/// Deletes sessions expired for longer than `tuning.keep_expired`, every `tuning.collect_every`.
/// Every server runs it; a session another server deleted first is a harmless conflict.
pub(crate) async fn collect_expired(store: Arc<dyn Store>, tuning: Tuning) {
    let mut tick = tokio::time::interval(tuning.collect_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = now_secs() - tuning.keep_expired.as_secs() as i64;
        let sessions = match store.list_prefix(record::SESSIONS).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list STS sessions to collect the expired");
                continue;
            }
        };
        for kv in sessions {
            let Ok(session) = decode::<Session>(&kv) else { continue };
            if session.expiration < cutoff {
                let txn = Txn::new().when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::delete(&kv.key));
                if let Err(e) = store.txn(txn).await {
                    tracing::warn!(error = %e, "cannot delete an expired STS session");
                }
            }
        }
    }
}
