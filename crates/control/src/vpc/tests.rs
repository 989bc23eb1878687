//! The networking control plane against a real embedded store.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use flotilla_store::EmbeddedStore;

use super::*;
use crate::{ControlError, Identity};

struct Fixture {
    control: Arc<Control>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
    let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
    Fixture { control: Arc::new(Control::new(Arc::new(store), identity)), _dir: dir }
}

async fn vpc(control: &Control, cidr: &str) -> Vpc {
    control.create_vpc(CreateVpcInput { cidr_block: cidr.into(), tags: Vec::new() }).await.unwrap()
}

async fn subnet(control: &Control, vpc_id: &str, cidr: &str) -> Result<Subnet, NetworkError> {
    control
        .create_subnet(CreateSubnetInput {
            vpc_id: vpc_id.into(),
            cidr_block: cidr.into(),
            availability_zone: None,
            tags: Vec::new(),
        })
        .await
}

fn eni_spec(subnet_id: &str) -> NetworkInterfaceSpec {
    NetworkInterfaceSpec { subnet_id: subnet_id.into(), ..Default::default() }
}

fn cidr_rule(protocol: &str, port: Option<i32>, cidr: &str) -> RuleSpec {
    RuleSpec {
        protocol: protocol.into(),
        from_port: port,
        to_port: port,
        peer: RulePeerSpec::Cidr(cidr.into()),
        description: None,
    }
}

#[tokio::test]
async fn default_network_is_created_once() {
    let f = fixture();
    let c = &f.control;
    let (a, b) = tokio::join!(c.ensure_default_network(), c.ensure_default_network());
    a.unwrap();
    b.unwrap();
    c.ensure_default_network().await.unwrap();
    let vpcs = c.describe_vpcs(&[], &[]).await.unwrap();
    assert_eq!(vpcs.len(), 1);
    let default = &vpcs[0];
    assert!(default.is_default);
    assert_eq!(default.cidr.to_string(), "172.31.0.0/16");
    assert_eq!(default.dns_resolver(), Ipv4Addr::new(172, 31, 0, 2));

    let subnets = c.describe_subnets(&[], &[]).await.unwrap();
    let mut layout: Vec<(String, String)> =
        subnets.iter().map(|s| (s.availability_zone.clone(), s.cidr.to_string())).collect();
    layout.sort();
    assert_eq!(
        layout,
        [
            ("us-east-1a".to_owned(), "172.31.0.0/20".to_owned()),
            ("us-east-1b".to_owned(), "172.31.16.0/20".to_owned()),
            ("us-east-1c".to_owned(), "172.31.32.0/20".to_owned()),
        ]
    );
    assert!(subnets.iter().all(|s| s.default_for_az && s.map_public_ip_on_launch));
    assert!(subnets.iter().all(|s| s.available_ip_address_count == 4091));

    let group = c.security_group(&default.default_security_group_id).await.unwrap();
    assert_eq!(group.name, "default");
    assert_eq!(group.ingress.len(), 1);
    assert_eq!(group.ingress[0].protocol, IpProtocol::All);
    assert_eq!(group.ingress[0].peer, RulePeer::Group(group.id.clone()));
    assert_eq!(group.egress[0].peer, RulePeer::Cidr("0.0.0.0/0".parse().unwrap()));

    // A deleted default VPC stays deleted, as on AWS.
    for s in &subnets {
        c.delete_subnet(&s.id).await.unwrap();
    }
    c.delete_vpc(&default.id).await.unwrap();
    c.ensure_default_network().await.unwrap();
    assert!(c.describe_vpcs(&[], &[]).await.unwrap().is_empty());
    assert!(c.describe_security_groups(&[], &[], &[]).await.unwrap().is_empty(), "the default group went with it");
}

#[tokio::test]
async fn vpc_blocks_are_checked() {
    let f = fixture();
    let c = &f.control;
    let first = vpc(c, "10.0.0.0/16").await;
    let err = c.create_vpc(CreateVpcInput { cidr_block: "10.0.128.0/17".into(), tags: vec![] }).await.unwrap_err();
    assert!(matches!(&err, NetworkError::VpcRange { .. }), "{err}");
    assert!(err.to_string().contains(&first.id) && err.to_string().contains("one host"), "{err}");
    for (cidr, expected) in [("10.1.0.0/8", "InvalidParameterValue"), ("10.1.0.0/29", "VpcRange")] {
        let err = c.create_vpc(CreateVpcInput { cidr_block: cidr.into(), tags: vec![] }).await.unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{cidr}: {err:?}");
    }
    for cidr in ["10.0.0.0/8", "198.18.0.0/16", "127.0.0.0/16", "169.254.0.0/16"] {
        let err = c.create_vpc(CreateVpcInput { cidr_block: cidr.into(), tags: vec![] }).await.unwrap_err();
        assert!(matches!(err, NetworkError::VpcRange { .. }), "{cidr}: {err:?}");
    }
    // Concurrent overlapping creates: exactly one wins.
    let results = futures_join_all(c, ["10.9.0.0/16", "10.9.0.0/20", "10.9.16.0/20", "10.9.0.0/24"]).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}

async fn futures_join_all(c: &Arc<Control>, cidrs: [&str; 4]) -> Vec<Result<Vpc, NetworkError>> {
    let handles: Vec<_> = cidrs
        .iter()
        .map(|cidr| {
            let c = c.clone();
            let input = CreateVpcInput { cidr_block: (*cidr).into(), tags: vec![] };
            tokio::spawn(async move { c.create_vpc(input).await })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn subnet_blocks_are_checked() {
    let f = fixture();
    let c = &f.control;
    let v = vpc(c, "10.0.0.0/16").await;
    let s = subnet(c, &v.id, "10.0.1.0/24").await.unwrap();
    assert_eq!(s.availability_zone, "us-east-1a");
    assert_eq!(s.available_ip_address_count, 251);
    assert_eq!(s.gateway(), Ipv4Addr::new(10, 0, 1, 1));
    for cidr in ["10.1.0.0/24", "10.0.0.0/29", "10.0.0.0/15"] {
        assert!(matches!(subnet(c, &v.id, cidr).await, Err(NetworkError::SubnetRange { .. })), "{cidr}");
    }
    let err = subnet(c, &v.id, "10.0.1.128/25").await.unwrap_err();
    assert!(matches!(&err, NetworkError::SubnetConflict { subnet_id, .. } if *subnet_id == s.id), "{err:?}");
    assert!(matches!(subnet(c, "vpc-0000000000000000a", "10.0.1.0/24").await, Err(NetworkError::NotFound { .. })));
    assert!(matches!(subnet(c, "vpc-nope", "10.0.1.0/24").await, Err(NetworkError::MalformedId { .. })));
    let err = c
        .create_subnet(CreateSubnetInput {
            vpc_id: v.id.clone(),
            cidr_block: "10.0.2.0/24".into(),
            availability_zone: Some("us-east-1z".into()),
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::InvalidParameterValue(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_interfaces_get_distinct_addresses() {
    let f = fixture();
    let c = &f.control;
    let v = vpc(c, "10.0.0.0/16").await;
    let s = subnet(c, &v.id, "10.0.1.0/24").await.unwrap();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            let spec = NetworkInterfaceSpec {
                subnet_id: s.id.clone(),
                assign_public_ip: i % 2 == 0,
                attachment: Some(format!("task-{i}")),
                ..Default::default()
            };
            tokio::spawn(async move { c.create_network_interface(spec).await })
        })
        .collect();
    let mut enis = Vec::new();
    for h in handles {
        enis.push(h.await.unwrap().unwrap());
    }
    let private: HashSet<Ipv4Addr> = enis.iter().map(|e| e.private_ip).collect();
    assert_eq!(private.len(), 50, "every interface has its own address");
    let current = c.subnet(&s.id).await.unwrap();
    assert!(private.iter().all(|ip| !current.is_reserved(*ip)), "{private:?}");
    let public: HashSet<Ipv4Addr> = enis.iter().filter_map(|e| e.public_ip).collect();
    assert_eq!(public.len(), 25);
    let pool = c.public_ip_pool();
    assert!(public.iter().all(|ip| pool.contains_addr(*ip) && *ip != pool.network() && *ip != pool.last()));
    assert_eq!(current.available_ip_address_count, 251 - 50);
    let e = &enis[0];
    assert_eq!(e.groups, [GroupRef { id: v.default_security_group_id.clone(), name: "default".into() }]);
    assert!(e.mac.starts_with("02:") && e.mac.len() == 17, "{}", e.mac);
    assert_eq!(e.private_dns_name, format!("ip-{}.ec2.internal", e.private_ip.to_string().replace('.', "-")));

    // Asking again for an attachment returns its interface.
    let again = c
        .create_network_interface(NetworkInterfaceSpec {
            subnet_id: s.id.clone(),
            attachment: Some("task-7".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again, *enis.iter().find(|e| e.attachment.as_deref() == Some("task-7")).unwrap());
    assert_eq!(c.network_interface_for("task-7").await.unwrap(), Some(again));

    // Deleting releases everything; deleting again is a no-op.
    let deletes: Vec<_> = enis
        .iter()
        .map(|e| {
            let c = c.clone();
            let id = e.id.clone();
            tokio::spawn(async move { c.delete_network_interface(&id).await })
        })
        .collect();
    for d in deletes {
        assert!(d.await.unwrap().unwrap().is_some());
    }
    assert_eq!(c.delete_network_interface(&enis[0].id).await.unwrap(), None);
    let store = c.store();
    for prefix in [keys::NETWORK_INTERFACES, keys::PRIVATE_IPS, keys::PUBLIC_IPS, keys::ATTACHMENTS] {
        assert!(store.list_prefix(prefix).await.unwrap().is_empty(), "{prefix} leaked");
    }
    assert_eq!(c.subnet(&s.id).await.unwrap().available_ip_address_count, 251);
    c.delete_subnet(&s.id).await.unwrap();
}

#[tokio::test]
async fn full_subnets_say_so() {
    let f = fixture();
    let c = &f.control;
    let v = vpc(c, "10.0.0.0/16").await;
    let s = subnet(c, &v.id, "10.0.0.0/28").await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..11 {
        let e = c.create_network_interface(eni_spec(&s.id)).await.unwrap();
        let offset = s.cidr.offset_of(e.private_ip).unwrap();
        assert!((4..=14).contains(&offset), "{}", e.private_ip);
        assert!(seen.insert(e.private_ip));
    }
    let err = c.create_network_interface(eni_spec(&s.id)).await.unwrap_err();
    assert!(matches!(err, NetworkError::InsufficientAddresses { .. }), "{err:?}");
    assert_eq!(c.subnet(&s.id).await.unwrap().available_ip_address_count, 0);
}

#[tokio::test]
async fn a_small_public_pool_runs_out_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
    let identity = Identity { region: "eu-west-1".into(), account: "123456789012".into() };
    let c = Control::new(Arc::new(store), identity).with_public_ip_pool("203.0.113.0/30".parse().unwrap());
    let v = vpc(&c, "10.0.0.0/16").await;
    let s = subnet(&c, &v.id, "10.0.0.0/24").await.unwrap();
    let public = NetworkInterfaceSpec { assign_public_ip: true, ..eni_spec(&s.id) };
    let a = c.create_network_interface(public.clone()).await.unwrap();
    let b = c.create_network_interface(public.clone()).await.unwrap();
    assert_eq!(
        (a.public_ip, b.public_ip),
        (Some("203.0.113.1".parse().unwrap()), Some("203.0.113.2".parse().unwrap()))
    );
    assert!(a.private_dns_name.ends_with(".eu-west-1.compute.internal"), "{}", a.private_dns_name);
    let err = c.create_network_interface(public.clone()).await.unwrap_err();
    assert!(matches!(err, NetworkError::PublicPoolExhausted { .. }), "{err:?}");
    c.delete_network_interface(&a.id).await.unwrap();
    assert_eq!(c.create_network_interface(public).await.unwrap().public_ip, a.public_ip);
}

#[tokio::test]
async fn deletes_respect_dependencies() {
    let f = fixture();
    let c = &f.control;
    let v = vpc(c, "10.0.0.0/16").await;
    let s = subnet(c, &v.id, "10.0.0.0/24").await.unwrap();
    let web = c.create_security_group("web", "web servers", Some(&v.id), vec![]).await.unwrap();
    let db = c.create_security_group("db", "databases", Some(&v.id), vec![]).await.unwrap();
    let err = c.create_security_group("web", "again", Some(&v.id), vec![]).await.unwrap_err();
    assert!(matches!(err, NetworkError::GroupDuplicate { .. }), "{err:?}");
    assert!(matches!(
        c.create_security_group("default", "x", Some(&v.id), vec![]).await,
        Err(NetworkError::GroupReserved { .. })
    ));

    let from_web = RuleSpec {
        protocol: "tcp".into(),
        from_port: Some(5432),
        to_port: Some(5432),
        peer: RulePeerSpec::GroupName("web".into()),
        description: Some("app".into()),
    };
    let change = c
        .authorize_security_group(&GroupSelector::Id(db.id.clone()), RuleDirection::Ingress, &[from_web])
        .await
        .unwrap();
    assert_eq!(change.rules[0].peer, RulePeer::Group(web.id.clone()));
    let eni = c
        .create_network_interface(NetworkInterfaceSpec { security_group_ids: vec![web.id.clone()], ..eni_spec(&s.id) })
        .await
        .unwrap();

    let dependency = |r: Result<_, NetworkError>| matches!(r, Err(NetworkError::DependencyViolation { .. }));
    assert!(dependency(c.delete_subnet(&s.id).await.map(|_| ())));
    assert!(dependency(c.delete_vpc(&v.id).await.map(|_| ())));
    assert!(
        dependency(c.delete_security_group(&GroupSelector::Id(web.id.clone())).await.map(|_| ())),
        "referenced and in use"
    );
    let err = c.delete_security_group(&GroupSelector::Id(v.default_security_group_id.clone())).await.unwrap_err();
    assert!(matches!(err, NetworkError::CannotDelete { .. }), "{err:?}");

    c.delete_security_group(&GroupSelector::Id(db.id.clone())).await.unwrap();
    assert!(dependency(c.delete_security_group(&GroupSelector::Id(web.id.clone())).await.map(|_| ())), "still in use");
    c.delete_network_interface(&eni.id).await.unwrap();
    c.delete_security_group(&GroupSelector::Id(web.id.clone())).await.unwrap();
    assert!(dependency(c.delete_vpc(&v.id).await.map(|_| ())), "the subnet remains");
    c.delete_subnet(&s.id).await.unwrap();
    c.delete_vpc(&v.id).await.unwrap();
    let left = c.store().list_prefix(keys::PREFIX).await.unwrap();
    let left: Vec<&str> = left.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(left, [keys::VPC_INDEX], "only the (now empty) index remains");
    let vpc_id = v.id.clone();
    assert!(matches!(c.delete_vpc(&vpc_id).await, Err(NetworkError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_subnet_never_orphans_interfaces() {
    let f = fixture();
    let c = &f.control;
    let v = vpc(c, "10.0.0.0/16").await;
    for round in 0..5 {
        let s = subnet(c, &v.id, &format!("10.0.{round}.0/24")).await.unwrap();
        let creates: Vec<_> = (0..10)
            .map(|_| {
                let c = c.clone();
                let spec = eni_spec(&s.id);
                tokio::spawn(async move { c.create_network_interface(spec).await })
            })
            .collect();
        let delete = {
            let c = c.clone();
            let id = s.id.clone();
            tokio::spawn(async move { c.delete_subnet(&id).await })
        };
        let deleted = delete.await.unwrap().is_ok();
        let mut created = 0;
        for h in creates {
            created += usize::from(h.await.unwrap().is_ok());
        }
        let interfaces = c.describe_network_interfaces(&[], &[]).await.unwrap();
        let in_subnet = interfaces.iter().filter(|e| e.subnet_id == s.id).count();
        assert_eq!(in_subnet, created);
        if deleted {
            assert_eq!(created, 0, "round {round}: the subnet went while interfaces were made in it");
        } else {
            for e in interfaces {
                c.delete_network_interface(&e.id).await.unwrap();
            }
            c.delete_subnet(&s.id).await.unwrap();
        }
    }
}

#[tokio::test]
async fn rules_are_checked_and_revoked() {
    let f = fixture();
    let c = &f.control;
    c.ensure_default_network().await.unwrap();
    let g = c.create_security_group("fargate-sg", "Security group for Fargate tasks", None, vec![]).await.unwrap();
    let default = c.default_vpc().await.unwrap().unwrap();
    assert_eq!(g.vpc_id, default.id, "no VpcId means the default VPC");
    let by_name = GroupSelector::Name("fargate-sg".into());
    let http = cidr_rule("tcp", Some(80), "0.0.0.0/0");
    let added =
        c.authorize_security_group(&by_name, RuleDirection::Ingress, std::slice::from_ref(&http)).await.unwrap();
    assert!(added.rules[0].id.starts_with("sgr-"));
    let err =
        c.authorize_security_group(&by_name, RuleDirection::Ingress, std::slice::from_ref(&http)).await.unwrap_err();
    assert!(matches!(err, NetworkError::PermissionDuplicate { .. }), "{err:?}");
    assert!(err.to_string().contains("peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW"), "{err}");
    for bad in [
        cidr_rule("tcp", Some(80), "0.0.0.0/33"),
        cidr_rule("tcp", Some(80), "10.0.0.1/8"),
        cidr_rule("udp", Some(70000), "10.0.0.0/8"),
    ] {
        let err = c.authorize_security_group(&by_name, RuleDirection::Ingress, &[bad]).await.unwrap_err();
        assert!(matches!(err, NetworkError::PermissionMalformed(_)), "{err:?}");
    }
    let missing = GroupSelector::Id("sg-0123456789abcdef0".into());
    assert!(matches!(
        c.authorize_security_group(&missing, RuleDirection::Ingress, std::slice::from_ref(&http)).await,
        Err(NetworkError::NotFound { resource: NetworkResource::SecurityGroup, .. })
    ));

    let ssh = cidr_rule("tcp", Some(22), "10.0.0.0/8");
    let change =
        c.revoke_security_group(&by_name, RuleDirection::Ingress, &[http.clone(), ssh.clone()], &[]).await.unwrap();
    assert_eq!(change.rules.len(), 1);
    assert_eq!(change.unknown, vec![ssh]);
    let err = c.revoke_security_group(&by_name, RuleDirection::Ingress, &[http], &[]).await.unwrap_err();
    assert!(matches!(err, NetworkError::PermissionNotFound), "{err:?}");
    let egress = c.security_group(&g.id).await.unwrap().egress[0].id.clone();
    let change = c.revoke_security_group(&by_name, RuleDirection::Egress, &[], &[egress]).await.unwrap();
    assert_eq!(change.group.egress.len(), 0);
}

#[tokio::test]
async fn describe_filters() {
    let f = fixture();
    let c = &f.control;
    c.ensure_default_network().await.unwrap();
    let tags = vec![Tag { key: "Name".into(), value: "prod-vpc".into() }];
    let v = c.create_vpc(CreateVpcInput { cidr_block: "10.0.0.0/16".into(), tags }).await.unwrap();
    let filter = |name: &str, values: &[&str]| ResourceFilter {
        name: name.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    let ids = |vpcs: Vec<Vpc>| vpcs.into_iter().map(|v| v.id).collect::<Vec<_>>();
    assert_eq!(ids(c.describe_vpcs(&[], &[filter("tag:Name", &["prod-*"])]).await.unwrap()), vec![v.id.clone()]);
    assert_eq!(ids(c.describe_vpcs(&[], &[filter("cidr", &["10.0.0.0/16"])]).await.unwrap()), vec![v.id.clone()]);
    assert_eq!(c.describe_vpcs(&[], &[filter("is-default", &["true"])]).await.unwrap().len(), 1);
    assert!(
        c.describe_vpcs(&[], &[filter("is-default", &["false"]), filter("tag-key", &["Other"])])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        c.describe_vpcs(&[], &[filter("colour", &["x"])]).await,
        Err(NetworkError::InvalidParameterValue(_))
    ));
    assert!(matches!(
        c.describe_vpcs(&["vpc-0123456789abcdef0".into()], &[]).await,
        Err(NetworkError::NotFound { resource: NetworkResource::Vpc, .. })
    ));
    let default_subnets = c
        .describe_subnets(&[], &[filter("default-for-az", &["true"]), filter("availability-zone", &["us-east-1b"])])
        .await
        .unwrap();
    assert_eq!(default_subnets.len(), 1);
    assert_eq!(default_subnets[0].cidr.to_string(), "172.31.16.0/20");
    let e = c
        .create_network_interface(NetworkInterfaceSpec {
            description: Some("task eni".into()),
            ..eni_spec(&default_subnets[0].id)
        })
        .await
        .unwrap();
    for (name, value) in [
        ("subnet-id", default_subnets[0].id.clone()),
        ("vpc-id", e.vpc_id.clone()),
        ("group-id", e.groups[0].id.clone()),
        ("private-ip-address", e.private_ip.to_string()),
        ("description", "task eni".into()),
    ] {
        let found = c.describe_network_interfaces(&[], &[filter(name, &[&value])]).await.unwrap();
        assert_eq!(found.len(), 1, "{name}={value}");
    }
    assert!(c.describe_network_interfaces(&[], &[filter("subnet-id", &["subnet-00000000"])]).await.unwrap().is_empty());
    c.create_tags(std::slice::from_ref(&e.id), &[Tag { key: "k".into(), value: "v".into() }]).await.unwrap();
    assert_eq!(c.describe_network_interfaces(&[], &[filter("tag:k", &["v"])]).await.unwrap().len(), 1);
    c.delete_tags(std::slice::from_ref(&e.id), &[TagRemoval { key: "k".into(), value: Some("other".into()) }])
        .await
        .unwrap();
    assert_eq!(c.describe_network_interfaces(std::slice::from_ref(&e.id), &[]).await.unwrap()[0].tags.len(), 1);
    c.delete_tags(std::slice::from_ref(&e.id), &[TagRemoval { key: "k".into(), value: None }]).await.unwrap();
    assert!(c.describe_network_interfaces(std::slice::from_ref(&e.id), &[]).await.unwrap()[0].tags.is_empty());
}

#[tokio::test]
async fn awsvpc_configurations_are_checked_like_runtask() {
    let f = fixture();
    let c = &f.control;
    c.ensure_default_network().await.unwrap();
    let default = c.default_vpc().await.unwrap().unwrap();
    let defaults: Vec<String> = c.describe_subnets(&[], &[]).await.unwrap().into_iter().map(|s| s.id).collect();
    let placement = c.validate_awsvpc(&defaults[..2], &[]).await.unwrap();
    assert_eq!(placement.vpc_id, default.id);
    assert_eq!(placement.subnets.len(), 2);
    assert_eq!(placement.security_group_ids, vec![default.default_security_group_id.clone()]);

    let other = vpc(c, "10.0.0.0/16").await;
    let other_subnet = subnet(c, &other.id, "10.0.0.0/24").await.unwrap();
    let message = |r: Result<AwsvpcPlacement, ControlError>| match r {
        Err(ControlError::InvalidParameter(m)) => m,
        other => panic!("expected InvalidParameter, got {other:?}"),
    };
    assert!(message(c.validate_awsvpc(&[], &[]).await).contains("subnets can not be empty"));
    let m = message(c.validate_awsvpc(&["subnet-0123456789abcdef0".into()], &[]).await);
    assert!(m.contains("subnet-0123456789abcdef0") && m.contains("does not exist"), "{m}");
    let m = message(c.validate_awsvpc(&[defaults[0].clone(), other_subnet.id.clone()], &[]).await);
    assert!(m.contains("same VPC"), "{m}");
    let m = message(
        c.validate_awsvpc(
            std::slice::from_ref(&other_subnet.id),
            std::slice::from_ref(&default.default_security_group_id),
        )
        .await,
    );
    assert!(m.contains("same VPC"), "{m}");
    let m = message(c.validate_awsvpc(&vec![defaults[0].clone(); 17], &[]).await);
    assert!(m.contains("at most 16"), "{m}");
    let m = message(c.validate_awsvpc(&defaults[..1], &vec!["sg-12345678".into(); 6]).await);
    assert!(m.contains("at most 5"), "{m}");
    let m = message(c.validate_awsvpc(&defaults[..1], &["sg-12345678".into()]).await);
    assert!(m.contains("sg-12345678") && m.contains("does not exist"), "{m}");
}

fn answers_every_filter<T: Filterable>(item: &T) {
    for name in T::FILTERS {
        assert!(item.filter_values(name).is_some(), "{name} is declared but not answered");
    }
}

#[tokio::test]
async fn every_declared_filter_is_answered() {
    let f = fixture();
    let c = &f.control;
    c.ensure_default_network().await.unwrap();
    let subnet = c.describe_subnets(&[], &[]).await.unwrap().remove(0);
    let eni = c.create_network_interface(eni_spec(&subnet.id)).await.unwrap();
    answers_every_filter(&c.default_vpc().await.unwrap().unwrap());
    answers_every_filter(&subnet);
    answers_every_filter(&c.security_group(&eni.groups[0].id).await.unwrap());
    answers_every_filter(&eni);
    let filter = ResourceFilter { name: "colour".into(), values: vec!["x".into()] };
    c.delete_network_interface(&eni.id).await.unwrap();
    assert!(matches!(
        c.describe_network_interfaces(&[], std::slice::from_ref(&filter)).await,
        Err(NetworkError::InvalidParameterValue(_))
    ));
}
