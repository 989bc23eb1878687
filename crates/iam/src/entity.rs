//! What users and roles share: reading and writing a record with compare-and-write, inline
//! policies kept in the record, and managed policies attached to it (the policy's attachment
//! count changes in the same transaction).

use std::collections::BTreeMap;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::policy::PolicyKind;
use crate::record::{self, ManagedPolicy, Role, User, decode, encode};
use crate::{Iam, IamError, names};

/// Most managed policies one user or role may have attached.
const ATTACHED_MAX: usize = 10;

/// A user or a role: the IAM identities that hold policies.
pub(crate) trait Holder: Serialize + DeserializeOwned + Clone + Send {
    /// `user` or `role`, as IAM's messages say.
    const KIND: &'static str;
    /// The most non-whitespace characters of all its inline policies together.
    const INLINE_LIMIT: usize;
    /// The quota's name in LimitExceeded's message.
    const ATTACHED_QUOTA: &'static str;
    fn key(name: &str) -> String;
    fn inline_mut(&mut self) -> &mut BTreeMap<String, String>;
    fn inline(&self) -> &BTreeMap<String, String>;
    fn attached_mut(&mut self) -> &mut Vec<String>;

    fn not_found(name: &str) -> IamError {
        IamError::NoSuchEntity(format!("The {} with name {name} cannot be found.", Self::KIND))
    }
}

impl Holder for User {
    const KIND: &'static str = "user";
    const INLINE_LIMIT: usize = 2048;
    const ATTACHED_QUOTA: &'static str = "PoliciesPerUser";
    fn key(name: &str) -> String {
        record::user_key(name)
    }
    fn inline_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.inline
    }
    fn inline(&self) -> &BTreeMap<String, String> {
        &self.inline
    }
    fn attached_mut(&mut self) -> &mut Vec<String> {
        &mut self.attached
    }
}

impl Holder for Role {
    const KIND: &'static str = "role";
    const INLINE_LIMIT: usize = 10_240;
    const ATTACHED_QUOTA: &'static str = "PoliciesPerRole";
    fn key(name: &str) -> String {
        record::role_key(name)
    }
    fn inline_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.inline
    }
    fn inline(&self) -> &BTreeMap<String, String> {
        &self.inline
    }
    fn attached_mut(&mut self) -> &mut Vec<String> {
        &mut self.attached
    }
}

fn no_such_inline(kind: &str, policy: &str) -> IamError {
    IamError::NoSuchEntity(format!("The {kind} policy with name {policy} cannot be found."))
}

pub(crate) fn not_attachable(arn: &str) -> IamError {
    IamError::NoSuchEntity(format!("Policy {arn} does not exist or is not attachable."))
}

impl Iam {
    /// The record at `key` and its revision.
    pub(crate) async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, IamError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Applies `txn`; once committed, waits until this server's view has it, so the caller's
    /// next request sees it. False on a conflict.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<bool, IamError> {
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(rev) => {
                self.view.seen(rev).await;
                Ok(true)
            }
            TxnOutcome::Conflict => Ok(false),
        }
    }

    pub(crate) async fn holder<H: Holder>(&self, name: &str) -> Result<(H, u64), IamError> {
        self.load(&H::key(name)).await?.ok_or_else(|| H::not_found(name))
    }

    /// Changes the record of `name` with `change`, retrying on conflicts.
    pub(crate) async fn update_holder<H: Holder>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut H) -> Result<(), IamError>,
    ) -> Result<H, IamError> {
        loop {
            let (mut h, rev) = self.holder::<H>(name).await?;
            change(&mut h)?;
            let key = H::key(name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&h)));
            if self.commit(txn).await? {
                return Ok(h);
            }
        }
    }

    pub(crate) async fn put_inline<H: Holder>(&self, name: &str, policy: &str, document: &str) -> Result<(), IamError> {
        names::check_name("policyName", policy, 128)?;
        names::parse_policy(document, PolicyKind::Identity)?;
        self.update_holder::<H>(name, |h| {
            h.inline_mut().insert(policy.to_owned(), document.to_owned());
            let size: usize = h.inline().values().map(|d| names::policy_size(d)).sum();
            if size > H::INLINE_LIMIT {
                return Err(IamError::LimitExceeded(format!(
                    "Maximum policy size of {} bytes exceeded for {} {name}",
                    H::INLINE_LIMIT,
                    H::KIND
                )));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn get_inline<H: Holder>(&self, name: &str, policy: &str) -> Result<String, IamError> {
        let (h, _) = self.holder::<H>(name).await?;
        h.inline().get(policy).cloned().ok_or_else(|| no_such_inline(H::KIND, policy))
    }

    pub(crate) async fn list_inline<H: Holder>(&self, name: &str) -> Result<Vec<String>, IamError> {
        let (h, _) = self.holder::<H>(name).await?;
        Ok(h.inline().keys().cloned().collect())
    }

    pub(crate) async fn delete_inline<H: Holder>(&self, name: &str, policy: &str) -> Result<(), IamError> {
        self.update_holder::<H>(name, |h| {
            h.inline_mut().remove(policy).map(|_| ()).ok_or_else(|| no_such_inline(H::KIND, policy))
        })
        .await?;
        Ok(())
    }

    /// Attaches the managed policy `arn`; attaching it again changes nothing.
    pub(crate) async fn attach<H: Holder>(&self, name: &str, arn: &str) -> Result<(), IamError> {
        self.change_attachment::<H>(name, arn, true).await
    }

    pub(crate) async fn detach<H: Holder>(&self, name: &str, arn: &str) -> Result<(), IamError> {
        self.change_attachment::<H>(name, arn, false).await
    }

    async fn change_attachment<H: Holder>(&self, name: &str, arn: &str, attach: bool) -> Result<(), IamError> {
        loop {
            let (mut h, rev) = self.holder::<H>(name).await?;
            let attached = h.attached_mut();
            let present = attached.iter().any(|a| a == arn);
            // AWS's own policies are built in and count no attachments in the store.
            let customer = if self.aws_policy(arn).is_some() { None } else { Some(self.customer_policy(arn).await) };
            if attach {
                if let Some(found) = &customer {
                    found.as_ref().map_err(|_| not_attachable(arn))?;
                }
                if present {
                    return Ok(());
                }
                if attached.len() >= ATTACHED_MAX {
                    return Err(IamError::LimitExceeded(format!(
                        "Cannot exceed quota for {}: {ATTACHED_MAX}",
                        H::ATTACHED_QUOTA
                    )));
                }
                attached.push(arn.to_owned());
            } else {
                if !present {
                    return Err(IamError::NoSuchEntity(format!("Policy {arn} was not found.")));
                }
                attached.retain(|a| a != arn);
            }
            let key = H::key(name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&h)));
            if let Some(Ok((mut policy, prev))) = customer {
                policy.attachments = if attach { policy.attachments + 1 } else { policy.attachments.saturating_sub(1) };
                let pkey = record::policy_key(&policy.name);
                txn = txn.when(Compare::revision(&pkey, prev)).then(Op::put(&pkey, encode(&policy)));
            }
            if self.commit(txn).await? {
                return Ok(());
            }
        }
    }

    /// The attached managed policies' (name, ARN).
    pub(crate) async fn list_attached<H: Holder>(&self, name: &str) -> Result<Vec<(String, String)>, IamError> {
        let (mut h, _) = self.holder::<H>(name).await?;
        let named = h.attached_mut().iter().map(|arn| (arn.rsplit('/').next().unwrap_or(arn).to_owned(), arn.clone()));
        Ok(named.collect())
    }

    /// The customer managed policy `arn` names, with its revision.
    pub(crate) async fn customer_policy(&self, arn: &str) -> Result<(ManagedPolicy, u64), IamError> {
        let prefix = format!("arn:aws:iam::{}:policy/", self.account());
        let name = arn.strip_prefix(&prefix).and_then(|p| p.rsplit('/').next()).ok_or_else(|| not_attachable(arn))?;
        match self.load::<ManagedPolicy>(&record::policy_key(name)).await? {
            Some((p, rev)) if p.arn == arn => Ok((p, rev)),
            _ => Err(not_attachable(arn)),
        }
    }
}
