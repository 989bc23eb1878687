//! One principal's identity policies, held for evaluation on every request: which statements
//! concern an action is worked out once per action (actions have no variables, so the answer
//! depends on nothing else) and remembered, so that a request evaluates only the statements
//! of its action, Denies first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{BorrowedContext, Decision, Effect, Policy, Statement, lowercase};

/// The actions a set remembers before it starts again: far more than the operations
/// Flotilla serves, so the bound is only against something unforeseen.
const PLANS_MAX: usize = 1024;

/// A principal's policies and, per action, its statements that concern it.
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<Arc<Policy>>,
    /// By action as requested (any case: the plan is made from the lowercased action).
    plans: RwLock<HashMap<Box<str>, Plan>>,
}

/// The statements whose `Action`/`NotAction` covers one action, by position (policy,
/// statement).
#[derive(Debug, Default)]
struct Plan {
    deny: Vec<(u32, u32)>,
    allow: Vec<(u32, u32)>,
}

impl PolicySet {
    pub fn new(policies: Vec<Arc<Policy>>) -> PolicySet {
        PolicySet { policies, plans: RwLock::new(HashMap::new()) }
    }

    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// AWS's decision for `ctx` under these policies, as [`super::evaluate`] makes it: an
    /// explicit `Deny` wins, else an `Allow`, else the implicit deny.
    pub fn evaluate(&self, ctx: &BorrowedContext<'_>) -> Decision {
        {
            let plans = self.plans.read().expect("policy plans lock");
            if let Some(plan) = plans.get(ctx.action) {
                return self.decide(plan, ctx);
            }
        }
        let plan = self.plan(&lowercase(ctx.action));
        let decision = self.decide(&plan, ctx);
        let mut plans = self.plans.write().expect("policy plans lock");
        if plans.len() >= PLANS_MAX {
            plans.clear();
        }
        plans.insert(ctx.action.into(), plan);
        decision
    }

    fn plan(&self, action: &str) -> Plan {
        let mut plan = Plan::default();
        for (p, policy) in self.policies.iter().enumerate() {
            for (s, statement) in policy.statements.iter().enumerate() {
                if statement.covers(action) {
                    let at = (p as u32, s as u32);
                    match statement.effect {
                        Effect::Deny => plan.deny.push(at),
                        Effect::Allow => plan.allow.push(at),
                    }
                }
            }
        }
        plan
    }

    fn statement(&self, (p, s): (u32, u32)) -> &Statement {
        &self.policies[p as usize].statements[s as usize]
    }

    fn decide(&self, plan: &Plan, ctx: &BorrowedContext<'_>) -> Decision {
        if plan.deny.iter().any(|&at| self.statement(at).applies_beyond_action(ctx)) {
            Decision::ExplicitDeny
        } else if plan.allow.iter().any(|&at| self.statement(at).applies_beyond_action(ctx)) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BorrowedPrincipal, ContextKeys, PolicyKind, evaluate_borrowed};
    use super::*;

    fn policy(statements: &str) -> Arc<Policy> {
        let text = format!(r#"{{"Version":"2012-10-17","Statement":{statements}}}"#);
        Arc::new(Policy::parse(&text, PolicyKind::Identity).unwrap())
    }

    fn ctx<'a>(action: &'a str, resource: &'a str, keys: &'a [(&'a str, &'a str)]) -> BorrowedContext<'a> {
        BorrowedContext {
            action,
            resource,
            principal: BorrowedPrincipal::Aws { arn: "arn:aws:iam::123456789012:user/u", account: "123456789012" },
            keys: ContextKeys(keys),
        }
    }

    /// The set decides as the plain evaluator does, the first time an action is seen and
    /// from its remembered plan after.
    #[test]
    fn decides_as_evaluate() {
        let set = PolicySet::new(vec![
            policy(
                r#"[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*",
                    "Condition":{"StringEquals":{"aws:RequestedRegion":"us-east-1"}}},
                   {"Effect":"Deny","Action":"ecs:Delete*","Resource":"arn:aws:ecs:*:*:cluster/prod"}]"#,
            ),
            policy(
                r#"[{"Effect":"Allow","NotAction":"iam:*","Resource":"arn:aws:ecs:*:*:cluster/*"},
                   {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]"#,
            ),
        ]);
        let region = [("aws:requestedregion", "us-east-1")];
        let other_region = [("aws:requestedregion", "eu-west-1")];
        let insecure = [("aws:requestedregion", "us-east-1"), ("aws:securetransport", "false")];
        let prod = "arn:aws:ecs:us-east-1:123456789012:cluster/prod";
        let dev = "arn:aws:ecs:us-east-1:123456789012:cluster/dev";
        let cases: [(BorrowedContext<'_>, Decision); 8] = [
            (ctx("ecs:DescribeTaskDefinition", "*", &region), Decision::Allow),
            (ctx("ECS:describetaskdefinition", "*", &region), Decision::Allow),
            (ctx("ecs:DescribeTaskDefinition", "*", &other_region), Decision::ImplicitDeny),
            (ctx("ecs:DescribeTaskDefinition", "*", &insecure), Decision::ExplicitDeny),
            (ctx("ecs:DeleteCluster", prod, &region), Decision::ExplicitDeny),
            (ctx("ecs:DeleteCluster", dev, &region), Decision::Allow),
            (ctx("iam:GetUser", dev, &region), Decision::ImplicitDeny),
            (ctx("ecs:RunTask", "*", &region), Decision::ImplicitDeny),
        ];
        for round in 0..2 {
            for (c, want) in &cases {
                let plain = evaluate_borrowed(set.policies().iter().map(|p| &**p), c);
                assert_eq!(plain, *want, "evaluate, {c:?}");
                assert_eq!(set.evaluate(c), *want, "set, round {round}, {c:?}");
            }
        }
        assert_eq!(set.plans.read().unwrap().len(), 5, "one plan per action as requested");
    }

    #[test]
    fn no_policies_deny_implicitly() {
        assert_eq!(PolicySet::new(Vec::new()).evaluate(&ctx("ecs:ListClusters", "*", &[])), Decision::ImplicitDeny);
    }
}
