//! EC2's reading of form-encoded requests: the shared walk (`query/input.rs`) in its `ec2`
//! dialect (`TagSpecification.1.Tag.1.Key=...`), with EC2's words for what it refuses:
//! `MissingParameter`, `InvalidParameterValue`, and `UnknownParameter` for parameters the model
//! does not know, as EC2 does.

use serde_json::Value;

use crate::error::ApiError;
use crate::query::form::{self, Params};
use crate::query::input::{self, Dialect, ProblemKind};
use crate::query::model::QueryModel;

pub(crate) fn parse_form(body: &[u8]) -> Result<Params, ApiError> {
    form::parse_form(body)
        .ok_or_else(|| ApiError::new("InvalidParameterValue", "The request body is not UTF-8 form data."))
}

fn invalid_value(name: &str, value: &str, why: &str) -> ApiError {
    ApiError::new("InvalidParameterValue", format!("Value ({value}) for parameter {name} is invalid. {why}"))
}

fn bound(b: Option<f64>) -> String {
    b.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
}

/// The input of `operation` read from `params` (which also hold `Action` and `Version`).
/// `None` if the model has no such operation.
pub(crate) fn read_input(model: &QueryModel, operation: &str, params: &Params) -> Option<Result<Value, ApiError>> {
    let read = input::read_input(model, Dialect::Ec2, operation, params)?;
    // EC2 names the first problem only.
    if let Some(p) = read.problems.into_iter().next() {
        let name = &p.wire;
        return Some(Err(match p.kind {
            ProblemKind::Missing => {
                ApiError::new("MissingParameter", format!("The request must contain the parameter {name}"))
            }
            ProblemKind::NotOneOf { value, allowed } => {
                invalid_value(name, &value, &format!("Valid values: {}.", allowed.join(", ")))
            }
            ProblemKind::NotA { value, expected } => invalid_value(name, &value, &format!("Expected {expected}.")),
            ProblemKind::Range { value, min, max } => {
                invalid_value(name, &value, &format!("It must be between {} and {}.", bound(min), bound(max)))
            }
            ProblemKind::Length { value: None, count, min, max } => {
                let why = match max {
                    Some(max) if count as f64 > max => format!("At most {max} items."),
                    _ => format!("At least {} items.", bound(min)),
                };
                invalid_value(name, &count.to_string(), &why)
            }
            ProblemKind::Length { value: Some(value), min, max, .. } => {
                invalid_value(name, &value, &format!("Its length must be between {} and {}.", bound(min), bound(max)))
            }
        }));
    }
    if let Some(name) = read.unknown.first() {
        return Some(Err(ApiError::new("UnknownParameter", format!("The parameter {name} is not recognized"))));
    }
    Some(Ok(read.value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::model::EC2 as MODEL;

    fn read(op: &str, body: &str) -> Result<Value, ApiError> {
        read_input(&MODEL, op, &parse_form(body.as_bytes()).unwrap()).unwrap()
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
