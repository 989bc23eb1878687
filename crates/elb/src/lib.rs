//! Elastic Load Balancing v2, the control plane: load balancers, listeners, rules, target
//! groups and their targets, kept under `elbv2/` in the store. The data plane (`flotilla-lb`,
//! run by each agent) gets them as one [`LbSnapshot`] and reports what it sees of targets
//! back ([`Elb::record_targets`]).
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api` maps [`ElbError`] to
//! ELB's codes.

use std::sync::Arc;

use flotilla_acm::Acm;
use flotilla_host::lb::{LbSnapshot, TargetReport};
use flotilla_store::Store;
use flotilla_types::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ElbError {
    #[error("{0}")]
    Validation(String),
}

/// Says whether the host can listen on a port of its load-balancer address (a port another
/// program holds is refused before a listener is recorded).
pub type PortProbe = Arc<dyn Fn(u16) -> Result<(), String> + Send + Sync>;

pub struct Elb {
    #[allow(dead_code)]
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    identity: Identity,
    #[allow(dead_code)]
    acm: Arc<Acm>,
}

impl Elb {
    pub fn new(store: Arc<dyn Store>, identity: Identity, acm: Arc<Acm>) -> Elb {
        Elb { store, identity, acm }
    }

    /// Everything the data plane serves.
    pub async fn snapshot(&self) -> Result<LbSnapshot, ElbError> {
        Ok(LbSnapshot::default())
    }

    /// Records the data plane's observations.
    pub async fn record_targets(&self, _reports: Vec<TargetReport>) -> Result<(), ElbError> {
        Ok(())
    }
}
