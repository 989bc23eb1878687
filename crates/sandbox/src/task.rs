//! What the agent asks a sandbox to run: one task, its resource budget, its volumes and its
//! containers. These records cross the shim socket, so they are plain serde data; `validate`
//! is the one place that decides whether a spec is runnable at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default task-wide process limit when the spec leaves `pids_limit` unset.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;
/// Fargate's default ephemeral storage.
pub const DEFAULT_EPHEMERAL_STORAGE_GIB: u64 = 20;

/// Desired state of one task sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Unique on the host; names the task directory and the cgroup. `[A-Za-z0-9_.-]`, 1..=64.
    pub task_id: String,
    /// Task-level CPU in ECS units (1024 = one vCPU); becomes a CFS quota. 0 = no quota.
    pub cpu_units: u32,
    /// Task-level hard memory limit in MiB. 0 = no limit.
    pub memory_mib: u64,
    /// Task-wide process limit; `None` = [`DEFAULT_PIDS_LIMIT`].
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// ECS `pidMode: "task"`: all containers share one PID namespace.
    #[serde(default)]
    pub pid_mode_task: bool,
    /// Size of the task's scratch filesystem (writable layers and volumes); `None` = 20 GiB.
    #[serde(default)]
    pub ephemeral_storage_gib: Option<u64>,
    /// Hostname shared by all containers (one UTS namespace); `None` = derived from the task id.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Task-local volume names (ECS `volumes` without host or EFS configuration).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// EFS volumes, each a directory of a file system on this host.
    #[serde(default)]
    pub efs_volumes: Vec<crate::efs::EfsMount>,
    pub containers: Vec<ContainerSpec>,
}

/// The image's own runtime defaults (the `config` object of an OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `KEY=value` strings, as in the image config.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// ECS `ulimits` entry; `name` is ECS's (`nofile`, `nproc`, `core`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: u64,
    pub hard_limit: u64,
}

/// ECS `mountPoints` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// ECS `volumesFrom` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFrom {
    pub source_container: String,
    #[serde(default)]
    pub read_only: bool,
}

/// One container of a task, with the image already unpacked into `layers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// `[A-Za-z0-9_-]`, 1..=255 (ECS container name rules).
    pub name: String,
    /// Unpacked layer directories, lowest (base) layer first. Never written to.
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub image_config: ImageConfig,
    #[serde(default)]
    pub entry_point: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<EnvVar>,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Container CPU units; relative weight inside the task (cpu shares, at least 2).
    #[serde(default)]
    pub cpu_units: u32,
    /// Container hard memory limit in MiB (ECS `memory`).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Soft limit in MiB (ECS `memoryReservation`).
    #[serde(default)]
    pub memory_reservation_mib: Option<u64>,
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    #[serde(default)]
    pub readonly_root_filesystem: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub volumes_from: Vec<VolumeFrom>,
    /// ECS `linuxParameters.initProcessEnabled`: run a minimal init (tini) as PID 1.
    #[serde(default)]
    pub init_process_enabled: bool,
}

impl ContainerSpec {
    /// A container with every optional field at its default.
    pub fn new(name: impl Into<String>, layers: Vec<PathBuf>) -> Self {
        ContainerSpec {
            name: name.into(),
            layers,
            image_config: ImageConfig::default(),
            entry_point: None,
            command: None,
            environment: Vec::new(),
            working_directory: None,
            user: None,
            cpu_units: 0,
            memory_mib: None,
            memory_reservation_mib: None,
            ulimits: Vec::new(),
            readonly_root_filesystem: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            mount_points: Vec::new(),
            volumes_from: Vec::new(),
            init_process_enabled: false,
        }
    }
}

impl TaskSpec {
    pub fn pids_limit(&self) -> u64 {
        self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)
    }

    pub fn ephemeral_storage_gib(&self) -> u64 {
        self.ephemeral_storage_gib.unwrap_or(DEFAULT_EPHEMERAL_STORAGE_GIB)
    }

    /// The hostname every container sees; a DNS label derived from the task id by default.
    pub fn hostname(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => {
                let label: String = self
                    .task_id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
                    .take(63)
                    .collect();
                label.trim_matches('-').to_string()
            }
        }
    }

    pub fn container(&self, name: &str) -> Option<&ContainerSpec> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Checks everything that can be checked without touching the host.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_task_id(&self.task_id) {
            return Err(SpecError::invalid(format!(
                "task id {:?} must be 1-64 characters of [A-Za-z0-9_.-] and not start with '.'",
                self.task_id
            )));
        }
        if self.containers.is_empty() {
            return Err(SpecError::invalid("a task needs at least one container"));
        }
        if self.pids_limit == Some(0) {
            return Err(SpecError::invalid("pidsLimit must be positive"));
        }
        if self.ephemeral_storage_gib == Some(0) {
            return Err(SpecError::invalid("ephemeralStorageGiB must be positive"));
        }
        let hostname = self.hostname();
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['/', '\0', ' ']) {
            return Err(SpecError::invalid(format!("hostname {hostname:?} is not a valid host name")));
        }
        let all_volumes =
            || self.volumes.iter().map(String::as_str).chain(self.efs_volumes.iter().map(|v| v.name.as_str()));
        let volumes: BTreeSet<&str> = all_volumes().collect();
        if volumes.len() != all_volumes().count() {
            return Err(SpecError::invalid("volume names must be unique"));
        }
        for v in all_volumes() {
            if !valid_container_name(v) {
                return Err(SpecError::invalid(format!("volume name {v:?} must be 1-255 characters of [A-Za-z0-9_-]")));
            }
        }
        let mut names = BTreeSet::new();
        for c in &self.containers {
            if !valid_container_name(&c.name) {
                return Err(SpecError::invalid(format!(
                    "container name {:?} must be 1-255 characters of [A-Za-z0-9_-]",
                    c.name
                )));
            }
            if !names.insert(c.name.as_str()) {
                return Err(SpecError::invalid(format!("container name {:?} is used twice", c.name)));
            }
            if c.layers.is_empty() {
                return Err(SpecError::invalid(format!("container {:?} has no image layers", c.name)));
            }
            if let Some(l) = c.layers.iter().find(|l| !l.is_absolute()) {
                return Err(SpecError::invalid(format!("container {:?}: layer path {l:?} is not absolute", c.name)));
            }
            for m in &c.mount_points {
                if !volumes.contains(m.source_volume.as_str()) {
                    return Err(SpecError::invalid(format!(
                        "container {:?} mounts unknown volume {:?}",
                        c.name, m.source_volume
                    )));
                }
                if !m.container_path.starts_with('/') || m.container_path.split('/').any(|p| p == "..") {
                    return Err(SpecError::invalid(format!(
                        "container {:?}: containerPath {:?} must be absolute without '..'",
                        c.name, m.container_path
                    )));
                }
            }
            if let (Some(limit), Some(reservation)) = (c.memory_mib, c.memory_reservation_mib)
                && reservation > limit
            {
                return Err(SpecError::invalid(format!(
                    "container {:?}: memoryReservation {reservation} exceeds memory {limit}",
                    c.name
                )));
            }
        }
        for c in &self.containers {
            for f in &c.volumes_from {
                if !names.contains(f.source_container.as_str()) || f.source_container == c.name {
                    return Err(SpecError::invalid(format!(
                        "container {:?}: volumesFrom names unknown container {:?}",
                        c.name, f.source_container
                    )));
                }
            }
        }
        // Resolving every container's mounts detects volumesFrom cycles.
        for c in &self.containers {
            self.resolved_mounts(&c.name)?;
        }
        Ok(())
    }

    /// The container's volume mounts: its own `mountPoints` plus, through `volumesFrom`, the
    /// mounts of the source containers (transitively, as Docker does). A read-only
    /// `volumesFrom` makes every inherited mount read-only. Later entries win on the same path.
    pub fn resolved_mounts(&self, container: &str) -> Result<Vec<MountPoint>, SpecError> {
        let mut out = BTreeMap::new();
        self.collect_mounts(container, false, &mut Vec::new(), &mut out)?;
        Ok(out.into_values().collect())
    }

    fn collect_mounts(
        &self,
        container: &str,
        force_ro: bool,
        stack: &mut Vec<String>,
        out: &mut BTreeMap<String, MountPoint>,
    ) -> Result<(), SpecError> {
        if stack.iter().any(|s| s == container) {
            stack.push(container.to_string());
            return Err(SpecError::invalid(format!("volumesFrom cycle: {}", stack.join(" -> "))));
        }
        let spec = self
            .container(container)
            .ok_or_else(|| SpecError::invalid(format!("volumesFrom names unknown container {container:?}")))?;
        stack.push(container.to_string());
        for from in &spec.volumes_from {
            self.collect_mounts(&from.source_container, force_ro || from.read_only, stack, out)?;
        }
        stack.pop();
        for m in &spec.mount_points {
            let mut m = m.clone();
            m.read_only |= force_ro;
            out.insert(m.container_path.clone(), m);
        }
        Ok(())
    }
}

/// Task ids name directories and cgroups, so they must be a single safe path component.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// ECS container names: up to 255 letters, digits, hyphens and underscores.
pub fn valid_container_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// A spec the sandbox cannot run, with the reason in ECS terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SpecError {
    pub reason: String,
}

impl SpecError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        SpecError { reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(containers: Vec<ContainerSpec>) -> TaskSpec {
        TaskSpec {
            task_id: "t1".into(),
            cpu_units: 256,
            memory_mib: 512,
            pids_limit: None,
            pid_mode_task: false,
            ephemeral_storage_gib: None,
            hostname: None,
            volumes: vec!["data".into(), "logs".into()],
            efs_volumes: Vec::new(),
            containers,
        }
    }

    fn mp(volume: &str, path: &str, ro: bool) -> MountPoint {
        MountPoint { source_volume: volume.into(), container_path: path.into(), read_only: ro }
    }

    #[test]
    fn volumes_from_is_transitive_and_read_only_propagates() {
        let mut a = ContainerSpec::new("a", vec!["/l".into()]);
        a.mount_points = vec![mp("data", "/data", false)];
        let mut b = ContainerSpec::new("b", vec!["/l".into()]);
        b.volumes_from = vec![VolumeFrom { source_container: "a".into(), read_only: true }];
        b.mount_points = vec![mp("logs", "/logs", false)];
        let mut c = ContainerSpec::new("c", vec!["/l".into()]);
        c.volumes_from = vec![VolumeFrom { source_container: "b".into(), read_only: false }];
        let t = task(vec![a, b, c]);
        t.validate().unwrap();
        assert_eq!(t.resolved_mounts("c").unwrap(), vec![mp("data", "/data", true), mp("logs", "/logs", false)]);
    }

    #[test]
    fn volumes_from_cycle_is_rejected() {
        let mut a = ContainerSpec::new("a", vec!["/l".into()]);
        a.volumes_from = vec![VolumeFrom { source_container: "b".into(), read_only: false }];
        let mut b = ContainerSpec::new("b", vec!["/l".into()]);
        b.volumes_from = vec![VolumeFrom { source_container: "a".into(), read_only: false }];
        let err = task(vec![a, b]).validate().unwrap_err();
        assert!(err.reason.contains("cycle"), "{err}");
    }

    #[test]
    fn bad_names_and_unknown_volumes_are_rejected() {
        let mut t = task(vec![ContainerSpec::new("web", vec!["/l".into()])]);
        t.validate().unwrap();
        t.task_id = "../x".into();
        assert!(t.validate().is_err());
        t.task_id = "ok".into();
        t.containers[0].mount_points = vec![mp("nope", "/x", false)];
        assert!(t.validate().unwrap_err().reason.contains("unknown volume"));
        t.containers[0].mount_points = vec![mp("data", "relative", false)];
        assert!(t.validate().is_err());
    }

    #[test]
    fn default_hostname_is_a_dns_label() {
        let mut t = task(vec![ContainerSpec::new("web", vec!["/l".into()])]);
        t.task_id = "Abc_def.9".into();
        assert_eq!(t.hostname(), "abc-def-9");
    }
}
