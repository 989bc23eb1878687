//! Whether a launched API server is ready: `GET /readyz` as Flotilla's admin, over a plain
//! TLS connection rather than a kube client, whose every failed request while the server
//! starts would be logged as an error.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use flotilla_eks::{KubeAccess, KubeAuth};

/// `Ok(())` when `/readyz` answers 200 `ok`; else what it said or why it could not be asked.
pub(super) async fn readyz(access: &KubeAccess) -> Result<(), String> {
    let authority = access.endpoint.strip_prefix("https://").ok_or("not an https endpoint")?;
    let KubeAuth::ClientCertificate { cert_pem, key_pem } = &access.auth else {
        return Err("a launched plane's admin uses a client certificate".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(access.ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned();
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let request = format!("GET /readyz HTTP/1.0\r\nHost: {host}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // Go closes without close_notify at times: what was read is the answer.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let ok = head.split_whitespace().nth(1) == Some("200") && body.trim() == "ok";
    if ok { Ok(()) } else { Err(head.lines().next().unwrap_or("no answer").to_owned()) }
}
