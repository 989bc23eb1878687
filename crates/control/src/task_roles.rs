//! A task's IAM roles as the control plane knows them: that the roles a task definition names
//! exist and trust ECS tasks (checked at RunTask, CreateService and UpdateService, in ECS's
//! words), Fargate's rules for task definitions without an execution role (only with
//! `--require-roles`), and the execution role's say over what the platform does for a task
//! ([`ExecutionRole::allow`]: its secrets, its registry login, its `awslogs`).
//!
//! Without IAM attached, or for a task definition that names no execution role, the platform
//! acts for the account, as it always did.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_iam::{Decision, Iam, IamError, Policy, PolicyKind, RequestContext, RequestPrincipal};
use flotilla_types::task_definition::ContainerDefinition;

use crate::{Control, ControlError};

/// The service principal a task's roles must trust (`sts:AssumeRole`).
pub const ECS_TASKS: &str = "ecs-tasks.amazonaws.com";

/// Fargate's refusals for a task definition that needs an execution role and names none.
pub const SECRETS_NEED_ROLE: &str =
    "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.";
pub const REGISTRY_AUTH_NEEDS_ROLE: &str =
    "Private repository authentication requires that the task definition specify a value for executionRoleArn.";
pub const AWSLOGS_NEEDS_ROLE: &str =
    "Fargate requires task definition to have execution role ARN to support log driver awslogs.";

/// ECS's refusal of a role that does not exist or does not trust `ecs-tasks.amazonaws.com`.
pub fn unable_to_assume(role: &str) -> String {
    format!(
        "ECS was unable to assume the role '{role}' that was provided for this task. Please verify that the role \
         being passed has the proper trust relationship and permissions and that your IAM user has permissions to \
         pass this role."
    )
}

/// A role as a task definition names it (an ARN, or the short name ECS also takes) to its ARN.
pub fn role_arn(account: &str, role: &str) -> String {
    if role.starts_with("arn:") { role.to_owned() } else { format!("arn:aws:iam::{account}:role/{role}") }
}

/// A role name as IAM allows it: 1 to 64 of letters, digits and `+=,.@_-`.
fn is_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// ECS's refusal, at RegisterTaskDefinition, of a role that is neither a role name nor an IAM
/// role's ARN (`arn:aws:iam::ACCOUNT:role/[PATH/]NAME`).
pub(crate) fn check_role_form(role: Option<&str>) -> Result<(), ControlError> {
    let Some(role) = role.filter(|r| !r.is_empty()) else { return Ok(()) };
    let valid = match role.strip_prefix("arn:aws:iam::") {
        Some(rest) => rest.split_once(":role/").is_some_and(|(account, path)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && is_role_name(role_name(path))
        }),
        None => is_role_name(role),
    };
    if valid { Ok(()) } else { Err(ControlError::client("Role is not valid")) }
}

/// The role's name: the last part of its path (`arn:aws:iam::1:role/path/NAME`).
fn role_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn is_awslogs(c: &ContainerDefinition) -> bool {
    c.log_configuration.as_ref().is_some_and(|l| l.log_driver == "awslogs")
}

fn has_registry_auth(c: &ContainerDefinition) -> bool {
    c.other.get("repositoryCredentials").and_then(|r| r.get("credentialsParameter")).is_some()
}

/// Fargate's rules for what needs an execution role, as RegisterTaskDefinition words them.
pub(crate) fn fargate_role_rules(
    execution_role: Option<&str>,
    containers: &[ContainerDefinition],
) -> Result<(), ControlError> {
    if execution_role.is_some_and(|r| !r.is_empty()) {
        return Ok(());
    }
    if containers.iter().any(|c| c.secrets.as_ref().is_some_and(|s| !s.is_empty())) {
        return Err(ControlError::client(SECRETS_NEED_ROLE));
    }
    if containers.iter().any(has_registry_auth) {
        return Err(ControlError::client(REGISTRY_AUTH_NEEDS_ROLE));
    }
    if containers.iter().any(is_awslogs) {
        return Err(ControlError::client(AWSLOGS_NEEDS_ROLE));
    }
    Ok(())
}

/// Whether role `arn` exists and its trust policy lets ECS tasks assume it. Read, not
/// assumed: no session is made for the check.
async fn trusts_ecs_tasks(iam: &Iam, arn: &str) -> Result<bool, ControlError> {
    let role = match iam.find_role_by_arn(arn).await {
        Ok(role) => role,
        Err(IamError::NoSuchEntity(_) | IamError::InvalidInput(_)) => return Ok(false),
        Err(e) => return Err(control_error(e)),
    };
    let Ok(trust) = Policy::parse(&role.trust, PolicyKind::Trust) else { return Ok(false) };
    let ctx = RequestContext {
        action: "sts:AssumeRole".to_owned(),
        resource: role.arn,
        principal: RequestPrincipal::Service(ECS_TASKS.to_owned()),
        keys: BTreeMap::new(),
    };
    Ok(flotilla_iam::policy::evaluate([&trust], &ctx).allowed())
}

fn control_error(e: IamError) -> ControlError {
    match e {
        IamError::Store(e) => ControlError::Store(e),
        IamError::Corrupt { key, source } => ControlError::CorruptRecord { key, source },
        other => ControlError::client(other.to_string()),
    }
}

impl Control {
    /// Gives the control plane IAM (once): from then on task definitions' roles are checked
    /// and the platform acts for a task as its execution role.
    pub fn attach_iam(&self, iam: Arc<Iam>) {
        let _ = self.iam.set(iam);
    }

    pub(crate) fn iam(&self) -> Option<&Arc<Iam>> {
        self.iam.get()
    }

    /// Applies Fargate's rules to task definitions without an execution role (awslogs,
    /// `secrets` and private registries need one), as `--require-roles` asks.
    pub fn with_require_roles(mut self, require: bool) -> Control {
        self.require_roles = require;
        self
    }

    /// RegisterTaskDefinition's part: Fargate's rules, when roles are required.
    pub(crate) fn check_registered_roles(
        &self,
        execution_role: Option<&str>,
        containers: &[ContainerDefinition],
    ) -> Result<(), ControlError> {
        check_role_form(execution_role)?;
        if self.require_roles {
            fargate_role_rules(execution_role, containers)?;
        }
        Ok(())
    }

    /// RunTask's, CreateService's and UpdateService's part: Fargate's rules when roles are
    /// required, and each role the definition names exists and trusts ECS tasks.
    pub(crate) async fn check_task_roles(
        &self,
        definition: &flotilla_types::task_definition::TaskDefinition,
    ) -> Result<(), ControlError> {
        self.check_registered_roles(definition.execution_role_arn.as_deref(), &definition.container_definitions)?;
        let Some(iam) = self.iam() else { return Ok(()) };
        let roles = [definition.task_role_arn.as_deref(), definition.execution_role_arn.as_deref()];
        for role in roles.into_iter().flatten().filter(|r| !r.is_empty()) {
            if !trusts_ecs_tasks(iam, &role_arn(&self.identity.account, role)).await? {
                return Err(ControlError::client(unable_to_assume(role)));
            }
        }
        Ok(())
    }

    /// The execution role the platform acts as for task `task_id`, when IAM is attached and
    /// the definition names one; `None`: the platform acts for the account.
    pub(crate) fn execution_role(
        &self,
        definition: &flotilla_types::task_definition::TaskDefinition,
        task_id: &str,
    ) -> Option<ExecutionRole> {
        let iam = self.iam()?.clone();
        let role = definition.execution_role_arn.as_deref().filter(|r| !r.is_empty())?;
        let arn = role_arn(&self.identity.account, role);
        let session_arn = self.identity.sts_assumed_role(role_name(&arn), task_id);
        Some(ExecutionRole { iam, arn, session_arn, identity: self.identity.clone() })
    }
}

/// Why the execution role may not do something: the text that follows `AccessDeniedException: `
/// in the task's stopped reason, or that the role is gone.
#[derive(Debug)]
pub(crate) enum Refusal {
    Denied(String),
    /// The role no longer exists (deleted after RunTask).
    NoRole(String),
    /// IAM could not answer (store failure).
    Unavailable(String),
}

/// A task's execution role, as the platform acts for the task.
pub(crate) struct ExecutionRole {
    iam: Arc<Iam>,
    arn: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/TASK_ID`: who AWS says was refused.
    session_arn: String,
    /// The installation's region and account, which the resources' ARNs are in.
    identity: flotilla_types::Identity,
}

impl ExecutionRole {
    pub fn identity(&self) -> &flotilla_types::Identity {
        &self.identity
    }

    /// Whether the role may do `action` on `resource`; `Err` carries AWS's words.
    pub async fn allow(&self, action: &str, resource: &str) -> Result<(), Refusal> {
        let mut keys = BTreeMap::new();
        keys.insert("aws:principalarn".to_owned(), vec![self.arn.clone()]);
        keys.insert("aws:principalaccount".to_owned(), vec![self.identity.account.clone()]);
        keys.insert("aws:principaltype".to_owned(), vec!["AssumedRole".to_owned()]);
        keys.insert("aws:requestedregion".to_owned(), vec![self.identity.region.clone()]);
        let ctx = RequestContext {
            action: action.to_owned(),
            resource: resource.to_owned(),
            principal: RequestPrincipal::Aws { arn: self.session_arn.clone(), account: self.identity.account.clone() },
            keys,
        };
        let why = match self.iam.role_authorize(&self.arn, &ctx).await {
            Ok(Decision::Allow) => return Ok(()),
            Ok(Decision::ExplicitDeny) => "with an explicit deny in an identity-based policy".to_owned(),
            Ok(Decision::ImplicitDeny) => format!("because no identity-based policy allows the {action} action"),
            Err(IamError::NoSuchEntity(_)) => return Err(Refusal::NoRole(unable_to_assume(&self.arn))),
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        };
        Err(Refusal::Denied(format!(
            "AccessDeniedException: User: {} is not authorized to perform: {action} on resource: {resource} {why} \
             status code: 400, request id: {}",
            self.session_arn,
            uuid::Uuid::new_v4()
        )))
    }
}

#[cfg(test)]
#[path = "task_roles_tests.rs"]
mod tests;
