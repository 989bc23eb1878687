//! The host API's Cloud Map records: what the store holds under the resolvers' prefixes, sent
//! whole after every change (a burst of changes costs one snapshot).

use std::sync::Arc;
use std::time::Duration;

use flotilla_host::Events;
use flotilla_host::discovery::{DiscoveryRecord, DiscoverySnapshot, DiscoveryWatch};
use flotilla_store::Store;
use tokio::sync::mpsc;

/// What the VPC resolvers read (not Cloud Map's operations or pending work).
const PREFIXES: [&str; 3] =
    ["servicediscovery/namespaces/", "servicediscovery/services/", "servicediscovery/instances/"];

/// How often the snapshot is read again without a change (a lagged or closed watch).
const REFRESH: Duration = Duration::from_secs(5);

async fn snapshot(store: &dyn Store) -> Result<DiscoverySnapshot, flotilla_store::StoreError> {
    let mut records = Vec::new();
    for prefix in PREFIXES {
        for kv in store.list_prefix(prefix).await? {
            records.push(DiscoveryRecord { key: kv.key, value: String::from_utf8_lossy(&kv.value).into_owned() });
        }
    }
    Ok(DiscoverySnapshot { records })
}

pub(crate) fn watch(store: Arc<dyn Store>) -> DiscoveryWatch {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut changes = store.watch(flotilla_discovery::PREFIX);
        let mut last: Option<DiscoverySnapshot> = None;
        loop {
            match snapshot(store.as_ref()).await {
                Ok(s) if last.as_ref() != Some(&s) => {
                    if tx.send(Ok(s.clone())).await.is_err() {
                        return;
                    }
                    last = Some(s);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read Cloud Map's records; retrying"),
            }
            tokio::select! {
                _ = changes.next() => {}
                _ = tokio::time::sleep(REFRESH) => {}
                _ = tx.closed() => return,
            }
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, changes.next()).await {}
        }
    });
    Events::new(rx)
}
