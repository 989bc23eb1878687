//! Cloud Map's resources and asynchronous operations over a real embedded store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_discovery::{
    Discovery, DiscoveryError, DnsRecord, HealthFilter, NamespaceQuery, NewPrivateDnsNamespace, NewService,
    OperationQuery, OperationStatus, RecordType,
};
use flotilla_store::{EmbeddedStore, Store};

fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap())
}

async fn finished(sd: &Discovery, op: &str) -> flotilla_discovery::Operation {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let operation = sd.operation(op).await.unwrap();
        if operation.status.is_finished() {
            return operation;
        }
        assert!(Instant::now() < deadline, "operation {op} still {:?}", operation.status);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn namespace(name: &str, request: &str) -> NewPrivateDnsNamespace {
    NewPrivateDnsNamespace {
        name: name.into(),
        vpc: "vpc-12345678".into(),
        creator_request_id: Some(request.into()),
        ..Default::default()
    }
}

fn a_service(name: &str, namespace_id: &str) -> NewService {
    NewService {
        name: name.into(),
        dns_namespace_id: Some(namespace_id.into()),
        dns_records: Some(vec![DnsRecord { kind: RecordType::A, ttl: 60 }]),
        custom_health: Some(Some(1)),
        ..Default::default()
    }
}

fn ipv4(ip: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("AWS_INSTANCE_IPV4".to_owned(), ip.to_owned()), ("color".to_owned(), "blue".to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_services_and_instances_go_through_their_operations() {
    let dir = tempfile::tempdir().unwrap();
    let sd = Discovery::start(open(&dir), "us-east-1", "123456789012");

    let op = sd.create_private_dns_namespace(namespace("example.local", "req-1")).await.unwrap();
    // A retry of the same request is the same operation; another request for the name is refused.
    assert_eq!(sd.create_private_dns_namespace(namespace("example.local", "req-1")).await.unwrap(), op);
    let taken = sd.create_private_dns_namespace(namespace("Example.Local.", "req-2")).await.unwrap_err();
    assert!(matches!(taken, DiscoveryError::NamespaceAlreadyExists { .. }), "{taken:?}");
    let done = finished(&sd, &op).await;
    assert_eq!(done.status, OperationStatus::Success);
    let ns_id = done.namespace_id.unwrap();
    let ns = sd.namespace(&ns_id).await.unwrap();
    assert_eq!(ns.name, "example.local");
    assert_eq!(sd.namespace(&ns.arn).await.unwrap().id, ns_id, "an ARN names it too");
    let listed = sd.list_namespaces(&NamespaceQuery::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    let service = sd.create_service(a_service("web", &ns_id)).await.unwrap();
    assert_eq!(sd.namespace(&ns_id).await.unwrap().service_count, 1);
    let again = sd.create_service(a_service("WEB", &ns_id)).await.unwrap_err();
    assert!(matches!(again, DiscoveryError::ServiceAlreadyExists { .. }), "{again:?}");
    let bad = sd.register_instance(&service.id, "i-1", BTreeMap::new(), None).await.unwrap_err();
    assert!(matches!(bad, DiscoveryError::InvalidInput(_)), "an A service needs AWS_INSTANCE_IPV4: {bad:?}");

    let r1 = sd.register_instance(&service.id, "i-1", ipv4("10.0.0.5"), None).await.unwrap();
    let r2 = sd.register_instance(&service.id, "i-2", ipv4("10.0.0.6"), None).await.unwrap();
    assert_eq!(finished(&sd, &r1).await.status, OperationStatus::Success);
    assert_eq!(finished(&sd, &r2).await.status, OperationStatus::Success);
    assert_eq!(sd.service(&service.id).await.unwrap().instance_count, 2);
    let page = sd.list_instances(&service.id, Some(1), None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = sd.list_instances(&service.id, Some(1), page.next_token.as_deref()).await.unwrap();
    assert_eq!(rest.items[0].id, "i-2");

    let none = BTreeMap::new();
    let found = sd.discover_instances("example.local", "web", &none, &none, HealthFilter::Healthy, None).await.unwrap();
    assert_eq!(found.instances.len(), 2);
    sd.update_custom_health(&service.id, "i-1", false).await.unwrap();
    let healthy =
        sd.discover_instances("example.local", "web", &none, &none, HealthFilter::Healthy, None).await.unwrap();
    assert_eq!(healthy.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["i-2"]);
    let filtered = BTreeMap::from([("color".to_owned(), "red".to_owned())]);
    let none_red =
        sd.discover_instances("example.local", "web", &filtered, &none, HealthFilter::All, None).await.unwrap();
    assert!(none_red.instances.is_empty());

    let in_use = sd.delete_service(&service.id).await.unwrap_err();
    assert!(matches!(in_use, DiscoveryError::ResourceInUse(_)), "{in_use:?}");
    let in_use = sd.delete_namespace(&ns_id).await.unwrap_err();
    assert!(matches!(in_use, DiscoveryError::ResourceInUse(_)), "{in_use:?}");

    let before = found.revision;
    let d1 = sd.deregister_instance(&service.id, "i-1").await.unwrap();
    assert_eq!(finished(&sd, &d1).await.status, OperationStatus::Success);
    assert!(sd.instances_revision("example.local", "web").await.unwrap() > before);
    let missing = sd.deregister_instance(&service.id, "i-1").await.unwrap_err();
    assert!(matches!(missing, DiscoveryError::InstanceNotFound { .. }), "{missing:?}");
    let d2 = sd.deregister_instance(&service.id, "i-2").await.unwrap();
    finished(&sd, &d2).await;
    sd.delete_service(&service.id).await.unwrap();
    let deleted = finished(&sd, &sd.delete_namespace(&ns_id).await.unwrap()).await;
    assert_eq!(deleted.status, OperationStatus::Success);
    assert!(matches!(sd.namespace(&ns_id).await, Err(DiscoveryError::NamespaceNotFound { .. })));
    // The name is free again.
    let op = sd.create_private_dns_namespace(namespace("example.local", "req-3")).await.unwrap();
    assert_eq!(finished(&sd, &op).await.status, OperationStatus::Success);

    let all = sd.list_operations(&OperationQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 7);
    let query = OperationQuery { service_ids: Some(vec![service.id.clone()]), ..Default::default() };
    assert_eq!(sd.list_operations(&query).await.unwrap().items.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_then_deregister_in_quick_succession_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sd = Discovery::start(open(&dir), "us-east-1", "123456789012");
    let op = sd.create_private_dns_namespace(namespace("fast.local", "r")).await.unwrap();
    let ns_id = finished(&sd, &op).await.namespace_id.unwrap();
    let service = sd.create_service(a_service("web", &ns_id)).await.unwrap();
    let mut last = String::new();
    for round in 0..10 {
        sd.register_instance(&service.id, "i-1", ipv4(&format!("10.0.0.{round}")), None).await.unwrap();
        // Deregistering before the registration has run is accepted: it runs after it.
        last = sd.deregister_instance(&service.id, "i-1").await.unwrap();
    }
    assert_eq!(finished(&sd, &last).await.status, OperationStatus::Success);
    assert!(sd.list_instances(&service.id, None, None).await.unwrap().items.is_empty());
    assert_eq!(sd.service(&service.id).await.unwrap().instance_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_operations_complete_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Queued by a process that stops before any worker runs it.
    let op = {
        let sd = Discovery::new(store.clone(), "us-east-1", "123456789012");
        let op = sd.create_private_dns_namespace(namespace("later.local", "r")).await.unwrap();
        assert_eq!(sd.operation(&op).await.unwrap().status, OperationStatus::Submitted);
        op
    };
    let sd = Discovery::start(store, "us-east-1", "123456789012");
    assert_eq!(finished(&sd, &op).await.status, OperationStatus::Success);
    assert_eq!(sd.namespace_named("later.local").await.unwrap().unwrap().name, "later.local");
}
