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

/// Runs `work` while this process holds the singleton `role`: campaigns for it, runs a fresh
/// `work()` while it is held, stops that at once when the role is lost (another server may
/// hold it from then on) and campaigns again. Returns when `shutdown` resolves or `work` ends.
pub async fn hold_role<W, F>(store: &dyn Store, role: &str, shutdown: impl Future<Output = ()>, mut work: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        let Some(mut leadership) = campaign(store, role, &mut shutdown).await else {
            return;
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = leadership.lost() => tracing::warn!(role, "lost the role; campaigning again"),
            _ = work() => return,
        }
    }
}

/// Campaigns for `role` until this process holds it; `None` when `shutdown` came first.
async fn campaign(
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
