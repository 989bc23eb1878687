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

use std::sync::Arc;

use flotilla_store::{Store, StoreError};
use flotilla_types::Identity;

pub use policy::{Decision, Policy, PolicyError, PolicyKind, RequestContext, RequestPrincipal};

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
}

impl Iam {
    /// Opens IAM on `store`; `root_keys` (access key id, secret) are the account root's, as
    /// `flotilla up` prints them, and are never stored.
    pub async fn open(
        store: Arc<dyn Store>,
        identity: Identity,
        root_keys: &[(String, String)],
    ) -> Result<Arc<Iam>, IamError> {
        let _ = (&store, &identity, root_keys);
        todo!("iam helper")
    }

    pub fn account(&self) -> &str {
        &self.identity.account
    }

    /// The identity behind `access_key_id`: a root key, a user's key (active or not), or
    /// unexpired temporary credentials. Answered from memory on the hot path.
    pub async fn lookup_key(&self, access_key_id: &str) -> Result<Option<KeyIdentity>, IamError> {
        let _ = (&self.store, access_key_id);
        todo!("iam helper")
    }

    /// Whether `principal` may do what `ctx` asks, under its identity policies (a user's inline
    /// and attached policies; an assumed role's). The root is allowed everything.
    pub async fn authorize(&self, principal: &Principal, ctx: &RequestContext) -> Result<Decision, IamError> {
        let _ = (principal, ctx);
        todo!("iam helper")
    }

    /// Whether the role `role_arn` may do what `ctx` asks (the platform acting as a task's
    /// execution role). `NoSuchEntity` if the role does not exist.
    pub async fn role_authorize(&self, role_arn: &str, ctx: &RequestContext) -> Result<Decision, IamError> {
        let _ = (role_arn, ctx);
        todo!("iam helper")
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
        let _ = (role_arn, service, session_name, duration_secs);
        todo!("iam helper")
    }
}
