//! The form-encoded protocols: a `POST /` with a form body (`Action=...&Version=...&...`) and
//! no `X-Amz-Target`, answered in XML. EC2 speaks its own dialect of it (`crate::ec2`); this
//! module holds what both share (the model loader, form decoding, the input walk, the XML
//! writer) and serves the `query` protocol proper, which Elastic Load Balancing v2 speaks
//! (SigV4 signing name `elasticloadbalancing`, `Version=2015-12-01`).
//!
//! A request reaches EC2 or ELBv2 by the service its signature is scoped to. Its parameters
//! are read into JSON keyed by the model's member names (`input.rs`); what the model refuses
//! is one `ValidationError` listing every problem, worded as ELB words them ("1 validation
//! error detected: Value null at 'name' failed to satisfy constraint: Member must not be
//! null"). Parameters the model does not know are ignored, as ELB ignores them. The handler's
//! JSON answer is written as
//! `<{Op}Response xmlns=..><{Op}Result>..</{Op}Result><ResponseMetadata><RequestId>..` and an
//! error as `<ErrorResponse xmlns=..><Error><Type>Sender</Type><Code>..</Code><Message>..`,
//! with the status the model gives the error's shape.

pub(crate) mod form;
pub(crate) mod input;
pub(crate) mod model;
#[cfg(test)]
mod tests;
pub(crate) mod xml;

use std::fmt::Write;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use self::input::{Dialect, Problem, ProblemKind};
use self::model::{ELBV2, QueryModel};
use self::xml::{DECLARATION, escape, write_members};
use crate::error::ApiError;
use crate::server::ApiState;

/// ELBv2's signing name, which routes a form-encoded request here rather than to EC2.
pub(crate) const ELBV2_SIGNING_NAME: &str = "elasticloadbalancing";

/// The `query` protocol's code for a failure on our side.
pub(crate) const INTERNAL_FAILURE: &str = "InternalFailure";

/// Whether a request is form-encoded (a form body and no `X-Amz-Target`): EC2 or ELBv2.
pub fn is_form_request(headers: &HeaderMap) -> bool {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    form && !headers.contains_key("x-amz-target")
}

/// Serves one form-encoded request: ELBv2's if its signature is scoped to ELB, EC2's
/// otherwise (unsigned requests too, so they get EC2's refusal as before).
pub async fn serve(state: &ApiState, uri: &Uri, headers: &HeaderMap, body: Body) -> Response {
    let signing = crate::sigv4::signing_service(headers);
    if signing.as_deref() == Some(ELBV2_SIGNING_NAME) {
        serve_elbv2(state, uri, headers, body).await
    } else if let Some(name) = signing.as_deref().filter(|s| crate::iam::serves(Some(s))) {
        crate::iam::serve(state, uri, headers, body, name).await
    } else {
        crate::ec2::serve(state, uri, headers, body).await
    }
}

async fn serve_elbv2(state: &ApiState, uri: &Uri, headers: &HeaderMap, body: Body) -> Response {
    let request_id = state.next_request_id();
    let id = request_id.as_str();
    let handle = |body: Bytes| async move { handle_elbv2(state, uri, headers, &body, id).await };
    serve_xml(headers, body, &request_id, INTERNAL_FAILURE, "ELBv2", "text/xml", handle, |e| {
        let e = query_code(e);
        tracing::debug!(code = e.code, message = %e.message, "ELBv2 request refused");
        let status = status(&ELBV2, &e);
        (status, error(&ELBV2, &e, status, &request_id))
    })
    .await
}

/// Answers one form-encoded request in XML: reads its body (refusing one too large), runs
/// `handle` on it under the panic guard (`internal` is the protocol's code for a failure on our
/// side), and sends its document, or the (status, document) `refusal` makes of its error, with
/// `content_type` and the request id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_xml<H, F>(
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
    internal: &'static str,
    what: &str,
    content_type: &'static str,
    handle: impl FnOnce(Bytes) -> H,
    refusal: F,
) -> Response
where
    H: Future<Output = Result<String, ApiError>>,
    F: FnOnce(ApiError) -> (StatusCode, String),
{
    let work = async {
        let body = crate::server::read_body(headers, body, "RequestEntityTooLarge").await?;
        handle(body).await
    };
    let mut response = match crate::server::guarded(work, internal, what).await {
        Ok(xml) => xml.into_response(),
        Err(e) => refusal(e).into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

async fn handle_elbv2(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, ApiError> {
    let caller =
        crate::server::authenticate(state, uri, headers, body, "IncompleteSignature", ELBV2_SIGNING_NAME).await?;
    let (action, input) = read_request(&ELBV2, body)?;
    tracing::debug!(operation = %action, caller = %caller.access_key_id, "request");
    crate::authz::authorize(state, &caller, ELBV2_SIGNING_NAME, &action, &input, headers).await?;
    let answer = crate::elbv2::execute(state, &action, input).await?;
    response(&ELBV2, &action, request_id, &answer).map_err(|problem| {
        tracing::error!(operation = %action, problem, "ELBv2 answer does not fit the model");
        ApiError::new(INTERNAL_FAILURE, "The server failed to write its answer; it has been logged.")
    })
}

/// The action and its model-checked input.
pub(crate) fn read_request(model: &QueryModel, body: &[u8]) -> Result<(String, Value), ApiError> {
    let params = form::parse_form(body)
        .ok_or_else(|| ApiError::new("MalformedQueryString", "The request body is not UTF-8 form data."))?;
    let action = params
        .get("Action")
        .ok_or_else(|| ApiError::new("MissingAction", "The request must contain the parameter Action."))?
        .clone();
    let read = input::read_input(model, Dialect::Query, &action, &params).ok_or_else(|| {
        ApiError::new("InvalidAction", format!("The action {action} is not valid for this web service."))
    })?;
    if !read.problems.is_empty() {
        return Err(validation_error(&read.problems));
    }
    if !read.unknown.is_empty() {
        tracing::debug!(operation = %action, ignored = ?read.unknown, "parameters the model does not know");
    }
    Ok((action, read.value))
}

/// One `ValidationError` naming every problem, as ELB words them.
fn validation_error(problems: &[Problem]) -> ApiError {
    let described: Vec<String> = problems.iter().map(describe).collect();
    let n = described.len();
    ApiError::new(
        "ValidationError",
        format!("{n} validation error{} detected: {}", if n == 1 { "" } else { "s" }, described.join("; ")),
    )
}

fn describe(p: &Problem) -> String {
    let path = &p.path;
    let limits = |what: &str, min: Option<f64>, max: Option<f64>, n: f64| match (min, max) {
        (Some(min), _) if n < min => format!("Member must have {what} greater than or equal to {min}"),
        (_, Some(max)) => format!("Member must have {what} less than or equal to {max}"),
        _ => format!("Member must have {what} within its bounds"),
    };
    match &p.kind {
        ProblemKind::Missing => {
            format!("Value null at '{path}' failed to satisfy constraint: Member must not be null")
        }
        ProblemKind::NotOneOf { value, allowed } => format!(
            "Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
        ProblemKind::NotA { value, expected } => {
            format!("Value '{value}' at '{path}' failed to satisfy constraint: Member must be {expected}")
        }
        ProblemKind::Range { value, min, max } => format!(
            "Value '{value}' at '{path}' failed to satisfy constraint: {}",
            limits("value", *min, *max, value.trim().parse().unwrap_or_default())
        ),
        ProblemKind::Length { value: Some(value), count, min, max } => format!(
            "Value '{value}' at '{path}' failed to satisfy constraint: {}",
            limits("length", *min, *max, *count as f64)
        ),
        ProblemKind::Length { value: None, count, min, max } => {
            format!("Value at '{path}' failed to satisfy constraint: {}", limits("length", *min, *max, *count as f64))
        }
    }
}

/// `<{operation}Response xmlns=..><{operation}Result>..</..><ResponseMetadata>..`.
pub(crate) fn response(model: &QueryModel, operation: &str, request_id: &str, value: &Value) -> Result<String, String> {
    let root = format!("{operation}Response");
    let mut out = format!("{DECLARATION}\n<{root} xmlns=\"{}\">", escape(&model.metadata.xml_namespace));
    if let Some(output) = model.operations.get(operation).and_then(|op| op.output.as_ref()) {
        let wrapper = output.result_wrapper.clone().unwrap_or_else(|| format!("{operation}Result"));
        let _ = write!(out, "<{wrapper}>");
        write_members(model, &output.shape, value, operation, &mut out)?;
        let _ = write!(out, "</{wrapper}>");
    }
    let _ = write!(out, "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{root}>", escape(request_id));
    Ok(out)
}

/// `<ErrorResponse xmlns=..><Error><Type>Sender|Receiver</Type><Code>..</Code><Message>..`.
pub(crate) fn error(model: &QueryModel, e: &ApiError, status: StatusCode, request_id: &str) -> String {
    let fault = if status.is_server_error() { "Receiver" } else { "Sender" };
    format!(
        "{DECLARATION}\n<ErrorResponse xmlns=\"{}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(&model.metadata.xml_namespace),
        escape(e.code),
        escape(&e.message),
        escape(request_id)
    )
}

/// The status of an error: the model's for the codes it declares (`LoadBalancerNotFound`:
/// 400, `PriorRequestNotComplete`: 429), else the common errors' own.
pub(crate) fn status(model: &QueryModel, e: &ApiError) -> StatusCode {
    if let Some(status) = model.error(e.code).and_then(|err| err.http_status_code) {
        return StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    }
    match e.code {
        INTERNAL_FAILURE => StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceUnavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "MissingAuthenticationToken"
        | "AccessDenied"
        | "ExpiredToken" => StatusCode::FORBIDDEN,
        "RequestEntityTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The `query` protocol's names for the shared SigV4 and server failures (AWS's common
/// errors); every other code is the handler's, already ELB's.
pub(crate) fn query_code(e: ApiError) -> ApiError {
    let code = match e.code {
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "ExpiredTokenException" => "ExpiredToken",
        "ServerException" => INTERNAL_FAILURE,
        _ => return e,
    };
    ApiError { code, ..e }
}
