//! The Query protocol's one place for errors: networking errors to EC2 error codes, EC2's
//! names for the signature errors the shared SigV4 check reports, and their HTTP statuses.

use axum::http::StatusCode;
use flotilla_control::{NetworkError, NetworkResource};
use flotilla_store::StoreError;

use crate::error::{ApiError, store_unavailable};

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        use NetworkResource as R;
        let code = match &e {
            NetworkError::NotFound { resource, .. } => match resource {
                R::Vpc => "InvalidVpcID.NotFound",
                R::Subnet => "InvalidSubnetID.NotFound",
                R::SecurityGroup => "InvalidGroup.NotFound",
                R::SecurityGroupRule => "InvalidSecurityGroupRuleId.NotFound",
                R::NetworkInterface => "InvalidNetworkInterfaceID.NotFound",
            },
            NetworkError::MalformedId { resource, .. } => match resource {
                R::Vpc => "InvalidVpcID.Malformed",
                R::Subnet => "InvalidSubnetID.Malformed",
                R::SecurityGroup => "InvalidGroupId.Malformed",
                R::SecurityGroupRule => "InvalidSecurityGroupRuleId.Malformed",
                R::NetworkInterface => "InvalidNetworkInterfaceID.Malformed",
            },
            NetworkError::GroupNameNotFound { .. } => "InvalidGroup.NotFound",
            NetworkError::NoDefaultVpc => "VPCIdNotSpecified",
            NetworkError::VpcRange { .. } => "InvalidVpc.Range",
            NetworkError::SubnetRange { .. } => "InvalidSubnet.Range",
            NetworkError::SubnetConflict { .. } => "InvalidSubnet.Conflict",
            NetworkError::GroupDuplicate { .. } => "InvalidGroup.Duplicate",
            NetworkError::GroupReserved { .. } => "InvalidGroup.Reserved",
            NetworkError::DependencyViolation { .. } => "DependencyViolation",
            NetworkError::CannotDelete { .. } => "CannotDelete",
            NetworkError::PermissionDuplicate { .. } => "InvalidPermission.Duplicate",
            NetworkError::PermissionMalformed(_) => "InvalidPermission.Malformed",
            NetworkError::PermissionNotFound => "InvalidPermission.NotFound",
            NetworkError::InsufficientAddresses { .. } => "InsufficientFreeAddressesInSubnet",
            NetworkError::PublicPoolExhausted { .. } => "AddressLimitExceeded",
            NetworkError::InvalidParameterValue(_) => "InvalidParameterValue",
            NetworkError::InvalidParameter(_) => "InvalidParameter",
            NetworkError::MissingParameter(_) => "MissingParameter",
            NetworkError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable(INTERNAL_ERROR, s),
            NetworkError::Store(_) | NetworkError::CorruptRecord { .. } => {
                // EC2's own wording for it.
                tracing::error!(error = ?e, "EC2 request failed inside the control plane");
                return ApiError::new(
                    INTERNAL_ERROR,
                    "An internal error has occurred; it has been logged. Retry the request.",
                );
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// EC2's code for a failure on our side.
pub(crate) const INTERNAL_ERROR: &str = "InternalError";

/// EC2 spells the shared SigV4 failures its own way.
pub(crate) fn ec2_code(e: ApiError) -> ApiError {
    let code = match e.code {
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "UnrecognizedClientException" => "AuthFailure",
        "ServerException" => INTERNAL_ERROR,
        _ => return e,
    };
    ApiError { code, ..e }
}

pub(crate) fn status(e: &ApiError) -> StatusCode {
    match e.code {
        INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        "AuthFailure" => StatusCode::UNAUTHORIZED,
        "SignatureDoesNotMatch" | "MissingAuthenticationToken" | "IncompleteSignature" => StatusCode::FORBIDDEN,
        _ => e.status(),
    }
}
