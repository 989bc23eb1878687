//! AWS Certificate Manager, the subset load balancers need: certificates imported as PEM
//! (ImportCertificate, re-import over an ARN, DescribeCertificate, ListCertificates,
//! GetCertificate, DeleteCertificate, tags), checked when they enter (`certificate.rs`: one
//! certificate, a chain, a key that is the certificate's own; dates and names read from it),
//! kept one record a certificate under `acm/certs/<id>` and written by compare-and-write.
//!
//! Which load balancers use a certificate is ELB's to say; ELB depends on this crate, so it
//! answers through [`CertificateUsers`], attached once both exist ([`Acm::set_users`]).
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api` maps [`AcmError`] to
//! ACM's codes. A private key never appears in a `Debug` or a log line.

mod certificate;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use flotilla_host::lb::CertificatePem;
use flotilla_store::{Compare, KeyValue, Op, Store, StoreError, Txn, TxnOutcome};
use flotilla_types::page::{self, Order, Page, PageError};
use flotilla_types::{Identity, Tag};
use serde::{Deserialize, Serialize};

pub use certificate::CertificateFacts;

#[derive(Debug, thiserror::Error)]
pub enum AcmError {
    /// Input ACM refuses (`ValidationException`): malformed PEM, a key that is not the
    /// certificate's, and the like.
    #[error("{0}")]
    Validation(String),
    #[error("Could not find certificate {arn}.")]
    NotFound { arn: String },
    #[error("The ARN {arn} is not a valid ACM certificate ARN.")]
    InvalidArn { arn: String },
    #[error("Certificate {arn} is in use by {user}.")]
    InUse { arn: String, user: String },
    #[error("{0}")]
    InvalidTag(String),
    #[error("A certificate can have at most {MAX_TAGS} tags.")]
    TooManyTags,
    #[error("{0}")]
    InvalidParameter(String),
    /// Other requests kept changing the certificate; the request may be retried.
    #[error("Certificate {arn} is being changed by other requests; retry.")]
    Contended { arn: String },
    /// A failure on our side; the request may be retried.
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
    /// ELB could not say who uses a certificate.
    #[error("could not ask who uses the certificate: {0}")]
    Users(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who uses a certificate: the load balancers (ARNs) with a listener serving it. ELB
/// implements it; an empty list means the certificate may go.
pub trait CertificateUsers: Send + Sync {
    fn users<'a>(&'a self, certificate_arn: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// ACM's limit on tags per certificate.
pub const MAX_TAGS: usize = 50;
/// Writes retried on conflict before giving up (another writer kept winning).
const CONFLICT_RETRIES: usize = 16;
const PREFIX: &str = "acm/certs/";

/// One imported certificate as stored. The key is here because listeners serve it; the data
/// directory is root's alone.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    arn: String,
    certificate_pem: String,
    #[serde(default)]
    chain_pem: Option<String>,
    key_pem: String,
    /// Seconds since the epoch.
    created_at: f64,
    imported_at: f64,
    facts: CertificateFacts,
    #[serde(default)]
    tags: Vec<Tag>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").field("arn", &self.arn).finish_non_exhaustive()
    }
}

/// A certificate's status as ACM reports imported ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateStatus {
    Issued,
    Expired,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Issued => "ISSUED",
            CertificateStatus::Expired => "EXPIRED",
        }
    }
}

/// What DescribeCertificate and ListCertificates show of a certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Certificate {
    pub arn: String,
    pub created_at: f64,
    pub imported_at: f64,
    pub status: CertificateStatus,
    pub facts: CertificateFacts,
    /// The load balancers using it.
    pub in_use_by: Vec<String>,
}

/// An ImportCertificate request: PEM texts as sent.
pub struct Import {
    pub certificate: Vec<u8>,
    pub private_key: Vec<u8>,
    pub chain: Option<Vec<u8>>,
    /// Re-import over this certificate.
    pub arn: Option<String>,
    pub tags: Vec<Tag>,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import").field("arn", &self.arn).field("tags", &self.tags).finish_non_exhaustive()
    }
}

/// A ListCertificates request.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only these statuses (all if empty).
    pub statuses: Vec<CertificateStatus>,
    /// Only these key algorithms (all if empty).
    pub key_algorithms: Vec<String>,
    pub max_items: Option<i64>,
    pub next_token: Option<String>,
}

/// ListCertificates' page size: ACM's `MaxItems` allows up to 1000.
const MAX_PAGE: usize = 1000;

pub struct Acm {
    store: Arc<dyn Store>,
    identity: Identity,
    users: OnceLock<Arc<dyn CertificateUsers>>,
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn decode(kv: &KeyValue) -> Result<Record, AcmError> {
    serde_json::from_slice(&kv.value).map_err(|source| AcmError::Corrupt { key: kv.key.clone(), source })
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("certificate records always serialise")
}

fn text(bytes: &[u8], what: &str) -> Result<String, AcmError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| AcmError::Validation(format!("The {what} is not PEM text.")))
}

fn check_tags(tags: &[Tag]) -> Result<(), AcmError> {
    for tag in tags {
        if tag.key.is_empty() || tag.key.len() > 128 || tag.value.len() > 256 {
            return Err(AcmError::InvalidTag(format!(
                "Tag {:?}: keys must be 1 to 128 characters and values at most 256.",
                tag.key
            )));
        }
        if tag.key.starts_with("aws:") {
            return Err(AcmError::InvalidTag(format!("Tag {:?}: the aws: prefix is reserved.", tag.key)));
        }
    }
    Ok(())
}

impl Acm {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> Acm {
        Acm { store, identity, users: OnceLock::new() }
    }

    /// Attaches who answers "which load balancers use this certificate" (ELB, made after
    /// this). Until then every certificate is unused. Only the first call counts.
    pub fn set_users(&self, users: Arc<dyn CertificateUsers>) {
        let _ = self.users.set(users);
    }

    /// The record key of a certificate ARN of this installation.
    fn key(&self, arn: &str) -> Result<String, AcmError> {
        let invalid = || AcmError::InvalidArn { arn: arn.to_owned() };
        let id = arn.strip_prefix(&self.identity.acm_certificate("")).ok_or_else(invalid)?;
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(invalid());
        }
        Ok(format!("{PREFIX}{id}"))
    }

    async fn load(&self, arn: &str) -> Result<(Record, u64), AcmError> {
        let key = self.key(arn)?;
        let kv = self.store.get(&key).await?.ok_or_else(|| AcmError::NotFound { arn: arn.to_owned() })?;
        Ok((decode(&kv)?, kv.mod_revision))
    }

    async fn users(&self, arn: &str) -> Result<Vec<String>, AcmError> {
        match self.users.get() {
            Some(users) => users.users(arn).await.map_err(AcmError::Users),
            None => Ok(Vec::new()),
        }
    }

    /// Imports a certificate, or re-imports one over `import.arn` (its tags stay); the ARN.
    pub async fn import(&self, import: Import) -> Result<String, AcmError> {
        let facts = certificate::check(&import.certificate, &import.private_key, import.chain.as_deref())?;
        check_tags(&import.tags)?;
        let certificate_pem = text(&import.certificate, "certificate")?;
        let key_pem = text(&import.private_key, "private key")?;
        let chain_pem = import.chain.as_deref().map(|c| text(c, "certificate chain")).transpose()?;
        let t = now();
        if let Some(arn) = import.arn {
            if !import.tags.is_empty() {
                return Err(AcmError::InvalidParameter("Tags cannot be given when re-importing a certificate.".into()));
            }
            let key = self.key(&arn)?;
            for _ in 0..CONFLICT_RETRIES {
                let (mut record, revision) = self.load(&arn).await?;
                record.certificate_pem = certificate_pem.clone();
                record.chain_pem = chain_pem.clone();
                record.key_pem = key_pem.clone();
                record.facts = facts.clone();
                record.imported_at = t;
                let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&record)));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                    tracing::info!(arn = %arn, domain = %facts.domain_name, "certificate re-imported");
                    return Ok(arn);
                }
            }
            return Err(AcmError::Contended { arn });
        }
        if import.tags.len() > MAX_TAGS {
            return Err(AcmError::TooManyTags);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let arn = self.identity.acm_certificate(&id);
        let key = format!("{PREFIX}{id}");
        let record = Record {
            arn: arn.clone(),
            certificate_pem,
            chain_pem,
            key_pem,
            created_at: t,
            imported_at: t,
            facts,
            tags: import.tags,
        };
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&record)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => {
                tracing::info!(arn = %arn, domain = %record.facts.domain_name, "certificate imported");
                Ok(arn)
            }
            // A fresh UUID already taken: not something to retry into.
            TxnOutcome::Conflict => Err(AcmError::Contended { arn }),
        }
    }

    fn view(record: &Record, in_use_by: Vec<String>) -> Certificate {
        let expired = (record.facts.not_after as f64) < now();
        Certificate {
            arn: record.arn.clone(),
            created_at: record.created_at,
            imported_at: record.imported_at,
            status: if expired { CertificateStatus::Expired } else { CertificateStatus::Issued },
            facts: record.facts.clone(),
            in_use_by,
        }
    }

    pub async fn describe(&self, arn: &str) -> Result<Certificate, AcmError> {
        let (record, _) = self.load(arn).await?;
        let users = self.users(arn).await?;
        Ok(Self::view(&record, users))
    }

    /// The certificate and its chain, as GetCertificate returns them (PEM).
    pub async fn get(&self, arn: &str) -> Result<(String, Option<String>), AcmError> {
        let (record, _) = self.load(arn).await?;
        Ok((record.certificate_pem, record.chain_pem))
    }

    /// Certificates in ARN order, a page at a time.
    pub async fn list(&self, query: ListQuery) -> Result<Page<Certificate>, AcmError> {
        let size = page::page_size(query.max_items, MAX_PAGE, MAX_PAGE).map_err(page_error)?;
        let mut items = Vec::new();
        for kv in self.store.list_prefix(PREFIX).await? {
            let record = decode(&kv)?;
            let view = Self::view(&record, Vec::new());
            let status_ok = query.statuses.is_empty() || query.statuses.contains(&view.status);
            let key_ok = query.key_algorithms.is_empty() || query.key_algorithms.contains(&view.facts.key_algorithm);
            if status_ok && key_ok {
                items.push((view.arn.clone(), view));
            }
        }
        let mut page =
            page::paginate(items, Order::Ascending, size, query.next_token.as_deref()).map_err(page_error)?;
        for certificate in &mut page.items {
            certificate.in_use_by = self.users(&certificate.arn).await?;
        }
        Ok(page)
    }

    /// Deletes a certificate no load balancer uses.
    pub async fn delete(&self, arn: &str) -> Result<(), AcmError> {
        let key = self.key(arn)?;
        for _ in 0..CONFLICT_RETRIES {
            let (_, revision) = self.load(arn).await?;
            if let Some(user) = self.users(arn).await?.into_iter().next() {
                return Err(AcmError::InUse { arn: arn.to_owned(), user });
            }
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::delete(&key));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                tracing::info!(arn = %arn, "certificate deleted");
                return Ok(());
            }
        }
        Err(AcmError::Contended { arn: arn.to_owned() })
    }

    pub async fn tags(&self, arn: &str) -> Result<Vec<Tag>, AcmError> {
        Ok(self.load(arn).await?.0.tags)
    }

    /// Adds or replaces tags by key.
    pub async fn add_tags(&self, arn: &str, tags: Vec<Tag>) -> Result<(), AcmError> {
        check_tags(&tags)?;
        self.update_tags(arn, |current| {
            flotilla_types::tag::merge(current, tags.clone());
            if current.len() > MAX_TAGS { Err(AcmError::TooManyTags) } else { Ok(()) }
        })
        .await
    }

    /// Removes tags by key, or by key and value when the value is given (ACM's rule).
    pub async fn remove_tags(&self, arn: &str, tags: Vec<(String, Option<String>)>) -> Result<(), AcmError> {
        self.update_tags(arn, |current| {
            current.retain(|t| {
                !tags.iter().any(|(key, value)| *key == t.key && value.as_ref().is_none_or(|v| *v == t.value))
            });
            Ok(())
        })
        .await
    }

    async fn update_tags(
        &self,
        arn: &str,
        change: impl Fn(&mut Vec<Tag>) -> Result<(), AcmError>,
    ) -> Result<(), AcmError> {
        let key = self.key(arn)?;
        for _ in 0..CONFLICT_RETRIES {
            let (mut record, revision) = self.load(arn).await?;
            change(&mut record.tags)?;
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(AcmError::Contended { arn: arn.to_owned() })
    }

    /// The certificate (then its chain) and key a TLS listener serves.
    pub async fn certificate_pem(&self, arn: &str) -> Result<CertificatePem, AcmError> {
        let (record, _) = self.load(arn).await?;
        let mut chain_pem = record.certificate_pem.trim_end().to_owned();
        chain_pem.push('\n');
        if let Some(chain) = &record.chain_pem {
            chain_pem.push_str(chain.trim_end());
            chain_pem.push('\n');
        }
        Ok(CertificatePem { arn: record.arn, chain_pem, key_pem: record.key_pem })
    }
}

fn page_error(e: PageError) -> AcmError {
    match e {
        PageError::Size { got, max } => {
            AcmError::Validation(format!("MaxItems must be between 1 and {max}, got {got}."))
        }
        PageError::Token => AcmError::Validation("The NextToken is not one this server issued.".into()),
    }
}

#[cfg(test)]
mod tests;
