//! The ELB domain over a real embedded store and a VPC side kept in memory.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_acm::Acm;
use flotilla_host::lb::{ActionSpec, TargetObservation, TargetReport};
use flotilla_types::{Identity, Tag};

use crate::*;

/// Two zones of `vpc-1` (and a second subnet in the first), one subnet of `vpc-2`.
#[derive(Default)]
struct FakeVpcs {
    next_ip: AtomicU32,
    released: Mutex<Vec<String>>,
}

impl Vpcs for FakeVpcs {
    fn subnet<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SubnetInfo>, ElbError>> {
        Box::pin(async move {
            let (vpc, zone, cidr) = match id {
                "subnet-a" => ("vpc-1", "us-east-1a", "10.0.1.0/24"),
                "subnet-b" => ("vpc-1", "us-east-1b", "10.0.2.0/24"),
                "subnet-a2" => ("vpc-1", "us-east-1a", "10.0.3.0/24"),
                "subnet-x" => ("vpc-2", "us-east-1b", "10.1.1.0/24"),
                _ => return Ok(None),
            };
            Ok(Some(SubnetInfo {
                id: id.into(),
                vpc_id: vpc.into(),
                availability_zone: zone.into(),
                cidr: cidr.parse().unwrap(),
            }))
        })
    }

    fn security_group_vpc<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>, ElbError>> {
        Box::pin(async move {
            Ok(match id {
                "sg-default" | "sg-web" => Some("vpc-1".into()),
                "sg-other" => Some("vpc-2".into()),
                _ => None,
            })
        })
    }

    fn default_security_group<'a>(&'a self, _vpc_id: &'a str) -> BoxFuture<'a, Result<String, ElbError>> {
        Box::pin(async move { Ok("sg-default".into()) })
    }

    fn vpc_exists<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<bool, ElbError>> {
        Box::pin(async move { Ok(vpc_id == "vpc-1" || vpc_id == "vpc-2") })
    }

    fn ensure_node<'a>(
        &'a self,
        _owner: &'a str,
        _description: &'a str,
        subnet_id: &'a str,
        _security_groups: &'a [String],
        public: bool,
    ) -> BoxFuture<'a, Result<NodeAddress, ElbError>> {
        Box::pin(async move {
            let n = self.next_ip.fetch_add(1, Ordering::SeqCst) as u8 + 10;
            Ok(NodeAddress {
                subnet_id: subnet_id.into(),
                private_ip: Ipv4Addr::new(10, 0, 1, n),
                public_ip: public.then(|| Ipv4Addr::new(192, 0, 2, n)),
            })
        })
    }

    fn release_nodes<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), ElbError>> {
        Box::pin(async move {
            self.released.lock().unwrap().push(owner.to_owned());
            Ok(())
        })
    }
}

struct Fixture {
    elb: Arc<Elb>,
    acm: Arc<Acm>,
    vpcs: Arc<FakeVpcs>,
    /// Ports the host refuses.
    taken: Arc<Mutex<Vec<u16>>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn flotilla_store::Store> =
        Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let identity = Identity::new("us-east-1", "123456789012");
    let acm = Arc::new(Acm::new(store.clone(), identity.clone()));
    let vpcs = Arc::new(FakeVpcs::default());
    let taken: Arc<Mutex<Vec<u16>>> = Arc::default();
    let t = taken.clone();
    let probe: PortProbe =
        Arc::new(
            move |port| {
                if t.lock().unwrap().contains(&port) { Err("Address already in use".into()) } else { Ok(()) }
            },
        );
    let elb = Arc::new(Elb::new(store, identity, acm.clone(), vpcs.clone(), Some(probe)));
    acm.set_users(elb.clone());
    Fixture { elb, acm, vpcs, taken, _dir: dir }
}

fn alb(name: &str) -> LoadBalancerInput {
    LoadBalancerInput { name: name.into(), subnets: vec!["subnet-a".into(), "subnet-b".into()], ..Default::default() }
}

fn http_group(name: &str) -> TargetGroupInput {
    TargetGroupInput {
        name: name.into(),
        protocol: Some("HTTP".into()),
        port: Some(80),
        vpc_id: Some("vpc-1".into()),
        target_type: Some("ip".into()),
        ..Default::default()
    }
}

fn forward(arn: &str) -> Vec<ActionInput> {
    vec![ActionInput { kind: "forward".into(), target_group_arn: Some(arn.into()), ..Default::default() }]
}

fn http_listener(lb: &str, port: i64, group: &str) -> ListenerInput {
    ListenerInput {
        load_balancer_arn: lb.into(),
        protocol: Some("HTTP".into()),
        port: Some(port),
        default_actions: forward(group),
        ..Default::default()
    }
}

fn path_rule(listener: &str, priority: i64, path: &str, group: &str) -> RuleInput {
    RuleInput {
        listener_arn: listener.into(),
        priority,
        conditions: vec![ConditionInput {
            field: Some("path-pattern".into()),
            values: vec![path.into()],
            ..Default::default()
        }],
        actions: forward(group),
        tags: Vec::new(),
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, last)
}

#[tokio::test]
async fn load_balancers_are_checked_made_once_and_described() {
    let f = fixture();
    let one_zone = LoadBalancerInput { subnets: vec!["subnet-a".into()], ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(one_zone).await, Err(ElbError::Validation(_))));
    let same_zone = LoadBalancerInput { subnets: vec!["subnet-a".into(), "subnet-a2".into()], ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(same_zone).await, Err(ElbError::InvalidConfigurationRequest(_))));
    let unknown = LoadBalancerInput { subnets: vec!["subnet-a".into(), "subnet-zz".into()], ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(unknown).await, Err(ElbError::SubnetNotFound { .. })));
    let two_vpcs = LoadBalancerInput { subnets: vec!["subnet-a".into(), "subnet-x".into()], ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(two_vpcs).await, Err(ElbError::InvalidConfigurationRequest(_))));
    let foreign_group = LoadBalancerInput { security_groups: Some(vec!["sg-other".into()]), ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(foreign_group).await, Err(ElbError::InvalidSecurityGroup(_))));
    assert!(matches!(f.elb.create_load_balancer(alb("-bad")).await, Err(ElbError::Validation(_))));

    let lb = f.elb.create_load_balancer(alb("web")).await.unwrap();
    assert!(
        lb.arn.starts_with("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/"),
        "{}",
        lb.arn
    );
    assert_eq!(lb.id.len(), 16);
    let (prefix, rest) = lb.dns_name.split_once('.').unwrap();
    assert_eq!(rest, "us-east-1.elb.amazonaws.com");
    assert!(prefix.strip_prefix("web-").is_some_and(|d| d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(lb.security_groups, ["sg-default"]);
    assert_eq!(lb.zones.len(), 2);
    assert!(lb.zones.iter().all(|z| z.public_ip.is_some()));

    // The same request again is the same load balancer; other settings under the name are not.
    assert_eq!(f.elb.create_load_balancer(alb("web")).await.unwrap().arn, lb.arn);
    let other = LoadBalancerInput { scheme: Some("internal".into()), ..alb("web") };
    assert!(matches!(f.elb.create_load_balancer(other).await, Err(ElbError::DuplicateLoadBalancerName { .. })));

    let nlb = LoadBalancerInput {
        name: "tcp".into(),
        kind: Some("network".into()),
        scheme: Some("internal".into()),
        subnet_mappings: vec![SubnetMapping { subnet_id: "subnet-a".into(), ..Default::default() }],
        ..Default::default()
    };
    let nlb = f.elb.create_load_balancer(nlb).await.unwrap();
    assert!(nlb.arn.contains(":loadbalancer/net/tcp/"));
    assert!(nlb.dns_name.starts_with("internal-tcp-"));
    assert!(nlb.security_groups.is_empty() && nlb.zones[0].public_ip.is_none());

    let page = f.elb.describe_load_balancers(&[], &[], Some(1), None).await.unwrap();
    assert_eq!(page.items[0].name, "tcp");
    let next = f.elb.describe_load_balancers(&[], &[], Some(1), page.next_token.as_deref()).await.unwrap();
    assert_eq!((next.items[0].name.as_str(), next.next_token), ("web", None));
    let missing = f.elb.describe_load_balancers(&[], &["nope".into()], None, None).await;
    assert!(matches!(missing, Err(ElbError::LoadBalancerNotFound { .. })));
    let forged = lb.arn.replace("123456789012", "999999999999");
    assert!(matches!(
        f.elb.describe_load_balancers(&[forged], &[], None, None).await,
        Err(ElbError::LoadBalancerNotFound { .. })
    ));

    f.elb
        .modify_load_balancer_attributes(&lb.arn, &[Attribute::new("deletion_protection.enabled", "true")])
        .await
        .unwrap();
    assert!(matches!(f.elb.delete_load_balancer(&lb.arn).await, Err(ElbError::OperationNotPermitted(_))));
    f.elb
        .modify_load_balancer_attributes(&lb.arn, &[Attribute::new("deletion_protection.enabled", "false")])
        .await
        .unwrap();
    f.elb.delete_load_balancer(&lb.arn).await.unwrap();
    assert!(f.vpcs.released.lock().unwrap().contains(&lb.arn));
    // Gone is gone: deleting again succeeds, as on ELB.
    f.elb.delete_load_balancer(&lb.arn).await.unwrap();
    assert!(matches!(f.elb.load_balancer(&lb.arn).await, Err(ElbError::LoadBalancerNotFound { .. })));
}

#[tokio::test]
async fn listeners_forward_to_groups_of_one_load_balancer_on_free_ports() {
    let f = fixture();
    let instance = TargetGroupInput { target_type: Some("instance".into()), ..http_group("tg") };
    match f.elb.create_target_group(instance).await {
        Err(ElbError::Validation(m)) => assert!(m.contains("TargetType"), "{m}"),
        other => panic!("{other:?}"),
    }
    let tcp_group = TargetGroupInput { protocol: Some("TCP".into()), ..http_group("tcp") };
    let tcp_group = f.elb.create_target_group(tcp_group).await.unwrap();
    let group = f.elb.create_target_group(http_group("tg")).await.unwrap();
    assert_eq!(f.elb.create_target_group(http_group("tg")).await.unwrap().arn, group.arn);
    let changed = TargetGroupInput { port: Some(81), ..http_group("tg") };
    assert!(matches!(f.elb.create_target_group(changed).await, Err(ElbError::DuplicateTargetGroupName { .. })));

    let lb = f.elb.create_load_balancer(alb("web")).await.unwrap();
    let other = f.elb.create_load_balancer(alb("other")).await.unwrap();
    let listener = f.elb.create_listener(http_listener(&lb.arn, 80, &group.arn)).await.unwrap();
    assert!(listener.arn.starts_with(&lb.arn.replace(":loadbalancer/", ":listener/")));
    // Repeating the request is answered with the same listener; another action is a duplicate.
    assert_eq!(f.elb.create_listener(http_listener(&lb.arn, 80, &group.arn)).await.unwrap().arn, listener.arn);
    let mut fixed = http_listener(&lb.arn, 80, &group.arn);
    fixed.default_actions = vec![ActionInput {
        kind: "fixed-response".into(),
        fixed_response: Some(FixedResponseInput { status_code: "404".into(), ..Default::default() }),
        ..Default::default()
    }];
    assert!(matches!(f.elb.create_listener(fixed).await, Err(ElbError::DuplicateListener { port: 80, .. })));
    // Both load balancers are internet-facing: they share the host's address.
    match f.elb.create_listener(http_listener(&other.arn, 80, &group.arn)).await {
        Err(ElbError::Validation(m)) => assert!(m.contains("Port 80 is already taken"), "{m}"),
        other => panic!("{other:?}"),
    }
    f.taken.lock().unwrap().push(8080);
    match f.elb.create_listener(http_listener(&other.arn, 8080, &group.arn)).await {
        Err(ElbError::Validation(m)) => assert!(m.contains("Address already in use"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(f.elb.load_balancer(&other.arn).await.unwrap().listeners.is_empty(), "nothing recorded");
    // A port let go within moments (a data plane dropping a deleted listener) is taken.
    let taken = f.taken.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        taken.lock().unwrap().clear();
    });
    let group9 = f.elb.create_target_group(http_group("tg9")).await.unwrap();
    f.elb.create_listener(http_listener(&other.arn, 8080, &group9.arn)).await.unwrap();
    release.await.unwrap();
    assert!(matches!(
        f.elb.create_listener(http_listener(&other.arn, 81, &group.arn)).await,
        Err(ElbError::TargetGroupAssociationLimit { .. })
    ));
    assert!(matches!(
        f.elb.create_listener(http_listener(&lb.arn, 81, &tcp_group.arn)).await,
        Err(ElbError::IncompatibleProtocols(_))
    ));
    let missing = group.arn.replace("/tg/", "/nope/");
    assert!(matches!(
        f.elb.create_listener(http_listener(&lb.arn, 81, &missing)).await,
        Err(ElbError::TargetGroupNotFound { .. })
    ));
    let https = ListenerInput {
        protocol: Some("HTTPS".into()),
        certificates: vec!["arn:aws:acm:us-east-1:123456789012:certificate/none".into()],
        ..http_listener(&lb.arn, 443, &group.arn)
    };
    assert!(matches!(f.elb.create_listener(https).await, Err(ElbError::CertificateNotFound { .. })));
    let tcp_on_alb = ListenerInput { protocol: Some("TCP".into()), ..http_listener(&lb.arn, 82, &group.arn) };
    assert!(matches!(f.elb.create_listener(tcp_on_alb).await, Err(ElbError::Validation(_))));

    let described = f.elb.target_group(&group.arn).await.unwrap();
    assert_eq!(described.load_balancer_arns(), std::slice::from_ref(&lb.arn));
    assert!(matches!(f.elb.delete_target_group(&group.arn).await, Err(ElbError::ResourceInUse(_))));
    let by_lb = TargetGroupFilter { load_balancer_arn: Some(lb.arn.clone()), ..Default::default() };
    assert_eq!(f.elb.describe_target_groups(&by_lb, None, None).await.unwrap().items.len(), 1);

    // Moving the listener to another port frees 80 for the other load balancer.
    let moved = ListenerChange { port: Some(8000), ..Default::default() };
    f.elb.modify_listener(&listener.arn, &moved).await.unwrap();
    let group2 = f.elb.create_target_group(http_group("tg2")).await.unwrap();
    f.elb.create_listener(http_listener(&other.arn, 80, &group2.arn)).await.unwrap();

    f.elb.delete_listener(&listener.arn).await.unwrap();
    assert!(f.elb.target_group(&group.arn).await.unwrap().load_balancer_arns().is_empty());
    assert!(matches!(f.elb.delete_listener(&listener.arn).await, Err(ElbError::ListenerNotFound { .. })));
    f.elb.delete_target_group(&group.arn).await.unwrap();
    f.elb.delete_target_group(&group.arn).await.unwrap();
    // Deleting a load balancer frees its groups and ports.
    f.elb.delete_load_balancer(&other.arn).await.unwrap();
    f.elb.delete_target_group(&group2.arn).await.unwrap();
    let group3 = f.elb.create_target_group(http_group("tg3")).await.unwrap();
    f.elb.create_listener(http_listener(&lb.arn, 80, &group3.arn)).await.unwrap();
}

#[tokio::test]
async fn rules_keep_unique_priorities_and_a_default() {
    let f = fixture();
    let lb = f.elb.create_load_balancer(alb("web")).await.unwrap();
    let a = f.elb.create_target_group(http_group("a")).await.unwrap();
    let b = f.elb.create_target_group(http_group("b")).await.unwrap();
    let listener = f.elb.create_listener(http_listener(&lb.arn, 80, &a.arn)).await.unwrap();
    let img = f.elb.create_rule(path_rule(&listener.arn, 10, "/img/*", &b.arn)).await.unwrap();
    let api = f.elb.create_rule(path_rule(&listener.arn, 5, "/api/*", &a.arn)).await.unwrap();
    assert!(matches!(
        f.elb.create_rule(path_rule(&listener.arn, 5, "/x", &a.arn)).await,
        Err(ElbError::PriorityInUse { priority: 5 })
    ));
    assert!(matches!(f.elb.create_rule(path_rule(&listener.arn, 0, "/x", &a.arn)).await, Err(ElbError::Validation(_))));
    let both_forms = RuleInput {
        conditions: vec![ConditionInput {
            field: Some("path-pattern".into()),
            values: vec!["/a".into()],
            path_pattern: Some(vec!["/b".into()]),
            ..Default::default()
        }],
        ..path_rule(&listener.arn, 7, "/x", &a.arn)
    };
    assert!(matches!(f.elb.create_rule(both_forms).await, Err(ElbError::Validation(_))));
    let too_many = RuleInput {
        conditions: vec![ConditionInput {
            field: Some("host-header".into()),
            host_header: Some((0..6).map(|i| format!("h{i}.example.com")).collect()),
            ..Default::default()
        }],
        ..path_rule(&listener.arn, 7, "/x", &a.arn)
    };
    assert!(matches!(f.elb.create_rule(too_many).await, Err(ElbError::Validation(_))));
    let header = RuleInput {
        conditions: vec![
            ConditionInput {
                field: Some("http-header".into()),
                http_header: Some((Some("X-Env".into()), vec!["blue".into()])),
                ..Default::default()
            },
            ConditionInput {
                field: Some("query-string".into()),
                query_string: Some(vec![(Some("v".into()), Some("2".into()))]),
                ..Default::default()
            },
            ConditionInput {
                field: Some("source-ip".into()),
                source_ip: Some(vec!["10.0.0.0/8".into()]),
                ..Default::default()
            },
        ],
        ..path_rule(&listener.arn, 7, "/x", &a.arn)
    };
    f.elb.create_rule(header).await.unwrap();

    let rules = f.elb.describe_rules(Some(&listener.arn), &[], None, None).await.unwrap().items;
    let order: Vec<Option<u32>> = rules.iter().map(|r| r.priority).collect();
    assert_eq!(order, [Some(5), Some(7), Some(10), None]);
    assert!(rules[3].is_default() && rules[3].arn == listener.default_rule_arn);

    assert!(matches!(
        f.elb.set_rule_priorities(&[(img.arn.clone(), 5)]).await,
        Err(ElbError::PriorityInUse { priority: 5 })
    ));
    let swapped = f.elb.set_rule_priorities(&[(img.arn.clone(), 5), (api.arn.clone(), 10)]).await.unwrap();
    assert_eq!(swapped.iter().map(|r| r.priority).collect::<Vec<_>>(), [Some(5), Some(10)]);
    let snapshot = f.elb.snapshot().await.unwrap();
    let served = &snapshot.load_balancers[0].listeners[0];
    assert_eq!(served.rules.iter().map(|r| r.priority).collect::<Vec<_>>(), [5, 7, 10]);
    assert_eq!(served.rules[0].arn, img.arn);

    assert!(matches!(f.elb.delete_rule(&listener.default_rule_arn).await, Err(ElbError::OperationNotPermitted(_))));
    // The default rule's action is the listener's.
    let to_b = RuleChange { actions: Some(forward(&b.arn)), ..Default::default() };
    f.elb.modify_rule(&listener.default_rule_arn, &to_b).await.unwrap();
    let (l, _) = f.elb.listener(&listener.arn).await.unwrap();
    assert!(matches!(&l.default_action, ActionSpec::Forward { target_groups, .. } if target_groups[0].arn == b.arn));
    f.elb.delete_rule(&img.arn).await.unwrap();
    assert!(matches!(f.elb.delete_rule(&img.arn).await, Err(ElbError::RuleNotFound { .. })));
    // `b` is still the default action's; `a` still the rules'.
    assert!(matches!(f.elb.delete_target_group(&b.arn).await, Err(ElbError::ResourceInUse(_))));
    f.elb.delete_listener(&listener.arn).await.unwrap();
    f.elb.delete_target_group(&a.arn).await.unwrap();
    f.elb.delete_target_group(&b.arn).await.unwrap();
}

async fn state(f: &Fixture, group: &str, target: Ipv4Addr) -> TargetState {
    let health = f.elb.target_health(group, Some(&[TargetId { ip: target, port: None }])).await.unwrap();
    health[0].state.clone()
}

fn report(group: &str, target: Ipv4Addr, observation: TargetObservation) -> TargetReport {
    TargetReport { target_group_arn: group.into(), ip: target, port: 80, observation }
}

#[tokio::test]
async fn targets_go_through_elbs_states() {
    let f = fixture();
    let group = f.elb.create_target_group(http_group("tg")).await.unwrap();
    let public = TargetId { ip: Ipv4Addr::new(8, 8, 8, 8), port: None };
    assert!(matches!(f.elb.register_targets(&group.arn, &[public]).await, Err(ElbError::Validation(_))));
    f.elb.register_targets(&group.arn, &[TargetId { ip: ip(1), port: None }, TargetId::new(ip(2), 80)]).await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(1)).await, TargetState::Unused { registered: true });
    assert_eq!(state(&f, &group.arn, ip(9)).await, TargetState::Unused { registered: false });
    assert_eq!(state(&f, &group.arn, ip(9)).await.reason(), Some("Target.NotRegistered"));

    let lb = f.elb.create_load_balancer(alb("web")).await.unwrap();
    f.elb.create_listener(http_listener(&lb.arn, 80, &group.arn)).await.unwrap();
    assert!(matches!(state(&f, &group.arn, ip(1)).await, TargetState::Initial { .. }));
    f.elb
        .record_targets(vec![
            report(&group.arn, ip(1), TargetObservation::Healthy),
            report(
                &group.arn,
                ip(2),
                TargetObservation::Unhealthy {
                    reason: "Target.ResponseCodeMismatch".into(),
                    description: "Health checks failed with these codes: [500]".into(),
                },
            ),
            // Not registered: dropped.
            report(&group.arn, ip(3), TargetObservation::Healthy),
        ])
        .await
        .unwrap();
    assert_eq!(state(&f, &group.arn, ip(1)).await, TargetState::Healthy);
    let unhealthy = state(&f, &group.arn, ip(2)).await;
    assert_eq!((unhealthy.name(), unhealthy.reason()), ("unhealthy", Some("Target.ResponseCodeMismatch")));
    assert_eq!(f.elb.target_health(&group.arn, None).await.unwrap().len(), 2);

    let snapshot = f.elb.snapshot().await.unwrap();
    let served = snapshot.target_group(&group.arn).unwrap();
    assert_eq!(served.deregistration_delay_s, 300);
    let healthy: Vec<Option<bool>> = served.targets.iter().map(|t| t.healthy).collect();
    assert_eq!(healthy, [Some(true), Some(false)]);

    // Draining ends when the data plane says nothing is in flight...
    f.elb.deregister_targets(&group.arn, &[TargetId { ip: ip(1), port: None }]).await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(1)).await, TargetState::Draining);
    f.elb.record_targets(vec![report(&group.arn, ip(1), TargetObservation::Healthy)]).await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(1)).await, TargetState::Draining, "a verdict does not end draining");
    assert!(f.elb.snapshot().await.unwrap().target_group(&group.arn).unwrap().targets[0].draining);
    f.elb.record_targets(vec![report(&group.arn, ip(1), TargetObservation::Drained)]).await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(1)).await, TargetState::Unused { registered: false });

    // ... or when the delay has passed; with no delay, at once.
    let delay = |s: &str| [Attribute::new("deregistration_delay.timeout_seconds", s)];
    f.elb.modify_target_group_attributes(&group.arn, &delay("0")).await.unwrap();
    f.elb.deregister_targets(&group.arn, &[TargetId::new(ip(2), 80)]).await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(2)).await, TargetState::Unused { registered: false });
    f.elb.modify_target_group_attributes(&group.arn, &delay("1")).await.unwrap();
    f.elb.register_targets(&group.arn, &[TargetId::new(ip(4), 80)]).await.unwrap();
    f.elb.deregister_targets(&group.arn, &[TargetId::new(ip(4), 80)]).await.unwrap();
    f.elb.expire_draining().await.unwrap();
    assert_eq!(state(&f, &group.arn, ip(4)).await, TargetState::Draining, "not before the delay");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&f, &group.arn, ip(4)).await == TargetState::Draining {
        assert!(Instant::now() < deadline, "draining never ended");
        f.elb.expire_draining().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state(&f, &group.arn, ip(4)).await, TargetState::Unused { registered: false });
}

#[tokio::test]
async fn tags_and_attributes() {
    let f = fixture();
    let lb =
        f.elb.create_load_balancer(LoadBalancerInput { tags: vec![Tag::new("a", "1")], ..alb("web") }).await.unwrap();
    let group = f.elb.create_target_group(http_group("tg")).await.unwrap();
    let listener = f.elb.create_listener(http_listener(&lb.arn, 80, &group.arn)).await.unwrap();
    let arns = vec![lb.arn.clone(), group.arn.clone(), listener.arn.clone()];
    f.elb.add_tags(&arns, &[Tag::new("b", "2"), Tag::new("a", "3")]).await.unwrap();
    let tags = f.elb.describe_tags(&arns).await.unwrap();
    assert_eq!(tags[0].1, [Tag::new("a", "3"), Tag::new("b", "2")]);
    assert_eq!(tags[1].1, [Tag::new("b", "2"), Tag::new("a", "3")]);
    f.elb.remove_tags(&arns[..1], &["a".into()]).await.unwrap();
    assert_eq!(f.elb.describe_tags(&arns[..1]).await.unwrap()[0].1, [Tag::new("b", "2")]);
    assert!(matches!(
        f.elb.add_tags(&arns, &[Tag::new("k", "1"), Tag::new("k", "2")]).await,
        Err(ElbError::DuplicateTagKeys { .. })
    ));
    let gone = group.arn.replace("/tg/", "/gone/");
    assert!(matches!(f.elb.describe_tags(&[gone]).await, Err(ElbError::TargetGroupNotFound { .. })));

    let attrs = f.elb.load_balancer_attributes(&lb.arn).await.unwrap();
    assert!(attrs.contains(&Attribute::new("idle_timeout.timeout_seconds", "60")));
    let refused =
        f.elb.modify_target_group_attributes(&group.arn, &[Attribute::new("stickiness.type", "app_cookie")]).await;
    assert!(matches!(refused, Err(ElbError::Validation(_))));
    let sticky = [Attribute::new("stickiness.enabled", "true")];
    f.elb.modify_target_group_attributes(&group.arn, &sticky).await.unwrap();
    let snapshot = f.elb.snapshot().await.unwrap();
    assert_eq!(snapshot.target_group(&group.arn).unwrap().stickiness_s, Some(86400));
    assert_eq!(snapshot.load_balancers[0].idle_timeout_s, 60);
}

#[tokio::test]
async fn secure_listeners_serve_acm_certificates_that_stay_while_used() {
    let f = fixture();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["lb.example.com".to_owned()]).unwrap().self_signed(&key).unwrap();
    let import = flotilla_acm::Import {
        certificate: cert.pem().into_bytes(),
        private_key: key.serialize_pem().into_bytes(),
        chain: None,
        arn: None,
        tags: Vec::new(),
    };
    let certificate = f.acm.import(import).await.unwrap();
    let lb = f.elb.create_load_balancer(alb("web")).await.unwrap();
    let group = f.elb.create_target_group(http_group("tg")).await.unwrap();
    let no_certificate = ListenerInput { protocol: Some("HTTPS".into()), ..http_listener(&lb.arn, 443, &group.arn) };
    assert!(matches!(f.elb.create_listener(no_certificate).await, Err(ElbError::Validation(_))));
    let https = ListenerInput {
        protocol: Some("HTTPS".into()),
        certificates: vec![certificate.clone()],
        ..http_listener(&lb.arn, 443, &group.arn)
    };
    let listener = f.elb.create_listener(https).await.unwrap();
    assert_eq!(listener.ssl_policy.as_deref(), Some(DEFAULT_SSL_POLICY));
    let served = f.elb.snapshot().await.unwrap();
    let pem = &served.load_balancers[0].listeners[0].certificates[0];
    assert_eq!(pem.arn, certificate);
    assert!(pem.chain_pem.contains("BEGIN CERTIFICATE") && pem.key_pem.contains("PRIVATE KEY"));

    use flotilla_acm::CertificateUsers;
    assert_eq!(f.elb.users(&certificate).await.unwrap(), std::slice::from_ref(&lb.arn));
    assert!(f.acm.delete(&certificate).await.is_err(), "a certificate in use stays");
    // Back to plain HTTP: the certificate is dropped and may go.
    let plain = ListenerChange { protocol: Some("HTTP".into()), ..Default::default() };
    let changed = f.elb.modify_listener(&listener.arn, &plain).await.unwrap();
    assert!(changed.certificates.is_empty() && changed.ssl_policy.is_none());
    assert!(f.elb.users(&certificate).await.unwrap().is_empty());
    f.acm.delete(&certificate).await.unwrap();
}
