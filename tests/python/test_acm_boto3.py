"""ACM through boto3: imported certificates (made here with `cryptography`), every raw
response checked against botocore's output shapes, and the refusals ACM gives for bad PEM."""
import datetime

import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shapes import strict

NOW = datetime.datetime.now(datetime.timezone.utc)


def error(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(cn, key, issuer=None, issuer_key=None, sans=(), not_after=None, ca=False):
    """A PEM certificate for `cn`, signed by `issuer_key` (itself if none)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(issuer or cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=2) if not_after is None else not_after - datetime.timedelta(days=30))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def pkcs8(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_import_describe_list_get_tag_and_delete(server):
    acm = server.client("acm")
    seen = strict(acm, "acm")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Flotilla Python CA", ca_key, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = certificate("www.example.com", key, issuer="Flotilla Python CA", issuer_key=ca_key,
                       sans=["www.example.com", "example.com"])
    # PKCS#1, as `openssl genrsa -traditional` writes it.
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    arn = acm.import_certificate(Certificate=leaf, PrivateKey=key_pem, CertificateChain=ca,
                                 Tags=[{"Key": "team", "Value": "web"}])["CertificateArn"]
    assert arn.startswith("arn:aws:acm:us-east-1:") and "certificate/" in arn

    c = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert c["DomainName"] == "www.example.com"
    assert c["SubjectAlternativeNames"] == ["www.example.com", "example.com"]
    assert c["Subject"] == "CN=www.example.com" and c["Issuer"] == "CN=Flotilla Python CA"
    assert (c["Status"], c["Type"], c["KeyAlgorithm"]) == ("ISSUED", "IMPORTED", "RSA_2048")
    assert c["SignatureAlgorithm"] == "SHA256WITHECDSA"
    assert c["RenewalEligibility"] == "INELIGIBLE" and c["InUseBy"] == []
    assert c["ExtendedKeyUsages"] == [{"Name": "TLS_WEB_SERVER_AUTHENTICATION", "OID": "1.3.6.1.5.5.7.3.1"}]
    assert c["NotBefore"] < NOW < c["NotAfter"]
    assert abs((c["ImportedAt"] - NOW).total_seconds()) < 120

    got = acm.get_certificate(CertificateArn=arn)
    assert got["Certificate"].encode() == leaf and got["CertificateChain"].encode() == ca

    listed = acm.list_certificates()["CertificateSummaryList"]
    assert [(s["CertificateArn"], s["Status"], s["InUse"]) for s in listed] == [(arn, "ISSUED", False)]
    assert acm.list_certificates(CertificateStatuses=["EXPIRED"])["CertificateSummaryList"] == []
    assert acm.list_certificates(CertificateStatuses=["PENDING_VALIDATION"])["CertificateSummaryList"] == []
    assert len(acm.list_certificates(Includes={"keyTypes": ["RSA_2048"]})["CertificateSummaryList"]) == 1
    assert acm.list_certificates(Includes={"keyTypes": ["EC_prime256v1"]})["CertificateSummaryList"] == []

    acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": "env", "Value": "prod"}])
    acm.remove_tags_from_certificate(CertificateArn=arn, Tags=[{"Key": "team"}])
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]

    # Re-import over the same ARN: a new certificate and key, same ARN and tags.
    key2 = ec.generate_private_key(ec.SECP384R1())
    again = acm.import_certificate(CertificateArn=arn, Certificate=certificate("api.example.com", key2),
                                   PrivateKey=pkcs8(key2))
    assert again["CertificateArn"] == arn
    c = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert (c["DomainName"], c["KeyAlgorithm"], c["SignatureAlgorithm"]) == ("api.example.com", "EC_secp384r1",
                                                                             "SHA256WITHECDSA")
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]

    acm.delete_certificate(CertificateArn=arn)
    assert error(lambda: acm.describe_certificate(CertificateArn=arn))[0] == "ResourceNotFoundException"
    assert seen >= {"ImportCertificate", "DescribeCertificate", "GetCertificate", "ListCertificates",
                    "ListTagsForCertificate", "AddTagsToCertificate", "RemoveTagsFromCertificate",
                    "DeleteCertificate"}


def test_bad_pem_and_keys_are_validation_errors(server):
    acm = server.client("acm")
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("a.example.com", key)
    for (certificate_pem, key_pem), words in [
        ((cert, pkcs8(other)), "does not match"),
        ((b"garbage", pkcs8(key)), "not valid PEM"),
        ((cert, b"garbage"), "private key is not valid PEM"),
        ((cert + certificate("b.example.com", other), pkcs8(key)), "exactly one certificate"),
        ((cert.replace(b"MII", b"MIX", 1), pkcs8(key)), "not a valid X.509 certificate"),
    ]:
        code, message = error(lambda: acm.import_certificate(Certificate=certificate_pem, PrivateKey=key_pem))
        assert code == "ValidationException" and words in message, (code, message)
    assert acm.list_certificates()["CertificateSummaryList"] == []

    # Expired certificates are imported, and shown EXPIRED.
    old = certificate("old.example.com", key, not_after=NOW - datetime.timedelta(days=1))
    arn = acm.import_certificate(Certificate=old, PrivateKey=pkcs8(key))["CertificateArn"]
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "EXPIRED"
    expired = acm.list_certificates(CertificateStatuses=["EXPIRED"])["CertificateSummaryList"]
    assert [s["CertificateArn"] for s in expired] == [arn]

    assert error(lambda: acm.describe_certificate(CertificateArn="arn:aws:acm:us-east-1:1:certificate/x"))[0] == \
        "InvalidArnException"
    assert error(lambda: acm.request_certificate(DomainName="example.com"))[0] == "UnknownOperationException"
