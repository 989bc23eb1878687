"""ECS through boto3, with every raw response checked against botocore's output shapes."""

import pytest
from botocore.exceptions import ClientError

from shapes import strict


TASK_DEFINITION = {
    "family": "shape-check",
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "512",
    "memory": "1 GB",
    "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
    "taskRoleArn": "arn:aws:iam::123456789012:role/app",
    "ephemeralStorage": {"sizeInGiB": 30},
    "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    "volumes": [{"name": "scratch"}],
    "tags": [{"key": "team", "value": "core"}],
    "containerDefinitions": [
        {
            "name": "db",
            "image": "busybox:latest",
            "essential": True,
            "memoryReservation": 256,
            "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/var/scratch"}],
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 10, "timeout": 3, "retries": 2},
            "environment": [{"name": "MODE", "value": "primary"}],
            "secrets": [{"name": "PW", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:pw"}],
            "dockerLabels": {"tier": "data"},
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": "/ecs/shape", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"},
            },
        },
        {
            "name": "web",
            "image": "busybox:latest",
            "essential": False,
            "cpu": 128,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp", "name": "http", "appProtocol": "http"}],
            "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
            "volumesFrom": [{"sourceContainer": "db", "readOnly": True}],
            "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"], "drop": ["NET_RAW"]}, "initProcessEnabled": True},
            "stopTimeout": 60,
        },
    ],
}

IMPLEMENTED = {
    "CreateCluster", "DescribeClusters", "ListClusters", "DeleteCluster", "UpdateClusterSettings",
    "PutClusterCapacityProviders", "DescribeCapacityProviders", "RegisterTaskDefinition",
    "DescribeTaskDefinition", "ListTaskDefinitions", "ListTaskDefinitionFamilies",
    "DeregisterTaskDefinition", "DeleteTaskDefinitions", "TagResource", "UntagResource",
    "ListTagsForResource",
}


def test_every_implemented_operation_answers_in_the_model_shape(server):
    ecs = server.client()
    seen = strict(ecs, "ecs")
    ecs.create_cluster(
        clusterName="shapes",
        tags=[{"key": "a", "value": "b"}],
        settings=[{"name": "containerInsights", "value": "enhanced"}],
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1, "base": 1}],
    )
    ecs.describe_clusters(clusters=["shapes", "missing"], include=["SETTINGS", "TAGS", "STATISTICS", "CONFIGURATIONS"])
    ecs.list_clusters(maxResults=1)
    ecs.update_cluster_settings(cluster="shapes", settings=[{"name": "containerInsights", "value": "disabled"}])
    ecs.put_cluster_capacity_providers(
        cluster="shapes", capacityProviders=["FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 2}],
    )
    ecs.describe_capacity_providers(include=["TAGS"])
    ecs.describe_capacity_providers(capacityProviders=["FARGATE", "nope"])
    registered = ecs.register_task_definition(**TASK_DEFINITION)
    arn = registered["taskDefinition"]["taskDefinitionArn"]
    assert registered["taskDefinition"]["memory"] == "1024"
    ecs.register_task_definition(**TASK_DEFINITION)
    ecs.describe_task_definition(taskDefinition="shape-check", include=["TAGS"])
    ecs.list_task_definitions(familyPrefix="shape", sort="DESC", maxResults=1)
    ecs.list_task_definition_families(status="ALL")
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "x", "value": "y"}])
    ecs.untag_resource(resourceArn=arn, tagKeys=["x"])
    ecs.list_tags_for_resource(resourceArn=arn)
    ecs.deregister_task_definition(taskDefinition=arn)
    ecs.delete_task_definitions(taskDefinitions=[arn, "shape-check:2"])
    ecs.delete_cluster(cluster="shapes")
    assert seen == IMPLEMENTED


def test_registered_definition_round_trips(server):
    ecs = server.client()
    td = ecs.register_task_definition(**TASK_DEFINITION)["taskDefinition"]
    described = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])["taskDefinition"]
    assert described == td
    web = next(c for c in td["containerDefinitions"] if c["name"] == "web")
    assert web["portMappings"][0]["hostPort"] == 8080
    assert web["dependsOn"] == [{"containerName": "db", "condition": "HEALTHY"}]
    assert web["linuxParameters"]["capabilities"]["add"] == ["SYS_PTRACE"]
    db = next(c for c in td["containerDefinitions"] if c["name"] == "db")
    assert db["dockerLabels"] == {"tier": "data"}
    names = {a["name"] for a in td["requiresAttributes"]}
    assert {"ecs.capability.container-health-check", "ecs.capability.container-ordering",
            "com.amazonaws.ecs.capability.task-iam-role",
            "ecs.capability.secrets.asm.environment-variables"} <= names


def test_modelled_errors_are_typed(server):
    ecs = server.client()
    with pytest.raises(ecs.exceptions.ClientException) as err:
        ecs.describe_task_definition(taskDefinition="absent:1")
    assert err.value.response["Error"]["Message"] == "Unable to describe task definition."
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.update_cluster_settings(cluster="absent", settings=[{"name": "containerInsights", "value": "enabled"}])
    bad = dict(TASK_DEFINITION, cpu="300")
    with pytest.raises(ecs.exceptions.ClientException) as err:
        ecs.register_task_definition(**bad)
    assert "cpu" in err.value.response["Error"]["Message"]


def test_paginators_walk_every_page(server):
    ecs = server.client()
    for i in range(7):
        ecs.register_task_definition(**dict(TASK_DEFINITION, family=f"page-{i % 3}"))
    pages = ecs.get_paginator("list_task_definitions").paginate(PaginationConfig={"PageSize": 2})
    arns = [a for p in pages for a in p["taskDefinitionArns"]]
    assert len(arns) == 7 and len(set(arns)) == 7
    families = ecs.get_paginator("list_task_definition_families").paginate(PaginationConfig={"PageSize": 1})
    assert [f for p in families for f in p["families"]] == ["page-0", "page-1", "page-2"]


def test_wrong_credentials_are_refused(server):
    import boto3
    ecs = boto3.client("ecs", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIAWRONG", aws_secret_access_key="nope")
    with pytest.raises(ClientError) as err:
        ecs.list_clusters()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


def trusted_roles(server, *names):
    """Creates roles ECS tasks may assume; their ARNs."""
    import json

    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                               "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]})
    iam = server.client("iam")
    return [iam.create_role(RoleName=n, AssumeRolePolicyDocument=trust)["Role"]["Arn"] for n in names]


def test_task_operations_answer_in_the_model_shape(server):
    """RunTask through StopTask, with a task that cannot pull its image: every answer,
    including a STOPPED task with its reason, must fit botocore's shapes."""
    import time

    ecs = server.client()
    seen = strict(ecs, "ecs")
    ecs.create_cluster(clusterName="default")
    # RunTask refuses roles that do not exist, as ECS does: make the two the definition names.
    roles = trusted_roles(server, "shapeExecutionRole", "app")
    td = ecs.register_task_definition(**dict(
        TASK_DEFINITION, family="shape-task", executionRoleArn=roles[0], taskRoleArn=roles[1],
        containerDefinitions=[{"name": "app", "image": "127.0.0.1:9/nothing-here:latest", "essential": True}]))
    arn = td["taskDefinition"]["taskDefinitionArn"]
    subnet = server.client("ec2").describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]["SubnetId"]
    network = {"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}}
    run = ecs.run_task(taskDefinition=arn, launchType="FARGATE", networkConfiguration=network,
                       startedBy="pytest", tags=[{"key": "k", "value": "v"}])
    task = run["tasks"][0]["taskArn"]
    assert run["tasks"][0]["lastStatus"] == "PROVISIONING"
    ecs.list_tasks(startedBy="pytest")
    deadline = time.monotonic() + 60
    while True:
        described = ecs.describe_tasks(tasks=[task, "missing"], include=["TAGS"])
        if described["tasks"][0]["lastStatus"] == "STOPPED":
            break
        assert time.monotonic() < deadline, described
        time.sleep(0.1)
    stopped = described["tasks"][0]
    assert stopped["stopCode"] == "TaskFailedToStart"
    assert stopped["stoppedReason"].startswith("CannotPullContainerError")
    assert described["failures"][0]["reason"] == "MISSING"
    ecs.stop_task(task=task, reason="already stopped")
    assert {"RunTask", "DescribeTasks", "ListTasks", "StopTask"} <= seen
