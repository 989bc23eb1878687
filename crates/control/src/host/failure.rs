//! Host loss: the singleton host-failure detector marks a host LOST when its agent was not
//! heard from past the grace period, and stops its tasks (releasing their reservations) so
//! that services replace them elsewhere. Also the overview of hosts that `flotilla hosts`
//! shows.
//!
//! **Invariant:** the grace is longer than the agents' fence time plus their heartbeat period
//! plus how stale a server's record of a host may be when it answers a heartbeat from memory
//! (a quarter of the grace, `heartbeats.rs`), plus a margin: an agent cut off from the control
//! plane stops its own tasks after its fence time, so by the time the detector lets
//! replacements start, the lost host's copies are gone. Defaults: 20 s > 10 s + 2 s + 5 s.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_host::{Host, HostStatus, TaskReport};
use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Timestamp;
use flotilla_types::task::{StopCode, TaskStatus};
use serde::Serialize;

use super::HOSTS;
use crate::record::{decode, encode};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// The singleton role's name in the store.
pub const DETECTOR_ROLE: &str = "host-failure-detector";

/// How long a host may go unheard before it is lost.
#[derive(Clone, Copy, Debug)]
pub struct HostLiveness {
    pub grace: Duration,
}

impl HostLiveness {
    /// The agents' default fence time (10 s) plus a 10 s margin.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

    /// `FLOTILLA_HOST_GRACE` (seconds, fractions allowed) or the default.
    pub fn from_env() -> HostLiveness {
        let grace = std::env::var("FLOTILLA_HOST_GRACE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(Self::DEFAULT_GRACE, Duration::from_secs_f64);
        HostLiveness { grace }
    }

    /// How often the detector looks.
    fn check_every(&self) -> Duration {
        (self.grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// One host as `flotilla hosts` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub id: String,
    pub availability_zone: String,
    pub status: HostStatus,
    /// Allocatable CPU units and MiB (after the host's reserve and overcommit).
    pub cpu: u32,
    pub memory: u32,
    pub allocated_cpu: u32,
    pub allocated_memory: u32,
    /// Tasks assigned to it and not yet STOPPED.
    pub tasks: u32,
    pub registered_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<Ipv4Addr>,
}

fn lost_reason(host: &str, grace: Duration) -> String {
    format!("Host {host} was lost: its agent was not heard from for {} seconds.", grace.as_secs_f64())
}

impl Control {
    /// Every host with its capacity, allocation, live task count and status.
    pub async fn host_overview(&self) -> Result<Vec<HostView>, ControlError> {
        let placer = self.placer().await?;
        let mut tasks: HashMap<String, u32> = HashMap::new();
        for record in self.all_tasks().await? {
            if let Some(host) = record.host_id
                && record.task.last_status != TaskStatus::Stopped
            {
                *tasks.entry(host).or_default() += 1;
            }
        }
        Ok(placer
            .hosts()
            .map(|(h, a)| HostView {
                id: h.spec.id.clone(),
                availability_zone: h.spec.availability_zone.clone(),
                status: h.status,
                cpu: h.spec.cpu,
                memory: h.spec.memory,
                allocated_cpu: a.cpu,
                allocated_memory: a.memory,
                tasks: tasks.get(&h.spec.id).copied().unwrap_or(0),
                registered_at: h.registered_at,
                last_seen: h.last_seen,
                underlay_ip: h.spec.underlay_ip,
            })
            .collect())
    }

    /// Runs the host-failure detector while this process holds its singleton role
    /// (campaigning again whenever it loses it), until `shutdown` resolves.
    pub async fn run_host_failure_detector(
        self: Arc<Self>,
        liveness: HostLiveness,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let store = self.store.clone();
        crate::roles::hold_role(store.as_ref(), DETECTOR_ROLE, shutdown, || self.clone().watch_hosts(liveness)).await;
    }

    /// The detector while this process holds its role. Never returns.
    async fn watch_hosts(self: Arc<Self>, liveness: HostLiveness) {
        // A new holder gives every host a full grace from now: the last holder may have died
        // long ago, and a restarted `flotilla up` must not lose its own host.
        let since = Timestamp::now();
        let mut tick = tokio::time::interval(liveness.check_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.detect_lost_hosts(liveness.grace, since).await {
                tracing::warn!(error = %e, "host-failure detection failed; retrying");
            }
        }
    }

    /// One look: hosts unheard from for `grace` (counted from `since` at the earliest) become
    /// LOST, and every LOST host's tasks are stopped. Returns the hosts it marked lost.
    pub async fn detect_lost_hosts(&self, grace: Duration, since: Timestamp) -> Result<Vec<String>, ControlError> {
        let now = Timestamp::now();
        let grace_ms = grace.as_millis() as i64;
        let mut marked = Vec::new();
        let mut lost = Vec::new();
        for kv in self.store.list_prefix(HOSTS).await? {
            let mut host: Host = decode(&kv)?;
            if host.status == HostStatus::Lost {
                lost.push(host.spec.id);
                continue;
            }
            let heard = host.last_seen.unwrap_or(host.registered_at).max(since);
            if now.0 - heard.0 <= grace_ms {
                continue;
            }
            host.status = HostStatus::Lost;
            let txn =
                Txn::new().when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::put(&kv.key, encode(&host)));
            // A conflict is a heartbeat that just arrived: the host is alive.
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                tracing::warn!(host = %host.spec.id, "host lost: its agent was not heard from; stopping its tasks");
                marked.push(host.spec.id.clone());
                lost.push(host.spec.id);
            }
        }
        if lost.is_empty() {
            return Ok(marked);
        }
        for kv in self.store.list_prefix(crate::record::TASKS).await? {
            let record: TaskRecord = decode(&kv)?;
            let Some(host) = record.host_id.as_deref().filter(|h| lost.iter().any(|l| l == h)) else { continue };
            if record.task.last_status != TaskStatus::Stopped {
                let report = TaskReport::new(&record.task.task_arn)
                    .stop(StopCode::TerminationNotice, lost_reason(host, grace))
                    .status(TaskStatus::Stopped);
                self.apply_report(&report).await?;
            }
            // Its address may go to a replacement: the host's copy was fenced before now.
            if let Some(eni) = self.network_interface_for(&record.task.task_arn).await?
                && let Err(e) = self.delete_network_interface(&eni.id).await
            {
                tracing::warn!(eni = %eni.id, error = %e, "cannot release a lost task's interface; retrying next look");
            }
        }
        Ok(marked)
    }
}
