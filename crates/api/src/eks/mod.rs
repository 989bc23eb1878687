//! Amazon EKS's REST-JSON wire (`eks`, API version 2017-11-01): the route is the operation
//! (`POST /clusters` is CreateCluster), members travel in the path, the query string and the
//! JSON body. `serve` verifies SigV4, gathers the members into one object, checks it against
//! the vendored model, authorises it (and `iam:PassRole` for the roles it hands over), and hands
//! the closed [`EksRequest`] to `execute`. Errors are EKS's shape (`error.rs`, the one place EKS
//! codes are chosen).

mod error;
mod ops;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::rest::Route;
use crate::server::ApiState;

pub(crate) use error::{EksApiError, api_error};
pub(crate) use ops::EksRequest;

fn route(method: &Method, path: &str, query: &[(String, String)]) -> Option<Route> {
    use crate::query::form::form_decode;
    let rest = path.strip_prefix('/')?;
    // A tagged resource's ARN is one label, its `/`s encoded or not.
    if let Some(arn) = rest.strip_prefix("tags/") {
        let operation = match method.as_str() {
            "POST" => "TagResource",
            "DELETE" => "UntagResource",
            "GET" => "ListTagsForResource",
            _ => return None,
        };
        let mut members = Map::new();
        members.insert("resourceArn".into(), Value::String(form_decode(arn.trim_end_matches('/'))));
        add_query(&mut members, query);
        return Some(Route { operation, members });
    }
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let label = |name: &str, i: usize| (name.to_owned(), Value::String(form_decode(parts[i])));
    let (operation, labels): (&'static str, Vec<(String, Value)>) = match (method.as_str(), parts.as_slice()) {
        ("POST", ["clusters"]) => ("CreateCluster", vec![]),
        ("GET", ["clusters"]) => ("ListClusters", vec![]),
        ("GET", ["clusters", _]) => ("DescribeCluster", vec![label("name", 1)]),
        ("DELETE", ["clusters", _]) => ("DeleteCluster", vec![label("name", 1)]),
        ("POST", ["clusters", _, "fargate-profiles"]) => ("CreateFargateProfile", vec![label("clusterName", 1)]),
        ("GET", ["clusters", _, "fargate-profiles"]) => ("ListFargateProfiles", vec![label("clusterName", 1)]),
        ("GET", ["clusters", _, "fargate-profiles", _]) => {
            ("DescribeFargateProfile", vec![label("clusterName", 1), label("fargateProfileName", 3)])
        }
        ("DELETE", ["clusters", _, "fargate-profiles", _]) => {
            ("DeleteFargateProfile", vec![label("clusterName", 1), label("fargateProfileName", 3)])
        }
        _ => return None,
    };
    let mut members: Map<String, Value> = labels.into_iter().collect();
    add_query(&mut members, query);
    Some(Route { operation, members })
}

fn add_query(members: &mut Map<String, Value>, query: &[(String, String)]) {
    for (name, value) in query {
        match name.as_str() {
            // Lists in a query string are repeated names.
            "tagKeys" | "include" => {
                let list = members.entry(name.clone()).or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(list) = list {
                    list.push(Value::String(value.clone()));
                }
            }
            "maxResults" => {
                // A number that is not one reaches the model as text and is refused there.
                let n = value.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(value.clone()));
                members.insert(name.clone(), n);
            }
            _ => {
                members.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
}

/// Serves one request on EKS's routes (`/clusters...`, `/tags/...`).
pub(crate) async fn serve(state: &ApiState, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let request_id = state.next_request_id();
    let work = async {
        let body =
            crate::server::read_body(&headers, body, "InvalidParameterException").await.map_err(EksApiError::from)?;
        handle(state, &method, &uri, &headers, &body).await
    };
    let result = match crate::server::guarded(async { Ok(work.await) }, "ServerException", uri.path()).await {
        Ok(r) => r,
        Err(e) => Err(EksApiError::from(e)),
    };
    let mut response = match result {
        Ok((status, value)) => {
            let mut r = (status, value.to_string()).into_response();
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            tracing::debug!(path = %uri.path(), code = e.code, message = %e.message, "EKS request refused");
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

type Answer = (StatusCode, Value);

async fn handle(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Answer, EksApiError> {
    let crate::rest::Admitted { caller, operation, input } = crate::rest::admit(
        state,
        state.eks_model(),
        "EKS",
        route,
        EksApiError::invalid_parameter,
        method,
        uri,
        headers,
        body,
    )
    .await?;
    // The roles a cluster or profile is given are passed to EKS, as ECS's task roles are.
    for field in ["roleArn", "podExecutionRoleArn"] {
        if let Some(role) = input.get(field).and_then(Value::as_str) {
            crate::authz::check(state, &caller, "iam:PassRole", role).await.map_err(EksApiError::from)?;
            ops::check_role_exists(state, field, role).await?;
        }
    }
    let eks =
        state.eks.as_deref().ok_or_else(|| EksApiError::new("ServerException", "This server does not serve EKS."))?;
    ops::execute(eks, &caller, EksRequest::parse(operation, input)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_carry_labels_and_query_members() {
        let r = route(&Method::GET, "/clusters", &crate::rest::query_pairs("maxResults=5&nextToken=abc")).unwrap();
        assert_eq!(r.operation, "ListClusters");
        assert_eq!(r.members["maxResults"], 5);
        assert_eq!(r.members["nextToken"], "abc");
        let r = route(&Method::DELETE, "/clusters/c1/fargate-profiles/fp-default", &[]).unwrap();
        assert_eq!(r.operation, "DeleteFargateProfile");
        assert_eq!(r.members["clusterName"], "c1");
        assert_eq!(r.members["fargateProfileName"], "fp-default");
        let arn = "arn%3Aaws%3Aeks%3Aus-east-1%3A123456789012%3Acluster%2Fc1";
        let r = route(&Method::DELETE, &format!("/tags/{arn}"), &crate::rest::query_pairs("tagKeys=a&tagKeys=b%20c"))
            .unwrap();
        assert_eq!(r.operation, "UntagResource");
        assert_eq!(r.members["resourceArn"], "arn:aws:eks:us-east-1:123456789012:cluster/c1");
        assert_eq!(r.members["tagKeys"], serde_json::json!(["a", "b c"]));
        let r = route(&Method::GET, "/tags/arn:aws:eks:us-east-1:1:fargateprofile/c/p/id", &[]).unwrap();
        assert_eq!(r.members["resourceArn"], "arn:aws:eks:us-east-1:1:fargateprofile/c/p/id");
        assert!(route(&Method::PUT, "/clusters", &[]).is_none());
        assert!(route(&Method::GET, "/clusters/c/nodegroups", &[]).is_none());
    }
}
