//! Amazon EFS's REST-JSON wire (`elasticfilesystem`, API version 2015-02-01): the route is the
//! operation (`POST /2015-02-01/file-systems` is CreateFileSystem), members travel in the path,
//! the query string and the JSON body. `serve` verifies SigV4 over the method, path and query,
//! gathers the members into one object, checks it against the vendored model, and hands the
//! closed [`EfsRequest`] to `execute`. Errors are EFS's shape (`error.rs`, the one place EFS
//! codes are chosen).

mod error;
mod ops;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::rest::Route;
use crate::server::ApiState;

pub(crate) use error::EfsApiError;
pub(crate) use ops::EfsRequest;

/// Where EFS's routes live.
pub(crate) const PREFIX: &str = "/2015-02-01/";

fn route(method: &Method, path: &str, query: &[(String, String)]) -> Option<Route> {
    let rest = path.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let label = |name: &str, i: usize| (name.to_owned(), Value::String(crate::query::form::form_decode(parts[i])));
    let (operation, labels): (&'static str, Vec<(String, Value)>) = match (method.as_str(), parts.as_slice()) {
        ("POST", ["file-systems"]) => ("CreateFileSystem", vec![]),
        ("GET", ["file-systems"]) => ("DescribeFileSystems", vec![]),
        ("DELETE", ["file-systems", _]) => ("DeleteFileSystem", vec![label("FileSystemId", 1)]),
        ("POST", ["mount-targets"]) => ("CreateMountTarget", vec![]),
        ("GET", ["mount-targets"]) => ("DescribeMountTargets", vec![]),
        ("DELETE", ["mount-targets", _]) => ("DeleteMountTarget", vec![label("MountTargetId", 1)]),
        ("GET", ["mount-targets", _, "security-groups"]) => {
            ("DescribeMountTargetSecurityGroups", vec![label("MountTargetId", 1)])
        }
        ("POST", ["access-points"]) => ("CreateAccessPoint", vec![]),
        ("GET", ["access-points"]) => ("DescribeAccessPoints", vec![]),
        ("DELETE", ["access-points", _]) => ("DeleteAccessPoint", vec![label("AccessPointId", 1)]),
        ("POST", ["resource-tags", _]) => ("TagResource", vec![label("ResourceId", 1)]),
        ("DELETE", ["resource-tags", _]) => ("UntagResource", vec![label("ResourceId", 1)]),
        ("GET", ["resource-tags", _]) => ("ListTagsForResource", vec![label("ResourceId", 1)]),
        ("POST", ["create-tags", _]) => ("CreateTags", vec![label("FileSystemId", 1)]),
        ("POST", ["delete-tags", _]) => ("DeleteTags", vec![label("FileSystemId", 1)]),
        ("GET", ["tags", _]) => ("DescribeTags", vec![label("FileSystemId", 1)]),
        _ => return None,
    };
    let mut members: Map<String, Value> = labels.into_iter().collect();
    for (name, value) in query {
        match name.as_str() {
            // The only list in a query string here (UntagResource): repeated.
            "tagKeys" => {
                let keys = members.entry("TagKeys").or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(keys) = keys {
                    keys.push(Value::String(value.clone()));
                }
            }
            "MaxItems" | "MaxResults" => {
                // A number that is not one reaches the model as text and is refused there.
                let n = value.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(value.clone()));
                members.insert(name.clone(), n);
            }
            _ => {
                members.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    Some(Route { operation, members })
}

/// Serves one request under [`PREFIX`].
pub(crate) async fn serve(state: &ApiState, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let request_id = state.next_request_id();
    let work = async {
        let body = crate::server::read_body(&headers, body, "BadRequest").await.map_err(EfsApiError::from)?;
        handle(state, &method, &uri, &headers, &body).await
    };
    let result = match crate::server::guarded(work.map_api(), "InternalServerError", uri.path()).await {
        Ok(r) => r,
        Err(e) => Err(EfsApiError::from(e)),
    };
    let mut response = match result {
        Ok((status, value)) => {
            let mut r = match value {
                Some(v) => (status, v.to_string()).into_response(),
                None => status.into_response(),
            };
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            tracing::debug!(path = %uri.path(), code = e.code, message = %e.message, "EFS request refused");
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// `guarded` wants an `ApiError` result; EFS's own errors ride inside `Ok`.
trait MapApi: Future + Sized {
    fn map_api(self) -> impl Future<Output = Result<Self::Output, ApiError>> {
        async move { Ok(self.await) }
    }
}

impl<F: Future> MapApi for F {}

type Answer = (StatusCode, Option<Value>);

async fn handle(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Answer, EfsApiError> {
    let crate::rest::Admitted { operation, input, .. } = crate::rest::admit(
        state,
        state.efs_model(),
        "EFS",
        route,
        EfsApiError::bad_request,
        method,
        uri,
        headers,
        body,
    )
    .await?;
    let efs = state
        .efs
        .as_deref()
        .ok_or_else(|| EfsApiError::new("InternalServerError", "This server does not serve EFS."))?;
    ops::execute(efs, EfsRequest::parse(operation, input)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_carry_labels_and_query_members() {
        let q = crate::rest::query_pairs("FileSystemId=fs-1&MaxItems=5");
        let r = route(&Method::GET, "/2015-02-01/file-systems", &q).unwrap();
        assert_eq!(r.operation, "DescribeFileSystems");
        assert_eq!(r.members["MaxItems"], 5);
        let q = crate::rest::query_pairs("tagKeys=a&tagKeys=b%20c");
        let r = route(&Method::DELETE, "/2015-02-01/resource-tags/fs-1", &q).unwrap();
        assert_eq!(r.operation, "UntagResource");
        assert_eq!(r.members["ResourceId"], "fs-1");
        assert_eq!(r.members["TagKeys"], serde_json::json!(["a", "b c"]));
        assert!(route(&Method::PUT, "/2015-02-01/file-systems", &[]).is_none());
        assert_eq!(route(&Method::GET, "/2015-02-01/tags/fs-1/", &[]).unwrap().operation, "DescribeTags");
    }
}
