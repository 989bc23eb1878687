"""CloudWatch Logs through boto3, with every raw response checked against botocore's output shapes."""
import time

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from shapes import strict

GROUP = "/ecs/shape-check"
STREAM = "ecs/web/0123456789abcdef"


def now_ms():
    return int(time.time() * 1000)


IMPLEMENTED = {
    "CreateLogGroup", "DeleteLogGroup", "DescribeLogGroups", "PutRetentionPolicy", "DeleteRetentionPolicy",
    "PutLogGroupDeletionProtection", "CreateLogStream", "DeleteLogStream", "DescribeLogStreams", "PutLogEvents",
    "GetLogEvents", "FilterLogEvents", "TagLogGroup", "UntagLogGroup", "ListTagsLogGroup", "TagResource",
    "UntagResource", "ListTagsForResource",
}


def test_every_implemented_operation_answers_in_the_model_shape(server):
    logs = server.client("logs")
    seen = strict(logs, "logs")
    logs.create_log_group(logGroupName=GROUP, tags={"team": "core"}, logGroupClass="STANDARD")
    logs.create_log_group(logGroupName="/ecs/other")
    logs.describe_log_groups()
    logs.describe_log_groups(logGroupNamePrefix="/ecs/", limit=1)
    logs.describe_log_groups(logGroupNamePattern="SHAPE")
    logs.put_retention_policy(logGroupName=GROUP, retentionInDays=14)
    groups = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    assert groups[0]["retentionInDays"] == 14
    arn = groups[0]["logGroupArn"]
    assert groups[0]["arn"] == arn + ":*"
    logs.describe_log_groups(logGroupIdentifiers=[arn, "/ecs/absent"])
    logs.put_log_group_deletion_protection(logGroupIdentifier=GROUP, deletionProtectionEnabled=False)

    logs.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="ecs/db/1")
    t = now_ms()
    put = logs.put_log_events(
        logGroupName=GROUP, logStreamName=STREAM, sequenceToken="ignored",
        logEvents=[{"timestamp": t - 15 * 86_400_000, "message": "ancient"}, {"timestamp": t, "message": "hello ERROR"},
                   {"timestamp": t + 1, "message": "world"}],
    )
    # Older than 14 days and than the 14-day retention: both are reported.
    assert put["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 0, "expiredLogEventEndIndex": 0}
    logs.put_log_events(logGroupName=GROUP, logStreamName="ecs/db/1", logEvents=[{"timestamp": t, "message": "db"}])
    logs.describe_log_streams(logGroupName=GROUP)
    logs.describe_log_streams(logGroupIdentifier=arn, orderBy="LastEventTime", descending=True, limit=1)
    logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix="ecs/db")
    logs.get_log_events(logGroupName=GROUP, logStreamName=STREAM)
    logs.get_log_events(logGroupIdentifier=arn, logStreamName=STREAM, startFromHead=True, limit=1,
                        startTime=t, endTime=t + 10)
    logs.filter_log_events(logGroupName=GROUP)
    logs.filter_log_events(logGroupName=GROUP, filterPattern="ERROR", logStreamNames=[STREAM], limit=1)
    logs.filter_log_events(logGroupName=GROUP, logStreamNamePrefix="ecs/", startTime=t, endTime=t + 1, interleaved=True)

    logs.tag_log_group(logGroupName=GROUP, tags={"env": "prod"})
    logs.untag_log_group(logGroupName=GROUP, tags=["team"])
    assert logs.list_tags_log_group(logGroupName=GROUP)["tags"] == {"env": "prod"}
    logs.tag_resource(resourceArn=arn, tags={"owner": "me"})
    logs.untag_resource(resourceArn=arn, tagKeys=["env"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"owner": "me"}

    logs.delete_retention_policy(logGroupName=GROUP)
    logs.delete_log_stream(logGroupName=GROUP, logStreamName="ecs/db/1")
    logs.delete_log_group(logGroupName=GROUP)
    assert seen == IMPLEMENTED


def test_events_round_trip_in_order_with_tokens(server):
    logs = server.client("logs")
    strict(logs, "logs")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    t = now_ms() - 10_000
    logs.put_log_events(logGroupName=GROUP, logStreamName=STREAM,
                        logEvents=[{"timestamp": t + i, "message": f"m{i}"} for i in range(25)])
    seen, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = logs.get_log_events(logGroupName=GROUP, logStreamName=STREAM, startFromHead=True, limit=10, **kwargs)
        if not page["events"]:
            assert page["nextForwardToken"] == token
            break
        assert all(e["ingestionTime"] >= e["timestamp"] for e in page["events"])
        seen += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
    assert seen == [f"m{i}" for i in range(25)]

    stream = logs.describe_log_streams(logGroupName=GROUP)["logStreams"][0]
    assert (stream["firstEventTimestamp"], stream["lastEventTimestamp"]) == (t, t + 24)
    assert stream["storedBytes"] == 0

    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=GROUP, PaginationConfig={"PageSize": 7})
    assert [e["message"] for p in pages for e in p["events"]] == [f"m{i}" for i in range(25)]
    matched = logs.filter_log_events(logGroupName=GROUP, filterPattern="?m3 ?m17")["events"]
    assert [e["message"] for e in matched] == ["m3", "m17"]


def test_modelled_errors_are_typed(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=GROUP)
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.create_log_stream(logGroupName="/absent", logStreamName="s")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.put_log_events(logGroupName=GROUP, logStreamName="absent",
                            logEvents=[{"timestamp": now_ms(), "message": "x"}])
    with pytest.raises(logs.exceptions.InvalidParameterException) as err:
        logs.put_retention_policy(logGroupName=GROUP, retentionInDays=42)
    assert "retentionInDays" in err.value.response["Error"]["Message"]
    logs.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    with pytest.raises(logs.exceptions.InvalidParameterException) as err:
        logs.put_log_events(logGroupName=GROUP, logStreamName=STREAM,
                            logEvents=[{"timestamp": now_ms(), "message": "b"}, {"timestamp": now_ms() - 9, "message": "a"}])
    assert "chronological" in err.value.response["Error"]["Message"]
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.describe_log_streams(logGroupName=GROUP, orderBy="LastEventTime", logStreamNamePrefix="x")
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.filter_log_events(logGroupName=GROUP, filterPattern='{ $.level = "ERROR" }')
    with pytest.raises(ParamValidationError):
        logs.describe_log_groups(limit="ten")
    with pytest.raises(ClientError) as err:
        logs.put_log_group_deletion_protection(logGroupIdentifier=GROUP, deletionProtectionEnabled=True)
        logs.delete_log_group(logGroupName=GROUP)
    assert err.value.response["Error"]["Code"] == "ValidationException"
