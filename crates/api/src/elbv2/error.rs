//! The one place ELB's domain errors become ELB's error codes. Every code ELB models answers
//! HTTP 400 (the Query protocol's writer takes statuses from the model); a failure on our side
//! is `InternalFailure`, logged once here.

use flotilla_elb::ElbError;
use flotilla_store::StoreError;

use crate::error::{ApiError, internal, store_unavailable};

impl From<ElbError> for ApiError {
    fn from(e: ElbError) -> ApiError {
        let code = match &e {
            ElbError::Validation(_) => "ValidationError",
            ElbError::LoadBalancerNotFound { .. } => "LoadBalancerNotFound",
            ElbError::DuplicateLoadBalancerName { .. } => "DuplicateLoadBalancerName",
            ElbError::TargetGroupNotFound { .. } => "TargetGroupNotFound",
            ElbError::DuplicateTargetGroupName { .. } => "DuplicateTargetGroupName",
            ElbError::ListenerNotFound { .. } => "ListenerNotFound",
            ElbError::DuplicateListener { .. } => "DuplicateListener",
            ElbError::RuleNotFound { .. } => "RuleNotFound",
            ElbError::PriorityInUse { .. } => "PriorityInUse",
            ElbError::ResourceInUse(_) => "ResourceInUse",
            ElbError::InvalidTarget(_) => "InvalidTarget",
            ElbError::CertificateNotFound { .. } => "CertificateNotFound",
            ElbError::InvalidConfigurationRequest(_) => "InvalidConfigurationRequest",
            ElbError::InvalidLoadBalancerAction(_) => "InvalidLoadBalancerAction",
            ElbError::IncompatibleProtocols(_) => "IncompatibleProtocols",
            ElbError::UnsupportedProtocol(_) => "UnsupportedProtocol",
            ElbError::TargetGroupAssociationLimit { .. } => "TargetGroupAssociationLimit",
            ElbError::TooManyTargets { .. } => "TooManyTargets",
            ElbError::TooManyTags { .. } => "TooManyTags",
            ElbError::DuplicateTagKeys { .. } => "DuplicateTagKeys",
            ElbError::OperationNotPermitted(_) => "OperationNotPermitted",
            ElbError::SubnetNotFound { .. } => "SubnetNotFound",
            ElbError::InvalidSubnet(_) => "InvalidSubnet",
            ElbError::InvalidSecurityGroup(_) => "InvalidSecurityGroup",
            ElbError::Store(s @ StoreError::Unavailable { .. }) => return store_unavailable(INTERNAL_FAILURE, s),
            ElbError::Internal(_) | ElbError::Store(_) | ElbError::Corrupt { .. } => {
                return internal(INTERNAL_FAILURE, "Elastic Load Balancing", &e);
            }
        };
        // Not-found messages name what was asked for, so a request of several says which.
        let message = match &e {
            ElbError::LoadBalancerNotFound { name } => format!("{e}: '{name}'"),
            ElbError::TargetGroupNotFound { name } => format!("{e}: '{name}'"),
            ElbError::ListenerNotFound { arn } => format!("{e}: '{arn}'"),
            ElbError::RuleNotFound { arn } => format!("{e}: '{arn}'"),
            _ => e.to_string(),
        };
        ApiError::new(code, message)
    }
}

/// The Query protocol's code for a failure on our side.
pub(crate) const INTERNAL_FAILURE: &str = "InternalFailure";
