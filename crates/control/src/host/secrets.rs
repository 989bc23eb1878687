//! A task's secrets as the Fargate agent fetches them before its containers exist: each
//! container's `secrets[].valueFrom` (SSM parameter or Secrets Manager secret) becomes an
//! environment variable, and `repositoryCredentials.credentialsParameter` the registry login
//! for its image. A failure is the `ResourceInitializationError` AWS stops the task with.

use flotilla_host::{RegistryLogin, TaskSecrets};
use flotilla_secrets::{SecretRef, Secrets};
use flotilla_types::task_definition::TaskDefinition;

fn reason(what: &str, value_from: &str, e: impl std::fmt::Display) -> String {
    let service = match SecretRef::parse(value_from) {
        SecretRef::Parameter(_) => "ssm",
        SecretRef::Secret { .. } => "asm",
    };
    format!(
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
         unable to retrieve {what} {value_from} from {service}: {e}"
    )
}

fn unavailable(value_from: &str) -> String {
    reason("secret", value_from, "this server does not serve SSM or Secrets Manager")
}

/// Every container's secrets and registry login; `Err` is the task's stopped reason.
pub(crate) async fn resolve(secrets: Option<&Secrets>, definition: &TaskDefinition) -> Result<TaskSecrets, String> {
    let mut out = TaskSecrets::default();
    for c in &definition.container_definitions {
        let name = c.name.clone().unwrap_or_default();
        if let Some(param) =
            c.other.get("repositoryCredentials").and_then(|r| r.get("credentialsParameter")).and_then(|p| p.as_str())
        {
            let store = secrets.ok_or_else(|| unavailable(param))?;
            let (username, password) =
                store.registry_credentials(param).await.map_err(|e| reason("registry credentials", param, e))?;
            out.registry_logins.insert(name.clone(), RegistryLogin { username, password });
        }
        let mut values = Vec::new();
        for s in c.secrets.iter().flatten() {
            let store = secrets.ok_or_else(|| unavailable(&s.value_from))?;
            let value = store.resolve(&s.value_from).await.map_err(|e| reason("secret", &s.value_from, e))?;
            values.push((s.name.clone(), value));
        }
        if !values.is_empty() {
            out.environment.insert(name, values);
        }
    }
    Ok(out)
}
