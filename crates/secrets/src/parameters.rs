//! SSM parameters: PutParameter (new or overwrite, each write a new version), GetParameter(s)
//! by name, ARN or `name:version`, GetParametersByPath, DescribeParameters, DeleteParameter(s).
//! A `SecureString` is kept as KMS ciphertext; reads return that ciphertext (base64) and
//! [`Secrets::decrypt_parameter`] turns it into the value, so the API can check `kms:Decrypt`
//! on the key in between.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

use crate::{Secrets, SecretsError, b64, context, decode, encode, now, unb64};

const PREFIX: &str = "ssm/params/";
/// AWS keeps the last 100 versions of a parameter.
const HISTORY: usize = 100;
const MAX_VALUE: usize = 4096;
/// The key a `SecureString` is encrypted with when PutParameter names none.
pub const DEFAULT_KEY: &str = "alias/aws/ssm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParameterType {
    String,
    StringList,
    SecureString,
}

impl ParameterType {
    pub fn parse(s: &str) -> Result<ParameterType, SecretsError> {
        match s {
            "String" => Ok(ParameterType::String),
            "StringList" => Ok(ParameterType::StringList),
            "SecureString" => Ok(ParameterType::SecureString),
            other => {
                Err(SecretsError::Invalid(format!("Type {other:?} is not one of String, StringList, SecureString.")))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::StringList => "StringList",
            ParameterType::SecureString => "SecureString",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    version: u64,
    /// The value; for a `SecureString` with a `key_id`, base64 of its KMS ciphertext blob. A
    /// `SecureString` without one was stored before values were encrypted: plaintext, until
    /// [`Secrets::seal_plaintext`] rewrites it.
    value: String,
    kind: ParameterType,
    modified: f64,
    /// The `KeyId` a `SecureString` was encrypted with, as given (`alias/aws/ssm` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
}

impl Version {
    pub(crate) fn is_plaintext_secure(&self) -> bool {
        self.kind == ParameterType::SecureString && self.key_id.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    description: Option<String>,
    /// Oldest first; the last is current.
    history: Vec<Version>,
}

/// One version of a parameter, as GetParameter and DescribeParameters show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub arn: String,
    pub kind: ParameterType,
    /// The value; for a `SecureString`, base64 of its KMS ciphertext (what AWS shows without
    /// `WithDecryption`): [`Secrets::decrypt_parameter`] gives the value.
    pub value: String,
    pub version: u64,
    pub last_modified: f64,
    pub description: Option<String>,
    /// A `SecureString`'s `KeyId` as given (`alias/aws/ssm` by default).
    pub key_id: Option<String>,
    /// A `SecureString`'s key's ARN: the resource of `kms:Decrypt`.
    pub key_arn: Option<String>,
}

pub struct NewParameter {
    pub name: String,
    pub value: String,
    pub kind: Option<ParameterType>,
    pub description: Option<String>,
    pub overwrite: bool,
    /// A `SecureString`'s KMS key (id, ARN or alias); default `alias/aws/ssm`.
    pub key_id: Option<String>,
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// SSM's naming rules: letters, digits and `_.-/`; a name with a `/` is a path from the root;
/// nothing under the reserved `aws`/`ssm` prefixes; at most 15 levels.
pub(crate) fn check_name(name: &str) -> Result<(), SecretsError> {
    let bad = |why: &str| Err(SecretsError::Invalid(format!("Parameter name {name:?}: {why}")));
    if name.is_empty() || name.len() > 2048 {
        return bad("must be 1 to 2048 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)) {
        return bad("only letters, digits and _ . - / are allowed");
    }
    if name.contains('/') && !name.starts_with('/') {
        return bad("a hierarchical name must start with /");
    }
    if name.ends_with('/') || name.contains("//") {
        return bad("path segments must not be empty");
    }
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return bad("names beginning with aws or ssm are reserved");
    }
    if name.matches('/').count() > 15 {
        return bad("at most 15 levels are allowed");
    }
    Ok(())
}

impl Secrets {
    pub fn parameter_arn(&self, name: &str) -> String {
        self.identity.ssm_parameter(name)
    }

    /// A name, `name:version`, or a parameter ARN, to (name, version).
    fn parameter_ref(&self, id: &str) -> Result<(String, Option<u64>), SecretsError> {
        let mut id = id.to_string();
        if let Some(rest) = id.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let path = parts.get(4).and_then(|p| p.strip_prefix("parameter/"));
            match (parts.get(1), path) {
                (Some(&"ssm"), Some(path)) if !path.is_empty() => {
                    id = if path.contains('/') { format!("/{path}") } else { path.to_string() };
                }
                _ => return Err(SecretsError::Invalid(format!("{id} is not an SSM parameter ARN"))),
            }
        }
        match id.rsplit_once(':') {
            Some((name, v)) => {
                let version = v.parse().map_err(|_| {
                    SecretsError::Invalid(format!("{id}: only a version number may follow the name's ':'"))
                })?;
                Ok((name.to_string(), Some(version)))
            }
            None => Ok((id, None)),
        }
    }

    /// A `SecureString` value encrypted under `key_id` for the parameter `arn`: base64 of the
    /// blob, and the key's ARN.
    pub(crate) async fn seal_parameter(
        &self,
        arn: &str,
        key_id: &str,
        value: &str,
    ) -> Result<(String, String), SecretsError> {
        let (blob, key_arn) = self
            .kms
            .encrypt(key_id, value.as_bytes(), &context(&[("PARAMETER_ARN", arn)]))
            .await
            .map_err(SecretsError::Encryption)?;
        Ok((b64(&blob), key_arn))
    }

    async fn to_parameter(&self, r: &Record, v: &Version) -> Result<Parameter, SecretsError> {
        let arn = self.parameter_arn(&r.name);
        let (value, key_id, key_arn) = match (v.kind, &v.key_id) {
            (ParameterType::SecureString, Some(key_id)) => {
                let key_arn = unb64(&v.value)
                    .and_then(|blob| flotilla_kms::Kms::blob_key_id(&blob))
                    .map(|id| self.identity.kms_key(&id));
                (v.value.clone(), Some(key_id.clone()), key_arn)
            }
            // Stored before encryption: shown as ciphertext all the same.
            (ParameterType::SecureString, None) => {
                let (value, key_arn) = self.seal_parameter(&arn, DEFAULT_KEY, &v.value).await?;
                (value, Some(DEFAULT_KEY.to_owned()), Some(key_arn))
            }
            _ => (v.value.clone(), None, None),
        };
        Ok(Parameter {
            name: r.name.clone(),
            arn,
            kind: v.kind,
            value,
            version: v.version,
            last_modified: v.modified,
            description: r.description.clone(),
            key_id,
            key_arn,
        })
    }

    /// The value of `p` as read: a `SecureString`'s ciphertext decrypted, others as they are.
    pub async fn decrypt_parameter(&self, p: &Parameter) -> Result<String, SecretsError> {
        if p.kind != ParameterType::SecureString {
            return Ok(p.value.clone());
        }
        let blob = unb64(&p.value).ok_or_else(|| SecretsError::Invalid(format!("{} holds no ciphertext", p.arn)))?;
        let (plain, _) = self
            .kms
            .decrypt(&blob, &context(&[("PARAMETER_ARN", &p.arn)]), None)
            .await
            .map_err(SecretsError::Decryption)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Invalid(format!("{} does not decrypt to text", p.arn)))
    }

    /// The parameter with its value decrypted (what a task's `secrets` gets).
    pub async fn get_parameter_decrypted(&self, id: &str) -> Result<Parameter, SecretsError> {
        let mut p = self.get_parameter(id).await?;
        p.value = self.decrypt_parameter(&p).await?;
        Ok(p)
    }

    /// Creates the parameter or, with `overwrite`, adds a version. Returns the new version.
    pub async fn put_parameter(&self, p: NewParameter) -> Result<u64, SecretsError> {
        check_name(&p.name)?;
        if p.value.is_empty() || p.value.len() > MAX_VALUE {
            return Err(SecretsError::Invalid(format!(
                "Parameter value must be 1 to {MAX_VALUE} characters (standard tier); it is {}.",
                p.value.len()
            )));
        }
        let key = key(&p.name);
        let arn = self.parameter_arn(&p.name);
        loop {
            let existing = self.store.get(&key).await?;
            let (mut record, compare) = match &existing {
                Some(kv) => {
                    if !p.overwrite {
                        return Err(SecretsError::ParameterAlreadyExists { name: p.name.clone() });
                    }
                    (decode::<Record>(kv)?, Compare::revision(&key, kv.mod_revision))
                }
                None => (Record { name: p.name.clone(), description: None, history: vec![] }, Compare::absent(&key)),
            };
            let last = record.history.last();
            let kind = match (p.kind, last) {
                (Some(k), _) => k,
                (None, Some(v)) => v.kind,
                (None, None) => {
                    return Err(SecretsError::Invalid(
                        "A parameter type is required when you create a parameter.".into(),
                    ));
                }
            };
            let version = last.map_or(1, |v| v.version + 1);
            let (value, key_id) = match kind {
                ParameterType::SecureString => {
                    let key_id = p.key_id.clone().unwrap_or_else(|| DEFAULT_KEY.to_owned());
                    (self.seal_parameter(&arn, &key_id, &p.value).await?.0, Some(key_id))
                }
                _ if p.key_id.is_some() => {
                    return Err(SecretsError::Invalid("KeyId is only valid for a SecureString parameter.".into()));
                }
                _ => (p.value.clone(), None),
            };
            record.history.push(Version { version, value, kind, modified: now(), key_id });
            if record.history.len() > HISTORY {
                record.history.remove(0);
            }
            if p.description.is_some() {
                record.description = p.description.clone();
            }
            let txn = Txn::new().when(compare).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(version);
            }
        }
    }

    /// By name, `name:version` or ARN.
    pub async fn get_parameter(&self, id: &str) -> Result<Parameter, SecretsError> {
        let (name, version) = self.parameter_ref(id)?;
        let not_found = || SecretsError::ParameterNotFound { name: id.to_string() };
        let kv = self.store.get(&key(&name)).await?.ok_or_else(not_found)?;
        let record: Record = decode(&kv)?;
        let v = match version {
            Some(n) => record.history.iter().find(|v| v.version == n),
            None => record.history.last(),
        }
        .ok_or_else(not_found)?;
        self.to_parameter(&record, v).await
    }

    /// Every current parameter, by name.
    pub async fn list_parameters(&self) -> Result<Vec<Parameter>, SecretsError> {
        let mut out = Vec::new();
        for kv in self.store.list_prefix(PREFIX).await? {
            let record: Record = decode(&kv)?;
            if let Some(v) = record.history.last() {
                out.push(self.to_parameter(&record, v).await?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Parameters below `path` (`/a/b`): its direct children, or with `recursive` all below.
    pub async fn parameters_by_path(&self, path: &str, recursive: bool) -> Result<Vec<Parameter>, SecretsError> {
        if !path.starts_with('/') {
            return Err(SecretsError::Invalid(format!("The path {path:?} must start with /.")));
        }
        let base = if path.ends_with('/') { path.to_string() } else { format!("{path}/") };
        Ok(self
            .list_parameters()
            .await?
            .into_iter()
            .filter(|p| p.name.strip_prefix(&base).is_some_and(|rest| recursive || !rest.contains('/')))
            .collect())
    }

    pub(crate) async fn seal_plaintext_parameters(&self) -> Result<usize, SecretsError> {
        let mut sealed = 0;
        for kv in self.store.list_prefix(PREFIX).await? {
            let mut kv = kv;
            loop {
                let mut record: Record = decode(&kv)?;
                if !record.history.iter().any(Version::is_plaintext_secure) {
                    break;
                }
                let arn = self.parameter_arn(&record.name);
                let mut count = 0;
                for v in record.history.iter_mut().filter(|v| v.is_plaintext_secure()) {
                    v.value = self.seal_parameter(&arn, DEFAULT_KEY, &v.value).await?.0;
                    v.key_id = Some(DEFAULT_KEY.to_owned());
                    count += 1;
                }
                let txn = Txn::new()
                    .when(Compare::revision(&kv.key, kv.mod_revision))
                    .then(Op::put(&kv.key, encode(&record)));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
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

    pub async fn delete_parameter(&self, name: &str) -> Result<(), SecretsError> {
        let key = key(name);
        let kv = self.store.get(&key).await?.ok_or_else(|| SecretsError::ParameterNotFound { name: name.into() })?;
        let txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::delete(&key));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(()),
            // Changed meanwhile: it still exists, so delete what is there now.
            TxnOutcome::Conflict => Box::pin(self.delete_parameter(name)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::secrets;

    fn new(name: &str, value: &str, kind: Option<ParameterType>, overwrite: bool) -> NewParameter {
        NewParameter { name: name.into(), value: value.into(), kind, description: None, overwrite, key_id: None }
    }

    #[tokio::test]
    async fn versions_overwrite_and_lookups_by_arn_and_version() {
        let (s, _dir) = secrets().await;
        assert_eq!(s.put_parameter(new("/app/db", "v1", Some(ParameterType::SecureString), false)).await.unwrap(), 1);
        let again = s.put_parameter(new("/app/db", "v2", None, false)).await.unwrap_err();
        assert!(matches!(again, SecretsError::ParameterAlreadyExists { .. }), "{again}");
        assert_eq!(s.put_parameter(new("/app/db", "v2", None, true)).await.unwrap(), 2);
        let p = s.get_parameter_decrypted("/app/db").await.unwrap();
        assert_eq!((p.value.as_str(), p.version, p.kind), ("v2", 2, ParameterType::SecureString));
        assert_eq!(p.arn, "arn:aws:ssm:us-east-1:123456789012:parameter/app/db");
        assert_eq!(s.get_parameter_decrypted(&p.arn).await.unwrap().value, "v2");
        assert_eq!(s.get_parameter_decrypted("/app/db:1").await.unwrap().value, "v1");
        // Without decryption: the ciphertext, naming the default key.
        let sealed = s.get_parameter("/app/db").await.unwrap();
        assert_ne!(sealed.value, "v2");
        assert_eq!(sealed.key_id.as_deref(), Some(DEFAULT_KEY));
        let ssm_key = s.kms().describe_key(DEFAULT_KEY).await.unwrap();
        assert_eq!(sealed.key_arn.as_deref(), Some(ssm_key.arn.as_str()));
        assert!(matches!(s.get_parameter("/app/db:9").await, Err(SecretsError::ParameterNotFound { .. })));
        s.put_parameter(new("api-key", "k", Some(ParameterType::String), false)).await.unwrap();
        let arn = s.parameter_arn("api-key");
        assert_eq!(s.get_parameter(&arn).await.unwrap().value, "k");
    }

    #[tokio::test]
    async fn paths_list_children_or_everything_below() {
        let (s, _dir) = secrets().await;
        for n in ["/a/x", "/a/b/y", "/ab/z"] {
            s.put_parameter(new(n, "v", Some(ParameterType::String), false)).await.unwrap();
        }
        let names = |v: Vec<Parameter>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names(s.parameters_by_path("/a", false).await.unwrap()), ["/a/x"]);
        assert_eq!(names(s.parameters_by_path("/a/", true).await.unwrap()), ["/a/b/y", "/a/x"]);
        s.delete_parameter("/a/x").await.unwrap();
        assert!(matches!(s.delete_parameter("/a/x").await, Err(SecretsError::ParameterNotFound { .. })));
    }

    #[test]
    fn names_follow_ssm_rules() {
        for ok in ["api-key", "/app/db/password", "a.b_c-d"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "/a//b", "/a/", "awsThing", "/ssm/x", "bad name", "x$"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
