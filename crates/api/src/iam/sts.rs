//! STS's operations: GetCallerIdentity and AssumeRole.

use flotilla_iam::Iam;
use flotilla_types::Timestamp;
use serde_json::{Value, json};

use super::req;
use crate::error::ApiError;
use crate::sigv4::Caller;

/// Runs one STS action.
pub(super) async fn execute(iam: &Iam, caller: &Caller, action: &str, input: &Value) -> Result<Value, ApiError> {
    match action {
        "GetCallerIdentity" => Ok(json!({
            "UserId": caller.principal.user_id,
            "Account": caller.principal.account,
            "Arn": caller.principal.arn,
        })),
        "AssumeRole" => {
            // Session policies would narrow the session; ignoring them would allow more than
            // the caller asked for, so they are refused until Flotilla evaluates them.
            if input.get("Policy").is_some() || input.get("PolicyArns").is_some() {
                return Err(ApiError::new("ValidationError", "Session policies are not supported by Flotilla."));
            }
            let duration =
                input.get("DurationSeconds").and_then(Value::as_i64).map(|d| d.clamp(0, i64::from(u32::MAX)) as u32);
            let creds = iam
                .assume_role(&caller.principal, req(input, "RoleArn")?, req(input, "RoleSessionName")?, duration)
                .await?;
            Ok(json!({
                "Credentials": {
                    "AccessKeyId": creds.access_key_id,
                    "SecretAccessKey": creds.secret_access_key,
                    "SessionToken": creds.session_token,
                    "Expiration": Timestamp(creds.expiration * 1000).rfc3339(),
                },
                "AssumedRoleUser": {"AssumedRoleId": creds.assumed_role_id, "Arn": creds.assumed_role_arn},
            }))
        }
        other => Err(ApiError::new("InvalidAction", format!("The action {other} is not valid for this web service."))),
    }
}
