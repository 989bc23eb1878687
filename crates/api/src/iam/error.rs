//! The one place IAM's domain errors become IAM's and STS's error codes.

use flotilla_iam::IamError;
use flotilla_store::StoreError;

use super::SERVICE_FAILURE;
use crate::error::{ApiError, internal, store_unavailable};

impl From<IamError> for ApiError {
    fn from(e: IamError) -> ApiError {
        let code = match &e {
            IamError::NoSuchEntity(_) => "NoSuchEntity",
            IamError::EntityAlreadyExists(_) => "EntityAlreadyExists",
            IamError::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            IamError::DeleteConflict(_) => "DeleteConflict",
            IamError::LimitExceeded(_) => "LimitExceeded",
            // IAM words constraint violations of a member as `ValidationError`, the rest of
            // bad input as `InvalidInput`.
            IamError::InvalidInput(m) if m.contains("validation error") => "ValidationError",
            IamError::InvalidInput(_) => "InvalidInput",
            IamError::AccessDenied(_) => "AccessDenied",
            IamError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable(SERVICE_FAILURE, s),
            IamError::Store(_) | IamError::Corrupt { .. } => return internal(SERVICE_FAILURE, "IAM", &e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// The codes that differ between the two services and the rest of Flotilla: an expired token
/// is `ExpiredToken` on the Query protocol, and STS's failure on our side is `InternalFailure`.
pub(super) fn wire_code(e: ApiError, service: &str) -> ApiError {
    let code = match e.code {
        "ExpiredTokenException" => "ExpiredToken",
        SERVICE_FAILURE if service == super::STS_SIGNING_NAME => super::INTERNAL_FAILURE,
        "ServerException" if service == super::IAM_SIGNING_NAME => SERVICE_FAILURE,
        // The JSON services' access-denied code, as `authz` may word it.
        "AccessDeniedException" => "AccessDenied",
        _ => return e,
    };
    ApiError { code, ..e }
}
