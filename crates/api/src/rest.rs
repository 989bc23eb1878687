//! What the REST-JSON services (EFS, EKS) share: a request's admission (SigV4 over the
//! method, path and query; the route's operation and members; the JSON body joined to them;
//! the model's check; the caller's authorisation), and the pieces it is made of.

use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::ServiceModel;
use crate::query::form::form_decode;
use crate::server::ApiState;
use crate::sigv4::{Caller, SignedRequest};

/// An operation and the members its route carries (path labels, query string).
pub(crate) struct Route {
    pub operation: &'static str,
    pub members: Map<String, Value>,
}

/// A service's routing table: method, path and query pairs to an operation.
pub(crate) type Router = fn(&Method, &str, &[(String, String)]) -> Option<Route>;

/// A request its service may execute: who sent it, the operation, and its checked input.
pub(crate) struct Admitted {
    pub caller: Caller,
    pub operation: &'static str,
    pub input: Value,
}

/// Verifies, routes, checks and authorises a REST-JSON request. `route` maps the method, path
/// and query to an operation; `bad_request` makes the service's own error for a request that
/// names no operation or cannot be read, `service` names the service in that message.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn admit<E: From<ApiError>>(
    state: &ApiState,
    model: &ServiceModel,
    service: &str,
    route: Router,
    bad_request: fn(String) -> E,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Admitted, E> {
    let signed_headers = header_pairs(headers).map_err(bad_request)?;
    // SigV4 signs a REST path encoded once more than it travels (botocore quotes the already
    // quoted path); the verifier decodes the path it is given and encodes it once, so it is
    // given the travelling path encoded once more. Paths without `%` are unchanged by this.
    let signed_path = crate::sigv4::uri_encode(uri.path(), true);
    let signed = SignedRequest {
        method: method.as_str(),
        path: &signed_path,
        query: uri.query().unwrap_or(""),
        headers: signed_headers,
        body,
    };
    let caller = state.verifier.verify(&signed, model.signing_name(), crate::server::now_secs()).await?;
    let query = query_pairs(uri.query().unwrap_or(""));
    let Route { operation, mut members } = route(method, uri.path(), &query)
        .ok_or_else(|| bad_request(format!("No {service} operation at {method} {}.", uri.path())))?;
    join_body(&mut members, body).map_err(bad_request)?;
    let input = model
        .check_input(operation, Value::Object(members))
        .expect("every routed operation is in the vendored model")?;
    crate::authz::authorize(state, &caller, model.signing_name(), operation, &input, headers).await?;
    Ok(Admitted { caller, operation, input })
}

/// The query string's `name=value` pairs, decoded, in order (a name may repeat).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .collect()
}

/// The request's headers as text, for SigV4; the message names a header that is not text.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value.to_str().map_err(|_| format!("Header {name} is not valid text."))?;
        pairs.push((name.as_str().to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Joins a JSON object body to `members` (what the path and query carry wins); an empty body
/// adds nothing. The message says why a body is refused.
pub(crate) fn join_body(members: &mut Map<String, Value>, body: &[u8]) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let parsed: Value = serde_json::from_slice(body).map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let Value::Object(parsed) = parsed else {
        return Err("The request body must be a JSON object.".to_owned());
    };
    for (k, v) in parsed {
        members.entry(k).or_insert(v);
    }
    Ok(())
}
