//! Targets: RegisterTargets, DeregisterTargets, DescribeTargetHealth, the data plane's
//! reports and the end of draining. A target's state is one of ELB's five, worked out from its
//! record and its group ([`TargetState`]): the API and the ECS service scheduler read the same.

use std::net::Ipv4Addr;

use flotilla_host::lb::{TargetObservation, TargetReport};
use flotilla_store::{Compare, Op, Txn};
use ipnet::Ipv4Net;

use crate::record::{TARGET_PREFIX, TG_PREFIX, TargetGroup, TargetRecord, Verdict, split_tg_arn, target_key};
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode, now};

/// The most targets one group takes.
const MAX_TARGETS: usize = 1000;

/// How long a new target stays `Elb.RegistrationInProgress` before it is
/// `Elb.InitialHealthChecking`: the time the data plane takes to get a changed configuration
/// (the host API refreshes its snapshot at least once a second).
const REGISTRATION_S: f64 = 1.0;

/// A target as requests name it: an address and, optionally, a port (the group's otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetId {
    pub ip: Ipv4Addr,
    pub port: Option<u16>,
}

impl TargetId {
    pub fn new(ip: Ipv4Addr, port: u16) -> TargetId {
        TargetId { ip, port: Some(port) }
    }
}

/// ELB's target states (`TargetHealth.State`), with their reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// Registered, not yet judged: `checking` once the data plane has had time to start health
    /// checks (`Elb.InitialHealthChecking`), before that `Elb.RegistrationInProgress`.
    Initial {
        checking: bool,
    },
    Healthy,
    /// `reason` is ELB's code (`Target.ResponseCodeMismatch`, `Target.Timeout`,
    /// `Target.FailedHealthChecks`).
    Unhealthy {
        reason: String,
        description: String,
    },
    /// Deregistered; in-flight requests finish (`Target.DeregistrationInProgress`).
    Draining,
    /// `registered`: the group is not used by any load balancer (`Target.NotInUse`); otherwise
    /// the target is not registered (`Target.NotRegistered`).
    Unused {
        registered: bool,
    },
}

impl TargetState {
    /// ELB's `State`.
    pub fn name(&self) -> &'static str {
        match self {
            TargetState::Initial { .. } => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy { .. } => "unhealthy",
            TargetState::Draining => "draining",
            TargetState::Unused { .. } => "unused",
        }
    }

    /// ELB's `Reason` (none when healthy).
    pub fn reason(&self) -> Option<&str> {
        Some(match self {
            TargetState::Initial { checking: false } => "Elb.RegistrationInProgress",
            TargetState::Initial { checking: true } => "Elb.InitialHealthChecking",
            TargetState::Healthy => return None,
            TargetState::Unhealthy { reason, .. } => reason,
            TargetState::Draining => "Target.DeregistrationInProgress",
            TargetState::Unused { registered: true } => "Target.NotInUse",
            TargetState::Unused { registered: false } => "Target.NotRegistered",
        })
    }

    /// ELB's `Description`.
    pub fn description(&self) -> Option<&str> {
        Some(match self {
            TargetState::Initial { checking: false } => "Target registration is in progress",
            TargetState::Initial { checking: true } => "Initial health checks in progress",
            TargetState::Healthy => return None,
            TargetState::Unhealthy { description, .. } => description,
            TargetState::Draining => "Target deregistration is in progress",
            TargetState::Unused { registered: true } => {
                "Target group is not configured to receive traffic from the load balancer"
            }
            TargetState::Unused { registered: false } => "Target is not registered to the target group",
        })
    }

    fn of(group: &TargetGroup, target: &TargetRecord, now: f64) -> TargetState {
        if target.draining_until.is_some() {
            return TargetState::Draining;
        }
        if group.forwarders.is_empty() {
            return TargetState::Unused { registered: true };
        }
        match &target.verdict {
            Some(Verdict::Healthy) => TargetState::Healthy,
            Some(Verdict::Unhealthy { reason, description }) => {
                TargetState::Unhealthy { reason: reason.clone(), description: description.clone() }
            }
            None => TargetState::Initial { checking: now - target.registered >= REGISTRATION_S },
        }
    }
}

/// One target's health, as DescribeTargetHealth lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetHealth {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The port health checks go to (ELB's `HealthCheckPort`).
    pub health_check_port: u16,
    pub state: TargetState,
}

/// Addresses a target of a group may have: the private ranges (and the shared address space
/// AWS also allows), where every VPC's subnets are.
fn private(ip: Ipv4Addr) -> bool {
    const RANGES: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
    RANGES.iter().any(|r| r.parse::<Ipv4Net>().is_ok_and(|n| n.contains(&ip)))
}

impl Elb {
    /// The targets of a group, with their records' revisions.
    async fn targets(&self, group: &TargetGroup) -> Result<Vec<(TargetRecord, u64)>> {
        self.list(&crate::record::targets_prefix(&group.id)).await
    }

    /// RegisterTargets: each target is `initial` until the data plane judges it. Registering a
    /// registered target changes nothing; a draining one is registered again.
    pub async fn register_targets(&self, group_arn: &str, targets: &[TargetId]) -> Result<()> {
        let (group, _) = self.group_record(group_arn).await?;
        let mut wanted = Vec::new();
        for t in targets {
            if !private(t.ip) {
                return Err(ElbError::Validation(format!(
                    "The IP address '{}' is not a valid IPv4 address for target group '{}': it must be in a private range of the VPC '{}'",
                    t.ip, group.name, group.vpc_id
                )));
            }
            if t.port == Some(0) {
                return Err(ElbError::Validation("A target's port must be between 1 and 65535".into()));
            }
            let id = (t.ip, t.port.unwrap_or(group.port));
            if !wanted.contains(&id) {
                wanted.push(id);
            }
        }
        for _ in 0..CONFLICT_RETRIES {
            let (group, group_rev) = self.group_record(group_arn).await?;
            let existing = self.targets(&group).await?;
            let mut txn = Txn::new().when(Compare::revision(crate::record::tg_key(&group.name), group_rev));
            let mut count = existing.iter().filter(|(t, _)| t.draining_until.is_none()).count();
            for (ip, port) in &wanted {
                let key = target_key(&group.id, *ip, *port);
                let t = now();
                let fresh = TargetRecord { ip: *ip, port: *port, registered: t, verdict: None, draining_until: None };
                match existing.iter().find(|(r, _)| r.ip == *ip && r.port == *port) {
                    Some((r, _)) if r.draining_until.is_none() => continue,
                    Some((_, rev)) => txn = txn.when(Compare::revision(&key, *rev)).then(Op::put(&key, encode(&fresh))),
                    None => txn = txn.when(Compare::absent(&key)).then(Op::put(&key, encode(&fresh))),
                }
                count += 1;
            }
            if count > MAX_TARGETS {
                return Err(ElbError::TooManyTargets { limit: MAX_TARGETS });
            }
            if txn.ops.is_empty() || self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The target group"))
    }

    /// DeregisterTargets: each target drains for the group's deregistration delay (at once if
    /// the delay is 0 or no load balancer uses the group). Unknown targets are already gone.
    pub async fn deregister_targets(&self, group_arn: &str, targets: &[TargetId]) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (group, _) = self.group_record(group_arn).await?;
            let delay = group.attributes.deregistration_delay_s(group.protocol);
            let existing = self.targets(&group).await?;
            let mut txn = Txn::new();
            for t in targets {
                let port = t.port.unwrap_or(group.port);
                let Some((record, rev)) = existing.iter().find(|(r, _)| r.ip == t.ip && r.port == port) else {
                    continue;
                };
                if record.draining_until.is_some() {
                    continue;
                }
                let key = target_key(&group.id, t.ip, port);
                txn = txn.when(Compare::revision(&key, *rev));
                if delay == 0 || group.forwarders.is_empty() {
                    txn = txn.then(Op::delete(&key));
                } else {
                    let draining = TargetRecord { draining_until: Some(now() + delay as f64), ..record.clone() };
                    txn = txn.then(Op::put(&key, encode(&draining)));
                }
            }
            if txn.ops.is_empty() || self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The target group"))
    }

    /// DescribeTargetHealth: the named targets (a target not registered is `unused`,
    /// `Target.NotRegistered`), or every registered one.
    pub async fn target_health(&self, group_arn: &str, targets: Option<&[TargetId]>) -> Result<Vec<TargetHealth>> {
        let (group, _) = self.group_record(group_arn).await?;
        let existing = self.targets(&group).await?;
        let t = now();
        let health = |ip: Ipv4Addr, port: u16, state: TargetState| TargetHealth {
            ip,
            port,
            health_check_port: group.health_check.port.unwrap_or(port),
            state,
        };
        Ok(match targets {
            Some(named) => named
                .iter()
                .map(|n| {
                    let port = n.port.unwrap_or(group.port);
                    match existing.iter().find(|(r, _)| r.ip == n.ip && r.port == port) {
                        Some((r, _)) => health(r.ip, r.port, TargetState::of(&group, r, t)),
                        None => health(n.ip, port, TargetState::Unused { registered: false }),
                    }
                })
                .collect(),
            None => existing.iter().map(|(r, _)| health(r.ip, r.port, TargetState::of(&group, r, t))).collect(),
        })
    }

    /// Records the data plane's observations: a verdict for a registered target, the end of
    /// a draining one. Reports for targets no longer registered are dropped.
    pub async fn record_targets(&self, reports: Vec<TargetReport>) -> Result<(), ElbError> {
        for report in reports {
            let Some((_, group_id)) = split_tg_arn(&self.identity, &report.target_group_arn) else { continue };
            let key = target_key(group_id, report.ip, report.port);
            for attempt in 0..=CONFLICT_RETRIES {
                if attempt == CONFLICT_RETRIES {
                    return Err(busy("A target"));
                }
                let Some((mut record, rev)) = self.get::<TargetRecord>(&key).await? else { break };
                let txn = Txn::new().when(Compare::revision(&key, rev));
                let txn = match (&report.observation, record.draining_until.is_some()) {
                    (TargetObservation::Drained, true) => txn.then(Op::delete(&key)),
                    // A draining target keeps draining whatever its checks say; a verdict
                    // about it no longer routes anything.
                    (TargetObservation::Drained, false) | (_, true) => break,
                    (TargetObservation::Healthy, false) => {
                        if record.verdict == Some(Verdict::Healthy) {
                            break;
                        }
                        record.verdict = Some(Verdict::Healthy);
                        txn.then(Op::put(&key, encode(&record)))
                    }
                    (TargetObservation::Unhealthy { reason, description }, false) => {
                        let verdict = Verdict::Unhealthy { reason: reason.clone(), description: description.clone() };
                        if record.verdict.as_ref() == Some(&verdict) {
                            break;
                        }
                        record.verdict = Some(verdict);
                        txn.then(Op::put(&key, encode(&record)))
                    }
                };
                if self.commit(txn).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ends the draining of targets whose deregistration delay has passed, and drops targets
    /// whose group is gone. `flotilla up` calls it every second.
    pub async fn expire_draining(&self) -> Result<()> {
        let groups: Vec<String> = self.list::<TargetGroup>(TG_PREFIX).await?.into_iter().map(|(g, _)| g.id).collect();
        let t = now();
        for kv in self.store.list_prefix(TARGET_PREFIX).await? {
            let group_id = kv.key[TARGET_PREFIX.len()..].split('/').next().unwrap_or_default();
            let record: TargetRecord = crate::decode(&kv)?;
            let expired = record.draining_until.is_some_and(|until| until <= t);
            if expired || !groups.iter().any(|g| g == group_id) {
                // A conflict means the record just changed (registered again, or reported
                // drained): the next pass decides again.
                let txn = Txn::new().when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::delete(&kv.key));
                self.commit(txn).await?;
            }
        }
        Ok(())
    }
}
