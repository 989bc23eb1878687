//! The host agent: it makes the tasks the control plane records real on this host.
//!
//! For each task it pulls the images, creates the sandbox, starts containers in `dependsOn`
//! order, runs health checks, ships logs, reports every transition back to the control plane,
//! and tears everything down in reverse order when the task should stop.
//!
//! **Architecture Invariant:** the agent is a reconciler. Each pass re-reads desired state
//! (the store) and observed state (the sandbox's shims); nothing it holds in memory is needed
//! to recover after a restart. Tasks keep running while the agent is down, because their
//! containers belong to per-task shims, not to this process.

pub mod health;
mod logs;
pub mod metadata;
pub mod network;
pub mod order;
mod secrets;
mod spec;
mod supervise;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_control::{Control, ControlError};
use flotilla_image::ImageStore;
use flotilla_sandbox::{LinuxSandbox, Sandbox};
use flotilla_types::Timestamp;
use flotilla_types::task::{Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinition;

/// Stopped tasks stay describable at least this long, as on Fargate.
const STOPPED_RETENTION: Duration = Duration::from_secs(60 * 60);
/// How often a reconcile pass runs when no store change wakes it.
const RESYNC: Duration = Duration::from_secs(2);

pub struct Agent {
    control: Arc<Control>,
    images: Arc<ImageStore>,
    sandbox: Arc<LinuxSandbox>,
    logs: logs::Shipper,
    networking: Arc<network::Networking>,
    /// SSM Parameter Store and Secrets Manager, for `secrets` and `repositoryCredentials`.
    secrets: Option<Arc<flotilla_secrets::Secrets>>,
    region: String,
    supervisors: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Agent {
    pub fn new(
        control: Arc<Control>,
        images: Arc<ImageStore>,
        sandbox: Arc<LinuxSandbox>,
        networking: Arc<network::Networking>,
        log_store: Option<Arc<flotilla_logs::LogStore>>,
        secrets: Option<Arc<flotilla_secrets::Secrets>>,
        state_dir: std::path::PathBuf,
    ) -> Arc<Agent> {
        let region = control.identity().region.clone();
        Arc::new(Agent {
            control,
            images,
            sandbox,
            logs: logs::Shipper::new(log_store, state_dir),
            networking,
            secrets,
            region,
            supervisors: Mutex::new(HashMap::new()),
        })
    }

    async fn task(&self, cluster: &str, id: &str) -> Result<Option<Task>, ControlError> {
        let (tasks, _) = self.control.describe_tasks(Some(cluster), &[id.to_owned()], true).await?;
        Ok(tasks.into_iter().next())
    }

    /// Runs reconcile passes until `shutdown` resolves. Supervisors are then abandoned, not
    /// stopped: the tasks keep running and the next agent adopts them.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut changes = self.control.store().watch("ecs/tasks/");
        let mut last_reap = std::time::Instant::now();
        self.release_leftover_interfaces().await;
        let groups = tokio::spawn(self.clone().follow_security_groups());
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconcile pass failed; retrying");
            }
            if last_reap.elapsed() > Duration::from_secs(60) {
                last_reap = std::time::Instant::now();
                let cutoff = Timestamp(Timestamp::now().0 - STOPPED_RETENTION.as_millis() as i64);
                let _ = self.control.reap_stopped_tasks(cutoff).await;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = changes.next() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
        groups.abort();
        let supervisors: Vec<_> = self.supervisors.lock().expect("supervisor table poisoned").drain().collect();
        for (_, handle) in supervisors {
            handle.abort();
            let _ = handle.await;
        }
        self.networking.shutdown().await;
    }

    /// After a restart: interfaces (records and kernel plumbing) of tasks that are no longer
    /// live are released; live tasks' supervisors re-attach theirs.
    async fn release_leftover_interfaces(&self) {
        let live: std::collections::HashSet<String> = match self.control.all_tasks().await {
            Ok(records) => records
                .into_iter()
                .filter(|r| r.task.last_status != TaskStatus::Stopped)
                .map(|r| r.task.task_arn)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list tasks; leftover interfaces stay until the next start");
                return;
            }
        };
        if let Err(e) = self.networking.cleanup(&live).await {
            tracing::warn!(error = %e, "network cleanup failed; leftover interfaces stay until the next start");
        }
    }

    /// Security group changes reach running tasks, and deleted VPCs leave the host: every
    /// change to a group or a VPC re-applies the groups of the VPCs this host serves.
    async fn follow_security_groups(self: Arc<Self>) {
        use flotilla_control::network_keys::{PREFIX, SECURITY_GROUPS, VPCS};
        let relevant = |key: &str| key.starts_with(SECURITY_GROUPS) || key.starts_with(VPCS);
        let mut changes = self.control.store().watch(PREFIX);
        loop {
            let mut dirty = match changes.next().await {
                Ok(event) => relevant(event.key()),
                Err(flotilla_store::StoreError::WatchLagged { .. }) => {
                    changes = self.control.store().watch(PREFIX);
                    true
                }
                Err(_) => return,
            };
            // Take every change already queued, then apply once.
            while let Ok(Ok(event)) = tokio::time::timeout(Duration::ZERO, changes.next()).await {
                dirty |= relevant(event.key());
            }
            if !dirty {
                continue;
            }
            if let Err(e) = self.networking.resync().await {
                tracing::warn!(error = %e, "cannot apply security group changes; retrying at the next change");
            }
        }
    }

    /// Makes sure every task that is not STOPPED has a live supervisor.
    async fn reconcile(self: &Arc<Self>) -> Result<(), ControlError> {
        let records = self.control.all_tasks().await?;
        let mut supervisors = self.supervisors.lock().expect("supervisor table poisoned");
        supervisors.retain(|_, h| !h.is_finished());
        for record in records {
            let task = record.task;
            if task.last_status == TaskStatus::Stopped || supervisors.contains_key(task.id()) {
                continue;
            }
            let cluster = task.cluster_arn.rsplit('/').next().unwrap_or_default().to_owned();
            let supervisor = supervise::Supervisor {
                agent: self.clone(),
                cluster,
                task_id: task.id().to_owned(),
                task_arn: task.task_arn.clone(),
                awsvpc: network::AwsvpcRequest::from_network_configuration(record.network_configuration.as_ref()),
            };
            supervisors.insert(task.id().to_owned(), tokio::spawn(supervisor.run()));
        }
        Ok(())
    }

    /// Serves task metadata inside the task's network namespace.
    async fn start_metadata(self: &Arc<Self>, cluster: &str, task_id: &str) -> Option<tokio::task::JoinHandle<()>> {
        // The task directory's layout pins the namespace here (see flotilla_sandbox).
        let netns = self.sandbox.task_dir(task_id).join("ns/net");
        let listener = match metadata::listen_in_netns(&netns) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(task = task_id, error = %e, "no task metadata endpoint");
                return None;
            }
        };
        let source =
            Arc::new(TaskSource { agent: self.clone(), cluster: cluster.to_owned(), task_id: task_id.to_owned() });
        metadata::serve(listener, source).ok()
    }

    async fn prepare_logs(&self, task: &Task, definition: &TaskDefinition) -> Result<(), String> {
        self.logs.prepare(task, definition).await
    }

    async fn ship_logs(&self, task: &Task, definition: &TaskDefinition) {
        self.logs.ship(task, definition, |name| self.sandbox.container_log(task.id(), name)).await;
    }

    fn forget_logs(&self, task_id: &str) {
        self.logs.forget(task_id);
    }
}

struct TaskSource {
    agent: Arc<Agent>,
    cluster: String,
    task_id: String,
}

impl metadata::MetadataSource for TaskSource {
    async fn task(&self) -> Option<(Task, TaskDefinition)> {
        let task = self.agent.task(&self.cluster, &self.task_id).await.ok()??;
        let (definition, _) = self.agent.control.describe_task_definition(&task.task_definition_arn).await.ok()?;
        Some((task, definition))
    }

    async fn stats(&self) -> Option<flotilla_sandbox::TaskStats> {
        self.agent.sandbox.stats(&self.task_id).await.ok()
    }
}
