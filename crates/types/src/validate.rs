//! Fargate validation of task definitions.
//!
//! [`validate_for_fargate`] is the one gate a task definition passes before Flotilla stores it.
//! It rejects anything Fargate could not run, and fills in what AWS fills in, so that what is
//! stored is exactly what `DescribeTaskDefinition` later returns and what the agent runs.
//!
//! Checks run task-level first, then container by container in order (rules spanning
//! containers, such as duplicate ports or the CPU total, fire on the container that breaks
//! them), then the whole-task rules (an essential container exists, no dependency cycles).
//! Only the first failure is reported, as ECS does.
//!
//! Normalisation on success:
//! - task `cpu` and `memory` become decimal strings (`"1 vCPU"` -> `"1024"`, `"2 GB"` ->
//!   `"2048"`);
//! - each container gets `essential: true` and `cpu: 0` when unset, empty `portMappings`,
//!   `environment`, `mountPoints`, `volumesFrom` and `systemControls` when absent;
//! - each port mapping gets `hostPort = containerPort` (the awsvpc rule) and `protocol: "tcp"`
//!   when unset.
//!
//! `requiresCompatibilities` is kept as given.

mod container;
mod ports;
mod start_order;
mod task;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

use crate::size::TaskSize;
use crate::task_definition::TaskDefinitionSpec;

/// A rejected task definition: which field, and why. `field` is a path such as
/// `containerDefinitions[1].healthCheck.interval`; `message` already names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// `detail` says what is allowed. The message leads with the field because the ECS error
    /// text is all a user of the AWS CLI sees.
    pub fn new(field: impl Into<String>, detail: impl fmt::Display) -> FieldError {
        let field = field.into();
        let message = format!("{field}: {detail}");
        FieldError { field, message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

type Check = Result<(), FieldError>;

/// Checks `spec` against every Fargate rule and returns it normalised (see the module docs).
pub fn validate_for_fargate(mut spec: TaskDefinitionSpec) -> Result<TaskDefinitionSpec, FieldError> {
    let size = task::check(&spec)?;
    container::check_all(&spec, size)?;
    normalise(&mut spec, size);
    Ok(spec)
}

/// Family, container and volume names share one ECS rule.
fn check_name(field: &str, value: Option<&str>) -> Check {
    let Some(value) = value else {
        return Err(FieldError::new(field, "is required"));
    };
    const RULE: &str = "must be 1 to 255 letters, digits, hyphens or underscores";
    if value.len() > 255 {
        return Err(FieldError::new(field, format!("{RULE}, got {} characters", value.len())));
    }
    let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(FieldError::new(field, format!("{RULE}, got {value:?}"))) }
}

fn check_range(field: &str, value: i32, min: i32, max: i32, unit: &str) -> Check {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("must be between {min} and {max}{unit}, got {value}")))
    }
}

fn normalise(spec: &mut TaskDefinitionSpec, size: TaskSize) {
    spec.cpu = Some(size.cpu.to_string());
    spec.memory = Some(size.memory.to_string());
    for c in &mut spec.container_definitions {
        c.essential.get_or_insert(true);
        c.cpu.get_or_insert(0);
        for mapping in c.port_mappings.get_or_insert_with(Vec::new) {
            // A port range has no single host port; ECS reports its hostPortRange per task.
            if let Some(port) = mapping.container_port {
                mapping.host_port.get_or_insert(port);
            }
            mapping.protocol.get_or_insert_with(|| "tcp".to_owned());
        }
        c.environment.get_or_insert_with(Vec::new);
        c.mount_points.get_or_insert_with(Vec::new);
        c.volumes_from.get_or_insert_with(Vec::new);
        c.other.entry("systemControls").or_insert_with(|| Value::Array(Vec::new()));
    }
}
