//! In-place restarts of a pod's containers, as the kubelet does them: a container whose pod's
//! `restartPolicy` asks for it (Always; OnFailure after a non-zero exit) is started again in
//! its running task (the same bundle and root filesystem, a new process) after a back-off of
//! 10 s doubling to 5 min, reset once it has run 10 min. The task record's container stays
//! RUNNING and counts its restarts (`restartCount`); a container killed for its liveness
//! probe comes back the same way. ECS tasks (no policy) keep ECS's rule: an essential
//! container's end stops the task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_host::{ContainerReport, StopRequest, TaskReport};
use flotilla_sandbox::{ContainerState, Sandbox, TaskStatus as SandboxStatus};
use flotilla_types::task::{StopCode, Task};
use flotilla_types::task_definition::{RestartPolicy, TaskDefinition};

/// The kubelet's first back-off, doubled per restart up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The pod's restart policy for container `name` of `definition`, if it is a pod's.
pub(crate) fn policy(definition: &TaskDefinition, name: &str) -> Option<RestartPolicy> {
    let def = definition.container_definitions.iter().find(|d| d.name.as_deref() == Some(name))?;
    def.pod.as_ref()?.restart_policy
}

/// Whether container `name`, ended with `exit_code`, is to start again rather than end.
pub(crate) fn restarts(definition: &TaskDefinition, name: &str, exit_code: Option<i32>) -> bool {
    policy(definition, name).is_some_and(|p| p.restarts(exit_code))
}

/// The back-off before restart number `count + 1`.
pub(crate) fn backoff(count: u32) -> Duration {
    BACKOFF.saturating_mul(1u32 << count.min(5)).min(MAX_BACKOFF)
}

struct Pending {
    /// Restarts so far.
    count: u32,
    /// When the ended container starts again, once its end was seen.
    due: Option<Instant>,
}

/// The restarts of one task's containers.
#[derive(Default)]
pub(crate) struct Restarts {
    containers: HashMap<String, Pending>,
}

impl Restarts {
    /// Continues from the counts the record has (a supervisor adopting a running task).
    pub fn new(task: &Task) -> Restarts {
        let containers = task
            .containers
            .iter()
            .filter_map(|c| Some((c.name.clone(), Pending { count: c.restart_count?, due: None })))
            .collect();
        Restarts { containers }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.containers.values().filter_map(|p| p.due).min()
    }

    /// Schedules the restart of every ended container whose policy asks for one and starts
    /// those whose back-off is over; what happened goes into `report`.
    pub async fn pass(
        &mut self,
        sandbox: &dyn Sandbox,
        task_id: &str,
        definition: &TaskDefinition,
        status: &SandboxStatus,
        report: &mut TaskReport,
    ) {
        let now = Instant::now();
        for c in status.containers.iter().filter(|c| c.state == ContainerState::Exited) {
            let code = if c.oom_killed { Some(137) } else { c.exit_code };
            if report.stop.is_some() || !restarts(definition, &c.name, code) {
                continue;
            }
            let pending = self.containers.entry(c.name.clone()).or_insert(Pending { count: 0, due: None });
            let Some(due) = pending.due else {
                let ran = match (c.started_at, c.exited_at) {
                    (Some(start), Some(end)) => Duration::from_millis(end.saturating_sub(start)),
                    _ => Duration::ZERO,
                };
                let delay = if ran >= BACKOFF_RESET { BACKOFF } else { backoff(pending.count) };
                tracing::info!(task = task_id, container = %c.name, exit_code = ?code, ?delay, "restarting after back-off");
                pending.due = Some(now + delay);
                continue;
            };
            if now < due {
                continue;
            }
            pending.due = None;
            match sandbox.start_container(task_id, &c.name).await {
                Ok(_) => {
                    pending.count += 1;
                    report.containers.push(ContainerReport {
                        restart_count: Some(pending.count),
                        ..ContainerReport::new(c.name.clone())
                    });
                }
                Err(e) => {
                    let reason = format!("CannotStartContainerError: {e}");
                    report.stop = Some(StopRequest { code: StopCode::TaskFailedToStart, reason });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let secs: Vec<u64> = (0..7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert!(RestartPolicy::OnFailure.restarts(Some(137)) && !RestartPolicy::OnFailure.restarts(Some(0)));
        assert!(RestartPolicy::Always.restarts(Some(0)) && !RestartPolicy::Never.restarts(Some(1)));
    }
}
