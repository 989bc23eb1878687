use flotilla_store::StoreError;

/// Why a control-plane request failed. The `api` crate maps each variant to one AWS error code.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is well-formed but not acceptable (AWS `ClientException`).
    #[error("{0}")]
    Client(String),
    /// A parameter has a value outside what is allowed (AWS `InvalidParameterException`).
    #[error("{0}")]
    InvalidParameter(String),
    #[error("Cluster not found.")]
    ClusterNotFound { cluster: String },
    #[error("The specified resource is not found: {arn}")]
    ResourceNotFound { arn: String },
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices { cluster: String },
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks { cluster: String },
    #[error("Service not found.")]
    ServiceNotFound,
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    #[error("The service deployment {arn} was not found.")]
    ServiceDeploymentNotFound { arn: String },
    #[error("Namespace {namespace} was not found.")]
    NamespaceNotFound { namespace: String },
    /// The request conflicts with the resource's state (AWS `ConflictException`).
    #[error("{0}")]
    Conflict(String),
    /// Valid for AWS but not served by Flotilla (AWS `UnsupportedFeatureException`).
    #[error("{0}")]
    Unsupported(String),
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    CorruptRecord { key: String, source: serde_json::Error },
}

impl ControlError {
    pub fn client(message: impl Into<String>) -> ControlError {
        ControlError::Client(message.into())
    }

    pub fn invalid(message: impl Into<String>) -> ControlError {
        ControlError::InvalidParameter(message.into())
    }
}
