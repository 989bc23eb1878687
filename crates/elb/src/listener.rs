//! Listeners: CreateListener, ModifyListener, DescribeListeners, DeleteListener. Application
//! load balancers listen with HTTP and HTTPS, network ones with TCP and TLS; HTTPS and TLS
//! serve an ACM certificate. An internet-facing listener also holds its port on the host's
//! load-balancer address, so a port another listener or program holds is refused before
//! anything is recorded.

use std::collections::BTreeMap;

use flotilla_host::lb::{LbKind, LbScheme, ListenerProtocol};
use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Tag;
use flotilla_types::page::Page;

use crate::action::{ActionInput, groups_of, parse_actions};
use crate::record::{LB_PREFIX, Listener, LoadBalancer, PortClaim, lb_key, port_key};
use crate::tags::check_tags;
use crate::target_group::port;
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode, new_id, paginate};

/// How long a port held on the host is waited for before it is refused: the data plane's
/// snapshots follow changes within a second.
const PORT_RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// The security policy HTTPS and TLS listeners get when none is named, as on ELB.
pub const DEFAULT_SSL_POLICY: &str = "ELBSecurityPolicy-2016-08";

#[derive(Clone, Debug, Default)]
pub struct ListenerInput {
    pub load_balancer_arn: String,
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub ssl_policy: Option<String>,
    /// ACM certificate ARNs (HTTPS and TLS: exactly one).
    pub certificates: Vec<String>,
    pub default_actions: Vec<ActionInput>,
    pub alpn_policy: Vec<String>,
    pub tags: Vec<Tag>,
}

/// ModifyListener: `None` keeps what the listener has.
#[derive(Clone, Debug, Default)]
pub struct ListenerChange {
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub ssl_policy: Option<String>,
    pub certificates: Option<Vec<String>>,
    pub default_actions: Option<Vec<ActionInput>>,
    pub alpn_policy: Option<Vec<String>>,
}

pub fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::Tcp => "TCP",
        ListenerProtocol::Tls => "TLS",
    }
}

fn protocol(kind: LbKind, word: &str) -> Result<ListenerProtocol> {
    match (kind, word) {
        (LbKind::Application, "HTTP") => Ok(ListenerProtocol::Http),
        (LbKind::Application, "HTTPS") => Ok(ListenerProtocol::Https),
        (LbKind::Network, "TCP") => Ok(ListenerProtocol::Tcp),
        (LbKind::Network, "TLS") => Ok(ListenerProtocol::Tls),
        (LbKind::Application, other) => {
            Err(ElbError::Validation(format!("Listener protocol '{other}' must be one of 'HTTPS, HTTP'")))
        }
        (LbKind::Network, other) => {
            Err(ElbError::Validation(format!("Listener protocol '{other}' must be one of 'TCP, TLS'")))
        }
    }
}

fn secure(p: ListenerProtocol) -> bool {
    matches!(p, ListenerProtocol::Https | ListenerProtocol::Tls)
}

fn check_ssl_policy(policy: &str) -> Result<()> {
    if !policy.starts_with("ELBSecurityPolicy-") {
        return Err(ElbError::Validation(format!("SSL policy '{policy}' not found")));
    }
    Ok(())
}

/// What a listener serves, settled from a request: protocol, port, certificates, policy.
struct Settled {
    protocol: ListenerProtocol,
    port: u16,
    certificates: Vec<String>,
    ssl_policy: Option<String>,
    alpn_policy: Vec<String>,
}

impl Elb {
    /// Checks certificates against ACM and the protocol's needs.
    async fn settle(
        &self,
        protocol: ListenerProtocol,
        port: u16,
        certificates: Vec<String>,
        ssl_policy: Option<String>,
        alpn_policy: Vec<String>,
    ) -> Result<Settled> {
        if secure(protocol) {
            match certificates.as_slice() {
                [] => {
                    return Err(ElbError::Validation(format!(
                        "A certificate must be specified for {} listeners",
                        protocol_name(protocol)
                    )));
                }
                [_] => {}
                _ => return Err(ElbError::Validation("Exactly one certificate must be specified".into())),
            }
            for arn in &certificates {
                if self.acm.certificate_pem(arn).await.is_err() {
                    return Err(ElbError::CertificateNotFound { arn: arn.clone() });
                }
            }
        } else if !certificates.is_empty() || ssl_policy.is_some() {
            return Err(ElbError::Validation(format!(
                "Certificates and an SSL policy can be specified only for HTTPS and TLS listeners, not {}",
                protocol_name(protocol)
            )));
        }
        if !alpn_policy.is_empty() && protocol != ListenerProtocol::Tls {
            return Err(ElbError::Validation("An ALPN policy can be specified only for TLS listeners".into()));
        }
        let ssl_policy = match ssl_policy {
            Some(p) => {
                check_ssl_policy(&p)?;
                Some(p)
            }
            None => secure(protocol).then(|| DEFAULT_SSL_POLICY.to_owned()),
        };
        Ok(Settled { protocol, port, certificates, ssl_policy, alpn_policy })
    }

    /// Adds to `txn` the claim of `port` on the host for `listener_arn` of an internet-facing
    /// `lb`: refused while another listener holds it or the host cannot listen on it.
    async fn claim_port(&self, txn: Txn, lb: &LoadBalancer, listener_arn: &str, port: u16) -> Result<Txn> {
        if lb.scheme != LbScheme::InternetFacing {
            return Ok(txn);
        }
        let key = port_key(port);
        match self.get::<PortClaim>(&key).await? {
            Some((claim, _)) if claim.listener_arn == listener_arn => Ok(txn),
            Some((claim, _)) => Err(ElbError::Validation(format!(
                "Port {port} is already taken on the load balancer address by listener '{}'",
                claim.listener_arn
            ))),
            None => {
                if let Some(probe) = &self.probe {
                    // A listener deleted a moment ago may still hold the port in the data
                    // plane until its next snapshot arrives: give it that long to let go.
                    let deadline = tokio::time::Instant::now() + PORT_RELEASE;
                    while let Err(reason) = probe(port) {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(ElbError::Validation(format!(
                                "Port {port} is already taken on the load balancer address: {reason}"
                            )));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
                let claim = PortClaim { listener_arn: listener_arn.to_owned(), load_balancer_arn: lb.arn.clone() };
                Ok(txn.when(Compare::absent(&key)).then(Op::put(&key, encode(&claim))))
            }
        }
    }

    pub async fn create_listener(&self, input: ListenerInput) -> Result<Listener> {
        check_tags(&input.tags)?;
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.lb_record(&input.load_balancer_arn).await?;
            let protocol = protocol(
                lb.kind,
                input.protocol.as_deref().ok_or_else(|| ElbError::Validation("A protocol must be specified".into()))?,
            )?;
            let port =
                port(input.port.ok_or_else(|| ElbError::Validation("A port must be specified".into()))?, "Port")?;
            let action = parse_actions(lb.kind, &input.default_actions)?;
            let settled = self
                .settle(protocol, port, input.certificates.clone(), input.ssl_policy.clone(), input.alpn_policy.clone())
                .await?;
            if let Some(existing) = lb.listeners.iter().find(|l| l.port == port) {
                // ELB answers a repeated request with the listener it made.
                let same = existing.protocol == protocol
                    && existing.certificates == settled.certificates
                    && existing.default_action == action;
                return if same {
                    Ok(existing.clone())
                } else {
                    Err(ElbError::DuplicateListener { load_balancer: lb.arn.clone(), port })
                };
            }
            let id = new_id();
            let kind = lb.kind_word();
            let listener = Listener {
                arn: self.identity.listener(kind, &lb.name, &lb.id, &id),
                default_rule_arn: self.identity.listener_rule(kind, &lb.name, &lb.id, &id, &new_id()),
                id,
                load_balancer_arn: lb.arn.clone(),
                port,
                protocol: settled.protocol,
                certificates: settled.certificates,
                ssl_policy: settled.ssl_policy,
                alpn_policy: settled.alpn_policy,
                default_action: action,
                rules: Vec::new(),
                tags: input.tags.clone(),
            };
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            txn = self.claim_port(txn, &lb, &listener.arn, port).await?;
            let changes = BTreeMap::from([(listener.arn.clone(), groups_of(&listener.default_action))]);
            txn = self.forward_changes(txn, &lb, &changes).await?;
            lb.listeners.push(listener.clone());
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(listener);
            }
        }
        Err(busy("The load balancer"))
    }

    /// The listener `arn` names, with its load balancer.
    pub async fn listener(&self, arn: &str) -> Result<(Listener, LoadBalancer)> {
        let (lb, _) = self.listener_lb(arn).await?;
        let listener = lb.listener(arn).cloned().ok_or_else(|| ElbError::ListenerNotFound { arn: arn.to_owned() })?;
        Ok((listener, lb))
    }

    pub async fn modify_listener(&self, arn: &str, change: &ListenerChange) -> Result<Listener> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.listener_lb(arn).await?;
            let current =
                lb.listener(arn).cloned().ok_or_else(|| ElbError::ListenerNotFound { arn: arn.to_owned() })?;
            let protocol = match change.protocol.as_deref() {
                Some(p) => protocol(lb.kind, p)?,
                None => current.protocol,
            };
            let port = match change.port {
                Some(p) => port(p, "Port")?,
                None => current.port,
            };
            // Moving to a plain protocol drops the certificate; staying secure keeps it.
            let keep_tls = secure(protocol) && secure(current.protocol);
            let certificates = change
                .certificates
                .clone()
                .unwrap_or_else(|| if keep_tls { current.certificates.clone() } else { Vec::new() });
            let ssl_policy =
                change.ssl_policy.clone().or_else(|| if keep_tls { current.ssl_policy.clone() } else { None });
            let alpn = change.alpn_policy.clone().unwrap_or_else(|| {
                if protocol == ListenerProtocol::Tls { current.alpn_policy.clone() } else { Vec::new() }
            });
            let settled = self.settle(protocol, port, certificates, ssl_policy, alpn).await?;
            let action = match &change.default_actions {
                Some(actions) => parse_actions(lb.kind, actions)?,
                None => current.default_action.clone(),
            };
            if port != current.port && lb.listeners.iter().any(|l| l.port == port) {
                return Err(ElbError::DuplicateListener { load_balancer: lb.arn.clone(), port });
            }
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            if port != current.port {
                txn = self.claim_port(txn, &lb, arn, port).await?;
                txn = self.release_ports(txn, &lb, vec![current.port]).await?;
            }
            let changes = BTreeMap::from([(arn.to_owned(), groups_of(&action))]);
            txn = self.forward_changes(txn, &lb, &changes).await?;
            let listener = lb.listener_mut(arn).expect("found above");
            listener.protocol = settled.protocol;
            listener.port = settled.port;
            listener.certificates = settled.certificates;
            listener.ssl_policy = settled.ssl_policy;
            listener.alpn_policy = settled.alpn_policy;
            listener.default_action = action;
            let updated = listener.clone();
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(updated);
            }
        }
        Err(busy("The load balancer"))
    }

    /// DeleteListener: its rules go with it, and its target groups are free again.
    pub async fn delete_listener(&self, arn: &str) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut lb, rev) = self.listener_lb(arn).await?;
            let listener =
                lb.listener(arn).cloned().ok_or_else(|| ElbError::ListenerNotFound { arn: arn.to_owned() })?;
            let key = lb_key(&lb.name);
            let mut txn = Txn::new().when(Compare::revision(&key, rev));
            let changes: BTreeMap<String, Vec<String>> = std::iter::once(arn.to_owned())
                .chain(listener.rules.iter().map(|r| r.arn.clone()))
                .map(|f| (f, Vec::new()))
                .collect();
            txn = self.forward_changes(txn, &lb, &changes).await?;
            txn = self.release_ports(txn, &lb, vec![listener.port]).await?;
            lb.listeners.retain(|l| l.arn != arn);
            txn = txn.then(Op::put(&key, encode(&lb)));
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The load balancer"))
    }

    /// DescribeListeners: a load balancer's, or those named (each must exist); by load
    /// balancer and port.
    pub async fn describe_listeners(
        &self,
        load_balancer_arn: Option<&str>,
        arns: &[String],
        page_size: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<Listener>> {
        let listeners = match (load_balancer_arn, arns.is_empty()) {
            (Some(lb), true) => self.load_balancer(lb).await?.listeners,
            (None, false) => {
                let mut out: Vec<Listener> = Vec::new();
                for arn in arns {
                    let (l, _) = self.listener(arn).await?;
                    if !out.iter().any(|o| o.arn == l.arn) {
                        out.push(l);
                    }
                }
                out
            }
            _ => {
                return Err(ElbError::Validation(
                    "You must specify either a load balancer ARN or listener ARNs, not both".into(),
                ));
            }
        };
        paginate(listeners, |l| format!("{}/{:05}", l.load_balancer_arn, l.port), page_size, marker)
    }
}

/// ACM's `InUseBy` and its DeleteCertificate check: the load balancers whose listeners serve a
/// certificate.
impl flotilla_acm::CertificateUsers for Elb {
    fn users<'a>(&'a self, certificate_arn: &'a str) -> flotilla_acm::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let lbs = self.list::<LoadBalancer>(LB_PREFIX).await.map_err(|e| e.to_string())?;
            Ok(lbs
                .into_iter()
                .filter(|(lb, _)| lb.listeners.iter().any(|l| l.certificates.iter().any(|c| c == certificate_arn)))
                .map(|(lb, _)| lb.arn)
                .collect())
        })
    }
}
