//! ECS Exec checks: whether a command may be run in a task's container, and where.
//!
//! The session itself (tokens, the data channel, the process) is `flotilla-exec`'s; the control
//! plane only answers from its records, as ECS answers ExecuteCommand before any agent is asked.

use flotilla_types::task::{ContainerStatus, DesiredStatus, TaskStatus};
use serde_json::Value;

use crate::record::{load, task_key};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// ECS's one answer for every task that cannot take a command now; it does not say which of
/// the reasons applies.
pub const EXEC_REFUSED: &str = "The execute command failed because execute command was not enabled when the task \
     was run or the execute command agent isn't running. Wait and try again or run a new task with execute command \
     enabled and try again.";

/// Where an accepted ExecuteCommand runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecPlacement {
    pub cluster_arn: String,
    pub task_arn: String,
    pub container_arn: String,
    pub container_name: String,
    /// The host that runs the task (the session asks its `ExecTarget`).
    pub host_id: String,
    /// The cluster's `configuration.executeCommandConfiguration`, as recorded.
    pub exec_configuration: Option<Value>,
    /// The container's `awslogs` group, for `logging: DEFAULT`.
    pub container_log_group: Option<String>,
}

impl Control {
    /// Checks an ExecuteCommand as ECS does and says where it runs: the task must have been
    /// started with `enableExecuteCommand`, be RUNNING (and not on its way out), and the
    /// container must exist and run; `container` may be left out when the task has one.
    pub async fn exec_placement(
        &self,
        cluster: Option<&str>,
        task: &str,
        container: Option<&str>,
    ) -> Result<ExecPlacement, ControlError> {
        let (cluster, _) = self.active_cluster(cluster).await?;
        let (c, id) = self.task_ref(&cluster.cluster_name, task)?;
        if c != cluster.cluster_name {
            return Err(ControlError::invalid(format!(
                "task: '{task}' is not a task of cluster {}.",
                cluster.cluster_name
            )));
        }
        let Some((record, _)) = load::<TaskRecord>(self.store.as_ref(), &task_key(&c, &id)).await? else {
            return Err(ControlError::invalid(format!("The referenced task was not found: {task}")));
        };
        let t = &record.task;
        let refused = || ControlError::invalid(EXEC_REFUSED);
        if !t.enable_execute_command
            || t.last_status != TaskStatus::Running
            || t.desired_status != DesiredStatus::Running
        {
            return Err(refused());
        }
        let chosen = match container {
            Some(name) => t.containers.iter().find(|k| k.name == name).ok_or_else(refused)?,
            None if t.containers.len() == 1 => &t.containers[0],
            None => {
                return Err(ControlError::invalid(
                    "container: required, because the task has more than one container.",
                ));
            }
        };
        if chosen.last_status != ContainerStatus::Running {
            return Err(refused());
        }
        let host_id = record.host_id.clone().ok_or_else(refused)?;
        let definition = self.describe_task_definition(&t.task_definition_arn).await.ok().map(|(d, _)| d);
        let container_log_group = definition.and_then(|d| {
            let def = d.container_definitions.into_iter().find(|k| k.name.as_deref() == Some(chosen.name.as_str()))?;
            let log = def.log_configuration?;
            if log.log_driver != "awslogs" {
                return None;
            }
            log.options?.get("awslogs-group").cloned()
        });
        Ok(ExecPlacement {
            cluster_arn: cluster.cluster_arn.clone(),
            task_arn: t.task_arn.clone(),
            container_arn: chosen.container_arn.clone(),
            container_name: chosen.name.clone(),
            host_id,
            exec_configuration: cluster
                .configuration
                .as_ref()
                .and_then(|c| c.get("executeCommandConfiguration"))
                .cloned(),
            container_log_group,
        })
    }
}
