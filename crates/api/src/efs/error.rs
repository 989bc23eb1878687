//! EFS's errors: `{"ErrorCode": ..., "Message": ...}` with `x-amzn-ErrorType` and the status
//! its model gives each code. The one place [`EfsError`] becomes an EFS code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_efs::EfsError;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

#[derive(Debug)]
pub(crate) struct EfsApiError {
    pub code: &'static str,
    pub message: String,
    /// Members some errors carry besides the message (`FileSystemId`, `AccessPointId`).
    pub extra: Map<String, Value>,
}

impl EfsApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> EfsApiError {
        EfsApiError { code, message: message.into(), extra: Map::new() }
    }

    pub fn bad_request(message: impl Into<String>) -> EfsApiError {
        EfsApiError::new("BadRequest", message)
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "FileSystemNotFound" | "MountTargetNotFound" | "AccessPointNotFound" => StatusCode::NOT_FOUND,
            "FileSystemAlreadyExists"
            | "FileSystemInUse"
            | "MountTargetConflict"
            | "AccessPointAlreadyExists"
            | "IncorrectFileSystemLifeCycleState" => StatusCode::CONFLICT,
            code if crate::error::refuses_the_caller(code) => StatusCode::FORBIDDEN,
            "InternalServerError" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Signature and model refusals keep their code when it is an authentication one; anything
/// the model refuses is EFS's `BadRequest`.
impl From<ApiError> for EfsApiError {
    fn from(e: ApiError) -> EfsApiError {
        let code = match e.code {
            "SerializationException" | "InvalidParameterException" | "RequestEntityTooLargeException" => "BadRequest",
            "ServerException" | "InternalFailure" => "InternalServerError",
            other => other,
        };
        EfsApiError::new(code, e.message)
    }
}

impl From<EfsError> for EfsApiError {
    fn from(e: EfsError) -> EfsApiError {
        let message = e.to_string();
        match e {
            EfsError::BadRequest(_) => EfsApiError::bad_request(message),
            EfsError::FileSystemNotFound { .. } => EfsApiError::new("FileSystemNotFound", message),
            EfsError::FileSystemAlreadyExists { id, .. } => {
                let mut err = EfsApiError::new("FileSystemAlreadyExists", message);
                err.extra.insert("FileSystemId".into(), Value::String(id));
                err
            }
            EfsError::FileSystemInUse { .. } => EfsApiError::new("FileSystemInUse", message),
            EfsError::MountTargetNotFound { .. } => EfsApiError::new("MountTargetNotFound", message),
            EfsError::MountTargetConflict(_) => EfsApiError::new("MountTargetConflict", message),
            EfsError::AccessPointNotFound { .. } => EfsApiError::new("AccessPointNotFound", message),
            EfsError::AccessPointAlreadyExists { id, .. } => {
                let mut err = EfsApiError::new("AccessPointAlreadyExists", message);
                err.extra.insert("AccessPointId".into(), Value::String(id));
                err
            }
            EfsError::SubnetNotFound { .. } => EfsApiError::new("SubnetNotFound", message),
            EfsError::SecurityGroupNotFound { .. } => EfsApiError::new("SecurityGroupNotFound", message),
            EfsError::IncorrectFileSystemLifeCycleState { .. } => {
                EfsApiError::new("IncorrectFileSystemLifeCycleState", message)
            }
            EfsError::Contended { .. } => EfsApiError::new("InternalServerError", message),
            EfsError::Store(flotilla_store::StoreError::Unavailable { .. }) => EfsApiError::new(
                "InternalServerError",
                format!("The state store is unavailable; retry once it is back: {e}"),
            ),
            EfsError::Store(_) | EfsError::Corrupt { .. } | EfsError::Internal(_) => {
                let ApiError { code, message } = crate::error::internal("InternalServerError", "efs", &e);
                EfsApiError::new(code, message)
            }
        }
    }
}

impl IntoResponse for EfsApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"ErrorCode": self.code, "Message": self.message});
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
