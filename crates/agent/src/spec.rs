//! From an ECS task (definition + overrides) and its pulled images to a sandbox `TaskSpec`.

use std::collections::HashMap;
use std::path::Path;

use flotilla_image::Image;
use flotilla_sandbox::efs::{EfsIdentity, EfsMount, EfsRoot};
use flotilla_sandbox::{ContainerSpec, EnvVar, ImageConfig, MountPoint, TaskSpec, Ulimit, VolumeFrom};
use flotilla_types::task::Task;
use flotilla_types::task_definition::{ContainerDefinition, TaskDefinition};
use flotilla_types::{parse_cpu, parse_memory};

/// Why a task cannot be turned into a sandbox spec; becomes the task's stoppedReason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: volume {volume}: \
         this host has no EFS root (flotilla agent --efs-root)"
    )]
    NoEfsRoot { volume: String },
    #[error(
        "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: volume {volume} was \
         not resolved by the control plane"
    )]
    UnresolvedEfs { volume: String },
}

/// The task's EFS volumes as the sandbox mounts them: the control plane's resolution
/// (`HostApi::task_volumes`) placed under this host's EFS root.
pub fn efs_mounts(volumes: &flotilla_host::TaskVolumes, efs_root: Option<&Path>) -> Result<Vec<EfsMount>, SpecError> {
    let mut out = Vec::new();
    for v in &volumes.efs {
        let root = efs_root.ok_or_else(|| SpecError::NoEfsRoot { volume: v.name.clone() })?;
        out.push(EfsMount {
            name: v.name.clone(),
            file_system_dir: root.join(&v.file_system_id),
            path: v.path.clone(),
            create_root: v.create_root.as_ref().map(|c| EfsRoot {
                path: c.path.clone(),
                uid: c.owner_uid,
                gid: c.owner_gid,
                mode: c.permissions,
            }),
            posix_user: v.posix_user.as_ref().map(|u| EfsIdentity { uid: u.uid, gid: u.gid }),
        });
    }
    Ok(out)
}

/// What Fargate injects into every container's environment.
pub struct Injected<'a> {
    pub region: &'a str,
    /// Base of the task metadata endpoint, e.g. `http://169.254.170.2/v4`.
    pub metadata_base: &'a str,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (`/v2/credentials/<id>`), for a task with a
    /// task role.
    pub credentials_uri: Option<&'a str>,
    /// `AWS_ENDPOINT_URL`: where SDKs call Flotilla's API (which is not at AWS's endpoints),
    /// when the task endpoint is served.
    pub api_endpoint: Option<&'a str>,
    /// Each container's `secrets`, resolved: (variable, value), set after `environment`.
    pub secrets: &'a HashMap<String, Vec<(String, String)>>,
}

fn env_for(def: &ContainerDefinition, task: &Task, injected: &Injected<'_>) -> Vec<EnvVar> {
    let name = def.name.as_deref().unwrap_or_default();
    let mut env: Vec<EnvVar> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|e| e.name == k) {
        Some(e) => e.value = v.to_owned(),
        None => env.push(EnvVar { name: k.to_owned(), value: v.to_owned() }),
    };
    let metadata = format!("{}/{}-{name}", injected.metadata_base, task.id());
    set("AWS_EXECUTION_ENV", "AWS_ECS_FARGATE");
    set("AWS_REGION", injected.region);
    set("AWS_DEFAULT_REGION", injected.region);
    if let Some(url) = injected.api_endpoint {
        set("AWS_ENDPOINT_URL", url);
    }
    set("ECS_CONTAINER_METADATA_URI_V4", &metadata);
    set("ECS_CONTAINER_METADATA_URI", &metadata.replace("/v4/", "/v3/"));
    if let Some(uri) = injected.credentials_uri {
        set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", uri);
    }
    for kv in def.environment.iter().flatten() {
        if let (Some(k), Some(v)) = (&kv.name, &kv.value) {
            set(k, v);
        }
    }
    let overrides = task.overrides.container_overrides.iter().filter(|o| o.name.as_deref() == Some(name));
    for kv in overrides.flat_map(|o| o.environment.iter().flatten()) {
        if let (Some(k), Some(v)) = (&kv.name, &kv.value) {
            set(k, v);
        }
    }
    for (k, v) in injected.secrets.get(name).into_iter().flatten() {
        set(k, v);
    }
    env
}

fn container_spec(
    def: &ContainerDefinition,
    task: &Task,
    image: &Image,
    injected: &Injected<'_>,
) -> Result<ContainerSpec, SpecError> {
    let name = def.name.clone().unwrap_or_default();
    let o = task.overrides.container_overrides.iter().find(|o| o.name.as_deref() == Some(name.as_str()));
    let config = image.container_config();
    let mut spec = ContainerSpec::new(name, image.layer_dirs().into_iter().map(|p| p.to_path_buf()).collect());
    spec.image_config = ImageConfig {
        env: config.env.clone(),
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
    };
    spec.entry_point = def.entry_point.clone();
    spec.command = o.and_then(|o| o.command.clone()).or_else(|| def.command.clone());
    spec.environment = env_for(def, task, injected);
    spec.working_directory = def.working_directory.clone();
    spec.user = def.user.clone();
    spec.cpu_units = o.and_then(|o| o.cpu).or(def.cpu).unwrap_or(0).max(0) as u32;
    // Without a container limit the task's applies; putting it on the container's own cgroup
    // too lets runtimes that size themselves from their cgroup (JVM, Go) see the real limit.
    let task_memory = flotilla_types::parse_memory(&task.memory).map(u64::from);
    spec.memory_mib = o.and_then(|o| o.memory).or(def.memory).map(|m| m.max(0) as u64).or(task_memory);
    spec.memory_reservation_mib =
        o.and_then(|o| o.memory_reservation).or(def.memory_reservation).map(|m| m.max(0) as u64);
    spec.ulimits = def
        .ulimits
        .iter()
        .flatten()
        .map(|u| Ulimit {
            name: u.name.clone(),
            soft_limit: u.soft_limit.max(0) as u64,
            hard_limit: u.hard_limit.max(0) as u64,
        })
        .collect();
    spec.readonly_root_filesystem = def.readonly_root_filesystem.unwrap_or(false);
    if let Some(caps) = def.linux_parameters.as_ref().and_then(|l| l.capabilities.as_ref()) {
        spec.cap_add = caps.add.clone().unwrap_or_default();
        spec.cap_drop = caps.drop.clone().unwrap_or_default();
    }
    spec.init_process_enabled = def.linux_parameters.as_ref().and_then(|l| l.init_process_enabled).unwrap_or(false);
    spec.mount_points = def
        .mount_points
        .iter()
        .flatten()
        .filter_map(|m| {
            Some(MountPoint {
                source_volume: m.source_volume.clone()?,
                container_path: m.container_path.clone()?,
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect();
    spec.volumes_from = def
        .volumes_from
        .iter()
        .flatten()
        .filter_map(|v| {
            Some(VolumeFrom { source_container: v.source_container.clone()?, read_only: v.read_only.unwrap_or(false) })
        })
        .collect();
    Ok(spec)
}

/// Builds the sandbox spec; `images` maps container name to its pulled image, `efs` holds the
/// task's EFS volumes ([`efs_mounts`]).
pub fn task_spec(
    task: &Task,
    definition: &TaskDefinition,
    images: &HashMap<String, Image>,
    injected: &Injected<'_>,
    efs: Vec<EfsMount>,
) -> Result<TaskSpec, SpecError> {
    let mut volumes = Vec::new();
    for v in &definition.volumes {
        let name = v.name.clone().unwrap_or_default();
        if v.efs_volume_configuration.is_some() {
            if !efs.iter().any(|e| e.name == name) {
                return Err(SpecError::UnresolvedEfs { volume: name });
            }
            continue;
        }
        volumes.push(name);
    }
    let mut containers = Vec::new();
    for def in &definition.container_definitions {
        let name = def.name.clone().unwrap_or_default();
        let image = images.get(&name).expect("every container's image was pulled before building the spec");
        containers.push(container_spec(def, task, image, injected)?);
    }
    Ok(TaskSpec {
        task_id: task.id().to_owned(),
        cpu_units: parse_cpu(&task.cpu).unwrap_or(256),
        memory_mib: u64::from(parse_memory(&task.memory).unwrap_or(512)),
        pids_limit: None,
        pid_mode_task: definition.pid_mode.as_deref() == Some("task"),
        ephemeral_storage_gib: task.ephemeral_storage.as_ref().map(|e| e.size_in_gi_b.max(20) as u64),
        hostname: None,
        volumes,
        efs_volumes: efs,
        containers,
    })
}

#[cfg(test)]
mod tests {
    use flotilla_types::task_definition::KeyValuePair;

    use super::*;

    fn env(def: &ContainerDefinition) -> HashMap<String, String> {
        let task = Task::provisioning(
            "arn:aws:ecs:eu-west-3:000000000000:task/c/0123".into(),
            "arn:aws:ecs:eu-west-3:000000000000:cluster/c".into(),
            "arn:aws:ecs:eu-west-3:000000000000:task-definition/d:1".into(),
            flotilla_types::Timestamp::now(),
        );
        let secrets = HashMap::new();
        let injected = Injected {
            region: "eu-west-3",
            metadata_base: crate::metadata::METADATA_BASE,
            credentials_uri: None,
            api_endpoint: Some(crate::metadata::API_ENDPOINT),
            secrets: &secrets,
        };
        env_for(def, &task, &injected).into_iter().map(|e| (e.name, e.value)).collect()
    }

    #[test]
    fn containers_get_the_region_and_the_api_endpoint_unless_they_set_their_own() {
        let def = ContainerDefinition { name: Some("app".into()), ..Default::default() };
        let got = env(&def);
        assert_eq!(got["AWS_REGION"], "eu-west-3");
        assert_eq!(got["AWS_DEFAULT_REGION"], "eu-west-3");
        assert_eq!(got["AWS_ENDPOINT_URL"], "http://169.254.170.2");

        let own = |k: &str, v: &str| KeyValuePair { name: Some(k.into()), value: Some(v.into()) };
        let def = ContainerDefinition {
            name: Some("app".into()),
            environment: Some(vec![
                own("AWS_REGION", "us-east-1"),
                own("AWS_DEFAULT_REGION", "us-east-2"),
                own("AWS_ENDPOINT_URL", "http://elsewhere:4566"),
            ]),
            ..Default::default()
        };
        let got = env(&def);
        assert_eq!(got["AWS_REGION"], "us-east-1");
        assert_eq!(got["AWS_DEFAULT_REGION"], "us-east-2");
        assert_eq!(got["AWS_ENDPOINT_URL"], "http://elsewhere:4566");
    }
}
