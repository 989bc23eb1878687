"""The ELBv2 Query protocol through boto3: botocore writes form-encoded requests signed for
`elasticloadbalancing` and parses our XML, and every raw answer is checked first: well-formed
XML in ELB's namespace, `<Op>Response/<Op>Result` with `ResponseMetadata/RequestId`, every
element named by the operation's output shape; errors as `ErrorResponse/Error` with Type, Code
and Message. EC2, the other form-encoded service on the same endpoint, must stay EC2."""
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, SECRET_KEY
from shapes import local, xml_problems

NS = "{http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/}"


def checked_client(server, **kwargs):
    """An elbv2 client whose raw answers are checked; returns (client, raw answers seen)."""
    elb = boto3.client("elbv2", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id=kwargs.pop("access_key", ACCESS_KEY),
                       aws_secret_access_key=kwargs.pop("secret_key", SECRET_KEY), **kwargs)
    seen = []

    def check(operation_model, response_dict, **_):
        body = response_dict["body"]
        root = ET.fromstring(body)  # raises on malformed XML
        request_id = response_dict["headers"].get("x-amzn-requestid")
        seen.append((operation_model.name, response_dict["status_code"], root))
        if response_dict["status_code"] >= 300:
            assert root.tag == f"{NS}ErrorResponse", body
            error = root.find(f"{NS}Error")
            assert error.find(f"{NS}Type").text in ("Sender", "Receiver"), body
            assert error.find(f"{NS}Code").text and error.find(f"{NS}Message").text, body
            assert root.find(f"{NS}RequestId").text == request_id, body
            return
        assert root.tag == f"{NS}{operation_model.name}Response", body
        result, metadata = list(root)
        assert local(result.tag) == operation_model.output_shape.serialization["resultWrapper"], body
        assert metadata.find(f"{NS}RequestId").text == request_id, body
        problems = xml_problems(operation_model.output_shape, result, local(result.tag))
        assert not problems, f"{operation_model.name}: " + "; ".join(problems)

    elb.meta.events.register("before-parse.elastic-load-balancing-v2.*", check)
    return elb, seen


def test_answers_and_errors_have_elbs_envelope(server):
    elb, seen = checked_client(server)
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert seen[-1][:2] == ("DescribeLoadBalancers", 200)

    with pytest.raises(ClientError) as e:
        elb.describe_load_balancers(Names=["nope"])
    assert e.value.response["Error"]["Code"] == "LoadBalancerNotFound"
    assert e.value.response["Error"]["Type"] == "Sender"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # botocore maps the model's error code to its modelled exception.
    assert isinstance(e.value, elb.exceptions.LoadBalancerNotFoundException)


def test_model_constraints_are_one_validation_error(server):
    # Without botocore's own checks, so the server's are what refuses.
    elb, _ = checked_client(server, config=botocore.config.Config(parameter_validation=False))
    with pytest.raises(ClientError) as e:
        elb.create_load_balancer(Subnets=["subnet-1"])
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert e.value.response["Error"]["Message"] == (
        "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
    with pytest.raises(ClientError) as e:
        elb.create_target_group(Name="tg", Protocol="SMTP", Port=70000)
    message = e.value.response["Error"]["Message"]
    assert message.startswith("2 validation errors detected: "), message
    assert "Value '70000' at 'port'" in message and "Value 'SMTP' at 'protocol'" in message, message
    with pytest.raises(ClientError) as e:
        elb.describe_load_balancers(PageSize=0)
    assert "Member must have value greater than or equal to 1" in e.value.response["Error"]["Message"]


def test_signatures_route_and_are_checked_for_elb(server):
    bad, seen = checked_client(server, secret_key="not-the-secret")
    with pytest.raises(ClientError) as e:
        bad.describe_load_balancers()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert seen[-1][2].tag == f"{NS}ErrorResponse"

    stranger, _ = checked_client(server, access_key="AKIANOBODYKNOWSTHIS0")
    with pytest.raises(ClientError) as e:
        stranger.describe_load_balancers()
    assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"

    # EC2 on the same endpoint still answers as EC2, in EC2's envelope.
    ec2 = server.client("ec2")
    assert ec2.describe_vpcs()["Vpcs"][0]["IsDefault"] is True
    with pytest.raises(ClientError) as e:
        ec2.delete_vpc(VpcId="vpc-0123456789abcdef0")
    assert e.value.response["Error"]["Code"] == "InvalidVpcID.NotFound"


def raw(server, body):
    """POSTs a form body signed for elasticloadbalancing; (status, XML root)."""
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "elasticloadbalancing",
                            "us-east-1").add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(req) as answer:
            return answer.status, ET.fromstring(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, ET.fromstring(e.read())


def test_raw_requests_get_elbs_common_errors(server):
    for body, code in [
        ("Action=DescribeVpcs&Version=2016-11-15", "InvalidAction"),
        ("Version=2015-12-01", "MissingAction"),
    ]:
        status, root = raw(server, body)
        assert status == 400 and root.tag == f"{NS}ErrorResponse", ET.tostring(root)
        assert root.find(f"{NS}Error/{NS}Code").text == code
    status, root = raw(server, "Action=DescribeLoadBalancers&Version=2015-12-01&Names=&Bogus=1")
    assert status == 200 and root.tag == f"{NS}DescribeLoadBalancersResponse", ET.tostring(root)
