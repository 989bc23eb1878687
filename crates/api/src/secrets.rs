//! SSM Parameter Store (`AmazonSSM`) and Secrets Manager (`secretsmanager`) operations:
//! request members in, `flotilla_secrets` call, response shape out. Both wires are PascalCase
//! with epoch-second timestamps; each service has its own error codes.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, secretsmanager_error as sm_error, ssm_error};
use crate::json::{parse, strip_nulls};

pub use flotilla_secrets::Secrets;
use flotilla_secrets::{NewParameter, NewSecret, Parameter, ParameterType, Secret, SecretValue, SecretsError};

/// One page of `items` by name ([`flotilla_types::page`]): `MaxResults` up to `max`, `default`
/// if absent. The message of a refusal is the caller's to code.
fn page<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    requested: Option<usize>,
    token: Option<&str>,
    (default, max): (usize, usize),
) -> Result<(Vec<T>, Option<String>), String> {
    use flotilla_types::page::{self, Order, PageError};
    let refused = |e| match e {
        PageError::Size { got, max } => format!("MaxResults must be between 1 and {max}, got {got}."),
        PageError::Token => format!("The NextToken {:?} is not one this server issued.", token.unwrap_or_default()),
    };
    let size = page::page_size(requested.map(|n| n.min(i64::MAX as usize) as i64), default, max).map_err(refused)?;
    let keyed = items.into_iter().map(|i| (name(&i).to_owned(), i)).collect();
    let page = page::paginate(keyed, Order::Ascending, size, token).map_err(refused)?;
    Ok((page.items, page.next_token))
}

/// Says whether the caller may decrypt with a key (`kms:Decrypt` on its ARN), asked before a
/// `SecureString` is read `WithDecryption`.
pub(crate) struct MayDecrypt<'a> {
    /// `None` only in unit tests: everything is allowed.
    caller: Option<(&'a crate::server::ApiState, &'a crate::sigv4::Caller)>,
}

impl<'a> MayDecrypt<'a> {
    pub(crate) fn new(state: &'a crate::server::ApiState, caller: &'a crate::sigv4::Caller) -> MayDecrypt<'a> {
        MayDecrypt { caller: Some((state, caller)) }
    }

    async fn check(&self, key_arn: &str) -> Result<(), ApiError> {
        match self.caller {
            Some((state, caller)) => crate::authz::check(state, caller, "kms:Decrypt", key_arn).await,
            None => Ok(()),
        }
    }
}

/// `p` as GetParameter shows it: a `SecureString` decrypted when asked (and allowed), else its
/// ciphertext, as on AWS.
async fn parameter_json(
    s: &Secrets,
    mut p: Parameter,
    decrypt: bool,
    may_decrypt: &MayDecrypt<'_>,
) -> Result<Value, ApiError> {
    if decrypt && p.kind == ParameterType::SecureString {
        let key_arn = p.key_arn.clone().ok_or_else(|| {
            ApiError::new("InvalidKeyId", format!("The value of {} names no KMS key this server knows.", p.arn))
        })?;
        may_decrypt.check(&key_arn).await?;
        p.value = s.decrypt_parameter(&p).await.map_err(ssm_error)?;
    }
    Ok(json!({
        "Name": p.name, "Type": p.kind.as_str(), "Value": p.value, "Version": p.version,
        "LastModifiedDate": p.last_modified, "ARN": p.arn, "DataType": "text",
    }))
}

fn metadata_json(p: &Parameter) -> Value {
    strip_nulls(json!({
        "Name": p.name, "ARN": p.arn, "Type": p.kind.as_str(), "Version": p.version, "KeyId": p.key_id,
        "LastModifiedDate": p.last_modified, "Description": p.description, "Tier": "Standard", "DataType": "text",
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutParameter {
    name: String,
    value: String,
    #[serde(rename = "Type")]
    kind: Option<String>,
    description: Option<String>,
    #[serde(default)]
    overwrite: bool,
    data_type: Option<String>,
    key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetParameter {
    name: String,
    #[serde(default)]
    with_decryption: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetParameters {
    names: Vec<String>,
    #[serde(default)]
    with_decryption: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ByPath {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    with_decryption: bool,
    max_results: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Listing {
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new("ValidationException", message)
}

/// Every SSM Parameter Store operation Flotilla serves, each with its typed input.
pub(crate) enum SsmRequest {
    PutParameter(PutParameter),
    GetParameter(GetParameter),
    GetParameters(GetParameters),
    GetParametersByPath(ByPath),
    DescribeParameters(Listing),
    DeleteParameter(GetParameter),
    DeleteParameters(GetParameters),
}

impl SsmRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<SsmRequest, ApiError> {
        Ok(match operation {
            "PutParameter" => SsmRequest::PutParameter(parse(input)?),
            "GetParameter" => SsmRequest::GetParameter(parse(input)?),
            "GetParameters" => SsmRequest::GetParameters(parse(input)?),
            "GetParametersByPath" => SsmRequest::GetParametersByPath(parse(input)?),
            "DescribeParameters" => SsmRequest::DescribeParameters(parse(input)?),
            "DeleteParameter" => SsmRequest::DeleteParameter(parse(input)?),
            "DeleteParameters" => SsmRequest::DeleteParameters(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnknownOperationException",
                    format!("Flotilla does not serve SSM {other}."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer. `may_decrypt` is asked
/// before any `SecureString` is decrypted.
pub(crate) async fn execute_ssm(
    s: &Secrets,
    request: SsmRequest,
    may_decrypt: MayDecrypt<'_>,
) -> Result<Value, ApiError> {
    let answer = match request {
        SsmRequest::PutParameter(req) => {
            if req.data_type.as_deref().is_some_and(|d| d != "text") {
                return Err(invalid("Only the DataType text is supported.".into()));
            }
            let kind = req.kind.as_deref().map(ParameterType::parse).transpose().map_err(ssm_error)?;
            let new = NewParameter {
                name: req.name,
                value: req.value,
                kind,
                description: req.description,
                overwrite: req.overwrite,
                key_id: req.key_id,
            };
            json!({"Version": s.put_parameter(new).await.map_err(ssm_error)?, "Tier": "Standard"})
        }
        SsmRequest::GetParameter(req) => {
            let p = s.get_parameter(&req.name).await.map_err(ssm_error)?;
            json!({"Parameter": parameter_json(s, p, req.with_decryption, &may_decrypt).await?})
        }
        SsmRequest::GetParameters(req) => {
            let (mut found, mut invalid_names) = (Vec::new(), Vec::new());
            for name in req.names {
                match s.get_parameter(&name).await {
                    Ok(p) => found.push(parameter_json(s, p, req.with_decryption, &may_decrypt).await?),
                    Err(SecretsError::ParameterNotFound { .. } | SecretsError::Invalid(_)) => invalid_names.push(name),
                    Err(e) => return Err(ssm_error(e)),
                }
            }
            json!({"Parameters": found, "InvalidParameters": invalid_names})
        }
        SsmRequest::GetParametersByPath(req) => {
            let all = s.parameters_by_path(&req.path, req.recursive).await.map_err(ssm_error)?;
            let (items, next) =
                page(all, |p| &p.name, req.max_results, req.next_token.as_deref(), (10, 10)).map_err(invalid)?;
            let mut shown = Vec::with_capacity(items.len());
            for p in items {
                shown.push(parameter_json(s, p, req.with_decryption, &may_decrypt).await?);
            }
            let items = shown;
            strip_nulls(json!({"Parameters": items, "NextToken": next}))
        }
        SsmRequest::DescribeParameters(req) => {
            let all = s.list_parameters().await.map_err(ssm_error)?;
            let (items, next) =
                page(all, |p| &p.name, req.max_results, req.next_token.as_deref(), (10, 50)).map_err(invalid)?;
            let items: Vec<Value> = items.iter().map(metadata_json).collect();
            strip_nulls(json!({"Parameters": items, "NextToken": next}))
        }
        SsmRequest::DeleteParameter(req) => {
            s.delete_parameter(&req.name).await.map_err(ssm_error)?;
            json!({})
        }
        SsmRequest::DeleteParameters(req) => {
            let (mut deleted, mut invalid_names) = (Vec::new(), Vec::new());
            for name in req.names {
                match s.delete_parameter(&name).await {
                    Ok(()) => deleted.push(name),
                    Err(SecretsError::ParameterNotFound { .. }) => invalid_names.push(name),
                    Err(e) => return Err(ssm_error(e)),
                }
            }
            json!({"DeletedParameters": deleted, "InvalidParameters": invalid_names})
        }
    };
    Ok(answer)
}

fn value_in(string: Option<String>, binary: Option<String>) -> Result<Option<SecretValue>, ApiError> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(ApiError::new(
            "InvalidParameterException",
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(s), None) => Ok(Some(SecretValue::String(s))),
        (None, Some(b)) => Ok(Some(SecretValue::Binary(b))),
        (None, None) => Ok(None),
    }
}

fn value_out(v: &SecretValue) -> (Option<&str>, Option<&str>) {
    match v {
        SecretValue::String(s) => (Some(s), None),
        SecretValue::Binary(b) => (None, Some(b)),
    }
}

fn describe_json(secret: &Secret) -> Value {
    strip_nulls(json!({
        "ARN": secret.arn, "Name": secret.name, "Description": secret.description,
        "CreatedDate": secret.created, "LastChangedDate": secret.last_changed,
        "DeletedDate": secret.deletion_date, "VersionIdsToStages": secret.version_stages(),
        "KmsKeyId": secret.kms_key_id,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateSecret {
    name: String,
    secret_string: Option<String>,
    secret_binary: Option<String>,
    description: Option<String>,
    client_request_token: Option<String>,
    kms_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SecretId {
    secret_id: String,
    version_id: Option<String>,
    version_stage: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutValue {
    secret_id: String,
    secret_string: Option<String>,
    secret_binary: Option<String>,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteSecret {
    secret_id: String,
    recovery_window_in_days: Option<i64>,
    #[serde(default)]
    force_delete_without_recovery: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListSecrets {
    max_results: Option<usize>,
    next_token: Option<String>,
    #[serde(default)]
    include_planned_deletion: bool,
}

/// Every Secrets Manager operation Flotilla serves, each with its typed input.
pub(crate) enum SecretsManagerRequest {
    CreateSecret(CreateSecret),
    GetSecretValue(SecretId),
    PutSecretValue(PutValue),
    UpdateSecret(PutValue),
    DescribeSecret(SecretId),
    ListSecrets(ListSecrets),
    DeleteSecret(DeleteSecret),
}

impl SecretsManagerRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<SecretsManagerRequest, ApiError> {
        Ok(match operation {
            "CreateSecret" => SecretsManagerRequest::CreateSecret(parse(input)?),
            "GetSecretValue" => SecretsManagerRequest::GetSecretValue(parse(input)?),
            "PutSecretValue" => SecretsManagerRequest::PutSecretValue(parse(input)?),
            "UpdateSecret" => SecretsManagerRequest::UpdateSecret(parse(input)?),
            "DescribeSecret" => SecretsManagerRequest::DescribeSecret(parse(input)?),
            "ListSecrets" => SecretsManagerRequest::ListSecrets(parse(input)?),
            "DeleteSecret" => SecretsManagerRequest::DeleteSecret(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnknownOperationException",
                    format!("Flotilla does not serve Secrets Manager {other}."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute_secretsmanager(s: &Secrets, request: SecretsManagerRequest) -> Result<Value, ApiError> {
    let answer = match request {
        SecretsManagerRequest::CreateSecret(req) => {
            let value = value_in(req.secret_string, req.secret_binary)?;
            let new = NewSecret {
                name: req.name,
                value,
                description: req.description,
                token: req.client_request_token,
                kms_key_id: req.kms_key_id,
            };
            let secret = s.create_secret(new).await.map_err(sm_error)?;
            strip_nulls(
                json!({"ARN": secret.arn, "Name": secret.name, "VersionId": secret.versions.first().map(|v| &v.id)}),
            )
        }
        SecretsManagerRequest::GetSecretValue(req) => {
            let (secret, v, value) = s
                .get_secret_value(&req.secret_id, req.version_id.as_deref(), req.version_stage.as_deref())
                .await
                .map_err(sm_error)?;
            let (string, binary) = value_out(&value);
            strip_nulls(json!({
                "ARN": secret.arn, "Name": secret.name, "VersionId": v.id, "SecretString": string,
                "SecretBinary": binary, "VersionStages": v.stages, "CreatedDate": v.created,
            }))
        }
        SecretsManagerRequest::PutSecretValue(req) => {
            if req.kms_key_id.is_some() {
                return Err(ApiError::new(
                    "InvalidParameterException",
                    "PutSecretValue takes no KmsKeyId; change the secret's key with UpdateSecret.",
                ));
            }
            let value = value_in(req.secret_string, req.secret_binary)?.ok_or_else(|| {
                ApiError::new("InvalidParameterException", "You must provide either SecretString or SecretBinary.")
            })?;
            let (secret, v) =
                s.put_secret_value(&req.secret_id, value, req.client_request_token).await.map_err(sm_error)?;
            json!({"ARN": secret.arn, "Name": secret.name, "VersionId": v.id, "VersionStages": v.stages})
        }
        SecretsManagerRequest::UpdateSecret(req) => {
            let value = value_in(req.secret_string, req.secret_binary)?;
            let (secret, v) = s
                .update_secret(&req.secret_id, req.description, req.kms_key_id, value, req.client_request_token)
                .await
                .map_err(sm_error)?;
            strip_nulls(json!({"ARN": secret.arn, "Name": secret.name, "VersionId": v.map(|v| v.id)}))
        }
        SecretsManagerRequest::DescribeSecret(req) => {
            describe_json(&s.describe_secret(&req.secret_id).await.map_err(sm_error)?)
        }
        SecretsManagerRequest::ListSecrets(req) => {
            let all: Vec<Secret> = s
                .list_secrets()
                .await
                .map_err(sm_error)?
                .into_iter()
                .filter(|x| req.include_planned_deletion || x.deletion_date.is_none())
                .collect();
            let (items, next) = page(all, |x| &x.name, req.max_results, req.next_token.as_deref(), (100, 100))
                .map_err(|m| ApiError::new("InvalidNextTokenException", m))?;
            let items: Vec<Value> = items
                .iter()
                .map(|x| {
                    let mut v = describe_json(x);
                    if let Some(stages) = v.as_object_mut().and_then(|o| o.remove("VersionIdsToStages")) {
                        v["SecretVersionsToStages"] = stages;
                    }
                    v
                })
                .collect();
            strip_nulls(json!({"SecretList": items, "NextToken": next}))
        }
        SecretsManagerRequest::DeleteSecret(req) => {
            let secret = s
                .delete_secret(&req.secret_id, req.force_delete_without_recovery, req.recovery_window_in_days)
                .await
                .map_err(sm_error)?;
            json!({"ARN": secret.arn, "Name": secret.name, "DeletionDate": secret.deletion_date})
        }
    };
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_by_name() {
        let names: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
        let (p, next) = page(names.clone(), |n| n, Some(10), None, (10, 50)).unwrap();
        assert_eq!((p.len(), p[0].as_str()), (10, "p00"));
        let (p, next) = page(names.clone(), |n| n, Some(10), next.as_deref(), (10, 50)).unwrap();
        assert_eq!(p[0], "p10");
        let (p, next) = page(names, |n| n, Some(10), next.as_deref(), (10, 50)).unwrap();
        assert_eq!((p.len(), p[0].as_str(), next), (5, "p20", None));
        assert!(page(vec!["a".to_owned()], |n| n, None, Some("x"), (10, 50)).is_err());
    }

    async fn ssm(s: &Secrets, operation: &str, body: Value) -> Result<Value, ApiError> {
        execute_ssm(s, SsmRequest::parse(operation, body)?, MayDecrypt { caller: None }).await
    }

    fn names(page: &Value) -> Vec<&str> {
        page["Parameters"].as_array().unwrap().iter().map(|p| p["Name"].as_str().unwrap()).collect()
    }

    /// An offset token skipped parameters when earlier ones were deleted between pages.
    #[tokio::test]
    async fn describe_parameters_pages_survive_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn flotilla_store::Store> =
            std::sync::Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
        let identity = flotilla_types::Identity::new("us-east-1", "123456789012");
        let kms = flotilla_kms::Kms::open(store.clone(), identity, flotilla_kms::MasterKey::generate()).await.unwrap();
        let s = Secrets::new(store, kms);
        for name in ["a", "b", "c", "d", "e"] {
            ssm(&s, "PutParameter", json!({"Name": name, "Value": "v", "Type": "String"})).await.unwrap();
        }
        let first = ssm(&s, "DescribeParameters", json!({"MaxResults": 2})).await.unwrap();
        assert_eq!(names(&first), ["a", "b"]);
        ssm(&s, "DeleteParameters", json!({"Names": ["a", "b"]})).await.unwrap();
        let second =
            ssm(&s, "DescribeParameters", json!({"MaxResults": 2, "NextToken": first["NextToken"]})).await.unwrap();
        assert_eq!(names(&second), ["c", "d"]);
        let last =
            ssm(&s, "DescribeParameters", json!({"MaxResults": 2, "NextToken": second["NextToken"]})).await.unwrap();
        assert_eq!(names(&last), ["e"]);
        assert!(last.get("NextToken").is_none(), "absent, not null: {last}");
        let forged = ssm(&s, "DescribeParameters", json!({"NextToken": "2"})).await.unwrap_err();
        assert_eq!(forged.code, "ValidationException");
    }
}
