//! Filesystem view and device access: containerd's default mounts, masked and read-only
//! paths, and device cgroup rules.

use std::path::Path;

use crate::oci::{DeviceRule, Mount};

/// Hidden from the container (bind-mounted over with /dev/null or an empty tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Visible but read-only.
pub const READONLY_PATHS: &[&str] =
    &["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

fn m(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.to_string(),
        kind: kind.to_string(),
        source: source.to_string(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// The kernel filesystems every container gets (containerd's defaults).
pub fn default_mounts() -> Vec<Mount> {
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        m("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        m("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        m("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        m("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        m("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]
}

/// A host path bind-mounted into the container.
pub fn bind(source: &Path, destination: &str, read_only: bool) -> Mount {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        options.push("ro".to_string());
    }
    Mount {
        destination: destination.to_string(),
        kind: "bind".to_string(),
        source: source.display().to_string(),
        options,
    }
}

/// Deny everything, then allow the character devices a process needs (runc creates the
/// same nodes in /dev) and mknod of any device, which CAP_MKNOD governs.
pub fn device_rules() -> Vec<DeviceRule> {
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| DeviceRule {
        allow: true,
        kind: Some(kind.to_string()),
        major,
        minor,
        access: access.to_string(),
    };
    vec![
        DeviceRule { allow: false, kind: None, major: None, minor: None, access: "rwm".to_string() },
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"), // null
        rule("c", Some(1), Some(5), "rwm"), // zero
        rule("c", Some(1), Some(7), "rwm"), // full
        rule("c", Some(1), Some(8), "rwm"), // random
        rule("c", Some(1), Some(9), "rwm"), // urandom
        rule("c", Some(5), Some(0), "rwm"), // tty
        rule("c", Some(5), Some(2), "rwm"), // ptmx
        rule("c", Some(136), None, "rwm"),  // pts/*
    ]
}
