//! IAM users, their access keys (at most two, `Active` or `Inactive`) and their policies.

use std::collections::BTreeMap;

use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Timestamp;

use crate::record::{self, AccessKey, KeyStatus, User, encode};
use crate::{Iam, IamError, names};

/// Most access keys one user may have.
const KEYS_MAX: usize = 2;

fn no_such_key(id: &str) -> IamError {
    IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found."))
}

impl Iam {
    pub async fn create_user(&self, name: &str, path: Option<&str>) -> Result<User, IamError> {
        names::check_name("userName", name, 64)?;
        let path = names::check_path(path)?;
        let user = User {
            name: name.to_owned(),
            arn: self.identity.iam_user(&path, name),
            path,
            id: record::unique_id("AIDA", 17),
            created: Timestamp::now(),
            inline: BTreeMap::new(),
            attached: Vec::new(),
            keys: Vec::new(),
        };
        let key = record::user_key(name);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&user)));
        if !self.commit(txn).await? {
            return Err(IamError::EntityAlreadyExists(format!("User with name {name} already exists.")));
        }
        Ok(user)
    }

    pub async fn get_user(&self, name: &str) -> Result<User, IamError> {
        Ok(self.holder::<User>(name).await?.0)
    }

    /// Users whose path starts with `path_prefix`, by name.
    pub async fn list_users(&self, path_prefix: Option<&str>) -> Result<Vec<User>, IamError> {
        let mut users = Vec::new();
        for kv in self.store.list_prefix(record::USERS).await? {
            let user: User = record::decode(&kv)?;
            if path_prefix.is_none_or(|p| user.path.starts_with(p)) {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Deletes a user that has no access keys and no policies left, as IAM requires.
    pub async fn delete_user(&self, name: &str) -> Result<(), IamError> {
        loop {
            let (user, rev) = self.holder::<User>(name).await?;
            let conflict = if !user.keys.is_empty() {
                Some("Cannot delete entity, must delete access keys first.")
            } else if !user.inline.is_empty() {
                Some("Cannot delete entity, must delete policies first.")
            } else if !user.attached.is_empty() {
                Some("Cannot delete entity, must detach all policies first.")
            } else {
                None
            };
            if let Some(message) = conflict {
                return Err(IamError::DeleteConflict(message.into()));
            }
            let key = record::user_key(name);
            if self.commit(Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key))).await? {
                return Ok(());
            }
        }
    }

    /// A new `Active` key for `user`: its secret is shown once, in this answer.
    pub async fn create_access_key(&self, user_name: &str) -> Result<AccessKey, IamError> {
        loop {
            let (mut user, rev) = self.holder::<User>(user_name).await?;
            if user.keys.len() >= KEYS_MAX {
                return Err(IamError::LimitExceeded(format!("Cannot exceed quota for AccessKeysPerUser: {KEYS_MAX}")));
            }
            let key = AccessKey {
                id: record::unique_id("AKIA", 16),
                secret: record::secret_key(),
                user_name: user_name.to_owned(),
                status: KeyStatus::Active,
                created: Timestamp::now(),
            };
            user.keys.push(key.id.clone());
            let (ukey, kkey) = (record::user_key(user_name), record::access_key_key(&key.id));
            let txn = Txn::new()
                .when(Compare::revision(&ukey, rev))
                .when(Compare::absent(&kkey))
                .then(Op::put(&ukey, encode(&user)))
                .then(Op::put(&kkey, encode(&key)));
            if self.commit(txn).await? {
                return Ok(key);
            }
        }
    }

    pub async fn list_access_keys(&self, user_name: &str) -> Result<Vec<AccessKey>, IamError> {
        let (user, _) = self.holder::<User>(user_name).await?;
        let mut keys = Vec::new();
        for id in &user.keys {
            if let Some((key, _)) = self.load::<AccessKey>(&record::access_key_key(id)).await? {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The key `id` of `user_name`, with its revision.
    async fn access_key(&self, user_name: &str, id: &str) -> Result<(AccessKey, u64), IamError> {
        self.holder::<User>(user_name).await?;
        match self.load::<AccessKey>(&record::access_key_key(id)).await? {
            Some((key, rev)) if key.user_name == user_name => Ok((key, rev)),
            _ => Err(no_such_key(id)),
        }
    }

    pub async fn update_access_key(&self, user_name: &str, id: &str, status: KeyStatus) -> Result<(), IamError> {
        loop {
            let (mut key, rev) = self.access_key(user_name, id).await?;
            key.status = status;
            let kkey = record::access_key_key(id);
            if self.commit(Txn::new().when(Compare::revision(&kkey, rev)).then(Op::put(&kkey, encode(&key)))).await? {
                return Ok(());
            }
        }
    }

    pub async fn delete_access_key(&self, user_name: &str, id: &str) -> Result<(), IamError> {
        loop {
            let (_, krev) = self.access_key(user_name, id).await?;
            let (mut user, urev) = self.holder::<User>(user_name).await?;
            user.keys.retain(|k| k != id);
            let (ukey, kkey) = (record::user_key(user_name), record::access_key_key(id));
            let txn = Txn::new()
                .when(Compare::revision(&ukey, urev))
                .when(Compare::revision(&kkey, krev))
                .then(Op::put(&ukey, encode(&user)))
                .then(Op::delete(&kkey));
            if self.commit(txn).await? {
                return Ok(());
            }
        }
    }

    pub async fn put_user_policy(&self, user: &str, policy: &str, document: &str) -> Result<(), IamError> {
        self.put_inline::<User>(user, policy, document).await
    }

    pub async fn get_user_policy(&self, user: &str, policy: &str) -> Result<String, IamError> {
        self.get_inline::<User>(user, policy).await
    }

    pub async fn list_user_policies(&self, user: &str) -> Result<Vec<String>, IamError> {
        self.list_inline::<User>(user).await
    }

    pub async fn delete_user_policy(&self, user: &str, policy: &str) -> Result<(), IamError> {
        self.delete_inline::<User>(user, policy).await
    }

    pub async fn attach_user_policy(&self, user: &str, arn: &str) -> Result<(), IamError> {
        self.attach::<User>(user, arn).await
    }

    pub async fn detach_user_policy(&self, user: &str, arn: &str) -> Result<(), IamError> {
        self.detach::<User>(user, arn).await
    }

    /// (name, ARN) of the managed policies attached to `user`.
    pub async fn list_attached_user_policies(&self, user: &str) -> Result<Vec<(String, String)>, IamError> {
        self.list_attached::<User>(user).await
    }
}
