//! Secrets Manager secrets: a name, an ARN with AWS's random six-character suffix, and
//! versions of a string or binary value carrying staging labels (`AWSCURRENT` moves to each new
//! value, the one before becomes `AWSPREVIOUS`). Deletion is scheduled unless forced; a secret
//! scheduled for deletion refuses reads. Every version's value is KMS ciphertext under the
//! secret's key (default `alias/aws/secretsmanager`).

use std::collections::BTreeMap;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

use crate::{Secrets, SecretsError, b64, context, decode, encode, now, unb64};

const PREFIX: &str = "secretsmanager/secrets/";
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
/// How many versions without a label are kept, besides the labelled ones.
const UNLABELLED_KEPT: usize = 10;
/// The key secrets are encrypted with when they name none.
pub const DEFAULT_KEY: &str = "alias/aws/secretsmanager";

/// A secret's value: text, or base64 of bytes (as the wire carries a blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretValue {
    String(String),
    Binary(String),
}

/// A version's value as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredValue {
    /// Plaintext, as versions were stored before values were encrypted (the same JSON as
    /// [`SecretValue`]'s), until [`Secrets::seal_plaintext`] rewrites them.
    String(String),
    Binary(String),
    /// Base64 of the KMS ciphertext of the value's text (a binary value's base64).
    Sealed {
        blob: String,
        binary: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretVersion {
    pub id: String,
    pub value: StoredValue,
    pub stages: Vec<String>,
    pub created: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    pub created: f64,
    pub last_changed: f64,
    /// When a scheduled deletion takes effect.
    pub deletion_date: Option<f64>,
    /// The KMS key new versions are encrypted with, as given; `None`: `alias/aws/secretsmanager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Oldest first.
    pub versions: Vec<SecretVersion>,
}

impl Secret {
    pub fn version_stages(&self) -> BTreeMap<String, Vec<String>> {
        self.versions.iter().filter(|v| !v.stages.is_empty()).map(|v| (v.id.clone(), v.stages.clone())).collect()
    }
}

/// A secret as ListSecrets shows it (no values).
pub type ListedSecret = Secret;

pub struct NewSecret {
    pub name: String,
    pub value: Option<SecretValue>,
    pub description: Option<String>,
    /// Becomes the first version's id (the SDKs always send one).
    pub token: Option<String>,
    /// The KMS key (id, ARN or alias); default `alias/aws/secretsmanager`.
    pub kms_key_id: Option<String>,
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn check_name(name: &str) -> Result<(), SecretsError> {
    if name.is_empty() || name.len() > 512 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    {
        return Err(SecretsError::Invalid(format!(
            "Secret name {name:?}: 1 to 512 letters, digits and /_+=.@- are allowed."
        )));
    }
    Ok(())
}

fn random_id(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| CHARS[rand::random_range(0..CHARS.len())] as char).collect()
}

fn version_id() -> String {
    let h: u128 = rand::random();
    let s = format!("{h:032x}");
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

impl Secrets {
    /// `value` as stored in version `version_id` of the secret `arn`: encrypted under `key_id`.
    pub(crate) async fn seal_secret(
        &self,
        arn: &str,
        key_id: Option<&str>,
        version_id: &str,
        value: &SecretValue,
    ) -> Result<StoredValue, SecretsError> {
        let (text, binary) = match value {
            SecretValue::String(s) => (s, false),
            SecretValue::Binary(b) => (b, true),
        };
        let context = context(&[("SecretARN", arn), ("SecretVersionId", version_id)]);
        let (blob, _) = self
            .kms
            .encrypt(key_id.unwrap_or(DEFAULT_KEY), text.as_bytes(), &context)
            .await
            .map_err(SecretsError::Encryption)?;
        Ok(StoredValue::Sealed { blob: b64(&blob), binary })
    }

    /// The value of `version` of the secret `arn`, decrypted.
    pub async fn open_secret(&self, arn: &str, version: &SecretVersion) -> Result<SecretValue, SecretsError> {
        let (blob, binary) = match &version.value {
            StoredValue::String(s) => return Ok(SecretValue::String(s.clone())),
            StoredValue::Binary(b) => return Ok(SecretValue::Binary(b.clone())),
            StoredValue::Sealed { blob, binary } => (blob, *binary),
        };
        let corrupt = || SecretsError::Invalid(format!("version {} of {arn} holds no readable ciphertext", version.id));
        let blob = unb64(blob).ok_or_else(corrupt)?;
        let context = context(&[("SecretARN", arn), ("SecretVersionId", &version.id)]);
        let (plain, _) = self.kms.decrypt(&blob, &context, None).await.map_err(SecretsError::Decryption)?;
        let text = String::from_utf8(plain).map_err(|_| corrupt())?;
        Ok(if binary { SecretValue::Binary(text) } else { SecretValue::String(text) })
    }

    /// The stored secret a `SecretId` (name, full ARN, or ARN without the random suffix) names.
    async fn find(&self, id: &str) -> Result<(Secret, u64), SecretsError> {
        let not_found = || SecretsError::SecretNotFound { id: id.to_string() };
        let names: Vec<String> = match id.strip_prefix("arn:") {
            Some(_) => {
                let resource = id.split_once(":secret:").map(|(_, r)| r).ok_or_else(not_found)?;
                let mut candidates = vec![resource.to_string()];
                if resource.len() > 7 && resource.as_bytes()[resource.len() - 7] == b'-' {
                    candidates.insert(0, resource[..resource.len() - 7].to_string());
                }
                candidates
            }
            None => vec![id.to_string()],
        };
        for name in names {
            if let Some(kv) = self.store.get(&key(&name)).await? {
                let secret: Secret = decode(&kv)?;
                let matches = !id.starts_with("arn:") || secret.arn == id || secret.arn.starts_with(&format!("{id}-"));
                if matches {
                    return Ok((secret, kv.mod_revision));
                }
            }
        }
        Err(not_found())
    }

    fn live(secret: &Secret) -> Result<(), SecretsError> {
        if secret.deletion_date.is_some() {
            return Err(SecretsError::InvalidRequest(format!(
                "You can't perform this operation on the secret {} because it was marked for deletion.",
                secret.name
            )));
        }
        Ok(())
    }

    /// Writes `secret` if its record is still at `revision` (0: must not exist yet).
    async fn save(&self, secret: &Secret, revision: u64) -> Result<bool, SecretsError> {
        let key = key(&secret.name);
        let compare = if revision == 0 { Compare::absent(&key) } else { Compare::revision(&key, revision) };
        let txn = Txn::new().when(compare).then(Op::put(&key, encode(secret)));
        Ok(matches!(self.store.txn(txn).await?, TxnOutcome::Committed(_)))
    }

    pub async fn create_secret(&self, s: NewSecret) -> Result<Secret, SecretsError> {
        check_name(&s.name)?;
        let t = now();
        let arn = self.identity.secret(&s.name, &random_id(6));
        let mut versions = Vec::new();
        if let Some(value) = s.value {
            let id = s.token.unwrap_or_else(version_id);
            let value = self.seal_secret(&arn, s.kms_key_id.as_deref(), &id, &value).await?;
            versions.push(SecretVersion { id, value, stages: vec![CURRENT.into()], created: t });
        } else if let Some(key) = &s.kms_key_id {
            // The key is checked now, not at the first value.
            self.kms.describe_key(key).await.map_err(SecretsError::Encryption)?;
        }
        let secret = Secret {
            name: s.name.clone(),
            arn,
            description: s.description,
            created: t,
            last_changed: t,
            deletion_date: None,
            kms_key_id: s.kms_key_id,
            versions,
        };
        if !self.save(&secret, 0).await? {
            return Err(SecretsError::SecretAlreadyExists { name: s.name });
        }
        Ok(secret)
    }

    /// The version with `version_id`, or the one labelled `stage` (default `AWSCURRENT`), and
    /// its value decrypted.
    pub async fn get_secret_value(
        &self,
        id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<(Secret, SecretVersion, SecretValue), SecretsError> {
        let (secret, _) = self.find(id).await?;
        Self::live(&secret)?;
        let stage = stage.unwrap_or(CURRENT);
        let version = secret
            .versions
            .iter()
            .find(|v| match version_id {
                Some(vid) => v.id == vid,
                None => v.stages.iter().any(|s| s == stage),
            })
            .cloned()
            .ok_or_else(|| SecretsError::SecretNotFound {
                id: format!("{id} (version {})", version_id.unwrap_or(stage)),
            })?;
        let value = self.open_secret(&secret.arn, &version).await?;
        Ok((secret, version, value))
    }

    /// Adds a version that becomes `AWSCURRENT`; the previous current one becomes `AWSPREVIOUS`.
    pub async fn put_secret_value(
        &self,
        id: &str,
        value: SecretValue,
        token: Option<String>,
    ) -> Result<(Secret, SecretVersion), SecretsError> {
        let vid = token.unwrap_or_else(version_id);
        loop {
            let (mut secret, rev) = self.find(id).await?;
            Self::live(&secret)?;
            if let Some(existing) = secret.versions.iter().find(|v| v.id == vid) {
                // A retried request: the same token with the same value is the same version.
                if self.open_secret(&secret.arn, existing).await? == value {
                    let v = existing.clone();
                    return Ok((secret, v));
                }
                return Err(SecretsError::SecretAlreadyExists { name: format!("{} version {vid}", secret.name) });
            }
            for v in &mut secret.versions {
                v.stages.retain(|s| s != PREVIOUS);
                if let Some(pos) = v.stages.iter().position(|s| s == CURRENT) {
                    v.stages[pos] = PREVIOUS.into();
                }
            }
            let t = now();
            let sealed = self.seal_secret(&secret.arn, secret.kms_key_id.as_deref(), &vid, &value).await?;
            let version = SecretVersion { id: vid.clone(), value: sealed, stages: vec![CURRENT.into()], created: t };
            secret.versions.push(version.clone());
            let unlabelled = secret.versions.iter().filter(|v| v.stages.is_empty()).count();
            let mut drop = unlabelled.saturating_sub(UNLABELLED_KEPT);
            secret.versions.retain(|v| {
                let gone = drop > 0 && v.stages.is_empty();
                drop -= usize::from(gone);
                !gone
            });
            secret.last_changed = t;
            if self.save(&secret, rev).await? {
                return Ok((secret, version));
            }
        }
    }

    /// Changes the description and/or the KMS key of new versions, and/or adds a value (as
    /// PutSecretValue does, under the new key).
    pub async fn update_secret(
        &self,
        id: &str,
        description: Option<String>,
        kms_key_id: Option<String>,
        value: Option<SecretValue>,
        token: Option<String>,
    ) -> Result<(Secret, Option<SecretVersion>), SecretsError> {
        if let Some(key) = &kms_key_id {
            self.kms.describe_key(key).await.map_err(SecretsError::Encryption)?;
        }
        if description.is_some() || kms_key_id.is_some() {
            loop {
                let (mut secret, rev) = self.find(id).await?;
                Self::live(&secret)?;
                if let Some(d) = &description {
                    secret.description = Some(d.clone());
                }
                if kms_key_id.is_some() {
                    secret.kms_key_id = kms_key_id.clone();
                }
                secret.last_changed = now();
                if self.save(&secret, rev).await? {
                    break;
                }
            }
        }
        let version = match value {
            Some(v) => Some(self.put_secret_value(id, v, token).await?.1),
            None => None,
        };
        Ok((self.find(id).await?.0, version))
    }

    pub async fn describe_secret(&self, id: &str) -> Result<Secret, SecretsError> {
        Ok(self.find(id).await?.0)
    }

    /// Every secret by name (ones scheduled for deletion included, as AWS lists them only when
    /// asked; the API layer filters).
    pub async fn list_secrets(&self) -> Result<Vec<ListedSecret>, SecretsError> {
        let mut out: Vec<Secret> =
            self.store.list_prefix(PREFIX).await?.iter().map(decode).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) async fn seal_plaintext_secrets(&self) -> Result<usize, SecretsError> {
        let mut sealed = 0;
        for kv in self.store.list_prefix(PREFIX).await? {
            let mut kv = kv;
            loop {
                let mut secret: Secret = decode(&kv)?;
                let plain = |v: &SecretVersion| !matches!(v.value, StoredValue::Sealed { .. });
                if !secret.versions.iter().any(plain) {
                    break;
                }
                let (arn, key) = (secret.arn.clone(), secret.kms_key_id.clone());
                let mut count = 0;
                for v in secret.versions.iter_mut().filter(|v| plain(v)) {
                    let value = match &v.value {
                        StoredValue::String(s) => SecretValue::String(s.clone()),
                        StoredValue::Binary(b) => SecretValue::Binary(b.clone()),
                        StoredValue::Sealed { .. } => continue,
                    };
                    v.value = self.seal_secret(&arn, key.as_deref(), &v.id, &value).await?;
                    count += 1;
                }
                if self.save(&secret, kv.mod_revision).await? {
                    sealed += count;
                    break;
                }
                match self.store.get(&kv.key).await? {
                    Some(now) => kv = now,
                    None => break,
                }
            }
        }
        Ok(sealed)
    }

    /// Forced: gone now. Otherwise scheduled `recovery_days` (7 to 30, default 30) ahead; reads
    /// are refused from now on.
    pub async fn delete_secret(
        &self,
        id: &str,
        force: bool,
        recovery_days: Option<i64>,
    ) -> Result<Secret, SecretsError> {
        let days = recovery_days.unwrap_or(30);
        if force && recovery_days.is_some() {
            return Err(SecretsError::Invalid(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.".into(),
            ));
        }
        if !(7..=30).contains(&days) {
            return Err(SecretsError::Invalid("RecoveryWindowInDays must be between 7 and 30.".into()));
        }
        loop {
            let (mut secret, rev) = self.find(id).await?;
            let key = key(&secret.name);
            let t = now();
            if force {
                let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::delete(&key));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                    secret.deletion_date = Some(t);
                    return Ok(secret);
                }
                continue;
            }
            secret.deletion_date.get_or_insert(t + days as f64 * 86_400.0);
            if self.save(&secret, rev).await? {
                return Ok(secret);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::secrets;

    fn new(name: &str, value: &str) -> NewSecret {
        NewSecret {
            name: name.into(),
            value: Some(SecretValue::String(value.into())),
            description: None,
            token: None,
            kms_key_id: None,
        }
    }

    #[tokio::test]
    async fn versions_move_the_current_label_and_arns_find_the_secret() {
        let (s, _dir) = secrets().await;
        let created = s.create_secret(new("prod/db", "one")).await.unwrap();
        assert!(created.arn.starts_with("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-"));
        assert_eq!(created.arn.len(), "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-".len() + 6);
        assert!(matches!(s.create_secret(new("prod/db", "x")).await, Err(SecretsError::SecretAlreadyExists { .. })));
        let (_, v2) = s.put_secret_value("prod/db", SecretValue::String("two".into()), None).await.unwrap();
        let (_, cur, value) = s.get_secret_value(&created.arn, None, None).await.unwrap();
        assert_eq!((cur.id.as_str(), &value), (v2.id.as_str(), &SecretValue::String("two".into())));
        assert!(matches!(cur.value, StoredValue::Sealed { binary: false, .. }), "{:?}", cur.value);
        let (_, _, prev) = s.get_secret_value("prod/db", None, Some(PREVIOUS)).await.unwrap();
        assert_eq!(prev, SecretValue::String("one".into()));
        // A retried PutSecretValue (same token, same value) is the same version.
        let (_, again) =
            s.put_secret_value("prod/db", SecretValue::String("two".into()), Some(v2.id.clone())).await.unwrap();
        assert_eq!(again.id, v2.id);
        let partial = created.arn[..created.arn.len() - 7].to_string();
        assert_eq!(s.describe_secret(&partial).await.unwrap().name, "prod/db");
        let wrong = format!("{partial}-ZZZZZZ");
        assert!(matches!(s.describe_secret(&wrong).await, Err(SecretsError::SecretNotFound { .. })));
    }

    #[tokio::test]
    async fn a_scheduled_deletion_refuses_reads_and_a_forced_one_removes() {
        let (s, _dir) = secrets().await;
        s.create_secret(new("a", "1")).await.unwrap();
        let d = s.delete_secret("a", false, Some(7)).await.unwrap();
        assert!(d.deletion_date.unwrap() > now() + 6.0 * 86_400.0);
        assert!(matches!(s.get_secret_value("a", None, None).await, Err(SecretsError::InvalidRequest(_))));
        s.delete_secret("a", true, None).await.unwrap();
        assert!(matches!(s.describe_secret("a").await, Err(SecretsError::SecretNotFound { .. })));
        assert!(s.delete_secret("b", false, Some(3)).await.is_err());
    }
}
