//! The host agent: it makes the tasks the control plane assigns to this host real.
//!
//! For each task it pulls the images, creates the sandbox, starts containers in `dependsOn`
//! order, runs health checks, ships logs, reports every transition back to the control plane,
//! and tears everything down in reverse order when the task should stop.
//!
//! **Architecture Invariant:** the agent talks to the control plane only through the host
//! API ([`flotilla_host::HostApi`]): it follows its assignments and sends typed reports. It
//! depends on neither `flotilla-control` nor `flotilla-store` and names no store key.
//!
//! **Architecture Invariant:** the agent is a reconciler. Desired state comes from the
//! assignments, observed state from the sandbox's shims; nothing it holds in memory is needed
//! to recover after a restart. Tasks keep running while the agent is down, because their
//! containers belong to per-task shims, not to this process.

mod adoption;
pub mod capacity;
mod credentials;
mod endpoint;
mod error;
pub mod exec;
mod files;
pub mod health;
pub mod images;
pub mod lb;
mod liveness;
mod logs;
pub mod metadata;
pub mod network;
pub mod order;
pub mod sim;
mod spec;
mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::{Assignment, AssignmentEvent, HostApi, HostApiError, HostSpec};
use flotilla_sandbox::Sandbox;
use flotilla_types::task::{Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinition;
use tokio::sync::watch;

pub use error::AgentError;
pub use images::ImageSource;
pub use liveness::Liveness;
pub use network::{Networking, NoNetwork, Resolvers, TaskNetwork};

/// How often finished supervisors of live tasks are restarted when no event comes.
const RESYNC: Duration = Duration::from_secs(2);
/// How long to wait before asking again after the control plane did not answer.
const RETRY: Duration = Duration::from_millis(500);

/// What an agent is made of: the host API to its control plane and this host's parts.
pub struct AgentParts {
    pub host: Arc<dyn HostApi>,
    pub spec: HostSpec,
    pub images: Arc<dyn ImageSource>,
    pub sandbox: Arc<dyn Sandbox>,
    pub network: Arc<dyn TaskNetwork>,
    /// Ship `awslogs` output through the host API (not for simulated tasks, which have none).
    pub ship_logs: bool,
    /// Where the agent keeps what it must find again after a restart (log offsets).
    pub state_dir: PathBuf,
    pub region: String,
    /// Serve the task endpoint (metadata, task role credentials) at 169.254.170.2:80 on the
    /// host side of every task's interface (not for simulated tasks).
    pub metadata: bool,
    /// Flotilla's AWS API, when it runs in this process (`flotilla up`): the task endpoint
    /// serves it for every request that is not its own, so tasks call the API at
    /// `AWS_ENDPOINT_URL=http://169.254.170.2`. `None`: such requests get a 404 saying so.
    pub api: Option<axum::Router>,
    /// Run this host's load balancers (not for simulated hosts).
    pub load_balancing: Option<lb::LbConfig>,
    /// Heartbeat period and fence time.
    pub liveness: Liveness,
    /// Where EFS file systems' directories are (`<root>/<fs-id>`); `None`: tasks with EFS
    /// volumes cannot start here.
    pub efs_root: Option<PathBuf>,
}

struct Supervised {
    handle: tokio::task::JoinHandle<()>,
    assignment: watch::Sender<Assignment>,
}

pub struct Agent {
    host: Arc<dyn HostApi>,
    spec: HostSpec,
    images: Arc<dyn ImageSource>,
    sandbox: Arc<dyn Sandbox>,
    network: Arc<dyn TaskNetwork>,
    logs: logs::Shipper,
    region: String,
    /// The task endpoint's tasks and credentials, when this agent serves it.
    endpoint: Option<Arc<endpoint::Endpoint>>,
    /// Flotilla's AWS API behind the task endpoint, when in this process.
    api: Option<axum::Router>,
    load_balancing: Option<lb::LbConfig>,
    efs_root: Option<PathBuf>,
    /// Task ARN -> its supervisor.
    supervisors: Mutex<HashMap<String, Supervised>>,
    /// Task ARN -> its newest assignment.
    assignments: Mutex<HashMap<String, Assignment>>,
    liveness: Liveness,
    /// Cut off from the control plane past the fence time: every task was stopped, and
    /// none starts until a heartbeat gets through.
    fenced: std::sync::atomic::AtomicBool,
    /// Says when every task live at start is supervised.
    adoption: adoption::Adoption,
}

impl Agent {
    pub fn new(parts: AgentParts) -> Arc<Agent> {
        let endpoint = parts.metadata.then(|| endpoint::Endpoint::new(&parts.state_dir));
        let logs = logs::Shipper::new(parts.ship_logs.then(|| parts.host.clone()), parts.state_dir);
        Arc::new(Agent {
            host: parts.host,
            spec: parts.spec,
            images: parts.images,
            sandbox: parts.sandbox,
            network: parts.network,
            logs,
            region: parts.region,
            endpoint,
            api: parts.api,
            load_balancing: parts.load_balancing,
            efs_root: parts.efs_root,
            supervisors: Mutex::new(HashMap::new()),
            assignments: Mutex::new(HashMap::new()),
            liveness: parts.liveness,
            fenced: std::sync::atomic::AtomicBool::new(false),
            adoption: adoption::Adoption::new(),
        })
    }

    pub fn host_id(&self) -> &str {
        &self.spec.id
    }

    /// Registers the host, then follows its assignments until `shutdown` resolves.
    /// Supervisors are then abandoned, not stopped: the tasks keep running and the next agent
    /// adopts them.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.host.register(self.spec.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(host = %self.spec.id, error = %e, "cannot register the host; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
        let endpoint = self.start_endpoint().await;
        let heartbeats = tokio::spawn(self.clone().keep_alive());
        let groups = tokio::spawn(self.clone().follow_network_changes());
        let (stop_lbs, lbs_stopped) = watch::channel(false);
        let lbs = self.load_balancing.clone().map(|config| {
            let (host, network) = (self.host.clone(), self.network.clone());
            tokio::spawn(lb::run(host, self.spec.id.clone(), network, config, lbs_stopped))
        });
        let mut assignments = self.host.assignments(&self.spec.id, None);
        // The newest revision seen: a stream followed again resumes from it.
        let mut seen: Option<u64> = None;
        let mut cleaned = false;
        // One timer for the whole loop, not a sleep per pass: a sleep started again after
        // every event never fires on a host whose tasks report more often than RESYNC, and
        // a supervisor that failed (a teardown) would wait for a quiet moment forever.
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = assignments.next() => match event {
                    Ok(AssignmentEvent::Snapshot { assignments, unchanged, revision }) => {
                        seen = seen.max(Some(revision));
                        if !cleaned {
                            cleaned = true;
                            self.release_leftover_interfaces(&assignments).await;
                        }
                        self.forget_all_but(&assignments, &unchanged);
                        let live = assignments.iter().filter(|a| a.task.last_status != TaskStatus::Stopped);
                        self.adoption.expect(live.map(Assignment::task_arn));
                        for a in assignments {
                            self.dispatch(a);
                        }
                    }
                    Ok(AssignmentEvent::Changed { assignment }) => {
                        seen = seen.max(Some(assignment.revision));
                        self.dispatch(*assignment);
                    }
                    Ok(AssignmentEvent::Removed { task_arn, revision }) => {
                        seen = seen.max(Some(revision));
                        self.forget(&task_arn);
                    }
                    Err(HostApiError::Closed) => {
                        tracing::warn!("the assignment stream closed; following it again");
                        tokio::time::sleep(RETRY).await;
                        assignments = self.host.assignments(&self.spec.id, seen);
                    }
                    Err(e) => tracing::warn!(error = %e, "assignment stream error"),
                },
                _ = resync.tick() => self.restart_finished(),
            }
        }
        heartbeats.abort();
        groups.abort();
        if let Some(endpoint) = endpoint {
            endpoint.abort();
        }
        // Listeners closed and addresses removed before the network is taken down.
        let _ = stop_lbs.send(true);
        if let Some(lbs) = lbs {
            let _ = lbs.await;
        }
        let supervisors: Vec<_> = self.supervisors.lock().expect("supervisor table poisoned").drain().collect();
        for (_, s) in supervisors {
            s.handle.abort();
            let _ = s.handle.await;
        }
        self.network.shutdown().await;
    }

    /// Hands an assignment to its task's supervisor, starting one if the task needs it.
    fn dispatch(self: &Arc<Self>, assignment: Assignment) {
        let arn = assignment.task_arn().to_owned();
        {
            let mut latest = self.assignments.lock().expect("assignment table poisoned");
            if latest.get(&arn).is_some_and(|a| a.revision > assignment.revision) {
                return;
            }
            latest.insert(arn.clone(), assignment.clone());
        }
        let mut supervisors = self.supervisors.lock().expect("supervisor table poisoned");
        if let Some(s) = supervisors.get(&arn)
            && !s.handle.is_finished()
        {
            s.assignment.send_replace(assignment);
            return;
        }
        if self.is_fenced() {
            // Nothing starts while fenced; the next resync after the fence follows it.
            return;
        }
        if assignment.task.last_status == TaskStatus::Stopped {
            supervisors.remove(&arn);
            // Recorded STOPPED (its host was lost meanwhile) while a copy may still run here
            // (the agent was down, its containers kept by their shims): take it down.
            let (agent, id) = (self.clone(), assignment.task.id().to_owned());
            tokio::spawn(async move {
                if agent.sandbox.state(&id).await.is_ok() {
                    tracing::info!(task = %id, "stopping a copy of a task that is recorded STOPPED");
                    if let Err(e) = agent.sandbox.destroy(&id).await {
                        tracing::warn!(task = %id, error = %e, "cannot stop a stale copy of a task");
                    }
                }
            });
            return;
        }
        let (tx, rx) = watch::channel(assignment);
        let supervisor = supervise::Supervisor::new(self.clone(), rx);
        supervisors.insert(arn, Supervised { handle: tokio::spawn(supervisor.run()), assignment: tx });
    }

    /// After a snapshot: tasks in neither of its lists are no longer this host's.
    fn forget_all_but(&self, changed: &[Assignment], unchanged: &[String]) {
        let keep: std::collections::HashSet<&str> =
            changed.iter().map(Assignment::task_arn).chain(unchanged.iter().map(String::as_str)).collect();
        let gone: Vec<String> = {
            let latest = self.assignments.lock().expect("assignment table poisoned");
            latest.keys().filter(|arn| !keep.contains(arn.as_str())).cloned().collect()
        };
        for arn in gone {
            self.forget(&arn);
        }
    }

    fn forget(&self, task_arn: &str) {
        self.assignments.lock().expect("assignment table poisoned").remove(task_arn);
        if let Some(s) = self.supervisors.lock().expect("supervisor table poisoned").remove(task_arn) {
            s.handle.abort();
        }
    }

    /// A supervisor that stopped early (the control plane did not answer, a teardown
    /// failed) is started again for its task's newest assignment.
    fn restart_finished(self: &Arc<Self>) {
        let finished: Vec<Assignment> = {
            let supervisors = self.supervisors.lock().expect("supervisor table poisoned");
            let latest = self.assignments.lock().expect("assignment table poisoned");
            latest
                .values()
                .filter(|a| a.task.last_status != TaskStatus::Stopped)
                .filter(|a| supervisors.get(a.task_arn()).is_none_or(|s| s.handle.is_finished()))
                .cloned()
                .collect()
        };
        for a in finished {
            self.supervisors.lock().expect("supervisor table poisoned").remove(a.task_arn());
            self.dispatch(a);
        }
    }

    /// After a restart: interfaces (records and kernel plumbing) of tasks that are no longer
    /// live are released; live tasks' supervisors re-attach theirs.
    async fn release_leftover_interfaces(&self, assignments: &[Assignment]) {
        let live: std::collections::HashSet<&str> =
            assignments.iter().filter(|a| a.task.last_status != TaskStatus::Stopped).map(|a| a.task_arn()).collect();
        let leases = match self.host.interfaces(&self.spec.id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interfaces; leftover interfaces stay until the next start");
                return;
            }
        };
        let mut keep = Vec::new();
        for lease in leases {
            if live.contains(lease.task_arn.as_str()) {
                keep.push(lease);
                continue;
            }
            tracing::info!(eni = %lease.id, task = %lease.task_arn, "releasing the interface of a task that is gone");
            if let Err(e) = self.host.release_interface(&lease.task_arn).await {
                tracing::warn!(eni = %lease.id, error = %e, "cannot release a leftover interface");
            }
        }
        if let Err(e) = self.network.cleanup(&keep).await {
            tracing::warn!(error = %e, "network cleanup failed; leftover interfaces stay until the next start");
        }
    }

    /// Security group changes reach running tasks, and deleted VPCs leave the host.
    async fn follow_network_changes(self: Arc<Self>) {
        let mut changes = self.host.network_changes();
        loop {
            if changes.next().await.is_err() {
                return;
            }
            // Take every change already queued, then apply once.
            while changes.try_next().is_some() {}
            if let Err(e) = self.network.resync().await {
                tracing::warn!(error = %e, "cannot apply security group changes; retrying at the next change");
            }
        }
    }

    /// The one listener of the task endpoint, on the host side of every task's interface.
    async fn start_endpoint(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let endpoint = self.endpoint.clone()?;
        let listener = match self.network.task_endpoint().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "no task endpoint: containers get neither metadata nor role credentials");
                return None;
            }
        };
        match endpoint::serve(listener, endpoint, self.clone(), self.api.clone()) {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve the task endpoint");
                None
            }
        }
    }

    async fn ship_logs(&self, task: &Task, definition: &TaskDefinition) {
        self.logs.ship(task, definition, |name| self.sandbox.container_log(task.id(), name)).await;
    }
}

impl endpoint::Source for Agent {
    fn task(&self, task_arn: &str) -> Option<(Task, TaskDefinition)> {
        let a = self.assignments.lock().expect("assignment table poisoned").get(task_arn).cloned()?;
        Some((a.task, a.definition))
    }

    async fn stats(&self, task_id: &str) -> Option<flotilla_sandbox::TaskStats> {
        self.sandbox.stats(task_id).await.ok()
    }

    fn host(&self) -> &dyn HostApi {
        self.host.as_ref()
    }
}
