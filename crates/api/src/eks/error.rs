//! EKS's errors: `{"message": ..., "clusterName": ..., "fargateProfileName": ...}` with
//! `x-amzn-ErrorType` and the status its model gives each code. The one place [`EksError`]
//! becomes an EKS code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_eks::EksError;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

#[derive(Debug)]
pub(crate) struct EksApiError {
    pub code: &'static str,
    pub message: String,
    /// Members EKS's errors carry besides the message (`clusterName`, `fargateProfileName`).
    pub extra: Map<String, Value>,
}

impl EksApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> EksApiError {
        EksApiError { code, message: message.into(), extra: Map::new() }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> EksApiError {
        EksApiError::new("InvalidParameterException", message)
    }

    /// Names the cluster (and profile) the error is about, as EKS's error members do.
    pub fn about(mut self, cluster: Option<&str>, profile: Option<&str>) -> EksApiError {
        if let Some(c) = cluster {
            self.extra.insert("clusterName".into(), Value::String(c.to_owned()));
        }
        if let Some(p) = profile {
            self.extra.insert("fargateProfileName".into(), Value::String(p.to_owned()));
        }
        self
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "ResourceNotFoundException" | "NotFoundException" => StatusCode::NOT_FOUND,
            "ResourceInUseException" => StatusCode::CONFLICT,
            code if crate::error::refuses_the_caller(code) => StatusCode::FORBIDDEN,
            "ServerException" => StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceUnavailableException" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Signature and authorisation refusals keep their code; whatever the model refuses is EKS's
/// `InvalidParameterException`.
impl From<ApiError> for EksApiError {
    fn from(e: ApiError) -> EksApiError {
        let code = match e.code {
            "SerializationException" | "InvalidParameterException" | "RequestEntityTooLargeException" => {
                "InvalidParameterException"
            }
            "ServerException" | "InternalFailure" => "ServerException",
            // `iam:PassRole` refused is still EKS's answer, in EKS's words.
            "AccessDenied" => "AccessDeniedException",
            other => other,
        };
        EksApiError::new(code, e.message)
    }
}

impl From<EksError> for EksApiError {
    fn from(e: EksError) -> EksApiError {
        let message = e.to_string();
        match e {
            EksError::ClusterNotFound(name) => {
                EksApiError::new("ResourceNotFoundException", message).about(Some(&name), None)
            }
            EksError::ProfileNotFound(name) => {
                EksApiError::new("ResourceNotFoundException", message).about(None, Some(&name))
            }
            EksError::InUse(_) => EksApiError::new("ResourceInUseException", message),
            EksError::InvalidParameter(_) => EksApiError::invalid_parameter(message),
            EksError::InvalidRequest(_) => EksApiError::new("InvalidRequestException", message),
            EksError::LimitExceeded(_) => EksApiError::new("ResourceLimitExceededException", message),
            EksError::BadTagRequest(_) => EksApiError::new("BadRequestException", message),
            EksError::TagTargetNotFound(_) => EksApiError::new("NotFoundException", message),
            EksError::Plane { .. } => EksApiError::new("ServerException", message),
            EksError::Store(flotilla_store::StoreError::Unavailable { .. }) => EksApiError::new(
                "ServiceUnavailableException",
                format!("The state store is unavailable; retry once it is back: {e}"),
            ),
            EksError::Store(_) | EksError::Corrupt { .. } | EksError::Vpc(_) => {
                let ApiError { code, message } = crate::error::internal("ServerException", "eks", &e);
                EksApiError::new(code, message)
            }
        }
    }
}

impl IntoResponse for EksApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"message": self.message});
        if let Value::Object(map) = &mut body {
            map.extend(self.extra.clone());
        }
        let mut response = (self.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(self.code) {
            headers.insert("x-amzn-errortype", v);
        }
        response
    }
}

/// EKS's code and message for `e`, for Flotilla's own operations on EKS records
/// (`RegisterCluster`), which answer in the JSON 1.1 envelope.
pub(crate) fn api_error(e: EksError) -> ApiError {
    let e = EksApiError::from(e);
    ApiError::new(e.code, e.message)
}
