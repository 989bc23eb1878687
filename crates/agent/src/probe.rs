//! Kubernetes probes of a pod's containers (`flotillaPod`, written by the EKS scheduler), as
//! the kubelet runs them: from inside the pod (on Fargate the kubelet lives in the pod's
//! microVM), so HTTP and TCP probes connect from the task's network namespace to the task's
//! own address; exec probes run in the container through the sandbox.
//!
//! Verdicts follow the kubelet's worker: a probe's result changes only after
//! `successThreshold` successes or `failureThreshold` failures in a row; readiness starts
//! failed, liveness passed; readiness and liveness wait for the startup probe to pass. The
//! readiness verdict is reported as the container's health (HEALTHY = ready); a failed
//! liveness or startup verdict kills the container, which its pod's `restartPolicy` restarts
//! in place (`restart.rs`); under `Never` the task stops with [`liveness_failure`]'s reason.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_host::{ContainerReport, StopRequest, TaskReport};
use flotilla_sandbox::{ContainerState, ExecSpec, Sandbox, TaskStatus as SandboxStatus};
use flotilla_types::Timestamp;
use flotilla_types::task::{HealthStatus, StopCode, Task};
use flotilla_types::task_definition::{
    ContainerDefinition, ContainerProbe, KeyValuePair, ProbeAction, TaskDefinition, liveness_failure,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the kubelet sends as its user agent (Kubernetes 1.32's).
const USER_AGENT: &str = "kube-probe/1.32";
/// How much of a response is read for its status line.
const HEAD_LIMIT: usize = 4096;

/// One probe's running verdict.
struct Run {
    probe: ContainerProbe,
    initial: bool,
    verdict: bool,
    /// Whether any verdict was reached (readiness is UNKNOWN before).
    decided: bool,
    streak: (bool, u32),
    next_at: Option<Instant>,
}

impl Run {
    fn new(probe: ContainerProbe, initial: bool) -> Run {
        Run { probe, initial, verdict: initial, decided: false, streak: (initial, 0), next_at: None }
    }

    /// As new, for a container started again.
    fn reset(&mut self) {
        *self = Run::new(self.probe.clone(), self.initial);
    }

    /// Records one result; the verdict moves once the streak reaches its threshold.
    fn record(&mut self, passed: bool) {
        self.streak =
            if self.streak.0 == passed && self.streak.1 > 0 { (passed, self.streak.1 + 1) } else { (passed, 1) };
        let threshold = if passed { self.probe.success_threshold } else { self.probe.failure_threshold };
        if self.streak.1 >= threshold.max(1) {
            self.verdict = passed;
            self.decided = true;
        }
    }

    /// Whether the probe is due at `now` for a container that started `since_start` ago; the
    /// first run comes `initialDelaySeconds` after the start.
    fn due(&mut self, now: Instant, since_start: Duration) -> bool {
        let next = *self.next_at.get_or_insert_with(|| {
            now + Duration::from_secs(self.probe.initial_delay_seconds.into()).saturating_sub(since_start)
        });
        if now < next {
            return false;
        }
        self.next_at = Some(now + self.period());
        true
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.max(1).into())
    }
}

/// One container's probes.
struct Container {
    name: String,
    /// The start the probes' state is of (a restarted container starts afresh).
    started_at: Option<u64>,
    startup: Option<Run>,
    readiness: Option<Run>,
    liveness: Option<Run>,
}

impl Container {
    fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|s| s.verdict)
    }

    /// What the container's health says: ready, not (yet) ready, or unknown until a verdict.
    fn health(&self) -> HealthStatus {
        if !self.started() {
            return HealthStatus::Unknown;
        }
        match &self.readiness {
            None => HealthStatus::Healthy,
            Some(r) if r.verdict => HealthStatus::Healthy,
            Some(r) if r.decided => HealthStatus::Unhealthy,
            Some(_) => HealthStatus::Unknown,
        }
    }
}

/// What a pass over the probes found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    /// Each probed container's health now (readiness).
    pub health: Vec<(String, HealthStatus)>,
    /// Containers that failed their liveness (or startup) probe.
    pub failed: Vec<String>,
}

/// The probes of one task's containers.
pub(crate) struct Prober {
    sandbox: Arc<dyn Sandbox>,
    task_id: String,
    netns: PathBuf,
    containers: Vec<Container>,
}

impl Prober {
    /// `None` when none of the task definition's `containers` has probes.
    pub fn new(sandbox: Arc<dyn Sandbox>, task_id: &str, containers: &[ContainerDefinition]) -> Option<Prober> {
        let containers: Vec<Container> = containers
            .iter()
            .filter_map(|d| {
                let p = d.pod.clone()?;
                Some(Container {
                    name: d.name.clone().unwrap_or_default(),
                    started_at: None,
                    startup: p.startup.map(|p| Run::new(p, false)),
                    readiness: p.readiness.map(|p| Run::new(p, false)),
                    liveness: p.liveness.map(|p| Run::new(p, true)),
                })
            })
            .collect();
        if containers.is_empty() {
            return None;
        }
        let netns = sandbox.network_namespace(task_id);
        Some(Prober { sandbox, task_id: task_id.to_owned(), netns, containers })
    }

    /// When the next probe is due (a pass before then does nothing); probes of containers
    /// that do not run yet are scheduled by the pass that first sees them running.
    pub fn next_due(&self) -> Option<Instant> {
        let runs = self.containers.iter().flat_map(|c| [&c.startup, &c.readiness, &c.liveness]);
        runs.flatten().filter_map(|r| r.next_at).min()
    }

    /// Runs every probe that is due for the running containers of `status`; `address` is the
    /// task's own (the target of HTTP and TCP probes without a host).
    pub async fn pass(&mut self, status: &SandboxStatus, address: Option<Ipv4Addr>) -> Outcome {
        let mut outcome = Outcome::default();
        let now = Instant::now();
        for i in 0..self.containers.len() {
            let running = status.container(&self.containers[i].name).filter(|c| c.state == ContainerState::Running);
            let Some(c) = running else {
                // Nothing to probe until it runs (and nothing due meanwhile); one that ran and
                // waits to restart is not ready.
                let ctr = &mut self.containers[i];
                for run in [&mut ctr.startup, &mut ctr.readiness, &mut ctr.liveness].into_iter().flatten() {
                    run.next_at = None;
                }
                if ctr.started_at.is_some() {
                    outcome.health.push((ctr.name.clone(), HealthStatus::Unknown));
                }
                continue;
            };
            let since_start = c
                .started_at
                .map(|s| Duration::from_millis((Timestamp::now().0 as u64).saturating_sub(s)))
                .unwrap_or_default();
            let name = self.containers[i].name.clone();
            let ctr = &mut self.containers[i];
            if ctr.started_at != c.started_at {
                ctr.started_at = c.started_at;
                for run in [&mut ctr.startup, &mut ctr.readiness, &mut ctr.liveness].into_iter().flatten() {
                    run.reset();
                }
            }
            // Readiness and liveness wait for the startup probe (their delays still count
            // from the container's start, as the kubelet's do).
            for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                if (kind == Kind::Startup) == self.containers[i].started() {
                    continue;
                }
                let Some(probe) = self.due(i, kind, now, since_start) else { continue };
                let passed = self.run(&name, &probe, address).await;
                let failed = self.slot(i, kind).is_some_and(|r| {
                    r.record(passed);
                    r.decided && !r.verdict
                });
                if failed && kind != Kind::Readiness && !outcome.failed.contains(&name) {
                    outcome.failed.push(name.clone());
                }
            }
            outcome.health.push((name, self.containers[i].health()));
        }
        outcome
    }

    fn slot(&mut self, i: usize, kind: Kind) -> Option<&mut Run> {
        let c = &mut self.containers[i];
        match kind {
            Kind::Startup => c.startup.as_mut(),
            Kind::Readiness => c.readiness.as_mut(),
            Kind::Liveness => c.liveness.as_mut(),
        }
    }

    /// The probe of `kind` when it is due.
    fn due(&mut self, i: usize, kind: Kind, now: Instant, since_start: Duration) -> Option<ContainerProbe> {
        let run = self.slot(i, kind)?;
        run.due(now, since_start).then(|| run.probe.clone())
    }

    async fn run(&self, container: &str, probe: &ContainerProbe, address: Option<Ipv4Addr>) -> bool {
        let timeout = Duration::from_secs(probe.timeout_seconds.max(1).into());
        let outcome = match &probe.action {
            ProbeAction::Exec { command } => {
                let spec = ExecSpec { argv: command.clone(), timeout_ms: timeout.as_millis() as u64 };
                return match self.sandbox.exec(&self.task_id, container, spec).await {
                    Ok(result) => result.exit_code == Some(0) && !result.timed_out,
                    Err(_) => false,
                };
            }
            ProbeAction::TcpSocket { host, port } => {
                let Some(addr) = target(host.as_deref(), *port, address) else { return false };
                tokio::time::timeout(timeout, connect(&self.netns, addr)).await.map(|r| r.map(|_| ()))
            }
            ProbeAction::HttpGet { host, port, path, https, headers } => {
                let Some(addr) = target(host.as_deref(), *port, address) else { return false };
                tokio::time::timeout(timeout, http_get(&self.netns, addr, path, *https, headers))
                    .await
                    .map(|r| r.and_then(passing))
            }
        };
        matches!(outcome, Ok(Ok(())))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Readiness,
    Liveness,
}

/// Puts what a pass found into the supervisor's report: health that changed from the record;
/// a container that failed its liveness probe is killed, to be restarted in place when its
/// pod's policy says so (`restart.rs`), else the task stops with [`liveness_failure`].
pub(crate) async fn apply(
    outcome: Outcome,
    sandbox: &dyn Sandbox,
    task: &Task,
    definition: &TaskDefinition,
    report: &mut TaskReport,
) {
    for (name, health) in outcome.health {
        if task.container(&name).and_then(|c| c.health_status) == Some(health) {
            continue;
        }
        match report.containers.iter_mut().find(|c| c.name == name) {
            Some(c) => c.health = Some(health),
            None => report.containers.push(ContainerReport { health: Some(health), ..ContainerReport::new(name) }),
        }
    }
    for name in outcome.failed {
        // SIGKILL gives 137, which OnFailure restarts too.
        if crate::restart::restarts(definition, &name, Some(137)) {
            tracing::info!(task = task.id(), container = %name, "liveness probe failed; killing it to restart");
            let _ = sandbox.signal(task.id(), &name, libc::SIGKILL).await;
        } else if report.stop.is_none() {
            report.stop =
                Some(StopRequest { code: StopCode::EssentialContainerExited, reason: liveness_failure(&name) });
        }
    }
}

/// The task's own address (its interface's), once it has one.
pub(crate) fn task_address(task: &Task) -> Option<Ipv4Addr> {
    task.eni_attachment()?
        .details
        .iter()
        .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
        .and_then(|d| d.value.as_deref()?.parse().ok())
}

/// A probe's target: its host when that is an IPv4 address, else the task's own address.
/// (The kubelet resolves a host name; names are not resolved here and such a probe fails.)
fn target(host: Option<&str>, port: u16, address: Option<Ipv4Addr>) -> Option<SocketAddrV4> {
    let ip = match host {
        Some(h) => match h.parse::<IpAddr>().ok()? {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => return None,
        },
        None => address?,
    };
    (port != 0).then_some(SocketAddrV4::new(ip, port))
}

/// A TCP connection to `addr` from inside the network namespace at `netns`: the socket is
/// made on a thread that joined the namespace (it keeps it), the connect runs on tokio.
pub async fn connect(netns: &Path, addr: SocketAddrV4) -> io::Result<TcpStream> {
    let netns = netns.to_path_buf();
    let socket = tokio::task::spawn_blocking(move || {
        flotilla_net::netns::run_in(&netns, || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            socket.set_cloexec(true)?;
            Ok::<_, io::Error>(std::net::TcpStream::from(socket))
        })
    })
    .await
    .map_err(io::Error::other)???;
    tokio::net::TcpSocket::from_std_stream(socket).connect(SocketAddr::V4(addr)).await
}

/// The status code of a GET of `path` from `addr` (TLS without verifying the certificate
/// when `https`, as the kubelet does). Redirects are not followed: a 3xx passes.
pub async fn http_get(
    netns: &Path,
    addr: SocketAddrV4,
    path: &str,
    https: bool,
    headers: &[KeyValuePair],
) -> io::Result<u16> {
    let stream = connect(netns, addr).await?;
    let request = request(addr, path, headers);
    if https {
        let tls = flotilla_lb::tls_connect(stream, addr).await?;
        exchange(tls, &request).await
    } else {
        exchange(stream, &request).await
    }
}

fn passing(code: u16) -> io::Result<()> {
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(io::Error::other(format!("HTTP probe failed with statuscode: {code}")))
    }
}

/// The kubelet's request: its Host, User-Agent and Accept unless the probe's headers set them.
fn request(addr: SocketAddrV4, path: &str, headers: &[KeyValuePair]) -> String {
    let given = |name: &str| headers.iter().any(|h| h.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)));
    let mut text = format!("GET {path} HTTP/1.1\r\n");
    if !given("host") {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    if !given("user-agent") {
        text.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !given("accept") {
        text.push_str("Accept: */*\r\n");
    }
    for h in headers {
        let (Some(name), value) = (h.name.as_deref(), h.value.as_deref().unwrap_or_default()) else { continue };
        // A header may not break the request's framing.
        if !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']) {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    text.push_str("Connection: close\r\n\r\n");
    text
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> io::Result<u16> {
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < HEAD_LIMIT {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))
}

/// `HTTP/1.1 200 OK` → 200.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests;
