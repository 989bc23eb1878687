//! The `query` protocol against the vendored ELBv2 model: bodies as botocore's
//! `QuerySerializer` writes them (copied from its output), answers as its `QueryParser`
//! reads them, and a small model of our own for what ELBv2 does not use (flattened lists and
//! maps).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::model::{ELBV2, QueryModel};
use super::{error, read_request, response, status};
use crate::error::ApiError;

fn read(body: &str) -> Result<Value, ApiError> {
    read_request(&ELBV2, body.as_bytes()).map(|(_, v)| v)
}

#[test]
fn reads_nested_lists_structures_and_maps() {
    let body = "Action=CreateRule&Version=2015-12-01&ListenerArn=arn%3Al&Priority=10\
        &Conditions.member.1.Field=path-pattern&Conditions.member.1.Values.member.1=%2Fa%2F%2A\
        &Conditions.member.1.Values.member.2=%2Fb&Conditions.member.2.Field=http-header\
        &Conditions.member.2.HttpHeaderConfig.HttpHeaderName=X-Env\
        &Conditions.member.2.HttpHeaderConfig.Values.member.1=dev\
        &Actions.member.1.Type=forward\
        &Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn=arn%3At1\
        &Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight=3\
        &Actions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn=arn%3At2\
        &Actions.member.1.ForwardConfig.TargetGroups.member.2.Weight=1\
        &Actions.member.2.Type=authenticate-oidc&Actions.member.2.Order=1\
        &Actions.member.2.AuthenticateOidcConfig.Issuer=i\
        &Actions.member.2.AuthenticateOidcConfig.AuthorizationEndpoint=a\
        &Actions.member.2.AuthenticateOidcConfig.TokenEndpoint=t\
        &Actions.member.2.AuthenticateOidcConfig.UserInfoEndpoint=u\
        &Actions.member.2.AuthenticateOidcConfig.ClientId=c\
        &Actions.member.2.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.key=p1\
        &Actions.member.2.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.value=v1\
        &Actions.member.2.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.2.key=p2\
        &Actions.member.2.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.2.value=v2";
    assert_eq!(
        read(body).unwrap(),
        json!({
            "ListenerArn": "arn:l", "Priority": 10,
            "Conditions": [
                {"Field": "path-pattern", "Values": ["/a/*", "/b"]},
                {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["dev"]}}],
            "Actions": [
                {"Type": "forward", "ForwardConfig": {"TargetGroups": [
                    {"TargetGroupArn": "arn:t1", "Weight": 3}, {"TargetGroupArn": "arn:t2", "Weight": 1}]}},
                {"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": {
                    "Issuer": "i", "AuthorizationEndpoint": "a", "TokenEndpoint": "t",
                    "UserInfoEndpoint": "u", "ClientId": "c",
                    "AuthenticationRequestExtraParams": {"p1": "v1", "p2": "v2"}}}]
        })
    );
}

#[test]
fn reads_empty_lists_numeric_order_and_ignores_unknown_parameters() {
    assert_eq!(read("Action=DescribeLoadBalancers&Version=2015-12-01&Names=").unwrap(), json!({"Names": []}));
    let v = read(
        "Action=DescribeLoadBalancers&Names.member.1=a&Names.member.10=j&Names.member.2=b&PageSize=5&Bogus.member.1=x",
    )
    .unwrap();
    assert_eq!(v, json!({"Names": ["a", "b", "j"], "PageSize": 5}));
}

#[test]
fn refusals_are_one_validation_error_naming_each_member() {
    let err = read("Action=CreateLoadBalancer&Version=2015-12-01").unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            "ValidationError",
            "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null"
        )
    );
    let err = read(
        "Action=CreateTargetGroup&Name=tg&Protocol=SMTP&Port=70000&HealthCheckIntervalSeconds=1\
         &Tags.member.1.Value=v",
    )
    .unwrap_err();
    assert_eq!(err.code, "ValidationError");
    for expected in [
        "4 validation errors detected: ",
        "Value '1' at 'healthCheckIntervalSeconds' failed to satisfy constraint: Member must have value greater than or equal to 5",
        "Value '70000' at 'port' failed to satisfy constraint: Member must have value less than or equal to 65535",
        "Value 'SMTP' at 'protocol' failed to satisfy constraint: Member must satisfy enum value set: [HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP, GENEVE",
        "Value null at 'tags.1.member.key' failed to satisfy constraint: Member must not be null",
    ] {
        assert!(err.message.contains(expected), "{expected:?} missing from {}", err.message);
    }
    let err = read("Action=DescribeLoadBalancers&PageSize=ten").unwrap_err();
    assert!(err.message.contains("Value 'ten' at 'pageSize'"), "{}", err.message);
    let err = read("Action=AddTags&ResourceArns.member.1=arn&Tags.member.1.Key=").unwrap_err();
    assert!(
        err.message.contains(
            "Value '' at 'tags.1.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1"
        ),
        "{}",
        err.message
    );
    let err = read("Action=LaunchRockets").unwrap_err();
    assert_eq!(err.code, "InvalidAction");
    let err = read("Version=2015-12-01").unwrap_err();
    assert_eq!(err.code, "MissingAction");
}

#[test]
fn answers_in_the_result_wrapper_with_members_timestamps_and_empty_lists() {
    let answer = json!({"LoadBalancers": [{
        "LoadBalancerArn": "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/0123456789abcdef",
        "LoadBalancerName": "a", "Type": "application", "Scheme": "internal",
        "CreatedTime": 1_440_938_160.042,
        "State": {"Code": "active"},
        "AvailabilityZones": [{"ZoneName": "us-east-1a", "SubnetId": "subnet-1", "LoadBalancerAddresses": []}],
        "SecurityGroups": ["sg-1", "sg-2"]}]});
    let xml = response(&ELBV2, "DescribeLoadBalancers", "req-1", &answer).unwrap();
    for expected in [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeLoadBalancersResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeLoadBalancersResult><LoadBalancers><member>",
        "<CreatedTime>2015-08-30T12:36:00.042Z</CreatedTime>",
        "<State><Code>active</Code></State>",
        "<SecurityGroups><member>sg-1</member><member>sg-2</member></SecurityGroups>",
        "<LoadBalancerAddresses/>",
        "</member></LoadBalancers></DescribeLoadBalancersResult><ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></DescribeLoadBalancersResponse>",
    ] {
        assert!(xml.contains(expected), "{expected} missing from {xml}");
    }
    let err = response(&ELBV2, "DescribeLoadBalancers", "r", &json!({"LoadBalancers": [{"Bogus": 1}]})).unwrap_err();
    assert!(err.contains("Bogus"), "{err}");
    let err =
        response(&ELBV2, "DescribeLoadBalancers", "r", &json!({"LoadBalancers": [{"Type": "classic"}]})).unwrap_err();
    assert!(err.contains("classic"), "{err}");
}

#[test]
fn errors_have_elbs_envelope_and_the_models_status() {
    let e = ApiError::new("LoadBalancerNotFound", "One or more load balancers not found & <gone>");
    assert_eq!(status(&ELBV2, &e), StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&ELBV2, &e, StatusCode::BAD_REQUEST, "r-1"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code><Message>One or more load balancers not found &amp; &lt;gone&gt;</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    );
    assert_eq!(status(&ELBV2, &ApiError::new("PriorRequestNotComplete", "")), StatusCode::TOO_MANY_REQUESTS);
    let internal = ApiError::new(super::INTERNAL_FAILURE, "boom");
    assert_eq!(status(&ELBV2, &internal), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error(&ELBV2, &internal, StatusCode::INTERNAL_SERVER_ERROR, "r").contains("<Type>Receiver</Type>"));
    let auth = super::query_code(ApiError::new("UnrecognizedClientException", "who?"));
    assert_eq!((auth.code, status(&ELBV2, &auth)), ("InvalidClientTokenId", StatusCode::FORBIDDEN));
}

/// A model with what ELBv2 lacks: flattened lists and maps, members renamed by
/// `locationName`.
const FLAT: &str = r#"{
  "metadata": {"xmlNamespace": "urn:x"},
  "operations": {"Put": {"input": {"shape": "In"}, "output": {"shape": "In", "resultWrapper": "PutResult"}}},
  "shapes": {
    "In": {"type": "structure", "members": {
        "Flat": {"shape": "FlatList"}, "Named": {"shape": "NamedFlatList", "locationName": "Item"},
        "Attrs": {"shape": "FlatMap", "locationName": "Attribute"}, "Plain": {"shape": "PlainMap"},
        "Renamed": {"shape": "Str", "locationName": "Other"}}},
    "FlatList": {"type": "list", "member": {"shape": "Str"}, "flattened": true},
    "NamedFlatList": {"type": "list", "member": {"shape": "Str", "locationName": "Item"}, "flattened": true},
    "FlatMap": {"type": "map", "key": {"shape": "Str", "locationName": "Name"},
                "value": {"shape": "Str", "locationName": "Value"}, "flattened": true},
    "PlainMap": {"type": "map", "key": {"shape": "Str"}, "value": {"shape": "Str"}},
    "Str": {"type": "string"}}}"#;

#[test]
fn flattened_lists_and_maps_round_trip() {
    let model = QueryModel::parse(FLAT);
    let (_, v) = read_request(
        &model,
        b"Action=Put&Flat.1=a&Flat.2=b&Item.1=x&Attribute.1.Name=n&Attribute.1.Value=v\
          &Plain.entry.1.key=k&Plain.entry.1.value=w&Other=o",
    )
    .unwrap();
    let expected =
        json!({"Flat": ["a", "b"], "Named": ["x"], "Attrs": {"n": "v"}, "Plain": {"k": "w"}, "Renamed": "o"});
    assert_eq!(v, expected);
    let xml = response(&model, "Put", "r", &v).unwrap();
    assert!(
        xml.contains(
            "<PutResult><Attribute><Name>n</Name><Value>v</Value></Attribute><Flat>a</Flat><Flat>b</Flat><Item>x</Item>\
             <Plain><entry><key>k</key><value>w</value></entry></Plain><Other>o</Other></PutResult>"
        ),
        "{xml}"
    );
}
