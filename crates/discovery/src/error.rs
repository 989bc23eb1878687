//! What can go wrong in service discovery, in Cloud Map's own terms; `api` maps each variant to
//! its AWS error code in one place.

use flotilla_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("Namespace not found: {id}")]
    NamespaceNotFound { id: String },
    #[error("Service not found: {id}")]
    ServiceNotFound { id: String },
    #[error("Instance not found: {instance_id} in service {service_id}")]
    InstanceNotFound { service_id: String, instance_id: String },
    #[error("Operation not found: {id}")]
    OperationNotFound { id: String },
    #[error("Resource not found: {arn}")]
    ResourceNotFound { arn: String },
    #[error("Namespace {name} already exists as {namespace_id}")]
    NamespaceAlreadyExists { name: String, namespace_id: String, creator_request_id: Option<String> },
    #[error("Service {name} already exists in this namespace as {service_id}")]
    ServiceAlreadyExists { name: String, service_id: String, creator_request_id: Option<String> },
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{message} (operation {operation_id})")]
    DuplicateRequest { operation_id: String, message: String },
    #[error("Service {service_id} has no custom health check (HealthCheckCustomConfig)")]
    CustomHealthNotFound { service_id: String },
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("store record {key} is corrupt")]
    CorruptRecord { key: String, source: serde_json::Error },
}

pub type Result<T, E = DiscoveryError> = std::result::Result<T, E>;
