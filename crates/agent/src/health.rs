//! Container health checks as Docker and ECS run them.
//!
//! Every `interval` the check runs with a `timeout`; `retries` consecutive failures make the
//! container UNHEALTHY, one success makes it HEALTHY. Failures during `startPeriod` do not count,
//! but a success during it does. Until the first verdict the status is UNKNOWN.

use std::time::Duration;

use flotilla_types::task::HealthStatus;
use flotilla_types::task_definition::HealthCheck;

/// Health check settings with ECS's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// argv to exec in the container (`CMD-SHELL x` becomes `/bin/sh -c x`).
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl Probe {
    /// `None` for no check (`NONE`, or an empty command).
    pub fn from_definition(check: &HealthCheck) -> Option<Probe> {
        let argv = match check.command.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => return None,
        };
        let secs = |v: Option<i32>, default: u64| Duration::from_secs(v.map(|v| v.max(0) as u64).unwrap_or(default));
        Some(Probe {
            argv,
            interval: secs(check.interval, 30),
            timeout: secs(check.timeout, 5),
            retries: check.retries.map(|r| r.max(1) as u32).unwrap_or(3),
            start_period: secs(check.start_period, 0),
        })
    }
}

/// The verdict so far, fed one probe result at a time.
#[derive(Clone, Debug)]
pub struct Tracker {
    probe_retries: u32,
    start_period: Duration,
    failures: u32,
    status: HealthStatus,
}

impl Tracker {
    pub fn new(probe: &Probe) -> Tracker {
        Tracker {
            probe_retries: probe.retries,
            start_period: probe.start_period,
            failures: 0,
            status: HealthStatus::Unknown,
        }
    }

    /// Continues from a verdict reached before (a task adopted after a restart keeps the
    /// health it had until its next probe says otherwise).
    pub fn resume(probe: &Probe, status: HealthStatus) -> Tracker {
        Tracker { status, ..Tracker::new(probe) }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Records one probe run that ended `since_start` after the container started.
    pub fn record(&mut self, passed: bool, since_start: Duration) -> HealthStatus {
        if passed {
            self.failures = 0;
            self.status = HealthStatus::Healthy;
        } else if since_start >= self.start_period || self.status == HealthStatus::Healthy {
            self.failures += 1;
            if self.failures >= self.probe_retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cmd: &[&str]) -> HealthCheck {
        HealthCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            interval: Some(5),
            timeout: Some(2),
            retries: Some(2),
            start_period: Some(10),
        }
    }

    #[test]
    fn command_forms() {
        assert_eq!(Probe::from_definition(&check(&["CMD", "true"])).unwrap().argv, ["true"]);
        assert_eq!(
            Probe::from_definition(&check(&["CMD-SHELL", "curl -f localhost || exit 1"])).unwrap().argv,
            ["/bin/sh", "-c", "curl -f localhost || exit 1"]
        );
        assert!(Probe::from_definition(&check(&["NONE"])).is_none());
        let defaults =
            Probe::from_definition(&HealthCheck { command: vec!["CMD".into(), "x".into()], ..Default::default() })
                .unwrap();
        assert_eq!(
            (defaults.interval, defaults.timeout, defaults.retries),
            (Duration::from_secs(30), Duration::from_secs(5), 3)
        );
    }

    #[test]
    fn verdicts() {
        let probe = Probe::from_definition(&check(&["CMD", "x"])).unwrap();
        let mut t = Tracker::new(&probe);
        let s = Duration::from_secs;
        // Failures inside the start period do not count.
        assert_eq!(t.record(false, s(1)), HealthStatus::Unknown);
        assert_eq!(t.record(false, s(6)), HealthStatus::Unknown);
        assert_eq!(t.record(false, s(11)), HealthStatus::Unknown);
        assert_eq!(t.record(false, s(16)), HealthStatus::Unhealthy);
        assert_eq!(t.record(true, s(21)), HealthStatus::Healthy);
        assert_eq!(t.record(false, s(26)), HealthStatus::Healthy);
        assert_eq!(t.record(false, s(31)), HealthStatus::Unhealthy);
        // A success during the start period counts.
        let mut early = Tracker::new(&probe);
        assert_eq!(early.record(true, s(1)), HealthStatus::Healthy);
    }
}
