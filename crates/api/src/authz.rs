//! Authorisation of every request: each operation of each service Flotilla serves maps to its
//! IAM action, resource ARN and condition keys, and the caller's policies decide
//! ([`flotilla_iam::Iam::authorize`]). A refusal is the service's access-denied error naming
//! the principal, the action and the resource.
//!
//! CONTRACT (lead, 2026-12-07): `authorize` and `check` are what every dispatch site calls;
//! the helper owning this module fills them in and inserts the calls, keeping the signatures.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::error::ApiError;
use crate::server::ApiState;
use crate::sigv4::Caller;

/// Authorises `caller` for `operation` of the service whose SigV4 signing name is
/// `signing_name`, with its checked `input`.
pub(crate) async fn authorize(
    state: &ApiState,
    caller: &Caller,
    signing_name: &str,
    operation: &str,
    input: &Value,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let _ = (state, caller, signing_name, operation, input, headers);
    Ok(())
}

/// Authorises `caller` for one `action` on `resource` beyond the operation's own (for example
/// `kms:Decrypt` when a parameter is read `WithDecryption`, or `iam:PassRole`).
pub(crate) async fn check(state: &ApiState, caller: &Caller, action: &str, resource: &str) -> Result<(), ApiError> {
    let _ = (state, caller, action, resource);
    Ok(())
}
