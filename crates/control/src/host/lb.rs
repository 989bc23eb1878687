//! The host API's load balancer calls over `flotilla-elb`: the whole configuration after
//! every change under `elbv2/` or `acm/`, and target observations recorded.

use std::sync::Arc;
use std::time::Duration;

use flotilla_elb::Elb;
use flotilla_host::lb::{LbSnapshot, LbWatch, TargetReport};
use flotilla_host::{Events, HostApiError};
use flotilla_store::Store;
use tokio::sync::mpsc;

/// The store prefixes a load balancer's configuration is read from.
const PREFIXES: [&str; 2] = ["elbv2/", "acm/"];

/// How often the snapshot is rebuilt even without a change (a lagged or closed watch, or a
/// draining deadline passing).
const REFRESH: Duration = Duration::from_secs(1);

pub(crate) fn watch(store: Arc<dyn Store>, elb: Option<Arc<Elb>>) -> LbWatch {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut changes: Vec<_> = PREFIXES.iter().map(|p| store.watch(p)).collect();
        let mut last: Option<LbSnapshot> = None;
        loop {
            let snapshot = match &elb {
                Some(elb) => match elb.snapshot().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the load balancers; retrying");
                        tokio::time::sleep(REFRESH).await;
                        continue;
                    }
                },
                None => LbSnapshot::default(),
            };
            if last.as_ref() != Some(&snapshot) {
                if tx.send(Ok(snapshot.clone())).await.is_err() {
                    return;
                }
                last = Some(snapshot);
            }
            // Wait for any change (or the refresh tick), then take every change already queued,
            // so a burst of writes costs one snapshot.
            let (a, b) = changes.split_at_mut(1);
            tokio::select! {
                _ = a[0].next() => {}
                _ = b[0].next() => {}
                _ = tokio::time::sleep(REFRESH) => {}
                _ = tx.closed() => return,
            }
            for w in changes.iter_mut() {
                while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, w.next()).await {}
            }
        }
    });
    Events::new(rx)
}

pub(crate) async fn record(elb: Option<&Arc<Elb>>, reports: Vec<TargetReport>) -> Result<(), HostApiError> {
    let Some(elb) = elb else { return Ok(()) };
    elb.record_targets(reports).await.map_err(|e| HostApiError::Unavailable { reason: e.to_string() })
}
