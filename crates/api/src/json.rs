//! What every AWS JSON 1.1 service's handlers share: reading model-checked input into typed
//! requests, and writing answers the way AWS does.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Reads already model-checked input into a typed request.
pub(crate) fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| ApiError::serialization(format!("Cannot read the request: {e}")))
}

/// AWS omits absent members rather than sending null; clients validating shapes expect that.
pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// UntagResource's input in the camelCase JSON services (ECS, EKS).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UntagResource {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}

/// The input of an operation on one resource by ARN (ListTagsForResource).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceArn {
    pub resource_arn: String,
}
