//! Container-level rules, and the rules that span the containers of one task.

use std::collections::HashSet;

use super::ports::PortClaims;
use super::{Check, FieldError, check_name, check_range, start_order};
use crate::size::TaskSize;
use crate::task_definition::{ContainerDefinition, HealthCheck, LinuxParameters, LogConfiguration, TaskDefinitionSpec};

/// Docker 20.10 and later refuse to start a container with less memory than this.
const MIN_CONTAINER_MIB: i32 = 6;

/// The capability names ECS accepts (its `KernelCapabilities` valid values).
const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// What every container rule may look at besides the container itself.
pub(super) struct Task<'a> {
    size: TaskSize,
    containers: &'a [ContainerDefinition],
    volumes: HashSet<&'a str>,
}

impl<'a> Task<'a> {
    pub(super) fn containers(&self) -> &'a [ContainerDefinition] {
        self.containers
    }

    /// The container named `name`, with its index.
    pub(super) fn container(&self, name: &str) -> Option<(usize, &ContainerDefinition)> {
        self.containers.iter().enumerate().find(|(_, c)| c.name.as_deref() == Some(name))
    }
}

/// What the containers checked so far have claimed from the task.
#[derive(Default)]
struct Totals {
    cpu: i64,
    reserved_mib: i64,
    ports: PortClaims,
}

pub(super) fn check_all(spec: &TaskDefinitionSpec, size: TaskSize) -> Check {
    let task = Task {
        size,
        containers: &spec.container_definitions,
        volumes: spec.volumes.iter().flatten().filter_map(|v| v.name.as_deref()).collect(),
    };
    let mut totals = Totals::default();
    let mut names = HashSet::new();
    for (i, c) in task.containers.iter().enumerate() {
        let at = format!("containerDefinitions[{i}]");
        check_identity(&at, c, &mut names)?;
        check_unsupported(&at, c)?;
        check_resources(&task, &at, c, &mut totals)?;
        if let Some(params) = &c.linux_parameters {
            check_linux_parameters(&at, params)?;
        }
        if let Some(log) = &c.log_configuration {
            check_log_configuration(&task, &at, log)?;
        }
        totals.ports.check(&at, c.port_mappings.as_deref().unwrap_or_default())?;
        check_environment(&at, c)?;
        start_order::check_depends_on(&task, &at, i, c)?;
        if let Some(health_check) = &c.health_check {
            check_health_check(&at, health_check)?;
        }
        if let Some(timeout) = c.stop_timeout {
            check_range(&format!("{at}.stopTimeout"), timeout, 0, 120, " seconds")?;
        }
        // The ECS API reference gives 2-120 s as the valid range on Fargate.
        if let Some(timeout) = c.start_timeout {
            check_range(&format!("{at}.startTimeout"), timeout, 2, 120, " seconds")?;
        }
        check_storage(&task, &at, i, c)?;
        check_ulimits(&at, c)?;
    }
    if !task.containers.iter().any(ContainerDefinition::is_essential) {
        return Err(FieldError::new(
            "containerDefinitions",
            "at least one container must be essential (essential defaults to true)",
        ));
    }
    start_order::check_cycles(&task)
}

fn non_empty<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

fn check_identity<'a>(at: &str, c: &'a ContainerDefinition, names: &mut HashSet<&'a str>) -> Check {
    let field = format!("{at}.name");
    check_name(&field, c.name.as_deref())?;
    if let Some(name) = c.name.as_deref()
        && !names.insert(name)
    {
        return Err(FieldError::new(field, format!("container name {name:?} is used more than once")));
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        return Err(FieldError::new(format!("{at}.image"), "is required"));
    }
    Ok(())
}

fn check_unsupported(at: &str, c: &ContainerDefinition) -> Check {
    const NOT_ON_FARGATE: &str = "is not supported on Fargate; remove it";
    // Empty lists and `false` change nothing, so only members that would take effect count.
    let members = [
        ("disableNetworking", c.disable_networking == Some(true), NOT_ON_FARGATE),
        ("dnsSearchDomains", non_empty(&c.dns_search_domains), NOT_ON_FARGATE),
        ("dnsServers", non_empty(&c.dns_servers), NOT_ON_FARGATE),
        ("dockerSecurityOptions", non_empty(&c.docker_security_options), NOT_ON_FARGATE),
        ("extraHosts", non_empty(&c.extra_hosts), NOT_ON_FARGATE),
        ("hostname", c.hostname.is_some(), "is not supported in the awsvpc network mode; remove it"),
        ("links", non_empty(&c.links), "needs the bridge network mode, which Fargate lacks; remove it"),
        ("privileged", c.privileged == Some(true), "privileged containers are not supported on Fargate"),
    ];
    if let Some((member, _, detail)) = members.iter().find(|(_, present, _)| *present) {
        return Err(FieldError::new(format!("{at}.{member}"), detail));
    }
    for (j, requirement) in c.resource_requirements.iter().flatten().enumerate() {
        if matches!(requirement.kind.as_str(), "GPU" | "InferenceAccelerator") {
            return Err(FieldError::new(
                format!("{at}.resourceRequirements[{j}].type"),
                format!("{} resources are not supported on Fargate", requirement.kind),
            ));
        }
    }
    Ok(())
}

fn check_resources(task: &Task, at: &str, c: &ContainerDefinition, totals: &mut Totals) -> Check {
    let task_cpu = i64::from(task.size.cpu);
    let task_mib = i64::from(task.size.memory);
    if let Some(cpu) = c.cpu {
        let field = format!("{at}.cpu");
        if cpu < 0 {
            return Err(FieldError::new(field, format!("must be 0 or more CPU units, got {cpu}")));
        }
        totals.cpu += i64::from(cpu);
        if totals.cpu > task_cpu {
            return Err(FieldError::new(
                field,
                format!("containers reserve {} CPU units in total, more than the task cpu of {task_cpu}", totals.cpu),
            ));
        }
    }
    for (member, value) in [("memory", c.memory), ("memoryReservation", c.memory_reservation)] {
        let Some(mib) = value else { continue };
        let field = format!("{at}.{member}");
        if mib < MIN_CONTAINER_MIB {
            return Err(FieldError::new(field, format!("must be at least {MIN_CONTAINER_MIB} MiB, got {mib}")));
        }
        if i64::from(mib) > task_mib {
            return Err(FieldError::new(
                field,
                format!("must not exceed the task memory of {task_mib} MiB, got {mib}"),
            ));
        }
    }
    if let (Some(limit), Some(reservation)) = (c.memory, c.memory_reservation)
        && reservation > limit
    {
        return Err(FieldError::new(
            format!("{at}.memoryReservation"),
            format!("must not exceed memory ({limit} MiB), got {reservation}"),
        ));
    }
    // As on AWS, a container reserves its soft limit when it has one: hard limits may overlap,
    // since each only caps its own container within the task's memory.
    let (member, reserved) = match (c.memory_reservation, c.memory) {
        (Some(reservation), _) => ("memoryReservation", reservation),
        (None, Some(limit)) => ("memory", limit),
        (None, None) => return Ok(()),
    };
    totals.reserved_mib += i64::from(reserved);
    if totals.reserved_mib > task_mib {
        return Err(FieldError::new(
            format!("{at}.{member}"),
            format!(
                "containers reserve {} MiB in total (memoryReservation, or memory where that is unset), more than the task memory of {task_mib} MiB",
                totals.reserved_mib
            ),
        ));
    }
    Ok(())
}

fn check_linux_parameters(at: &str, params: &LinuxParameters) -> Check {
    let at = format!("{at}.linuxParameters");
    let members = [
        ("devices", non_empty(&params.devices)),
        ("sharedMemorySize", params.shared_memory_size.is_some()),
        ("tmpfs", non_empty(&params.tmpfs)),
        ("maxSwap", params.max_swap.is_some()),
        ("swappiness", params.swappiness.is_some()),
    ];
    if let Some((member, _)) = members.iter().find(|(_, present)| *present) {
        return Err(FieldError::new(format!("{at}.{member}"), "is not supported on Fargate; remove it"));
    }
    let Some(capabilities) = &params.capabilities else {
        return Ok(());
    };
    for (j, capability) in capabilities.add.iter().flatten().enumerate() {
        if capability != "SYS_PTRACE" {
            return Err(FieldError::new(
                format!("{at}.capabilities.add[{j}]"),
                format!("Fargate only allows adding SYS_PTRACE, got {capability:?}"),
            ));
        }
    }
    for (j, capability) in capabilities.drop.iter().flatten().enumerate() {
        if !CAPABILITIES.contains(&capability.as_str()) {
            return Err(FieldError::new(
                format!("{at}.capabilities.drop[{j}]"),
                format!(
                    "must be a Linux capability name without the CAP_ prefix, such as NET_RAW or ALL, got {capability:?}"
                ),
            ));
        }
    }
    Ok(())
}

fn check_log_configuration(task: &Task, at: &str, log: &LogConfiguration) -> Check {
    let at = format!("{at}.logConfiguration");
    match log.log_driver.as_str() {
        "awslogs" => {
            for option in ["awslogs-group", "awslogs-stream-prefix"] {
                let value = log.options.as_ref().and_then(|options| options.get(option));
                if value.is_none_or(|v| v.is_empty()) {
                    return Err(FieldError::new(
                        format!("{at}.options.{option}"),
                        "is required by the awslogs log driver on Fargate",
                    ));
                }
            }
        }
        "awsfirelens" => {
            let has_router =
                task.containers.iter().any(|c| c.other.get("firelensConfiguration").is_some_and(|v| !v.is_null()));
            if !has_router {
                return Err(FieldError::new(
                    format!("{at}.logDriver"),
                    "awsfirelens needs a log router: a container of this task with firelensConfiguration",
                ));
            }
        }
        "splunk" => {}
        other => {
            return Err(FieldError::new(
                format!("{at}.logDriver"),
                format!("Fargate supports awslogs, splunk and awsfirelens, got {other:?}"),
            ));
        }
    }
    for (j, secret) in log.secret_options.iter().flatten().enumerate() {
        let at = format!("{at}.secretOptions[{j}]");
        if secret.name.is_empty() {
            return Err(FieldError::new(format!("{at}.name"), "must not be empty"));
        }
        if secret.value_from.is_empty() {
            return Err(FieldError::new(format!("{at}.valueFrom"), "must be the ARN or name of a secret or parameter"));
        }
    }
    Ok(())
}

fn check_env_name(field: &str, name: &str) -> Check {
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must start with a letter or underscore and hold only letters, digits and underscores, got {name:?}"
            ),
        ))
    }
}

fn check_environment(at: &str, c: &ContainerDefinition) -> Check {
    let mut seen = HashSet::new();
    for (j, variable) in c.environment.iter().flatten().enumerate() {
        let field = format!("{at}.environment[{j}].name");
        let Some(name) = variable.name.as_deref() else {
            return Err(FieldError::new(field, "is required"));
        };
        check_env_name(&field, name)?;
        if !seen.insert(name) {
            return Err(FieldError::new(field, format!("environment variable {name:?} is set more than once")));
        }
    }
    let mut seen = HashSet::new();
    for (j, secret) in c.secrets.iter().flatten().enumerate() {
        let at = format!("{at}.secrets[{j}]");
        let field = format!("{at}.name");
        check_env_name(&field, &secret.name)?;
        if !seen.insert(secret.name.as_str()) {
            return Err(FieldError::new(field, format!("secret {:?} is set more than once", secret.name)));
        }
        if secret.value_from.is_empty() {
            return Err(FieldError::new(
                format!("{at}.valueFrom"),
                "must be the ARN or name of a Secrets Manager secret or SSM parameter",
            ));
        }
    }
    Ok(())
}

fn check_health_check(at: &str, health_check: &HealthCheck) -> Check {
    let at = format!("{at}.healthCheck");
    let command = &health_check.command;
    match command.first().map(String::as_str) {
        Some(kind @ ("CMD" | "CMD-SHELL")) if command.len() < 2 => {
            return Err(FieldError::new(
                format!("{at}.command"),
                format!("{kind} must be followed by the command to run"),
            ));
        }
        Some("CMD" | "CMD-SHELL" | "NONE") => {}
        Some(other) => {
            return Err(FieldError::new(
                format!("{at}.command"),
                format!("must start with CMD, CMD-SHELL or NONE, got {other:?}"),
            ));
        }
        None => {
            return Err(FieldError::new(
                format!("{at}.command"),
                "must not be empty; start it with CMD, CMD-SHELL or NONE",
            ));
        }
    }
    let limits = [
        ("interval", health_check.interval, 5, 300, " seconds"),
        ("timeout", health_check.timeout, 2, 60, " seconds"),
        ("retries", health_check.retries, 1, 10, ""),
        ("startPeriod", health_check.start_period, 0, 300, " seconds"),
    ];
    for (member, value, min, max, unit) in limits {
        if let Some(value) = value {
            check_range(&format!("{at}.{member}"), value, min, max, unit)?;
        }
    }
    // Only when both are given: the defaults (30 s, 5 s) satisfy this, and ECS accepts an
    // interval of 5 with the timeout left at its default of 5.
    if let (Some(interval), Some(timeout)) = (health_check.interval, health_check.timeout)
        && timeout >= interval
    {
        return Err(FieldError::new(
            format!("{at}.timeout"),
            format!("must be less than interval ({interval} seconds), got {timeout}"),
        ));
    }
    Ok(())
}

fn check_storage(task: &Task, at: &str, i: usize, c: &ContainerDefinition) -> Check {
    for (j, mount) in c.mount_points.iter().flatten().enumerate() {
        let at = format!("{at}.mountPoints[{j}]");
        let field = format!("{at}.sourceVolume");
        match mount.source_volume.as_deref() {
            Some(volume) if task.volumes.contains(volume) => {}
            Some(volume) => {
                return Err(FieldError::new(
                    field,
                    format!("must name a volume in the task's volumes, got {volume:?}"),
                ));
            }
            None => {
                return Err(FieldError::new(field, "is required: the name of a volume in the task's volumes"));
            }
        }
        let field = format!("{at}.containerPath");
        match mount.container_path.as_deref() {
            Some(path) if path.starts_with('/') => {}
            Some(path) => {
                return Err(FieldError::new(field, format!("must be an absolute path, got {path:?}")));
            }
            None => return Err(FieldError::new(field, "is required (an absolute path)")),
        }
    }
    for (j, from) in c.volumes_from.iter().flatten().enumerate() {
        let field = format!("{at}.volumesFrom[{j}].sourceContainer");
        let Some(source) = from.source_container.as_deref() else {
            return Err(FieldError::new(field, "is required: the name of another container"));
        };
        match task.container(source) {
            Some((k, _)) if k != i => {}
            Some(_) => {
                return Err(FieldError::new(field, "must name another container, not the container itself"));
            }
            None => {
                return Err(FieldError::new(
                    field,
                    format!("must name another container of this task, got {source:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_ulimits(at: &str, c: &ContainerDefinition) -> Check {
    for (j, ulimit) in c.ulimits.iter().flatten().enumerate() {
        let at = format!("{at}.ulimits[{j}]");
        if !ULIMIT_NAMES.contains(&ulimit.name.as_str()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("must be one of {}, got {:?}", ULIMIT_NAMES.join(", "), ulimit.name),
            ));
        }
        for (member, value) in [("softLimit", ulimit.soft_limit), ("hardLimit", ulimit.hard_limit)] {
            if value < 0 {
                return Err(FieldError::new(format!("{at}.{member}"), format!("must be 0 or more, got {value}")));
            }
        }
        if ulimit.soft_limit > ulimit.hard_limit {
            return Err(FieldError::new(
                format!("{at}.softLimit"),
                format!("must not exceed hardLimit ({}), got {}", ulimit.hard_limit, ulimit.soft_limit),
            ));
        }
    }
    Ok(())
}
