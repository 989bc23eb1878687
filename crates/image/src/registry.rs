//! A Docker Registry HTTP API v2 / OCI distribution client: just enough to pull.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;

use crate::auth::{Challenge, Credentials, parse_challenge};
use crate::digest::Digest;
use crate::manifest::media_type::MANIFEST_ACCEPT;
use crate::reference::{Reference, is_loopback_host};

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host:port`) dialled over plain HTTP even though they are not on
    /// loopback, like Docker's `insecure-registries`.
    pub insecure_registries: Vec<String>,
    /// Tries for resolving a manifest; AWS reports "retried N time(s)" from this.
    pub manifest_attempts: u32,
    /// Tries for fetching one blob when the failure looks transient.
    pub blob_attempts: u32,
    pub connect_timeout: Duration,
    /// No bytes for this long on a connection fails the request.
    pub read_timeout: Duration,
    /// Manifests are buffered in memory; anything larger is refused.
    pub max_manifest_bytes: usize,
    pub user_agent: String,
    /// Extra trusted root certificates (PEM documents, each possibly a bundle of
    /// several), for registries whose certificates a private CA signed. Trusted on
    /// top of the built-in web roots. [`RegistryConfig::add_root_certificates_pem`]
    /// checks a bundle before adding it.
    pub root_certificates: Vec<Vec<u8>>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            manifest_attempts: 2,
            blob_attempts: 3,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_manifest_bytes: 4 << 20,
            user_agent: concat!("flotilla/", env!("CARGO_PKG_VERSION")).to_owned(),
            root_certificates: Vec::new(),
        }
    }
}

impl RegistryConfig {
    /// Trusts the certificates of the PEM bundle `pem` (one or more `CERTIFICATE`
    /// blocks) as extra roots; returns how many it holds. Refuses a bundle that is
    /// not PEM, holds no certificate or holds one that does not parse.
    pub fn add_root_certificates_pem(&mut self, pem: impl Into<Vec<u8>>) -> Result<usize, RegistryError> {
        let pem = pem.into();
        let certs = parse_root_certificates(&pem)?;
        let count = certs.len();
        // Parsing PEM does not look inside the certificates; loading them into a
        // root store does.
        let mut builder = Client::builder();
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        builder.build().map_err(RegistryError::RootCertificates)?;
        self.root_certificates.push(pem);
        Ok(count)
    }
}

fn parse_root_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(RegistryError::RootCertificates)?;
    if certs.is_empty() {
        return Err(RegistryError::NoRootCertificates);
    }
    Ok(certs)
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("invalid root certificate bundle")]
    RootCertificates(#[source] reqwest::Error),
    #[error("the root certificate bundle holds no PEM certificate")]
    NoRootCertificates,
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("not found")]
    NotFound { url: String },
    #[error("unauthorized: authentication required for {url}")]
    Unauthorized { url: String },
    #[error("denied: access to {url} is forbidden")]
    Denied { url: String },
    #[error("unexpected status {status} from {url}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("unsupported authentication challenge from {url}: {header:?}")]
    Challenge { url: String, header: String },
    #[error("token request to {realm} failed with status {status}")]
    TokenStatus { realm: String, status: u16 },
    #[error("token response from {realm} has no token")]
    TokenMissing { realm: String },
    #[error("manifest at {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("registry says {url} has digest {header}, but its content hashes to {actual}")]
    ContentDigest { url: String, header: String, actual: Digest },
}

impl RegistryError {
    /// Worth another try: the network or the registry may do better next time.
    /// "Not found" is included because a tag pushed a moment ago may not be visible
    /// on every replica yet, and AWS retries it too.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Http { .. } | RegistryError::NotFound { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    pub digest: Digest,
}

#[derive(Clone)]
enum CachedAuth {
    Basic,
    Bearer { token: String, until: Instant },
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct AuthKey {
    host: String,
    scope: String,
    /// A hash of the credentials used, never the credentials themselves.
    principal: Option<Digest>,
}

pub(crate) struct RegistryClient {
    http: Client,
    /// Loopback registries bypass any configured proxy.
    http_direct: Client,
    config: RegistryConfig,
    auth: Mutex<HashMap<AuthKey, CachedAuth>>,
}

impl RegistryClient {
    pub(crate) fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let mut roots = Vec::new();
        for pem in &config.root_certificates {
            roots.extend(parse_root_certificates(pem)?);
        }
        let builder = || {
            let mut builder = Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout);
            for cert in &roots {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder
        };
        Ok(RegistryClient {
            http: builder().build().map_err(RegistryError::Client)?,
            http_direct: builder().no_proxy().build().map_err(RegistryError::Client)?,
            config,
            auth: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn plain_http(&self, registry: &str) -> bool {
        is_loopback_host(registry) || self.config.insecure_registries.iter().any(|r| r == registry)
    }

    fn client_for(&self, host: &str) -> &Client {
        if is_loopback_host(host) { &self.http_direct } else { &self.http }
    }

    fn url(&self, reference: &Reference, kind: &str, id: &str) -> String {
        let scheme = if self.plain_http(reference.registry()) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{kind}/{id}", reference.api_host(), reference.repository())
    }

    /// GETs a manifest by tag or digest and checks its digest: against the digest
    /// asked for, else against the registry's `Docker-Content-Digest`.
    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
        id: &str,
        credentials: Option<&Credentials>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.url(reference, "manifests", id);
        let mut response = self.get(reference, &url, Some(&MANIFEST_ACCEPT.join(", ")), credentials).await?;
        let media_type = header_str(response.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(response.headers(), "docker-content-digest");
        let limit = self.config.max_manifest_bytes;
        if response.content_length().is_some_and(|l| l > limit as u64) {
            return Err(RegistryError::TooLarge { url, limit });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|source| RegistryError::Http { url: url.clone(), source })?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(RegistryError::TooLarge { url, limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = Digest::of(&bytes);
        let claimed = match Digest::parse(id) {
            Ok(asked) => Some(asked.to_string()),
            Err(_) => header_digest,
        };
        if let Some(claimed) = claimed
            && claimed != digest.to_string()
        {
            return Err(RegistryError::ContentDigest { url, header: claimed, actual: digest });
        }
        Ok(FetchedManifest { bytes, media_type, digest })
    }

    /// Starts a blob download; the caller streams the body with `chunk()`.
    pub(crate) async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        credentials: Option<&Credentials>,
    ) -> Result<(String, Response), RegistryError> {
        let url = self.url(reference, "blobs", &digest.to_string());
        let response = self.get(reference, &url, None, credentials).await?;
        Ok((url, response))
    }

    /// A GET with the challenge flow: try with what we have cached, and on a 401
    /// answer the challenge once.
    async fn get(
        &self,
        reference: &Reference,
        url: &str,
        accept: Option<&str>,
        credentials: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        let scope = format!("repository:{}:pull", reference.repository());
        // Keyed by who asked, too: a token one task's credentials earned must never
        // let another task (or an anonymous pull) into a private repository.
        let key = AuthKey {
            host: reference.api_host().to_owned(),
            scope: scope.clone(),
            principal: credentials.map(|c| Digest::of(format!("{}\0{}", c.username, c.password).as_bytes())),
        };
        let mut auth = self.cached(&key);
        let client = self.client_for(reference.api_host());
        for answered in [false, true] {
            let mut request = client.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            request = match (&auth, credentials) {
                (Some(CachedAuth::Bearer { token, .. }), _) => request.bearer_auth(token),
                (Some(CachedAuth::Basic), Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
                _ => request,
            };
            let response =
                request.send().await.map_err(|source| RegistryError::Http { url: url.to_owned(), source })?;
            if response.status() != StatusCode::UNAUTHORIZED || answered {
                return check_status(url, response).await;
            }
            let header = header_str(response.headers(), WWW_AUTHENTICATE.as_str()).unwrap_or_default();
            let challenge = parse_challenge(&header)
                .ok_or_else(|| RegistryError::Challenge { url: url.to_owned(), header: header.clone() })?;
            let fresh = match challenge {
                Challenge::Basic if credentials.is_some() => CachedAuth::Basic,
                Challenge::Basic => {
                    return Err(RegistryError::Unauthorized { url: url.to_owned() });
                }
                Challenge::Bearer { realm, service, scope: challenge_scope } => {
                    let scope = challenge_scope.unwrap_or_else(|| scope.clone());
                    self.token(&realm, service.as_deref(), &scope, credentials).await?
                }
            };
            self.auth.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), fresh.clone());
            auth = Some(fresh);
        }
        unreachable!("the loop returns on its second pass")
    }

    fn cached(&self, key: &AuthKey) -> Option<CachedAuth> {
        let map = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some(CachedAuth::Bearer { until, .. }) if *until <= Instant::now() => None,
            other => other.cloned(),
        }
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<CachedAuth, RegistryError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|_| RegistryError::Challenge { url: realm.to_owned(), header: realm.to_owned() })?;
        let host = realm_url.host_str().unwrap_or_default().to_owned();
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.client_for(&host).get(realm_url.clone()).query(&query);
        // Credentials travel only over TLS or to this machine.
        let safe = realm_url.scheme() == "https" || is_loopback_host(&host);
        if let (Some(c), true) = (credentials, safe) {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let http_err = |source| RegistryError::Http { url: realm.to_owned(), source };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized { url: realm.to_owned() });
        }
        if !status.is_success() {
            return Err(RegistryError::TokenStatus { realm: realm.to_owned(), status: status.as_u16() });
        }
        let body: TokenResponse = response.json().await.map_err(http_err)?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::TokenMissing { realm: realm.to_owned() })?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10) - 5);
        Ok(CachedAuth::Bearer { token, until: Instant::now() + lifetime })
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn check_status(url: &str, response: Response) -> Result<Response, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = url.to_owned();
    Err(match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound { url },
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized { url },
        StatusCode::FORBIDDEN => RegistryError::Denied { url },
        _ => {
            let body = response.text().await.unwrap_or_default();
            RegistryError::Status { url, status: status.as_u16(), message: error_message(&body) }
        }
    })
}

/// The first `errors[].message` of a registry error body, else the body's start.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(Errors { errors }) = serde_json::from_str::<Errors>(body)
        && let Some(e) = errors.into_iter().next()
    {
        return match (e.code, e.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (c, m) => c.or(m).unwrap_or_default(),
        };
    }
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#),
            "TOOMANYREQUESTS: slow down"
        );
        assert_eq!(error_message("oops"), "oops");
    }

    #[test]
    fn scheme_follows_loopback_and_insecure_list() {
        let client = RegistryClient::new(RegistryConfig {
            insecure_registries: vec!["10.1.2.3:5000".into()],
            ..Default::default()
        })
        .unwrap();
        let url = |r: &str| client.url(&Reference::parse(r).unwrap(), "manifests", "latest");
        assert_eq!(url("127.0.0.1:5000/a"), "http://127.0.0.1:5000/v2/a/manifests/latest");
        assert_eq!(url("10.1.2.3:5000/a"), "http://10.1.2.3:5000/v2/a/manifests/latest");
        assert_eq!(url("nginx"), "https://registry-1.docker.io/v2/library/nginx/manifests/latest");
    }
}
