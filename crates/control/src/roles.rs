//! Singleton roles (the service scheduler, the host-failure detector): one holder at a time
//! among every server sharing the store, through [`flotilla_store::Store::acquire`].

use std::future::Future;
use std::time::Duration;

use flotilla_store::{Leadership, Store};

/// This process as a role holder: its host name and process id.
pub fn process_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}", host.trim(), std::process::id())
}

/// Campaigns for `role` until this process holds it; `None` when `shutdown` came first.
pub(crate) async fn campaign(
    store: &dyn Store,
    role: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Leadership> {
    let holder = process_holder();
    loop {
        let outcome = tokio::select! {
            _ = &mut *shutdown => return None,
            l = store.acquire(role, &holder) => l,
        };
        match outcome {
            Ok(leadership) => {
                tracing::info!(role, holder, "holding the role");
                return Some(leadership);
            }
            Err(e) => {
                tracing::warn!(role, error = %e, "cannot campaign for the role; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
