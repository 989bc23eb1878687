//! A container's `secrets[].valueFrom` to its value, as the Fargate agent resolves it:
//! - an SSM parameter by ARN (`arn:aws:ssm:<region>:<account>:parameter/<name>`) or by name;
//! - a Secrets Manager secret by ARN, optionally with `:<json-key>:<version-stage>:<version-id>`
//!   (each part may be empty) to pick one key of a JSON secret and a version.
//!
//! Also `repositoryCredentials.credentialsParameter`: a secret whose JSON has `username` and
//! `password`.

use serde_json::Value;

use crate::manager::SecretValue;
use crate::{Secrets, SecretsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Parameter(String),
    Secret { id: String, json_key: Option<String>, stage: Option<String>, version_id: Option<String> },
}

impl SecretRef {
    pub fn parse(value_from: &str) -> SecretRef {
        let parts: Vec<&str> = value_from.split(':').collect();
        if parts.len() >= 7 && parts[0] == "arn" && parts[2] == "secretsmanager" && parts[5] == "secret" {
            let some = |i: usize| parts.get(i).filter(|s| !s.is_empty()).map(|s| s.to_string());
            return SecretRef::Secret {
                id: parts[..7].join(":"),
                json_key: some(7),
                stage: some(8),
                version_id: some(9),
            };
        }
        SecretRef::Parameter(value_from.to_string())
    }
}

impl Secrets {
    /// The value a container's environment variable gets.
    pub async fn resolve(&self, value_from: &str) -> Result<String, SecretsError> {
        match SecretRef::parse(value_from) {
            SecretRef::Parameter(id) => Ok(self.get_parameter_decrypted(&id).await?.value),
            SecretRef::Secret { id, json_key, stage, version_id } => {
                let (_, _, value) = self.get_secret_value(&id, version_id.as_deref(), stage.as_deref()).await?;
                let text = match value {
                    SecretValue::String(s) => s,
                    SecretValue::Binary(b) => b,
                };
                match json_key {
                    None => Ok(text),
                    Some(k) => json_member(&text, &k)
                        .ok_or_else(|| SecretsError::Invalid(format!("secret {id} has no JSON key {k:?}"))),
                }
            }
        }
    }

    /// `(username, password)` of a private registry's credentials secret.
    pub async fn registry_credentials(&self, secret: &str) -> Result<(String, String), SecretsError> {
        let (_, _, value) = self.get_secret_value(secret, None, None).await?;
        let SecretValue::String(text) = value else {
            return Err(SecretsError::Invalid(format!("secret {secret} is binary; it must be JSON")));
        };
        match (json_member(&text, "username"), json_member(&text, "password")) {
            (Some(u), Some(p)) => Ok((u, p)),
            _ => Err(SecretsError::Invalid(format!(
                "secret {secret} must be JSON with \"username\" and \"password\" members"
            ))),
        }
    }
}

fn json_member(text: &str, key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::NewSecret;
    use crate::parameters::{NewParameter, ParameterType};
    use crate::testing::secrets;

    #[test]
    fn value_from_forms() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf";
        assert_eq!(
            SecretRef::parse(&format!("{arn}:password::")),
            SecretRef::Secret { id: arn.into(), json_key: Some("password".into()), stage: None, version_id: None }
        );
        assert_eq!(
            SecretRef::parse(arn),
            SecretRef::Secret { id: arn.into(), json_key: None, stage: None, version_id: None }
        );
        assert_eq!(SecretRef::parse("/app/key"), SecretRef::Parameter("/app/key".into()));
        let p = "arn:aws:ssm:us-east-1:1:parameter/api-key";
        assert_eq!(SecretRef::parse(p), SecretRef::Parameter(p.into()));
    }

    #[tokio::test]
    async fn resolves_parameters_and_json_keys_of_secrets() {
        let (s, _dir) = secrets().await;
        let new_param = NewParameter {
            name: "api-key".into(),
            value: "k-123".into(),
            kind: Some(ParameterType::SecureString),
            description: None,
            overwrite: false,
            key_id: None,
        };
        s.put_parameter(new_param).await.unwrap();
        assert_eq!(s.resolve(&s.parameter_arn("api-key")).await.unwrap(), "k-123");
        let secret = s
            .create_secret(NewSecret {
                name: "db".into(),
                value: Some(SecretValue::String(r#"{"username":"app","password":"pw","port":5432}"#.into())),
                description: None,
                token: None,
                kms_key_id: None,
            })
            .await
            .unwrap();
        assert_eq!(s.resolve(&format!("{}:password::", secret.arn)).await.unwrap(), "pw");
        assert_eq!(s.resolve(&format!("{}:port::", secret.arn)).await.unwrap(), "5432");
        assert!(s.resolve(&format!("{}:nope::", secret.arn)).await.is_err());
        assert_eq!(s.registry_credentials(&secret.arn).await.unwrap(), ("app".into(), "pw".into()));
        assert!(matches!(s.resolve("missing").await, Err(SecretsError::ParameterNotFound { .. })));
    }
}
