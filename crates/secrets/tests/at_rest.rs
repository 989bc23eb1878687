//! Values at rest: the store holds ciphertext only, and records written in plaintext before
//! encryption existed still read, until `seal_plaintext` rewrites them.

use std::sync::Arc;

use flotilla_kms::{Kms, MasterKey, NewKey};
use flotilla_secrets::{NewParameter, NewSecret, ParameterType, SecretValue, Secrets, SecretsError};
use flotilla_store::{EmbeddedStore, Op, Store, Txn};
use flotilla_types::Identity;

async fn open(dir: &tempfile::TempDir) -> (Arc<Secrets>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let kms =
        Kms::open(store.clone(), Identity::new("us-east-1", "123456789012"), MasterKey::generate()).await.unwrap();
    (Secrets::new(store.clone(), kms), store)
}

async fn holds(store: &dyn Store, needle: &str) -> Vec<String> {
    let all = store.list_prefix("").await.unwrap();
    all.into_iter()
        .filter(|kv| kv.value.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|kv| kv.key)
        .collect()
}

fn param(name: &str, value: &str, kind: ParameterType, key_id: Option<&str>) -> NewParameter {
    NewParameter {
        name: name.into(),
        value: value.into(),
        kind: Some(kind),
        description: None,
        overwrite: false,
        key_id: key_id.map(Into::into),
    }
}

#[tokio::test]
async fn values_are_stored_as_ciphertext_under_the_key_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (s, store) = open(&dir).await;
    let mine = s.kms().create_key(NewKey { description: None, key_usage: None, key_spec: None, tags: vec![] });
    let mine = mine.await.unwrap();
    s.kms().create_alias("alias/app", &mine.id).await.unwrap();
    s.put_parameter(param("/app/db", "hunter2-param", ParameterType::SecureString, None)).await.unwrap();
    s.put_parameter(param("/app/own", "hunter2-own", ParameterType::SecureString, Some("alias/app"))).await.unwrap();
    s.put_parameter(param("/app/plain", "visible-value", ParameterType::String, None)).await.unwrap();
    let refused = s.put_parameter(param("/app/x", "v", ParameterType::String, Some("alias/app"))).await.unwrap_err();
    assert!(matches!(refused, SecretsError::Invalid(_)), "{refused}");
    let missing = s.put_parameter(param("/app/y", "v", ParameterType::SecureString, Some("alias/nope"))).await;
    assert!(matches!(missing, Err(SecretsError::Encryption(_))), "{missing:?}");
    let secret = NewSecret {
        name: "db".into(),
        value: Some(SecretValue::String("hunter2-secret".into())),
        description: None,
        token: None,
        kms_key_id: Some(mine.arn.clone()),
    };
    let created = s.create_secret(secret).await.unwrap();
    s.put_secret_value("db", SecretValue::Binary("aHVudGVyMi1iaW4=".into()), None).await.unwrap();

    for needle in ["hunter2", "aHVudGVyMi1iaW4="] {
        assert_eq!(holds(store.as_ref(), needle).await, Vec::<String>::new(), "{needle} is in the store");
    }
    assert_eq!(holds(store.as_ref(), "visible-value").await, ["ssm/params//app/plain"]);
    assert_eq!(s.get_parameter_decrypted("/app/own").await.unwrap().value, "hunter2-own");
    let own = s.get_parameter("/app/own").await.unwrap();
    assert_eq!((own.key_id.as_deref(), own.key_arn.as_deref()), (Some("alias/app"), Some(mine.arn.as_str())));
    assert_eq!(s.resolve("/app/db").await.unwrap(), "hunter2-param");
    assert_eq!(s.resolve(&created.arn).await.unwrap(), "aHVudGVyMi1iaW4=");
    let (_, _, previous) = s.get_secret_value("db", None, Some("AWSPREVIOUS")).await.unwrap();
    assert_eq!(previous, SecretValue::String("hunter2-secret".into()));
    // A disabled key stops reads of what it protects.
    s.kms().set_enabled(&mine.id, false).await.unwrap();
    assert!(matches!(s.resolve(&created.arn).await, Err(SecretsError::Decryption(_))));
}

#[tokio::test]
async fn plaintext_records_from_before_read_and_are_sealed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (s, store) = open(&dir).await;
    // Records exactly as the previous version wrote them.
    let parameter = r#"{"name":"/old/p","description":null,"history":[{"version":1,"value":"old-secure-1","kind":"SecureString","modified":1.0},{"version":2,"value":"old-plain","kind":"String","modified":2.0},{"version":3,"value":"old-secure-3","kind":"SecureString","modified":3.0}]}"#;
    let secret = r#"{"name":"old","arn":"arn:aws:secretsmanager:us-east-1:123456789012:secret:old-AbCdEf","description":null,"created":1.0,"last_changed":1.0,"deletion_date":null,"versions":[{"id":"v1","value":{"String":"old-secret-1"},"stages":["AWSPREVIOUS"],"created":1.0},{"id":"v2","value":{"Binary":"b2xkLWJpbg=="},"stages":["AWSCURRENT"],"created":2.0}]}"#;
    let txn = Txn::new()
        .then(Op::put("ssm/params//old/p", parameter.as_bytes().to_vec()))
        .then(Op::put("secretsmanager/secrets/old", secret.as_bytes().to_vec()));
    store.txn(txn).await.unwrap();

    // Read before migration: values as they were; a SecureString shows ciphertext all the same.
    assert_eq!(s.resolve("/old/p").await.unwrap(), "old-secure-3");
    assert_eq!(s.get_parameter_decrypted("/old/p:1").await.unwrap().value, "old-secure-1");
    let shown = s.get_parameter("/old/p").await.unwrap();
    assert!(!shown.value.contains("old-secure"), "{}", shown.value);
    assert_eq!(s.decrypt_parameter(&shown).await.unwrap(), "old-secure-3");
    let (_, _, v) = s.get_secret_value("old", Some("v1"), None).await.unwrap();
    assert_eq!(v, SecretValue::String("old-secret-1".into()));

    assert_eq!(s.seal_plaintext().await.unwrap(), 4);
    assert_eq!(s.seal_plaintext().await.unwrap(), 0, "sealing twice");
    for needle in ["old-secure", "old-secret", "b2xkLWJpbg=="] {
        assert_eq!(holds(store.as_ref(), needle).await, Vec::<String>::new(), "{needle} is still in the store");
    }
    assert_eq!(holds(store.as_ref(), "old-plain").await, ["ssm/params//old/p"], "a String parameter stays plain");
    assert_eq!(s.get_parameter_decrypted("/old/p:1").await.unwrap().value, "old-secure-1");
    assert_eq!(s.get_parameter_decrypted("/old/p:2").await.unwrap().value, "old-plain");
    assert_eq!(s.resolve("/old/p").await.unwrap(), "old-secure-3");
    let (_, _, v) = s.get_secret_value("old", None, None).await.unwrap();
    assert_eq!(v, SecretValue::Binary("b2xkLWJpbg==".into()));
    let (_, _, v) = s.get_secret_value("old", None, Some("AWSPREVIOUS")).await.unwrap();
    assert_eq!(v, SecretValue::String("old-secret-1".into()));
}
