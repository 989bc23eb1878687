//! One task's life on this host, from PROVISIONING to STOPPED.
//!
//! A supervisor either starts a task from scratch or adopts one whose sandbox already exists
//! (after an agent restart), then loops: start containers whose dependencies are met, record
//! exits, run health checks, ship logs, and stop the task when it should stop. Every change is
//! reported through `Control::update_task`, which only lets lastStatus move forward.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_control::{ControlError, NetworkInterface};
use flotilla_sandbox::{ContainerState, ExecSpec, Sandbox, TaskStatus as SandboxStatus};
use flotilla_types::Timestamp;
use flotilla_types::task::{DesiredStatus, HealthStatus, StopCode, Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinition;

use crate::Agent;
use crate::health::{Probe, Tracker};
use crate::network::{AwsvpcRequest, eni_attachment};
use crate::order::{Observed, Readiness, readiness, stop_waves};

/// How often a supervisor looks at its task right after something changed; while nothing
/// does, the interval doubles up to `IDLE_TICK`, so idle tasks cost the host next to nothing.
/// Store changes (StopTask) wake it at once either way.
const TICK: Duration = Duration::from_millis(100);
const IDLE_TICK: Duration = Duration::from_secs(1);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";

struct Health {
    probe: Probe,
    tracker: Tracker,
    next_at: Instant,
}

pub(crate) struct Supervisor {
    pub agent: Arc<Agent>,
    pub cluster: String,
    pub task_id: String,
    pub task_arn: String,
    /// What RunTask asked for the task's interface.
    pub awsvpc: Option<AwsvpcRequest>,
}

/// The id of the task's `ElasticNetworkInterface` attachment, once it has one.
fn attachment_id(task: &Task) -> Option<String> {
    task.attachments
        .iter()
        .find(|a| a["type"] == "ElasticNetworkInterface")
        .and_then(|a| a["id"].as_str())
        .map(str::to_owned)
}

/// Sets the attachment's status (and details, when the interface is known).
fn set_attachment(task: &mut Task, status: &str, eni: Option<&NetworkInterface>) {
    let Some(id) = attachment_id(task) else { return };
    let keep_details = eni.is_none();
    for a in task.attachments.iter_mut().filter(|a| a["id"].as_str() == Some(id.as_str())) {
        let details = a["details"].take();
        *a = eni_attachment(&id, status, eni);
        if keep_details {
            a["details"] = details;
        }
    }
}

impl Supervisor {
    async fn update(&self, change: impl Fn(&mut Task)) -> Result<Task, ControlError> {
        self.agent
            .control
            .update_task(&self.cluster, &self.task_id, |t| {
                change(t);
                Ok(())
            })
            .await
    }

    /// Advances lastStatus to `to` (and sets the matching timestamp) unless already past it.
    async fn advance(&self, to: TaskStatus, extra: impl Fn(&mut Task)) -> Result<Task, ControlError> {
        self.update(|t| {
            if t.last_status < to {
                t.last_status = to;
                let now = Some(Timestamp::now());
                match to {
                    TaskStatus::Pending => t.pull_started_at = t.pull_started_at.or(now),
                    TaskStatus::Activating => t.pull_stopped_at = t.pull_stopped_at.or(now),
                    TaskStatus::Running => {
                        t.started_at = t.started_at.or(now);
                        t.connectivity = Some("CONNECTED".into());
                        t.connectivity_at = t.connectivity_at.or(now);
                    }
                    TaskStatus::Stopping => t.stopping_at = t.stopping_at.or(now),
                    TaskStatus::Deprovisioning => t.execution_stopped_at = t.execution_stopped_at.or(now),
                    TaskStatus::Stopped => {
                        t.stopped_at = t.stopped_at.or(now);
                        t.execution_stopped_at = t.execution_stopped_at.or(now);
                        t.desired_status = DesiredStatus::Stopped;
                        for c in &mut t.containers {
                            c.last_status = "STOPPED".into();
                        }
                    }
                    _ => {}
                }
            }
            extra(t);
        })
        .await
    }

    /// Asks the task to stop for `code`/`reason`, unless it is already stopping for another.
    async fn request_stop(&self, code: StopCode, reason: &str) -> Result<Task, ControlError> {
        self.update(|t| {
            if t.desired_status != DesiredStatus::Stopped {
                t.desired_status = DesiredStatus::Stopped;
                t.stop_code = Some(code);
                t.stopped_reason = Some(reason.to_owned());
            }
        })
        .await
    }

    /// A task that could not start: it goes straight to STOPPED with the reason on the task
    /// and (when one container is to blame) on that container.
    async fn fail_to_start(&self, reason: String, container: Option<&str>) -> Result<(), ControlError> {
        self.request_stop(StopCode::TaskFailedToStart, &reason).await?;
        self.release_interface().await?;
        self.advance(TaskStatus::Stopped, |t| {
            if let Some(name) = container
                && let Some(c) = t.containers.iter_mut().find(|c| c.name == name)
            {
                c.reason = Some(reason.clone());
            }
        })
        .await?;
        Ok(())
    }

    pub async fn run(self) {
        if let Err(e) = self.run_inner().await {
            tracing::warn!(task = %self.task_id, error = %e, "supervisor stopped early; the next reconcile pass resumes it");
        }
    }

    async fn run_inner(&self) -> Result<(), ControlError> {
        let Some(task) = self.agent.task(&self.cluster, &self.task_id).await? else { return Ok(()) };
        if task.last_status == TaskStatus::Stopped {
            return Ok(());
        }
        let (definition, _) = self.agent.control.describe_task_definition(&task.task_definition_arn).await?;
        let existing = self.agent.sandbox.state(&self.task_id).await.ok();

        if existing.is_none() {
            if task.desired_status == DesiredStatus::Stopped {
                // Stopped before it ever ran here.
                self.release_interface().await?;
                self.advance(TaskStatus::Stopped, |_| {}).await?;
                return Ok(());
            }
            if task.last_status >= TaskStatus::Activating {
                // It had a sandbox, and the sandbox is gone (host rebooted, state dir wiped).
                self.request_stop(
                    StopCode::TaskFailedToStart,
                    "Task stopped: its sandbox was lost while the agent was away",
                )
                .await?;
                self.release_interface().await?;
                self.advance(TaskStatus::Stopped, |_| {}).await?;
                return Ok(());
            }
            if !self.provision(&task, &definition).await? {
                return Ok(());
            }
        } else if task.desired_status != DesiredStatus::Stopped {
            // Adopted after a restart: make sure its interface is still wired (idempotent).
            let Some(eni) = self.create_interface(&task).await? else { return Ok(()) };
            if !self.attach_interface(&eni).await? {
                return Ok(());
            }
        }
        let metadata = self.agent.start_metadata(&self.cluster, &self.task_id).await;
        let outcome = self.watch(&definition).await;
        self.stop(&definition).await?;
        if let Some(handle) = metadata {
            handle.abort();
        }
        outcome
    }

    /// PENDING (pull) and ACTIVATING (sandbox); false when the task failed to start.
    async fn provision(&self, task: &Task, definition: &TaskDefinition) -> Result<bool, ControlError> {
        // PROVISIONING: the interface record (address, MAC) exists before anything is pulled.
        let Some(eni) = self.create_interface(task).await? else { return Ok(false) };
        self.advance(TaskStatus::Pending, |_| {}).await?;
        let mut images = HashMap::new();
        let secrets = self.agent.secrets.as_deref();
        for c in &definition.container_definitions {
            let name = c.name.clone().unwrap_or_default();
            let reference = c.image.clone().unwrap_or_default();
            let login = match crate::secrets::registry_credentials(secrets, c).await {
                Ok(login) => login,
                Err(reason) => {
                    self.fail_to_start(reason, Some(&name)).await?;
                    return Ok(false);
                }
            };
            match self.agent.images.pull(&reference, login, flotilla_image::Progress::none()).await {
                Ok(image) => {
                    images.insert(name, image);
                }
                // As the ECS agent's default pull behaviour: when the registry cannot be
                // reached, a copy already on the host (pulled before, or imported on an
                // offline host with `flotilla image import`) is used instead.
                Err(e) if let Ok(Some(cached)) = self.agent.images.get(&reference).await => {
                    tracing::warn!(task = %self.task_id, image = %reference, error = %e, "pull failed; using the image already on this host");
                    images.insert(name, cached);
                }
                Err(e) => {
                    let reason = format!("CannotPullContainerError: {}", e.aws_reason());
                    self.fail_to_start(reason, Some(&name)).await?;
                    return Ok(false);
                }
            }
        }
        let digests: HashMap<String, String> =
            images.iter().map(|(n, i)| (n.clone(), i.manifest_digest.to_string())).collect();
        self.advance(TaskStatus::Activating, |t| {
            for c in &mut t.containers {
                c.image_digest = digests.get(&c.name).cloned();
            }
        })
        .await?;
        if let Err(reason) = self.agent.prepare_logs(task, definition).await {
            self.fail_to_start(reason, None).await?;
            return Ok(false);
        }
        let resolved = match crate::secrets::resolve(secrets, definition).await {
            Ok(r) => r,
            Err(reason) => {
                self.fail_to_start(reason, None).await?;
                return Ok(false);
            }
        };
        let injected = crate::spec::Injected {
            region: &self.agent.region,
            metadata_base: crate::metadata::METADATA_BASE,
            secrets: &resolved,
        };
        let spec = match crate::spec::task_spec(task, definition, &images, &injected) {
            Ok(spec) => spec,
            Err(e) => {
                self.fail_to_start(e.to_string(), None).await?;
                return Ok(false);
            }
        };
        if let Err(e) = self.agent.sandbox.create_task(spec).await {
            self.fail_to_start(format!("ResourceInitializationError: failed to create the task sandbox: {e}"), None)
                .await?;
            let _ = self.agent.sandbox.destroy(&self.task_id).await;
            return Ok(false);
        }
        self.attach_interface(&eni).await
    }

    /// The task's interface record, made on first call (the attachment shows PRECREATED);
    /// `None` when the task failed to start for want of one.
    async fn create_interface(&self, task: &Task) -> Result<Option<NetworkInterface>, ControlError> {
        let Some(request) = &self.awsvpc else {
            let reason = "ResourceInitializationError: the task has no awsvpcConfiguration; run it with networkConfiguration.awsvpcConfiguration";
            self.fail_to_start(reason.into(), None).await?;
            return Ok(None);
        };
        let attachment = match attachment_id(task) {
            Some(id) => id,
            None => {
                let fresh = uuid::Uuid::new_v4().to_string();
                let task = self
                    .update(|t| {
                        if attachment_id(t).is_none() {
                            t.attachments.push(eni_attachment(&fresh, "PRECREATED", None));
                        }
                    })
                    .await?;
                attachment_id(&task).unwrap_or(fresh)
            }
        };
        match self.agent.networking.create_interface(&self.task_arn, &attachment, request).await {
            Ok(eni) => {
                self.update(|t| set_attachment(t, "PRECREATED", Some(&eni))).await?;
                Ok(Some(eni))
            }
            Err(reason) => {
                self.fail_to_start(reason, None).await?;
                Ok(None)
            }
        }
    }

    /// Wires the interface into the sandbox's namespace: the attachment becomes ATTACHED and
    /// every container shows the address. False when the task failed to start instead.
    async fn attach_interface(&self, eni: &NetworkInterface) -> Result<bool, ControlError> {
        let dir = self.agent.sandbox.task_dir(&self.task_id);
        if let Err(e) = self.agent.networking.attach(eni, &dir.join("ns/net"), &dir.join("etc/resolv.conf")).await {
            self.fail_to_start(
                format!("ResourceInitializationError: failed to attach the network interface: {e}"),
                None,
            )
            .await?;
            let _ = self.agent.sandbox.destroy(&self.task_id).await;
            return Ok(false);
        }
        let ip = eni.private_ip.to_string();
        self.update(|t| {
            set_attachment(t, "ATTACHED", Some(eni));
            let attachment = attachment_id(t);
            for c in &mut t.containers {
                c.network_interfaces = vec![flotilla_types::task::NetworkInterface {
                    attachment_id: attachment.clone(),
                    private_ipv4_address: Some(ip.clone()),
                }];
            }
        })
        .await?;
        Ok(true)
    }

    /// Removes the interface from the host and releases its addresses (idempotent); the
    /// attachment shows DELETED.
    async fn release_interface(&self) -> Result<(), ControlError> {
        if let Err(e) = self.agent.networking.detach(&self.task_arn).await {
            tracing::error!(task = %self.task_id, error = %e, "cannot release the task's interface; it will be retried");
            return Err(ControlError::client(format!("network teardown failed: {e}")));
        }
        self.update(|t| set_attachment(t, "DELETED", None)).await?;
        Ok(())
    }

    /// Runs the task until it should stop: starts containers as their dependencies allow,
    /// records exits, runs health checks and ships logs.
    async fn watch(&self, definition: &TaskDefinition) -> Result<(), ControlError> {
        let mut health: HashMap<String, Health> = HashMap::new();
        for c in &definition.container_definitions {
            if let Some(probe) = c.health_check.as_ref().and_then(Probe::from_definition) {
                let tracker = Tracker::new(&probe);
                health.insert(c.name.clone().unwrap_or_default(), Health { probe, tracker, next_at: Instant::now() });
            }
        }
        let mut wake = self.agent.control.store().watch(&format!("ecs/tasks/{}/{}", self.cluster, self.task_id));
        let mut tick = TICK;
        let mut last_seen: Option<SandboxStatus> = None;
        loop {
            let Some(task) = self.agent.task(&self.cluster, &self.task_id).await? else { return Ok(()) };
            if task.desired_status == DesiredStatus::Stopped {
                return Ok(());
            }
            let status = match self.agent.sandbox.state(&self.task_id).await {
                Ok(s) => s,
                Err(e) => {
                    self.request_stop(StopCode::TaskFailedToStart, &format!("Task sandbox failed: {e}")).await?;
                    return Ok(());
                }
            };
            self.agent.ship_logs(&task, definition).await;
            self.record_exits(&task, definition, &status).await?;
            self.start_ready(&task, definition, &status, &health).await?;
            self.check_health(&task, definition, &status, &mut health).await?;
            let waiting_to_start = status.containers.iter().any(|c| c.state == ContainerState::Created);
            tick =
                if last_seen.as_ref() != Some(&status) || waiting_to_start { TICK } else { (tick * 2).min(IDLE_TICK) };
            last_seen = Some(status);
            // Wake in time for the next health probe too.
            let next_probe = health.values().map(|h| h.next_at.saturating_duration_since(Instant::now())).min();
            let sleep = next_probe.map_or(tick, |p| p.min(tick));
            tokio::select! {
                _ = wake.next() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn record_exits(
        &self,
        task: &Task,
        definition: &TaskDefinition,
        status: &SandboxStatus,
    ) -> Result<(), ControlError> {
        for c in &status.containers {
            let Some(reported) = task.containers.iter().find(|t| t.name == c.name) else { continue };
            if c.state == ContainerState::Running && reported.last_status != "RUNNING" {
                let runtime_id = format!("{}-{}", self.task_id, c.name);
                self.update(|t| {
                    if let Some(tc) = t.containers.iter_mut().find(|tc| tc.name == c.name) {
                        tc.last_status = "RUNNING".into();
                        tc.runtime_id = Some(runtime_id.clone());
                    }
                })
                .await?;
            }
            if c.state != ContainerState::Exited || reported.last_status == "STOPPED" {
                continue;
            }
            let reason = if c.oom_killed { Some(OOM_REASON.to_owned()) } else { c.reason.clone() };
            let exit_code = if c.oom_killed { Some(137) } else { c.exit_code };
            self.update(|t| {
                if let Some(tc) = t.containers.iter_mut().find(|tc| tc.name == c.name) {
                    tc.last_status = "STOPPED".into();
                    tc.exit_code = exit_code;
                    tc.reason = reason.clone();
                }
            })
            .await?;
            let essential = definition
                .container_definitions
                .iter()
                .find(|d| d.name.as_deref() == Some(c.name.as_str()))
                .is_some_and(|d| d.is_essential());
            if essential {
                self.request_stop(StopCode::EssentialContainerExited, ESSENTIAL_EXITED).await?;
            }
        }
        // Every container has started (or already ended): the task is RUNNING.
        let all_started = status.containers.iter().all(|c| c.state != ContainerState::Created);
        if all_started && task.last_status < TaskStatus::Running {
            self.advance(TaskStatus::Running, |_| {}).await?;
        }
        Ok(())
    }

    async fn start_ready(
        &self,
        task: &Task,
        definition: &TaskDefinition,
        status: &SandboxStatus,
        health: &HashMap<String, Health>,
    ) -> Result<(), ControlError> {
        let observed: HashMap<String, Observed> = status
            .containers
            .iter()
            .map(|c| {
                let o = Observed {
                    started: c.state != ContainerState::Created,
                    exit_code: if c.state == ContainerState::Exited { Some(c.exit_code.unwrap_or(-1)) } else { None },
                    health: health.get(&c.name).map(|h| h.tracker.status()),
                };
                (c.name.clone(), o)
            })
            .collect();
        for c in status.containers.iter().filter(|c| c.state == ContainerState::Created) {
            let def = definition.container_definitions.iter().find(|d| d.name.as_deref() == Some(c.name.as_str()));
            let deps: Vec<(String, String)> = def
                .and_then(|d| d.depends_on.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|d| (d.container_name, d.condition))
                .collect();
            match readiness(&deps, &observed) {
                Readiness::Waiting => {}
                Readiness::Ready => {
                    if let Err(e) = self.agent.sandbox.start_container(&self.task_id, &c.name).await {
                        let reason = format!("CannotStartContainerError: {e}");
                        self.update(|t| {
                            if let Some(tc) = t.containers.iter_mut().find(|tc| tc.name == c.name) {
                                tc.reason = Some(reason.clone());
                            }
                        })
                        .await?;
                        self.request_stop(StopCode::TaskFailedToStart, &reason).await?;
                        return Ok(());
                    }
                }
                Readiness::Impossible(why) => {
                    let reason = format!("DependencyError: container {} cannot start: {why}", c.name);
                    self.request_stop(StopCode::TaskFailedToStart, &reason).await?;
                    return Ok(());
                }
            }
        }
        let _ = task;
        Ok(())
    }

    async fn check_health(
        &self,
        task: &Task,
        definition: &TaskDefinition,
        status: &SandboxStatus,
        health: &mut HashMap<String, Health>,
    ) -> Result<(), ControlError> {
        let now = Instant::now();
        let mut changed = false;
        for (name, h) in health.iter_mut() {
            let Some(c) = status.container(name) else { continue };
            if c.state != ContainerState::Running || now < h.next_at {
                continue;
            }
            h.next_at = now + h.probe.interval;
            let spec = ExecSpec { argv: h.probe.argv.clone(), timeout_ms: h.probe.timeout.as_millis() as u64 };
            let passed = match self.agent.sandbox.exec(&self.task_id, name, spec).await {
                Ok(result) => result.exit_code == Some(0) && !result.timed_out,
                Err(_) => false,
            };
            let since_start = c
                .started_at
                .map(|s| Duration::from_millis((Timestamp::now().0 as u64).saturating_sub(s)))
                .unwrap_or_default();
            let before = h.tracker.status();
            if h.tracker.record(passed, since_start) != before {
                changed = true;
            }
        }
        let reported_changed = task
            .containers
            .iter()
            .any(|c| health.get(&c.name).is_some_and(|h| c.health_status != Some(h.tracker.status())));
        if !changed && !reported_changed {
            return Ok(());
        }
        let statuses: HashMap<String, HealthStatus> =
            health.iter().map(|(n, h)| (n.clone(), h.tracker.status())).collect();
        let essential: Vec<String> = definition
            .container_definitions
            .iter()
            .filter(|d| d.is_essential())
            .filter_map(|d| d.name.clone())
            .collect();
        self.update(|t| {
            for c in &mut t.containers {
                if let Some(s) = statuses.get(&c.name) {
                    c.health_status = Some(*s);
                }
            }
            let essential_health = t
                .containers
                .iter()
                .filter(|c| essential.contains(&c.name))
                .map(|c| c.health_status.unwrap_or(HealthStatus::Unknown));
            t.health_status = Some(HealthStatus::combine(essential_health));
        })
        .await?;
        Ok(())
    }

    /// DEACTIVATING → STOPPING (reverse dependency order, SIGTERM then SIGKILL after each
    /// container's stopTimeout) → DEPROVISIONING (sandbox destroyed) → STOPPED.
    async fn stop(&self, definition: &TaskDefinition) -> Result<(), ControlError> {
        self.advance(TaskStatus::Deactivating, |_| {}).await?;
        self.advance(TaskStatus::Stopping, |_| {}).await?;
        let containers: Vec<(String, Vec<String>)> = definition
            .container_definitions
            .iter()
            .map(|d| {
                let deps = d.depends_on.iter().flatten().map(|x| x.container_name.clone()).collect();
                (d.name.clone().unwrap_or_default(), deps)
            })
            .collect();
        for wave in stop_waves(&containers) {
            let timeout = wave
                .iter()
                .filter_map(|n| definition.container_definitions.iter().find(|d| d.name.as_deref() == Some(n.as_str())))
                .map(|d| d.stop_timeout.map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(DEFAULT_STOP_TIMEOUT))
                .max()
                .unwrap_or(DEFAULT_STOP_TIMEOUT);
            self.stop_wave(&wave, timeout).await;
        }
        let t = Instant::now();
        if let Ok(status) = self.agent.sandbox.state(&self.task_id).await
            && let Some(task) = self.agent.task(&self.cluster, &self.task_id).await?
        {
            self.record_exits(&task, definition, &status).await?;
            self.agent.ship_logs(&task, definition).await;
        }
        let exits = t.elapsed();
        self.advance(TaskStatus::Deprovisioning, |_| {}).await?;
        // The interface and the sandbox come down together: deleting a veth waits for the
        // kernel (~20 ms here), as do unmounts; neither needs the other gone first (if the
        // task's namespace goes first, the kernel deletes the pair and the detach finds it gone).
        let t = Instant::now();
        let ((released, interface), (destroyed, sandbox)) =
            tokio::join!(async { (self.release_interface().await, t.elapsed()) }, async {
                (self.agent.sandbox.destroy(&self.task_id).await, t.elapsed())
            },);
        if let Err(e) = destroyed {
            tracing::error!(task = %self.task_id, error = %e, "sandbox teardown failed; it will be retried");
            return Err(ControlError::client(format!("sandbox teardown failed: {e}")));
        }
        released?;
        self.agent.forget_logs(&self.task_id);
        self.advance(TaskStatus::Stopped, |_| {}).await?;
        tracing::debug!(task = %self.task_id, ?exits, ?interface, ?sandbox, "task torn down");
        Ok(())
    }

    async fn stop_wave(&self, wave: &[String], timeout: Duration) {
        let running = |s: &SandboxStatus| -> Vec<String> {
            wave.iter()
                .filter(|n| s.container(n).is_some_and(|c| c.state == ContainerState::Running))
                .cloned()
                .collect()
        };
        let Ok(status) = self.agent.sandbox.state(&self.task_id).await else { return };
        for name in running(&status) {
            let _ = self.agent.sandbox.signal(&self.task_id, &name, libc::SIGTERM).await;
        }
        let deadline = Instant::now() + timeout;
        // Most containers exit within milliseconds of SIGTERM: look again soon, then less and
        // less often (up to TICK), so a quick exit is not held up by the polling.
        let mut pause = Duration::from_millis(2);
        loop {
            let Ok(status) = self.agent.sandbox.state(&self.task_id).await else { return };
            let left = running(&status);
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for name in left {
                    let _ = self.agent.sandbox.signal(&self.task_id, &name, libc::SIGKILL).await;
                }
                let kill_deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < kill_deadline {
                    match self.agent.sandbox.state(&self.task_id).await {
                        Ok(s) if running(&s).is_empty() => return,
                        Err(_) => return,
                        _ => tokio::time::sleep(TICK).await,
                    }
                }
                return;
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(TICK);
        }
    }
}
