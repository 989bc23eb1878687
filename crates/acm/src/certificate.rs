//! What an imported certificate is, read from its PEM once when it enters: the certificate
//! must be one X.509 certificate, the chain zero or more, the key PKCS#8, PKCS#1 (RSA) or SEC1
//! (EC) and the certificate's own (its SubjectPublicKeyInfo, compared by rustls). Names,
//! dates, algorithms and usages are taken from it here so reads never parse again.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use crate::AcmError;

/// What ACM says about a certificate, read from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFacts {
    /// The subject's common name, else its first DNS name.
    pub domain_name: String,
    /// The DNS names of the subject alternative name extension (the domain name if none).
    pub subject_alternative_names: Vec<String>,
    /// Colon-separated hex, as ACM shows it (`0a:1b:...`).
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// ACM's names: `RSA_2048`, `EC_prime256v1`, ...
    pub key_algorithm: String,
    /// ACM's names: `SHA256WITHRSA`, `SHA256WITHECDSA`, ...
    pub signature_algorithm: String,
    /// ACM's names: `DIGITAL_SIGNATURE`, `KEY_ENCIPHERMENT`, ...
    pub key_usages: Vec<String>,
    /// ACM's names: `TLS_WEB_SERVER_AUTHENTICATION`, ...
    pub extended_key_usages: Vec<String>,
}

fn invalid(message: impl Into<String>) -> AcmError {
    AcmError::Validation(message.into())
}

/// The certificates of a PEM text, refusing anything that is not one.
fn certificates(pem_text: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, AcmError> {
    let mut out = Vec::new();
    for item in pem::PemObject::pem_slice_iter(pem_text) {
        let item: CertificateDer<'static> =
            item.map_err(|e| invalid(format!("The {what} is not valid PEM: {}.", pem_problem(&e))))?;
        out.push(item);
    }
    if out.is_empty() {
        return Err(invalid(format!("The {what} is not valid PEM: it holds no CERTIFICATE section.")));
    }
    Ok(out)
}

fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "it holds no PEM section of the expected kind".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not base64".into(),
        other => format!("{other:?}"),
    }
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, AcmError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(invalid(format!("The {what} has trailing data after the X.509 structure."))),
        Err(e) => Err(invalid(format!("The {what} is not a valid X.509 certificate: {e}."))),
    }
}

/// Checks an import: `certificate` one certificate, `chain` certificates, `key` the
/// certificate's private key. Expired certificates pass (ACM imports them, then shows them
/// `EXPIRED`).
pub(crate) fn check(certificate: &[u8], key: &[u8], chain: Option<&[u8]>) -> Result<CertificateFacts, AcmError> {
    let mut certs = certificates(certificate, "certificate")?;
    if certs.len() != 1 {
        return Err(invalid(format!(
            "The certificate field must hold exactly one certificate; it holds {}. Put the intermediates in the certificate chain.",
            certs.len()
        )));
    }
    let leaf = certs.remove(0);
    if let Some(chain) = chain {
        for (i, der) in certificates(chain, "certificate chain")?.iter().enumerate() {
            parse(der, &format!("certificate chain's certificate {}", i + 1))?;
        }
    }
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(
            "The private key is not valid PEM: expected a PRIVATE KEY (PKCS#8), RSA PRIVATE KEY (PKCS#1) or EC PRIVATE KEY (SEC1) section.",
        ),
        other => invalid(format!("The private key is not valid PEM: {}.", pem_problem(&other))),
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|_| {
        invalid("The private key could not be read: it must be an unencrypted RSA (2048 bits or more), EC P-256 or EC P-384 key.")
    })?;
    let cert = parse(&leaf, "certificate")?;
    let facts = facts(&cert)?;
    match rustls::sign::CertifiedKey::new(vec![leaf.clone()], signing_key).keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(invalid("The private key does not match the public key in the certificate."));
        }
        Err(e) => {
            return Err(invalid(format!("The certificate's public key could not be checked against the key: {e}.")));
        }
    }
    Ok(facts)
}

fn facts(cert: &X509Certificate<'_>) -> Result<CertificateFacts, AcmError> {
    let bad = |what: &str| invalid(format!("The certificate's {what} extension is malformed."));
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let mut sans = Vec::new();
    if let Some(ext) = cert.subject_alternative_name().map_err(|_| bad("subject alternative name"))? {
        for name in &ext.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                sans.push((*dns).to_owned());
            }
        }
    }
    let Some(domain_name) = common_name.or_else(|| sans.first().cloned()) else {
        return Err(invalid("The certificate names no domain: it has neither a common name nor a DNS name."));
    };
    if sans.is_empty() {
        sans.push(domain_name.clone());
    }
    let mut key_usages = Vec::new();
    if let Some(ku) = cert.key_usage().map_err(|_| bad("key usage"))? {
        let ku = ku.value;
        for (set, name) in [
            (ku.digital_signature(), "DIGITAL_SIGNATURE"),
            (ku.non_repudiation(), "NON_REPUDIATION"),
            (ku.key_encipherment(), "KEY_ENCIPHERMENT"),
            (ku.data_encipherment(), "DATA_ENCIPHERMENT"),
            (ku.key_agreement(), "KEY_AGREEMENT"),
            (ku.key_cert_sign(), "CERTIFICATE_SIGNING"),
            (ku.crl_sign(), "CRL_SIGNING"),
            (ku.encipher_only(), "ENCIPHER_ONLY"),
            (ku.decipher_only(), "DECIPHER_ONLY"),
        ] {
            if set {
                key_usages.push(name.to_owned());
            }
        }
    }
    let mut extended_key_usages = Vec::new();
    if let Some(eku) = cert.extended_key_usage().map_err(|_| bad("extended key usage"))? {
        let eku = eku.value;
        for (set, name) in [
            (eku.any, "ANY"),
            (eku.server_auth, "TLS_WEB_SERVER_AUTHENTICATION"),
            (eku.client_auth, "TLS_WEB_CLIENT_AUTHENTICATION"),
            (eku.code_signing, "CODE_SIGNING"),
            (eku.email_protection, "EMAIL_PROTECTION"),
            (eku.time_stamping, "TIME_STAMPING"),
            (eku.ocsp_signing, "OCSP_SIGNING"),
            (!eku.other.is_empty(), "CUSTOM"),
        ] {
            if set {
                extended_key_usages.push(name.to_owned());
            }
        }
    }
    Ok(CertificateFacts {
        domain_name,
        subject_alternative_names: sans,
        serial: cert.raw_serial_as_string(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_algorithm: key_algorithm(cert)?,
        signature_algorithm: signature_algorithm(&cert.signature_algorithm.algorithm.to_id_string()),
        key_usages,
        extended_key_usages,
    })
}

fn key_algorithm(cert: &X509Certificate<'_>) -> Result<String, AcmError> {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(format!("RSA_{}", rsa.key_size())),
        Ok(PublicKey::EC(_)) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok("EC_prime256v1".into()),
                Some("1.3.132.0.34") => Ok("EC_secp384r1".into()),
                Some("1.3.132.0.35") => Ok("EC_secp521r1".into()),
                _ => Err(invalid("The certificate's EC key is on a curve ACM does not support.")),
            }
        }
        _ => Err(invalid("The certificate's public key is neither RSA nor EC.")),
    }
}

/// ACM's name for a signature algorithm OID.
fn signature_algorithm(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.5" => "SHA1WITHRSA",
        "1.2.840.113549.1.1.11" => "SHA256WITHRSA",
        "1.2.840.113549.1.1.12" => "SHA384WITHRSA",
        "1.2.840.113549.1.1.13" => "SHA512WITHRSA",
        "1.2.840.10045.4.3.2" => "SHA256WITHECDSA",
        "1.2.840.10045.4.3.3" => "SHA384WITHECDSA",
        "1.2.840.10045.4.3.4" => "SHA512WITHECDSA",
        other => other,
    }
    .to_owned()
}
