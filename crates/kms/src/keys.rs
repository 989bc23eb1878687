//! Keys and aliases: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey, CreateAlias,
//! ListAliases, DeleteAlias, and the one way every operation finds a key from what a caller
//! wrote (key id, key ARN, `alias/NAME` or alias ARN).

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;
use ring::aead::LessSafeKey;
use serde::{Deserialize, Serialize};

use crate::master::{KEY_LEN, aead_key, random};
use crate::{AWS_MANAGED, Kms, KmsError, b64, decode, encode, now, unb64};

const KEYS: &str = "kms/keys/";
const ALIASES: &str = "kms/aliases/";
const MAX_TAGS: usize = 50;

/// Who manages a key: the account (`CreateKey`) or AWS (the services' default keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyManager {
    Customer,
    Aws,
}

impl KeyManager {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyManager::Customer => "CUSTOMER",
            KeyManager::Aws => "AWS",
        }
    }
}

/// A key as DescribeKey shows it: everything but its material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMetadata {
    pub id: String,
    pub arn: String,
    pub description: String,
    pub created: f64,
    pub enabled: bool,
    pub manager: KeyManager,
    pub tags: Vec<Tag>,
}

/// A key's stored record: its metadata and its material sealed under the master key, with the
/// key id as the seal's AAD (so one key's material cannot be passed off as another's).
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    #[serde(flatten)]
    metadata: KeyMetadata,
    material: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    /// `alias/NAME`.
    pub name: String,
    pub arn: String,
    /// `None` for an AWS managed alias whose key is not made yet (ListAliases shows those).
    pub target: Option<String>,
    pub created: Option<f64>,
}

pub struct NewKey {
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub tags: Vec<Tag>,
}

fn material_aad(id: &str) -> Vec<u8> {
    format!("flotilla-kms-key:{id}").into_bytes()
}

fn check_alias_name(name: &str) -> Result<(), KmsError> {
    let ok = name.len() <= 256
        && name.strip_prefix("alias/").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        });
    if !ok {
        return Err(KmsError::InvalidAliasName(format!(
            "Alias name {name:?} must begin with alias/ and continue with 1 or more letters, digits, /, _ or -."
        )));
    }
    Ok(())
}

/// What a caller wrote for a key, made plain.
enum KeyRef {
    Id(String),
    Alias(String),
}

impl Kms {
    fn key_ref(&self, key_id: &str) -> Result<KeyRef, KmsError> {
        let prefix = format!("arn:aws:kms:{}:{}:", self.identity.region, self.identity.account);
        let plain = match key_id.strip_prefix("arn:") {
            Some(_) => key_id.strip_prefix(&prefix).ok_or_else(|| {
                KmsError::NotFound(format!("Invalid arn {key_id}: not a KMS key or alias of {prefix}"))
            })?,
            None => key_id,
        };
        if let Some(id) = plain.strip_prefix("key/") {
            return Ok(KeyRef::Id(id.to_owned()));
        }
        if plain.starts_with("alias/") {
            return Ok(KeyRef::Alias(plain.to_owned()));
        }
        if key_id.starts_with("arn:") {
            return Err(KmsError::NotFound(format!("Invalid arn {key_id}")));
        }
        Ok(KeyRef::Id(plain.to_owned()))
    }

    async fn record(&self, id: &str) -> Result<Option<(KeyRecord, u64)>, KmsError> {
        match self.store.get(&format!("{KEYS}{id}")).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    async fn alias_record(&self, name: &str) -> Result<Option<(Alias, u64)>, KmsError> {
        match self.store.get(&format!("{ALIASES}{name}")).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    fn new_record(&self, description: String, manager: KeyManager, tags: Vec<Tag>) -> KeyRecord {
        let id = uuid::Uuid::new_v4().to_string();
        let material = b64(&self.master.seal(&material_aad(&id), &random::<KEY_LEN>()));
        let metadata = KeyMetadata {
            arn: self.identity.kms_key(&id),
            id,
            description,
            created: now(),
            enabled: true,
            manager,
            tags,
        };
        KeyRecord { metadata, material }
    }

    /// The key `key_id` names. An AWS managed alias whose key does not exist yet gets it now.
    async fn find(&self, key_id: &str) -> Result<KeyRecord, KmsError> {
        let not_found = || KmsError::NotFound(format!("Key '{key_id}' does not exist"));
        let id = match self.key_ref(key_id)? {
            KeyRef::Id(id) => id,
            KeyRef::Alias(name) => match self.alias_record(&name).await? {
                Some((alias, _)) => alias.target.ok_or_else(not_found)?,
                None => match AWS_MANAGED.iter().find(|(n, _)| *n == name) {
                    Some((_, description)) => self.make_managed(&name, description).await?,
                    None => {
                        return Err(KmsError::NotFound(format!(
                            "Alias {} is not found.",
                            self.identity.kms_alias(&name)
                        )));
                    }
                },
            },
        };
        Ok(self.record(&id).await?.ok_or_else(not_found)?.0)
    }

    /// Makes the AWS managed key `alias` names, with the alias, in one transaction; returns the
    /// key id (another server's, if it made it first).
    async fn make_managed(&self, alias: &str, description: &str) -> Result<String, KmsError> {
        let record = self.new_record(description.to_owned(), KeyManager::Aws, Vec::new());
        let id = record.metadata.id.clone();
        let entry = Alias {
            name: alias.to_owned(),
            arn: self.identity.kms_alias(alias),
            target: Some(id.clone()),
            created: Some(record.metadata.created),
        };
        let alias_key = format!("{ALIASES}{alias}");
        let txn = Txn::new()
            .when(Compare::absent(&alias_key))
            .then(Op::put(format!("{KEYS}{id}"), encode(&record)))
            .then(Op::put(&alias_key, encode(&entry)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(id),
            TxnOutcome::Conflict => {
                let (existing, _) = self
                    .alias_record(alias)
                    .await?
                    .ok_or_else(|| KmsError::NotFound(format!("Alias {alias} vanished while being made")))?;
                existing.target.ok_or_else(|| KmsError::NotFound(format!("Alias {alias} has no key")))
            }
        }
    }

    /// The key's AES-256-GCM key, unsealed from its record.
    pub(crate) fn unseal(&self, metadata: &KeyMetadata, material: &str) -> Result<LessSafeKey, KmsError> {
        let bytes = unb64(material)
            .and_then(|sealed| self.master.open(&material_aad(&metadata.id), &sealed))
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| KmsError::Corrupt {
                key: format!("{KEYS}{}", metadata.id),
                reason: "its material does not open under this master key".into(),
            })?;
        Ok(aead_key(&bytes))
    }

    /// The key `key_id` names, enabled, with its AES key.
    pub(crate) async fn usable(&self, key_id: &str) -> Result<(KeyMetadata, LessSafeKey), KmsError> {
        let record = self.find(key_id).await?;
        if !record.metadata.enabled {
            return Err(KmsError::Disabled(format!("{} is disabled.", record.metadata.arn)));
        }
        let key = self.unseal(&record.metadata, &record.material)?;
        Ok((record.metadata, key))
    }

    pub async fn create_key(&self, new: NewKey) -> Result<KeyMetadata, KmsError> {
        if let Some(usage) = new.key_usage.as_deref().filter(|u| *u != "ENCRYPT_DECRYPT") {
            return Err(KmsError::Unsupported(format!(
                "KeyUsage {usage} is not supported; Flotilla's keys are ENCRYPT_DECRYPT."
            )));
        }
        if let Some(spec) = new.key_spec.as_deref().filter(|s| *s != "SYMMETRIC_DEFAULT") {
            return Err(KmsError::Unsupported(format!(
                "KeySpec {spec} is not supported; Flotilla's keys are SYMMETRIC_DEFAULT."
            )));
        }
        if new.tags.len() > MAX_TAGS {
            return Err(KmsError::Validation(format!("A key takes at most {MAX_TAGS} tags.")));
        }
        if let Some(t) = new.tags.iter().find(|t| t.key.is_empty() || t.key.starts_with("aws:")) {
            return Err(KmsError::Validation(format!(
                "Tag key {:?} is empty or uses the reserved aws: prefix.",
                t.key
            )));
        }
        let record = self.new_record(new.description.unwrap_or_default(), KeyManager::Customer, new.tags);
        let key = format!("{KEYS}{}", record.metadata.id);
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&record)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(record.metadata),
            TxnOutcome::Conflict => Err(KmsError::AlreadyExists(format!("Key {} already exists", record.metadata.id))),
        }
    }

    pub async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, KmsError> {
        Ok(self.find(key_id).await?.metadata)
    }

    /// Every key, by id.
    pub async fn list_keys(&self) -> Result<Vec<KeyMetadata>, KmsError> {
        let mut out = Vec::new();
        for kv in self.store.list_prefix(KEYS).await? {
            out.push(decode::<KeyRecord>(&kv)?.metadata);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Enables or disables a customer managed key; AWS managed keys stay enabled.
    pub async fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<KeyMetadata, KmsError> {
        loop {
            let id = self.find(key_id).await?.metadata.id;
            let Some((mut record, revision)) = self.record(&id).await? else {
                return Err(KmsError::NotFound(format!("Key '{key_id}' does not exist")));
            };
            if record.metadata.manager == KeyManager::Aws {
                return Err(KmsError::InvalidState(format!(
                    "{} is an AWS managed key; its state cannot be changed.",
                    record.metadata.arn
                )));
            }
            record.metadata.enabled = enabled;
            let key = format!("{KEYS}{id}");
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.metadata);
            }
        }
    }

    /// Names the customer managed key `target` with `name` (`alias/...`, not `alias/aws/...`).
    pub async fn create_alias(&self, name: &str, target: &str) -> Result<Alias, KmsError> {
        check_alias_name(name)?;
        if name.starts_with("alias/aws/") {
            return Err(KmsError::InvalidAliasName(format!(
                "Alias {name} uses the prefix alias/aws/, which is reserved for AWS managed keys."
            )));
        }
        if matches!(self.key_ref(target)?, KeyRef::Alias(_)) {
            return Err(KmsError::Validation(format!(
                "TargetKeyId {target} must be a key id or key ARN, not an alias."
            )));
        }
        let key = self.find(target).await?.metadata;
        if key.manager == KeyManager::Aws {
            return Err(KmsError::InvalidState(format!("{} is an AWS managed key; it cannot take an alias.", key.arn)));
        }
        let alias = Alias {
            name: name.to_owned(),
            arn: self.identity.kms_alias(name),
            target: Some(key.id),
            created: Some(now()),
        };
        let alias_key = format!("{ALIASES}{name}");
        let txn = Txn::new().when(Compare::absent(&alias_key)).then(Op::put(&alias_key, encode(&alias)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(alias),
            TxnOutcome::Conflict => {
                Err(KmsError::AlreadyExists(format!("An alias with the name {} already exists", alias.arn)))
            }
        }
    }

    pub async fn delete_alias(&self, name: &str) -> Result<(), KmsError> {
        if name.starts_with("alias/aws/") {
            return Err(KmsError::InvalidAliasName(format!("Alias {name} belongs to AWS and cannot be deleted.")));
        }
        let key = format!("{ALIASES}{name}");
        loop {
            let Some((_, revision)) = self.alias_record(name).await? else {
                return Err(KmsError::NotFound(format!("Alias {} is not found.", self.identity.kms_alias(name))));
            };
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::delete(&key));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
    }

    /// Every alias by name, or those of the key `key_id` names. The AWS managed aliases are
    /// listed (without a target) before their keys exist, as on AWS.
    pub async fn list_aliases(&self, key_id: Option<&str>) -> Result<Vec<Alias>, KmsError> {
        let mut out: Vec<Alias> = Vec::new();
        for kv in self.store.list_prefix(ALIASES).await? {
            out.push(decode(&kv)?);
        }
        match key_id {
            Some(key_id) => {
                let id = match self.key_ref(key_id)? {
                    KeyRef::Id(id) => id,
                    KeyRef::Alias(_) => {
                        return Err(KmsError::Validation(format!("KeyId {key_id} must be a key id or key ARN.")));
                    }
                };
                if self.record(&id).await?.is_none() {
                    return Err(KmsError::NotFound(format!("Key '{key_id}' does not exist")));
                }
                out.retain(|a| a.target.as_deref() == Some(id.as_str()));
            }
            None => {
                for (name, _) in AWS_MANAGED {
                    if !out.iter().any(|a| a.name == *name) {
                        out.push(Alias {
                            name: (*name).to_owned(),
                            arn: self.identity.kms_alias(name),
                            target: None,
                            created: None,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
