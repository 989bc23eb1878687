//! A task's role credentials, for its host's credential endpoint: the task role is the one
//! the task was started with (RunTask's `overrides.taskRoleArn`, else its definition's), assumed
//! by ECS tasks' service principal with the task id as the session name, as ECS does.

use flotilla_host::{HostApiError, RoleCredentials};
use flotilla_iam::IamError;
use flotilla_types::Timestamp;
use flotilla_types::task::TaskStatus;

use super::local::LocalHostApi;
use crate::record::decode;
use crate::task::TaskRecord;
use crate::task_roles::{ECS_TASKS, role_arn, unable_to_assume};

/// How long a task's credentials last: ECS hands out six hours, and its agent (like ours)
/// fetches fresh ones well before they run out.
pub const TASK_CREDENTIALS_SECS: u32 = 6 * 3600;

impl LocalHostApi {
    pub(super) async fn role_credentials_of(&self, task_arn: &str) -> Result<RoleCredentials, HostApiError> {
        let key = self.control.task_key_of(task_arn)?;
        let kv = self.control.store.get_stale(&key).await.map_err(|e| unavailable(e.to_string()))?;
        let record: TaskRecord = decode(&kv.ok_or_else(|| HostApiError::NotFound { what: task_arn.to_owned() })?)?;
        if record.task.last_status == TaskStatus::Stopped {
            return Err(refused(format!("task {task_arn} is stopped")));
        }
        let role = match record.task.overrides.task_role_arn.clone().filter(|r| !r.is_empty()) {
            Some(role) => role,
            None => {
                let (definition, _) = self.control.describe_task_definition(&record.task.task_definition_arn).await?;
                let role = definition.task_role_arn.filter(|r| !r.is_empty());
                role.ok_or_else(|| refused(format!("task {task_arn} has no task role")))?
            }
        };
        // ECS takes a role's name as well as its ARN.
        let role = role_arn(&self.control.identity().account, &role);
        let iam = self.control.iam().ok_or_else(|| refused("this server serves no task role credentials".into()))?;
        let creds = iam
            .assume_role_for_service(&role, ECS_TASKS, record.task.id(), TASK_CREDENTIALS_SECS)
            .await
            .map_err(|e| match e {
                IamError::Store(_) | IamError::Corrupt { .. } => unavailable(e.to_string()),
                other => refused(format!("{} ({other})", unable_to_assume(&role))),
            })?;
        Ok(RoleCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: creds.session_token,
            expiration: Timestamp(creds.expiration * 1000),
            role_arn: role,
        })
    }
}

fn refused(reason: String) -> HostApiError {
    HostApiError::Refused { reason }
}

fn unavailable(reason: String) -> HostApiError {
    HostApiError::Unavailable { reason }
}
