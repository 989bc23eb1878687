//! Task-level rules: everything outside `containerDefinitions[*]`.

use std::collections::HashSet;

use super::{Check, FieldError, check_name, check_range};
use crate::size::{TaskSize, parse_cpu, parse_memory};
use crate::task_definition::{EfsVolumeConfiguration, RuntimePlatform, TaskDefinitionSpec, Volume};

/// ECS allows no more containers than this in one task definition.
pub(super) const MAX_CONTAINERS: usize = 10;

/// Runs the task-level checks and returns the task size the containers must fit in.
pub(super) fn check(spec: &TaskDefinitionSpec) -> Result<TaskSize, FieldError> {
    check_name("family", Some(&spec.family))?;
    check_network_mode(spec.network_mode.as_deref())?;
    check_compatibilities(spec.requires_compatibilities.as_deref().unwrap_or_default())?;
    let size = check_size(spec.cpu.as_deref(), spec.memory.as_deref())?;
    check_unsupported(spec)?;
    if let Some(storage) = &spec.ephemeral_storage {
        check_range("ephemeralStorage.sizeInGiB", storage.size_in_gi_b, 21, 200, " GiB")?;
    }
    if let Some(platform) = &spec.runtime_platform {
        check_runtime_platform(platform)?;
    }
    check_volumes(spec.volumes.as_deref().unwrap_or_default())?;
    match spec.container_definitions.len() {
        0 => Err(FieldError::new("containerDefinitions", "at least one container is required")),
        n if n > MAX_CONTAINERS => Err(FieldError::new(
            "containerDefinitions",
            format!("at most {MAX_CONTAINERS} containers are allowed, got {n}"),
        )),
        _ => Ok(size),
    }
}

fn check_network_mode(mode: Option<&str>) -> Check {
    match mode {
        Some("awsvpc") => Ok(()),
        Some(other) => Err(FieldError::new(
            "networkMode",
            format!("Fargate only supports the \"awsvpc\" network mode, got {other:?}"),
        )),
        None => Err(FieldError::new("networkMode", "is required; Fargate only supports the \"awsvpc\" network mode")),
    }
}

fn check_compatibilities(compatibilities: &[String]) -> Check {
    for (i, compatibility) in compatibilities.iter().enumerate() {
        let field = format!("requiresCompatibilities[{i}]");
        match compatibility.as_str() {
            "FARGATE" | "EC2" | "MANAGED_INSTANCES" => {}
            // Flotilla has no external instances to place such a task on.
            "EXTERNAL" => {
                return Err(FieldError::new(field, "EXTERNAL is not supported by Flotilla; use FARGATE"));
            }
            other => {
                return Err(FieldError::new(
                    field,
                    format!("must be one of EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES, got {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_size(cpu: Option<&str>, memory: Option<&str>) -> Result<TaskSize, FieldError> {
    let cpu = match cpu {
        None => {
            return Err(FieldError::new(
                "cpu",
                "is required by Fargate, as CPU units (\"256\") or vCPUs (\".25 vCPU\")",
            ));
        }
        Some(text) => parse_cpu(text).ok_or_else(|| {
            FieldError::new("cpu", format!("must be CPU units (\"256\") or vCPUs (\".25 vCPU\"), got {text:?}"))
        })?,
    };
    // Reject an impossible cpu before asking for memory, so the first error names the root cause.
    if TaskSize::memory_choices(cpu).is_none()
        && let Err(reason) = TaskSize::new(cpu, 0)
    {
        return Err(FieldError::new("cpu", reason));
    }
    let memory = match memory {
        None => {
            return Err(FieldError::new("memory", "is required by Fargate, as MiB (\"512\") or GB (\"0.5 GB\")"));
        }
        Some(text) => parse_memory(text).ok_or_else(|| {
            FieldError::new("memory", format!("must be MiB (\"512\") or GB (\"0.5 GB\"), got {text:?}"))
        })?,
    };
    TaskSize::new(cpu, memory).map_err(|e| FieldError::new("memory", e))
}

fn check_unsupported(spec: &TaskDefinitionSpec) -> Check {
    if let Some(mode) = &spec.ipc_mode {
        return Err(FieldError::new("ipcMode", format!("is not supported on Fargate; remove it (got {mode:?})")));
    }
    if let Some(mode) = spec.pid_mode.as_deref().filter(|mode| *mode != "task") {
        return Err(FieldError::new("pidMode", format!("Fargate only supports \"task\", got {mode:?}")));
    }
    if spec.placement_constraints.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(FieldError::new(
            "placementConstraints",
            "placement constraints are not supported on Fargate; remove them",
        ));
    }
    if spec.inference_accelerators.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(FieldError::new(
            "inferenceAccelerators",
            "inference accelerators are not supported on Fargate; remove them",
        ));
    }
    Ok(())
}

fn check_runtime_platform(platform: &RuntimePlatform) -> Check {
    // Windows is a real Fargate platform, but Flotilla only runs Linux sandboxes.
    if let Some(os) = platform.operating_system_family.as_deref().filter(|os| *os != "LINUX") {
        return Err(FieldError::new(
            "runtimePlatform.operatingSystemFamily",
            format!("Flotilla only supports LINUX, got {os:?}"),
        ));
    }
    match platform.cpu_architecture.as_deref() {
        None | Some("X86_64" | "ARM64") => Ok(()),
        Some(other) => {
            Err(FieldError::new("runtimePlatform.cpuArchitecture", format!("must be X86_64 or ARM64, got {other:?}")))
        }
    }
}

fn check_volumes(volumes: &[Volume]) -> Check {
    let mut seen = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("volumes[{i}]");
        let name_field = format!("{at}.name");
        check_name(&name_field, volume.name.as_deref())?;
        if let Some(name) = volume.name.as_deref()
            && !seen.insert(name)
        {
            return Err(FieldError::new(name_field, format!("volume name {name:?} is used more than once")));
        }
        let source_path = volume.host.as_ref().and_then(|host| host.get("sourcePath"));
        if source_path.is_some_and(|path| !path.is_null()) {
            return Err(FieldError::new(
                format!("{at}.host.sourcePath"),
                "host paths are not supported on Fargate; omit sourcePath for a volume that lives as long as the task",
            ));
        }
        if volume.docker_volume_configuration.is_some() {
            return Err(FieldError::new(
                format!("{at}.dockerVolumeConfiguration"),
                "Docker volumes are not supported on Fargate; use a bind volume or efsVolumeConfiguration",
            ));
        }
        if let Some(efs) = &volume.efs_volume_configuration {
            if volume.host.as_ref().is_some_and(|h| !h.is_null()) {
                return Err(FieldError::new(
                    at,
                    "When the volume parameter is specified, only one volume configuration type should be used.",
                ));
            }
            check_efs(&format!("{at}.efsVolumeConfiguration"), efs)?;
        }
        // FSx for Windows File Server volumes only mount into Windows tasks.
        if volume.other.get("fsxWindowsFileServerVolumeConfiguration").is_some_and(|v| !v.is_null()) {
            return Err(FieldError::new(
                format!("{at}.fsxWindowsFileServerVolumeConfiguration"),
                "FSx for Windows File Server volumes need a Windows task, which Flotilla does not run",
            ));
        }
    }
    Ok(())
}

/// ECS's checks of an EFS volume at registration; whether the file system and access point
/// exist is only known when a task starts.
fn check_efs(at: &str, efs: &EfsVolumeConfiguration) -> Check {
    if efs.file_system_id.is_empty() {
        return Err(FieldError::new(format!("{at}.fileSystemId"), "is required"));
    }
    if let Some(root) = efs.root_directory.as_deref() {
        if root.split('/').any(|part| part == "..") {
            return Err(FieldError::new(
                format!("{at}.rootDirectory"),
                format!("must not contain '..' (got {root:?}); it is a path inside the file system"),
            ));
        }
        if root.len() > 4096 || root.contains('\0') {
            return Err(FieldError::new(format!("{at}.rootDirectory"), "is not a valid path"));
        }
    }
    let enabled = |v: Option<&str>| v == Some("ENABLED");
    let iam = efs.authorization_config.as_ref().and_then(|a| a.iam.as_deref());
    if efs.access_point_id().is_some() && efs.root_directory.as_deref().is_some_and(|r| r != "/") {
        return Err(FieldError::new(
            format!("{at}.rootDirectory"),
            "When using an EFS access point, the root directory must either be set to \"/\" or be omitted.",
        ));
    }
    if (efs.access_point_id().is_some() || enabled(iam)) && !enabled(efs.transit_encryption.as_deref()) {
        return Err(FieldError::new(
            format!("{at}.transitEncryption"),
            "Transit encryption must be enabled when using an EFS access point or IAM authorization.",
        ));
    }
    if let Some(port) = efs.transit_encryption_port
        && !(1..=65535).contains(&port)
    {
        return Err(FieldError::new(format!("{at}.transitEncryptionPort"), format!("must be 1-65535, got {port}")));
    }
    Ok(())
}
