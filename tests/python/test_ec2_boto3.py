"""EC2 networking through boto3: botocore writes Query-protocol requests and parses our XML.

Every raw response is also checked before botocore parses it: well-formed XML, the root
element EC2 uses (`<Op>Response` with a `requestId`, or `Response/Errors/Error` for errors),
and, strictly, every element named by the operation's output shape (botocore's parser would
silently drop elements it does not know).
"""

import xml.etree.ElementTree as ET

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from shapes import local, xml_problems

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


def checked_client(server):
    """An ec2 client whose raw responses are checked; returns (client, operations seen)."""
    ec2 = server.client("ec2")
    seen = set()

    def check(operation_model, response_dict, **_):
        body = response_dict["body"]
        root = ET.fromstring(body)  # raises on malformed XML
        if response_dict["status_code"] >= 300:
            assert root.tag == "Response", body
            error = root.find("Errors/Error")
            assert error is not None and error.find("Code").text and error.find("Message").text, body
            assert root.find("RequestID").text, body
            return
        assert root.tag == f"{NS}{operation_model.name}Response", (root.tag, body)
        assert root.find(f"{NS}requestId").text, body
        shape = operation_model.output_shape
        by_name = {m.serialization.get("name", n): m for n, m in shape.members.items()} if shape else {}
        problems = []
        for child in root:
            name = local(child.tag)
            if name in by_name:
                problems.extend(xml_problems(by_name[name], child, name))
            # Every EC2 answer carries its requestId; ones without output say <return>true</return>.
            elif name != "requestId" and not (name == "return" and shape is None and child.text == "true"):
                problems.append(f"{name}: not in the output of {operation_model.name}")
        assert not problems, f"{operation_model.name}: " + "; ".join(problems)
        seen.add(operation_model.name)

    ec2.meta.events.register("before-parse.ec2.*", check)
    return ec2, seen


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_vpcs_subnets_and_groups(server):
    ec2, seen = checked_client(server)
    vpc = ec2.create_vpc(
        CidrBlock="10.20.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "py"}]}],
    )["Vpc"]
    assert vpc["VpcId"].startswith("vpc-") and len(vpc["VpcId"]) == 21
    assert vpc["CidrBlock"] == "10.20.0.0/16"
    assert vpc["IsDefault"] is False
    assert vpc["Tags"] == [{"Key": "Name", "Value": "py"}]
    assert vpc["CidrBlockAssociationSet"][0]["CidrBlockState"]["State"] == "associated"
    vpc_id = vpc["VpcId"]

    found = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["py"]}])["Vpcs"]
    assert [v["VpcId"] for v in found] == [vpc_id]
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["State"] == "available"

    with pytest.raises(ClientError) as e:
        ec2.create_vpc(CidrBlock="10.20.4.0/24")
    assert error_code(e) == "InvalidVpc.Range"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    assert subnet["AvailabilityZone"] == "us-east-1b"
    assert subnet["AvailableIpAddressCount"] == 251
    assert subnet["DefaultForAz"] is False
    assert subnet["MapPublicIpOnLaunch"] is False
    assert subnet["State"] == "available"
    for cidr, code in [("10.21.0.0/24", "InvalidSubnet.Range"), ("10.20.1.0/25", "InvalidSubnet.Conflict"),
                       ("10.20.2.0/30", "InvalidSubnet.Range")]:
        with pytest.raises(ClientError) as e:
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)
        assert error_code(e) == code, cidr
    listed = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert [s["SubnetId"] for s in listed] == [subnet["SubnetId"]]

    group_id = ec2.create_security_group(GroupName="py-web", Description="py web", VpcId=vpc_id)["GroupId"]
    peer_id = ec2.create_security_group(GroupName="py-lb", Description="py lb", VpcId=vpc_id)["GroupId"]
    added = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8090,
             "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"}],
             "UserIdGroupPairs": [{"GroupId": peer_id}]},
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        ],
    )
    assert added["Return"] is True
    rules = added["SecurityGroupRules"]
    assert len(rules) == 3
    assert {r.get("CidrIpv4") for r in rules} == {"10.0.0.0/8", "0.0.0.0/0", None}
    assert [r["ReferencedGroupInfo"]["GroupId"] for r in rules if "ReferencedGroupInfo" in r] == [peer_id]

    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    tcp = next(p for p in group["IpPermissions"] if p["IpProtocol"] == "tcp")
    assert (tcp["FromPort"], tcp["ToPort"]) == (8080, 8090)
    assert tcp["IpRanges"] == [{"CidrIp": "10.0.0.0/8", "Description": "office"}]
    assert tcp["UserIdGroupPairs"][0]["GroupId"] == peer_id
    assert group["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    with pytest.raises(ClientError) as e:
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpProtocol="tcp", FromPort=8080, ToPort=8090, CidrIp="10.0.0.0/8")
    assert error_code(e) == "InvalidPermission.Duplicate"
    with pytest.raises(ClientError) as e:
        ec2.authorize_security_group_egress(
            GroupId=group_id, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2,
                                              "IpRanges": [{"CidrIp": "300.0.0.0/8"}]}])
    assert error_code(e) == "InvalidPermission.Malformed"
    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupId=peer_id)
    assert error_code(e) == "DependencyViolation"

    revoked = ec2.revoke_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8090, "UserIdGroupPairs": [{"GroupId": peer_id}]}],
    )
    assert revoked["Return"] is True
    assert revoked["RevokedSecurityGroupRules"][0]["ReferencedGroupId"] == peer_id
    with pytest.raises(ClientError) as e:
        ec2.revoke_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8090,
                            "UserIdGroupPairs": [{"GroupId": peer_id}]}],
        )
    assert error_code(e) == "InvalidPermission.NotFound"

    with pytest.raises(ClientError) as e:
        ec2.delete_vpc(VpcId=vpc_id)
    assert error_code(e) == "DependencyViolation"
    assert ec2.delete_security_group(GroupId=peer_id)["GroupId"] == peer_id
    ec2.delete_security_group(GroupId=group_id)
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc_id)
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(VpcIds=[vpc_id])
    assert error_code(e) == "InvalidVpcID.NotFound"

    assert {"CreateVpc", "DescribeVpcs", "CreateSubnet", "DescribeSubnets", "CreateSecurityGroup",
            "AuthorizeSecurityGroupIngress", "DescribeSecurityGroups", "RevokeSecurityGroupIngress",
            "DeleteSecurityGroup", "DeleteSubnet", "DeleteVpc"} <= seen


def test_default_network_and_read_only_operations(server):
    ec2, seen = checked_client(server)
    default = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    assert len(default) == 1 and default[0]["CidrBlock"] == "172.31.0.0/16"
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    by_zone = {s["AvailabilityZone"]: s for s in subnets}
    assert by_zone["us-east-1a"]["CidrBlock"] == "172.31.0.0/20"
    assert by_zone["us-east-1b"]["CidrBlock"] == "172.31.16.0/20"
    assert all(s["MapPublicIpOnLaunch"] for s in subnets)
    assert by_zone["us-east-1a"]["AvailabilityZoneId"] == "use1-az1"

    groups = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert groups[0]["VpcId"] == default[0]["VpcId"]
    assert groups[0]["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == groups[0]["GroupId"]
    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupName="default")
    assert error_code(e) == "CannotDelete"

    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []
    pages = list(ec2.get_paginator("describe_vpcs").paginate())
    assert sum(len(p["Vpcs"]) for p in pages) == 1

    sg = ec2.create_security_group(GroupName="tagged", Description="t",
                                   TagSpecifications=[{"ResourceType": "security-group",
                                                       "Tags": [{"Key": "team", "Value": "net"}]}])
    assert sg["Tags"] == [{"Key": "team", "Value": "net"}]
    ec2.create_tags(Resources=[sg["GroupId"]], Tags=[{"Key": "env", "Value": "dev"}])
    tagged = ec2.describe_security_groups(Filters=[{"Name": "tag:env", "Values": ["dev"]}])["SecurityGroups"]
    assert [g["GroupId"] for g in tagged] == [sg["GroupId"]]
    ec2.delete_tags(Resources=[sg["GroupId"]], Tags=[{"Key": "env"}])
    assert ec2.describe_security_groups(Filters=[{"Name": "tag:env", "Values": ["dev"]}])["SecurityGroups"] == []
    assert {"DescribeAvailabilityZones", "DescribeNetworkInterfaces", "CreateTags", "DeleteTags"} <= seen


def test_malformed_requests_get_ec2_errors(server):
    ec2, _ = checked_client(server)
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(VpcIds=["vpc-zzz"])
    assert error_code(e) == "InvalidVpcID.Malformed"
    with pytest.raises(ClientError) as e:
        ec2.create_vpc(CidrBlock="10.0.0.0/16", DryRun=True)
    assert error_code(e) == "DryRunOperation"
    with pytest.raises(ClientError) as e:
        ec2.describe_subnets(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert error_code(e) == "InvalidParameterValue"
    # A signature for another service is refused before anything else.
    other = server.client("ec2")
    other.meta.events.register("choose-signer.ec2.*", lambda **_: UNSIGNED)
    with pytest.raises(ClientError) as e:
        other.describe_vpcs()
    assert error_code(e) in ("MissingAuthenticationToken", "IncompleteSignature")
