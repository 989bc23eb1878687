//! Health checks: one loop per target, from the load balancer, with its group's current
//! settings (re-read each round, so a ModifyTargetGroup applies from the next check).

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_host::lb::{HealthProtocol, TargetObservation};
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Shared;
use crate::groups::{Group, Target, Verdict};
use crate::tls;
use crate::upstream::connect;

/// Why one check failed, as ELB words it.
struct Failure {
    reason: &'static str,
    description: String,
}

impl Failure {
    fn timeout() -> Failure {
        Failure { reason: "Target.Timeout", description: "Request timed out".into() }
    }

    fn failed() -> Failure {
        Failure { reason: "Target.FailedHealthChecks", description: "Health checks failed".into() }
    }
}

/// Checks `target` until it leaves its group: at once, then every interval.
pub(crate) async fn run(group: Arc<Group>, target: Arc<Target>, shared: Arc<Shared>) {
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let settings = group.settings();
        let health = &settings.health;
        let started = Instant::now();
        // Draining targets take no new work, so their health no longer matters; disabled
        // checks leave every target counted healthy.
        if health.enabled && !target.is_draining() {
            let timeout = Duration::from_secs(health.timeout_s.max(1).into());
            let port = health.port.unwrap_or(target.addr.port());
            let addr = SocketAddrV4::new(*target.addr.ip(), port);
            let check = async {
                match tokio::time::timeout(timeout, check(&shared, health.protocol, addr, &health.path)).await {
                    Ok(Ok(None)) => Ok(()),
                    Ok(Ok(Some(code))) if matcher(&health.matcher, code) => Ok(()),
                    Ok(Ok(Some(code))) => Err(Failure {
                        reason: "Target.ResponseCodeMismatch",
                        description: format!("Health checks failed with these codes: [{code}]"),
                    }),
                    Ok(Err(failure)) => Err(failure),
                    Err(_) => Err(Failure::timeout()),
                }
            };
            let outcome = tokio::select! {
                outcome = check => outcome,
                () = target.removed.cancelled() => return,
            };
            match outcome {
                Ok(()) => {
                    (passes, failures) = (passes.saturating_add(1), 0);
                    if passes >= health.healthy_threshold && target.verdict() != Verdict::Healthy {
                        target.set_verdict(Verdict::Healthy, TargetObservation::Healthy);
                    }
                }
                Err(failure) => {
                    (passes, failures) = (0, failures.saturating_add(1));
                    if failures >= health.unhealthy_threshold && target.verdict() != Verdict::Unhealthy {
                        target.set_verdict(
                            Verdict::Unhealthy,
                            TargetObservation::Unhealthy {
                                reason: failure.reason.into(),
                                description: failure.description,
                            },
                        );
                    }
                }
            }
        }
        let interval = Duration::from_secs(health.interval_s.max(1).into());
        tokio::select! {
            () = tokio::time::sleep(interval.saturating_sub(started.elapsed())) => {}
            () = target.removed.cancelled() => return,
        }
    }
}

/// One check: the status of an HTTP(S) check, nothing for TCP (which only connects).
async fn check(
    shared: &Shared,
    protocol: HealthProtocol,
    addr: SocketAddrV4,
    path: &str,
) -> Result<Option<u16>, Failure> {
    let stream = connect(shared.sockets.as_ref(), addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => Failure::timeout(),
        _ => Failure::failed(),
    })?;
    match protocol {
        HealthProtocol::Tcp => Ok(None),
        HealthProtocol::Http => get(stream, addr, path).await.map(Some),
        HealthProtocol::Https => {
            let connector = tokio_rustls::TlsConnector::from(tls::insecure_client());
            let name = rustls::pki_types::ServerName::IpAddress((*addr.ip()).into());
            let stream = connector.connect(name, stream).await.map_err(|_| Failure::failed())?;
            get(stream, addr, path).await.map(Some)
        }
    }
}

async fn get<S>(stream: S, addr: SocketAddrV4, path: &str) -> Result<u16, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| Failure::failed())?;
    tokio::spawn(connection);
    let request = Request::get(if path.is_empty() { "/" } else { path })
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .body(Empty::<Bytes>::new())
        .map_err(|_| Failure::failed())?;
    let response = sender.send_request(request).await.map_err(|_| Failure::failed())?;
    Ok(response.status().as_u16())
}

/// ELB's matcher: codes and ranges separated by commas (`200`, `200,202`, `200-299`).
pub(crate) fn matcher(spec: &str, code: u16) -> bool {
    spec.split(',').map(str::trim).any(|part| match part.split_once('-') {
        Some((low, high)) => {
            matches!((low.trim().parse::<u16>(), high.trim().parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&code))
        }
        None => part.parse::<u16>() == Ok(code),
    })
}

#[cfg(test)]
mod tests {
    use super::matcher;

    #[test]
    fn matcher_takes_lists_and_ranges() {
        assert!(matcher("200", 200));
        assert!(!matcher("200", 204));
        assert!(matcher("200,202", 202));
        assert!(matcher("200-299", 250));
        assert!(!matcher("200-299", 300));
        assert!(matcher("0-99, 301", 301));
    }
}
