//! Pulls over HTTPS from a real `docker-registry` whose certificate a private CA
//! signed. Clients dial loopback registries over plain HTTP, so the registry listens
//! on a non-loopback address of this machine; without one these tests print why and
//! skip, unless `FLOTILLA_REQUIRE_TLS_TESTS=1` makes that a failure. `scripts/test.sh` (and
//! so CI) sets it, after `scripts/deps.sh` gave a machine with no network a dummy address.

mod common;

use common::StoreDir;
use flotilla_image::testing::{Anonymous, Htpasswd, Registry, RegistryAuth, busybox_image};
use flotilla_image::{
    Credentials, ImageStore, Progress, PullError, RegistryConfig, RegistryError, StoreOptions, error_chain,
};

/// A TLS registry, or `None` (with the reason on stderr) where this machine has no
/// address to serve it on.
async fn tls_registry(auth: impl RegistryAuth) -> Option<Registry> {
    match Registry::start_tls(auth).await {
        Ok(registry) => Some(registry),
        Err(reason) => {
            assert!(
                std::env::var_os("FLOTILLA_REQUIRE_TLS_TESTS").is_none(),
                "FLOTILLA_REQUIRE_TLS_TESTS is set but the TLS registry cannot run: {reason}"
            );
            eprintln!("SKIPPED: no TLS registry on this machine: {reason}");
            None
        }
    }
}

/// A CA that signed nothing here, to check that bundles of several certificates work.
fn unrelated_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

async fn store_trusting(dir: &StoreDir, ca_pem: Option<&str>) -> ImageStore {
    let mut registry = RegistryConfig { manifest_attempts: 1, ..RegistryConfig::default() };
    if let Some(pem) = ca_pem {
        let bundle = format!("{}{pem}", unrelated_ca_pem());
        assert_eq!(registry.add_root_certificates_pem(bundle).unwrap(), 2);
    }
    ImageStore::open_with(dir.root(), StoreOptions { registry, ..StoreOptions::default() }).await.unwrap()
}

#[tokio::test]
async fn pulls_busybox_over_https_trusting_the_private_ca() {
    let Some(registry) = tls_registry(Anonymous).await else { return };
    assert!(!registry.host().starts_with("127."), "{}", registry.host());
    let image = busybox_image();
    registry.push_image("tls/busybox", Some("latest"), &image).await;
    let dir = StoreDir::new();
    let store = store_trusting(&dir, registry.ca_pem()).await;

    let reference = registry.reference("tls/busybox:latest");
    let pulled = store.pull(&reference, None, Progress::none()).await.unwrap();

    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(
        std::fs::read(pulled.layer_dirs()[0].join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    // It really went over TLS to the registry: its access log shows the blob GET.
    registry.wait_blob_gets(1).await;
}

#[tokio::test]
async fn without_the_ca_the_pull_fails_on_the_certificate() {
    let Some(registry) = tls_registry(Anonymous).await else { return };
    let image = busybox_image();
    registry.push_image("tls/busybox", Some("latest"), &image).await;
    let dir = StoreDir::new();
    let store = store_trusting(&dir, None).await;

    let err = store.pull(&registry.reference("tls/busybox:latest"), None, Progress::none()).await.unwrap_err();

    assert!(matches!(err, PullError::Resolve { source: RegistryError::Http { .. }, .. }), "{err:?}");
    let reason = err.aws_reason();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(reason.contains(&format!("https://{}/v2/", registry.host())), "{reason}");
    assert_eq!(registry.blob_gets(), 0);
}

#[tokio::test]
async fn basic_auth_over_https() {
    let Some(registry) = tls_registry(Htpasswd::new("alice", "s3cret")).await else { return };
    let image = busybox_image();
    registry.push_image("private/busybox", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let store = store_trusting(&dir, registry.ca_pem()).await;
    let reference = registry.reference("private/busybox:v1");

    let err = store.pull(&reference, None, Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, .. }), "{err:?}");
    let wrong = Credentials::new("alice", "nope");
    let err = store.pull(&reference, Some(wrong), Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, .. }), "{err:?}");

    let pulled = store.pull(&reference, Some(Credentials::new("alice", "s3cret")), Progress::none()).await.unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
}

#[test]
fn invalid_ca_bundles_are_refused() {
    let mut config = RegistryConfig::default();
    let err = config.add_root_certificates_pem(b"not a certificate".to_vec()).unwrap_err();
    assert!(matches!(err, RegistryError::NoRootCertificates), "{err:?}");
    let err = config.add_root_certificates_pem(Vec::new()).unwrap_err();
    assert!(matches!(err, RegistryError::NoRootCertificates), "{err:?}");
    // Valid PEM and base64 around bytes that are no certificate.
    let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let err = config.add_root_certificates_pem(garbage).unwrap_err();
    assert!(matches!(err, RegistryError::RootCertificates(_)), "{}", error_chain(&err));
    assert!(config.root_certificates.is_empty());

    assert_eq!(config.add_root_certificates_pem(unrelated_ca_pem()).unwrap(), 1);
    assert_eq!(config.root_certificates.len(), 1);
}
