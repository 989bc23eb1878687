//! Hosts' tokens: what an agent presents to open its stream to the servers. Issued by
//! `flotilla hosts add` (shown once), kept only as a SHA-256 digest, revoked by deleting it.

use flotilla_store::{Compare, Event, Op, StoreError, Txn};
use flotilla_types::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{Read, encode, load, load_as};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// Not under `hosts/`: that prefix holds host records only.
const HOST_TOKENS: &str = "host-tokens/";

fn key(host_id: &str) -> String {
    format!("{HOST_TOKENS}{host_id}")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    sha256: String,
    issued_at: Timestamp,
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Control {
    /// Issues a new token for `host_id` (the host need not have registered yet); a token it
    /// had before stops working at once. The token is returned once and never stored.
    pub async fn issue_host_token(&self, host_id: &str) -> Result<String, ControlError> {
        if host_id.is_empty() || host_id.contains('/') || host_id.len() > 255 {
            return Err(ControlError::invalid(format!("host id '{host_id}' must be 1-255 characters without '/'.")));
        }
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let record = TokenRecord { sha256: digest(&token), issued_at: Timestamp::now() };
        self.store.txn(Txn::new().then(Op::put(key(host_id), encode(&record)))).await?;
        Ok(token)
    }

    /// Revokes `host_id`'s token: its agent's stream closes and it cannot connect again.
    /// `ResourceNotFound` if it has none.
    pub async fn revoke_host_token(&self, host_id: &str) -> Result<(), ControlError> {
        let key = key(host_id);
        let Some((_, revision)) = load::<TokenRecord>(self.store.as_ref(), &key).await? else {
            return Err(ControlError::ResourceNotFound { arn: format!("host {host_id}") });
        };
        // A conflict means a new token was issued meanwhile: that one stands.
        self.store.txn(Txn::new().when(Compare::revision(&key, revision)).then(Op::delete(&key))).await?;
        Ok(())
    }

    /// True when `token` is `host_id`'s current token.
    pub async fn check_host_token(&self, host_id: &str, token: &str) -> Result<bool, ControlError> {
        let record = load::<TokenRecord>(self.store.as_ref(), &key(host_id)).await?;
        Ok(record.is_some_and(|(r, _)| r.sha256 == digest(token)))
    }

    /// Whether `host_id` may act on `task_arn` over the host API: the task is assigned to it,
    /// or its record is gone (its leftovers are the host's to clean up).
    pub async fn host_may_act_on(&self, host_id: &str, task_arn: &str) -> Result<bool, ControlError> {
        let key = self.task_key_of(task_arn)?;
        // Stale is enough: a task's host never changes once set, and the host learnt of the task
        // through this server's watch, which this store's stale reads never fall behind.
        Ok(match load_as::<TaskRecord>(self.store.as_ref(), &key, Read::Stale).await? {
            Some((record, _)) => record.host_id.as_deref() == Some(host_id),
            None => true,
        })
    }

    /// Resolves once `token` is no longer `host_id`'s (revoked or replaced), or the store
    /// is gone.
    pub async fn host_token_revoked(&self, host_id: &str, token: &str) {
        let key = key(host_id);
        loop {
            // Watch first, then check: a revocation between the two is still seen.
            let mut changes = self.store.watch(&key);
            match self.check_host_token(host_id, token).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => tracing::warn!(host = host_id, error = %e, "cannot check a host's token; watching it"),
            }
            loop {
                match changes.next().await {
                    Ok(Event::Put(kv)) if kv.key == key => break,
                    Ok(event @ Event::Delete { .. }) if event.key() == key => return,
                    Ok(_) => {}
                    Err(StoreError::WatchLagged { .. }) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
