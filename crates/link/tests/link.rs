//! A real link server and client over loopback, in front of a recording host API: every call
//! round-trips, a cut connection resumes the assignment stream from the newest revision the
//! agent has, wrong and revoked tokens are refused, calls fail fast while no server is
//! reachable, and exec sessions run on the agent's side of the stream.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::discovery::{DiscoveryRecord, DiscoverySnapshot, DiscoveryWatch};
use flotilla_host::exec::{ExecChannel, ExecError, ExecInput, ExecOutput, ExecRequest, ExecTarget, ExecTargets};
use flotilla_host::lb::{LbSnapshot, LbWatch, TargetObservation, TargetReport};
use flotilla_host::{
    Assignment, AssignmentEvent, AssignmentWatch, BoxFuture, Events, Host, HostApi, HostApiError, HostSpec,
    InterfaceLease, LogEvent, NetworkChanged, NetworkWatch, TaskReport, TaskSecrets, VpcView,
};
use flotilla_link::{AuthError, HostAuth, LinkServer, LinkStatus, RemoteHostApi};
use flotilla_types::Timestamp;
use flotilla_types::task::{AwsvpcConfiguration, Task, TaskStatus};
use flotilla_types::task_definition::TaskDefinition;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, timeout};

const HOST: &str = "host-a";
const TOKEN: &str = "s3cret-token";

fn definition() -> TaskDefinition {
    serde_json::from_value(serde_json::json!({
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
        "family": "web", "revision": 1, "status": "ACTIVE", "containerDefinitions": [],
        "volumes": [], "placementConstraints": [], "requiresAttributes": [], "compatibilities": ["FARGATE"],
        "registeredAt": Timestamp::now(),
    }))
    .expect("a task definition")
}

fn task_arn(n: u32) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:task/default/{n:032x}")
}

fn lease(task_arn: &str) -> InterfaceLease {
    InterfaceLease {
        id: "eni-1".into(),
        task_arn: task_arn.into(),
        subnet_id: "subnet-1".into(),
        subnet: "172.31.0.0/20".parse().unwrap(),
        vpc_id: "vpc-1".into(),
        private_ip: Ipv4Addr::new(172, 31, 0, 9),
        public_ip: None,
        mac: "0a:58:00:00:00:01".into(),
        private_dns_name: "ip-172-31-0-9.ec2.internal".into(),
        security_groups: vec!["sg-1".into()],
    }
}

/// The control plane's side, recorded: assignments with revisions, what was asked and told.
#[derive(Default)]
struct Recorded {
    assignments: BTreeMap<String, Assignment>,
    revision: u64,
    /// The `since` of every assignment stream opened.
    since: Vec<Option<u64>>,
    reports: Vec<TaskReport>,
    heartbeats: u32,
    targets: Vec<TargetReport>,
    /// (group, create) of every log group checked.
    groups: Vec<(String, bool)>,
    /// (group, stream, events) of every batch of logs received.
    logs: Vec<(String, String, Vec<LogEvent>)>,
}

struct Fake {
    recorded: Mutex<Recorded>,
    changes: broadcast::Sender<Assignment>,
    network: broadcast::Sender<()>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            recorded: Mutex::default(),
            changes: broadcast::channel(64).0,
            network: broadcast::channel(8).0,
        })
    }

    /// Assigns task `n` to the host (again): a new revision.
    fn assign(&self, n: u32) -> u64 {
        let mut r = self.recorded.lock().unwrap();
        r.revision += 1;
        let arn = task_arn(n);
        let task = Task::provisioning(arn.clone(), "c".into(), definition().task_definition_arn, Timestamp::now());
        let a = Assignment { task, definition: definition(), awsvpc: None, revision: r.revision, volume_files: false };
        r.assignments.insert(arn, a.clone());
        let _ = self.changes.send(a);
        r.revision
    }

    fn since(&self) -> Vec<Option<u64>> {
        self.recorded.lock().unwrap().since.clone()
    }
}

impl HostApi for Fake {
    fn register(&self, spec: HostSpec) -> BoxFuture<'_, Result<Host, HostApiError>> {
        Box::pin(async move {
            Ok(Host { spec, registered_at: Timestamp::now(), last_seen: None, status: Default::default() })
        })
    }

    fn assignments(&self, _host_id: &str, since: Option<u64>) -> AssignmentWatch {
        let (tx, rx) = mpsc::channel(64);
        let mut changes = self.changes.subscribe();
        let mut r = self.recorded.lock().unwrap();
        r.since.push(since);
        let (mut assignments, mut unchanged) = (Vec::new(), Vec::new());
        for a in r.assignments.values() {
            if since.is_some_and(|s| a.revision <= s) {
                unchanged.push(a.task_arn().to_owned());
            } else {
                assignments.push(a.clone());
            }
        }
        let snapshot = AssignmentEvent::Snapshot { assignments, unchanged, revision: r.revision };
        tokio::spawn(async move {
            if tx.send(Ok(snapshot)).await.is_err() {
                return;
            }
            while let Ok(a) = changes.recv().await {
                if tx.send(Ok(AssignmentEvent::Changed { assignment: Box::new(a) })).await.is_err() {
                    return;
                }
            }
        });
        Events::new(rx)
    }

    fn report(&self, report: TaskReport) -> BoxFuture<'_, Result<Task, HostApiError>> {
        Box::pin(async move {
            let mut r = self.recorded.lock().unwrap();
            r.reports.push(report.clone());
            let a = r.assignments.get(&report.task_arn).ok_or(HostApiError::NotFound { what: report.task_arn })?;
            let mut task = a.task.clone();
            task.last_status = report.status.unwrap_or(task.last_status);
            Ok(task)
        })
    }

    fn ensure_interface<'a>(
        &'a self,
        task_arn: &'a str,
        _attachment_id: &'a str,
        awsvpc: &'a AwsvpcConfiguration,
    ) -> BoxFuture<'a, Result<InterfaceLease, HostApiError>> {
        Box::pin(async move {
            let mut l = lease(task_arn);
            l.subnet_id = awsvpc.subnets[0].clone();
            Ok(l)
        })
    }

    fn interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<Option<InterfaceLease>, HostApiError>> {
        Box::pin(async move { Ok(Some(lease(task_arn))) })
    }

    fn release_interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move {
            match task_arn.is_empty() {
                true => Err(HostApiError::Refused { reason: "no task".into() }),
                false => Ok(()),
            }
        })
    }

    fn interfaces<'a>(&'a self, _host_id: &'a str) -> BoxFuture<'a, Result<Vec<InterfaceLease>, HostApiError>> {
        Box::pin(async move { Ok(vec![lease(&task_arn(1)), lease(&task_arn(2))]) })
    }

    fn vpc<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<Option<VpcView>, HostApiError>> {
        Box::pin(async move {
            Ok((vpc_id == "vpc-1").then(|| VpcView {
                id: vpc_id.into(),
                cidr: "172.31.0.0/16".parse().unwrap(),
                groups: vec![],
                vni: 7,
                interfaces: vec![],
                virtual_services: vec![],
            }))
        })
    }

    fn network_changes(&self) -> NetworkWatch {
        let (tx, rx) = mpsc::channel(8);
        let mut ticks = self.network.subscribe();
        tokio::spawn(async move {
            while ticks.recv().await.is_ok() {
                if tx.send(Ok(NetworkChanged)).await.is_err() {
                    return;
                }
            }
        });
        Events::new(rx)
    }

    fn task_secrets<'a>(&'a self, _task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, HostApiError>> {
        Box::pin(async move {
            let mut s = TaskSecrets::default();
            s.environment.insert("web".into(), vec![("API_KEY".into(), "hunter2".into())]);
            Ok(s)
        })
    }

    fn task_role_credentials<'a>(
        &'a self,
        task_arn: &'a str,
    ) -> BoxFuture<'a, Result<flotilla_host::RoleCredentials, HostApiError>> {
        Box::pin(async move {
            Ok(flotilla_host::RoleCredentials {
                access_key_id: "ASIAFAKE".into(),
                secret_access_key: "secret".into(),
                session_token: format!("token-for-{task_arn}"),
                expiration: Timestamp(21_600_000),
                role_arn: "arn:aws:iam::000000000000:role/app".into(),
            })
        })
    }

    fn load_balancers(&self, _host_id: &str) -> LbWatch {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let _ = tx.send(Ok(LbSnapshot::default())).await;
            tx.closed().await;
        });
        Events::new(rx)
    }

    fn service_discovery(&self) -> DiscoveryWatch {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let record = DiscoveryRecord { key: "servicediscovery/namespaces/ns-1".into(), value: "{}".into() };
            let _ = tx.send(Ok(DiscoverySnapshot { records: vec![record] })).await;
            tx.closed().await;
        });
        Events::new(rx)
    }

    fn report_targets(&self, reports: Vec<TargetReport>) -> BoxFuture<'_, Result<(), HostApiError>> {
        Box::pin(async move {
            self.recorded.lock().unwrap().targets.extend(reports);
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, _host_id: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move {
            self.recorded.lock().unwrap().heartbeats += 1;
            Ok(())
        })
    }

    fn ensure_log_group<'a>(&'a self, group: &'a str, create: bool) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move {
            self.recorded.lock().unwrap().groups.push((group.to_owned(), create));
            match create || group == "/ecs/existing" {
                true => Ok(()),
                false => {
                    Err(HostApiError::Refused { reason: format!("The specified log group does not exist: {group}") })
                }
            }
        })
    }

    fn put_logs<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        events: Vec<LogEvent>,
    ) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move {
            self.recorded.lock().unwrap().logs.push((group.to_owned(), stream.to_owned(), events));
            // A server that takes its time: the connection is cut before it answers.
            if group == "/ecs/slow" {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

/// Tokens by host; revoking one wakes the streams it opened.
struct Tokens {
    valid: watch::Sender<HashMap<String, String>>,
}

impl Tokens {
    fn new() -> Arc<Tokens> {
        let valid = HashMap::from([(HOST.to_owned(), TOKEN.to_owned()), ("host-b".to_owned(), "other".to_owned())]);
        Arc::new(Tokens { valid: watch::channel(valid).0 })
    }

    fn revoke(&self, host: &str) {
        self.valid.send_modify(|v| {
            v.remove(host);
        });
    }
}

impl HostAuth for Tokens {
    fn check<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            match self.valid.borrow().get(host_id) {
                Some(t) if t == token => Ok(()),
                _ => Err(AuthError::Refused),
            }
        })
    }

    fn may_act_on<'a>(&'a self, _host_id: &'a str, task_arn: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        // Task 99 is another host's.
        Box::pin(async move { Ok(task_arn != self::task_arn(99)) })
    }

    fn revoked<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut valid = self.valid.subscribe();
            let _ = valid.wait_for(|v| v.get(host_id).is_none_or(|t| t != token)).await;
        })
    }
}

struct Served {
    addr: SocketAddr,
    fake: Arc<Fake>,
    tokens: Arc<Tokens>,
    exec: ExecTargets,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn serve() -> Served {
    let fake = Fake::new();
    let tokens = Tokens::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let exec = ExecTargets::new();
    let server = LinkServer::new(fake.clone(), tokens.clone()).with_exec_targets(exec.clone());
    let handle = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Served { addr, fake, tokens, exec, stop: Some(stop), handle }
}

/// A TCP relay in front of the server whose connections can be cut, and which can stop
/// listening (nothing reachable) and listen again on the same port.
struct Relay {
    addr: SocketAddr,
    backend: SocketAddr,
    accepting: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(backend: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Relay { addr, backend, accepting: None, connections: Arc::default() };
        relay.listen(listener);
        relay
    }

    fn listen(&mut self, listener: TcpListener) {
        let (backend, connections) = (self.backend, self.connections.clone());
        self.accepting = Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        }));
    }

    /// Every open connection is closed; new ones are still accepted.
    fn cut(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Nothing listens any more, and open connections are closed.
    fn down(&mut self) {
        if let Some(a) = self.accepting.take() {
            a.abort();
        }
        self.cut();
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.listen(listener);
    }
}

fn url(addr: SocketAddr) -> Vec<String> {
    vec![format!("http://{addr}")]
}

async fn next<T>(events: &mut Events<T>) -> T {
    match timeout(Duration::from_secs(10), events.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("stream error: {e}"),
        Err(_) => panic!("no event within 10 s"),
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_call_round_trips() {
    let served = serve().await;
    served.fake.assign(1);
    let api = RemoteHostApi::connect(url(served.addr), HOST, TOKEN);
    api.connected(Duration::from_secs(10)).await.expect("connected");

    let spec = HostSpec {
        id: HOST.into(),
        availability_zone: "us-east-1a".into(),
        cpu: 4096,
        memory: 8192,
        underlay_ip: None,
        max_tasks: None,
    };
    assert_eq!(api.register(spec.clone()).await.unwrap().spec, spec);
    let task = api.report(TaskReport::new(task_arn(1)).status(TaskStatus::Running)).await.unwrap();
    assert_eq!(task.last_status, TaskStatus::Running);
    assert_eq!(
        api.report(TaskReport::new(task_arn(9))).await.unwrap_err(),
        HostApiError::NotFound { what: task_arn(9) },
        "errors arrive as the host API's own"
    );
    let awsvpc = AwsvpcConfiguration { subnets: vec!["subnet-7".into()], ..Default::default() };
    assert_eq!(api.ensure_interface(&task_arn(1), "att-1", &awsvpc).await.unwrap().subnet_id, "subnet-7");
    assert_eq!(api.interface(&task_arn(1)).await.unwrap(), Some(lease(&task_arn(1))));
    api.release_interface(&task_arn(1)).await.unwrap();
    assert!(matches!(api.release_interface("").await, Err(HostApiError::Refused { .. })));
    assert_eq!(api.interfaces(HOST).await.unwrap().len(), 2);
    assert_eq!(api.vpc("vpc-1").await.unwrap().unwrap().cidr.to_string(), "172.31.0.0/16");
    assert_eq!(api.vpc("vpc-2").await.unwrap(), None);
    let secrets = api.task_secrets(&task_arn(1)).await.unwrap();
    assert_eq!(secrets.environment["web"], vec![("API_KEY".to_owned(), "hunter2".to_owned())]);
    let creds = api.task_role_credentials(&task_arn(1)).await.unwrap();
    assert_eq!(creds.session_token, format!("token-for-{}", task_arn(1)));
    assert_eq!(creds.expiration, Timestamp(21_600_000));
    let target = TargetReport {
        target_group_arn: "tg".into(),
        ip: Ipv4Addr::new(172, 31, 0, 9),
        port: 80,
        observation: TargetObservation::Healthy,
    };
    api.report_targets(vec![target.clone()]).await.unwrap();
    api.heartbeat(HOST).await.unwrap();
    api.ensure_log_group("/ecs/new", true).await.unwrap();
    match api.ensure_log_group("/ecs/missing", false).await {
        Err(HostApiError::Refused { reason }) => assert!(reason.contains("/ecs/missing"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let events =
        vec![LogEvent { timestamp: 1, message: "hello".into() }, LogEvent { timestamp: 2, message: "é\n\"x\"".into() }];
    api.put_logs("/ecs/new", "ecs/web/1", events.clone()).await.unwrap();
    {
        let r = served.fake.recorded.lock().unwrap();
        assert_eq!(r.targets, vec![target]);
        assert_eq!(r.heartbeats, 1);
        assert_eq!(r.reports.len(), 2);
        assert_eq!(r.groups, vec![("/ecs/new".to_owned(), true), ("/ecs/missing".to_owned(), false)]);
        assert_eq!(r.logs, vec![("/ecs/new".to_owned(), "ecs/web/1".to_owned(), events)]);
    }

    let mut lbs = api.load_balancers(HOST);
    assert_eq!(next(&mut lbs).await, LbSnapshot::default());
    let mut discovery = api.service_discovery();
    assert_eq!(next(&mut discovery).await.records[0].key, "servicediscovery/namespaces/ns-1");
    let mut network = api.network_changes();
    let mut assignments = api.assignments(HOST, None);
    match next(&mut assignments).await {
        AssignmentEvent::Snapshot { assignments, unchanged, revision } => {
            assert_eq!(assignments.len(), 1);
            assert!(unchanged.is_empty());
            assert_eq!(revision, 1);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    served.fake.assign(2);
    match next(&mut assignments).await {
        AssignmentEvent::Changed { assignment } => assert_eq!(assignment.task_arn(), task_arn(2)),
        other => panic!("expected a change, got {other:?}"),
    }
    // The network watch is open on the server once a tick goes through.
    eventually("a network tick", || {
        let _ = served.fake.network.send(());
        network.try_next().is_some()
    })
    .await;

    // A host acts only as itself, and on its own tasks.
    assert!(matches!(api.task_secrets(&task_arn(99)).await, Err(HostApiError::Refused { .. })));
    assert!(matches!(api.task_role_credentials(&task_arn(99)).await, Err(HostApiError::Refused { .. })));
    assert!(matches!(api.report(TaskReport::new(task_arn(99))).await, Err(HostApiError::Refused { .. })));
    assert!(matches!(api.heartbeat("host-b").await, Err(HostApiError::Refused { .. })));
    assert!(matches!(api.interfaces("host-b").await, Err(HostApiError::Refused { .. })));
    let mut foreign = api.assignments("host-b", None);
    assert!(matches!(timeout(Duration::from_secs(10), foreign.next()).await, Ok(Err(HostApiError::Refused { .. }))));
}

#[tokio::test]
async fn a_cut_connection_resumes_the_assignment_stream_from_the_newest_revision() {
    let served = serve().await;
    let relay = Relay::start(served.addr).await;
    served.fake.assign(1);
    served.fake.assign(2);
    let api = RemoteHostApi::connect(url(relay.addr), HOST, TOKEN);
    let mut assignments = api.assignments(HOST, None);
    assert!(
        matches!(next(&mut assignments).await, AssignmentEvent::Snapshot { ref assignments, .. } if assignments.len() == 2)
    );
    let third = served.fake.assign(3);
    assert!(
        matches!(next(&mut assignments).await, AssignmentEvent::Changed { ref assignment } if assignment.revision == third)
    );

    relay.cut();
    // Changed while the agent is away, and a report made while it reconnects.
    let fourth = served.fake.assign(4);
    let report = api.report(TaskReport::new(task_arn(4)).status(TaskStatus::Pending)).await;
    assert_eq!(report.unwrap().last_status, TaskStatus::Pending, "a call during a reconnect is sent again");

    // The stream resumed from what the agent had: only the fourth task comes again.
    match next(&mut assignments).await {
        AssignmentEvent::Snapshot { assignments, mut unchanged, revision } => {
            assert_eq!(assignments.iter().map(|a| a.revision).collect::<Vec<_>>(), vec![fourth]);
            unchanged.sort();
            assert_eq!(unchanged, vec![task_arn(1), task_arn(2), task_arn(3)]);
            assert_eq!(revision, fourth);
        }
        other => panic!("expected a resynchronising snapshot, got {other:?}"),
    }
    assert_eq!(served.fake.since(), vec![None, Some(third)]);
    // And the stream goes on.
    let fifth = served.fake.assign(5);
    assert!(
        matches!(next(&mut assignments).await, AssignmentEvent::Changed { ref assignment } if assignment.revision == fifth)
    );
    assert!(assignments.try_next().is_none(), "nothing is told twice");
    let reports = served.fake.recorded.lock().unwrap().reports.len();
    assert_eq!(reports, 1, "the report was recorded once");

    // Logs appended when the connection is lost are not sent again (they may be stored):
    // the agent is told, and ships them again from its own offset.
    let slow = api.put_logs("/ecs/slow", "s", vec![LogEvent { timestamp: 1, message: "once".into() }]);
    tokio::pin!(slow);
    let server_has_it = || served.fake.recorded.lock().unwrap().logs.len() == 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server_has_it() {
        assert!(Instant::now() < deadline, "the server never received the logs");
        if let Ok(r) = timeout(Duration::from_millis(20), &mut slow).await {
            panic!("answered before the cut: {r:?}");
        }
    }
    relay.cut();
    match timeout(Duration::from_secs(10), slow).await.expect("the call ended") {
        Err(HostApiError::Unavailable { reason }) => assert!(reason.contains("lost"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    api.connected(Duration::from_secs(10)).await.expect("connected again");
    api.heartbeat(HOST).await.unwrap();
    assert_eq!(served.fake.recorded.lock().unwrap().logs.len(), 1, "not sent again");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_agent_is_told_what_to_do() {
    let served = serve().await;
    let api = RemoteHostApi::connect(url(served.addr), HOST, "not-the-token");
    match api.connected(Duration::from_secs(10)).await {
        Err(LinkStatus::Refused { reason }) => assert!(reason.contains("flotilla hosts add host-a"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let started = Instant::now();
    match api.heartbeat(HOST).await {
        Err(HostApiError::Unavailable { reason }) => assert!(reason.contains("wrong token"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500), "a refused host fails at once");
    // Another host's valid token is no use either.
    let api = RemoteHostApi::connect(url(served.addr), HOST, "other");
    assert!(matches!(api.connected(Duration::from_secs(10)).await, Err(LinkStatus::Refused { .. })));
}

#[tokio::test]
async fn a_revoked_token_closes_the_open_stream() {
    let served = serve().await;
    let api = RemoteHostApi::connect(url(served.addr), HOST, TOKEN);
    api.connected(Duration::from_secs(10)).await.expect("connected");
    api.heartbeat(HOST).await.unwrap();
    let mut status = api.status();
    served.tokens.revoke(HOST);
    let refused = timeout(Duration::from_secs(5), status.wait_for(|s| matches!(s, LinkStatus::Refused { .. }))).await;
    let reason = match refused.expect("the stream closed at once").unwrap().clone() {
        LinkStatus::Refused { reason } => reason,
        _ => unreachable!(),
    };
    assert!(reason.contains("revoked"), "{reason}");
    assert!(matches!(api.heartbeat(HOST).await, Err(HostApiError::Unavailable { .. })));
}

#[tokio::test]
async fn calls_fail_within_a_second_while_no_server_is_reachable_and_work_again_after() {
    let served = serve().await;
    let mut relay = Relay::start(served.addr).await;
    let api = RemoteHostApi::connect(url(relay.addr), HOST, TOKEN);
    api.connected(Duration::from_secs(10)).await.expect("connected");
    let mut assignments = api.assignments(HOST, None);
    assert!(matches!(next(&mut assignments).await, AssignmentEvent::Snapshot { .. }));

    relay.down();
    let started = Instant::now();
    match api.heartbeat(HOST).await {
        Err(HostApiError::Unavailable { reason }) => assert!(reason.contains("no server reachable"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1500), "Unavailable took {waited:?}");
    // Still down: the next call fails at once.
    let started = Instant::now();
    assert!(api.heartbeat(HOST).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(300));

    relay.up().await;
    api.connected(Duration::from_secs(10)).await.expect("connected again");
    api.heartbeat(HOST).await.unwrap();
    // The watch came back by itself, as a resynchronising snapshot.
    let one = served.fake.assign(1);
    let mut seen = Vec::new();
    while !seen.contains(&one) {
        match next(&mut assignments).await {
            AssignmentEvent::Snapshot { assignments, .. } => seen.extend(assignments.iter().map(|a| a.revision)),
            AssignmentEvent::Changed { assignment } => seen.push(assignment.revision),
            AssignmentEvent::Removed { .. } => {}
        }
    }
    assert_eq!(seen, vec![one], "told once: {seen:?}");
}

#[tokio::test]
async fn a_shut_down_server_closes_its_streams_and_agents_move_to_another() {
    let mut first = serve().await;
    let second = serve().await;
    second.fake.assign(7);
    let api =
        RemoteHostApi::connect(vec![format!("http://{}", first.addr), format!("http://{}", second.addr)], HOST, TOKEN);
    api.connected(Duration::from_secs(10)).await.expect("connected");
    let mut status = api.status();
    assert_eq!(*status.borrow_and_update(), LinkStatus::Connected { server: format!("http://{}", first.addr) });
    let mut assignments = api.assignments(HOST, None);
    assert!(
        matches!(next(&mut assignments).await, AssignmentEvent::Snapshot { ref assignments, .. } if assignments.is_empty())
    );

    first.stop.take().unwrap().send(()).unwrap();
    timeout(Duration::from_secs(10), &mut first.handle)
        .await
        .expect("the server stopped with an agent connected")
        .unwrap();
    let on_second = format!("http://{}", second.addr);
    timeout(Duration::from_secs(10), status.wait_for(|s| *s == LinkStatus::Connected { server: on_second.clone() }))
        .await
        .expect("moved to the second server")
        .unwrap();
    match next(&mut assignments).await {
        AssignmentEvent::Snapshot { assignments, .. } => assert_eq!(assignments[0].task_arn(), task_arn(7)),
        other => panic!("expected the second server's snapshot, got {other:?}"),
    }
    second.fake.recorded.lock().unwrap().heartbeats = 0;
    api.heartbeat(HOST).await.unwrap();
    assert_eq!(second.fake.recorded.lock().unwrap().heartbeats, 1);
}

/// An agent's exec target that echoes stdin as stdout, exits 0 at the end of stdin, refuses
/// container "nope", and says when a session's input was dropped.
struct Echo {
    ended: mpsc::UnboundedSender<()>,
}

impl ExecTarget for Echo {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>> {
        Box::pin(async move {
            if request.container == "nope" {
                return Err(ExecError::ContainerNotFound(request.container));
            }
            let (input, mut input_rx) = mpsc::channel(8);
            let (output_tx, output) = mpsc::channel(8);
            let ended = self.ended.clone();
            tokio::spawn(async move {
                loop {
                    match input_rx.recv().await {
                        Some(ExecInput::Stdin(b)) => {
                            let _ = output_tx.send(ExecOutput::Stdout(b)).await;
                        }
                        Some(ExecInput::CloseStdin) => {
                            let _ = output_tx.send(ExecOutput::Exit(0)).await;
                            return;
                        }
                        Some(ExecInput::Resize(_)) => {}
                        None => {
                            let _ = ended.send(());
                            return;
                        }
                    }
                }
            });
            Ok(ExecChannel { input, output })
        })
    }
}

#[tokio::test]
async fn exec_sessions_run_on_the_agent_and_end_with_their_input() {
    let served = serve().await;
    let api = RemoteHostApi::connect(url(served.addr), HOST, TOKEN);
    let (ended, mut ended_rx) = mpsc::unbounded_channel();
    api.serve_exec(Arc::new(Echo { ended }));
    api.connected(Duration::from_secs(10)).await.expect("connected");
    let target = served.exec.get(HOST).expect("the connected host is an exec target");
    assert!(served.exec.get("host-b").is_none());
    let request = |container: &str| ExecRequest {
        task_arn: task_arn(1),
        container: container.into(),
        command: vec!["sh".into()],
        tty: true,
        size: None,
    };

    let mut ch = target.exec(request("web")).await.unwrap();
    ch.input.send(ExecInput::Stdin(b"hello".to_vec())).await.unwrap();
    ch.input.send(ExecInput::CloseStdin).await.unwrap();
    let mut got = Vec::new();
    while let Some(o) = timeout(Duration::from_secs(10), ch.output.recv()).await.unwrap() {
        got.push(o);
    }
    assert_eq!(got, vec![ExecOutput::Stdout(b"hello".to_vec()), ExecOutput::Exit(0)], "then the stream ends");

    let refused = target.exec(request("nope")).await.unwrap_err();
    assert_eq!(refused, ExecError::ContainerNotFound("nope".into()), "the agent's own error");

    // A session that drops its input ends the command on the agent.
    let ch = target.exec(request("web")).await.unwrap();
    drop(ch);
    timeout(Duration::from_secs(10), ended_rx.recv()).await.expect("the agent's command never ended");

    // So does a lost connection: the host is no longer a target, its sessions end.
    let ch = target.exec(request("web")).await.unwrap();
    drop(api);
    timeout(Duration::from_secs(10), ended_rx.recv()).await.expect("the command outlived its link");
    let ExecChannel { input: _input, mut output } = ch;
    assert_eq!(timeout(Duration::from_secs(10), output.recv()).await.unwrap(), None, "no exit from a lost host");
    eventually("the host to leave the targets", || served.exec.get(HOST).is_none()).await;
}
