//! What can go wrong in the log store. The `api` crate maps these to CloudWatch Logs error codes.

/// A log store failure. The messages of the domain variants are the ones CloudWatch Logs sends.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("The specified log group does not exist: {group}")]
    GroupNotFound { group: String },
    #[error("The specified log stream does not exist: {stream} in log group {group}")]
    StreamNotFound { group: String, stream: String },
    #[error("The specified log group already exists: {group}")]
    GroupExists { group: String },
    #[error("The specified log stream already exists: {stream} in log group {group}")]
    StreamExists { group: String, stream: String },
    #[error("Log group {group} has deletion protection enabled; turn it off before deleting the group.")]
    DeletionProtected { group: String },
    /// A request the caller can fix; the text names the offending parameter.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("cannot open the log store at {path}")]
    Open { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("log store backend failed during {operation}")]
    Backend { operation: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("log store record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the log store is shut down")]
    Closed,
}

impl LogError {
    pub(crate) fn invalid(message: impl Into<String>) -> LogError {
        LogError::InvalidParameter(message.into())
    }

    /// True for failures of the storage itself (as opposed to refusals of one request).
    pub fn is_internal(&self) -> bool {
        matches!(self, LogError::Open { .. } | LogError::Backend { .. } | LogError::Corrupt { .. } | LogError::Closed)
    }

    /// A copy for each write of a batch that failed as a whole.
    pub(crate) fn for_batch(&self) -> LogError {
        match self {
            LogError::Closed => LogError::Closed,
            other => LogError::Backend { operation: "commit", source: other.to_string().into() },
        }
    }
}

/// Wraps a redb failure (any of its error types) with the operation that hit it.
pub(crate) fn backend<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> LogError {
    move |e| LogError::Backend { operation, source: Box::new(e.into()) }
}
