//! IAM (`Version=2010-05-08`, signing name `iam`) and STS (`Version=2011-06-15`, signing name
//! `sts`) over the Query protocol. `crate::query` reads the form into JSON keyed by the model's
//! member names and writes the answer's JSON as XML; here each action runs on `flotilla-iam`
//! (`ops.rs` for IAM, `sts.rs` for STS) and `error.rs` maps IAM's errors to its codes.
//!
//! Both services are global on AWS: their signatures may be scoped to `us-east-1` as well as
//! to this server's region (`crate::sigv4`). Policy documents go out URL-encoded, as IAM sends
//! them (the CLI decodes them).

mod error;
mod ops;
mod sts;
#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use crate::error::ApiError;
use crate::query::model::QueryModel;
use crate::query::{self, INTERNAL_FAILURE};
use crate::server::ApiState;
use crate::sigv4::Caller;

pub(crate) const IAM_SIGNING_NAME: &str = "iam";
pub(crate) const STS_SIGNING_NAME: &str = "sts";

static IAM: LazyLock<QueryModel> = LazyLock::new(|| QueryModel::parse(include_str!("../../model/iam.json")));
static STS: LazyLock<QueryModel> = LazyLock::new(|| QueryModel::parse(include_str!("../../model/sts.json")));

/// IAM's code for a failure on our side.
const SERVICE_FAILURE: &str = "ServiceFailure";

/// Whether a form request's signature routes it here.
pub(crate) fn serves(signing_name: Option<&str>) -> bool {
    matches!(signing_name, Some(IAM_SIGNING_NAME | STS_SIGNING_NAME))
}

/// Serves one IAM or STS request, by the service its signature is scoped to.
pub(crate) async fn serve(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    signing_name: &str,
) -> Response {
    let (model, name): (&QueryModel, &'static str) =
        if signing_name == STS_SIGNING_NAME { (&STS, STS_SIGNING_NAME) } else { (&IAM, IAM_SIGNING_NAME) };
    let request_id = state.next_request_id();
    let id = request_id.as_str();
    let work = |body: Bytes| async move { handle(state, model, name, uri, headers, &body, id).await };
    query::serve_xml(headers, body, &request_id, INTERNAL_FAILURE, "IAM", "text/xml", work, |e| {
        let e = error::wire_code(query::query_code(e), name);
        tracing::debug!(code = e.code, message = %e.message, service = name, "request refused");
        let status = status(model, &e);
        (status, query::error(model, &e, status, &request_id))
    })
    .await
}

fn status(model: &QueryModel, e: &ApiError) -> StatusCode {
    match e.code {
        SERVICE_FAILURE | INTERNAL_FAILURE => StatusCode::INTERNAL_SERVER_ERROR,
        "AccessDenied" => StatusCode::FORBIDDEN,
        _ => query::status(model, e),
    }
}

async fn handle(
    state: &ApiState,
    model: &QueryModel,
    signing_name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, ApiError> {
    let caller = crate::server::authenticate(state, uri, headers, body, "IncompleteSignature", signing_name).await?;
    let (action, input) = query::read_request(model, body)?;
    tracing::debug!(operation = %action, caller = %caller.principal.arn, "request");
    let Some(iam) = state.iam.as_deref() else {
        return Err(ApiError::new(
            "ServiceUnavailable",
            "IAM and STS are not served here: this server runs without IAM.",
        ));
    };
    crate::authz::authorize(state, &caller, signing_name, &action, &input, headers).await?;
    let answer = if signing_name == STS_SIGNING_NAME {
        sts::execute(iam, &caller, &action, &input).await?
    } else {
        ops::execute(iam, &caller, &action, &input).await?
    };
    query::response(model, &action, request_id, &answer).map_err(|problem| {
        tracing::error!(operation = %action, problem, "IAM answer does not fit the model");
        ApiError::new(INTERNAL_FAILURE, "The server failed to write its answer; it has been logged.")
    })
}

/// The string member `name` of `input`, if present.
fn opt<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// The string member `name` of `input`; the model has made sure required members are there.
fn req<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    opt(input, name).ok_or_else(|| {
        ApiError::new(
            "ValidationError",
            format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ),
        )
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_lowercase().to_string() + c.as_str()).unwrap_or_default()
}

/// Who the caller is, as STS GetCallerIdentity and IAM's defaults see it.
fn caller_user(caller: &Caller) -> Option<&str> {
    match &caller.principal.kind {
        flotilla_iam::PrincipalKind::User { name } => Some(name),
        _ => None,
    }
}
