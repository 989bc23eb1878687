//! KMS over a real embedded store: round trips, contexts, tampering, aliases, the AWS managed
//! keys, and the master key (its file and the store's check).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use flotilla_kms::{Context, KeyManager, Kms, KmsError, MasterKey, NewKey};
use flotilla_store::{EmbeddedStore, Store};
use flotilla_types::{Identity, Tag};

fn identity() -> Identity {
    Identity::new("us-east-1", "123456789012")
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap())
}

async fn kms() -> (Arc<Kms>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Kms::open(store(&dir), identity(), MasterKey::generate()).await.unwrap(), dir)
}

fn key(description: &str) -> NewKey {
    NewKey { description: Some(description.into()), key_usage: None, key_spec: None, tags: vec![] }
}

fn ctx(pairs: &[(&str, &str)]) -> Context {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn encrypt_and_decrypt_round_trip_by_id_arn_and_alias() {
    let (kms, _dir) = kms().await;
    let mut new = key("app key");
    new.tags = vec![Tag::new("team", "a")];
    let meta = kms.create_key(new).await.unwrap();
    assert_eq!(meta.arn, format!("arn:aws:kms:us-east-1:123456789012:key/{}", meta.id));
    assert_eq!((meta.manager, meta.enabled, meta.tags.len()), (KeyManager::Customer, true, 1));
    kms.create_alias("alias/app", &meta.id).await.unwrap();
    let context = ctx(&[("purpose", "test")]);
    for name in
        [meta.id.clone(), meta.arn.clone(), "alias/app".into(), "arn:aws:kms:us-east-1:123456789012:alias/app".into()]
    {
        let (blob, arn) = kms.encrypt(&name, b"attack at dawn", &context).await.unwrap();
        assert_eq!(arn, meta.arn);
        assert!(!blob.windows(6).any(|w| w == b"attack"), "the blob holds the plaintext");
        assert_eq!(Kms::blob_key_id(&blob).as_deref(), Some(meta.id.as_str()));
        let (plain, arn) = kms.decrypt(&blob, &context, None).await.unwrap();
        assert_eq!((plain.as_slice(), arn.as_str()), (b"attack at dawn".as_slice(), meta.arn.as_str()));
        kms.decrypt(&blob, &context, Some("alias/app")).await.unwrap();
    }
    // Two encryptions of one plaintext differ (fresh nonces).
    let (a, _) = kms.encrypt("alias/app", b"x", &Context::new()).await.unwrap();
    let (b, _) = kms.encrypt("alias/app", b"x", &Context::new()).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(kms.list_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_different_context_or_key_or_altered_byte_is_refused() {
    let (kms, _dir) = kms().await;
    let one = kms.create_key(key("one")).await.unwrap();
    let two = kms.create_key(key("two")).await.unwrap();
    let context = ctx(&[("a", "1"), ("b", "2")]);
    let (blob, _) = kms.encrypt(&one.id, b"secret", &context).await.unwrap();
    for wrong in [Context::new(), ctx(&[("a", "1")]), ctx(&[("a", "1"), ("b", "3")]), ctx(&[("a", "12"), ("b", "")])] {
        let e = kms.decrypt(&blob, &wrong, None).await.unwrap_err();
        assert!(matches!(e, KmsError::InvalidCiphertext(_)), "{wrong:?}: {e}");
    }
    for i in [0, 1, 5, 40, blob.len() / 2, blob.len() - 1] {
        let mut tampered = blob.clone();
        tampered[i] ^= 0x01;
        let e = kms.decrypt(&tampered, &context, None).await.unwrap_err();
        assert!(matches!(e, KmsError::InvalidCiphertext(_)), "byte {i}: {e}");
    }
    for short in [&blob[..0], &blob[..3], &blob[..blob.len() - 1]] {
        assert!(matches!(kms.decrypt(short, &context, None).await, Err(KmsError::InvalidCiphertext(_))));
    }
    let e = kms.decrypt(&blob, &context, Some(&two.id)).await.unwrap_err();
    assert!(matches!(e, KmsError::IncorrectKey(_)), "{e}");
    // A blob that names key two but was sealed under key one's material.
    let mut swapped = blob.clone();
    swapped[2..2 + 36].copy_from_slice(two.id.as_bytes());
    assert!(matches!(kms.decrypt(&swapped, &context, None).await, Err(KmsError::InvalidCiphertext(_))));
}

#[tokio::test]
async fn disabled_keys_refuse_and_enabled_again_work() {
    let (kms, _dir) = kms().await;
    let k = kms.create_key(key("k")).await.unwrap();
    let (blob, _) = kms.encrypt(&k.id, b"v", &Context::new()).await.unwrap();
    assert!(!kms.set_enabled(&k.id, false).await.unwrap().enabled);
    assert!(matches!(kms.encrypt(&k.id, b"v", &Context::new()).await, Err(KmsError::Disabled(_))));
    assert!(matches!(kms.decrypt(&blob, &Context::new(), None).await, Err(KmsError::Disabled(_))));
    kms.set_enabled(&k.id, true).await.unwrap();
    assert_eq!(kms.decrypt(&blob, &Context::new(), None).await.unwrap().0, b"v");
}

#[tokio::test]
async fn aws_managed_keys_are_made_on_first_use_once() {
    let (kms, _dir) = kms().await;
    let listed = kms.list_aliases(None).await.unwrap();
    let names: Vec<_> = listed.iter().map(|a| (a.name.as_str(), a.target.is_some())).collect();
    assert_eq!(names, [("alias/aws/secretsmanager", false), ("alias/aws/ssm", false)]);
    assert!(kms.list_keys().await.unwrap().is_empty());
    let (a, b) = tokio::join!(kms.describe_key("alias/aws/ssm"), kms.describe_key("alias/aws/ssm"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id, "two first uses made two keys");
    assert_eq!(a.manager, KeyManager::Aws);
    assert_eq!(kms.list_keys().await.unwrap().len(), 1);
    let (blob, arn) = kms.encrypt("alias/aws/ssm", b"p", &Context::new()).await.unwrap();
    assert_eq!(arn, a.arn);
    assert_eq!(kms.decrypt(&blob, &Context::new(), None).await.unwrap().0, b"p");
    assert!(matches!(kms.set_enabled("alias/aws/ssm", false).await, Err(KmsError::InvalidState(_))));
    assert!(matches!(kms.describe_key("alias/aws/other").await, Err(KmsError::NotFound(_))));
    assert!(matches!(kms.create_alias("alias/aws/mine", &a.id).await, Err(KmsError::InvalidAliasName(_))));
    assert!(matches!(kms.delete_alias("alias/aws/ssm").await, Err(KmsError::InvalidAliasName(_))));
}

#[tokio::test]
async fn aliases_are_unique_listed_by_key_and_deleted() {
    let (kms, _dir) = kms().await;
    let k = kms.create_key(key("k")).await.unwrap();
    let other = kms.create_key(key("o")).await.unwrap();
    kms.create_alias("alias/one", &k.arn).await.unwrap();
    kms.create_alias("alias/two", &k.id).await.unwrap();
    kms.create_alias("alias/three", &other.id).await.unwrap();
    assert!(matches!(kms.create_alias("alias/one", &other.id).await, Err(KmsError::AlreadyExists(_))));
    for bad in ["one", "alias/", "alias/sp ace", "alias/é"] {
        assert!(matches!(kms.create_alias(bad, &k.id).await, Err(KmsError::InvalidAliasName(_))), "{bad}");
    }
    assert!(matches!(kms.create_alias("alias/x", "no-such-key").await, Err(KmsError::NotFound(_))));
    let of_k: Vec<_> = kms.list_aliases(Some(&k.id)).await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(of_k, ["alias/one", "alias/two"]);
    kms.delete_alias("alias/one").await.unwrap();
    assert!(matches!(kms.delete_alias("alias/one").await, Err(KmsError::NotFound(_))));
    assert!(matches!(kms.encrypt("alias/one", b"x", &Context::new()).await, Err(KmsError::NotFound(_))));
    assert!(matches!(
        kms.create_key(NewKey { key_spec: Some("RSA_2048".into()), ..key("rsa") }).await,
        Err(KmsError::Unsupported(_))
    ));
}

#[tokio::test]
async fn the_store_refuses_another_master_key_and_keeps_no_material() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = [7u8; 32];
    let store = store(&dir);
    let kms = Kms::open(store.clone(), identity(), MasterKey::from_bytes(&bytes).unwrap()).await.unwrap();
    let k = kms.create_key(key("k")).await.unwrap();
    let (blob, _) = kms.encrypt(&k.id, b"durable", &BTreeMap::new()).await.unwrap();
    drop(kms);
    let e = Kms::open(store.clone(), identity(), MasterKey::generate()).await.unwrap_err();
    assert!(matches!(e, KmsError::WrongMasterKey { .. }), "{e}");
    assert!(e.to_string().contains("--kms-key-file"), "{e}");
    let again = Kms::open(store.clone(), identity(), MasterKey::from_bytes(&bytes).unwrap()).await.unwrap();
    assert_eq!(again.decrypt(&blob, &BTreeMap::new(), None).await.unwrap().0, b"durable");
    // Nothing the store holds is a key or a plaintext.
    for kv in store.list_prefix("").await.unwrap() {
        assert!(!kv.value.windows(7).any(|w| w == b"durable"), "{}", kv.key);
        assert!(!kv.value.windows(8).any(|w| w == &bytes[..8]), "{}", kv.key);
    }
}

#[test]
fn key_files_are_made_private_and_refused_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/kms.key");
    let (made, created) = MasterKey::load_or_create(&path).unwrap();
    assert!(created);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    let (loaded, created) = MasterKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(made.fingerprint(), loaded.fingerprint());
    assert!(!format!("{loaded:?}").contains(&format!("{:?}", std::fs::read(&path).unwrap())));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = MasterKey::load_or_create(&path).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, b"short").unwrap();
    let e = MasterKey::load_or_create(&path).unwrap_err();
    assert!(e.to_string().contains("exactly 32 bytes"), "{e}");
    let e = MasterKey::load_or_create(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn racing_creators_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.key");
    let prints: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap().0.fingerprint().to_owned())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(prints.windows(2).all(|w| w[0] == w[1]), "{prints:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary files were left behind");
}
