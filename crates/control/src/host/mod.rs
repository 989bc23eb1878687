//! Hosts and what they run: registration, the one "choose a host" step of placement, and
//! the merging of host reports into task records. `local.rs` serves the host API in process.

mod credentials;
mod discovery;
mod failure;
mod heartbeats;
mod lb;
mod local;
mod placement;
mod report;
mod secrets;
mod tokens;

use flotilla_host::{Host, HostSpec, HostStatus, TaskReport};
use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::task::{Task, TaskStatus};
use flotilla_types::{Arn, ResourceKind, Timestamp};

pub use failure::{HostLiveness, HostView};
pub(crate) use heartbeats::Heartbeats;
pub use local::LocalHostApi;
pub use placement::{Allocation, Reservation};
pub(crate) use placement::{Delta, NO_CPU, NO_MEMORY, NO_TASKS, Placer, Unplaced};

use crate::record::{Read, decode, encode, list_as, load, task_key};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

pub(crate) const HOSTS: &str = "hosts/";

fn host_key(id: &str) -> String {
    format!("{HOSTS}{id}")
}

impl Control {
    /// Registers a host (again): its spec is replaced, its tasks stay its own. Tasks that no
    /// host has (made while none was registered, or by an older version) become this host's
    /// when it is the only one.
    pub async fn register_host(&self, spec: HostSpec) -> Result<Host, ControlError> {
        if spec.id.is_empty() || spec.id.contains('/') {
            return Err(ControlError::invalid(format!("host id '{}' must be non-empty and have no '/'.", spec.id)));
        }
        let key = host_key(&spec.id);
        let host = loop {
            let existing = load::<Host>(self.store.as_ref(), &key).await?;
            let host = Host {
                spec: spec.clone(),
                registered_at: existing.as_ref().map(|(h, _)| h.registered_at).unwrap_or_else(Timestamp::now),
                last_seen: Some(Timestamp::now()),
                status: HostStatus::Active,
            };
            let compare = match &existing {
                Some((_, rev)) => Compare::revision(&key, *rev),
                None => Compare::absent(&key),
            };
            let txn = Txn::new().when(compare).then(Op::put(&key, encode(&host)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                if let Some(seen) = host.last_seen {
                    self.heartbeats.written(&host.spec.id, seen);
                }
                break host;
            }
        };
        if self.hosts().await?.len() == 1 {
            self.adopt_unassigned_tasks(&host.spec.id).await?;
        }
        Ok(host)
    }

    /// The host's agent is alive: records when it was last heard from, at once or, while the
    /// store has a recent record of it from this server, in the next of this server's grouped
    /// writes (see `heartbeats.rs`).
    pub async fn host_heartbeat(&self, host_id: &str) -> Result<(), ControlError> {
        let now = Timestamp::now();
        if self.heartbeats.heard(&self.store, host_id, now) {
            return Ok(());
        }
        let key = host_key(host_id);
        loop {
            let Some((mut host, rev)) = load::<Host>(self.store.as_ref(), &key).await? else {
                return Err(ControlError::ResourceNotFound { arn: format!("host {host_id}") });
            };
            host.last_seen = host.last_seen.max(Some(now));
            if host.status == HostStatus::Lost {
                // Back after it was lost: its tasks were stopped meanwhile, and its agent
                // stops its copies when it sees them STOPPED in its assignments.
                tracing::info!(host = host_id, "a lost host's agent is heard from again; ACTIVE");
                host.status = HostStatus::Active;
            }
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&host)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                self.heartbeats.written(host_id, now);
                return Ok(());
            }
        }
    }

    pub async fn hosts(&self) -> Result<Vec<Host>, ControlError> {
        self.hosts_as(Read::Latest).await
    }

    pub(crate) async fn hosts_as(&self, read: Read) -> Result<Vec<Host>, ControlError> {
        list_as(self.store.as_ref(), HOSTS, read).await?.iter().map(decode).collect()
    }

    async fn adopt_unassigned_tasks(&self, host_id: &str) -> Result<(), ControlError> {
        for kv in self.store.list_prefix(crate::record::TASKS).await? {
            let mut record: TaskRecord = decode(&kv)?;
            if record.host_id.is_some() || record.task.last_status == TaskStatus::Stopped {
                continue;
            }
            record.host_id = Some(host_id.to_owned());
            // A conflict means the record changed under us; the next registration retries.
            let txn =
                Txn::new().when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::put(&kv.key, encode(&record)));
            self.store.txn(txn).await?;
        }
        Ok(())
    }

    /// The store key of a task ARN.
    pub(crate) fn task_key_of(&self, task_arn: &str) -> Result<String, ControlError> {
        let arn = Arn::parse(task_arn)
            .filter(|a| a.kind == ResourceKind::Task)
            .ok_or_else(|| ControlError::invalid(format!("task: '{task_arn}' is not a task ARN.")))?;
        let (cluster, id) = arn
            .resource
            .split_once('/')
            .ok_or_else(|| ControlError::invalid(format!("task: '{task_arn}' names no cluster.")))?;
        Ok(task_key(cluster, id))
    }

    /// Records a host's report on one task, in one transaction.
    pub async fn apply_report(&self, report: &TaskReport) -> Result<Task, ControlError> {
        let key = self.task_key_of(&report.task_arn)?;
        loop {
            let Some((mut record, rev)) = load::<TaskRecord>(self.store.as_ref(), &key).await? else {
                return Err(ControlError::ResourceNotFound { arn: report.task_arn.clone() });
            };
            let before = record.task.clone();
            report::merge(&mut record.task, report);
            if record.task == before {
                return Ok(record.task);
            }
            record.task.version = before.version + 1;
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            // STOPPED: the task's reservation goes back to its host in the same transaction.
            if record.task.last_status == TaskStatus::Stopped
                && let (Some(host), Some(reservation)) = (record.host_id.clone(), record.reservation.take())
            {
                txn = self.release_ops(txn, &host, reservation).await?;
            }
            let txn = txn.then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.task);
            }
        }
    }
}
