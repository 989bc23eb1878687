//! A container's Kubernetes probes and restart policy as the agent runs them: Kubernetes' defaults and bounds
//! (not ECS's health-check clamps), named ports resolved against the container's ports.

use flotilla_types::task_definition::{ContainerProbe, KeyValuePair, PodContainer, ProbeAction, RestartPolicy};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The container's probes, `None` when it has none the agent can run (gRPC probes are not
/// run: a container with only those is ready once it runs).
pub fn probes(c: &Container) -> Option<PodContainer> {
    let probes = PodContainer {
        readiness: c.readiness_probe.as_ref().and_then(|p| probe(c, p, true)),
        liveness: c.liveness_probe.as_ref().and_then(|p| probe(c, p, false)),
        startup: c.startup_probe.as_ref().and_then(|p| probe(c, p, false)),
        restart_policy: None,
    };
    (probes != PodContainer::default()).then_some(probes)
}

/// An app container's probes and the pod's `restartPolicy` (Kubernetes' default: Always).
pub fn pod_container(c: &Container, restart_policy: Option<&str>) -> PodContainer {
    let restart_policy = match restart_policy {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    PodContainer { restart_policy: Some(restart_policy), ..probes(c).unwrap_or_default() }
}

/// One probe; `readiness` alone may ask for more than one success (Kubernetes requires 1 of
/// the others).
fn probe(c: &Container, p: &Probe, readiness: bool) -> Option<ContainerProbe> {
    let action = if let Some(exec) = &p.exec {
        ProbeAction::Exec { command: exec.command.clone().filter(|c| !c.is_empty())? }
    } else if let Some(get) = &p.http_get {
        let path = get.path.clone().unwrap_or_default();
        ProbeAction::HttpGet {
            host: get.host.clone().filter(|h| !h.is_empty()),
            port: port(c, &get.port),
            path: if path.starts_with('/') { path } else { format!("/{path}") },
            https: get.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
            headers: get
                .http_headers
                .iter()
                .flatten()
                .map(|h| KeyValuePair { name: Some(h.name.clone()), value: Some(h.value.clone()) })
                .collect(),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        ProbeAction::TcpSocket { host: tcp.host.clone().filter(|h| !h.is_empty()), port: port(c, &tcp.port) }
    } else {
        return None;
    };
    let at_least =
        |v: Option<i32>, min: u32, default: u32| v.map_or(default, |v| u32::try_from(v).unwrap_or(0).max(min));
    Some(ContainerProbe {
        action,
        initial_delay_seconds: at_least(p.initial_delay_seconds, 0, 0),
        period_seconds: at_least(p.period_seconds, 1, 10),
        timeout_seconds: at_least(p.timeout_seconds, 1, 1),
        success_threshold: if readiness { at_least(p.success_threshold, 1, 1) } else { 1 },
        failure_threshold: at_least(p.failure_threshold, 1, 3),
    })
}

/// A port by number, or by the name of one of the container's ports; 0 (a probe that always
/// fails, as the kubelet's does) when no port has that name.
fn port(c: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).unwrap_or(0),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok())
            .unwrap_or(0),
    }
}
