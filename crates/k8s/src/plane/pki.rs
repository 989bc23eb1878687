//! Certificates for what Flotilla runs or serves for Kubernetes: a CA per purpose (a launched
//! cluster's, the webhook listener's) kept as PEM files beside what they sign, and leaf
//! certificates issued from it.
//!
//! A CA is reloaded from its key alone: its certificate's subject is a function of its name, so
//! the parameters rebuilt from the name and the stored key sign exactly as the first run did
//! (same issuer name, same key identifier), and clients that trust the stored certificate keep
//! trusting what a later start issues.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Cert { what: String, source: rcgen::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

fn cert(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert { what: what.to_owned(), source }
}

/// Writes `contents` to `path` atomically (a temporary beside it, then a rename), readable by
/// the owner only when `secret`.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io { path: path.to_owned(), source: e }),
    }
}

/// A certificate authority whose files are `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    pub cert_path: PathBuf,
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl Authority {
    /// The CA in `dir` named `stem`, made now (subject `common_name`) if absent.
    pub fn load_or_create(dir: &Path, stem: &str, common_name: &str) -> Result<Authority, PkiError> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        let params = ca_params(common_name);
        if let (Some(pem), Some(key)) = (read(&cert_path)?, read(&key_path)?) {
            let key = KeyPair::from_pem(&key).map_err(cert(&key_path.display().to_string()))?;
            return Ok(Authority { issuer: Issuer::new(params, key), pem, cert_path });
        }
        let key = KeyPair::generate().map_err(cert(common_name))?;
        let pem = params.self_signed(&key).map_err(cert(common_name))?.pem();
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&cert_path, pem.as_bytes(), false)?;
        Ok(Authority { issuer: Issuer::new(params, key), pem, cert_path })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a certificate for `common_name` in `organizations` (Kubernetes reads them as
    /// user and groups) with `sans` (IP addresses or DNS names), for serving and/or client
    /// authentication. Returns (certificate PEM, key PEM).
    pub fn issue(&self, leaf: &Leaf<'_>) -> Result<(String, String), PkiError> {
        let sans: Vec<String> = leaf.sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(cert(leaf.common_name))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.common_name);
        for org in leaf.organizations {
            dn.push(DnType::OrganizationName, *org);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if leaf.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let key = KeyPair::generate().map_err(cert(leaf.common_name))?;
        let issued = params.signed_by(&key, &self.issuer).map_err(cert(leaf.common_name))?;
        Ok((issued.pem(), key.serialize_pem()))
    }

    /// As [`Authority::issue`], kept as `<dir>/<stem>.crt` and `.key`: issued only when absent
    /// (or `renew`). Returns the paths (certificate, key).
    pub fn issue_file(
        &self,
        dir: &Path,
        stem: &str,
        leaf: &Leaf<'_>,
        renew: bool,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        if renew || !cert_path.is_file() || !key_path.is_file() {
            let (cert_pem, key_pem) = self.issue(leaf)?;
            write_file(&key_path, key_pem.as_bytes(), true)?;
            write_file(&cert_path, cert_pem.as_bytes(), false)?;
        }
        Ok((cert_path, key_path))
    }
}

/// What a leaf certificate says.
pub struct Leaf<'a> {
    pub common_name: &'a str,
    pub organizations: &'a [&'a str],
    pub sans: &'a [&'a str],
    pub server: bool,
    pub client: bool,
}

/// A key pair kept as `<dir>/<stem>.key` (PKCS#8) and `<dir>/<stem>.pub`, made if absent: the
/// service-account token signing key.
pub fn key_pair_files(dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
    let key_path = dir.join(format!("{stem}.key"));
    let pub_path = dir.join(format!("{stem}.pub"));
    if !key_path.is_file() || !pub_path.is_file() {
        let key = KeyPair::generate().map_err(cert(stem))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&pub_path, key.public_key_pem().as_bytes(), false)?;
    }
    Ok((key_path, pub_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_authority_issues_what_its_stored_certificate_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path(), "ca", "test-ca").unwrap();
        let again = Authority::load_or_create(dir.path(), "ca", "test-ca").unwrap();
        assert_eq!(first.pem(), again.pem());
        let leaf = Leaf {
            common_name: "x",
            organizations: &["g"],
            sans: &["127.0.0.1", "localhost"],
            server: true,
            client: false,
        };
        let (pem, _) = again.issue(&leaf).unwrap();
        // The issued certificate chains to the stored CA: rustls's verifier over the CA accepts it.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(first.pem().as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let end = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        verifier
            .verify_server_cert(&end, &[], &ServerName::try_from("127.0.0.1").unwrap(), &[], UnixTime::now())
            .unwrap();
    }
}
