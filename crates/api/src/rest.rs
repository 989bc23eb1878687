//! What the REST-JSON services (EFS, EKS) share: the query string as pairs, the headers a
//! signature covers, and the JSON body joined to the members the route carries.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::query::form::form_decode;

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
