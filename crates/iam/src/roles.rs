//! IAM roles: a trust policy saying who may assume the role, and the policies its sessions act
//! under.

use std::collections::BTreeMap;

use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Timestamp;

use crate::policy::PolicyKind;
use crate::record::{self, Role, encode};
use crate::{Iam, IamError, names};

/// A trust policy's most non-whitespace characters (IAM's default quota).
const TRUST_MAX: usize = 2048;
const SESSION_MIN: u32 = 3600;
const SESSION_MAX: u32 = 43_200;

pub struct NewRole<'a> {
    pub name: &'a str,
    pub path: Option<&'a str>,
    pub trust: &'a str,
    pub description: Option<&'a str>,
    /// Seconds, 3600..=43200; 3600 when absent.
    pub max_session_duration: Option<i64>,
}

pub(crate) fn no_such_role(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The role with name {name} cannot be found."))
}

fn check_trust(trust: &str, account: &str) -> Result<(), IamError> {
    let policy = names::parse_policy(trust, PolicyKind::Trust)?;
    policy.check_principal_account(account).map_err(|e| IamError::MalformedPolicyDocument(e.0))?;
    if names::policy_size(trust) > TRUST_MAX {
        return Err(IamError::LimitExceeded(format!("Cannot exceed quota for ACLSizePerRole: {TRUST_MAX}")));
    }
    Ok(())
}

impl Iam {
    pub async fn create_role(&self, new: NewRole<'_>) -> Result<Role, IamError> {
        names::check_name("roleName", new.name, 64)?;
        let path = names::check_path(new.path)?;
        let max = new.max_session_duration.unwrap_or(i64::from(SESSION_MIN));
        if !(i64::from(SESSION_MIN)..=i64::from(SESSION_MAX)).contains(&max) {
            return Err(IamError::InvalidInput(format!(
                "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value {}",
                if max < i64::from(SESSION_MIN) {
                    "greater than or equal to 3600"
                } else {
                    "less than or equal to 43200"
                }
            )));
        }
        if let Some(d) = new.description
            && d.chars().count() > 1000
        {
            return Err(IamError::InvalidInput(
                "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 1000".into(),
            ));
        }
        check_trust(new.trust, &self.identity.account)?;
        let role = Role {
            name: new.name.to_owned(),
            arn: self.identity.iam_role(&path, new.name),
            path,
            id: record::unique_id("AROA", 17),
            created: Timestamp::now(),
            trust: new.trust.to_owned(),
            description: new.description.map(str::to_owned),
            max_session_duration: max as u32,
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        let key = record::role_key(new.name);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&role)));
        if !self.commit(txn).await? {
            return Err(IamError::EntityAlreadyExists(format!("Role with name {} already exists.", new.name)));
        }
        Ok(role)
    }

    pub async fn get_role(&self, name: &str) -> Result<Role, IamError> {
        Ok(self.holder::<Role>(name).await?.0)
    }

    /// The role `arn` names (its account must be this one).
    pub async fn find_role_by_arn(&self, arn: &str) -> Result<Role, IamError> {
        let name = names::role_name_of(arn)
            .ok_or_else(|| IamError::InvalidInput(format!("Invalid ARN {arn}: not an IAM role's ARN.")))?;
        match self.load::<Role>(&record::role_key(name)).await? {
            Some((role, _)) if role.arn == arn => Ok(role),
            _ => Err(no_such_role(name)),
        }
    }

    pub async fn list_roles(&self, path_prefix: Option<&str>) -> Result<Vec<Role>, IamError> {
        let mut roles = Vec::new();
        for kv in self.store.list_prefix(record::ROLES).await? {
            let role: Role = record::decode(&kv)?;
            if path_prefix.is_none_or(|p| role.path.starts_with(p)) {
                roles.push(role);
            }
        }
        Ok(roles)
    }

    /// Deletes a role with no policies left. Its sessions stop being allowed anything at once
    /// (they act under the role's policies, which are gone) and expire in their time.
    pub async fn delete_role(&self, name: &str) -> Result<(), IamError> {
        loop {
            let (role, rev) = self.holder::<Role>(name).await?;
            if !role.inline.is_empty() {
                return Err(IamError::DeleteConflict("Cannot delete entity, must delete policies first.".into()));
            }
            if !role.attached.is_empty() {
                return Err(IamError::DeleteConflict("Cannot delete entity, must detach all policies first.".into()));
            }
            let key = record::role_key(name);
            if self.commit(Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key))).await? {
                return Ok(());
            }
        }
    }

    pub async fn update_assume_role_policy(&self, name: &str, trust: &str) -> Result<(), IamError> {
        check_trust(trust, &self.identity.account)?;
        self.update_holder::<Role>(name, |r| {
            r.trust = trust.to_owned();
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn put_role_policy(&self, role: &str, policy: &str, document: &str) -> Result<(), IamError> {
        self.put_inline::<Role>(role, policy, document).await
    }

    pub async fn get_role_policy(&self, role: &str, policy: &str) -> Result<String, IamError> {
        self.get_inline::<Role>(role, policy).await
    }

    pub async fn list_role_policies(&self, role: &str) -> Result<Vec<String>, IamError> {
        self.list_inline::<Role>(role).await
    }

    pub async fn delete_role_policy(&self, role: &str, policy: &str) -> Result<(), IamError> {
        self.delete_inline::<Role>(role, policy).await
    }

    pub async fn attach_role_policy(&self, role: &str, arn: &str) -> Result<(), IamError> {
        self.attach::<Role>(role, arn).await
    }

    pub async fn detach_role_policy(&self, role: &str, arn: &str) -> Result<(), IamError> {
        self.detach::<Role>(role, arn).await
    }

    /// (name, ARN) of the managed policies attached to `role`.
    pub async fn list_attached_role_policies(&self, role: &str) -> Result<Vec<(String, String)>, IamError> {
        self.list_attached::<Role>(role).await
    }
}
