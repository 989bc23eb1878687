//! The kubelet's serving certificate for one cluster, the way a kubelet gets one: a
//! CertificateSigningRequest for `kubernetes.io/kubelet-serving` (subject
//! `system:node:<name>` in `system:nodes`, the host address as its IP SAN), approved by
//! Flotilla (the cluster's administrator) and signed by the cluster's controller manager
//! (`csrsigning`) with the cluster CA. An API server that verifies kubelets
//! (`--kubelet-certificate-authority`) then trusts every Fargate node of the cluster. A cluster
//! that signs nothing within a few seconds gets the self-signed certificate (API servers do not
//! verify kubelets unless told to).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio_rustls::TlsAcceptor;

/// How long the cluster has to sign.
const SIGNING: Duration = Duration::from_secs(10);

/// A TLS acceptor for a certificate chain (PEM) and its key; with `client_ca` (PEM), only
/// clients with a certificate it signed get in (the API server's `--kubelet-client-certificate`).
pub fn acceptor(cert_pem: &str, key: &rcgen::KeyPair, client_ca: Option<&str>) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.map_err(|e| format!("client CA: {e}"))?).map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The cluster-signed serving certificate for kubelets listening on `address`, or why not.
pub async fn cluster_signed(
    client: &kube::Client,
    cluster: &str,
    address: IpAddr,
    client_ca: Option<&str>,
) -> Result<TlsAcceptor, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let node = format!("fargate-flotilla-{cluster}");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(address));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let request = params.serialize_request(&key).map_err(|e| e.to_string())?.pem().map_err(|e| e.to_string())?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "fargate-kubelet-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": "kubernetes.io/kubelet-serving",
            "usages": ["digital signature", "key encipherment", "server auth"],
        },
    }))
    .map_err(|e| e.to_string())?;
    let mut created =
        csrs.create(&PostParams::default(), &csr).await.map_err(|e| format!("cannot ask for a certificate: {e}"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let signed = async {
        created.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({
                "type": "Approved", "status": "True", "reason": "FlotillaFargateNode",
                "message": "Flotilla's Fargate nodes serve their kubelet API with it",
            }))
            .map_err(|e| e.to_string())?,
        );
        csrs.replace_subresource("approval", &name, &PostParams::default(), &created)
            .await
            .map_err(|e| format!("cannot approve {name}: {e}"))?;
        let deadline = tokio::time::Instant::now() + SIGNING;
        loop {
            let csr = csrs.get(&name).await.map_err(|e| e.to_string())?;
            if let Some(cert) = csr.status.and_then(|s| s.certificate).filter(|c| !c.0.is_empty()) {
                let pem = String::from_utf8(cert.0).map_err(|e| e.to_string())?;
                return acceptor(&pem, &key, client_ca);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{name} was not signed within {SIGNING:?} (no csrsigning controller?)"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    // The certificate is ours now (or never will be): the request is of no further use.
    let _ = csrs.delete(&name, &DeleteParams::default()).await;
    signed
}
