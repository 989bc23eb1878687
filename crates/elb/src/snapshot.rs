//! The whole configuration the data plane serves ([`LbSnapshot`]): every load balancer with its
//! listeners (certificates resolved from ACM, rules by priority) and every target group a load
//! balancer forwards to, with its targets and the state the control plane holds for them.

use flotilla_host::lb::{LbAddress, LbSnapshot, ListenerSpec, LoadBalancerSpec, RuleSpec, TargetGroupSpec, TargetSpec};

use crate::record::{LB_PREFIX, LoadBalancer, TG_PREFIX, TargetGroup, TargetRecord, Verdict, targets_prefix};
use crate::{Elb, ElbError};

impl Elb {
    /// Everything the data plane serves.
    pub async fn snapshot(&self) -> Result<LbSnapshot, ElbError> {
        let mut load_balancers = Vec::new();
        for (lb, _) in self.list::<LoadBalancer>(LB_PREFIX).await? {
            load_balancers.push(self.load_balancer_spec(&lb).await);
        }
        let mut target_groups = Vec::new();
        for (group, _) in self.list::<TargetGroup>(TG_PREFIX).await? {
            // A group no load balancer forwards to is not health-checked (`unused`).
            if group.forwarders.is_empty() {
                continue;
            }
            let targets = self
                .list::<TargetRecord>(&targets_prefix(&group.id))
                .await?
                .into_iter()
                .map(|(t, _)| TargetSpec {
                    ip: t.ip,
                    port: t.port,
                    draining: t.draining_until.is_some(),
                    healthy: t.verdict.map(|v| v == Verdict::Healthy),
                })
                .collect();
            target_groups.push(TargetGroupSpec {
                arn: group.arn.clone(),
                name: group.name.clone(),
                protocol: group.protocol,
                port: group.port,
                vpc_id: group.vpc_id.clone(),
                health_check: group.health_check.clone(),
                deregistration_delay_s: group.attributes.deregistration_delay_s(group.protocol),
                slow_start_s: group.attributes.slow_start_s(group.protocol),
                stickiness_s: group.attributes.stickiness_s(group.protocol),
                targets,
            });
        }
        Ok(LbSnapshot { load_balancers, target_groups })
    }

    async fn load_balancer_spec(&self, lb: &LoadBalancer) -> LoadBalancerSpec {
        let mut listeners = Vec::new();
        'listeners: for l in &lb.listeners {
            let mut certificates = Vec::new();
            for arn in &l.certificates {
                match self.acm.certificate_pem(arn).await {
                    Ok(pem) => certificates.push(pem),
                    Err(e) => {
                        // ACM refuses to delete a certificate in use, so this is a store
                        // failure or a record from before: serve the others, not this one.
                        tracing::warn!(listener = %l.arn, certificate = %arn, error = %e, "listener left out: its certificate cannot be read");
                        continue 'listeners;
                    }
                }
            }
            listeners.push(ListenerSpec {
                arn: l.arn.clone(),
                port: l.port,
                protocol: l.protocol,
                certificates,
                rules: l
                    .rules
                    .iter()
                    .map(|r| RuleSpec {
                        arn: r.arn.clone(),
                        priority: r.priority,
                        conditions: r.conditions.clone(),
                        action: r.action.clone(),
                    })
                    .collect(),
                default_action: l.default_action.clone(),
            });
        }
        LoadBalancerSpec {
            arn: lb.arn.clone(),
            name: lb.name.clone(),
            kind: lb.kind,
            scheme: lb.scheme,
            vpc_id: lb.vpc_id.clone(),
            dns_name: lb.dns_name.clone(),
            addresses: lb
                .zones
                .iter()
                .map(|z| LbAddress { subnet_id: z.subnet_id.clone(), private_ip: z.private_ip, public_ip: z.public_ip })
                .collect(),
            security_groups: lb.security_groups.clone(),
            idle_timeout_s: lb.attributes.idle_timeout_s(lb.kind),
            listeners,
        }
    }
}
