//! Singleton roles on etcd: a lease kept alive, and the role's key written with it only if
//! absent (create-revision 0). Whoever wrote the key holds the role until its lease ends; the
//! others watch the key and campaign again when it is deleted (the holder resigned, or its lease
//! expired because it died or was cut off).
//!
//! A holder counts its role lost a margin *before* etcd would expire the lease (measured from
//! when it sent its last acknowledged renewal, which etcd received later), so two holders never
//! overlap.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, EventType, PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{EtcdOptions, Request, call};
use crate::{Leadership, StoreError};

/// Campaigns until this process holds the role at `key`. Transient failures (no quorum) are
/// logged and retried: a campaigner waits for etcd as it waits for the current holder.
pub(super) async fn acquire(
    client: Client,
    options: Arc<EtcdOptions>,
    key: String,
    holder: String,
) -> Result<Leadership, StoreError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match campaign(&client, &options, &key, &holder).await {
            Ok(leadership) => return Ok(leadership),
            Err(StoreError::Closed) => return Err(StoreError::Closed),
            Err(e) => {
                tracing::warn!(error = %e, role = key, "campaign for a role failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.role_ttl);
            }
        }
    }
}

/// One lease's worth of campaigning: returns the role, or an error after which a new lease is
/// granted.
async fn campaign(
    client: &Client,
    options: &Arc<EtcdOptions>,
    key: &str,
    holder: &str,
) -> Result<Leadership, StoreError> {
    let ttl_secs = i64::try_from(options.role_ttl.as_secs().max(2)).unwrap_or(5);
    let granted_at = Instant::now();
    let lease =
        call(client, options, "acquire", Request::Write, |mut c| async move { c.lease_grant(ttl_secs, None).await })
            .await?
            .id();
    let (held_tx, mut held) = watch::channel(true);
    let keeper = tokio::spawn(keep_alive(client.clone(), options.clone(), lease, granted_at, held_tx));
    let guard = LeaseGuard { keeper, client: client.clone(), deadline: options.deadline, lease };
    loop {
        if !*held.borrow() {
            return Err(StoreError::Unavailable {
                operation: "acquire",
                reason: "the campaign's lease could not be kept alive".into(),
            });
        }
        let request = EtcdTxn::new()
            .when([EtcdCompare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, holder, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let response = call(client, options, "acquire", Request::Write, |mut c| {
            let request = request.clone();
            async move { c.txn(request).await }
        })
        .await?;
        if response.succeeded() {
            tracing::info!(role = key, holder, lease, "role acquired");
            return Ok(Leadership::new(held, Some(Box::new(guard))));
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| (kv.mod_revision(), kv.lease())),
            _ => None,
        });
        if current.is_some_and(|(_, owner)| owner == lease) {
            // An earlier attempt of this request applied before its answer was lost.
            tracing::info!(role = key, holder, lease, "role acquired");
            return Ok(Leadership::new(held, Some(Box::new(guard))));
        }
        if let Some((revision, _)) = current {
            // Wait for the key's deletion, but look again now and then whatever the watch says,
            // and give up waiting when our own lease is in doubt.
            tokio::select! {
                () = deleted(client, key, revision + 1) => {}
                () = tokio::time::sleep(options.role_ttl) => {}
                _ = held.wait_for(|h| !*h) => {}
            }
        }
    }
}

/// Resolves once `key` is deleted at or after `from` (or its watch breaks: the caller looks
/// again either way).
async fn deleted(client: &Client, key: &str, from: i64) {
    let Ok(mut stream) = client.watch_client().watch(key, Some(WatchOptions::new().with_start_revision(from))).await
    else {
        return;
    };
    while let Ok(Some(response)) = stream.message().await {
        if response.canceled() || response.events().iter().any(|e| e.event_type() == EventType::Delete) {
            return;
        }
    }
}

/// Renews the lease every third of its TTL; turns `held` false once the last acknowledged
/// renewal is too old to be sure etcd still has the lease, or etcd says it is gone.
async fn keep_alive(
    client: Client,
    options: Arc<EtcdOptions>,
    lease: i64,
    granted_at: Instant,
    held: watch::Sender<bool>,
) {
    let ttl = options.role_ttl;
    let margin = ttl / 5;
    let period = ttl / 3;
    let mut renewed = granted_at;
    'streams: loop {
        let expiry = renewed + ttl - margin;
        let sent = Instant::now();
        let opened = tokio::time::timeout_at(expiry, async { client.lease_client().keep_alive(lease).await }).await;
        let (mut keeper, mut stream) = match opened {
            Err(_) => break,
            Ok(Err(e)) => {
                // The opening request is itself a renewal; "not found" means the lease is gone.
                if e.to_string().contains("lease not found") {
                    break;
                }
                tracing::debug!(error = %e, lease, "lease keep-alive stream failed; reopening");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Ok(opened)) => {
                renewed = sent;
                opened
            }
        };
        loop {
            tokio::time::sleep(period).await;
            let expiry = renewed + ttl - margin;
            let sent = Instant::now();
            let answer = tokio::time::timeout_at(expiry, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match answer {
                Err(_) => break 'streams,
                Ok(Ok(Some(response))) if response.ttl() > 0 => renewed = sent,
                Ok(Ok(Some(_))) => break 'streams,
                Ok(Ok(None)) | Ok(Err(_)) => continue 'streams,
            }
        }
    }
    tracing::warn!(lease, "role lease could not be renewed in time; the role is lost");
    let _ = held.send(false);
}

/// Keeps the lease alive while the role is held; dropping it stops the renewals and revokes
/// the lease, which deletes the role's key and wakes the other campaigners.
struct LeaseGuard {
    keeper: tokio::task::JoinHandle<()>,
    client: Client,
    deadline: Duration,
    lease: i64,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.keeper.abort();
        let (mut client, deadline, lease) = (self.client.clone(), self.deadline, self.lease);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Err(e)) = tokio::time::timeout(deadline, client.lease_revoke(lease)).await {
                    tracing::debug!(error = %e, lease, "revoking a role's lease failed; it expires on its own");
                }
            });
        }
    }
}
