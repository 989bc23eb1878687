//! Managed policies: the account's own (versions `v1`, `v2`, ..., one of them the default, at
//! most five kept) and AWS's built-in ones, attached to users and roles.

use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Timestamp;

use crate::policy::PolicyKind;
use crate::record::{self, ManagedPolicy, PolicyVersion, encode};
use crate::{Iam, IamError, names};

/// A managed policy document's most non-whitespace characters.
const MANAGED_MAX: usize = 6144;
const VERSIONS_MAX: usize = 5;

pub struct NewPolicy<'a> {
    pub name: &'a str,
    pub path: Option<&'a str>,
    pub document: &'a str,
    pub description: Option<&'a str>,
}

/// ListPolicies' `Scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyScope {
    All,
    Aws,
    Local,
}

fn check_document(document: &str) -> Result<(), IamError> {
    names::parse_policy(document, PolicyKind::Identity)?;
    if names::policy_size(document) > MANAGED_MAX {
        return Err(IamError::LimitExceeded(format!("Cannot exceed quota for PolicySize: {MANAGED_MAX}")));
    }
    Ok(())
}

impl Iam {
    pub async fn create_policy(&self, new: NewPolicy<'_>) -> Result<ManagedPolicy, IamError> {
        names::check_name("policyName", new.name, 128)?;
        let path = names::check_path(new.path)?;
        check_document(new.document)?;
        let now = Timestamp::now();
        let policy = ManagedPolicy {
            name: new.name.to_owned(),
            arn: self.identity.iam_policy(&path, new.name),
            path,
            id: record::unique_id("ANPA", 17),
            description: new.description.map(str::to_owned),
            created: now,
            updated: now,
            default_version: "v1".into(),
            versions: vec![PolicyVersion { id: "v1".into(), document: new.document.to_owned(), created: now }],
            attachments: 0,
            next_version: 2,
        };
        let key = record::policy_key(new.name);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&policy)));
        if !self.commit(txn).await? {
            return Err(IamError::EntityAlreadyExists(format!(
                "A policy called {} already exists. Duplicate names are not allowed.",
                new.name
            )));
        }
        Ok(policy)
    }

    /// One of AWS's managed policies, with the number of this account's users and roles it is
    /// attached to.
    pub(crate) fn aws_policy(&self, arn: &str) -> Option<ManagedPolicy> {
        let records = self.view.read();
        let mut policy = records.aws.get(arn)?.policy.clone();
        let users = records.users.values().filter(|u| u.user.attached.iter().any(|a| a == arn)).count();
        let roles = records.roles.values().filter(|r| r.role.attached.iter().any(|a| a == arn)).count();
        policy.attachments = (users + roles) as u32;
        Some(policy)
    }

    pub async fn get_policy(&self, arn: &str) -> Result<ManagedPolicy, IamError> {
        match self.aws_policy(arn) {
            Some(p) => Ok(p),
            None => Ok(self.customer_policy(arn).await?.0),
        }
    }

    /// The version `version_id` of the policy `arn`, and whether it is the default.
    pub async fn get_policy_version(&self, arn: &str, version_id: &str) -> Result<(PolicyVersion, bool), IamError> {
        let policy = self.get_policy(arn).await?;
        let version = policy.version(version_id).cloned().ok_or_else(|| {
            IamError::NoSuchEntity(format!("Policy {arn} version {version_id} does not exist or is not attachable."))
        })?;
        Ok((version, policy.default_version == version_id))
    }

    /// Managed policies in `scope` whose path starts with `path_prefix`; with `only_attached`,
    /// only those attached to something. AWS's first, then the account's, each by name.
    pub async fn list_policies(
        &self,
        scope: PolicyScope,
        path_prefix: Option<&str>,
        only_attached: bool,
    ) -> Result<Vec<ManagedPolicy>, IamError> {
        let mut policies = Vec::new();
        if scope != PolicyScope::Local {
            let arns: Vec<String> = self.view.read().aws.keys().cloned().collect();
            let mut aws: Vec<ManagedPolicy> = arns.iter().filter_map(|a| self.aws_policy(a)).collect();
            aws.sort_by(|a, b| a.name.cmp(&b.name));
            policies.extend(aws);
        }
        if scope != PolicyScope::Aws {
            for kv in self.store.list_prefix(record::POLICIES).await? {
                policies.push(record::decode(&kv)?);
            }
        }
        policies
            .retain(|p| path_prefix.is_none_or(|pre| p.path.starts_with(pre)) && (!only_attached || p.attachments > 0));
        Ok(policies)
    }

    /// Changes the account's policy `arn` with `change`, retrying on conflicts.
    async fn update_policy(
        &self,
        arn: &str,
        mut change: impl FnMut(&mut ManagedPolicy) -> Result<(), IamError>,
    ) -> Result<ManagedPolicy, IamError> {
        if self.aws_policy(arn).is_some() {
            return Err(IamError::InvalidInput(format!(
                "Policy {arn} is an AWS managed policy and cannot be changed."
            )));
        }
        loop {
            let (mut policy, rev) = self.customer_policy(arn).await?;
            change(&mut policy)?;
            let key = record::policy_key(&policy.name);
            if self.commit(Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&policy)))).await? {
                return Ok(policy);
            }
        }
    }

    /// Deletes a policy attached to nothing and with no version but its default left.
    pub async fn delete_policy(&self, arn: &str) -> Result<(), IamError> {
        if self.aws_policy(arn).is_some() {
            return Err(IamError::InvalidInput(format!(
                "Policy {arn} is an AWS managed policy and cannot be deleted."
            )));
        }
        loop {
            let (policy, rev) = self.customer_policy(arn).await?;
            if policy.attachments > 0 {
                return Err(IamError::DeleteConflict("Cannot delete a policy attached to entities.".into()));
            }
            if policy.versions.len() > 1 {
                return Err(IamError::DeleteConflict(
                    "This policy has more than one version. Before you delete a policy, you must delete the policy's versions. The default version is deleted with the policy.".into(),
                ));
            }
            let key = record::policy_key(&policy.name);
            if self.commit(Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key))).await? {
                return Ok(());
            }
        }
    }

    pub async fn create_policy_version(
        &self,
        arn: &str,
        document: &str,
        set_as_default: bool,
    ) -> Result<PolicyVersion, IamError> {
        check_document(document)?;
        let now = Timestamp::now();
        let policy = self
            .update_policy(arn, |p| {
                if p.versions.len() >= VERSIONS_MAX {
                    return Err(IamError::LimitExceeded(format!(
                        "A managed policy can have up to {VERSIONS_MAX} versions. Before you create a new version, you must delete an existing version."
                    )));
                }
                let id = format!("v{}", p.next_version);
                p.next_version += 1;
                p.versions.push(PolicyVersion { id: id.clone(), document: document.to_owned(), created: now });
                if set_as_default {
                    p.default_version = id;
                }
                p.updated = now;
                Ok(())
            })
            .await?;
        Ok(policy.versions.last().cloned().expect("a version was just added"))
    }

    pub async fn delete_policy_version(&self, arn: &str, version_id: &str) -> Result<(), IamError> {
        self.update_policy(arn, |p| {
            if p.version(version_id).is_none() {
                return Err(IamError::NoSuchEntity(format!(
                    "Policy {arn} version {version_id} does not exist or is not attachable."
                )));
            }
            if p.default_version == version_id {
                return Err(IamError::DeleteConflict("Cannot delete the default version of a policy.".into()));
            }
            p.versions.retain(|v| v.id != version_id);
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn set_default_policy_version(&self, arn: &str, version_id: &str) -> Result<(), IamError> {
        self.update_policy(arn, |p| {
            if p.version(version_id).is_none() {
                return Err(IamError::NoSuchEntity(format!(
                    "Policy {arn} version {version_id} does not exist or is not attachable."
                )));
            }
            p.default_version = version_id.to_owned();
            p.updated = Timestamp::now();
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// Whether `arn` could name a managed policy at all (for the wire's ValidationError).
pub fn is_policy_arn(arn: &str) -> bool {
    arn.starts_with("arn:aws:iam::") && arn.contains(":policy/")
}
