//! One task's life on this host, from PROVISIONING to STOPPED.
//!
//! A supervisor either starts a task from scratch or adopts one whose sandbox already exists
//! (after an agent restart), then loops: start containers whose dependencies are met, record
//! exits, run health checks, ship logs, and stop the task when it should stop. It wakes on
//! events (the shim's state generation moving, the assignment changing, a health probe being
//! due), not on a timer, and sends what it saw as one [`TaskReport`] per pass, which the
//! control plane records in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_host::{
    Assignment, AttachmentReport, ContainerReport, HostApiError, InterfaceLease, StopRequest, TaskReport,
};
use flotilla_sandbox::{ContainerState, ExecSpec, OOM_REASON, TaskStatus as SandboxStatus};
use flotilla_types::Timestamp;
use flotilla_types::task::{
    AttachmentStatus, ContainerStatus, DesiredStatus, HealthStatus, StopCode, Task, TaskStatus,
};
use flotilla_types::task_definition::TaskDefinition;
use tokio::sync::watch;

use crate::health::{Probe, Tracker};
use crate::order::{Observed, Readiness, readiness, stop_waves};
use crate::{Agent, AgentError};

/// Longest a supervisor sleeps with nothing happening: logs are shipped at least this often.
const IDLE: Duration = Duration::from_secs(1);
/// The same for a task that ships no logs: every event wakes it anyway (the shim answers a
/// wait at once on a change, and a dead shim breaks the wait), so this only bounds how long
/// one wait lasts. Each wait is a request to the shim: at 1,000 idle tasks, waking every second
/// cost more CPU than the agent's whole remaining idle work.
const QUIET_IDLE: Duration = Duration::from_secs(30);
/// How long a container gets after SIGKILL before the supervisor moves on.
const KILL_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
pub const SANDBOX_LOST: &str = "Task stopped: its sandbox was lost while the agent was away";

struct Health {
    probe: Probe,
    tracker: Tracker,
    next_at: Instant,
}

pub(crate) struct Supervisor {
    pub agent: Arc<Agent>,
    pub task_arn: String,
    pub task_id: String,
    pub assignment: watch::Receiver<Assignment>,
    /// The newest record seen, from the assignment stream or a report's answer.
    pub view: Mutex<Task>,
    /// What the next report carries along, so that one step's news does not cost a
    /// transaction of its own (an interface attached just before the containers start).
    pub carry: Mutex<Option<AttachmentReport>>,
}

/// Whether the task runs with a task role (RunTask's override, else its definition's).
fn has_task_role(task: &Task, definition: &TaskDefinition) -> bool {
    task.overrides.task_role_arn.as_ref().or(definition.task_role_arn.as_ref()).is_some_and(|r| !r.is_empty())
}

fn is_essential(definition: &TaskDefinition, name: &str) -> bool {
    definition.container_definitions.iter().find(|d| d.name.as_deref() == Some(name)).is_some_and(|d| d.is_essential())
}

impl Supervisor {
    pub fn new(agent: Arc<Agent>, assignment: watch::Receiver<Assignment>) -> Supervisor {
        let task = assignment.borrow().task.clone();
        Supervisor {
            agent,
            task_arn: task.task_arn.clone(),
            task_id: task.id().to_owned(),
            assignment,
            view: Mutex::new(task),
            carry: Mutex::new(None),
        }
    }

    /// The task as last recorded: the newer of the assignment and the last report's answer.
    fn task(&self) -> Task {
        let assigned = self.assignment.borrow().task.clone();
        let mut view = self.view.lock().expect("task view poisoned");
        if assigned.version > view.version {
            *view = assigned;
        }
        view.clone()
    }

    async fn report(&self, mut report: TaskReport) -> Result<Task, AgentError> {
        let carried = self.carry.lock().expect("carried report poisoned").take();
        if report.attachment.is_none() {
            report.attachment = carried;
        }
        if report.is_empty() {
            return Ok(self.task());
        }
        // A pass gathers what it saw and did (starts included): stamp it as it is sent, so
        // `startedAt` is not earlier than the start itself.
        report.at = Timestamp::now();
        let task = self.agent.host.report(report).await?;
        let mut view = self.view.lock().expect("task view poisoned");
        if task.version >= view.version {
            *view = task.clone();
        }
        Ok(task)
    }

    /// A task that could not start: it goes straight to STOPPED with the reason on the task
    /// and (when one container is to blame) on that container.
    async fn fail_to_start(&self, reason: String, container: Option<&str>) -> Result<(), AgentError> {
        let mut report = TaskReport::new(&self.task_arn).stop(StopCode::TaskFailedToStart, reason.clone());
        if let Some(name) = container {
            report = report.container(ContainerReport { reason: Some(reason), ..ContainerReport::new(name) });
        }
        self.report(report).await?;
        let released = self.release_interface().await?;
        self.report(self.stopped(released)).await?;
        Ok(())
    }

    fn stopped(&self, released: Option<AttachmentReport>) -> TaskReport {
        let mut report = TaskReport::new(&self.task_arn).status(TaskStatus::Stopped);
        report.attachment = released;
        report
    }

    pub async fn run(self) {
        match self.run_inner().await {
            // Done with its task (stopped, or never started): nothing left to adopt.
            Ok(()) => self.agent.adoption.supervised(&self.task_arn),
            Err(e) => {
                tracing::warn!(task = %self.task_id, error = %e, "supervisor stopped early; the agent resumes it")
            }
        }
    }

    async fn run_inner(&self) -> Result<(), AgentError> {
        let assignment = self.assignment.borrow().clone();
        let task = self.task();
        if task.last_status == TaskStatus::Stopped {
            return Ok(());
        }
        let definition = &assignment.definition;
        let mut interface = None;
        let existing = self.agent.sandbox.state(&self.task_id).await.ok();
        if existing.is_none() {
            if task.desired_status == DesiredStatus::Stopped {
                // Stopped before it ever ran here.
                let released = self.release_interface().await?;
                self.report(self.stopped(released)).await?;
                return Ok(());
            }
            if task.last_status >= TaskStatus::Activating {
                // It had a sandbox, and the sandbox is gone (host rebooted, state dir wiped).
                self.fail_to_start(SANDBOX_LOST.to_owned(), None).await?;
                return Ok(());
            }
            // How long the task waited between its record and its supervisor (placement,
            // the assignment stream, the agent's queue): the part of a start before `provisioned`.
            let waited_ms = flotilla_types::Timestamp::now().0 - task.created_at.0;
            tracing::debug!(task = %self.task_id, waited_ms, "provisioning");
            let Some(eni) = self.provision(&assignment).await? else { return Ok(()) };
            interface = Some(eni);
        } else if task.desired_status != DesiredStatus::Stopped {
            // Adopted after a restart: make sure its interface is still wired (idempotent),
            // unless the agent found it so at its start.
            let Some(eni) = self.ensure_interface(&assignment).await? else { return Ok(()) };
            if !self.adopt_wired(&eni).await && !self.attach_interface(&eni).await? {
                return Ok(());
            }
            interface = Some(eni);
        }
        // The task endpoint serves the task from its interface's address while it runs here.
        let served = interface.as_ref().and_then(|eni| self.serve_endpoint(&assignment, eni.private_ip));
        self.agent.adoption.supervised(&self.task_arn);
        let outcome = self.watch(definition).await;
        let stopped = self.stop(definition).await;
        drop(served);
        outcome.and(stopped)
    }

    /// Registers the task with the host's task endpoint (and fetches its role credentials
    /// ahead of its containers' first ask).
    fn serve_endpoint(&self, assignment: &Assignment, ip: std::net::Ipv4Addr) -> Option<crate::endpoint::Registration> {
        let endpoint = self.agent.endpoint.clone()?;
        let role = has_task_role(&assignment.task, &assignment.definition);
        let registration = endpoint.register(ip, &assignment.task, role);
        if role {
            let (agent, arn) = (self.agent.clone(), self.task_arn.clone());
            tokio::spawn(async move { endpoint.prefetch(agent.host.as_ref(), &arn).await });
        }
        Some(registration)
    }

    /// PENDING (secrets, pull) and ACTIVATING (sandbox); the task's interface, or `None` when
    /// the task failed to start.
    async fn provision(&self, assignment: &Assignment) -> Result<Option<InterfaceLease>, AgentError> {
        let Some(eni) = self.provision_with(assignment).await? else { return Ok(None) };
        let t = Instant::now();
        let attached = self.attach_interface(&eni).await?;
        tracing::debug!(task = %self.task_id, attach = ?t.elapsed(), "interface attached");
        Ok(attached.then_some(eni))
    }

    /// [`Supervisor::provision`] up to the sandbox; the interface is attached after.
    async fn provision_with(&self, assignment: &Assignment) -> Result<Option<InterfaceLease>, AgentError> {
        let t = Instant::now();
        // PROVISIONING: the interface record (address, MAC) exists before anything is pulled.
        let Some(eni) = self.ensure_interface(assignment).await? else { return Ok(None) };
        let leased = t.elapsed();
        // The interface's PRECREATED attachment travels with this report.
        self.report(TaskReport::new(&self.task_arn).status(TaskStatus::Pending)).await?;
        let pending = t.elapsed();
        let secrets = match self.agent.host.task_secrets(&self.task_arn).await {
            Ok(s) => s,
            Err(HostApiError::Refused { reason }) => {
                self.fail_to_start(reason, None).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Only EFS and file volumes need the control plane; most tasks have none and skip the call.
        let has_efs = assignment.definition.volumes.iter().any(|v| v.efs_volume_configuration.is_some());
        let asked = if has_efs || assignment.volume_files {
            self.agent.host.task_volumes(&self.task_arn).await
        } else {
            Ok(Default::default())
        };
        let volumes = match asked {
            Ok(v) => v,
            Err(HostApiError::Refused { reason }) => {
                self.fail_to_start(reason, None).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let efs = match crate::spec::efs_mounts(&volumes, self.agent.efs_root.as_deref()) {
            Ok(efs) => efs,
            Err(e) => {
                self.fail_to_start(e.to_string(), None).await?;
                return Ok(None);
            }
        };
        let definition = &assignment.definition;
        let mut images = HashMap::new();
        for c in &definition.container_definitions {
            let name = c.name.clone().unwrap_or_default();
            let reference = c.image.clone().unwrap_or_default();
            match self.agent.images.pull(&reference, secrets.registry_logins.get(&name)).await {
                Ok(image) => {
                    images.insert(name, image);
                }
                Err(reason) => {
                    self.fail_to_start(reason, Some(&name)).await?;
                    return Ok(None);
                }
            }
        }
        let mut activating = TaskReport::new(&self.task_arn).status(TaskStatus::Activating);
        for (name, image) in &images {
            activating = activating.container(ContainerReport {
                image_digest: Some(image.manifest_digest.to_string()),
                ..ContainerReport::new(name.clone())
            });
        }
        let pulled = t.elapsed();
        let task = self.report(activating).await?;
        let activating = t.elapsed();
        match self.agent.logs.prepare(&task, definition).await {
            Ok(()) => {}
            Err(HostApiError::Refused { reason }) => {
                self.fail_to_start(reason, None).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        // Only a task with a task role gets the variable, and only where the endpoint serves it.
        let credentials_uri = match &self.agent.endpoint {
            Some(endpoint) if has_task_role(&task, definition) => Some(endpoint.credentials_uri(&self.task_arn)),
            _ => None,
        };
        let injected = crate::spec::Injected {
            region: &self.agent.region,
            metadata_base: crate::metadata::METADATA_BASE,
            credentials_uri: credentials_uri.as_deref(),
            api_endpoint: self.agent.endpoint.as_ref().map(|_| crate::metadata::API_ENDPOINT),
            secrets: &secrets.environment,
        };
        let spec = match crate::spec::task_spec(&task, definition, &images, &injected, efs) {
            Ok(spec) => spec,
            Err(e) => {
                self.fail_to_start(e.to_string(), None).await?;
                return Ok(None);
            }
        };
        let created = self.agent.sandbox.create_task(spec).await;
        let sandbox = t.elapsed();
        if let Err(e) = created {
            self.fail_to_start(format!("ResourceInitializationError: failed to create the task sandbox: {e}"), None)
                .await?;
            let _ = self.agent.sandbox.destroy(&self.task_id).await;
            return Ok(None);
        }
        // Before any container starts: they mount these volumes.
        let dir_of = |v: &str| self.agent.sandbox.volume_dir(&self.task_id, v);
        if let Err(e) = crate::files::write_all(&volumes.files, dir_of) {
            self.fail_to_start(e.to_string(), None).await?;
            let _ = self.agent.sandbox.destroy(&self.task_id).await;
            return Ok(None);
        }
        if !volumes.files.is_empty() {
            let (agent, arn, id) = (self.agent.clone(), self.task_arn.clone(), self.task_id.clone());
            tokio::spawn(crate::files::refresh(agent, arn, id, volumes.files));
        }
        tracing::debug!(task = %self.task_id, ?leased, ?pending, ?pulled, ?activating, ?sandbox, "provisioned");
        Ok(Some(eni))
    }

    /// The task's interface, made on first call (the attachment shows PRECREATED); `None`
    /// when the task failed to start for want of one.
    async fn ensure_interface(&self, assignment: &Assignment) -> Result<Option<InterfaceLease>, AgentError> {
        let Some(awsvpc) = &assignment.awsvpc else {
            let reason = "ResourceInitializationError: the task has no awsvpcConfiguration; run it with networkConfiguration.awsvpcConfiguration";
            self.fail_to_start(reason.into(), None).await?;
            return Ok(None);
        };
        let attachment = match self.task().eni_attachment() {
            Some(a) => a.id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        match self.agent.host.ensure_interface(&self.task_arn, &attachment, awsvpc).await {
            Ok(eni) => {
                let precreated = AttachmentReport {
                    id: attachment,
                    status: AttachmentStatus::Precreated,
                    interface: Some(eni.details()),
                };
                let already = self.task().eni_attachment().is_some_and(|a| a.status > AttachmentStatus::Precreated);
                if !already {
                    *self.carry.lock().expect("carried report poisoned") = Some(precreated);
                }
                Ok(Some(eni))
            }
            Err(HostApiError::Refused { reason }) => {
                self.fail_to_start(reason, None).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Wires the interface into the sandbox's namespace: the attachment becomes ATTACHED and
    /// every container shows the address. False when the task failed to start instead.
    async fn attach_interface(&self, eni: &InterfaceLease) -> Result<bool, AgentError> {
        let netns = self.agent.sandbox.network_namespace(&self.task_id);
        let resolv_conf = self.agent.sandbox.resolv_conf(&self.task_id);
        if let Err(e) = self.agent.network.attach(eni, &netns, &resolv_conf).await {
            self.fail_to_start(
                format!("ResourceInitializationError: failed to attach the network interface: {e}"),
                None,
            )
            .await?;
            let _ = self.agent.sandbox.destroy(&self.task_id).await;
            return Ok(false);
        }
        let carried = self.carry.lock().expect("carried report poisoned").as_ref().map(|a| a.id.clone());
        let Some(attachment) = carried.or_else(|| self.task().eni_attachment().map(|a| a.id.clone())) else {
            return Ok(true);
        };
        let attached =
            AttachmentReport { id: attachment, status: AttachmentStatus::Attached, interface: Some(eni.details()) };
        // Reported with the first pass over the containers, which comes at once.
        *self.carry.lock().expect("carried report poisoned") = Some(attached);
        Ok(true)
    }

    /// A task live at the agent's start whose interface is wired already as its lease says:
    /// nothing to apply, and its attachment stays as recorded (no report).
    async fn adopt_wired(&self, eni: &InterfaceLease) -> bool {
        let attached = self.task().eni_attachment().is_some_and(|a| a.status == AttachmentStatus::Attached);
        let wired = attached && self.agent.adoption.pending(&self.task_arn) && self.agent.network.wired(eni).await;
        if wired {
            self.agent.adoption.found_wired();
        }
        wired
    }

    /// Removes the interface from the host and releases its addresses (idempotent); what the
    /// attachment now is, for the caller's next report.
    async fn release_interface(&self) -> Result<Option<AttachmentReport>, AgentError> {
        if let Some(eni) = self.agent.host.interface(&self.task_arn).await? {
            let t = Instant::now();
            self.agent.network.detach(&eni).await?;
            let detached = t.elapsed();
            self.agent.host.release_interface(&self.task_arn).await?;
            tracing::debug!(task = %self.task_id, ?detached, released = ?t.elapsed() - detached, "interface released");
        }
        // An attachment not reported yet is reported DELETED straight away.
        let carried = self.carry.lock().expect("carried report poisoned").take().map(|a| a.id);
        let id = carried.or_else(|| self.task().eni_attachment().map(|a| a.id.clone()));
        Ok(id.map(|id| AttachmentReport { id, status: AttachmentStatus::Deleted, interface: None }))
    }

    /// Runs the task until it should stop: starts containers as their dependencies allow,
    /// records exits, runs health checks and ships logs.
    async fn watch(&self, definition: &TaskDefinition) -> Result<(), AgentError> {
        let mut health: HashMap<String, Health> = HashMap::new();
        let task = self.task();
        for c in &definition.container_definitions {
            if let Some(probe) = c.health_check.as_ref().and_then(Probe::from_definition) {
                let name = c.name.clone().unwrap_or_default();
                // A supervisor that adopts a running task (after a restart) keeps the verdict
                // the task has: the first probe is an interval away.
                let known = task.container(&name).and_then(|c| c.health_status).unwrap_or(HealthStatus::Unknown);
                let tracker = Tracker::resume(&probe, known);
                // As Docker (and so ECS) does, the first probe runs one interval after the
                // container starts, not at once.
                let next_at = Instant::now() + probe.interval;
                health.insert(name, Health { probe, tracker, next_at });
            }
        }
        // A pod's Kubernetes probes (readiness as the containers' health; liveness kills) and
        // its containers' restarts in place.
        let mut prober =
            crate::probe::Prober::new(self.agent.sandbox.clone(), &self.task_id, &definition.container_definitions);
        let mut restarts = crate::restart::Restarts::new(&task);
        let ships_logs = self.agent.logs.ships(&self.task_id, definition);
        let mut changes = self.assignment.clone();
        let mut assignment_open = true;
        let mut status = self.sandbox_state(0, Duration::ZERO).await?;
        loop {
            let Some(current) = status.as_ref() else { return Ok(()) };
            let task = self.task();
            if task.desired_status == DesiredStatus::Stopped {
                return Ok(());
            }
            self.agent.ship_logs(&task, definition).await;
            let mut report = TaskReport::new(&self.task_arn);
            observe(&task, definition, current, &mut report);
            self.start_ready(definition, current, &health, &mut report).await;
            self.check_health(&task, definition, current, &mut health, &mut report).await;
            if let Some(prober) = prober.as_mut().filter(|_| report.stop.is_none()) {
                let outcome = prober.pass(current, crate::probe::task_address(&task)).await;
                crate::probe::apply(outcome, self.agent.sandbox.as_ref(), &task, definition, &mut report).await;
            }
            restarts.pass(self.agent.sandbox.as_ref(), &self.task_id, definition, current, &mut report).await;
            let stop_now = report.stop.is_some();
            self.report(report).await?;
            if stop_now {
                return Ok(());
            }
            // Wake at the next event, or in time for the next health probe.
            let next_probe = health
                .values()
                .map(|h| h.next_at)
                .chain(prober.as_ref().and_then(|p| p.next_due()))
                .chain(restarts.next_due())
                .map(|at| at.saturating_duration_since(Instant::now()))
                .min();
            let idle = if ships_logs { IDLE } else { QUIET_IDLE };
            let timeout = next_probe.map_or(idle, |p| p.min(idle));
            let seen = current.generation;
            let woken_by_assignment = tokio::select! {
                s = self.sandbox_state(seen, timeout) => {
                    status = s?;
                    false
                }
                changed = changes.changed(), if assignment_open => {
                    assignment_open = changed.is_ok();
                    true
                }
            };
            // The state held is from before this pass's starts: look again before deciding.
            if woken_by_assignment {
                status = self.sandbox_state(0, Duration::ZERO).await?;
            }
        }
    }

    /// The sandbox's state once it moves past `seen` (or after `timeout`); `None` when the
    /// sandbox failed, after asking the task to stop.
    async fn sandbox_state(&self, seen: u64, timeout: Duration) -> Result<Option<SandboxStatus>, AgentError> {
        match self.agent.sandbox.wait_change(&self.task_id, seen, timeout).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                let reason = format!("Task sandbox failed: {e}");
                self.report(TaskReport::new(&self.task_arn).stop(StopCode::TaskFailedToStart, reason)).await?;
                Ok(None)
            }
        }
    }

    /// Starts every created container whose dependencies hold; what happened goes into
    /// `report` (a started container is RUNNING at once, and so is the task when it was the
    /// last to start).
    async fn start_ready(
        &self,
        definition: &TaskDefinition,
        status: &SandboxStatus,
        health: &HashMap<String, Health>,
        report: &mut TaskReport,
    ) {
        if report.stop.is_some() {
            return;
        }
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
        let mut all_started = true;
        for c in status.containers.iter().filter(|c| c.state == ContainerState::Created) {
            let def = definition.container_definitions.iter().find(|d| d.name.as_deref() == Some(c.name.as_str()));
            let deps: Vec<(String, String)> = def
                .and_then(|d| d.depends_on.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|d| (d.container_name, d.condition))
                .collect();
            match readiness(&deps, &observed) {
                Readiness::Waiting => all_started = false,
                Readiness::Ready => match self.agent.sandbox.start_container(&self.task_id, &c.name).await {
                    Ok(started) => report.containers.push({
                        tracing::debug!(task = %self.task_id, container = %c.name, timings = ?started.timings, "container started");
                        ContainerReport {
                        status: Some(ContainerStatus::Running),
                        runtime_id: Some(format!("{}-{}", self.task_id, c.name)),
                        ..ContainerReport::new(c.name.clone())
                        }
                    }),
                    Err(e) => {
                        let reason = format!("CannotStartContainerError: {e}");
                        report.containers.push(ContainerReport {
                            reason: Some(reason.clone()),
                            ..ContainerReport::new(c.name.clone())
                        });
                        report.stop = Some(StopRequest { code: StopCode::TaskFailedToStart, reason });
                        return;
                    }
                },
                Readiness::Impossible(why) => {
                    let reason = format!("DependencyError: container {} cannot start: {why}", c.name);
                    report.stop = Some(StopRequest { code: StopCode::TaskFailedToStart, reason });
                    return;
                }
            }
        }
        if all_started && report.status.is_none() && self.task().last_status < TaskStatus::Running {
            report.status = Some(TaskStatus::Running);
        }
    }

    async fn check_health(
        &self,
        task: &Task,
        definition: &TaskDefinition,
        status: &SandboxStatus,
        health: &mut HashMap<String, Health>,
        report: &mut TaskReport,
    ) {
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
            return;
        }
        for (name, h) in health.iter() {
            let status = Some(h.tracker.status());
            match report.containers.iter_mut().find(|c| &c.name == name) {
                Some(c) => c.health = status,
                None => {
                    report.containers.push(ContainerReport { health: status, ..ContainerReport::new(name.clone()) })
                }
            }
        }
        let essential = task.containers.iter().filter(|c| is_essential(definition, &c.name)).map(|c| {
            health.get(&c.name).map(|h| h.tracker.status()).or(c.health_status).unwrap_or(HealthStatus::Unknown)
        });
        report.health = Some(HealthStatus::combine(essential));
    }

    /// DEACTIVATING → STOPPING (reverse dependency order, SIGTERM then SIGKILL after each
    /// container's stopTimeout) → DEPROVISIONING (sandbox destroyed) → STOPPED.
    async fn stop(&self, definition: &TaskDefinition) -> Result<(), AgentError> {
        // STOPPING is recorded while the containers are signalled, not before: the store's
        // write is not on the way to the SIGTERM.
        let (stopping, ()) = tokio::join!(
            self.report(TaskReport::new(&self.task_arn).status(TaskStatus::Stopping)),
            self.stop_containers(definition)
        );
        stopping?;
        let mut report = TaskReport::new(&self.task_arn).status(TaskStatus::Deprovisioning);
        if let Ok(status) = self.agent.sandbox.state(&self.task_id).await {
            let task = self.task();
            observe(&task, definition, &status, &mut report);
            // The task is stopping already: an essential exit now changes nothing.
            report.stop = None;
            report.status = Some(TaskStatus::Deprovisioning);
            self.agent.ship_logs(&task, definition).await;
        }
        // The interface and the sandbox come down together: deleting a veth waits for the
        // kernel (~20 ms here), as do unmounts; neither needs the other gone first (if the
        // task's namespace goes first, the kernel deletes the pair and the detach finds it gone).
        // The exit codes are recorded (DEPROVISIONING) before the sandbox that holds them goes.
        let t = Instant::now();
        let ((released, interface), (destroyed, sandbox)) = tokio::join!(
            async { (self.release_interface().await, t.elapsed()) },
            async {
                if let Err(e) = self.report(report).await {
                    return (Err(e), t.elapsed());
                }
                (self.agent.sandbox.destroy(&self.task_id).await.map_err(|source| {
                    tracing::error!(task = %self.task_id, error = %source, "sandbox teardown failed; it will be retried");
                    let source = Box::new(AgentError::Sandbox { task_id: self.task_id.clone(), source });
                    AgentError::Teardown { task_id: self.task_id.clone(), source }
                }), t.elapsed())
            }
        );
        destroyed?;
        let released = released.map_err(|source| {
            tracing::error!(task = %self.task_id, error = %source, "interface release failed; it will be retried");
            AgentError::Teardown { task_id: self.task_id.clone(), source: Box::new(source) }
        })?;
        self.agent.logs.forget(&self.task_id);
        self.report(self.stopped(released)).await?;
        tracing::debug!(task = %self.task_id, ?interface, ?sandbox, "task torn down");
        Ok(())
    }

    /// Every container, in reverse dependency order: SIGTERM, then SIGKILL after the wave's
    /// longest stopTimeout.
    async fn stop_containers(&self, definition: &TaskDefinition) {
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
    }

    async fn stop_wave(&self, wave: &[String], timeout: Duration) {
        let running = |s: &SandboxStatus| -> Vec<String> {
            wave.iter()
                .filter(|n| s.container(n).is_some_and(|c| c.state == ContainerState::Running))
                .cloned()
                .collect()
        };
        let Ok(mut status) = self.agent.sandbox.state(&self.task_id).await else { return };
        for name in running(&status) {
            let _ = self.agent.sandbox.signal(&self.task_id, &name, libc::SIGTERM).await;
        }
        // Exits are events: each wait returns as soon as a container ends.
        let mut deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
            let left = running(&status);
            if left.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                if killed {
                    return;
                }
                for name in left {
                    let _ = self.agent.sandbox.signal(&self.task_id, &name, libc::SIGKILL).await;
                }
                killed = true;
                deadline = now + KILL_GRACE;
                continue;
            }
            match self.agent.sandbox.wait_change(&self.task_id, status.generation, deadline - now).await {
                Ok(s) => status = s,
                Err(_) => return,
            }
        }
    }
}

/// What the sandbox shows that the record does not have yet: containers that run or ended
/// (an essential one's end stops the task), and the task RUNNING once none waits to start.
fn observe(task: &Task, definition: &TaskDefinition, status: &SandboxStatus, report: &mut TaskReport) {
    for c in &status.containers {
        let Some(recorded) = task.container(&c.name) else { continue };
        if c.state == ContainerState::Running && recorded.last_status == ContainerStatus::Pending {
            report.containers.push(ContainerReport {
                status: Some(ContainerStatus::Running),
                runtime_id: Some(format!("{}-{}", task.id(), c.name)),
                ..ContainerReport::new(c.name.clone())
            });
        }
        if c.state != ContainerState::Exited || recorded.last_status == ContainerStatus::Stopped {
            continue;
        }
        let (exit_code, reason) =
            if c.oom_killed { (Some(137), Some(OOM_REASON.to_owned())) } else { (c.exit_code, c.reason.clone()) };
        // A pod's container its restart policy starts again (`restart.rs`) has not ended,
        // unless the task is stopping.
        if task.desired_status != DesiredStatus::Stopped && crate::restart::restarts(definition, &c.name, exit_code) {
            continue;
        }
        report.containers.push(ContainerReport {
            status: Some(ContainerStatus::Stopped),
            exit_code,
            reason,
            ..ContainerReport::new(c.name.clone())
        });
        if is_essential(definition, &c.name) && report.stop.is_none() {
            report.stop =
                Some(StopRequest { code: StopCode::EssentialContainerExited, reason: ESSENTIAL_EXITED.into() });
        }
    }
    let all_started = status.containers.iter().all(|c| c.state != ContainerState::Created);
    if all_started && task.last_status < TaskStatus::Running {
        report.status = Some(TaskStatus::Running);
    }
}
