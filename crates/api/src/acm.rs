//! AWS Certificate Manager (`CertificateManager`, JSON 1.1): request members in,
//! `flotilla_acm` call, response shape out. Certificates and keys arrive as blobs (base64 of
//! the PEM text); timestamps leave as epoch seconds. Served: ImportCertificate,
//! DescribeCertificate, ListCertificates, GetCertificate, DeleteCertificate,
//! AddTagsToCertificate, RemoveTagsFromCertificate, ListTagsForCertificate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flotilla_acm::{Acm, Certificate, CertificateStatus, Import, ListQuery};
use flotilla_types::Tag;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImportCertificate {
    certificate: String,
    private_key: String,
    certificate_chain: Option<String>,
    certificate_arn: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

impl std::fmt::Debug for ImportCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportCertificate").field("certificate_arn", &self.certificate_arn).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CertificateRef {
    certificate_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListCertificates {
    #[serde(default)]
    certificate_statuses: Vec<String>,
    includes: Option<Includes>,
    max_items: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Includes {
    #[serde(default)]
    key_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ChangeTags {
    certificate_arn: String,
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireTag {
    key: String,
    value: Option<String>,
}

/// Every ACM operation Flotilla serves, each with its typed input.
pub(crate) enum AcmRequest {
    ImportCertificate(ImportCertificate),
    DescribeCertificate(CertificateRef),
    ListCertificates(ListCertificates),
    GetCertificate(CertificateRef),
    DeleteCertificate(CertificateRef),
    AddTagsToCertificate(ChangeTags),
    RemoveTagsFromCertificate(ChangeTags),
    ListTagsForCertificate(CertificateRef),
}

impl AcmRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<AcmRequest, ApiError> {
        use AcmRequest as R;
        Ok(match operation {
            "ImportCertificate" => R::ImportCertificate(parse(input)?),
            "DescribeCertificate" => R::DescribeCertificate(parse(input)?),
            "ListCertificates" => R::ListCertificates(parse(input)?),
            "GetCertificate" => R::GetCertificate(parse(input)?),
            "DeleteCertificate" => R::DeleteCertificate(parse(input)?),
            "AddTagsToCertificate" => R::AddTagsToCertificate(parse(input)?),
            "RemoveTagsFromCertificate" => R::RemoveTagsFromCertificate(parse(input)?),
            "ListTagsForCertificate" => R::ListTagsForCertificate(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnknownOperationException",
                    format!("Flotilla does not serve ACM {other}: only imported certificates are."),
                ));
            }
        })
    }
}

fn blob(text: &str, member: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD.decode(text.trim()).map_err(|_| ApiError::serialization(format!("{member}: the blob is not base64.")))
}

fn status(s: &str) -> Option<CertificateStatus> {
    match s {
        "ISSUED" => Some(CertificateStatus::Issued),
        "EXPIRED" => Some(CertificateStatus::Expired),
        _ => None,
    }
}

/// The OID ACM shows beside an extended key usage's name.
fn extended_key_usage_oid(name: &str) -> Option<&'static str> {
    Some(match name {
        "TLS_WEB_SERVER_AUTHENTICATION" => "1.3.6.1.5.5.7.3.1",
        "TLS_WEB_CLIENT_AUTHENTICATION" => "1.3.6.1.5.5.7.3.2",
        "CODE_SIGNING" => "1.3.6.1.5.5.7.3.3",
        "EMAIL_PROTECTION" => "1.3.6.1.5.5.7.3.4",
        "TIME_STAMPING" => "1.3.6.1.5.5.7.3.8",
        "OCSP_SIGNING" => "1.3.6.1.5.5.7.3.9",
        "ANY" => "2.5.29.37.0",
        _ => return None,
    })
}

fn detail(c: &Certificate) -> Value {
    let f = &c.facts;
    strip_nulls(json!({
        "CertificateArn": c.arn,
        "DomainName": f.domain_name,
        "SubjectAlternativeNames": f.subject_alternative_names,
        "Serial": f.serial,
        "Subject": f.subject,
        "Issuer": f.issuer,
        "CreatedAt": c.created_at,
        "ImportedAt": c.imported_at,
        "NotBefore": f.not_before,
        "NotAfter": f.not_after,
        "Status": c.status.as_str(),
        "Type": "IMPORTED",
        "KeyAlgorithm": f.key_algorithm,
        "SignatureAlgorithm": f.signature_algorithm,
        "InUseBy": c.in_use_by,
        "RenewalEligibility": "INELIGIBLE",
        "KeyUsages": f.key_usages.iter().map(|n| json!({"Name": n})).collect::<Vec<_>>(),
        "ExtendedKeyUsages": f.extended_key_usages.iter()
            .map(|n| json!({"Name": n, "OID": extended_key_usage_oid(n)}))
            .collect::<Vec<_>>(),
        "Options": {"CertificateTransparencyLoggingPreference": "DISABLED"},
    }))
}

fn summary(c: &Certificate) -> Value {
    let f = &c.facts;
    json!({
        "CertificateArn": c.arn,
        "DomainName": f.domain_name,
        "SubjectAlternativeNameSummaries": f.subject_alternative_names,
        "HasAdditionalSubjectAlternativeNames": false,
        "Status": c.status.as_str(),
        "Type": "IMPORTED",
        "KeyAlgorithm": f.key_algorithm,
        "KeyUsages": f.key_usages,
        "ExtendedKeyUsages": f.extended_key_usages,
        "InUse": !c.in_use_by.is_empty(),
        "RenewalEligibility": "INELIGIBLE",
        "CreatedAt": c.created_at,
        "ImportedAt": c.imported_at,
        "NotBefore": f.not_before,
        "NotAfter": f.not_after,
    })
}

fn tags(wire: Vec<WireTag>) -> Vec<Tag> {
    wire.into_iter().map(|t| Tag::new(t.key, t.value.unwrap_or_default())).collect()
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(acm: &Acm, request: AcmRequest) -> Result<Value, ApiError> {
    use AcmRequest as R;
    Ok(match request {
        R::ImportCertificate(req) => {
            let import = Import {
                certificate: blob(&req.certificate, "Certificate")?,
                private_key: blob(&req.private_key, "PrivateKey")?,
                chain: req.certificate_chain.as_deref().map(|c| blob(c, "CertificateChain")).transpose()?,
                arn: req.certificate_arn,
                tags: tags(req.tags),
            };
            json!({"CertificateArn": acm.import(import).await?})
        }
        R::DescribeCertificate(req) => json!({"Certificate": detail(&acm.describe(&req.certificate_arn).await?)}),
        R::ListCertificates(req) => {
            let statuses: Vec<CertificateStatus> = req.certificate_statuses.iter().filter_map(|s| status(s)).collect();
            // Only the statuses an imported certificate can have: asking for others alone finds none.
            if !req.certificate_statuses.is_empty() && statuses.is_empty() {
                return Ok(json!({"CertificateSummaryList": []}));
            }
            let query = ListQuery {
                statuses,
                key_algorithms: req.includes.map(|i| i.key_types).unwrap_or_default(),
                max_items: req.max_items,
                next_token: req.next_token,
            };
            let page = acm.list(query).await?;
            strip_nulls(json!({
                "CertificateSummaryList": page.items.iter().map(summary).collect::<Vec<_>>(),
                "NextToken": page.next_token,
            }))
        }
        R::GetCertificate(req) => {
            let (certificate, chain) = acm.get(&req.certificate_arn).await?;
            strip_nulls(json!({"Certificate": certificate, "CertificateChain": chain}))
        }
        R::DeleteCertificate(req) => {
            acm.delete(&req.certificate_arn).await?;
            json!({})
        }
        R::AddTagsToCertificate(req) => {
            acm.add_tags(&req.certificate_arn, tags(req.tags)).await?;
            json!({})
        }
        R::RemoveTagsFromCertificate(req) => {
            let keys = req.tags.into_iter().map(|t| (t.key, t.value)).collect();
            acm.remove_tags(&req.certificate_arn, keys).await?;
            json!({})
        }
        R::ListTagsForCertificate(req) => {
            let tags = acm.tags(&req.certificate_arn).await?;
            json!({"Tags": tags.iter().map(|t| json!({"Key": t.key, "Value": t.value})).collect::<Vec<_>>()})
        }
    })
}
