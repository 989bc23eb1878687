//! AWS JSON 1.1 errors: `{"__type": CODE, "message": ...}` with HTTP 400, or 500 for an
//! internal failure. This is the one place the domain errors of every JSON service (ECS,
//! CloudWatch Logs, Cloud Map, SSM, Secrets Manager, ACM, KMS) become AWS error codes; the Query protocol
//! (EC2) has its own one place, `ec2/error.rs`.

use std::fmt::Debug;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_acm::AcmError;
use flotilla_control::ControlError;
use flotilla_discovery::DiscoveryError;
use flotilla_kms::KmsError;
use flotilla_logs::LogError;
use flotilla_secrets::SecretsError;
use flotilla_store::StoreError;

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
            "ServerException" | "InternalFailure" | "KMSInternalException" => StatusCode::INTERNAL_SERVER_ERROR,
            "MissingAuthenticationTokenException"
            | "AccessDeniedException"
            | "AccessDenied"
            | "UnauthorizedOperation" => StatusCode::FORBIDDEN,
            "RequestEntityTooLargeException" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Whether `code` refuses who sent a request (signature, credentials, permission): HTTP 403 in
/// every REST-JSON service's model.
pub(crate) fn refuses_the_caller(code: &str) -> bool {
    matches!(
        code,
        "MissingAuthenticationTokenException"
            | "AccessDeniedException"
            | "IncompleteSignature"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
    )
}

/// A failure on our side under the service's own `code`: logged once here, with its cause
/// (`what` says where it happened); the client learns no internals.
pub(crate) fn internal(code: &'static str, what: &'static str, e: &dyn Debug) -> ApiError {
    tracing::error!(error = ?e, "request failed inside {what}");
    ApiError::new(code, "The server failed to handle the request; it has been logged. Retry it.")
}

/// The store cannot answer (etcd without a quorum): not a bug to hide behind "it has been
/// logged" but an outage for the operator to fix, so the client gets the store's own
/// explanation, which says what to check, under the service's internal code.
pub(crate) fn store_unavailable(code: &'static str, e: &StoreError) -> ApiError {
    tracing::warn!(error = %e, "request failed: the store is unavailable");
    ApiError::new(code, format!("The state store is unavailable; retry once it is back: {e}"))
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
            ControlError::ServiceNotFound => ApiError::new("ServiceNotFoundException", e.to_string()),
            ControlError::ServiceNotActive => ApiError::new("ServiceNotActiveException", e.to_string()),
            ControlError::ServiceDeploymentNotFound { .. } => {
                ApiError::new("ServiceDeploymentNotFoundException", e.to_string())
            }
            ControlError::NamespaceNotFound { .. } => ApiError::new("NamespaceNotFoundException", e.to_string()),
            ControlError::Conflict(m) => ApiError::new("ConflictException", m),
            ControlError::Unsupported(m) => ApiError::new("UnsupportedFeatureException", m),
            ControlError::Store(ref s @ StoreError::Unavailable { .. }) => store_unavailable("ServerException", s),
            ControlError::Store(_) | ControlError::CorruptRecord { .. } => {
                internal("ServerException", "the control plane", &e)
            }
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        let code = match &e {
            LogError::GroupNotFound { .. } | LogError::StreamNotFound { .. } => "ResourceNotFoundException",
            LogError::GroupExists { .. } | LogError::StreamExists { .. } => "ResourceAlreadyExistsException",
            LogError::InvalidParameter(_) => "InvalidParameterException",
            LogError::DeletionProtected { .. } => "ValidationException",
            LogError::Open { .. } | LogError::Backend { .. } | LogError::Corrupt { .. } | LogError::Closed => {
                return internal("ServerException", "the log store", &e);
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<DiscoveryError> for ApiError {
    fn from(e: DiscoveryError) -> ApiError {
        let code = match &e {
            DiscoveryError::InvalidInput(_) => "InvalidInput",
            DiscoveryError::NamespaceNotFound { .. } => "NamespaceNotFound",
            DiscoveryError::ServiceNotFound { .. } => "ServiceNotFound",
            DiscoveryError::InstanceNotFound { .. } => "InstanceNotFound",
            DiscoveryError::OperationNotFound { .. } => "OperationNotFound",
            DiscoveryError::ResourceNotFound { .. } => "ResourceNotFoundException",
            DiscoveryError::NamespaceAlreadyExists { .. } => "NamespaceAlreadyExists",
            DiscoveryError::ServiceAlreadyExists { .. } => "ServiceAlreadyExists",
            DiscoveryError::ResourceInUse(_) => "ResourceInUse",
            DiscoveryError::DuplicateRequest { .. } => "DuplicateRequest",
            DiscoveryError::CustomHealthNotFound { .. } => "CustomHealthNotFound",
            DiscoveryError::Store(s @ StoreError::Unavailable { .. }) => {
                return store_unavailable("InternalFailure", s);
            }
            DiscoveryError::Store(_) | DiscoveryError::CorruptRecord { .. } => {
                return internal("InternalFailure", "service discovery", &e);
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// A KMS failure behind another service's operation: the store's own troubles are that
/// service's internal error (`internal_code`), the rest its `code`.
fn kms_behind(code: &'static str, internal_code: &'static str, e: &KmsError) -> ApiError {
    match e {
        KmsError::Store(s @ StoreError::Unavailable { .. }) => store_unavailable(internal_code, s),
        KmsError::Store(_) | KmsError::Corrupt { .. } | KmsError::KeyFile { .. } | KmsError::WrongMasterKey { .. } => {
            internal(internal_code, "KMS", e)
        }
        _ => ApiError::new(code, e.to_string()),
    }
}

/// SSM Parameter Store's codes for the secrets store's errors.
pub(crate) fn ssm_error(e: SecretsError) -> ApiError {
    let code = match &e {
        SecretsError::Encryption(k) | SecretsError::Decryption(k) => {
            return kms_behind("InvalidKeyId", "InternalServerError", k);
        }
        SecretsError::Invalid(_) | SecretsError::InvalidRequest(_) => "ValidationException",
        SecretsError::ParameterNotFound { .. } => "ParameterNotFound",
        SecretsError::ParameterAlreadyExists { .. } => "ParameterAlreadyExists",
        SecretsError::SecretNotFound { .. } | SecretsError::SecretAlreadyExists { .. } => "ValidationException",
        SecretsError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable("InternalServerError", s),
        SecretsError::Store(_) | SecretsError::Corrupt { .. } => {
            return internal("InternalServerError", "the secrets store", &e);
        }
    };
    ApiError::new(code, e.to_string())
}

/// Secrets Manager's codes for the same errors.
pub(crate) fn secretsmanager_error(e: SecretsError) -> ApiError {
    let code = match &e {
        SecretsError::Encryption(k) => return kms_behind("EncryptionFailure", "InternalServiceError", k),
        SecretsError::Decryption(k) => return kms_behind("DecryptionFailure", "InternalServiceError", k),
        SecretsError::Invalid(_) => "InvalidParameterException",
        SecretsError::InvalidRequest(_) => "InvalidRequestException",
        SecretsError::SecretNotFound { .. } | SecretsError::ParameterNotFound { .. } => "ResourceNotFoundException",
        SecretsError::SecretAlreadyExists { .. } | SecretsError::ParameterAlreadyExists { .. } => {
            "ResourceExistsException"
        }
        SecretsError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable("InternalServiceError", s),
        SecretsError::Store(_) | SecretsError::Corrupt { .. } => {
            return internal("InternalServiceError", "the secrets store", &e);
        }
    };
    ApiError::new(code, e.to_string())
}

impl From<AcmError> for ApiError {
    fn from(e: AcmError) -> ApiError {
        let code = match &e {
            AcmError::Validation(_) => "ValidationException",
            AcmError::NotFound { .. } => "ResourceNotFoundException",
            AcmError::InvalidArn { .. } => "InvalidArnException",
            AcmError::InUse { .. } => "ResourceInUseException",
            AcmError::InvalidTag(_) => "InvalidTagException",
            AcmError::TooManyTags => "TooManyTagsException",
            AcmError::InvalidParameter(_) => "InvalidParameterException",
            AcmError::Contended { .. } => "ConflictException",
            AcmError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable("InternalFailure", s),
            AcmError::Store(_) | AcmError::Corrupt { .. } | AcmError::Users(_) => {
                return internal("InternalFailure", "certificate manager", &e);
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> ApiError {
        let code = match &e {
            KmsError::Validation(_) => "ValidationException",
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::Unsupported(_) => "UnsupportedOperationException",
            KmsError::Store(_)
            | KmsError::Corrupt { .. }
            | KmsError::KeyFile { .. }
            | KmsError::WrongMasterKey { .. } => {
                return kms_behind("KMSInternalException", "KMSInternalException", &e);
            }
        };
        ApiError::new(code, e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_store_is_a_server_exception_that_says_what_to_check() {
        let e = ControlError::Store(StoreError::Unavailable {
            operation: "txn",
            reason: "etcd at h1:2379 did not answer within 5s; check the members (no quorum)".into(),
        });
        let api = ApiError::from(e);
        assert_eq!(api.code, "ServerException");
        assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(api.message.contains("unavailable") && api.message.contains("no quorum"), "{}", api.message);
        // Other store failures stay opaque.
        let api = ApiError::from(ControlError::Store(StoreError::Closed));
        assert!(!api.message.contains("shut down"), "{}", api.message);
    }
}
