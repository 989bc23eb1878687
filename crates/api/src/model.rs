//! AWS service models (botocore's `service-2.json`, vendored under `model/`) and validation of
//! request bodies against them.
//!
//! Validation walks the input shape: members of the wrong JSON type, missing required members,
//! values outside `min`/`max` and strings outside an `enum` are refused with the path of the
//! offending member. Unknown members and explicit nulls are dropped, as AWS ignores them, so
//! what reaches the handlers is exactly what the model allows.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ServiceModel {
    pub metadata: Metadata,
    pub operations: HashMap<String, Operation>,
    pub shapes: HashMap<String, Shape>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub target_prefix: Option<String>,
    pub signing_name: Option<String>,
    pub endpoint_prefix: String,
}

#[derive(Debug, Deserialize)]
pub struct Operation {
    pub input: Option<ShapeRef>,
    pub output: Option<ShapeRef>,
}

#[derive(Debug, Deserialize)]
pub struct ShapeRef {
    pub shape: String,
}

#[derive(Debug, Deserialize)]
pub struct Shape {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub members: HashMap<String, ShapeRef>,
    pub member: Option<ShapeRef>,
    pub key: Option<ShapeRef>,
    pub value: Option<ShapeRef>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(rename = "enum")]
    pub enumeration: Option<Vec<String>>,
}

impl ServiceModel {
    pub fn parse(json: &str) -> ServiceModel {
        serde_json::from_str(json).expect("vendored service model is valid JSON")
    }

    pub fn signing_name(&self) -> &str {
        self.metadata.signing_name.as_deref().unwrap_or(&self.metadata.endpoint_prefix)
    }

    /// Validates and cleans `body` for `operation`; `None` if the model has no such operation.
    pub fn check_input(&self, operation: &str, body: Value) -> Option<Result<Value, ApiError>> {
        let op = self.operations.get(operation)?;
        let Some(input) = &op.input else {
            return Some(Ok(Value::Object(Map::new())));
        };
        let mut errors = Vec::new();
        let cleaned = self.check(&input.shape, body, "", &mut errors);
        Some(match errors.into_iter().next() {
            None => Ok(cleaned.unwrap_or_else(|| Value::Object(Map::new()))),
            Some(e) => Err(e),
        })
    }

    fn check(&self, shape_name: &str, value: Value, path: &str, errors: &mut Vec<ApiError>) -> Option<Value> {
        if !errors.is_empty() || value.is_null() {
            return None;
        }
        let shape = self.shapes.get(shape_name).expect("model refers only to shapes it defines");
        let wrong_type = |expected: &str| {
            ApiError::serialization(format!("{}: expected {expected}, got {}", display(path), json_kind(&value)))
        };
        match shape.kind.as_str() {
            "structure" => {
                let Value::Object(map) = value else {
                    errors.push(wrong_type("an object"));
                    return None;
                };
                let mut out = Map::new();
                for (name, member_value) in map {
                    let Some(member) = shape.members.get(&name) else { continue };
                    let child = join(path, &name);
                    if let Some(v) = self.check(&member.shape, member_value, &child, errors) {
                        out.insert(name, v);
                    }
                }
                for req in &shape.required {
                    if errors.is_empty() && !out.contains_key(req) {
                        errors.push(ApiError::invalid_parameter(format!(
                            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                            join(path, req)
                        )));
                    }
                }
                Some(Value::Object(out))
            }
            "list" => {
                let Value::Array(items) = value else {
                    errors.push(wrong_type("a list"));
                    return None;
                };
                self.bounds(shape, items.len() as f64, path, "length", errors);
                let member = &shape.member.as_ref().expect("list shapes have a member").shape;
                let out: Vec<Value> = items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.check(member, v, &format!("{path}[{i}]"), errors))
                    .collect();
                Some(Value::Array(out))
            }
            "map" => {
                let Value::Object(map) = value else {
                    errors.push(wrong_type("a map"));
                    return None;
                };
                let value_shape = &shape.value.as_ref().expect("map shapes have a value").shape;
                let key_shape = &shape.key.as_ref().expect("map shapes have a key").shape;
                let mut out = Map::new();
                for (k, v) in map {
                    let child = join(path, &k);
                    self.check(key_shape, Value::String(k.clone()), &child, errors);
                    if let Some(v) = self.check(value_shape, v, &child, errors) {
                        out.insert(k, v);
                    }
                }
                Some(Value::Object(out))
            }
            "string" => {
                let Value::String(s) = &value else {
                    errors.push(wrong_type("a string"));
                    return None;
                };
                if let Some(allowed) = &shape.enumeration
                    && !allowed.iter().any(|a| a == s)
                {
                    errors.push(ApiError::invalid_parameter(format!(
                        "{}: '{s}' is not one of {}",
                        display(path),
                        allowed.join(", ")
                    )));
                    return None;
                }
                self.bounds(shape, s.chars().count() as f64, path, "length", errors);
                Some(value)
            }
            "boolean" => match value {
                Value::Bool(_) => Some(value),
                _ => {
                    errors.push(wrong_type("a boolean"));
                    None
                }
            },
            "integer" | "long" => {
                let ok = match &value {
                    Value::Number(n) => n.as_i64().is_some_and(|v| shape.kind == "long" || i32::try_from(v).is_ok()),
                    _ => false,
                };
                if !ok {
                    errors.push(wrong_type(if shape.kind == "long" { "a 64-bit integer" } else { "a 32-bit integer" }));
                    return None;
                }
                self.bounds(shape, value.as_f64().unwrap_or_default(), path, "value", errors);
                Some(value)
            }
            "double" | "float" => match value {
                Value::Number(_) => Some(value),
                _ => {
                    errors.push(wrong_type("a number"));
                    None
                }
            },
            "timestamp" => match value {
                Value::Number(_) | Value::String(_) => Some(value),
                _ => {
                    errors.push(wrong_type("a timestamp"));
                    None
                }
            },
            "blob" => match value {
                Value::String(_) => Some(value),
                _ => {
                    errors.push(wrong_type("base64 text"));
                    None
                }
            },
            _ => Some(value),
        }
    }

    fn bounds(&self, shape: &Shape, n: f64, path: &str, what: &str, errors: &mut Vec<ApiError>) {
        let too_small = shape.min.is_some_and(|min| n < min);
        let too_big = shape.max.is_some_and(|max| n > max);
        if too_small || too_big {
            let limit = if too_small {
                format!("greater than or equal to {}", shape.min.unwrap_or_default())
            } else {
                format!("less than or equal to {}", shape.max.unwrap_or_default())
            };
            errors.push(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must have {what} {limit}",
                display(path)
            )));
        }
    }
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() { member.to_owned() } else { format!("{path}.{member}") }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "request body" } else { path }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ecs() -> ServiceModel {
        ServiceModel::parse(include_str!("../model/ecs.json"))
    }

    #[test]
    fn names_missing_required_member() {
        let err = ecs().check_input("RegisterTaskDefinition", json!({"family": "x"})).unwrap().unwrap_err();
        assert_eq!(err.code, "InvalidParameterException");
        assert!(err.message.contains("'containerDefinitions'"), "{}", err.message);
    }

    #[test]
    fn names_wrongly_typed_nested_member() {
        let body = json!({"family": "x", "containerDefinitions": [{"name": "a", "cpu": "lots"}]});
        let err = ecs().check_input("RegisterTaskDefinition", body).unwrap().unwrap_err();
        assert_eq!(err.code, "SerializationException");
        assert!(err.message.contains("containerDefinitions[0].cpu"), "{}", err.message);
    }

    #[test]
    fn rejects_values_outside_enum() {
        let body = json!({"family": "x", "networkMode": "mesh", "containerDefinitions": []});
        let err = ecs().check_input("RegisterTaskDefinition", body).unwrap().unwrap_err();
        assert!(err.message.contains("networkMode"), "{}", err.message);
    }

    #[test]
    fn drops_unknown_members_and_nulls() {
        let body = json!({"clusterName": "a", "bogus": 1, "tags": null});
        let out = ecs().check_input("CreateCluster", body).unwrap().unwrap();
        assert_eq!(out, json!({"clusterName": "a"}));
    }

    #[test]
    fn a_user_s_flotilla_probes_never_arrive() {
        // Pods' probes travel as `flotillaPod`, which only the EKS scheduler writes.
        let body = json!({"family": "x", "containerDefinitions": [{"name": "a", "image": "b",
            "flotillaPod": {"liveness": {"action": {"tcpSocket": {"port": 1}}}}}]});
        let out = ecs().check_input("RegisterTaskDefinition", body).unwrap().unwrap();
        assert_eq!(out["containerDefinitions"][0], json!({"name": "a", "image": "b"}));
    }

    #[test]
    fn unknown_operation_is_none() {
        assert!(ecs().check_input("LaunchRockets", json!({})).is_none());
    }
}
