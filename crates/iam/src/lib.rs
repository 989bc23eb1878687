//! IAM and STS, as much of them as a team sharing one Flotilla needs: users and their access
//! keys, roles with trust policies, inline and managed policies, temporary credentials from
//! AssumeRole (and for tasks' roles), all durable in the store; and [`Iam::authorize`], which
//! every request passes through.
//!
//! CONTRACT (lead, 2026-12-07): the public items in this file are what `crates/api`,
//! `crates/control` and `crates/cli` call. Helpers fill the bodies in and add what their own
//! part needs (entity operations for the IAM/STS wire), but must not change these signatures
//! without the lead.
//!
//! **Architecture Invariant:** nothing here knows HTTP or the AWS wire; `crates/api` maps
//! these types and errors to IAM's and STS's shapes and codes.

pub mod policy;

mod aws;
mod bootstrap;
mod entity;
mod managed;
mod names;
mod record;
mod roles;
mod sts;
mod users;
mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{Store, StoreError};
use flotilla_types::Identity;

pub use aws::policy_arn as aws_policy_arn;
pub use bootstrap::TASK_EXECUTION_ROLE;
pub use managed::{NewPolicy, PolicyScope, is_policy_arn};
pub use record::{AccessKey, KeyStatus, ManagedPolicy, PolicyVersion, Role, User};
pub use roles::NewRole;

pub use policy::{
    BorrowedContext, BorrowedPrincipal, ContextKeys, Decision, Policy, PolicyError, PolicyKind, PolicySet,
    RequestContext, RequestPrincipal,
};

/// Who signed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `arn:aws:iam::ACCOUNT:root`, `arn:aws:iam::ACCOUNT:user/PATH/NAME` or
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    pub account: String,
    /// The unique id GetCallerIdentity shows as `UserId` (`AIDA...`, `AROA...:SESSION`, or the
    /// account id for root).
    pub user_id: String,
    pub kind: PrincipalKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The account itself: the credentials `flotilla up` prints. Allowed everything.
    Root,
    User {
        name: String,
    },
    AssumedRole {
        role_name: String,
        role_arn: String,
        session_name: String,
    },
}

impl Principal {
    /// The account root of `account`.
    pub fn root(account: &str) -> Principal {
        Principal {
            arn: format!("arn:aws:iam::{account}:root"),
            account: account.to_owned(),
            user_id: account.to_owned(),
            kind: PrincipalKind::Root,
        }
    }

    pub fn is_root(&self) -> bool {
        self.kind == PrincipalKind::Root
    }
}

/// What an access key id stands for.
#[derive(Clone, Debug)]
pub struct KeyIdentity {
    pub secret_access_key: String,
    /// Present for temporary credentials: the request must carry it as `X-Amz-Security-Token`.
    pub session_token: Option<String>,
    /// Seconds since the epoch after which temporary credentials are refused.
    pub expiration: Option<i64>,
    /// An `Inactive` access key is known but refused.
    pub active: bool,
    pub principal: Principal,
}

/// Temporary credentials (AssumeRole, and the task role's credentials).
#[derive(Clone, Debug)]
pub struct TemporaryCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Seconds since the epoch.
    pub expiration: i64,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub assumed_role_arn: String,
    /// `AROA...:SESSION`.
    pub assumed_role_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// Bad input IAM calls `ValidationError` / `InvalidInput`.
    #[error("{0}")]
    InvalidInput(String),
    /// A trust policy that does not let the caller (or service) assume the role.
    #[error("{0}")]
    AccessDenied(String),
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
}

/// IAM and STS over one store.
pub struct Iam {
    store: Arc<dyn Store>,
    identity: Identity,
    /// The account root's keys: never stored, known only to the servers started with them.
    root_keys: HashMap<String, String>,
    view: Arc<view::View>,
    tuning: Tuning,
    /// The view's follower and the expired sessions' collector.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Iam {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Timings of the background work; tests shorten them ([`Iam::open_tuned`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// How often expired sessions are looked for.
    pub collect_every: Duration,
    /// How long an expired session stays known (refused as expired, not as unknown).
    pub keep_expired: Duration,
    /// The shortest session AssumeRole and services may ask for (AWS: 900 s).
    pub min_session: u32,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning { collect_every: Duration::from_secs(60), keep_expired: Duration::from_secs(3600), min_session: 900 }
    }
}

impl Iam {
    /// Opens IAM on `store`; `root_keys` (access key id, secret) are the account root's, as
    /// `flotilla up` prints them, and are never stored.
    pub async fn open(
        store: Arc<dyn Store>,
        identity: Identity,
        root_keys: &[(String, String)],
    ) -> Result<Arc<Iam>, IamError> {
        Iam::open_tuned(store, identity, root_keys, Tuning::default()).await
    }

    /// [`Iam::open`] with other timings: the tests of expiry use sessions of a few seconds and
    /// a quick collector, which AWS's limits (sessions of 900 s at least) would otherwise make
    /// untestable. Not for production use.
    #[doc(hidden)]
    pub async fn open_tuned(
        store: Arc<dyn Store>,
        identity: Identity,
        root_keys: &[(String, String)],
        tuning: Tuning,
    ) -> Result<Arc<Iam>, IamError> {
        let (view, follower) = view::View::start(store.clone()).await?;
        let collector = tokio::spawn(sts::collect_expired(store.clone(), tuning));
        Ok(Arc::new(Iam {
            store,
            identity,
            root_keys: root_keys.iter().cloned().collect(),
            view,
            tuning,
            tasks: vec![follower, collector],
        }))
    }

    pub fn account(&self) -> &str {
        &self.identity.account
    }

    /// The identity behind `access_key_id`: a root key, a user's key (active or not), or
    /// unexpired temporary credentials. Answered from memory on the hot path.
    ///
    /// Temporary credentials past their expiration are still returned (with `expiration` in the
    /// past) until they are collected, so that the caller can say they expired.
    pub async fn lookup_key(&self, access_key_id: &str) -> Result<Option<KeyIdentity>, IamError> {
        if let Some(secret) = self.root_keys.get(access_key_id) {
            return Ok(Some(KeyIdentity {
                secret_access_key: secret.clone(),
                session_token: None,
                expiration: None,
                active: true,
                principal: Principal::root(self.account()),
            }));
        }
        if let Some(found) = self.lookup_in_view(access_key_id) {
            return Ok(found);
        }
        // Not in the view: perhaps another server made it a moment ago.
        self.lookup_in_store(access_key_id).await
    }

    /// `Some(answer)` if the view knows the key (and its user).
    fn lookup_in_view(&self, access_key_id: &str) -> Option<Option<KeyIdentity>> {
        let records = self.view.read();
        if let Some(key) = records.keys.get(access_key_id) {
            let user = records.users.get(&key.user_name)?;
            return Some(Some(self.user_key_identity(key, &user.user)));
        }
        let session = records.sessions.get(access_key_id)?;
        Some(Some(self.session_identity(session)))
    }

    async fn lookup_in_store(&self, access_key_id: &str) -> Result<Option<KeyIdentity>, IamError> {
        if access_key_id.starts_with("ASIA") {
            let Some(kv) = self.store.get(&record::session_key(access_key_id)).await? else { return Ok(None) };
            return Ok(Some(self.session_identity(&record::decode(&kv)?)));
        }
        let Some(kv) = self.store.get(&record::access_key_key(access_key_id)).await? else { return Ok(None) };
        let key: record::AccessKey = record::decode(&kv)?;
        let Some(kv) = self.store.get(&record::user_key(&key.user_name)).await? else { return Ok(None) };
        Ok(Some(self.user_key_identity(&key, &record::decode(&kv)?)))
    }

    fn user_key_identity(&self, key: &record::AccessKey, user: &record::User) -> KeyIdentity {
        KeyIdentity {
            secret_access_key: key.secret.clone(),
            session_token: None,
            expiration: None,
            active: key.status == record::KeyStatus::Active,
            principal: self.user_principal(user),
        }
    }

    fn session_identity(&self, session: &record::Session) -> KeyIdentity {
        KeyIdentity {
            secret_access_key: session.secret.clone(),
            session_token: Some(session.token.clone()),
            expiration: Some(session.expiration),
            active: true,
            principal: self.session_principal(session),
        }
    }

    pub(crate) fn user_principal(&self, user: &record::User) -> Principal {
        Principal {
            arn: user.arn.clone(),
            account: self.account().to_owned(),
            user_id: user.id.clone(),
            kind: PrincipalKind::User { name: user.name.clone() },
        }
    }

    pub(crate) fn session_principal(&self, session: &record::Session) -> Principal {
        Principal {
            arn: self.identity.sts_assumed_role(&session.role_name, &session.session_name),
            account: self.account().to_owned(),
            user_id: format!("{}:{}", session.role_id, session.session_name),
            kind: PrincipalKind::AssumedRole {
                role_name: session.role_name.clone(),
                role_arn: session.role_arn.clone(),
                session_name: session.session_name.clone(),
            },
        }
    }

    /// Whether `principal` may do what `ctx` asks, under its identity policies (a user's inline
    /// and attached policies; an assumed role's). The root is allowed everything.
    pub async fn authorize(&self, principal: &Principal, ctx: &RequestContext) -> Result<Decision, IamError> {
        Ok(self.decide(principal, ctx))
    }

    /// [`Iam::authorize`], synchronously: it only reads the view.
    pub fn decide(&self, principal: &Principal, ctx: &RequestContext) -> Decision {
        ctx.with_borrowed(|ctx| self.decide_borrowed(principal, ctx))
    }

    /// [`Iam::decide`] for a borrowed context: what every API request's authorisation calls.
    pub fn decide_borrowed(&self, principal: &Principal, ctx: &BorrowedContext<'_>) -> Decision {
        if principal.account != self.account() {
            return Decision::ImplicitDeny;
        }
        let records = self.view.read();
        let policies = match &principal.kind {
            PrincipalKind::Root => return Decision::Allow,
            PrincipalKind::User { name } => match records.user_policies.get(name) {
                Some(policies) => policies,
                None => return Decision::ImplicitDeny,
            },
            PrincipalKind::AssumedRole { role_name, role_arn, .. } => match records.roles.get(role_name) {
                // A role deleted and made again under its name is another role: the old
                // sessions lose its permissions.
                Some(r) if &r.role.arn == role_arn => match records.role_policies.get(role_name) {
                    Some(policies) => policies,
                    None => return Decision::ImplicitDeny,
                },
                _ => return Decision::ImplicitDeny,
            },
        };
        match policies {
            Some(policies) => policies.evaluate(ctx),
            None => Decision::ExplicitDeny,
        }
    }

    /// Whether the role `role_arn` may do what `ctx` asks (the platform acting as a task's
    /// execution role). `NoSuchEntity` if the role does not exist.
    pub async fn role_authorize(&self, role_arn: &str, ctx: &RequestContext) -> Result<Decision, IamError> {
        let from_view = {
            let records = self.view.read();
            let role = names::role_name_of(role_arn).and_then(|name| records.roles.get(name));
            role.filter(|r| r.role.arn == role_arn).map(|r| records.role_policies.get(&r.role.name).cloned().flatten())
        };
        let policies = match from_view {
            Some(p) => p,
            None => {
                // Perhaps made a moment ago on another server.
                let role = self.find_role_by_arn(role_arn).await?;
                self.view.seen(self.store.revision().await?).await;
                let records = self.view.read();
                records.roles.get(&role.name).ok_or_else(|| roles::no_such_role(&role.name))?;
                records.role_policies.get(&role.name).cloned().flatten()
            }
        };
        Ok(match policies {
            Some(policies) => ctx.with_borrowed(|ctx| policies.evaluate(ctx)),
            None => Decision::ExplicitDeny,
        })
    }

    /// Temporary credentials for `role_arn` assumed by the AWS service `service` (e.g.
    /// `ecs-tasks.amazonaws.com` for a task role): the role's trust policy must allow that
    /// service `sts:AssumeRole` (`AccessDenied` otherwise; `NoSuchEntity` for no such role).
    pub async fn assume_role_for_service(
        &self,
        role_arn: &str,
        service: &str,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<TemporaryCredentials, IamError> {
        self.assume_role_as(
            RequestPrincipal::Service(service.to_owned()),
            None,
            role_arn,
            session_name,
            Some(duration_secs),
        )
        .await
    }
}
