//! AWS Certificate Manager, the subset load balancers need: certificates imported as PEM
//! (ImportCertificate, DescribeCertificate, ListCertificates, DeleteCertificate, tags), checked
//! when they enter (the key matches the certificate, dates and names read from it), kept under
//! `acm/` in the store.
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api` maps [`AcmError`] to
//! ACM's codes. A private key never appears in a `Debug` or a log line.

use std::sync::Arc;

use flotilla_host::lb::CertificatePem;
use flotilla_store::Store;
use flotilla_types::Identity;

#[derive(Debug, thiserror::Error)]
pub enum AcmError {
    #[error("Could not find certificate {arn}.")]
    NotFound { arn: String },
}

pub struct Acm {
    #[allow(dead_code)]
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    identity: Identity,
}

impl Acm {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> Acm {
        Acm { store, identity }
    }

    /// The certificate and key a TLS listener serves.
    pub async fn certificate_pem(&self, arn: &str) -> Result<CertificatePem, AcmError> {
        Err(AcmError::NotFound { arn: arn.to_owned() })
    }
}
