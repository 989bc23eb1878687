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
    use flotilla_sandbox::{ContainerSpec, SimSandbox, TaskSpec};
    use serde_json::json;

    use super::*;

    fn definition() -> TaskDefinition {
        let container = |name: &str, policy: &str| json!({"name": name, "image": "busybox", "flotillaPod": {"restartPolicy": policy}});
        serde_json::from_value(json!({
            "taskDefinitionArn": "arn", "family": "f", "revision": 1, "status": "ACTIVE",
            "containerDefinitions": [
                container("always", "Always"), container("onfailure", "OnFailure"),
                container("never", "Never"), {"name": "ecs", "image": "busybox"},
            ],
            "volumes": [], "placementConstraints": [], "requiresAttributes": [], "compatibilities": [],
            "registeredAt": 1.0,
        }))
        .unwrap()
    }

    /// Makes every scheduled restart due now (instead of waiting out its back-off).
    fn due_now(r: &mut Restarts) {
        for p in r.containers.values_mut() {
            p.due = p.due.map(|_| Instant::now());
        }
    }

    #[tokio::test]
    async fn ended_containers_start_again_as_their_policy_says_after_a_back_off() {
        let sim = SimSandbox::new();
        let names = ["always", "onfailure", "never", "ecs"];
        let containers = names.iter().map(|c| ContainerSpec::new(*c, Vec::new())).collect();
        let spec = TaskSpec {
            task_id: "t".into(),
            cpu_units: 256,
            memory_mib: 512,
            pids_limit: None,
            pid_mode_task: false,
            ephemeral_storage_gib: None,
            hostname: None,
            volumes: Vec::new(),
            efs_volumes: Vec::new(),
            containers,
        };
        sim.create_task(spec).await.unwrap();
        for name in names {
            sim.start_container("t", name).await.unwrap();
        }
        for (name, code) in [("always", 0), ("onfailure", 0), ("never", 1), ("ecs", 1)] {
            assert!(sim.exit("t", name, code));
        }
        let def = definition();
        assert!(!restarts(&def, "onfailure", Some(0)) && restarts(&def, "onfailure", Some(137)));
        let mut r = Restarts::default();
        let mut report = TaskReport::new("arn");
        let state = sim.state("t").await.unwrap();
        r.pass(sim.as_ref(), "t", &def, &state, &mut report).await;
        assert!(report.containers.is_empty(), "only scheduled: {report:?}");
        let first = r.next_due().expect("a restart is due later");
        assert!(first > Instant::now() + Duration::from_secs(9), "the kubelet's 10 s back-off");
        due_now(&mut r);
        r.pass(sim.as_ref(), "t", &def, &state, &mut report).await;
        assert_eq!(report.containers.len(), 1, "{report:?}");
        assert_eq!((report.containers[0].name.as_str(), report.containers[0].restart_count), ("always", Some(1)));
        let state = sim.state("t").await.unwrap();
        let of = |n: &str| state.container(n).unwrap().state;
        assert_eq!(of("always"), ContainerState::Running);
        for n in ["onfailure", "never", "ecs"] {
            assert_eq!(of(n), ContainerState::Exited, "{n}");
        }
        // Its next end waits twice as long.
        assert!(sim.exit("t", "always", 2));
        let state = sim.state("t").await.unwrap();
        r.pass(sim.as_ref(), "t", &def, &state, &mut TaskReport::new("arn")).await;
        assert!(r.next_due().unwrap() > Instant::now() + Duration::from_secs(19));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let secs: Vec<u64> = (0..7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert!(RestartPolicy::OnFailure.restarts(Some(137)) && !RestartPolicy::OnFailure.restarts(Some(0)));
        assert!(RestartPolicy::Always.restarts(Some(0)) && !RestartPolicy::Never.restarts(Some(1)));
    }
}
