//! The host's limits that many tasks on one host run into, raised at start-up where Flotilla
//! may (`flotilla up` and `flotilla agent`), and what is left of them turned into a task cap
//! that placement enforces with ECS's capacity failure, so a host refuses a task it could not
//! finish making rather than failing half-way.
//!
//! Open files: the agent holds a few descriptors per task (its wait on the shim, the metadata
//! listener in the task's namespace, log files while shipping); the soft `RLIMIT_NOFILE` is
//! raised to the hard one. Process ids: every task's shim, runtime and containers take pids
//! from the host's `kernel.pid_max`; it is raised to the kernel's ceiling, as systemd does.

use std::io;

/// Descriptors `flotilla up` keeps for itself (store, API connections, registry pulls, the
/// scratch pool, load balancers) beyond the tasks'.
const FDS_RESERVED: u64 = 256;
/// Descriptors the agent may hold per task at once: its wait on the shim, the metadata
/// listener, a log file and a shim request in flight.
const FDS_PER_TASK: u64 = 4;
/// The kernel's ceiling for `kernel.pid_max` on 64-bit hosts (what systemd sets).
const PID_MAX_CEILING: u64 = 4_194_304;
const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// What start-up found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// The soft `RLIMIT_NOFILE` after raising it.
    pub open_files: u64,
    /// `kernel.pid_max` after raising it.
    pub pid_max: u64,
}

impl HostLimits {
    /// Raises what may be raised; a limit that cannot be is logged with its name and kept.
    pub fn raise() -> HostLimits {
        let open_files = match raise_open_files() {
            Ok((before, after)) => {
                if after > before {
                    tracing::debug!(before, after, "raised RLIMIT_NOFILE (open files) to its hard limit");
                }
                after
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise RLIMIT_NOFILE (open files)");
                FDS_RESERVED + FDS_PER_TASK
            }
        };
        let pid_max = match raise_pid_max() {
            Ok(v) => v,
            Err(e) => {
                let current = read_pid_max().unwrap_or(32_768);
                tracing::warn!(
                    error = %e,
                    pid_max = current,
                    "cannot raise kernel.pid_max ({PID_MAX}); tasks share {current} process ids"
                );
                current
            }
        };
        HostLimits { open_files, pid_max }
    }

    /// How many tasks the open-file limit leaves room for.
    pub fn max_tasks(&self) -> u32 {
        let tasks = self.open_files.saturating_sub(FDS_RESERVED) / FDS_PER_TASK;
        u32::try_from(tasks).unwrap_or(u32::MAX)
    }

    /// The host's task cap: the operator's `--max-tasks` within what the limits allow. Logs
    /// which one binds when the limits are the lower.
    pub fn cap(&self, requested: Option<u32>) -> u32 {
        let allowed = self.max_tasks();
        match requested {
            Some(n) if n <= allowed => n,
            _ => {
                if requested.is_some() {
                    tracing::warn!(
                        requested = requested,
                        allowed,
                        open_files = self.open_files,
                        "--max-tasks is above what RLIMIT_NOFILE (open files) allows; this host takes {allowed} tasks"
                    );
                }
                allowed
            }
        }
    }
}

/// Soft `RLIMIT_NOFILE` to the hard limit: (before, after).
fn raise_open_files() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; raising the soft limit up to the hard one is
        // always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

fn read_pid_max() -> io::Result<u64> {
    std::fs::read_to_string(PID_MAX)?.trim().parse().map_err(io::Error::other)
}

/// `kernel.pid_max` to the kernel's ceiling unless it is there already: the new value.
fn raise_pid_max() -> io::Result<u64> {
    let current = read_pid_max()?;
    if current >= PID_MAX_CEILING {
        return Ok(current);
    }
    std::fs::write(PID_MAX, PID_MAX_CEILING.to_string())?;
    tracing::info!(before = current, after = PID_MAX_CEILING, "raised kernel.pid_max for the tasks' processes");
    read_pid_max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_caps_tasks() {
        let limits = HostLimits { open_files: 20_000, pid_max: PID_MAX_CEILING };
        assert_eq!(limits.max_tasks(), 4936);
        assert_eq!(limits.cap(Some(1000)), 1000);
        assert_eq!(limits.cap(None), 4936);
        assert_eq!(limits.cap(Some(9000)), 4936);
        // A host left at the common soft and hard limit of 1024 open files.
        assert_eq!(HostLimits { open_files: 1024, pid_max: 32_768 }.max_tasks(), 192);
        assert_eq!(HostLimits { open_files: 100, pid_max: 32_768 }.max_tasks(), 0);
    }
}
