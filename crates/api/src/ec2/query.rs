//! Query-protocol requests: `Action=CreateVpc&Version=2016-11-15&TagSpecification.1.Tag.1.Key=...`
//! read into the JSON shape of the operation's input (members by their model names, values
//! typed), walking the model the way botocore's `EC2Serializer` walked it to write them.
//!
//! Lists are `Name.1`, `Name.2`, ...; structure members are `Prefix.Member`; a member's wire
//! name is its `queryName`, else its `locationName` capitalised, else its own name. Parameters
//! the model does not know are refused (`UnknownParameter`), as EC2 does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::model::{Ec2Model, Shape};
use crate::error::ApiError;

/// Decoded form parameters; a repeated name keeps its last value.
pub(crate) type Params = BTreeMap<String, String>;

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_form(body: &[u8]) -> Result<Params, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new("InvalidParameterValue", "The request body is not UTF-8 form data."))?;
    Ok(text
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect())
}

fn invalid_value(name: &str, value: &str, why: &str) -> ApiError {
    ApiError::new("InvalidParameterValue", format!("Value ({value}) for parameter {name} is invalid. {why}"))
}

struct Reader<'a> {
    model: &'a Ec2Model,
    params: &'a Params,
    used: BTreeSet<&'a str>,
}

impl<'a> Reader<'a> {
    /// Parameters whose names start with `prefix.`.
    fn under(&self, prefix: &str) -> impl Iterator<Item = (&'a String, &'a String)> + use<'a> {
        let start = format!("{prefix}.");
        self.params.range(start.clone()..).take_while(move |(k, _)| k.starts_with(&start))
    }

    fn read(&mut self, shape_name: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let shape = self.model.shape(shape_name);
        match shape.kind.as_str() {
            "structure" => self.structure(shape, name),
            "list" => {
                let member = shape.member.as_ref().expect("list shapes have a member");
                let indices: BTreeSet<usize> = self
                    .under(name)
                    .filter_map(|(k, _)| k[name.len() + 1..].split('.').next()?.parse::<usize>().ok())
                    .filter(|&i| i >= 1)
                    .collect();
                if indices.is_empty() {
                    // The query protocol's empty list: `Name=` with nothing after it.
                    return Ok(self.scalar_present(name).then(|| Value::Array(Vec::new())));
                }
                let mut items = Vec::with_capacity(indices.len());
                for i in indices {
                    if let Some(v) = self.read(&member.shape, &format!("{name}.{i}"))? {
                        items.push(v);
                    }
                }
                if let Some(max) = shape.max
                    && items.len() as f64 > max
                {
                    return Err(invalid_value(name, &items.len().to_string(), &format!("At most {max} items.")));
                }
                Ok(Some(Value::Array(items)))
            }
            _ => {
                let Some((key, raw)) = self.params.get_key_value(name) else { return Ok(None) };
                self.used.insert(key.as_str());
                scalar(shape, name, raw).map(Some)
            }
        }
    }

    fn scalar_present(&mut self, name: &str) -> bool {
        match self.params.get_key_value(name) {
            Some((key, v)) if v.is_empty() => {
                self.used.insert(key.as_str());
                true
            }
            _ => false,
        }
    }

    fn structure(&mut self, shape: &Shape, prefix: &str) -> Result<Option<Value>, ApiError> {
        let top = prefix.is_empty();
        if !top && self.under(prefix).next().is_none() {
            return Ok(None);
        }
        let mut out = Map::new();
        for (member, reference) in &shape.members {
            let wire = reference.query_name(member);
            let name = if top { wire } else { format!("{prefix}.{wire}") };
            if let Some(v) = self.read(&reference.shape, &name)? {
                out.insert(member.clone(), v);
            }
        }
        for required in &shape.required {
            if !out.contains_key(required) {
                let wire = shape.members[required].query_name(required);
                let name = if top { wire } else { format!("{prefix}.{wire}") };
                return Err(ApiError::new(
                    "MissingParameter",
                    format!("The request must contain the parameter {name}"),
                ));
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

fn scalar(shape: &Shape, name: &str, raw: &str) -> Result<Value, ApiError> {
    match shape.kind.as_str() {
        "string" => {
            if let Some(allowed) = &shape.enumeration
                && !allowed.iter().any(|a| a == raw)
            {
                return Err(invalid_value(name, raw, &format!("Valid values: {}.", allowed.join(", "))));
            }
            Ok(Value::String(raw.to_owned()))
        }
        "integer" | "long" => {
            let n: i64 = raw.trim().parse().map_err(|_| invalid_value(name, raw, "Expected an integer."))?;
            if shape.kind == "integer" && i32::try_from(n).is_err() {
                return Err(invalid_value(name, raw, "Expected a 32-bit integer."));
            }
            let too_small = shape.min.is_some_and(|min| (n as f64) < min);
            let too_big = shape.max.is_some_and(|max| (n as f64) > max);
            if too_small || too_big {
                return Err(invalid_value(
                    name,
                    raw,
                    &format!(
                        "It must be between {} and {}.",
                        shape.min.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                        shape.max.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
                    ),
                ));
            }
            Ok(Value::from(n))
        }
        "boolean" => match raw.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(invalid_value(name, raw, "Expected true or false.")),
        },
        "double" | "float" => {
            let n: f64 = raw.trim().parse().map_err(|_| invalid_value(name, raw, "Expected a number."))?;
            Ok(serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null))
        }
        // Timestamps and blobs reach handlers as the text that was sent.
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// The input of `operation` read from `params` (which also hold `Action` and `Version`).
/// `None` if the model has no such operation.
pub(crate) fn read_input(model: &Ec2Model, operation: &str, params: &Params) -> Option<Result<Value, ApiError>> {
    let op = model.operations.get(operation)?;
    let Some(input) = &op.input else { return Some(Ok(Value::Object(Map::new()))) };
    let mut reader = Reader { model, params, used: BTreeSet::new() };
    let value = match reader.structure(model.shape(&input.shape), "") {
        Ok(v) => v.unwrap_or_else(|| Value::Object(Map::new())),
        Err(e) => return Some(Err(e)),
    };
    let unknown =
        params.keys().find(|k| !reader.used.contains(k.as_str()) && !matches!(k.as_str(), "Action" | "Version"));
    if let Some(name) = unknown {
        return Some(Err(ApiError::new("UnknownParameter", format!("The parameter {name} is not recognized"))));
    }
    Some(Ok(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::model::MODEL;
    use super::*;

    fn read(op: &str, body: &str) -> Result<Value, ApiError> {
        read_input(&MODEL, op, &parse_form(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(form_decode("a+b%2Fc%3D%ZZ%"), "a b/c=%ZZ%");
        let p = parse_form(b"Action=X&CidrBlock=10.0.0.0%2F16&Empty=").unwrap();
        assert_eq!(p["CidrBlock"], "10.0.0.0/16");
        assert_eq!(p["Empty"], "");
    }

    #[test]
    fn reads_nested_lists_and_structures_by_wire_name() {
        let v = read(
            "AuthorizeSecurityGroupIngress",
            "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-1\
             &IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=80\
             &IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0%2F0&IpPermissions.1.IpRanges.1.Description=web\
             &IpPermissions.1.Groups.1.GroupId=sg-2&IpPermissions.2.IpProtocol=-1",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"GroupId": "sg-1", "IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                 "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "web"}],
                 "UserIdGroupPairs": [{"GroupId": "sg-2"}]},
                {"IpProtocol": "-1"}]})
        );
    }

    #[test]
    fn reads_location_names_filters_and_tags() {
        let v = read(
            "CreateVpc",
            "Action=CreateVpc&CidrBlock=10.0.0.0%2F16&TagSpecification.1.ResourceType=vpc\
             &TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=v&DryRun=true",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"CidrBlock": "10.0.0.0/16", "DryRun": true,
                   "TagSpecifications": [{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "v"}]}]})
        );
        let v = read("DescribeVpcs", "Action=DescribeVpcs&VpcId.1=vpc-1&VpcId.2=vpc-2&Filter.1.Name=tag:Name&Filter.1.Value.1=a&Filter.1.Value.10=b&Filter.1.Value.2=c").unwrap();
        assert_eq!(
            v,
            json!({"VpcIds": ["vpc-1", "vpc-2"], "Filters": [{"Name": "tag:Name", "Values": ["a", "c", "b"]}]})
        );
        let v = read("CreateSecurityGroup", "Action=CreateSecurityGroup&GroupName=a&GroupDescription=b").unwrap();
        assert_eq!(v, json!({"GroupName": "a", "Description": "b"}));
    }

    #[test]
    fn refuses_what_ec2_refuses() {
        let err = read("CreateSecurityGroup", "Action=CreateSecurityGroup&GroupName=a").unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            ("MissingParameter", "The request must contain the parameter GroupDescription")
        );
        let err = read("DeleteVpc", "Action=DeleteVpc&VpcId=vpc-1&Bogus=1").unwrap_err();
        assert_eq!(err.code, "UnknownParameter");
        let err = read("AuthorizeSecurityGroupIngress", "GroupId=sg-1&FromPort=eighty").unwrap_err();
        assert_eq!(err.code, "InvalidParameterValue");
        let err = read("DescribeVpcs", "MaxResults=1").unwrap_err();
        assert_eq!(err.code, "InvalidParameterValue");
    }
}
