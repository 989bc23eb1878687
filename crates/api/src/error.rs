//! AWS-style errors: `{"__type": CODE, "message": ...}` with HTTP 400, or 500 for
//! `ServerException`. This is the one place domain errors become AWS error codes.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_control::ControlError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new("SerializationException", message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new("InvalidParameterException", message)
    }

    pub fn client(message: impl Into<String>) -> ApiError {
        ApiError::new("ClientException", message)
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            "ServerException" | "InternalFailure" => StatusCode::INTERNAL_SERVER_ERROR,
            "MissingAuthenticationTokenException" | "AccessDeniedException" => StatusCode::FORBIDDEN,
            "RequestEntityTooLargeException" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Client(m) => ApiError::client(m),
            ControlError::InvalidParameter(m) => ApiError::invalid_parameter(m),
            ControlError::ClusterNotFound { .. } => ApiError::new("ClusterNotFoundException", e.to_string()),
            ControlError::ResourceNotFound { .. } => ApiError::new("ResourceNotFoundException", e.to_string()),
            ControlError::ClusterContainsServices { .. } => {
                ApiError::new("ClusterContainsServicesException", e.to_string())
            }
            ControlError::ClusterContainsTasks { .. } => ApiError::new("ClusterContainsTasksException", e.to_string()),
            ControlError::Store(_) | ControlError::CorruptRecord { .. } => {
                // Logged once here, with its cause; the client gets no internals.
                tracing::error!(error = ?e, "request failed inside the control plane");
                ApiError::new(
                    "ServerException",
                    "The server failed to handle the request; it has been logged. Retry it.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"__type": self.code, "message": self.message}).to_string();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        if let Ok(v) = HeaderValue::from_str(self.code) {
            headers.insert("x-amzn-errortype", v);
        }
        response
    }
}
