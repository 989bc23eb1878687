"""Cloud Map through boto3, with every raw response checked against botocore's output shapes."""
import time

import boto3
import pytest
from botocore.config import Config

from conftest import ACCESS_KEY, SECRET_KEY
from shapes import strict

IMPLEMENTED = {
    "CreatePrivateDnsNamespace", "GetOperation", "ListOperations", "GetNamespace", "ListNamespaces",
    "DeleteNamespace", "CreateService", "GetService", "ListServices", "DeleteService", "RegisterInstance",
    "DeregisterInstance", "ListInstances", "GetInstance", "DiscoverInstances", "DiscoverInstancesRevision",
    "UpdateInstanceCustomHealthStatus", "GetInstancesHealthStatus", "TagResource", "UntagResource",
    "ListTagsForResource",
}


def client(server):
    # DiscoverInstances is modelled with the `data-` host prefix; against a local endpoint the
    # prefix would name a host that does not exist, so it is not injected.
    return boto3.client(
        "servicediscovery",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(inject_host_prefix=False),
    )


def finish(sd, operation_id, deadline=10):
    end = time.monotonic() + deadline
    while True:
        op = sd.get_operation(OperationId=operation_id)["Operation"]
        if op["Status"] in ("SUCCESS", "FAIL"):
            return op
        assert op["Status"] in ("SUBMITTED", "PENDING"), op
        assert time.monotonic() < end, f"operation {operation_id} still {op['Status']}"
        time.sleep(0.02)


def succeed(sd, answer):
    op = finish(sd, answer["OperationId"])
    assert op["Status"] == "SUCCESS", op
    return op


def test_every_implemented_operation_answers_in_the_model_shape(server):
    sd = client(server)
    seen = strict(sd, "servicediscovery")
    op = succeed(sd, sd.create_private_dns_namespace(
        Name="shapes.local", Vpc="vpc-0a1b2c3d", Description="shape check",
        Properties={"DnsProperties": {"SOA": {"TTL": 30}}}, Tags=[{"Key": "team", "Value": "core"}]))
    ns_id = op["Targets"]["NAMESPACE"]
    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert ns["Properties"]["DnsProperties"]["SOA"]["TTL"] == 30
    assert ns["Description"] == "shape check"
    sd.list_namespaces()
    sd.list_namespaces(Filters=[{"Name": "NAME", "Values": ["shapes"], "Condition": "BEGINS_WITH"}], MaxResults=1)
    sd.list_namespaces(Filters=[{"Name": "TYPE", "Values": ["DNS_PRIVATE", "HTTP"], "Condition": "IN"}])

    service = sd.create_service(
        Name="web", NamespaceId=ns_id, Description="front",
        DnsConfig={"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}, {"Type": "SRV", "TTL": 10}]},
        HealthCheckCustomConfig={"FailureThreshold": 1})["Service"]
    api_only = sd.create_service(Name="api", NamespaceId=ns_id, Type="HTTP")["Service"]
    assert api_only["Type"] == "HTTP" and "DnsConfig" not in api_only
    sd.get_service(Id=service["Id"])
    sd.get_service(Id=service["Arn"])
    sd.list_services()
    sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id], "Condition": "EQ"}], MaxResults=1)

    for i, ip in enumerate(["10.1.0.5", "10.1.0.6"]):
        succeed(sd, sd.register_instance(ServiceId=service["Id"], InstanceId=f"task-{i}",
                                         Attributes={"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080", "az": f"a{i}"}))
    assert sd.get_service(Id=service["Id"])["Service"]["InstanceCount"] == 2
    sd.list_instances(ServiceId=service["Id"])
    sd.list_instances(ServiceId=service["Id"], MaxResults=1)
    sd.get_instance(ServiceId=service["Id"], InstanceId="task-0")
    found = sd.discover_instances(NamespaceName="shapes.local", ServiceName="web")
    assert {i["InstanceId"] for i in found["Instances"]} == {"task-0", "task-1"}
    revision = sd.discover_instances_revision(NamespaceName="shapes.local", ServiceName="web")["InstancesRevision"]
    assert revision == found["InstancesRevision"]
    sd.update_instance_custom_health_status(ServiceId=service["Id"], InstanceId="task-0", Status="UNHEALTHY")
    health = sd.get_instances_health_status(ServiceId=service["Id"])["Status"]
    assert health == {"task-0": "UNHEALTHY", "task-1": "HEALTHY"}
    healthy = sd.discover_instances(NamespaceName="shapes.local", ServiceName="web", HealthStatus="HEALTHY")
    assert [i["InstanceId"] for i in healthy["Instances"]] == ["task-1"]
    az = sd.discover_instances(NamespaceName="shapes.local", ServiceName="web", HealthStatus="ALL",
                               QueryParameters={"az": "a0"})
    assert [i["InstanceId"] for i in az["Instances"]] == ["task-0"]

    sd.tag_resource(ResourceARN=service["Arn"], Tags=[{"Key": "env", "Value": "prod"}])
    sd.untag_resource(ResourceARN=ns["Arn"], TagKeys=["team"])
    assert sd.list_tags_for_resource(ResourceARN=service["Arn"])["Tags"] == [{"Key": "env", "Value": "prod"}]
    assert sd.list_tags_for_resource(ResourceARN=ns["Arn"])["Tags"] == []

    for i in range(2):
        succeed(sd, sd.deregister_instance(ServiceId=service["Id"], InstanceId=f"task-{i}"))
    sd.delete_service(Id=service["Id"])
    sd.delete_service(Id=api_only["Id"])
    succeed(sd, sd.delete_namespace(Id=ns_id))
    ops = sd.list_operations()["Operations"]
    assert len(ops) == 6 and all(o["Status"] == "SUCCESS" for o in ops)
    sd.list_operations(Filters=[{"Name": "TYPE", "Values": ["REGISTER_INSTANCE"], "Condition": "EQ"}], MaxResults=1)
    sd.list_operations(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id]},
                                {"Name": "STATUS", "Values": ["SUCCESS", "FAIL"], "Condition": "IN"}])
    assert seen == IMPLEMENTED


def test_pages_cover_everything_once(server):
    sd = client(server)
    strict(sd, "servicediscovery")
    ns_id = succeed(sd, sd.create_private_dns_namespace(Name="pages.local", Vpc="vpc-11112222"))["Targets"]["NAMESPACE"]
    names = [f"svc{i}" for i in range(7)]
    for name in names:
        sd.create_service(Name=name, NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 5}]})
    pages = sd.get_paginator("list_services").paginate(PaginationConfig={"PageSize": 3})
    assert sorted(s["Name"] for p in pages for s in p["Services"]) == names
    assert sd.get_namespace(Id=ns_id)["Namespace"]["ServiceCount"] == 7


def test_modelled_errors_are_typed(server):
    sd = client(server)
    ns_id = succeed(sd, sd.create_private_dns_namespace(Name="errors.local", Vpc="vpc-12345678"))["Targets"]["NAMESPACE"]
    with pytest.raises(sd.exceptions.NamespaceAlreadyExists):
        sd.create_private_dns_namespace(Name="errors.local", Vpc="vpc-12345678")
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.create_private_dns_namespace(Name="bad name.local", Vpc="vpc-12345678")
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.create_private_dns_namespace(Name="other.local", Vpc="not-a-vpc")
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        sd.get_namespace(Id="ns-doesnotexist0000")
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        sd.create_service(Name="web", NamespaceId="ns-doesnotexist0000")
    with pytest.raises(sd.exceptions.OperationNotFound):
        sd.get_operation(OperationId="nope")
    plain = sd.create_service(Name="plain", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 5}]})
    srv_id = plain["Service"]["Id"]
    with pytest.raises(sd.exceptions.ServiceAlreadyExists):
        sd.create_service(Name="plain", NamespaceId=ns_id)
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.create_service(Name="cname", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "CNAME", "TTL": 5}]})
    with pytest.raises(sd.exceptions.ServiceNotFound):
        sd.get_service(Id="srv-doesnotexist000")
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.register_instance(ServiceId=srv_id, InstanceId="i", Attributes={"AWS_INSTANCE_IPV4": "300.1.1.1"})
    with pytest.raises(sd.exceptions.InstanceNotFound):
        sd.get_instance(ServiceId=srv_id, InstanceId="absent")
    with pytest.raises(sd.exceptions.CustomHealthNotFound):
        sd.update_instance_custom_health_status(ServiceId=srv_id, InstanceId="absent", Status="HEALTHY")
    succeed(sd, sd.register_instance(ServiceId=srv_id, InstanceId="i", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"}))
    with pytest.raises(sd.exceptions.ResourceInUse):
        sd.delete_service(Id=srv_id)
    with pytest.raises(sd.exceptions.ResourceInUse):
        sd.delete_namespace(Id=ns_id)
    with pytest.raises(sd.exceptions.ResourceNotFoundException):
        sd.list_tags_for_resource(ResourceARN="arn:aws:servicediscovery:us-east-1:000000000000:service/srv-absent")
    with pytest.raises(sd.exceptions.ServiceNotFound):
        sd.discover_instances(NamespaceName="errors.local", ServiceName="absent")
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        sd.discover_instances(NamespaceName="absent.local", ServiceName="plain")
