//! Imports checked against real certificates (rcgen, and openssl for the key encodings rcgen
//! does not write), over a real store.

use std::sync::Mutex;

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};

use super::*;

fn acm() -> (Acm, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
    (Acm::new(Arc::new(store), Identity::new("us-east-1", "123456789012")), dir)
}

/// A PEM certificate for `names` and its PKCS#8 key; `expired` dates it in the past.
fn pair(names: &[&str], expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn import(certificate: &str, key: &str) -> Import {
    Import {
        certificate: certificate.as_bytes().to_vec(),
        private_key: key.as_bytes().to_vec(),
        chain: None,
        arn: None,
        tags: Vec::new(),
    }
}

fn refused(result: Result<String, AcmError>) -> String {
    match result {
        Err(AcmError::Validation(message)) => message,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn imports_describes_serves_and_deletes() {
    let (acm, _dir) = acm();
    let (ca_cert, ca_key) = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Flotilla Test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let leaf_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["www.example.com".into(), "api.example.com".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "www.example.com");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = params.signed_by(&leaf_key, &ca_key).unwrap().pem();

    let mut request = import(&leaf, &leaf_key.serialize_pem());
    request.chain = Some(ca_cert.as_bytes().to_vec());
    request.tags = vec![Tag::new("team", "web")];
    let arn = acm.import(request).await.unwrap();
    assert!(arn.starts_with("arn:aws:acm:us-east-1:123456789012:certificate/"), "{arn}");

    let c = acm.describe(&arn).await.unwrap();
    assert_eq!(c.status, CertificateStatus::Issued);
    assert_eq!(c.facts.domain_name, "www.example.com");
    assert_eq!(c.facts.subject_alternative_names, ["www.example.com", "api.example.com"]);
    assert_eq!(c.facts.subject, "CN=www.example.com");
    assert_eq!(c.facts.issuer, "CN=Flotilla Test CA");
    assert_eq!(c.facts.key_algorithm, "EC_prime256v1");
    assert_eq!(c.facts.signature_algorithm, "SHA256WITHECDSA");
    assert_eq!(c.facts.key_usages, ["DIGITAL_SIGNATURE"]);
    assert_eq!(c.facts.extended_key_usages, ["TLS_WEB_SERVER_AUTHENTICATION"]);
    assert!(c.facts.serial.split(':').all(|b| b.len() == 2), "{}", c.facts.serial);
    assert!(c.facts.not_before < c.facts.not_after);
    assert!(c.in_use_by.is_empty());

    let served = acm.certificate_pem(&arn).await.unwrap();
    assert_eq!(served.chain_pem, format!("{}\n{}\n", leaf.trim_end(), ca_cert.trim_end()));
    assert_eq!(served.key_pem, leaf_key.serialize_pem());
    assert!(!format!("{served:?}").contains("PRIVATE KEY"));
    assert_eq!(acm.get(&arn).await.unwrap(), (leaf.clone(), Some(ca_cert.clone())));
    assert_eq!(acm.tags(&arn).await.unwrap(), [Tag::new("team", "web")]);

    acm.delete(&arn).await.unwrap();
    assert!(matches!(acm.describe(&arn).await, Err(AcmError::NotFound { .. })));
    assert!(matches!(acm.delete(&arn).await, Err(AcmError::NotFound { .. })));
}

#[tokio::test]
async fn refuses_what_acm_refuses() {
    let (acm, _dir) = acm();
    let (cert, key) = pair(&["a.example.com"], false);
    let (other_cert, other_key) = pair(&["b.example.com"], false);

    let message = refused(acm.import(import(&cert, &other_key)).await);
    assert!(message.contains("does not match"), "{message}");
    let message = refused(acm.import(import("not a certificate", &key)).await);
    assert!(message.contains("certificate is not valid PEM"), "{message}");
    let message =
        refused(acm.import(import(&cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")).await);
    assert!(message.contains("private key could not be read"), "{message}");
    let message = refused(acm.import(import(&cert, "garbage")).await);
    assert!(message.contains("private key is not valid PEM"), "{message}");
    let message = refused(acm.import(import(&format!("{cert}{other_cert}"), &key)).await);
    assert!(message.contains("exactly one certificate; it holds 2"), "{message}");
    let broken = cert.replace("MII", "MIX");
    let message = refused(acm.import(import(&broken, &key)).await);
    assert!(message.contains("not a valid X.509 certificate"), "{message}");
    let mut with_bad_chain = import(&cert, &key);
    with_bad_chain.chain = Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec());
    let message = refused(acm.import(with_bad_chain).await);
    assert!(message.contains("certificate chain's certificate 1"), "{message}");
    assert!(acm.list(ListQuery::default()).await.unwrap().items.is_empty(), "nothing refused was kept");

    let mut bad_tag = import(&cert, &key);
    bad_tag.tags = vec![Tag::new("aws:name", "x")];
    assert!(matches!(acm.import(bad_tag).await, Err(AcmError::InvalidTag(_))));
    assert!(matches!(
        acm.describe("arn:aws:acm:us-east-1:123456789012:certificate/nope").await,
        Err(AcmError::InvalidArn { .. })
    ));
    let absent = "arn:aws:acm:us-east-1:123456789012:certificate/7f1f6e59-4b6a-4c59-9d1b-2bb4d2b8c3a1";
    assert!(matches!(acm.describe(absent).await, Err(AcmError::NotFound { .. })));
    let mut reimport = import(&other_cert, &other_key);
    reimport.arn = Some(absent.into());
    assert!(matches!(acm.import(reimport).await, Err(AcmError::NotFound { .. })));
    let debug = format!("{:?}", import(&cert, &key));
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[tokio::test]
async fn expired_certificates_import_as_expired_and_filter_by_status() {
    let (acm, _dir) = acm();
    let (cert, key) = pair(&["old.example.com"], true);
    let old = acm.import(import(&cert, &key)).await.unwrap();
    let (cert, key) = pair(&["new.example.com"], false);
    let new = acm.import(import(&cert, &key)).await.unwrap();
    assert_eq!(acm.describe(&old).await.unwrap().status, CertificateStatus::Expired);

    let expired =
        acm.list(ListQuery { statuses: vec![CertificateStatus::Expired], ..Default::default() }).await.unwrap();
    assert_eq!(expired.items.iter().map(|c| c.arn.as_str()).collect::<Vec<_>>(), [old.as_str()]);
    let issued = acm.list(ListQuery { statuses: vec![CertificateStatus::Issued], ..Default::default() }).await.unwrap();
    assert_eq!(issued.items.iter().map(|c| c.arn.as_str()).collect::<Vec<_>>(), [new.as_str()]);
}

#[tokio::test]
async fn reimport_replaces_the_certificate_under_the_same_arn_and_tags() {
    let (acm, _dir) = acm();
    let (cert, key) = pair(&["one.example.com"], false);
    let mut first = import(&cert, &key);
    first.tags = vec![Tag::new("k", "v")];
    let arn = acm.import(first).await.unwrap();
    let (cert2, key2) = pair(&["two.example.com"], false);
    let mut again = import(&cert2, &key2);
    again.arn = Some(arn.clone());
    assert_eq!(acm.import(again).await.unwrap(), arn);
    assert_eq!(acm.describe(&arn).await.unwrap().facts.domain_name, "two.example.com");
    assert_eq!(acm.certificate_pem(&arn).await.unwrap().key_pem, key2);
    assert_eq!(acm.tags(&arn).await.unwrap(), [Tag::new("k", "v")]);
    assert_eq!(acm.list(ListQuery::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn tags_pages_and_users() {
    let (acm, _dir) = acm();
    let mut arns = Vec::new();
    for name in ["a.example.com", "b.example.com", "c.example.com"] {
        let (cert, key) = pair(&[name], false);
        arns.push(acm.import(import(&cert, &key)).await.unwrap());
    }
    arns.sort();
    let first = acm.list(ListQuery { max_items: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = acm
        .list(ListQuery { max_items: Some(2), next_token: first.next_token.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(rest.next_token, None);
    let walked: Vec<_> = first.items.iter().chain(&rest.items).map(|c| c.arn.clone()).collect();
    assert_eq!(walked, arns);
    assert!(matches!(
        acm.list(ListQuery { max_items: Some(0), ..Default::default() }).await,
        Err(AcmError::Validation(_))
    ));

    let arn = &arns[0];
    acm.add_tags(arn, vec![Tag::new("a", "1"), Tag::new("b", "2")]).await.unwrap();
    acm.add_tags(arn, vec![Tag::new("a", "3")]).await.unwrap();
    acm.remove_tags(arn, vec![("b".into(), Some("other".into()))]).await.unwrap();
    assert_eq!(acm.tags(arn).await.unwrap(), [Tag::new("a", "3"), Tag::new("b", "2")]);
    acm.remove_tags(arn, vec![("b".into(), None)]).await.unwrap();
    assert_eq!(acm.tags(arn).await.unwrap(), [Tag::new("a", "3")]);

    struct Listeners(Mutex<Vec<String>>);
    impl CertificateUsers for Listeners {
        fn users<'a>(&'a self, _arn: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
            let users = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(users) })
        }
    }
    let lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/0123456789abcdef";
    let users = Arc::new(Listeners(Mutex::new(vec![lb.to_owned()])));
    acm.set_users(users.clone());
    assert_eq!(acm.describe(arn).await.unwrap().in_use_by, [lb]);
    match acm.delete(arn).await {
        Err(AcmError::InUse { user, .. }) => assert_eq!(user, lb),
        other => panic!("expected in use, got {other:?}"),
    }
    users.0.lock().unwrap().clear();
    acm.delete(arn).await.unwrap();
}

/// Runs openssl, which writes the PKCS#1 and SEC1 keys rcgen does not.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn reads_pkcs1_rsa_and_sec1_ec_keys() {
    let (acm, _dir) = acm();
    let work = tempfile::tempdir().unwrap();
    openssl(work.path(), &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(work.path(), &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec.key"]);
    for (key, algorithm, signature) in
        [("rsa.key", "RSA_2048", "SHA256WITHRSA"), ("ec.key", "EC_secp384r1", "SHA256WITHECDSA")]
    {
        openssl(
            work.path(),
            &["req", "-x509", "-key", key, "-subj", "/CN=k.example.com", "-days", "2", "-sha256", "-out", "c.pem"],
        );
        let key_pem = std::fs::read_to_string(work.path().join(key)).unwrap();
        assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY") || key_pem.starts_with("-----BEGIN EC PRIVATE KEY"));
        let cert = std::fs::read_to_string(work.path().join("c.pem")).unwrap();
        let arn = acm.import(import(&cert, &key_pem)).await.unwrap();
        let facts = acm.describe(&arn).await.unwrap().facts;
        assert_eq!((facts.key_algorithm.as_str(), facts.signature_algorithm.as_str()), (algorithm, signature));
        assert_eq!(facts.subject_alternative_names, ["k.example.com"]);
    }
}
