//! Target groups as the plane runs them: each target's verdict, draining flag and requests in
//! flight, kept across snapshots, and the choice of a target for a new request or connection.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_host::lb::{HealthCheckSpec, TargetGroupSpec, TargetObservation, TargetProtocol, TargetReport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::upstream::Upstream;
use crate::workers::PerWorker;
use crate::{Shared, health};

/// A target's verdict as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Verdict {
    Initial = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Verdict {
    fn from_u8(v: u8) -> Verdict {
        match v {
            1 => Verdict::Healthy,
            2 => Verdict::Unhealthy,
            _ => Verdict::Initial,
        }
    }
}

/// The settings of a group that routing and health checks read.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub protocol: TargetProtocol,
    pub health: HealthCheckSpec,
    pub slow_start: Duration,
    pub stickiness: Option<u32>,
}

struct Members {
    settings: Arc<Settings>,
    targets: Vec<Arc<Target>>,
}

pub(crate) struct Group {
    pub arn: Arc<str>,
    /// The `AWSALBTG` value naming this group (opaque to clients).
    pub cookie: String,
    /// Swapped whole on each snapshot, so a request sees one consistent membership; a copy
    /// per worker, so requests on different threads share no reference count or lock.
    members: PerWorker<RwLock<Arc<Members>>>,
    /// The round-robin turn, per worker (an atomic only so the group can be shared).
    next: PerWorker<AtomicUsize>,
}

pub(crate) struct Target {
    pub addr: SocketAddrV4,
    group_arn: Arc<str>,
    /// The `AWSALB` value naming this target.
    pub cookie: String,
    verdict: AtomicU8,
    /// Milliseconds since the plane's epoch at which the checks last found it healthy (0:
    /// never, so no slow start).
    healthy_since_ms: AtomicU64,
    draining: AtomicBool,
    drained_reported: AtomicBool,
    in_flight: AtomicUsize,
    /// Cancelled when the target leaves its group: health checks stop, connections close.
    pub removed: CancellationToken,
    /// The same, for the per-request path: an atomic load, where the token takes a lock.
    gone: AtomicBool,
    /// Keep-alive connections to this target only, so they close with it.
    pub upstream: Arc<Upstream>,
    shared: Arc<Shared>,
}

/// A request or connection in flight to a target; a draining target reports `Drained` when
/// its last one ends.
pub(crate) struct InFlight(Arc<Target>);

impl InFlight {
    pub fn target(&self) -> &Target {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.report_drained_if_idle();
        }
    }
}

impl Target {
    pub fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.load(Ordering::Acquire))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    fn remove(&self) {
        self.gone.store(true, Ordering::Release);
        self.removed.cancel();
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Records a verdict from the health checks; reports it if it changed.
    pub fn set_verdict(&self, verdict: Verdict, observation: TargetObservation) {
        let old = self.verdict.swap(verdict as u8, Ordering::AcqRel);
        if old == verdict as u8 {
            return;
        }
        if verdict == Verdict::Healthy {
            self.healthy_since_ms.store(self.shared.now_ms().max(1), Ordering::Release);
        }
        self.report(observation);
    }

    fn report(&self, observation: TargetObservation) {
        let _ = self.shared.reports.send(TargetReport {
            target_group_arn: self.group_arn.to_string(),
            ip: *self.addr.ip(),
            port: self.addr.port(),
            observation,
        });
    }

    fn report_drained_if_idle(&self) {
        if self.is_draining()
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.drained_reported.swap(true, Ordering::AcqRel)
        {
            self.report(TargetObservation::Drained);
        }
    }

    /// Whether it may take new work: `healthy_only` leaves out targets not known healthy.
    fn eligible(&self, healthy_only: bool, checks_enabled: bool) -> bool {
        !self.is_draining() && (!healthy_only || !checks_enabled || self.verdict() == Verdict::Healthy)
    }

    /// Its share of new work during slow start, 0..=1.
    fn ramp(&self, slow_start: Duration) -> f64 {
        let since = self.healthy_since_ms.load(Ordering::Acquire);
        if slow_start.is_zero() || since == 0 {
            return 1.0;
        }
        let elapsed = self.shared.now_ms().saturating_sub(since) as f64;
        (elapsed / slow_start.as_millis() as f64).min(1.0)
    }
}

impl Group {
    pub fn settings(&self) -> Arc<Settings> {
        self.members().settings.clone()
    }

    fn members(&self) -> Arc<Members> {
        self.members.local().read().unwrap().clone()
    }

    /// A target for new work, starting at `start` (a round-robin turn or a flow hash): healthy,
    /// non-draining targets; if there are none, any non-draining one (fail open, as ELB does).
    pub fn pick(&self, start: Option<usize>) -> Option<Arc<Target>> {
        let members = self.members();
        let targets = &members.targets;
        if targets.is_empty() {
            return None;
        }
        let start = start.unwrap_or_else(|| self.next.local().fetch_add(1, Ordering::Relaxed));
        let enabled = members.settings.health.enabled;
        for healthy_only in [true, false] {
            let mut fallback = None;
            for i in 0..targets.len() {
                let target = &targets[(start + i) % targets.len()];
                if !target.eligible(healthy_only, enabled) {
                    continue;
                }
                let ramp = target.ramp(members.settings.slow_start);
                if ramp >= 1.0 || rand::random::<f64>() < ramp {
                    return Some(target.clone());
                }
                fallback.get_or_insert_with(|| target.clone());
            }
            if fallback.is_some() {
                return fallback;
            }
        }
        None
    }

    /// The target an `AWSALB` cookie names, if it may still take work.
    pub fn sticky(&self, cookie: &str) -> Option<Arc<Target>> {
        let members = self.members();
        let target = members.targets.iter().find(|t| t.cookie == cookie)?;
        let any_healthy = members.targets.iter().any(|t| t.eligible(true, members.settings.health.enabled));
        target.eligible(any_healthy, members.settings.health.enabled).then(|| target.clone())
    }

    fn close(&self) {
        for target in &self.members().targets {
            target.remove();
        }
    }
}

/// Every target group of the current snapshot, by ARN.
#[derive(Default)]
pub(crate) struct Groups {
    by_arn: HashMap<String, Arc<Group>>,
}

impl Groups {
    pub fn get(&self, arn: &str) -> Option<&Arc<Group>> {
        self.by_arn.get(arn)
    }

    /// Brings the groups to `specs`: targets that stay keep their verdicts, counters and
    /// checks; new ones start as the control plane last recorded them and are checked at once;
    /// targets gone are closed.
    pub fn update(&mut self, specs: &[TargetGroupSpec], shared: &Arc<Shared>) {
        let mut next = HashMap::new();
        for spec in specs {
            let group = match self.by_arn.remove(&spec.arn) {
                Some(group) => group,
                None => Arc::new(Group {
                    arn: spec.arn.as_str().into(),
                    cookie: shared.cookie(&spec.arn),
                    members: PerWorker::new(|| {
                        RwLock::new(Arc::new(Members { settings: Arc::new(settings(spec)), targets: Vec::new() }))
                    }),
                    next: PerWorker::new(|| AtomicUsize::new(0)),
                }),
            };
            update_group(&group, spec, shared);
            next.insert(spec.arn.clone(), group);
        }
        for gone in self.by_arn.values() {
            gone.close();
        }
        self.by_arn = next;
    }

    pub fn close(&mut self) {
        for group in self.by_arn.values() {
            group.close();
        }
        self.by_arn.clear();
    }
}

fn settings(spec: &TargetGroupSpec) -> Settings {
    Settings {
        protocol: spec.protocol,
        health: spec.health_check.clone(),
        slow_start: Duration::from_secs(spec.slow_start_s.into()),
        stickiness: spec.stickiness_s,
    }
}

fn update_group(group: &Arc<Group>, spec: &TargetGroupSpec, shared: &Arc<Shared>) {
    let old = group.members();
    let mut existing: HashMap<SocketAddrV4, Arc<Target>> = old.targets.iter().map(|t| (t.addr, t.clone())).collect();
    let mut targets = Vec::with_capacity(spec.targets.len());
    let mut started = Vec::new();
    for t in &spec.targets {
        let addr = SocketAddrV4::new(t.ip, t.port);
        let target = existing.remove(&addr).unwrap_or_else(|| {
            let verdict = match t.healthy {
                Some(true) => Verdict::Healthy,
                Some(false) => Verdict::Unhealthy,
                None => Verdict::Initial,
            };
            let target = Arc::new(Target {
                addr,
                group_arn: group.arn.clone(),
                cookie: shared.cookie(&(&*group.arn, addr)),
                verdict: AtomicU8::new(verdict as u8),
                healthy_since_ms: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                drained_reported: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                removed: CancellationToken::new(),
                gone: AtomicBool::new(false),
                upstream: Upstream::new(shared.sockets.clone(), addr, spec.protocol == TargetProtocol::Https),
                shared: shared.clone(),
            });
            started.push(target.clone());
            target
        });
        target.draining.store(t.draining, Ordering::Release);
        if t.draining {
            target.report_drained_if_idle();
        } else {
            target.drained_reported.store(false, Ordering::Release);
        }
        targets.push(target);
    }
    for gone in existing.values() {
        gone.remove();
    }
    let settings = settings(spec);
    for copy in group.members.iter() {
        let members = Members { settings: Arc::new(settings.clone()), targets: targets.clone() };
        *copy.write().unwrap() = Arc::new(members);
    }
    for target in started {
        tokio::spawn(health::run(group.clone(), target, shared.clone()));
    }
}

/// Collects reports and hands them to the control plane in batches: whatever piled up while
/// the previous batch was being taken.
pub(crate) async fn batch_reports(
    mut from: mpsc::UnboundedReceiver<TargetReport>,
    to: mpsc::Sender<Vec<TargetReport>>,
) {
    while let Some(first) = from.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = from.try_recv() {
            batch.push(more);
        }
        if to.send(batch).await.is_err() {
            return;
        }
    }
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// An opaque cookie value for `what`: keyed with this plane's random key, so clients can
    /// neither read nor forge which target or group it names.
    pub(crate) fn cookie(&self, what: &impl std::hash::Hash) -> String {
        format!("{:016x}", self.cookie_key.hash_one(what))
    }
}
