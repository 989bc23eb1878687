//! Service discovery: AWS Cloud Map's namespaces, services and instances, kept in the state
//! store under `servicediscovery/`, and the DNS server that answers for them inside each VPC.
//!
//! Requests are methods on [`Discovery`]; each is one API request's worth of work and commits
//! with compare-and-write, retrying only its own conflicts. Creating and deleting a namespace and
//! (de)registering an instance are *operations*, as in Cloud Map: the request records the
//! operation (SUBMITTED) and returns its id, and a background worker moves it to PENDING and then
//! applies it and marks it SUCCESS or FAIL in one transaction. The worker re-reads unfinished
//! operations on start, so an operation interrupted by a crash completes after the restart.
//!
//! [`dns::DnsServer`] serves the namespaces of one VPC per listening address, from a cache it
//! rebuilds whenever the store changes under `servicediscovery/`.
//!
//! **Architecture Invariant:** this crate knows no HTTP and no AWS wire format; `api` maps its
//! types to Cloud Map's shapes and [`DiscoveryError`] to AWS error codes. The DNS server is the
//! only part that touches the network.

pub mod dns;
mod error;
mod instance;
mod namespace;
mod operation;
mod record;
mod service;

use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{KeyValue, Store};
use flotilla_types::Identity;

pub use error::{DiscoveryError, Result};
pub use instance::{Discovered, HealthFilter};
pub use namespace::{NameMatch, NamespaceQuery, NewPrivateDnsNamespace};
pub use operation::OperationQuery;
pub use record::{
    ATTR_ALIAS, ATTR_CNAME, ATTR_IPV4, ATTR_IPV6, ATTR_PORT, DnsConfig, DnsRecord, HealthStatus, Instance, Namespace,
    NamespaceType, Operation, OperationStatus, OperationType, PREFIX, RecordType, RoutingPolicy, Service, ServiceType,
    Tag,
};
pub use service::NewService;

/// How often the operations worker looks for work it was not told about (operations written by
/// another process, or left unfinished by a crash).
const OPERATIONS_POLL: Duration = Duration::from_secs(1);

/// How many times a request re-reads and retries after losing a compare-and-write race.
const CONFLICT_RETRIES: usize = 20;

pub use flotilla_types::page::Page;

/// Cloud Map's page size: every List operation allows 1 to 100 and defaults to 100.
const MAX_RESULTS: usize = 100;

/// Pages through `items` by `key` (ids, unique) with [`flotilla_types::page`].
pub(crate) fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    max: Option<usize>,
    token: Option<&str>,
) -> Result<Page<T>> {
    use flotilla_types::page::{self, Order, PageError};
    let refused = |e| match e {
        PageError::Size { got, max } => {
            DiscoveryError::InvalidInput(format!("MaxResults must be between 1 and {max}, got {got}."))
        }
        PageError::Token => DiscoveryError::InvalidInput(
            "The NextToken is not one this server issued: pass the one from the previous response unchanged.".into(),
        ),
    };
    let size =
        page::page_size(max.map(|n| n.min(i64::MAX as usize) as i64), MAX_RESULTS, MAX_RESULTS).map_err(refused)?;
    let keyed = items.into_iter().map(|i| (key(&i).to_owned(), i)).collect();
    page::paginate(keyed, Order::Ascending, size, token).map_err(refused)
}

/// What a tagging ARN names.
enum Tagged<'a> {
    Namespace(&'a str),
    Service(&'a str),
}

/// Cloud Map over the state store.
pub struct Discovery {
    store: Arc<dyn Store>,
    /// Builds namespace and service ARNs.
    identity: Identity,
    /// Wakes the operations worker when a request has queued an operation.
    work: Arc<tokio::sync::Notify>,
}

impl Discovery {
    /// Builds the service and starts its operations worker on the current tokio runtime; the
    /// worker stops once the returned handle and its clones are dropped.
    pub fn start(store: Arc<dyn Store>, region: impl Into<String>, account: impl Into<String>) -> Arc<Discovery> {
        let discovery = Discovery::new(store, region, account);
        tokio::spawn(discovery.run_operations());
        discovery
    }

    /// Builds the service without an operations worker: operations it queues wait for one
    /// ([`Discovery::run_operations`], here or in another process sharing the store).
    pub fn new(store: Arc<dyn Store>, region: impl Into<String>, account: impl Into<String>) -> Arc<Discovery> {
        Arc::new(Discovery {
            store,
            identity: Identity::new(region, account),
            work: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The operations worker: runs queued operations as they come, and every second anyway,
    /// until this [`Discovery`] is dropped.
    pub fn run_operations(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        operation::run_worker(Arc::downgrade(self), self.work.clone())
    }

    pub fn region(&self) -> &str {
        &self.identity.region
    }

    pub fn account(&self) -> &str {
        &self.identity.account
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.store.get(key).await?)
    }

    /// The tags of the namespace or service that `arn` names.
    pub async fn tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let found = match self.tagged(arn)? {
            Tagged::Namespace(id) => self.namespace(id).await.map(|ns| ns.tags),
            Tagged::Service(id) => self.service(id).await.map(|s| s.tags),
        };
        found.map_err(|e| match e {
            DiscoveryError::NamespaceNotFound { .. } | DiscoveryError::ServiceNotFound { .. } => {
                DiscoveryError::ResourceNotFound { arn: arn.to_owned() }
            }
            other => other,
        })
    }

    /// Adds `tags` to the namespace or service that `arn` names, replacing values of keys it has.
    pub async fn tag_resource(&self, arn: &str, tags: Vec<Tag>) -> Result<()> {
        self.retag(arn, |existing| record::merge_tags(existing, tags.clone())).await
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        self.retag(arn, |existing| existing.retain(|t| !keys.contains(&t.key))).await
    }

    async fn retag(&self, arn: &str, update: impl Fn(&mut Vec<Tag>)) -> Result<()> {
        let found = match self.tagged(arn)? {
            Tagged::Namespace(id) => self.tag_namespace(id, update).await?,
            Tagged::Service(id) => self.tag_service(id, update).await?,
        };
        if found { Ok(()) } else { Err(DiscoveryError::ResourceNotFound { arn: arn.to_owned() }) }
    }

    fn tagged<'a>(&self, arn: &'a str) -> Result<Tagged<'a>> {
        let namespace = self.resource_id(arn, "namespace");
        let service = self.resource_id(arn, "service");
        if namespace != arn {
            Ok(Tagged::Namespace(namespace))
        } else if service != arn {
            Ok(Tagged::Service(service))
        } else {
            Err(DiscoveryError::ResourceNotFound { arn: arn.to_owned() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_token() {
        let items: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let first = paginate(items.clone(), |s| s, Some(2), None).unwrap();
        assert_eq!(first.items, ["k0", "k1"]);
        let second = paginate(items.clone(), |s| s, Some(2), first.next_token.as_deref()).unwrap();
        assert_eq!(second.items, ["k2", "k3"]);
        let last = paginate(items, |s| s, Some(2), second.next_token.as_deref()).unwrap();
        assert_eq!(last.items, ["k4"]);
        assert_eq!(last.next_token, None);
    }
}
