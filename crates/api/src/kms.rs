//! AWS KMS (`TrentService`, JSON 1.1, signing name `kms`): request members in, `flotilla_kms`
//! call, response shape out. Blobs (plaintexts, ciphertexts) are base64 on the wire.

use flotilla_kms::{Alias, Context, KeyMetadata, Kms, NewKey};
use flotilla_types::Tag;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

/// Largest plaintext Encrypt takes, as on AWS.
const MAX_PLAINTEXT: usize = 4096;
const ALGORITHM: &str = "SYMMETRIC_DEFAULT";

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationException", message)
}

fn blob(member: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| ApiError::serialization(format!("{member} is not valid base64.")))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn check_algorithm(algorithm: Option<&str>) -> Result<(), ApiError> {
    match algorithm {
        None | Some(ALGORITHM) => Ok(()),
        Some(other) => Err(ApiError::new(
            "InvalidKeyUsageException",
            format!("EncryptionAlgorithm {other} is not valid for a SYMMETRIC_DEFAULT key; use SYMMETRIC_DEFAULT."),
        )),
    }
}

fn metadata_json(k: &KeyMetadata, account: &str) -> Value {
    json!({
        "AWSAccountId": account, "KeyId": k.id, "Arn": k.arn, "CreationDate": k.created,
        "Enabled": k.enabled, "Description": k.description, "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": if k.enabled { "Enabled" } else { "Disabled" }, "Origin": "AWS_KMS",
        "KeyManager": k.manager.as_str(), "CustomerMasterKeySpec": ALGORITHM, "KeySpec": ALGORITHM,
        "EncryptionAlgorithms": [ALGORITHM], "MultiRegion": false,
    })
}

fn alias_json(a: &Alias) -> Value {
    strip_nulls(json!({
        "AliasName": a.name, "AliasArn": a.arn, "TargetKeyId": a.target,
        "CreationDate": a.created, "LastUpdatedDate": a.created,
    }))
}

/// One page of `items` by `name`: `Limit` (1 to `max`, default `default`) and `Marker`, with
/// KMS's `Truncated` and `NextMarker`.
fn page<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> String,
    limit: Option<i64>,
    marker: Option<&str>,
    (default, max): (usize, usize),
) -> Result<(Vec<T>, Option<String>), ApiError> {
    use flotilla_types::page::{self, Order, PageError};
    let refused = |e| match e {
        PageError::Size { got, max } => validation(format!("Limit must be between 1 and {max}, got {got}.")),
        PageError::Token => ApiError::new("InvalidMarkerException", "The Marker is not one this server issued."),
    };
    let size = page::page_size(limit, default, max).map_err(refused)?;
    let keyed = items.into_iter().map(|i| (name(&i), i)).collect();
    let page = page::paginate(keyed, Order::Ascending, size, marker).map_err(refused)?;
    Ok((page.items, page.next_token))
}

fn listed(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    strip_nulls(json!({key: items, "Truncated": next.is_some(), "NextMarker": next}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireTag {
    tag_key: String,
    tag_value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateKey {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    origin: Option<String>,
    #[serde(default)]
    multi_region: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Listing {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Encrypt {
    key_id: String,
    plaintext: String,
    #[serde(default)]
    encryption_context: Context,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Decrypt {
    ciphertext_blob: String,
    #[serde(default)]
    encryption_context: Context,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasRequest {
    alias_name: String,
    target_key_id: Option<String>,
}

/// Every KMS operation Flotilla serves, each with its typed input.
pub(crate) enum KmsRequest {
    CreateKey(CreateKey),
    DescribeKey(KeyId),
    ListKeys(Listing),
    EnableKey(KeyId),
    DisableKey(KeyId),
    Encrypt(Encrypt),
    Decrypt(Decrypt),
    CreateAlias(AliasRequest),
    DeleteAlias(AliasRequest),
    ListAliases(Listing),
}

impl KmsRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<KmsRequest, ApiError> {
        Ok(match operation {
            "CreateKey" => KmsRequest::CreateKey(parse(input)?),
            "DescribeKey" => KmsRequest::DescribeKey(parse(input)?),
            "ListKeys" => KmsRequest::ListKeys(parse(input)?),
            "EnableKey" => KmsRequest::EnableKey(parse(input)?),
            "DisableKey" => KmsRequest::DisableKey(parse(input)?),
            "Encrypt" => KmsRequest::Encrypt(parse(input)?),
            "Decrypt" => KmsRequest::Decrypt(parse(input)?),
            "CreateAlias" => KmsRequest::CreateAlias(parse(input)?),
            "DeleteAlias" => KmsRequest::DeleteAlias(parse(input)?),
            "ListAliases" => KmsRequest::ListAliases(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnsupportedOperationException",
                    format!("Flotilla does not serve KMS {other}."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(kms: &Kms, request: KmsRequest) -> Result<Value, ApiError> {
    let account = kms.identity().account.clone();
    let answer = match request {
        KmsRequest::CreateKey(req) => {
            if req.origin.as_deref().is_some_and(|o| o != "AWS_KMS") || req.multi_region {
                return Err(ApiError::new(
                    "UnsupportedOperationException",
                    "Flotilla makes single-region keys with KMS-generated material (Origin AWS_KMS) only.",
                ));
            }
            let tags = req.tags.into_iter().map(|t| Tag::new(t.tag_key, t.tag_value)).collect();
            let new = NewKey {
                description: req.description,
                key_usage: req.key_usage,
                key_spec: req.key_spec.or(req.customer_master_key_spec),
                tags,
            };
            json!({"KeyMetadata": metadata_json(&kms.create_key(new).await?, &account)})
        }
        KmsRequest::DescribeKey(req) => {
            json!({"KeyMetadata": metadata_json(&kms.describe_key(&req.key_id).await?, &account)})
        }
        KmsRequest::ListKeys(req) => {
            let keys = kms.list_keys().await?;
            let (items, next) = page(keys, |k| k.id.clone(), req.limit, req.marker.as_deref(), (100, 1000))?;
            let items = items.iter().map(|k| json!({"KeyId": k.id, "KeyArn": k.arn})).collect();
            listed("Keys", items, next)
        }
        KmsRequest::EnableKey(req) => {
            kms.set_enabled(&req.key_id, true).await?;
            json!({})
        }
        KmsRequest::DisableKey(req) => {
            kms.set_enabled(&req.key_id, false).await?;
            json!({})
        }
        KmsRequest::Encrypt(req) => {
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let plaintext = blob("Plaintext", &req.plaintext)?;
            if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
                return Err(validation(format!(
                    "Plaintext must be 1 to {MAX_PLAINTEXT} bytes; it is {}.",
                    plaintext.len()
                )));
            }
            let (ciphertext, key_arn) = kms.encrypt(&req.key_id, &plaintext, &req.encryption_context).await?;
            json!({"CiphertextBlob": b64(&ciphertext), "KeyId": key_arn, "EncryptionAlgorithm": ALGORITHM})
        }
        KmsRequest::Decrypt(req) => {
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let ciphertext = blob("CiphertextBlob", &req.ciphertext_blob)?;
            let (plaintext, key_arn) = kms.decrypt(&ciphertext, &req.encryption_context, req.key_id.as_deref()).await?;
            json!({"Plaintext": b64(&plaintext), "KeyId": key_arn, "EncryptionAlgorithm": ALGORITHM})
        }
        KmsRequest::CreateAlias(req) => {
            let target = req.target_key_id.ok_or_else(|| validation("TargetKeyId is required."))?;
            kms.create_alias(&req.alias_name, &target).await?;
            json!({})
        }
        KmsRequest::DeleteAlias(req) => {
            kms.delete_alias(&req.alias_name).await?;
            json!({})
        }
        KmsRequest::ListAliases(req) => {
            let aliases = kms.list_aliases(req.key_id.as_deref()).await?;
            let (items, next) = page(aliases, |a| a.name.clone(), req.limit, req.marker.as_deref(), (50, 100))?;
            listed("Aliases", items.iter().map(alias_json).collect(), next)
        }
    };
    Ok(answer)
}
