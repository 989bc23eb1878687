//! The service scheduler, a reconciler: each pass reads every service and its tasks (from a
//! watch-fed mirror of the store) and moves them one step toward what the service asks for,
//! committing the service record, the tasks it starts and the stops it decides in one
//! transaction compared on the revisions it read. Nothing is kept between passes but that copy
//! of the store, so a crash or restart at any moment resumes without duplicate or lost tasks: a
//! pass that loses a compare-and-write race changes nothing, the mirror is listed again and the
//! next pass decides again from what won.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{Compare, KeyValue, Mirror, Op, Revision, Txn, TxnOutcome};
use flotilla_types::Timestamp;
use flotilla_types::task::{DesiredStatus, HealthStatus, StopCode, Task, TaskStatus};

use super::commits::Commits;
use super::input::{breaker_threshold, cluster_of};
use super::model::*;
use super::{SERVICES, service_key};
use crate::record::{TASKS, decode, encode};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// Why the scheduler stops a task whose essential container failed its health check.
pub(crate) const HEALTH_REASON: &str = "Task failed container health checks";
/// A task that crashes on its own this soon after starting counts as failing to start.
const QUICK_CRASH: i64 = 10_000;
/// How long a task must have run before a deployment counts it: a container that exits at
/// once is RUNNING for a moment, and must fail its deployment, not complete it.
const SETTLE: i64 = 2_000;
/// Consecutive start failures before launches are delayed.
const BACKOFF_AFTER: u32 = 3;
/// The longest delay between launch attempts, as ECS's service throttle.
const MAX_BACKOFF: i64 = 27 * 60 * 1000;
/// The service scheduler's singleton role in the store.
pub const SCHEDULER_ROLE: &str = "service-scheduler";
/// Longest the scheduler sleeps without a store change (protection expiry, grace periods).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct PassSummary {
    pub services: usize,
    pub started: usize,
    pub stopped: usize,
    /// The earliest moment a service wants another pass without any change (a backoff).
    pub next_wake: Option<Timestamp>,
    /// What the pass committed, and at which revision: the next pass must see its own writes.
    pub writes: Vec<(Revision, Vec<Op>)>,
    /// Services whose transaction lost a compare-and-write race (read something stale).
    pub conflicts: usize,
}

/// The service tasks among task records, decoded again only when their revision changes: a
/// pass reads every record, and most did not change since the last.
#[derive(Default)]
struct Decoded {
    /// By key: the revision decoded and the record (`None`: not a service's task).
    records: HashMap<String, (Revision, Option<Arc<TaskRecord>>)>,
}

impl Decoded {
    fn observe<'a>(&mut self, kvs: impl Iterator<Item = &'a KeyValue>) -> Result<Vec<Observed>, ControlError> {
        let of_a_service = memchr::memmem::Finder::new(b"\"group\":\"service:");
        let mut records = HashMap::with_capacity(self.records.len());
        let mut out = Vec::new();
        for kv in kvs {
            let record = match self.records.remove(&kv.key) {
                Some((revision, record)) if revision == kv.mod_revision => record,
                // A quick look at the bytes first: most tasks of a host running many are not a
                // service's.
                _ if of_a_service.find(&kv.value).is_none() => None,
                _ => Some(Arc::new(decode::<TaskRecord>(kv)?))
                    .filter(|r| r.task.group.as_deref().is_some_and(|g| g.starts_with("service:"))),
            };
            if let Some(record) = &record {
                out.push(Observed {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                    record: record.clone(),
                    lb_healthy: true,
                });
            }
            records.insert(kv.key.clone(), (kv.mod_revision, record));
        }
        self.records = records;
        Ok(out)
    }
}

/// What one service's pass did.
struct ServicePass {
    started: usize,
    stopped: usize,
    wake: Option<Timestamp>,
    outcome: Option<TxnOutcome>,
    /// The service's writes, when it committed.
    ops: Vec<Op>,
}

/// A task record of the service with the store key and revision it was read at.
pub(crate) struct Observed {
    key: String,
    revision: Revision,
    pub(crate) record: Arc<TaskRecord>,
    /// Healthy in every target group of its service (true for services without load
    /// balancers); set at the start of each pass.
    pub(crate) lb_healthy: bool,
}

impl Observed {
    pub(crate) fn task(&self) -> &Task {
        &self.record.task
    }

    pub(crate) fn id(&self) -> &str {
        self.record.task.id()
    }

    pub(crate) fn live(&self) -> bool {
        self.task().desired_status == DesiredStatus::Running && self.task().last_status != TaskStatus::Stopped
    }

    fn has_health_checks(&self) -> bool {
        self.task().containers.iter().any(|c| c.health_status.is_some())
    }

    /// RUNNING and, where it has health checks, HEALTHY: what Cloud Map may answer with.
    pub(crate) fn ready(&self) -> bool {
        self.task().last_status == TaskStatus::Running
            && (!self.has_health_checks() || self.task().health_status == Some(HealthStatus::Healthy))
    }

    /// Ready, for long enough that it did not just crash on start, and healthy in its
    /// target groups: what a deployment counts as healthy (and so what lets old tasks go).
    pub(crate) fn healthy(&self, now: Timestamp) -> bool {
        self.ready() && self.lb_healthy && self.settles_at().is_some_and(|t| t <= now)
    }

    fn settles_at(&self) -> Option<Timestamp> {
        self.task().started_at.map(|s| Timestamp(s.0 + SETTLE))
    }

    fn protected(&self, now: Timestamp) -> bool {
        self.record.protection.is_some_and(|until| until > now)
    }
}

fn push_event(record: &mut ServiceRecord, now: Timestamp, message: String) {
    let event = ServiceEvent { id: uuid::Uuid::new_v4().to_string(), created_at: now, message };
    record.service.events.insert(0, event);
    record.service.events.truncate(MAX_EVENTS);
}

fn task_list(ids: &[String]) -> String {
    ids.iter().map(|id| format!("(task {id})")).collect::<Vec<_>>().join(" ")
}

/// Whether a stopped task counts as failed: it stopped on its own, or failed its health
/// checks; neither users nor the scheduler's own scale-in, nor Spot, fail a deployment.
fn failed(task: &Task) -> bool {
    match task.stop_code {
        Some(StopCode::UserInitiated) | Some(StopCode::SpotInterruption) | Some(StopCode::TerminationNotice) => false,
        Some(StopCode::ServiceSchedulerInitiated) => task
            .stopped_reason
            .as_deref()
            .is_some_and(|r| r == HEALTH_REASON || r.starts_with(super::targets::ELB_HEALTH_REASON)),
        _ => true,
    }
}

/// Whether a failed task failed to *start*: it never ran, or its essential container quit by
/// itself at once (a kill from outside, signal 9, is not the task's doing).
fn failed_to_start(task: &Task) -> bool {
    let Some(started) = task.started_at else { return true };
    let ended = task.stopping_at.or(task.execution_stopped_at).or(task.stopped_at).unwrap_or_else(Timestamp::now);
    let quick = ended.0 - started.0 < QUICK_CRASH;
    let killed = task.containers.iter().any(|c| c.exit_code == Some(137));
    let oom = task.stopped_reason.as_deref().is_some_and(|r| r.starts_with("OutOfMemoryError"));
    quick && (!killed || oom)
}

/// The delay before the next launch after `failures` consecutive start failures.
fn backoff_delay(failures: u32) -> i64 {
    let step = failures.saturating_sub(BACKOFF_AFTER).min(20);
    (1000i64 << step).min(MAX_BACKOFF)
}

/// Picks `n` of `tasks` to stop among `candidates` (indices, protected ones left out by the
/// caller): not yet healthy first, then from the zone with the most of `population`, newest
/// first, as ECS's scale-in does.
fn choose_victims(
    tasks: &[Observed],
    candidates: &[usize],
    population: &[usize],
    n: usize,
    now: Timestamp,
) -> Vec<usize> {
    let mut zones: HashMap<&str, usize> = HashMap::new();
    for &i in population {
        *zones.entry(tasks[i].task().availability_zone.as_str()).or_default() += 1;
    }
    let mut left = candidates.to_vec();
    let mut out = Vec::new();
    while out.len() < n && !left.is_empty() {
        let (best, _) = left
            .iter()
            .enumerate()
            .max_by_key(|&(_, &i)| {
                let t = &tasks[i];
                (
                    !t.healthy(now),
                    zones.get(t.task().availability_zone.as_str()).copied().unwrap_or(0),
                    t.task().created_at,
                    t.id(),
                )
            })
            .expect("left is not empty");
        let victim = left.remove(best);
        if let Some(c) = zones.get_mut(tasks[victim].task().availability_zone.as_str()) {
            *c = c.saturating_sub(1);
        }
        out.push(victim);
    }
    out
}

/// What a pass decided for one service.
#[derive(Default)]
struct Decisions {
    /// New task records.
    starts: Vec<TaskRecord>,
    /// Tasks to stop now: index into the observed tasks, the reason.
    stops: Vec<(usize, String)>,
}

impl Control {
    /// Runs the scheduler while this process holds the `service-scheduler` role (campaigning
    /// again whenever it loses it), until `shutdown` resolves.
    pub async fn run_service_scheduler(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let store = self.store.clone();
        crate::roles::hold_role(store.as_ref(), SCHEDULER_ROLE, shutdown, || self.clone().schedule()).await;
    }

    /// The scheduler proper: a pass now, then one after every change to tasks, services or
    /// Cloud Map, and at least once a second. Never returns.
    ///
    /// Its passes read services and tasks from a [`Mirror`] fed by the same watch that wakes
    /// it, so a pass sees every change that woke it without listing thousands of task records
    /// again; a pass's own writes go into the mirror as they commit, so the next pass need
    /// not wait for them to come back, and a pass that lost a compare-and-write race lists
    /// everything afresh.
    async fn schedule(self: Arc<Self>) {
        let mut view = loop {
            match Mirror::open(self.store.clone(), "ecs/", &[SERVICES, TASKS]).await {
                Ok(view) => break view,
                Err(e) => {
                    tracing::warn!(error = %e, "service scheduler cannot read the store; retrying");
                    tokio::time::sleep(IDLE_WAKE).await;
                }
            }
        };
        let mut decoded = Decoded::default();
        let mut registry_changes = self.store.watch("servicediscovery/");
        let mut target_changes = self.store.watch("elbv2/targets/");
        loop {
            let wait = match self.reconcile_view(&mut view, &mut decoded).await {
                Ok(summary) => summary
                    .next_wake
                    .map(|t| Duration::from_millis((t.0 - Timestamp::now().0).clamp(0, 1000) as u64))
                    .unwrap_or(IDLE_WAKE),
                Err(e) => {
                    tracing::warn!(error = %e, "service scheduler pass failed; retrying");
                    if let Err(e) = view.resync().await {
                        tracing::warn!(error = %e, "service scheduler cannot read the store");
                    }
                    IDLE_WAKE
                }
            };
            tokio::select! {
                r = view.changed() => if let Err(e) = r {
                    tracing::warn!(error = %e, "service scheduler lost its watch; listing again");
                    let _ = view.resync().await;
                },
                r = registry_changes.next() => if r.is_err() { registry_changes = self.store.watch("servicediscovery/") },
                r = target_changes.next() => if r.is_err() { target_changes = self.store.watch("elbv2/targets/") },
                _ = tokio::time::sleep(wait) => {}
            }
            // One pass answers every change already committed: a transaction that wrote a
            // hundred task records wakes the scheduler once, not a hundred times.
            if let Err(e) = view.apply_delivered().await {
                tracing::warn!(error = %e, "service scheduler cannot read the store");
            }
            drain(&mut registry_changes, || self.store.watch("servicediscovery/"));
            drain(&mut target_changes, || self.store.watch("elbv2/targets/"));
        }
    }

    /// One pass from the scheduler's mirror; afterwards the mirror holds what the pass
    /// committed (before the watch brings it back), and is listed again if a service's
    /// transaction found it stale.
    async fn reconcile_view(&self, view: &mut Mirror, decoded: &mut Decoded) -> Result<PassSummary, ControlError> {
        let services = view
            .under(SERVICES)
            .map(|kv| Ok((decode(kv)?, kv.mod_revision)))
            .collect::<Result<Vec<(ServiceRecord, u64)>, ControlError>>()?;
        let tasks = decoded.observe(view.under(TASKS))?;
        let mut summary = self.reconcile(services, tasks).await?;
        if summary.conflicts > 0 {
            view.resync().await?;
        } else {
            summary.writes.sort_by_key(|(revision, _)| *revision);
            for (revision, ops) in &summary.writes {
                view.wrote(ops, *revision);
            }
        }
        Ok(summary)
    }

    /// One pass over every ACTIVE and DRAINING service, as the store has them now.
    pub async fn reconcile_services(&self) -> Result<PassSummary, ControlError> {
        let services = self.all_services().await?;
        let tasks = self.store.list_prefix(TASKS).await?;
        let tasks = Decoded::default().observe(tasks.iter())?;
        self.reconcile(services, tasks).await
    }

    /// One pass over `services` with `tasks`, every service task.
    async fn reconcile(
        &self,
        services: Vec<(ServiceRecord, u64)>,
        tasks: Vec<Observed>,
    ) -> Result<PassSummary, ControlError> {
        let pass_started = std::time::Instant::now();
        let mut summary = PassSummary::default();
        if services.iter().all(|(r, _)| r.service.status == ServiceStatus::Inactive) {
            return Ok(summary);
        }
        let mut groups: HashMap<(String, String), Vec<Observed>> = HashMap::new();
        for observed in tasks {
            let Some(name) = observed.task().group.as_deref().and_then(|g| g.strip_prefix("service:")) else {
                continue;
            };
            let (cluster, name) = (observed.task().cluster_name().to_owned(), name.to_owned());
            groups.entry((cluster, name)).or_default().push(observed);
        }
        // One view of the hosts for the whole pass, read when the first service has tasks to
        // start; services that start tasks place one at a time against it and commit in
        // groups (see `Commits`).
        let commits = Commits::lazy(self.store.as_ref());
        // Services are independent: their passes run together, so their transactions share
        // the store's group commit instead of waiting for one fsync each.
        let mut passes = Vec::new();
        for (record, rev) in services {
            if record.service.status == ServiceStatus::Inactive {
                continue;
            }
            let cluster = cluster_of(&record.service.cluster_arn);
            let mut tasks = groups.remove(&(cluster, record.service.service_name.clone())).unwrap_or_default();
            // A service made again under a name that was INACTIVE does not inherit the tasks of
            // the one before.
            tasks.retain(|t| t.task().created_at >= record.service.created_at);
            let name = record.service.service_name.clone();
            let commits = &commits;
            passes.push(async move { (name, self.reconcile_service(record, rev, tasks, commits).await) });
        }
        let read_ms = pass_started.elapsed().as_millis() as u64;
        let outcomes = futures_util::future::join_all(passes).await;
        tracing::debug!(
            read_ms,
            ms = pass_started.elapsed().as_millis() as u64,
            services = outcomes.len(),
            "scheduler pass"
        );
        for (name, outcome) in outcomes {
            match outcome {
                Ok(ServicePass { started, stopped, wake, outcome, ops }) => {
                    summary.services += 1;
                    summary.started += started;
                    summary.stopped += stopped;
                    match outcome {
                        Some(TxnOutcome::Committed(rev)) => summary.writes.push((rev, ops)),
                        Some(TxnOutcome::Conflict) => summary.conflicts += 1,
                        None => {}
                    }
                    summary.next_wake = match (summary.next_wake, wake) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => tracing::warn!(service = %name, error = %e, "service pass failed; the next pass retries"),
            }
        }
        Ok(summary)
    }

    async fn reconcile_service(
        &self,
        mut rec: ServiceRecord,
        rev: u64,
        mut tasks: Vec<Observed>,
        commits: &Commits<'_>,
    ) -> Result<ServicePass, ControlError> {
        let now = Timestamp::now();
        let before = rec.clone();
        let cluster = cluster_of(&rec.service.cluster_arn);
        let name = rec.service.service_name.clone();
        let mut decisions = Decisions::default();

        self.account_stopped(&mut rec, &tasks, now);
        let draining: Vec<String> = rec.draining.iter().map(|d| d.task_id.clone()).collect();
        let live: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].live()).collect();
        // Tasks in service: live and not on their way out.
        let serving: Vec<usize> =
            live.iter().copied().filter(|&i| !draining.iter().any(|d| d == tasks[i].id())).collect();

        // Essential containers that failed their health checks: stop (a replacement follows).
        let grace = i64::from(rec.service.health_check_grace_period_seconds.unwrap_or(0)) * 1000;
        let mut out_of_service: Vec<(usize, String)> = Vec::new();
        // What the target groups say of each task (and so whether a deployment may count it).
        let unhealthy_in = self.target_health(&rec, &mut tasks).await?;
        for &i in &serving {
            let t = tasks[i].task();
            let in_grace = t.started_at.is_some_and(|s| now.0 - s.0 < grace);
            if t.last_status != TaskStatus::Running || in_grace {
                continue;
            }
            if t.health_status == Some(HealthStatus::Unhealthy) {
                push_event(
                    &mut rec,
                    now,
                    format!("(service {name}) (task {}) failed container health checks.", tasks[i].id()),
                );
                out_of_service.push((i, HEALTH_REASON.to_owned()));
            } else if let Some(group) = unhealthy_in.get(tasks[i].id()) {
                push_event(
                    &mut rec,
                    now,
                    format!(
                        "(service {name}) (task {}) failed ELB health checks in (target-group {group}).",
                        tasks[i].id()
                    ),
                );
                out_of_service.push((i, format!("{} (target-group {group})", super::targets::ELB_HEALTH_REASON)));
            }
        }
        let serving: Vec<usize> = serving.into_iter().filter(|i| !out_of_service.iter().any(|(j, _)| j == i)).collect();

        self.check_breaker(&mut rec, now);

        let primary_id = rec.service.deployments.first().map(|d| d.id.clone()).unwrap_or_default();
        let primary_failed = rec.service.deployments.first().is_some_and(|d| d.rollout_state == RolloutState::Failed);
        let of = |i: &usize, id: &str| tasks[*i].task().started_by.as_deref() == Some(id);
        let primary: Vec<usize> = serving.iter().copied().filter(|i| of(i, &primary_id)).collect();
        let old: Vec<usize> = serving.iter().copied().filter(|i| !of(i, &primary_id)).collect();

        let desired = rec.service.desired_count.max(0) as i64;
        let config = rec.service.deployment_configuration.clone();
        let max_total = desired * i64::from(config.maximum()) / 100;
        let min_healthy = (desired * i64::from(config.minimum()) + 99) / 100;
        // Everything not yet STOPPED counts against maximumPercent: tasks on their way out
        // still hold their resources (and may still serve) until they are gone.
        let total_live = tasks.iter().filter(|t| t.task().last_status != TaskStatus::Stopped).count() as i64;

        // Start what the primary lacks, within maximumPercent and the launch backoff.
        let mut to_start = 0i64;
        let throttled = rec.backoff.next_launch_at.is_some_and(|t| t > now);
        if !primary_failed && rec.service.status == ServiceStatus::Active && !throttled {
            let lacking = desired - primary.len() as i64;
            let room = max_total - total_live;
            to_start = lacking.min(room).max(0);
        }

        // Scale-in of the primary: the excess, protected tasks never chosen.
        let mut stopping: Vec<(usize, String)> = out_of_service;
        let excess = primary.len() as i64 - desired;
        if excess > 0 {
            let candidates: Vec<usize> = primary.iter().copied().filter(|&i| !tasks[i].protected(now)).collect();
            for i in choose_victims(&tasks, &candidates, &primary, excess as usize, now) {
                stopping.push((i, String::new()));
            }
        }

        // Old deployments: what is not healthy goes at once; healthy tasks only while the
        // healthy total stays at or above minimumHealthyPercent. A failed primary keeps them.
        if !primary_failed || rec.service.status == ServiceStatus::Draining {
            let healthy_total = serving.iter().filter(|&&i| tasks[i].healthy(now)).count() as i64
                - stopping.iter().filter(|(i, _)| tasks[*i].healthy(now)).count() as i64;
            let mut allowance = (healthy_total - min_healthy).max(0);
            let candidates: Vec<usize> = old.iter().copied().filter(|&i| !tasks[i].protected(now)).collect();
            for i in choose_victims(&tasks, &candidates, &old, candidates.len(), now) {
                if tasks[i].healthy(now) {
                    if allowance == 0 {
                        continue;
                    }
                    allowance -= 1;
                }
                stopping.push((i, String::new()));
            }
        }

        // Scheduler stops: out of Cloud Map first, where the task is registered.
        let stopped_ids: Vec<String> = stopping.iter().map(|(i, _)| tasks[*i].id().to_owned()).collect();
        let mut scale_in: Vec<String> = Vec::new();
        for (i, reason) in stopping {
            let reason = if reason.is_empty() {
                scale_in.push(tasks[i].id().to_owned());
                format!(
                    "Scaling activity initiated by (deployment {})",
                    tasks[i].task().started_by.clone().unwrap_or_default()
                )
            } else {
                reason
            };
            if rec.registered.contains_key(tasks[i].id()) || rec.targets.contains_key(tasks[i].id()) {
                rec.draining.push(Draining { task_id: tasks[i].id().to_owned(), reason });
            } else {
                decisions.stops.push((i, reason));
            }
        }
        if !scale_in.is_empty() {
            push_event(
                &mut rec,
                now,
                format!("(service {name}) has stopped {} running tasks: {}.", scale_in.len(), task_list(&scale_in)),
            );
        }

        // Cloud Map and target groups: register what serves, deregister what does not, and
        // stop a draining task once neither answers with it.
        let registered_ready = self.sync_registries(&mut rec, &tasks, &serving, &stopped_ids).await?;
        self.sync_targets(&mut rec, &tasks, &serving, &stopped_ids).await?;
        let mut finished = Vec::new();
        for d in &rec.draining {
            match tasks.iter().position(|t| t.id() == d.task_id) {
                Some(i) if tasks[i].live() => {
                    if !registered_ready.contains(&d.task_id) && !rec.targets.contains_key(&d.task_id) {
                        decisions.stops.push((i, d.reason.clone()));
                        finished.push(d.task_id.clone());
                    }
                }
                _ => finished.push(d.task_id.clone()),
            }
        }
        rec.draining.retain(|d| !finished.contains(&d.task_id));

        let mut placed = None;
        if to_start > 0 {
            // Read first, place under the pass's placer (see `LaunchInputs`).
            let inputs = self.launch_inputs(&rec).await?;
            commits.ready(self.placer()).await?;
            let ((starts, unplaced), p) =
                commits.place(|placer| self.launch(&rec, inputs, &tasks, &primary, to_start as usize, placer, now));
            decisions.starts = starts;
            placed = Some(p);
            if !decisions.starts.is_empty() {
                let ids: Vec<String> = decisions.starts.iter().map(|r| r.task.id().to_owned()).collect();
                push_event(
                    &mut rec,
                    now,
                    format!("(service {name}) has started {} tasks: {}.", ids.len(), task_list(&ids)),
                );
            }
            if let Some(unplaced) = unplaced {
                let message = unplaced_event(&name, &unplaced);
                // Said once while it lasts, not at every pass.
                if rec.service.events.first().is_none_or(|e| e.message != message) {
                    push_event(&mut rec, now, message);
                }
            }
        }

        self.update_counts(&mut rec, &tasks, &decisions, now);
        // Wake for the end of a backoff, or when a new task will have settled.
        let settling = serving.iter().filter(|&&i| tasks[i].ready()).filter_map(|&i| tasks[i].settles_at());
        let wake = rec.backoff.next_launch_at.into_iter().chain(settling).filter(|t| *t > now).min();

        let unchanged = rec == before && decisions.starts.is_empty() && decisions.stops.is_empty();
        if unchanged {
            return Ok(ServicePass { started: 0, stopped: 0, wake, outcome: None, ops: Vec::new() });
        }
        let key = service_key(&cluster, &name);
        let mut txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&rec)));
        for start in &decisions.starts {
            txn = txn.then(Op::put(crate::record::task_key(&cluster, start.task.id()), encode(start)));
        }
        for (i, reason) in &decisions.stops {
            let observed = &tasks[*i];
            let mut record = TaskRecord::clone(&observed.record);
            request_stop(&mut record.task, StopCode::ServiceSchedulerInitiated, reason);
            record.task.version += 1;
            txn = txn
                .when(Compare::revision(&observed.key, observed.revision))
                .then(Op::put(&observed.key, encode(&record)));
        }
        let ops = txn.ops.clone();
        let outcome = match placed {
            Some(placed) => commits.commit(txn, placed).await?,
            None => self.store.txn(txn).await?,
        };
        Ok(match outcome {
            TxnOutcome::Committed(_) => ServicePass {
                started: decisions.starts.len(),
                stopped: decisions.stops.len(),
                wake,
                outcome: Some(outcome),
                ops,
            },
            // Someone changed the service or a task meanwhile: the next pass decides again.
            TxnOutcome::Conflict => {
                ServicePass { started: 0, stopped: 0, wake: Some(now), outcome: Some(outcome), ops: Vec::new() }
            }
        })
    }

    /// Counts the tasks asked to stop since the last pass: deployment failures and the launch
    /// backoff.
    fn account_stopped(&self, rec: &mut ServiceRecord, tasks: &[Observed], now: Timestamp) {
        let name = rec.service.service_name.clone();
        for t in tasks {
            let task = t.task();
            // Counted as soon as the task is asked to stop, so the replacement started in
            // the same pass already waits out any backoff.
            if task.desired_status != DesiredStatus::Stopped || rec.accounted.contains(t.id()) {
                continue;
            }
            rec.accounted.insert(t.id().to_owned());
            if !failed(task) {
                continue;
            }
            if let Some(d) = rec.service.deployments.iter_mut().find(|d| Some(&d.id) == task.started_by.as_ref())
                && d.rollout_state == RolloutState::InProgress
            {
                d.failed_tasks += 1;
                d.updated_at = now;
            }
            if failed_to_start(task) {
                let b = &mut rec.backoff;
                b.failures += 1;
                b.last_failure_at = Some(now);
                if b.failures >= BACKOFF_AFTER {
                    b.next_launch_at = Some(Timestamp(now.0 + backoff_delay(b.failures)));
                    if !b.reported {
                        b.reported = true;
                        push_event(
                            rec,
                            now,
                            format!("(service {name}) is unable to consistently start tasks successfully."),
                        );
                    }
                }
            }
        }
        // A task that has run a while since the last failure ends the run of failures.
        let settled = rec.backoff.last_failure_at.is_some_and(|f| {
            tasks.iter().any(|t| {
                t.live()
                    && t.task().last_status == TaskStatus::Running
                    && t.task().started_at.is_some_and(|s| s >= f && now.0 - s.0 >= QUICK_CRASH)
            })
        });
        if settled {
            rec.backoff = Backoff::default();
        }
        // Forget tasks whose records are gone (reaped an hour after they stopped).
        rec.accounted.retain(|id| tasks.iter().any(|t| t.id() == id));
    }

    /// Trips the circuit breaker of a failing primary, and rolls back when asked to.
    fn check_breaker(&self, rec: &mut ServiceRecord, now: Timestamp) {
        let breaker = rec.service.deployment_configuration.breaker();
        let name = rec.service.service_name.clone();
        let Some(primary) = rec.service.deployments.first_mut() else { return };
        let threshold = breaker_threshold(primary.desired_count.max(rec.service.desired_count));
        if let Some(h) = rec.history.iter_mut().find(|h| h.deployment_id() == primary.id && h.status.is_open()) {
            h.deployment_circuit_breaker.failure_count = primary.failed_tasks;
        }
        if !breaker.enable || primary.rollout_state != RolloutState::InProgress || primary.failed_tasks < threshold {
            return;
        }
        primary.rollout_state = RolloutState::Failed;
        primary.rollout_state_reason = "ECS deployment circuit breaker: tasks failed to start.".into();
        primary.updated_at = now;
        let failed_id = primary.id.clone();
        push_event(
            rec,
            now,
            format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."),
        );
        let target = rec
            .history
            .iter()
            .rev()
            .find(|h| h.deployment_id() != failed_id && h.status == ServiceDeploymentStatus::Successful)
            .map(|h| h.deployment_id());
        let reason = "ECS deployment circuit breaker: tasks failed to start.".to_owned();
        match (breaker.rollback, target) {
            (true, Some(target)) => {
                push_event(rec, now, format!("(service {name}) rolling back to deployment {target}."));
                self.roll_back(rec, &failed_id, &target, reason, now);
            }
            _ => {
                if let Some(h) = rec.history.iter_mut().find(|h| h.deployment_id() == failed_id && h.status.is_open()) {
                    h.status = ServiceDeploymentStatus::Stopped;
                    h.status_reason = Some(reason);
                    h.stopped_at = Some(now);
                    h.updated_at = now;
                    h.deployment_circuit_breaker.status = "TRIGGERED".into();
                }
            }
        }
    }

    /// Makes deployment `target` PRIMARY again in place of `failed`.
    pub(crate) fn roll_back(
        &self,
        rec: &mut ServiceRecord,
        failed: &str,
        target: &str,
        reason: String,
        now: Timestamp,
    ) {
        let number = target.strip_prefix("ecs-svc/").unwrap_or(target).to_owned();
        self.start_deployment(rec, now, Some(&number));
        let cluster = cluster_of(&rec.service.cluster_arn);
        let revision = self.identity.service_revision(&cluster, &rec.service.service_name, &number);
        if let Some(h) = rec.history.iter_mut().rev().find(|h| h.deployment_id() == failed) {
            h.status = ServiceDeploymentStatus::RollbackInProgress;
            h.status_reason = Some(reason.clone());
            h.stopped_at = None;
            h.updated_at = now;
            if h.deployment_circuit_breaker.status == "MONITORING" {
                h.deployment_circuit_breaker.status = "TRIGGERED".into();
            }
            h.rollback = Some(Rollback { reason, started_at: now, service_revision_arn: revision });
        }
    }

    /// Counts per deployment and for the service; completes deployments, notes steady state,
    /// retires emptied deployments and finishes a DRAINING service.
    fn update_counts(&self, rec: &mut ServiceRecord, tasks: &[Observed], decisions: &Decisions, now: Timestamp) {
        let name = rec.service.service_name.clone();
        let stopping: Vec<&str> = decisions.stops.iter().map(|(i, _)| tasks[*i].id()).collect();
        let live: Vec<&Observed> = tasks.iter().filter(|t| t.live() && !stopping.contains(&t.id())).collect();
        let mut total_running = 0;
        let mut total_pending = 0;
        for (n, d) in rec.service.deployments.iter_mut().enumerate() {
            let mine: Vec<&&Observed> = live.iter().filter(|t| t.task().started_by.as_deref() == Some(&d.id)).collect();
            let running = mine.iter().filter(|t| t.task().last_status == TaskStatus::Running).count() as i32;
            let mut pending = mine.iter().filter(|t| t.task().last_status < TaskStatus::Running).count() as i32;
            if n == 0 {
                pending += decisions.starts.len() as i32;
            }
            if (running, pending) != (d.running_count, d.pending_count) {
                d.running_count = running;
                d.pending_count = pending;
                d.updated_at = now;
            }
            total_running += running;
            total_pending += pending;
        }
        rec.service.running_count = total_running;
        rec.service.pending_count = total_pending;

        let desired = rec.service.desired_count;
        let primary_id = rec.service.deployments.first().map(|d| d.id.clone()).unwrap_or_default();
        let primary_healthy =
            live.iter().filter(|t| t.task().started_by.as_deref() == Some(&primary_id) && t.healthy(now)).count()
                as i32;
        let primary_live = live.iter().filter(|t| t.task().started_by.as_deref() == Some(&primary_id)).count() as i32;
        let others_live = live.iter().any(|t| t.task().started_by.as_deref() != Some(&primary_id));
        let primary_in_progress =
            rec.service.deployments.first().is_some_and(|d| d.rollout_state == RolloutState::InProgress);
        let done = primary_healthy == desired
            && primary_live == desired
            && !others_live
            && decisions.starts.is_empty()
            && rec.draining.is_empty();

        if done && primary_in_progress {
            let primary = &mut rec.service.deployments[0];
            primary.rollout_state = RolloutState::Completed;
            primary.rollout_state_reason = format!("ECS deployment {} completed.", primary.id);
            primary.updated_at = now;
            let cluster = cluster_of(&rec.service.cluster_arn);
            let revision = self.identity.service_revision(&cluster, &name, primary.number());
            push_event(rec, now, format!("(service {name}) (deployment {primary_id}) deployment completed."));
            for h in rec.history.iter_mut() {
                if h.deployment_id() == primary_id && h.status.is_open() {
                    h.status = ServiceDeploymentStatus::Successful;
                    h.finished_at = Some(now);
                    h.updated_at = now;
                    if h.deployment_circuit_breaker.status == "MONITORING" {
                        h.deployment_circuit_breaker.status = "MONITORING_COMPLETE".into();
                    }
                } else if h.status == ServiceDeploymentStatus::RollbackInProgress
                    && h.rollback.as_ref().is_some_and(|r| r.service_revision_arn == revision)
                {
                    h.status = ServiceDeploymentStatus::RollbackSuccessful;
                    h.finished_at = Some(now);
                    h.updated_at = now;
                }
            }
        }
        // Deployments with nothing left running are retired; a failed one stays in sight until
        // the deployment that replaced it completes.
        let completed = rec.service.deployments.first().is_some_and(|d| d.rollout_state == RolloutState::Completed);
        let live_ids: Vec<Option<&str>> = live.iter().map(|t| t.task().started_by.as_deref()).collect();
        rec.service.deployments.retain(|d| {
            d.status == DeploymentStatus::Primary
                || live_ids.contains(&Some(d.id.as_str()))
                || (d.rollout_state == RolloutState::Failed && !completed)
        });
        for h in rec.history.iter_mut().filter(|h| h.status.is_open()) {
            if let Some(d) = rec.service.deployments.iter().find(|d| d.id == h.deployment_id()) {
                h.target_service_revision.running_task_count = d.running_count;
                h.target_service_revision.pending_task_count = d.pending_count;
                h.target_service_revision.requested_task_count = d.desired_count;
            }
        }

        let steady = done && rec.service.deployments.len() == 1 && rec.service.status == ServiceStatus::Active;
        if steady && !rec.steady {
            push_event(rec, now, format!("(service {name}) has reached a steady state."));
        }
        rec.steady = steady;
        // DRAINING ends once every task is at least STOPPING, as on ECS.
        let lingering = tasks.iter().any(|t| t.task().last_status < TaskStatus::Stopping);
        if rec.service.status == ServiceStatus::Draining && !lingering && rec.draining.is_empty() {
            rec.service.status = ServiceStatus::Inactive;
            rec.service.deployments.clear();
        }
    }
}

/// Takes every change `watch` already has; a lagged watch is made anew (the pass re-reads all).
fn drain(watch: &mut flotilla_store::Watch, renew: impl Fn() -> flotilla_store::Watch) {
    use futures_util::FutureExt;
    while let Some(event) = watch.next().now_or_never() {
        if event.is_err() {
            *watch = renew();
            return;
        }
    }
}

/// ECS's service event for a task no host can take.
fn unplaced_event(service: &str, unplaced: &crate::host::Unplaced) -> String {
    let head = format!(
        "(service {service}) was unable to place a task because no container instance met all of its requirements."
    );
    match unplaced.closest() {
        Some((host, reason)) => {
            let what = match *reason {
                crate::host::NO_CPU => "has insufficient CPU units available",
                crate::host::NO_MEMORY => "has insufficient memory available",
                crate::host::NO_TASKS => "runs as many tasks as its --max-tasks allows",
                _ => "has an agent that is not connected",
            };
            format!(
                "{head} The closest matching (container-instance {host}) {what}. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
            )
        }
        None => format!("{head} Reason: No Container Instances were found in your cluster."),
    }
}

/// Asks a task to stop: desired STOPPED with a code and reason, unless it was asked already.
pub(crate) fn request_stop(task: &mut Task, code: StopCode, reason: &str) {
    if task.desired_status == DesiredStatus::Stopped {
        return;
    }
    task.desired_status = DesiredStatus::Stopped;
    task.stop_code.get_or_insert(code);
    task.stopped_reason.get_or_insert_with(|| reason.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_delay(3), 1000);
        assert_eq!(backoff_delay(4), 2000);
        assert_eq!(backoff_delay(6), 8000);
        assert_eq!(backoff_delay(40), MAX_BACKOFF);
    }

    #[test]
    fn breaker_threshold_follows_ecs() {
        assert_eq!(breaker_threshold(1), 3);
        assert_eq!(breaker_threshold(2), 3);
        assert_eq!(breaker_threshold(10), 5);
        assert_eq!(breaker_threshold(11), 6);
        assert_eq!(breaker_threshold(1000), 200);
    }
}
