//! AWS Signature Version 4: verifying requests, and signing them for Flotilla's own CLI.
//!
//! The canonical request is built exactly as AWS defines it from the headers the client chose
//! to sign (botocore and aws-sdk-rust sign different sets), so any correct client verifies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use flotilla_types::time::{format_basic as format_amz_date, parse_basic as parse_amz_date};

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's clock may be from ours.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The parts of an HTTP request a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Header names lowercased; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// Who signed a request, once verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    pub principal: flotilla_iam::Principal,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// RFC 3986 encoding as SigV4 wants it: everything but unreserved characters.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            // Byte-wise so a multi-byte character after '%' cannot split a str slice.
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Collapses runs of spaces and trims, as the canonical header form requires.
fn canonical_header_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn canonical_request(req: &SignedRequest<'_>, signed_headers: &[&str], payload_hash: &str) -> String {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> =
            req.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| canonical_header_value(v)).collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if req.path.is_empty() { "/".to_owned() } else { uri_encode(&percent_decode(req.path), true) };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        path,
        canonical_query(req.query),
        canonical_headers,
        signed_headers.join(";"),
        payload_hash
    )
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()))
}

struct AuthHeader<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(msg: impl Into<String>) -> ApiError {
    ApiError::new("IncompleteSignatureException", msg)
}

fn parse_auth_header(value: &str) -> Result<AuthHeader<'_>, ApiError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or_else(|| {
        incomplete(format!("Authorization header requires the {ALGORITHM} algorithm. Authorization={value}"))
    })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing =
        |what: &str| incomplete(format!("Authorization header requires '{what}' parameter. Authorization={value}"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|s| s.is_empty()) {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/aws4_request, got '{credential}'"
        )));
    }
    Ok(AuthHeader {
        access_key: scope[0],
        date: scope[1],
        region: scope[2],
        service: scope[3],
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// The service a request is signed for (the credential scope of its `Authorization` header),
/// read before verifying so that form-encoded requests reach the service that will verify
/// them; `None` if the header is absent or malformed (the service's own check then says so).
pub(crate) fn signing_service(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    parse_auth_header(value).ok().map(|auth| auth.service.to_owned())
}

/// The services that are global on AWS: their signatures may be scoped to `us-east-1`
/// (where the SDKs sign them by default) as well as to this server's region.
const GLOBAL_SERVICES: [&str; 2] = ["iam", "sts"];
const GLOBAL_REGION: &str = "us-east-1";

/// Checks request signatures for one region against known credentials: the static ones, or,
/// once IAM is attached ([`Verifier::attach_iam`]), every key IAM knows (the root's, users',
/// and temporary credentials, which must come with their session token until they expire).
pub struct Verifier {
    region: String,
    /// The account the static credentials are the root of.
    account: String,
    secrets: HashMap<String, String>,
    iam: Option<Arc<flotilla_iam::Iam>>,
    /// Derived signing keys: deriving costs four HMACs.
    keys: Mutex<HashMap<KeyScope, Vec<u8>>>,
}

/// What a derived signing key depends on: access key, date, region, service.
type KeyScope = (String, String, String, String);

fn invalid_token() -> ApiError {
    ApiError::new("UnrecognizedClientException", "The security token included in the request is invalid.")
}

impl Verifier {
    pub fn new(region: &str, account: &str, credentials: &[Credentials]) -> Verifier {
        Verifier {
            region: region.to_owned(),
            account: account.to_owned(),
            secrets: credentials.iter().map(|c| (c.access_key_id.clone(), c.secret_access_key.clone())).collect(),
            iam: None,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Looks every access key up in `iam` from now on (it knows the root's keys too).
    pub fn attach_iam(&mut self, iam: Arc<flotilla_iam::Iam>) {
        self.iam = Some(iam);
    }

    fn key(&self, access_key: &str, secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
        let cache_key = (access_key.to_owned(), date.to_owned(), region.to_owned(), service.to_owned());
        let mut keys = self.keys.lock().expect("signing key cache poisoned");
        if keys.len() > 1024 {
            keys.clear();
        }
        keys.entry(cache_key).or_insert_with(|| signing_key(secret, date, region, service)).clone()
    }

    /// What `access_key` stands for: IAM's answer when attached, else a static root key.
    async fn identity(&self, access_key: &str) -> Result<Option<flotilla_iam::KeyIdentity>, ApiError> {
        let Some(iam) = &self.iam else {
            return Ok(self.secrets.get(access_key).map(|secret| flotilla_iam::KeyIdentity {
                secret_access_key: secret.clone(),
                session_token: None,
                expiration: None,
                active: true,
                principal: flotilla_iam::Principal::root(&self.account),
            }));
        };
        iam.lookup_key(access_key).await.map_err(|e| match e {
            flotilla_iam::IamError::Store(ref s @ flotilla_store::StoreError::Unavailable { .. }) => {
                crate::error::store_unavailable("ServerException", s)
            }
            e => crate::error::internal("ServerException", "the access key lookup", &e),
        })
    }

    /// Verifies `req` as signed for `service` at `now` (seconds since the epoch).
    /// The credential's scope names this endpoint's region (or a global service's) and the
    /// service the request is for.
    fn check_scope(&self, auth: &AuthHeader<'_>, service: &str) -> Result<(), ApiError> {
        let global = GLOBAL_SERVICES.contains(&service) && auth.region == GLOBAL_REGION;
        if auth.region != self.region && !global {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region. This endpoint serves '{}', not '{}'.",
                    self.region, auth.region
                ),
            ));
        }
        if auth.service != service {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!("Credential should be scoped to correct service: '{service}'."),
            ));
        }
        Ok(())
    }

    pub async fn verify(&self, req: &SignedRequest<'_>, service: &str, now: i64) -> Result<Caller, ApiError> {
        let header = |name: &str| req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let Some(auth_value) = header("authorization") else {
            return Err(ApiError::new("MissingAuthenticationTokenException", "Missing Authentication Token"));
        };
        let auth = parse_auth_header(auth_value)?;
        let Some(amz_date) = header("x-amz-date") else {
            return Err(incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            ));
        };
        let Some(request_time) = parse_amz_date(amz_date) else {
            return Err(incomplete(format!(
                "X-Amz-Date must be in ISO8601 basic format (YYYYMMDDTHHMMSSZ), got '{amz_date}'."
            )));
        };
        if !auth.signed_headers.contains(&"host") {
            return Err(incomplete("SignedHeaders must include 'host'."));
        }
        if (now - request_time).abs() > MAX_SKEW_SECS {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                    format_amz_date(now - MAX_SKEW_SECS),
                    format_amz_date(now)
                ),
            ));
        }
        let Some(identity) = self.identity(auth.access_key).await? else {
            return Err(invalid_token());
        };
        if auth.date != &amz_date[..8] {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
                    auth.date,
                    &amz_date[..8]
                ),
            ));
        }
        self.check_scope(&auth, service)?;
        let body_hash = sha256_hex(req.body);
        if let Some(claimed) = header("x-amz-content-sha256")
            && claimed != "UNSIGNED-PAYLOAD"
            && claimed != body_hash
        {
            return Err(ApiError::new(
                "InvalidSignatureException",
                "The provided x-amz-content-sha256 header does not match what was computed.",
            ));
        }
        let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
        let canonical = canonical_request(req, &auth.signed_headers, &body_hash);
        let to_sign = string_to_sign(amz_date, &scope, &canonical);
        let key = self.key(auth.access_key, &identity.secret_access_key, auth.date, auth.region, service);
        let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
        if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            return Err(ApiError::new(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ));
        }
        admit(identity, auth.access_key, header("x-amz-security-token"), now)
    }
}

/// The caller a correctly signed request stands for, if its key may still be used: active, and
/// for temporary credentials sent with their session token (`sent_token`) and not expired.
fn admit(
    identity: flotilla_iam::KeyIdentity,
    access_key: &str,
    sent_token: Option<&str>,
    now: i64,
) -> Result<Caller, ApiError> {
    if !identity.active {
        return Err(invalid_token());
    }
    if let Some(token) = &identity.session_token {
        // Temporary credentials are only half a credential without their token.
        let sent = sent_token.unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(token.as_bytes())) {
            return Err(invalid_token());
        }
    }
    if identity.expiration.is_some_and(|expiration| now >= expiration) {
        return Err(ApiError::new("ExpiredTokenException", "The security token included in the request is expired"));
    }
    Ok(Caller { access_key_id: access_key.to_owned(), principal: identity.principal })
}

/// The longest a presigned URL may say it lasts (`X-Amz-Expires`), as AWS allows: 7 days.
pub const MAX_PRESIGNED_EXPIRES: i64 = 7 * 24 * 3600;

impl Verifier {
    /// Verifies a presigned URL (query-string authentication: `X-Amz-Algorithm`,
    /// `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
    /// `X-Amz-Signature`, and `X-Amz-Security-Token` for temporary credentials) for `service`
    /// at `now`, with the same keys and sessions as [`Verifier::verify`]. `req.headers` are
    /// the headers the request comes with (`host` at least); each one the URL says it signed
    /// must be there. The URL is good from its date (less the allowed skew) for its
    /// `X-Amz-Expires` seconds, or, given `lifetime`, for that long whatever it says (up to
    /// which `X-Amz-Expires` must then be): STS treats `aws eks get-token`'s 60-second URLs as
    /// good for 15 minutes, and aws-iam-authenticator checks them so. The payload is the
    /// request's body (botocore signs a GET's empty body's hash); `UNSIGNED-PAYLOAD` (S3's
    /// presigning) is accepted too.
    pub async fn verify_presigned(
        &self,
        req: &SignedRequest<'_>,
        service: &str,
        now: i64,
        lifetime: Option<i64>,
    ) -> Result<Caller, ApiError> {
        let params: Vec<(String, String)> = req
            .query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let Some(signature) = param("X-Amz-Signature") else {
            return Err(ApiError::new("MissingAuthenticationTokenException", "Missing Authentication Token"));
        };
        let required = |name: &str| {
            param(name).ok_or_else(|| incomplete(format!("Presigned URL requires the '{name}' query parameter.")))
        };
        if required("X-Amz-Algorithm")? != ALGORITHM {
            return Err(incomplete(format!("X-Amz-Algorithm must be {ALGORITHM}.")));
        }
        let credential = required("X-Amz-Credential")?;
        let amz_date = required("X-Amz-Date")?;
        let signed_headers: Vec<&str> = required("X-Amz-SignedHeaders")?.split(';').collect();
        let max_expires = lifetime.unwrap_or(MAX_PRESIGNED_EXPIRES);
        let expires: i64 =
            required("X-Amz-Expires")?.parse().ok().filter(|e| (1..=max_expires).contains(e)).ok_or_else(|| {
                incomplete(format!("X-Amz-Expires must be a whole number of seconds from 1 to {max_expires}."))
            })?;
        let expires = lifetime.unwrap_or(expires);
        // The same parts as an Authorization header names, checked alike.
        let as_header = format!(
            "{ALGORITHM} Credential={credential}, SignedHeaders={}, Signature={signature}",
            signed_headers.join(";")
        );
        let auth = parse_auth_header(&as_header)?;
        let Some(request_time) = parse_amz_date(amz_date) else {
            return Err(incomplete(format!(
                "X-Amz-Date must be in ISO8601 basic format (YYYYMMDDTHHMMSSZ), got '{amz_date}'."
            )));
        };
        if !signed_headers.contains(&"host") {
            return Err(incomplete("SignedHeaders must include 'host'."));
        }
        if let Some(missing) = signed_headers.iter().find(|h| !req.headers.iter().any(|(n, _)| n == *h)) {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!("The presigned URL signs header '{missing}', which the request lacks."),
            ));
        }
        if now < request_time - MAX_SKEW_SECS {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!("Signature not yet current: {amz_date} is still later than {}", format_amz_date(now)),
            ));
        }
        if now > request_time + expires {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!("Signature expired: {amz_date} + {expires} s is earlier than {}", format_amz_date(now)),
            ));
        }
        if auth.date != &amz_date[..8] {
            return Err(ApiError::new(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from X-Amz-Date.",
            ));
        }
        self.check_scope(&auth, service)?;
        let Some(identity) = self.identity(auth.access_key).await? else {
            return Err(invalid_token());
        };
        let unsigned: Vec<String> = req
            .query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("X-Amz-Signature="))
            .map(str::to_owned)
            .collect();
        let unsigned = unsigned.join("&");
        let canonical_for = |payload: &str| {
            let unsigned_req = SignedRequest {
                method: req.method,
                path: req.path,
                query: &unsigned,
                headers: req.headers.clone(),
                body: req.body,
            };
            canonical_request(&unsigned_req, &auth.signed_headers, payload)
        };
        let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
        let key = self.key(auth.access_key, &identity.secret_access_key, auth.date, auth.region, service);
        let matches = [sha256_hex(req.body), "UNSIGNED-PAYLOAD".to_owned()].iter().any(|payload| {
            let to_sign = string_to_sign(amz_date, &scope, &canonical_for(payload));
            let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
            bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes()))
        });
        if !matches {
            return Err(ApiError::new(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ));
        }
        admit(identity, auth.access_key, param("X-Amz-Security-Token"), now)
    }
}

/// Signs a request: returns the headers to add (`x-amz-date`, `authorization`). `req.headers`
/// must already hold every header to sign, `host` included.
pub fn sign(
    req: &SignedRequest<'_>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now);
    let mut headers = req.headers.clone();
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let full = SignedRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: headers.clone(),
        body: req.body,
    };
    let canonical = canonical_request(&full, &names, &sha256_hex(req.body));
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let signature = hex::encode(hmac(&key, string_to_sign(&amz_date, &scope, &canonical).as_bytes()));
    vec![
        ("x-amz-date".into(), amz_date),
        (
            "authorization".into(),
            format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
                credentials.access_key_id,
                names.join(";")
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    /// The `get-vanilla` case of AWS's published SigV4 test suite.
    #[test]
    fn matches_aws_test_suite_vanilla_get() {
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let canonical = canonical_request(&req, &["host", "x-amz-date"], &sha256_hex(b""));
        let sts = string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", &canonical);
        let key = signing_key(&creds().secret_access_key, "20150830", "us-east-1", "service");
        assert_eq!(
            hex::encode(hmac(&key, sts.as_bytes())),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// A presigned STS GetCallerIdentity URL as `aws eks get-token` makes it, by botocore
    /// 1.43 at 2026-12-07T04:00:00Z for cluster `demo` (signed over `host;x-k8s-aws-id`).
    const PRESIGNED: &str = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261207%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261207T040000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=c1d2c6e1b775032318fac1b7a952afb13f44376b15bad2635184c50f4551232d";

    fn presigned(query: &str, cluster: &str, now_offset: i64, lifetime: Option<i64>) -> Result<Caller, ApiError> {
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query,
            headers: vec![("host".into(), "127.0.0.1:4566".into()), ("x-k8s-aws-id".into(), cluster.into())],
            body: b"",
        };
        let now = parse_amz_date("20261207T040000Z").unwrap() + now_offset;
        block_on(Verifier::new("us-east-1", "000000000000", &[creds()]).verify_presigned(&req, "sts", now, lifetime))
    }

    #[test]
    fn botocores_presigned_url_verifies_for_its_header_and_lifetime() {
        let caller = presigned(PRESIGNED, "demo", 30, None).unwrap();
        assert_eq!(caller.access_key_id, "AKIDEXAMPLE");
        // Signed for another cluster id.
        assert_eq!(presigned(PRESIGNED, "other", 30, None).unwrap_err().code, "SignatureDoesNotMatch");
        // Its own 60 seconds, or EKS's 15 minutes.
        assert_eq!(presigned(PRESIGNED, "demo", 61, None).unwrap_err().code, "InvalidSignatureException");
        assert!(presigned(PRESIGNED, "demo", 14 * 60, Some(900)).is_ok());
        assert_eq!(presigned(PRESIGNED, "demo", 15 * 60 + 1, Some(900)).unwrap_err().code, "InvalidSignatureException");
        assert_eq!(presigned(PRESIGNED, "demo", -3600, Some(900)).unwrap_err().code, "InvalidSignatureException");
        // Tampered with, or without its signature.
        let tampered = PRESIGNED.replace("Version=2011-06-15", "Version=2011-06-16");
        assert_eq!(presigned(&tampered, "demo", 30, None).unwrap_err().code, "SignatureDoesNotMatch");
        let unsigned = PRESIGNED.split("&X-Amz-Signature").next().unwrap();
        assert_eq!(presigned(unsigned, "demo", 30, None).unwrap_err().code, "MissingAuthenticationTokenException");
        let long = PRESIGNED.replace("X-Amz-Expires=60", "X-Amz-Expires=3600");
        assert_eq!(presigned(&long, "demo", 30, Some(900)).unwrap_err().code, "IncompleteSignatureException");
    }

    fn signed(body: &[u8], now: i64) -> Vec<(String, String)> {
        let mut headers = vec![
            ("host".to_string(), "127.0.0.1:8000".to_string()),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), "AmazonEC2ContainerServiceV20141113.ListClusters".to_string()),
        ];
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body };
        headers.extend(sign(&req, &creds(), "us-east-1", "ecs", now));
        headers
    }

    fn verify(headers: Vec<(String, String)>, body: &[u8], now: i64) -> Result<Caller, ApiError> {
        let v = Verifier::new("us-east-1", "123456789012", &[creds()]);
        block_on(v.verify(&SignedRequest { method: "POST", path: "/", query: "", headers, body }, "ecs", now))
    }

    /// Runs `verify` to completion: without IAM attached it never waits on anything.
    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(f)
    }

    const NOW: i64 = 1_764_460_800;

    #[test]
    fn own_signature_verifies() {
        assert!(verify(signed(b"{}", NOW), b"{}", NOW).is_ok());
    }

    #[test]
    fn tampered_body_fails() {
        let err = verify(signed(b"{}", NOW), b"{\"a\":1}", NOW).unwrap_err();
        assert_eq!(err.code, "InvalidSignatureException");
    }

    #[test]
    fn stale_request_fails() {
        let err = verify(signed(b"{}", NOW), b"{}", NOW + MAX_SKEW_SECS + 1).unwrap_err();
        assert!(err.message.starts_with("Signature expired"), "{}", err.message);
        assert!(verify(signed(b"{}", NOW), b"{}", NOW + MAX_SKEW_SECS - 1).is_ok());
    }

    #[test]
    fn unknown_key_and_missing_header() {
        let mut headers = signed(b"{}", NOW);
        let v = Verifier::new(
            "us-east-1",
            "123456789012",
            &[Credentials { access_key_id: "OTHER".into(), secret_access_key: "x".into() }],
        );
        let err = block_on(v.verify(
            &SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body: b"{}" },
            "ecs",
            NOW,
        ));
        assert_eq!(err.unwrap_err().code, "UnrecognizedClientException");
        headers.retain(|(n, _)| n != "authorization");
        assert_eq!(verify(headers, b"{}", NOW).unwrap_err().code, "MissingAuthenticationTokenException");
    }

    #[test]
    fn wrong_region_or_service_scope_fails() {
        let headers = signed(b"{}", NOW);
        let v = Verifier::new("eu-west-1", "123456789012", &[creds()]);
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body: b"{}" };
        assert_eq!(block_on(v.verify(&req, "ecs", NOW)).unwrap_err().code, "InvalidSignatureException");
        let v = Verifier::new("us-east-1", "123456789012", &[creds()]);
        assert_eq!(block_on(v.verify(&req, "logs", NOW)).unwrap_err().code, "InvalidSignatureException");
    }

    /// Keys looked up through IAM: a user's key until it is made inactive, temporary
    /// credentials only with their session token and only until they expire. `verify` takes
    /// the time as an argument, so expiry is tested by asking one second past it.
    #[test]
    fn keys_from_iam() {
        use flotilla_iam::{Iam, KeyStatus, NewRole, Tuning};
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let store = Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
            let identity = flotilla_types::Identity::new("us-east-1", "123456789012");
            let root = [(creds().access_key_id, creds().secret_access_key)];
            let tuning = Tuning { min_session: 1, ..Tuning::default() };
            let iam = Iam::open_tuned(store, identity, &root, tuning).await.unwrap();
            let mut v = Verifier::new("eu-west-1", "123456789012", &[]);
            v.attach_iam(iam.clone());
            let check = |c: Credentials, token: Option<&str>, service: &'static str, region: &str, now: i64| {
                let mut headers = vec![
                    ("host".to_string(), "127.0.0.1:8000".to_string()),
                    ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
                ];
                if let Some(t) = token {
                    headers.push(("x-amz-security-token".to_string(), t.to_string()));
                }
                let req = SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body: b"" };
                headers.extend(sign(&req, &c, region, service, now));
                let req = SignedRequest { method: "POST", path: "/", query: "", headers, body: b"" };
                let v = &v;
                async move { v.verify(&req, service, now).await }
            };
            // The root's static key, and IAM and STS signed for us-east-1 (they are global).
            assert!(check(creds(), None, "ecs", "eu-west-1", NOW).await.unwrap().principal.is_root());
            assert!(check(creds(), None, "sts", "us-east-1", NOW).await.is_ok());
            assert!(check(creds(), None, "ecs", "us-east-1", NOW).await.is_err());

            iam.create_user("u", None).await.unwrap();
            let key = iam.create_access_key("u").await.unwrap();
            let user = Credentials { access_key_id: key.id.clone(), secret_access_key: key.secret.clone() };
            let caller = check(user.clone(), None, "ecs", "eu-west-1", NOW).await.unwrap();
            assert_eq!(caller.principal.arn, "arn:aws:iam::123456789012:user/u");
            iam.update_access_key("u", &key.id, KeyStatus::Inactive).await.unwrap();
            let refused = check(user, None, "ecs", "eu-west-1", NOW).await.unwrap_err();
            assert_eq!(refused.code, "UnrecognizedClientException");

            let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
            let role = NewRole { name: "r", path: None, trust, description: None, max_session_duration: None };
            let role = iam.create_role(role).await.unwrap();
            let temp = iam.assume_role_for_service(&role.arn, "ecs-tasks.amazonaws.com", "task", 60).await.unwrap();
            let c = Credentials { access_key_id: temp.access_key_id.clone(), secret_access_key: temp.secret_access_key.clone() };
            let before = temp.expiration - 1;
            let ok = check(c.clone(), Some(&temp.session_token), "ecs", "eu-west-1", before).await.unwrap();
            assert_eq!(ok.principal.arn, "arn:aws:sts::123456789012:assumed-role/r/task");
            let missing = check(c.clone(), None, "ecs", "eu-west-1", before).await.unwrap_err();
            assert_eq!(missing.code, "UnrecognizedClientException");
            let wrong = check(c.clone(), Some("forged"), "ecs", "eu-west-1", before).await.unwrap_err();
            assert_eq!(wrong.code, "UnrecognizedClientException");
            let expired = check(c, Some(&temp.session_token), "ecs", "eu-west-1", temp.expiration + 1).await.unwrap_err();
            assert_eq!(
                (expired.code, expired.message.as_str()),
                ("ExpiredTokenException", "The security token included in the request is expired")
            );
        });
    }
}
