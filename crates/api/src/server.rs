//! The HTTP front door: one `POST /` route for every AWS JSON 1.1 service, dispatched on the
//! `X-Amz-Target` prefix, with SigV4 checked before anything else is looked at. Once the body
//! has passed the service model, `(operation, body)` is parsed into that service's closed
//! request enum (`EcsRequest`, `LogsRequest`, ...) and the service's `execute` runs it. Form-encoded
//! requests (no `X-Amz-Target`: EC2 and ELBv2) go to `crate::query`, which routes them by the
//! service their signature is scoped to. EFS's REST-JSON routes (`/2015-02-01/...`) go to
//! `crate::efs`, EKS's (`/clusters...`, `/tags/...`) to `crate::eks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use flotilla_control::Control;
use flotilla_discovery::Discovery;
use flotilla_logs::LogStore;
use serde_json::Value;

use crate::acm::AcmRequest;
use crate::ecs::EcsRequest;
use crate::error::ApiError;
use crate::flotilla::FlotillaRequest;
use crate::logs::LogsRequest;
use crate::model::ServiceModel;
use crate::secrets::{SecretsManagerRequest, SsmRequest};
use crate::servicediscovery::CloudMapRequest;
use crate::sigv4::{Credentials, SignedRequest, Verifier};

/// Largest request body accepted; ECS's largest requests (task definitions) are far smaller.
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

/// A JSON 1.1 service Flotilla serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Ecs,
    Logs,
    ServiceDiscovery,
    Ssm,
    SecretsManager,
    Acm,
    Kms,
    /// Flotilla's own operations (hosts and their tokens).
    Flotilla,
}

impl Service {
    fn by_target_prefix(prefix: &str) -> Option<Service> {
        match prefix {
            "AmazonEC2ContainerServiceV20141113" => Some(Service::Ecs),
            "Logs_20140328" => Some(Service::Logs),
            "Route53AutoNaming_v20170314" => Some(Service::ServiceDiscovery),
            "AmazonSSM" => Some(Service::Ssm),
            "secretsmanager" => Some(Service::SecretsManager),
            "CertificateManager" => Some(Service::Acm),
            "TrentService" => Some(Service::Kms),
            "Flotilla_20261206" => Some(Service::Flotilla),
            _ => None,
        }
    }
}

pub struct ApiState {
    pub control: Arc<Control>,
    pub(crate) verifier: Verifier,
    ecs_model: ServiceModel,
    logs_model: ServiceModel,
    servicediscovery_model: ServiceModel,
    ssm_model: ServiceModel,
    secretsmanager_model: ServiceModel,
    acm_model: ServiceModel,
    kms_model: ServiceModel,
    flotilla_model: ServiceModel,
    /// KMS is served only when attached ([`ApiState::with_kms`]).
    kms: Option<Arc<flotilla_kms::Kms>>,
    /// SSM Parameter Store and Secrets Manager are served only when attached
    /// ([`ApiState::with_secrets`]).
    pub(crate) secrets: Option<Arc<flotilla_secrets::Secrets>>,
    /// CloudWatch Logs is served only when a log store is attached ([`ApiState::with_logs`]).
    logs: Option<Arc<LogStore>>,
    /// Cloud Map is served only when discovery is attached ([`ApiState::with_discovery`]).
    discovery: Option<Arc<Discovery>>,
    /// Elastic Load Balancing v2 and ACM are served only when attached
    /// ([`ApiState::with_load_balancing`]).
    pub(crate) elb: Option<Arc<flotilla_elb::Elb>>,
    pub(crate) acm: Option<Arc<flotilla_acm::Acm>>,
    /// ECS Exec sessions are served only when attached ([`ApiState::with_exec`]).
    pub(crate) exec: Option<Arc<flotilla_exec::Sessions>>,
    /// EFS is served only when attached ([`ApiState::with_efs`]).
    pub(crate) efs: Option<Arc<flotilla_efs::Efs>>,
    efs_model: ServiceModel,
    /// EKS is served only when attached ([`ApiState::with_eks`]).
    pub(crate) eks: Option<Arc<flotilla_eks::Eks>>,
    eks_model: ServiceModel,
    /// IAM and STS, and the authorisation of every request, when attached
    /// ([`ApiState::with_iam`]); without it every valid signature acts as the account root.
    pub(crate) iam: Option<Arc<flotilla_iam::Iam>>,
    request_ids: AtomicU64,
}

impl ApiState {
    pub fn new(control: Arc<Control>, credentials: &[Credentials]) -> ApiState {
        let verifier = Verifier::new(&control.identity().region, &control.identity().account, credentials);
        ApiState {
            control,
            verifier,
            ecs_model: ServiceModel::parse(include_str!("../model/ecs.json")),
            logs_model: ServiceModel::parse(include_str!("../model/logs.json")),
            servicediscovery_model: ServiceModel::parse(include_str!("../model/servicediscovery.json")),
            ssm_model: ServiceModel::parse(include_str!("../model/ssm.json")),
            secretsmanager_model: ServiceModel::parse(include_str!("../model/secretsmanager.json")),
            acm_model: ServiceModel::parse(include_str!("../model/acm.json")),
            kms_model: ServiceModel::parse(include_str!("../model/kms.json")),
            kms: None,
            flotilla_model: ServiceModel::parse(include_str!("../model/flotilla.json")),
            secrets: None,
            logs: None,
            discovery: None,
            elb: None,
            acm: None,
            exec: None,
            efs: None,
            efs_model: ServiceModel::parse(include_str!("../model/efs.json")),
            eks: None,
            eks_model: ServiceModel::parse(include_str!("../model/eks.json")),
            iam: None,
            request_ids: AtomicU64::new(0),
        }
    }

    /// Serves CloudWatch Logs from `logs`.
    pub fn with_logs(mut self, logs: Arc<LogStore>) -> ApiState {
        self.logs = Some(logs);
        self
    }

    /// Serves SSM Parameter Store and Secrets Manager from `secrets`.
    pub fn with_secrets(mut self, secrets: Arc<flotilla_secrets::Secrets>) -> ApiState {
        self.secrets = Some(secrets);
        self
    }

    /// Serves KMS from `kms`.
    pub fn with_kms(mut self, kms: Arc<flotilla_kms::Kms>) -> ApiState {
        self.kms = Some(kms);
        self
    }

    /// Serves Cloud Map (service discovery) from `discovery`.
    pub fn with_discovery(mut self, discovery: Arc<Discovery>) -> ApiState {
        self.discovery = Some(discovery);
        self
    }

    /// Serves Elastic Load Balancing v2 from `elb` and ACM from `acm`.
    pub fn with_load_balancing(mut self, elb: Arc<flotilla_elb::Elb>, acm: Arc<flotilla_acm::Acm>) -> ApiState {
        self.elb = Some(elb);
        self.acm = Some(acm);
        self
    }

    /// Serves ECS Exec: ExecuteCommand's sessions and their data channels.
    pub fn with_exec(mut self, sessions: Arc<flotilla_exec::Sessions>) -> ApiState {
        self.exec = Some(sessions);
        self
    }

    /// Serves EFS (REST-JSON under `/2015-02-01/`) from `efs`.
    pub fn with_efs(mut self, efs: Arc<flotilla_efs::Efs>) -> ApiState {
        self.efs = Some(efs);
        self
    }

    /// Serves EKS (REST-JSON under `/clusters` and `/tags/`) from `eks`.
    pub fn with_eks(mut self, eks: Arc<flotilla_eks::Eks>) -> ApiState {
        self.eks = Some(eks);
        self
    }

    /// Serves IAM and STS from `iam`, and authorises every request by its policies.
    pub fn with_iam(mut self, iam: Arc<flotilla_iam::Iam>) -> ApiState {
        self.verifier.attach_iam(iam.clone());
        self.iam = Some(iam);
        self
    }

    pub(crate) fn efs_model(&self) -> &ServiceModel {
        &self.efs_model
    }

    pub(crate) fn eks_model(&self) -> &ServiceModel {
        &self.eks_model
    }

    fn model(&self, service: Service) -> &ServiceModel {
        match service {
            Service::Ecs => &self.ecs_model,
            Service::Logs => &self.logs_model,
            Service::ServiceDiscovery => &self.servicediscovery_model,
            Service::Ssm => &self.ssm_model,
            Service::SecretsManager => &self.secretsmanager_model,
            Service::Acm => &self.acm_model,
            Service::Kms => &self.kms_model,
            Service::Flotilla => &self.flotilla_model,
        }
    }

    pub(crate) fn next_request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let h = crate::sigv4::sha256_hex(format!("{t}-{n}").as_bytes());
        format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/data-channel/{session_id}", get(crate::exec::data_channel))
        // EFS speaks REST-JSON: the method and path are the operation.
        .route("/2015-02-01/{*rest}", any(efs))
        // So does EKS.
        .route("/clusters", any(eks))
        .route("/clusters/{*rest}", any(eks))
        .route("/tags/{*rest}", any(eks))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                "UnknownOperationException",
                format!("No operation at {method} {uri}; AWS JSON APIs are served at POST /."),
            )
        })
        // The body is read in `handle`, with its own limit, so that an oversized request gets
        // an AWS-shaped error rather than axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        // Keeps the peer address for `aws:SourceIp` (see `authz`).
        .layer(axum::middleware::from_fn(crate::authz::remember_peer))
        .with_state(state)
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

async fn efs(State(state): State<Arc<ApiState>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    crate::efs::serve(&state, method, uri, headers, body).await
}

async fn eks(State(state): State<Arc<ApiState>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    crate::eks::serve(&state, method, uri, headers, body).await
}

async fn handle(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    if crate::query::is_form_request(&headers) {
        return crate::query::serve(&state, &uri, &headers, body).await;
    }
    let request_id = state.next_request_id();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let work = async {
        let body = read_body(&headers, body, "RequestEntityTooLargeException").await?;
        dispatch(&state, &uri, &headers, &body, &target).await
    };
    let result = guarded(work, "ServerException", &target).await;
    let mut response = match result {
        Ok(value) => {
            let mut r = value.to_string().into_response();
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
            r
        }
        Err(e) => {
            tracing::debug!(target = %target, code = e.code, message = %e.message, "request refused");
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// Reads a request body up to `MAX_BODY`, refusing on the declared length too so an oversized
/// body is never waited for; `too_large` is the protocol's name for that error.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, too_large: &'static str) -> Result<Bytes, ApiError> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let read = match declared {
        Some(n) if n > MAX_BODY => Err(()),
        _ => axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ()),
    };
    read.map_err(|()| {
        ApiError::new(
            too_large,
            format!("The request body is larger than {} MiB or was cut off.", MAX_BODY / (1024 * 1024)),
        )
    })
}

/// Runs one request's work so that a bug in a handler costs that request an `internal` error,
/// not the connection.
pub(crate) async fn guarded<T>(
    work: impl Future<Output = Result<T, ApiError>>,
    internal: &'static str,
    what: &str,
) -> Result<T, ApiError> {
    match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(request = %what, "handler panicked");
            Err(ApiError::new(internal, "The server failed to handle the request; it has been logged."))
        }
    }
}

/// Who signed this POST, its signature verified for the service `signing_name`; a header
/// that is not text is refused with `unreadable` (each protocol names that error its own way).
pub(crate) async fn authenticate(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    unreadable: &'static str,
    signing_name: &str,
) -> Result<crate::sigv4::Caller, ApiError> {
    let request = signed_request(uri, headers, body, unreadable)?;
    state.verifier.verify(&request, signing_name, now_secs()).await
}

/// The parts of a POST that its signature covers; a header that is not text is refused with
/// `unreadable` (each protocol names that error its own way).
fn signed_request<'a>(
    uri: &'a Uri,
    headers: &HeaderMap,
    body: &'a [u8],
    unreadable: &'static str,
) -> Result<SignedRequest<'a>, ApiError> {
    let mut signed_headers = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value =
            value.to_str().map_err(|_| ApiError::new(unreadable, format!("Header {name} is not valid text.")))?;
        signed_headers.push((name.as_str().to_owned(), value.to_owned()));
    }
    Ok(SignedRequest {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: signed_headers,
        body,
    })
}

async fn dispatch(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    target: &str,
) -> Result<Value, ApiError> {
    let (prefix, operation) = target.split_once('.').ok_or_else(|| {
        ApiError::new(
            "UnknownOperationException",
            "Missing or malformed X-Amz-Target header; expected <Service>.<Operation>.",
        )
    })?;
    let service = Service::by_target_prefix(prefix)
        .ok_or_else(|| ApiError::new("UnknownOperationException", format!("Flotilla does not serve '{prefix}'.")))?;
    let model = state.model(service);

    let caller = authenticate(state, uri, headers, body, "IncompleteSignatureException", model.signing_name()).await?;

    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::serialization(format!("The request body is not valid JSON: {e}")))?
    };
    let input = match model.check_input(operation, input) {
        Some(checked) => checked?,
        None => {
            return Err(ApiError::new(
                "UnknownOperationException",
                format!("'{operation}' is not an operation of {prefix}."),
            ));
        }
    };
    tracing::debug!(operation, caller = %caller.access_key_id, "request");
    crate::authz::authorize(state, &caller, model.signing_name(), operation, &input, headers).await?;
    match service {
        Service::Ecs if operation == "ExecuteCommand" => crate::exec::execute_command(state, headers, input).await,
        Service::Ecs => crate::ecs::execute(&state.control, EcsRequest::parse(operation, input)?).await,
        Service::Ssm if crate::exec::is_session_operation(operation) => {
            crate::exec::execute_ssm(state, headers, operation, input)
        }
        Service::Logs => {
            let logs = state.logs.as_deref().ok_or_else(|| {
                ApiError::new(
                    "ServiceUnavailableException",
                    "This server has no log store; CloudWatch Logs is not served.",
                )
            })?;
            crate::logs::execute(logs, state.control.identity(), LogsRequest::parse(operation, input)?).await
        }
        Service::ServiceDiscovery => {
            let discovery = state.discovery.as_deref().ok_or_else(|| {
                ApiError::new(
                    "ServiceUnavailableException",
                    "This server does not serve Cloud Map (service discovery).",
                )
            })?;
            crate::servicediscovery::execute(discovery, CloudMapRequest::parse(operation, input)?).await
        }
        Service::Ssm | Service::SecretsManager => {
            let secrets = state.secrets.as_deref().ok_or_else(|| {
                ApiError::new("ServiceUnavailableException", "This server does not serve SSM or Secrets Manager.")
            })?;
            if service == Service::Ssm {
                let may_decrypt = crate::secrets::MayDecrypt::new(state, &caller);
                crate::secrets::execute_ssm(secrets, SsmRequest::parse(operation, input)?, may_decrypt).await
            } else {
                crate::secrets::execute_secretsmanager(secrets, SecretsManagerRequest::parse(operation, input)?).await
            }
        }
        Service::Acm => {
            let acm = state.acm.as_deref().ok_or_else(|| {
                ApiError::new("ServiceUnavailableException", "This server does not serve Certificate Manager.")
            })?;
            crate::acm::execute(acm, AcmRequest::parse(operation, input)?).await
        }
        Service::Kms => {
            let kms = state
                .kms
                .as_deref()
                .ok_or_else(|| ApiError::new("UnsupportedOperationException", "This server does not serve KMS."))?;
            crate::kms::execute(kms, crate::kms::KmsRequest::parse(operation, input)?).await
        }
        Service::Flotilla => crate::flotilla::execute(state, &caller, FlotillaRequest::parse(operation, input)?).await,
    }
}
