//! A task's secrets as the Fargate agent fetches them before its containers exist: each
//! container's `secrets[].valueFrom` (SSM parameter or Secrets Manager secret) becomes an
//! environment variable, and `repositoryCredentials.credentialsParameter` the registry login
//! for its image. A failure is the `ResourceInitializationError` AWS stops the task with.
//!
//! With an execution role, each fetch is first the role's to make (`ssm:GetParameters`,
//! `secretsmanager:GetSecretValue`), and a refusal is AWS's `AccessDeniedException` in the
//! stopped reason; the task's `awslogs` streams are the role's to write too ([`check_logs`]).

use flotilla_host::{HostApiError, RegistryLogin, TaskSecrets};
use flotilla_logs::LogStore;
use flotilla_secrets::{SecretRef, Secrets};
use flotilla_types::task_definition::TaskDefinition;

use crate::task_roles::{ExecutionRole, Refusal};

const PULL_FAILED: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed";

fn reason(what: &str, value_from: &str, e: impl std::fmt::Display) -> HostApiError {
    let service = match SecretRef::parse(value_from) {
        SecretRef::Parameter(_) => "ssm",
        SecretRef::Secret { .. } => "asm",
    };
    HostApiError::Refused {
        reason: format!("{PULL_FAILED}: unable to retrieve {what} {value_from} from {service}: {e}"),
    }
}

fn unavailable(value_from: &str) -> HostApiError {
    reason("secret", value_from, "this server does not serve SSM or Secrets Manager")
}

/// The stopped reason (or retry) for a refusal; `denied` words the AccessDeniedException's
/// place in the message.
fn refused(refusal: Refusal, denied: impl FnOnce(String) -> String) -> HostApiError {
    match refusal {
        Refusal::Denied(text) => HostApiError::Refused { reason: denied(text) },
        Refusal::NoRole(text) => HostApiError::Refused {
            reason: format!("{PULL_FAILED}: unable to retrieve execution role credentials: {text}"),
        },
        Refusal::Unavailable(text) => HostApiError::Unavailable { reason: text },
    }
}

/// The execution role may read `value_from` (a container secret), as Fargate's agent asks.
async fn may_read(role: &ExecutionRole, store: &Secrets, value_from: &str) -> Result<(), HostApiError> {
    match SecretRef::parse(value_from) {
        SecretRef::Parameter(name) => {
            let resource = match name.starts_with("arn:") {
                true => name.clone(),
                false => role.identity().ssm_parameter(name.split(':').next().unwrap_or(&name)),
            };
            role.allow("ssm:GetParameters", &resource).await.map_err(|r| {
                refused(r, |text| {
                    format!("{PULL_FAILED}: unable to retrieve secrets from ssm: service call has been retried 1 time(s): {text}")
                })
            })
        }
        SecretRef::Secret { id, .. } => {
            let resource = secret_arn(store, &id).await;
            role.allow("secretsmanager:GetSecretValue", &resource).await.map_err(|r| {
                refused(r, |text| {
                    format!(
                        "{PULL_FAILED}: unable to retrieve secret from asm: service call has been retried 1 time(s): \
                         failed to fetch secret {id} from secrets manager: {text}"
                    )
                })
            })
        }
    }
}

/// The secret's full ARN (what policies name), or `id` as given when there is no such secret.
async fn secret_arn(store: &Secrets, id: &str) -> String {
    store.describe_secret(id).await.map(|s| s.arn).unwrap_or_else(|_| id.to_owned())
}

/// Every container's secrets and registry login; `Refused` carries the task's stopped reason.
pub(crate) async fn resolve(
    secrets: Option<&Secrets>,
    definition: &TaskDefinition,
    role: Option<&ExecutionRole>,
) -> Result<TaskSecrets, HostApiError> {
    let mut out = TaskSecrets::default();
    for c in &definition.container_definitions {
        let name = c.name.clone().unwrap_or_default();
        if let Some(param) =
            c.other.get("repositoryCredentials").and_then(|r| r.get("credentialsParameter")).and_then(|p| p.as_str())
        {
            let store = secrets.ok_or_else(|| unavailable(param))?;
            if let Some(role) = role {
                let resource = secret_arn(store, param).await;
                role.allow("secretsmanager:GetSecretValue", &resource).await.map_err(|r| {
                    refused(r, |text| {
                        format!(
                            "{PULL_FAILED}: unable to retrieve secret from asm: service call has been retried 1 \
                             time(s): asm fetching secret from the service for {param}: {text}"
                        )
                    })
                })?;
            }
            let (username, password) =
                store.registry_credentials(param).await.map_err(|e| reason("registry credentials", param, e))?;
            out.registry_logins.insert(name.clone(), RegistryLogin { username, password });
        }
        let mut values = Vec::new();
        for s in c.secrets.iter().flatten() {
            let store = secrets.ok_or_else(|| unavailable(&s.value_from))?;
            if let Some(role) = role {
                may_read(role, store, &s.value_from).await?;
            }
            let value = store.resolve(&s.value_from).await.map_err(|e| reason("secret", &s.value_from, e))?;
            values.push((s.name.clone(), value));
        }
        if !values.is_empty() {
            out.environment.insert(name, values);
        }
    }
    Ok(out)
}

const LOGGER_FAILED: &str = "ResourceInitializationError: failed to validate logger args";

/// The execution role may write every `awslogs` stream of task `task_id`, as the awslogs
/// driver does at container creation: create the stream (`logs:CreateLogStream`), and the
/// group first when it is missing and `awslogs-create-group` is set (`logs:CreateLogGroup`).
/// Flotilla also checks `logs:PutLogEvents` here, so that a task never runs with its output
/// silently dropped.
pub(crate) async fn check_logs(
    role: &ExecutionRole,
    logs: Option<&LogStore>,
    definition: &TaskDefinition,
    task_id: &str,
) -> Result<(), HostApiError> {
    for c in &definition.container_definitions {
        let Some(log) = c.log_configuration.as_ref().filter(|l| l.log_driver == "awslogs") else { continue };
        let Some(options) = log.options.as_ref() else { continue };
        let Some(group) = options.get("awslogs-group") else { continue };
        let name = c.name.as_deref().unwrap_or_default();
        let stream = match options.get("awslogs-stream-prefix") {
            Some(prefix) => format!("{prefix}/{name}/{task_id}"),
            None => task_id.to_owned(),
        };
        let stream_arn = role.identity().log_stream(group, &stream);
        let create_stream = |text| {
            format!(
                "{LOGGER_FAILED}: create stream has been retried 1 times: failed to create Cloudwatch log stream: \
                 {text} : exit status 1"
            )
        };
        role.allow("logs:CreateLogStream", &stream_arn).await.map_err(|r| refused(r, create_stream))?;
        let missing = logs.is_some_and(|l| l.log_group(group).is_err());
        if missing && options.get("awslogs-create-group").is_some_and(|v| v == "true") {
            let group_arn = role.identity().log_stream(group, "");
            role.allow("logs:CreateLogGroup", &group_arn).await.map_err(|r| {
                refused(r, |text| {
                    format!(
                        "{LOGGER_FAILED}: create stream has been retried 1 times: failed to create Cloudwatch log \
                         group: {text} : exit status 1"
                    )
                })
            })?;
        }
        role.allow("logs:PutLogEvents", &stream_arn).await.map_err(|r| {
            refused(r, |text| format!("{LOGGER_FAILED}: the execution role cannot write the log stream: {text}"))
        })?;
    }
    Ok(())
}
