"""KMS through boto3, every raw response checked against botocore's output shapes."""
import botocore.exceptions
import pytest

from shapes import strict

IMPLEMENTED = {
    "CreateKey", "DescribeKey", "ListKeys", "EnableKey", "DisableKey", "Encrypt", "Decrypt",
    "CreateAlias", "DeleteAlias", "ListAliases",
}


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_kms_operations_answer_in_the_model_shape(no_agent_server):
    kms = no_agent_server.client("kms")
    seen = strict(kms, "kms")
    meta = kms.create_key(Description="app", Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyManager"] == "CUSTOMER"
    assert kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["KeyId"] == meta["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=meta["KeyId"])
    encrypted = kms.encrypt(KeyId="alias/app", Plaintext=b"\x00secret\xff", EncryptionContext={"a": "1"})
    assert encrypted["KeyId"] == meta["Arn"] and b"secret" not in encrypted["CiphertextBlob"]
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"a": "1"})
    assert decrypted["Plaintext"] == b"\x00secret\xff" and decrypted["KeyId"] == meta["Arn"]
    wrong = lambda: kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"a": "2"})
    assert error_code(wrong) == "InvalidCiphertextException"
    assert error_code(lambda: kms.decrypt(CiphertextBlob=b"junk")) == "InvalidCiphertextException"
    ssm_key = kms.describe_key(KeyId="alias/aws/ssm")["KeyMetadata"]
    assert ssm_key["KeyManager"] == "AWS"
    other = lambda: kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"a": "1"}, KeyId=ssm_key["KeyId"])
    assert error_code(other) == "IncorrectKeyException"
    kms.disable_key(KeyId=meta["KeyId"])
    assert error_code(lambda: kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")) == "DisabledException"
    kms.enable_key(KeyId=meta["KeyId"])
    first = kms.list_keys(Limit=1)
    assert len(first["Keys"]) == 1 and first["Truncated"] and first["NextMarker"]
    rest = kms.list_keys(Limit=1, Marker=first["NextMarker"])
    assert not rest["Truncated"] and "NextMarker" not in rest
    assert error_code(lambda: kms.list_keys(Marker="forged")) == "InvalidMarkerException"
    names = [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert names == ["alias/app", "alias/aws/secretsmanager", "alias/aws/ssm"]
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=meta["KeyId"])["Aliases"]] == ["alias/app"]
    assert error_code(lambda: kms.create_alias(AliasName="alias/app", TargetKeyId=meta["KeyId"])) == "AlreadyExistsException"
    assert error_code(lambda: kms.create_alias(AliasName="bad", TargetKeyId=meta["KeyId"])) == "InvalidAliasNameException"
    kms.delete_alias(AliasName="alias/app")
    assert error_code(lambda: kms.describe_key(KeyId="alias/app")) == "NotFoundException"
    assert error_code(lambda: kms.create_key(KeySpec="RSA_2048")) == "UnsupportedOperationException"
    assert seen == IMPLEMENTED, IMPLEMENTED - seen
