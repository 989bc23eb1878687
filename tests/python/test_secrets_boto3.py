"""SSM Parameter Store and Secrets Manager through boto3, every raw response checked against
botocore's output shapes."""
import botocore.exceptions
import pytest

from shapes import strict

SSM_IMPLEMENTED = {
    "PutParameter", "GetParameter", "GetParameters", "GetParametersByPath", "DescribeParameters",
    "DeleteParameter", "DeleteParameters",
}
SM_IMPLEMENTED = {
    "CreateSecret", "GetSecretValue", "PutSecretValue", "UpdateSecret", "DescribeSecret", "ListSecrets",
    "DeleteSecret",
}


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_ssm_operations_answer_in_the_model_shape(server):
    ssm = server.client("ssm")
    seen = strict(ssm, "ssm")
    assert ssm.put_parameter(Name="/svc/a", Value="1", Type="String", Description="first")["Version"] == 1
    ssm.put_parameter(Name="/svc/b", Value="x,y", Type="StringList")
    ssm.put_parameter(Name="/svc/deep/c", Value="secret", Type="SecureString")
    assert ssm.put_parameter(Name="/svc/a", Value="2", Overwrite=True)["Version"] == 2
    assert ssm.get_parameter(Name="/svc/a")["Parameter"]["Value"] == "2"
    assert ssm.get_parameter(Name="/svc/a:1")["Parameter"]["Value"] == "1"
    got = ssm.get_parameters(Names=["/svc/a", "/svc/missing"], WithDecryption=True)
    assert [p["Name"] for p in got["Parameters"]] == ["/svc/a"] and got["InvalidParameters"] == ["/svc/missing"]
    assert ssm.get_parameter(Name="/svc/deep/c", WithDecryption=True)["Parameter"]["Value"] == "secret"
    shallow = ssm.get_parameters_by_path(Path="/svc")["Parameters"]
    assert sorted(p["Name"] for p in shallow) == ["/svc/a", "/svc/b"]
    page = ssm.get_parameters_by_path(Path="/svc", Recursive=True, MaxResults=2)
    assert len(page["Parameters"]) == 2 and page["NextToken"]
    rest = ssm.get_parameters_by_path(Path="/svc", Recursive=True, MaxResults=2, NextToken=page["NextToken"])
    assert len(rest["Parameters"]) == 1 and "NextToken" not in rest
    described = ssm.describe_parameters()["Parameters"]
    assert {p["Name"] for p in described} == {"/svc/a", "/svc/b", "/svc/deep/c"}
    assert error_code(lambda: ssm.get_parameter(Name="/svc/none")) == "ParameterNotFound"
    assert error_code(lambda: ssm.put_parameter(Name="/svc/a", Value="3", Type="String")) == "ParameterAlreadyExists"
    assert error_code(lambda: ssm.put_parameter(Name="/svc/new", Value="v")) == "ValidationException"
    ssm.delete_parameter(Name="/svc/b")
    deleted = ssm.delete_parameters(Names=["/svc/a", "/svc/b"])
    assert deleted["DeletedParameters"] == ["/svc/a"] and deleted["InvalidParameters"] == ["/svc/b"]
    assert seen == SSM_IMPLEMENTED, SSM_IMPLEMENTED - seen


def test_secretsmanager_operations_answer_in_the_model_shape(server):
    sm = server.client("secretsmanager")
    seen = strict(sm, "secretsmanager")
    created = sm.create_secret(Name="app/db", SecretString='{"password":"one"}', Description="db login")
    assert created["Name"] == "app/db" and created["ARN"].startswith("arn:aws:secretsmanager:us-east-1:")
    put = sm.put_secret_value(SecretId=created["ARN"], SecretString='{"password":"two"}')
    assert put["VersionStages"] == ["AWSCURRENT"] and put["VersionId"] != created["VersionId"]
    value = sm.get_secret_value(SecretId="app/db")
    assert value["SecretString"] == '{"password":"two"}' and value["VersionId"] == put["VersionId"]
    old = sm.get_secret_value(SecretId="app/db", VersionId=created["VersionId"])
    assert old["SecretString"] == '{"password":"one"}' and old["VersionStages"] == ["AWSPREVIOUS"]
    sm.update_secret(SecretId="app/db", Description="rotated")
    described = sm.describe_secret(SecretId=created["ARN"])
    assert described["Description"] == "rotated" and len(described["VersionIdsToStages"]) == 2
    binary = sm.create_secret(Name="blob", SecretBinary=b"\x00\x01binary")
    assert sm.get_secret_value(SecretId=binary["ARN"])["SecretBinary"] == b"\x00\x01binary"
    listed = sm.list_secrets(MaxResults=1)
    assert len(listed["SecretList"]) == 1 and listed["NextToken"]
    assert error_code(lambda: sm.create_secret(Name="app/db", SecretString="x")) == "ResourceExistsException"
    assert error_code(lambda: sm.get_secret_value(SecretId="nope")) == "ResourceNotFoundException"
    deleted = sm.delete_secret(SecretId="app/db", RecoveryWindowInDays=7)
    assert deleted["DeletionDate"]
    assert error_code(lambda: sm.get_secret_value(SecretId="app/db")) == "InvalidRequestException"
    assert [s["Name"] for s in sm.list_secrets()["SecretList"]] == ["blob"]
    sm.delete_secret(SecretId="blob", ForceDeleteWithoutRecovery=True)
    assert seen == SM_IMPLEMENTED, SM_IMPLEMENTED - seen
