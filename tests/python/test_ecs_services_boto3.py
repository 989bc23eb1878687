"""ECS services through boto3 (issue 10): every raw answer checked against botocore's output
shapes, ECS's errors for what Fargate refuses, and task scale-in protection. Tasks run on
simulated hosts (they reach RUNNING without images); the Rust tests in
crates/cli/tests/services.rs run services with real containers."""

import re
import time

import pytest
from botocore.exceptions import ClientError

from shapes import strict

SERVICE_OPERATIONS = {
    "CreateService", "UpdateService", "DeleteService", "DescribeServices", "ListServices",
    "ListServicesByNamespace", "ListServiceDeployments", "DescribeServiceDeployments",
    "DescribeServiceRevisions", "StopServiceDeployment", "UpdateTaskProtection", "GetTaskProtection",
}


def wait(what, check, timeout=60):
    """Polls `check` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def task_definition(ecs, family, **extra):
    body = {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "busybox:latest", "essential": True,
                                  "command": ["sleep", "100000"]}],
    }
    body.update(extra)
    return ecs.register_task_definition(**body)["taskDefinition"]["taskDefinitionArn"]


def network(server):
    """Two default subnets of different zones."""
    subnets = server.client("ec2").describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    subnets = sorted(subnets, key=lambda s: s["AvailabilityZone"])[:2]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    return {"awsvpcConfiguration": {"subnets": [s["SubnetId"] for s in subnets], "assignPublicIp": "DISABLED"}}


def describe(ecs, name, cluster="default"):
    out = ecs.describe_services(cluster=cluster, services=[name])
    assert out["failures"] == [], out
    return out["services"][0]


def steady(ecs, name, desired, task_definition=None):
    """Waits until the service runs `desired` tasks with one COMPLETED PRIMARY deployment."""
    def check():
        s = describe(ecs, name)
        d = s["deployments"]
        done = (s["runningCount"] == desired and s["pendingCount"] == 0 and len(d) == 1
                and d[0]["status"] == "PRIMARY" and d[0]["rolloutState"] == "COMPLETED")
        if task_definition is not None:
            done = done and d[0]["taskDefinition"] == task_definition
        return s if done else None
    return wait(f"{name} steady at {desired}", check)


def service_tasks(ecs, name):
    arns = ecs.list_tasks(cluster="default", serviceName=name)["taskArns"]
    return ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []


def error(call, **kwargs):
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def test_every_service_operation_answers_in_the_model_shape(sim_server):
    ecs = sim_server.client()
    seen = strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default", capacityProviders=["FARGATE", "FARGATE_SPOT"])
    net = network(sim_server)
    v1 = task_definition(ecs, "web")
    v2 = task_definition(ecs, "web", containerDefinitions=[
        {"name": "app", "image": "busybox:latest", "essential": True, "command": ["sleep", "99999"]}])

    # Every field the issue names, on a service with a launch type.
    created = ecs.create_service(
        cluster="default", serviceName="web", taskDefinition=v1, desiredCount=2, launchType="FARGATE",
        platformVersion="LATEST", networkConfiguration=net,
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200,
                                 "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
        propagateTags="SERVICE", enableECSManagedTags=True, enableExecuteCommand=False,
        tags=[{"key": "team", "value": "core"}], clientToken="web-create-1",
    )["service"]
    account = v1.split(":")[4]
    assert created["serviceArn"] == f"arn:aws:ecs:us-east-1:{account}:service/default/web"
    assert created["status"] == "ACTIVE" and created["schedulingStrategy"] == "REPLICA"
    assert created["deploymentController"] == {"type": "ECS"}
    assert created["propagateTags"] == "SERVICE" and created["enableECSManagedTags"] is True

    # One with a capacity provider strategy: FARGATE_SPOT's base is filled first.
    ecs.create_service(
        cluster="default", serviceName="spot", taskDefinition=v1, desiredCount=3, networkConfiguration=net,
        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 1},
                                  {"capacityProvider": "FARGATE", "weight": 1}],
    )

    # One registered in Cloud Map.
    sd = sim_server.client("servicediscovery")
    vpc = sim_server.client("ec2").describe_vpcs(
        Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    op = sd.create_private_dns_namespace(Name="corp.local", Vpc=vpc)["OperationId"]
    wait("the namespace", lambda: sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS")
    namespace = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    namespace_arn = sd.get_namespace(Id=namespace)["Namespace"]["Arn"]
    registry = sd.create_service(Name="disc", DnsConfig={"NamespaceId": namespace, "DnsRecords": [
        {"Type": "A", "TTL": 10}]})["Service"]["Arn"]
    ecs.create_service(cluster="default", serviceName="disc", taskDefinition=v1, desiredCount=1,
                       launchType="FARGATE", networkConfiguration=net,
                       serviceRegistries=[{"registryArn": registry}])

    web = steady(ecs, "web", 2)
    messages = [e["message"] for e in web["events"]]
    assert "(service web) has reached a steady state." in messages, messages
    assert web["events"] == sorted(web["events"], key=lambda e: e["createdAt"], reverse=True), "newest first"
    deployment = web["deployments"][0]
    assert re.fullmatch(r"ecs-svc/\d{19}", deployment["id"]), deployment
    assert deployment["launchType"] == "FARGATE" and deployment["failedTasks"] == 0
    spot = steady(ecs, "spot", 3)
    providers = sorted(t["capacityProviderName"] for t in service_tasks(ecs, "spot"))
    assert "FARGATE_SPOT" in providers and len(providers) == 3, providers
    assert spot["capacityProviderStrategy"][0]["capacityProvider"] == "FARGATE_SPOT"
    steady(ecs, "disc", 1)

    # DescribeServices: an unknown name is a failure, not an error.
    described = ecs.describe_services(cluster="default", services=["web", "nope"], include=["TAGS"])
    assert [s["serviceName"] for s in described["services"]] == ["web"]
    assert described["services"][0]["tags"] == [{"key": "team", "value": "core"}]
    assert described["failures"][0]["reason"] == "MISSING"
    assert described["failures"][0]["arn"].endswith("/nope"), described["failures"]

    # ListServices: pages of one, and the launch type filter.
    pages = ecs.get_paginator("list_services").paginate(cluster="default", PaginationConfig={"PageSize": 1})
    arns = [a for p in pages for a in p["serviceArns"]]
    assert sorted(a.rsplit("/", 1)[1] for a in arns) == ["disc", "spot", "web"]
    fargate = ecs.list_services(cluster="default", launchType="FARGATE")["serviceArns"]
    assert sorted(a.rsplit("/", 1)[1] for a in fargate) == ["disc", "web"], fargate
    by_namespace = ecs.list_services_by_namespace(namespace=namespace_arn)["serviceArns"]
    assert [a.rsplit("/", 1)[1] for a in by_namespace] == ["disc"]

    # A rolling update, and its history.
    updated = ecs.update_service(cluster="default", service="web", taskDefinition=v2)["service"]
    assert updated["deployments"][0]["taskDefinition"] == v2 and updated["deployments"][0]["status"] == "PRIMARY"
    steady(ecs, "web", 2, task_definition=v2)
    history = ecs.list_service_deployments(cluster="default", service="web")["serviceDeployments"]
    assert len(history) == 2, history
    for brief in history:
        assert re.fullmatch(rf"arn:aws:ecs:us-east-1:{account}:service-deployment/default/web/\d{{19}}",
                            brief["serviceDeploymentArn"]), brief
    arns = [b["serviceDeploymentArn"] for b in history]
    missing = f"arn:aws:ecs:us-east-1:{account}:service-deployment/default/web/1234567890123456789"
    deployments = ecs.describe_service_deployments(serviceDeploymentArns=arns + [missing])
    assert len(deployments["serviceDeployments"]) == 2
    assert deployments["failures"][0]["arn"] == missing
    latest = max(deployments["serviceDeployments"], key=lambda d: d["createdAt"])
    assert latest["status"] == "SUCCESSFUL", latest
    revisions = [latest["targetServiceRevision"]["arn"]] + [r["arn"] for r in latest["sourceServiceRevisions"]]
    described = ecs.describe_service_revisions(serviceRevisionArns=revisions)["serviceRevisions"]
    by_arn = {r["serviceRevisionArn"]: r for r in described}
    assert by_arn[revisions[0]]["taskDefinition"] == v2
    assert any(r["taskDefinition"] == v1 for r in described), described
    for arn in revisions:
        assert re.fullmatch(rf"arn:aws:ecs:us-east-1:{account}:service-revision/default/web/\d{{19}}", arn), arn

    # Task protection answers.
    task = service_tasks(ecs, "web")[0]["taskArn"]
    ecs.update_task_protection(cluster="default", tasks=[task], protectionEnabled=True)
    ecs.get_task_protection(cluster="default", tasks=[task])
    ecs.update_task_protection(cluster="default", tasks=[task], protectionEnabled=False)

    # Scale in, delete: DRAINING or INACTIVE, then INACTIVE.
    ecs.update_service(cluster="default", service="web", desiredCount=0)
    wait("web at 0", lambda: describe(ecs, "web")["runningCount"] == 0)
    deleted = ecs.delete_service(cluster="default", service="web")["service"]
    assert deleted["status"] in ("DRAINING", "INACTIVE")
    wait("web INACTIVE", lambda: describe(ecs, "web")["status"] == "INACTIVE")
    for name in ("spot", "disc"):
        ecs.delete_service(cluster="default", service=name, force=True)
    assert SERVICE_OPERATIONS - {"StopServiceDeployment"} <= seen, SERVICE_OPERATIONS - seen


def test_stop_service_deployment_rolls_back_to_the_previous_revision(sim_server):
    """A deployment that cannot finish (its secret does not exist), stopped by hand."""
    ecs = sim_server.client()
    seen = strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default")
    v1 = task_definition(ecs, "web")
    v2 = task_definition(ecs, "web", containerDefinitions=[
        {"name": "app", "image": "busybox:latest", "essential": True, "command": ["sleep", "99999"]}])
    account = v1.split(":")[4]
    ecs.create_service(cluster="default", serviceName="web", taskDefinition=v1, desiredCount=2,
                       launchType="FARGATE", networkConfiguration=network(sim_server))
    steady(ecs, "web", 2)
    ecs.update_service(cluster="default", service="web", taskDefinition=v2)
    steady(ecs, "web", 2, task_definition=v2)
    # The execution role must exist and trust ECS tasks (UpdateService checks, as ECS does): the
    # account's default ecsTaskExecutionRole does, as the ECS console makes it. Its policy does
    # not let it read parameters, which breaks the deployment all the same.
    assert sim_server.client("iam").get_role(RoleName="ecsTaskExecutionRole")["Role"]["Arn"]
    broken = task_definition(
        ecs, "web", executionRoleArn=f"arn:aws:iam::{account}:role/ecsTaskExecutionRole",
        containerDefinitions=[{"name": "app", "image": "busybox:latest", "essential": True,
                               "secrets": [{"name": "PW", "valueFrom": "missing-parameter"}]}])
    ecs.update_service(cluster="default", service="web", taskDefinition=broken,
                       deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200,
                                                "deploymentCircuitBreaker": {"enable": False, "rollback": False}})

    def newest():
        listed = ecs.list_service_deployments(cluster="default", service="web")["serviceDeployments"]
        return max(listed, key=lambda b: b["createdAt"])
    broken_deployment = wait("the broken deployment", lambda: len(ecs.list_service_deployments(
        cluster="default", service="web")["serviceDeployments"]) == 3 and newest())
    assert broken_deployment["status"] == "IN_PROGRESS", broken_deployment
    revision = ecs.describe_service_revisions(serviceRevisionArns=[broken_deployment["targetServiceRevisionArn"]])
    assert revision["serviceRevisions"][0]["taskDefinition"] == broken
    listed = ecs.list_service_deployments(cluster="default", service="web", status=["IN_PROGRESS"])
    assert [b["serviceDeploymentArn"] for b in listed["serviceDeployments"]] == [
        broken_deployment["serviceDeploymentArn"]], "only the broken deployment is in progress"
    stopped = ecs.stop_service_deployment(serviceDeploymentArn=broken_deployment["serviceDeploymentArn"],
                                          stopType="ROLLBACK")
    assert stopped["serviceDeploymentArn"] == broken_deployment["serviceDeploymentArn"]
    steady(ecs, "web", 2, task_definition=v2)
    wait("the stopped deployment ROLLBACK_SUCCESSFUL", lambda: ecs.describe_service_deployments(
        serviceDeploymentArns=[stopped["serviceDeploymentArn"]])["serviceDeployments"][0]["status"]
        == "ROLLBACK_SUCCESSFUL")
    assert "StopServiceDeployment" in seen
    ecs.delete_service(cluster="default", service="web", force=True)


def test_a_protected_task_survives_scale_in_until_unprotected(sim_server):
    ecs = sim_server.client()
    seen = strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default")
    net = network(sim_server)
    td = task_definition(ecs, "keep")
    ecs.create_service(cluster="default", serviceName="keep", taskDefinition=td, desiredCount=3,
                       launchType="FARGATE", networkConfiguration=net)
    steady(ecs, "keep", 3)
    tasks = [t["taskArn"] for t in service_tasks(ecs, "keep")]
    account = td.split(":")[4]

    # Protection for 120 minutes by default, or as long as asked.
    before = time.time()
    default = ecs.update_task_protection(cluster="default", tasks=[tasks[0]], protectionEnabled=True)
    assert default["failures"] == []
    protected = default["protectedTasks"][0]
    assert protected["taskArn"] == tasks[0] and protected["protectionEnabled"] is True
    expires = protected["expirationDate"].timestamp()
    assert before + 120 * 60 - 5 <= expires <= time.time() + 120 * 60 + 5, (before, expires)
    short = ecs.update_task_protection(cluster="default", tasks=[tasks[0]], protectionEnabled=True,
                                       expiresInMinutes=5)["protectedTasks"][0]
    assert abs(short["expirationDate"].timestamp() - (time.time() + 300)) < 30, short
    got = ecs.get_task_protection(cluster="default", tasks=[tasks[0], tasks[1]])
    by_arn = {p["taskArn"]: p for p in got["protectedTasks"]}
    assert by_arn[tasks[0]]["protectionEnabled"] is True
    assert by_arn[tasks[1]]["protectionEnabled"] is False

    # Scale in to 1: the protected task is the one kept.
    ecs.update_service(cluster="default", service="keep", desiredCount=1)
    steady(ecs, "keep", 1)
    assert [t["taskArn"] for t in service_tasks(ecs, "keep")] == [tasks[0]]
    stopped = ecs.describe_tasks(cluster="default", tasks=tasks[1:])["tasks"]
    assert all(t["stopCode"] == "ServiceSchedulerInitiated" for t in stopped), stopped

    # Unprotected, it can go.
    ecs.update_task_protection(cluster="default", tasks=[tasks[0]], protectionEnabled=False)
    assert ecs.get_task_protection(cluster="default", tasks=[tasks[0]])["protectedTasks"][0]["protectionEnabled"] is False
    ecs.update_service(cluster="default", service="keep", desiredCount=0)
    wait("keep at 0", lambda: not service_tasks(ecs, "keep"))

    # Unknown tasks and standalone tasks are failures, not errors.
    unknown = f"arn:aws:ecs:us-east-1:{account}:task/default/0123456789abcdef0123456789abcdef"
    got = ecs.get_task_protection(cluster="default", tasks=[unknown])
    assert got["protectedTasks"] == [] and got["failures"][0]["arn"] == unknown
    assert got["failures"][0]["reason"] == "MISSING", got["failures"]
    standalone = ecs.run_task(cluster="default", taskDefinition=td, launchType="FARGATE",
                              networkConfiguration=net)["tasks"][0]["taskArn"]
    refused = ecs.update_task_protection(cluster="default", tasks=[standalone], protectionEnabled=True)
    assert refused["protectedTasks"] == [] and refused["failures"][0]["reason"] == "TASK_NOT_VALID", refused
    bad = error(ecs.update_task_protection, cluster="default", tasks=[tasks[0]], protectionEnabled=True,
                expiresInMinutes=2881)
    assert bad[0] == "InvalidParameterException", bad
    ecs.stop_task(cluster="default", task=standalone)
    ecs.delete_service(cluster="default", service="keep")
    assert {"UpdateTaskProtection", "GetTaskProtection"} <= seen


def test_what_fargate_refuses_is_refused_with_ecs_errors(sim_server):
    ecs = sim_server.client()
    strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default")
    net = network(sim_server)
    td = task_definition(ecs, "app")
    base = dict(cluster="default", serviceName="app", taskDefinition=td, desiredCount=1,
                launchType="FARGATE", networkConfiguration=net)

    code, message = error(ecs.create_service, **dict(base, schedulingStrategy="DAEMON"))
    assert code == "InvalidParameterException" and "daemon" in message.lower(), message
    code, message = error(ecs.create_service, **dict(
        base, placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1a"}]))
    assert code == "InvalidParameterException", (code, message)
    assert "Placement constraints are not supported with FARGATE launch type" in message, message
    code, message = error(ecs.create_service, **dict(base, placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}]))
    # (ECS's wording for strategies was not found; the constraints message above is ECS's.)
    assert code == "InvalidParameterException", (code, message)
    assert "strategies are not supported" in message and "FARGATE" in message, message
    # ECS itself offers these controllers, so it has no refusal to copy: ECS's code for a
    # feature it does not offer is UnsupportedFeatureException.
    for controller in ("CODE_DEPLOY", "EXTERNAL"):
        code, message = error(ecs.create_service, **dict(base, deploymentController={"type": controller}))
        assert code in ("UnsupportedFeatureException", "InvalidParameterException"), (controller, code, message)
        assert controller in message, message
    ec2_only = task_definition(ecs, "ec2-only", requiresCompatibilities=["EC2"])
    code, message = error(ecs.create_service, **dict(base, taskDefinition=ec2_only))
    assert code == "InvalidParameterException", (code, message)
    assert message == "Task definition does not support launch_type FARGATE.", message
    code, message = error(ecs.create_service, **dict(base, cluster="nowhere"))
    assert (code, message) == ("ClusterNotFoundException", "Cluster not found."), (code, message)
    assert ecs.list_services(cluster="default")["serviceArns"] == [], "nothing refused was created"

    # clientToken: the same request again is the same service; another request is refused.
    first = ecs.create_service(**dict(base, clientToken="token-1"))["service"]
    again = ecs.create_service(**dict(base, clientToken="token-1"))["service"]
    assert again["serviceArn"] == first["serviceArn"] and again["createdAt"] == first["createdAt"]
    code, message = error(ecs.create_service, **dict(base, desiredCount=2, clientToken="token-1"))
    assert (code, message) == ("InvalidParameterException", "Creation of service was not idempotent."), message
    # A second ACTIVE service of the same name (asking for something else), without a token.
    code, message = error(ecs.create_service, **dict(base, desiredCount=3))
    assert (code, message) == ("InvalidParameterException", "Creation of service was not idempotent."), message
    assert len(ecs.list_services(cluster="default")["serviceArns"]) == 1

    code, message = error(ecs.update_service, cluster="default", service="missing", desiredCount=1)
    assert (code, message) == ("ServiceNotFoundException", "Service not found."), message
    code, message = error(ecs.update_service, cluster="nowhere", service="app", desiredCount=1)
    assert (code, message) == ("ClusterNotFoundException", "Cluster not found."), message

    # Deleting above 0 needs force; an INACTIVE service cannot be updated.
    code, message = error(ecs.delete_service, cluster="default", service="app")
    assert code == "InvalidParameterException", (code, message)
    assert message == "The service cannot be stopped while it is scaled above 0.", message
    ecs.delete_service(cluster="default", service="app", force=True)
    wait("app INACTIVE", lambda: describe(ecs, "app")["status"] == "INACTIVE")
    code, message = error(ecs.update_service, cluster="default", service="app", desiredCount=1)
    assert (code, message) == ("ServiceNotActiveException", "Service was not ACTIVE."), message


def test_a_draining_service_cannot_be_updated(no_agent_server):
    """Without an agent the tasks never stop, so a force-deleted service stays DRAINING."""
    ecs = no_agent_server.client()
    strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default")
    td = task_definition(ecs, "drain")
    ecs.create_service(cluster="default", serviceName="drain", taskDefinition=td, desiredCount=1,
                       launchType="FARGATE", networkConfiguration=network(no_agent_server))
    arns = wait("the service's task", lambda: ecs.list_tasks(cluster="default", serviceName="drain")["taskArns"])
    deleted = ecs.delete_service(cluster="default", service="drain", force=True)["service"]
    assert deleted["status"] == "DRAINING", deleted
    tasks = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"]
    assert all(t["lastStatus"] == "PROVISIONING" for t in tasks), "no agent ever stops them"
    # ECS: INACTIVE only once every task is STOPPING or STOPPED.
    assert describe(ecs, "drain")["status"] == "DRAINING"
    assert ecs.list_services(cluster="default")["serviceArns"] == [], "a DRAINING service is not listed"
    code, message = error(ecs.update_service, cluster="default", service="drain", desiredCount=1)
    assert (code, message) == ("ServiceNotActiveException", "Service was not ACTIVE."), message
    # Its name is still taken while it drains.
    code, message = error(ecs.create_service, cluster="default", serviceName="drain", taskDefinition=td,
                          desiredCount=0, launchType="FARGATE", networkConfiguration=network(no_agent_server))
    assert (code, message) == ("InvalidParameterException", "Creation of service was not idempotent."), message
