//! Services and load balancers: a service task's address is registered in each of the
//! service's target groups once the task serves, and deregistered before the scheduler stops
//! it; the task is stopped once every group has drained it (no request left in flight, or the
//! deregistration delay passed). A deployment counts a task only once every group finds it
//! healthy, and after the grace period a task a group finds unhealthy is replaced.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use flotilla_elb::{ElbError, TargetId, TargetState};

use super::model::{LoadBalancer, RegisteredTarget, ServiceRecord, ServiceStatus};
use super::scheduler::Observed;
use crate::{Control, ControlError};

/// The stopped reason of a task a target group found unhealthy, before `(target-group <arn>)`.
pub(crate) const ELB_HEALTH_REASON: &str = "Task failed ELB health checks in";

fn elb_error(e: ElbError) -> ControlError {
    match e {
        ElbError::Store(source) => ControlError::Store(source),
        other => ControlError::invalid(other.to_string()),
    }
}

impl Control {
    /// CreateService/UpdateService: each target group exists, takes `ip` targets (what awsvpc
    /// tasks are) and is attached to a load balancer, as ECS checks.
    pub(crate) async fn check_target_groups(&self, lbs: &[LoadBalancer]) -> Result<(), ControlError> {
        if lbs.is_empty() {
            return Ok(());
        }
        let Some(elb) = self.elb() else {
            return Err(ControlError::invalid("loadBalancers: Elastic Load Balancing is not running on this server."));
        };
        for arn in lbs.iter().filter_map(|lb| lb.target_group_arn.as_deref()) {
            let group = match elb.target_group(arn).await {
                Ok(g) => g,
                Err(ElbError::TargetGroupNotFound { .. }) => {
                    return Err(ControlError::invalid(format!(
                        "loadBalancers: the target group {arn} does not exist; create it with `aws elbv2 create-target-group --target-type ip`."
                    )));
                }
                Err(e) => return Err(elb_error(e)),
            };
            if group.target_type() != "ip" {
                return Err(ControlError::invalid(format!(
                    "The provided target group {arn} has target type {}, which is incompatible with the awsvpc network mode specified in the task definition.",
                    group.target_type()
                )));
            }
            if group.load_balancer_arns().is_empty() {
                return Err(ControlError::invalid(format!(
                    "The target group with targetGroupArn {arn} does not have an associated load balancer; add a listener or rule that forwards to it."
                )));
            }
        }
        Ok(())
    }

    /// Marks each task healthy or not in its target groups (`Observed::lb_healthy`); answers
    /// the tasks some group finds unhealthy, with that group.
    pub(crate) async fn target_health(
        &self,
        rec: &ServiceRecord,
        tasks: &mut [Observed],
    ) -> Result<HashMap<String, String>, ControlError> {
        let mut unhealthy = HashMap::new();
        let groups: Vec<&str> =
            rec.service.load_balancers.iter().filter_map(|l| l.target_group_arn.as_deref()).collect();
        let Some(elb) = self.elb() else { return Ok(unhealthy) };
        if groups.is_empty() {
            return Ok(unhealthy);
        }
        let mut states: HashMap<&str, HashMap<(Ipv4Addr, u16), TargetState>> = HashMap::new();
        for &group in &groups {
            let found = match elb.target_health(group, None).await {
                Ok(list) => list.into_iter().map(|h| ((h.ip, h.port), h.state)).collect(),
                // A group deleted under the service: nothing is healthy there.
                Err(ElbError::TargetGroupNotFound { .. }) => HashMap::new(),
                Err(e) => return Err(elb_error(e)),
            };
            states.insert(group, found);
        }
        for t in tasks.iter_mut() {
            let registered = rec.targets.get(t.id()).map(Vec::as_slice).unwrap_or_default();
            let mut healthy = true;
            for &group in &groups {
                let state = registered
                    .iter()
                    .find(|r| r.target_group_arn == group && !r.deregistered)
                    .and_then(|r| states.get(group)?.get(&(r.ip, r.port)));
                match state {
                    Some(TargetState::Healthy) => {}
                    Some(TargetState::Unhealthy { .. }) => {
                        healthy = false;
                        unhealthy.entry(t.id().to_owned()).or_insert_with(|| group.to_owned());
                    }
                    _ => healthy = false,
                }
            }
            t.lb_healthy = healthy;
        }
        Ok(unhealthy)
    }

    /// Registers the serving tasks that are not yet, deregisters those that no longer serve,
    /// and forgets the ones every group has let go of (`rec.targets`).
    pub(crate) async fn sync_targets(
        &self,
        rec: &mut ServiceRecord,
        tasks: &[Observed],
        serving: &[usize],
        leaving: &[String],
    ) -> Result<(), ControlError> {
        let Some(elb) = self.elb() else { return Ok(()) };
        if rec.service.load_balancers.is_empty() && rec.targets.is_empty() {
            return Ok(());
        }
        let draining: Vec<&str> = rec.draining.iter().map(|d| d.task_id.as_str()).collect();
        let serves = |id: &str| {
            serving.iter().any(|&i| tasks[i].id() == id) && !leaving.iter().any(|l| l == id) && !draining.contains(&id)
        };

        // Out first: a task that stops serving gets no new requests; it leaves the record once
        // its groups no longer have it.
        let mut kept: BTreeMap<String, Vec<RegisteredTarget>> = BTreeMap::new();
        for (task_id, mut regs) in std::mem::take(&mut rec.targets) {
            if !serves(&task_id) {
                for r in regs.iter_mut().filter(|r| !r.deregistered) {
                    match elb.deregister_targets(&r.target_group_arn, &[TargetId::new(r.ip, r.port)]).await {
                        Ok(()) | Err(ElbError::TargetGroupNotFound { .. }) | Err(ElbError::InvalidTarget(_)) => {
                            r.deregistered = true
                        }
                        Err(e) => {
                            tracing::warn!(task = %task_id, error = %e, "deregistering a task's target failed; retrying")
                        }
                    }
                }
                let mut gone = Vec::new();
                for r in regs.iter().filter(|r| r.deregistered) {
                    let target = [TargetId::new(r.ip, r.port)];
                    let left = match elb.target_health(&r.target_group_arn, Some(&target)).await {
                        Ok(h) => h.iter().all(|h| matches!(h.state, TargetState::Unused { registered: false })),
                        Err(ElbError::TargetGroupNotFound { .. }) => true,
                        Err(e) => return Err(elb_error(e)),
                    };
                    if left {
                        gone.push(r.target_group_arn.clone());
                    }
                }
                regs.retain(|r| !gone.contains(&r.target_group_arn));
            }
            if !regs.is_empty() {
                kept.insert(task_id, regs);
            }
        }
        rec.targets = kept;

        if rec.service.status != ServiceStatus::Active {
            return Ok(());
        }
        for &i in serving {
            let t = &tasks[i];
            if !serves(t.id()) || !t.ready() || rec.targets.contains_key(t.id()) {
                continue;
            }
            let Some(ip) = t.address().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
            let mut regs = Vec::new();
            for lb in &rec.service.load_balancers {
                let (Some(group), Some(port)) = (&lb.target_group_arn, lb.container_port) else { continue };
                let Ok(port) = u16::try_from(port) else { continue };
                match elb.register_targets(group, &[TargetId::new(ip, port)]).await {
                    Ok(()) => {
                        regs.push(RegisteredTarget { target_group_arn: group.clone(), ip, port, deregistered: false })
                    }
                    Err(e) => {
                        tracing::warn!(task = %t.id(), group = %group, error = %e, "registering a task's target failed; retrying")
                    }
                }
            }
            if !regs.is_empty() {
                rec.targets.insert(t.id().to_owned(), regs);
            }
        }
        Ok(())
    }
}
