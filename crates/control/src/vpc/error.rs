//! Why a networking request failed. `api::ec2` maps each variant to one EC2 error code.

use flotilla_store::StoreError;

use crate::ControlError;

/// The kinds of networking resource, for "not found" and "malformed id" errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkResource {
    Vpc,
    Subnet,
    SecurityGroup,
    SecurityGroupRule,
    NetworkInterface,
}

impl NetworkResource {
    /// The id prefix AWS uses for this kind of resource.
    pub fn id_prefix(self) -> &'static str {
        match self {
            NetworkResource::Vpc => "vpc",
            NetworkResource::Subnet => "subnet",
            NetworkResource::SecurityGroup => "sg",
            NetworkResource::SecurityGroupRule => "sgr",
            NetworkResource::NetworkInterface => "eni",
        }
    }

    fn not_found(self, id: &str) -> String {
        match self {
            NetworkResource::Vpc => format!("The vpc ID '{id}' does not exist"),
            NetworkResource::Subnet => format!("The subnet ID '{id}' does not exist"),
            NetworkResource::SecurityGroup => format!("The security group '{id}' does not exist"),
            NetworkResource::SecurityGroupRule => format!("The security group rule ID '{id}' does not exist"),
            NetworkResource::NetworkInterface => format!("The networkInterface ID '{id}' does not exist"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{}", resource.not_found(id))]
    NotFound { resource: NetworkResource, id: String },
    #[error("Invalid id: \"{id}\" (expecting \"{}-...\")", resource.id_prefix())]
    MalformedId { resource: NetworkResource, id: String },
    #[error("The security group '{name}' does not exist in {}VPC '{vpc_id}'", if *default_vpc { "default " } else { "" })]
    GroupNameNotFound { name: String, vpc_id: String, default_vpc: bool },
    #[error("No default VPC for this account: name security groups by id (GroupId), or create resources in a VPC.")]
    NoDefaultVpc,
    #[error("The CIDR '{cidr}' is invalid: {reason}")]
    VpcRange { cidr: String, reason: String },
    #[error("The CIDR '{cidr}' is invalid: {reason}")]
    SubnetRange { cidr: String, reason: String },
    #[error("The CIDR '{cidr}' conflicts with another subnet ({subnet_id}, {existing})")]
    SubnetConflict { cidr: String, subnet_id: String, existing: String },
    #[error("The security group '{name}' already exists for VPC '{vpc_id}'")]
    GroupDuplicate { name: String, vpc_id: String },
    #[error("The security group name '{name}' is reserved: every VPC has its own 'default' group.")]
    GroupReserved { name: String },
    #[error("The {resource} '{id}' has dependencies and cannot be deleted: {reason}")]
    DependencyViolation { resource: &'static str, id: String, reason: String },
    #[error("the specified group: \"{group_id}\" name: \"default\" cannot be deleted by a user")]
    CannotDelete { group_id: String },
    #[error("the specified rule \"{rule}\" already exists")]
    PermissionDuplicate { rule: String },
    #[error("{0}")]
    PermissionMalformed(String),
    #[error("The specified rule does not exist in this security group.")]
    PermissionNotFound,
    #[error(
        "There are not enough free addresses in subnet '{subnet_id}' to satisfy the requested number of instances."
    )]
    InsufficientAddresses { subnet_id: String },
    #[error(
        "The public IP pool {pool} has no free address left; stop tasks with public IPs or give Flotilla a larger pool."
    )]
    PublicPoolExhausted { pool: String },
    /// A parameter value AWS would refuse (EC2 `InvalidParameterValue`).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// Values that are fine alone but not together (EC2 `InvalidParameter`).
    #[error("{0}")]
    InvalidParameter(String),
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    CorruptRecord { key: String, source: serde_json::Error },
}

impl NetworkError {
    pub(crate) fn not_found(resource: NetworkResource, id: impl Into<String>) -> NetworkError {
        NetworkError::NotFound { resource, id: id.into() }
    }

    pub(crate) fn invalid_value(message: impl Into<String>) -> NetworkError {
        NetworkError::InvalidParameterValue(message.into())
    }

    pub(crate) fn malformed_permission(message: impl Into<String>) -> NetworkError {
        NetworkError::PermissionMalformed(message.into())
    }
}

/// For callers on the ECS side (RunTask, the agent): store failures stay store failures,
/// everything else is a parameter the caller got wrong.
impl From<NetworkError> for ControlError {
    fn from(e: NetworkError) -> ControlError {
        match e {
            NetworkError::Store(source) => ControlError::Store(source),
            NetworkError::CorruptRecord { key, source } => ControlError::CorruptRecord { key, source },
            other => ControlError::InvalidParameter(other.to_string()),
        }
    }
}
