//! Task role credentials on this host: each task with a task role has a credential id, the
//! `<id>` of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/<id>`, and the endpoint
//! serves that task's role credentials for it, fetched through the host API and cached.
//!
//! The id is an HMAC of the task ARN under a key kept in the agent's state dir, so it cannot be
//! guessed from the ARN, and a restarted agent gives a task the same id as the containers it
//! already started have in their environment (the agent keeps nothing else across restarts).
//! It is not what authorises a caller, only what names the credentials: the endpoint serves a
//! task's credentials only to a connection from that task's own address.
//!
//! Credentials are fetched when the task starts and again once less than half of their lifetime
//! is left (ECS hands out six hours; SDKs ask again when theirs near their end), so a container
//! always gets some with hours to run. While the control plane cannot be reached, the ones
//! held are served as long as they are valid.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flotilla_host::{HostApi, HostApiError, RoleCredentials};
use flotilla_types::Timestamp;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where the key lives in the agent's state dir.
const KEY_FILE: &str = "credentials.key";
/// Credentials this close to their end are not served (an SDK would refuse them anyway).
const MIN_LEFT_MS: i64 = 5 * 60 * 1000;

#[derive(Clone)]
struct Cached {
    creds: RoleCredentials,
    fetched: Timestamp,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

pub(crate) struct Credentials {
    key: [u8; 32],
    /// Task ARN -> its credentials; one fetch at a time per task.
    cache: Mutex<HashMap<String, Slot>>,
}

impl Credentials {
    /// With the key in `state_dir`, made on first use; a key that cannot be kept there is
    /// made for this run only (and a restarted agent then gives running tasks new ids, which
    /// their containers do not have: it says so).
    pub fn open(state_dir: &Path) -> Credentials {
        let key = match load_or_make_key(&state_dir.join(KEY_FILE)) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(dir = %state_dir.display(), error = %e, "cannot keep the task credentials key; running tasks lose their credentials when the agent restarts");
                random_key()
            }
        };
        Credentials { key, cache: Mutex::new(HashMap::new()) }
    }

    /// The task's credential id: 32 hex digits.
    pub fn id(&self, task_arn: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(task_arn.as_bytes());
        mac.finalize().into_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn slot(&self, task_arn: &str) -> Slot {
        self.cache.lock().expect("credential cache poisoned").entry(task_arn.to_owned()).or_default().clone()
    }

    /// The task's credentials: the held ones while more than half their lifetime is left,
    /// else fresh ones (the held ones if those cannot be had and they still have time).
    pub async fn get(&self, host: &dyn HostApi, task_arn: &str) -> Result<RoleCredentials, HostApiError> {
        let slot = self.slot(task_arn);
        let mut held = slot.lock().await;
        let now = Timestamp::now();
        if let Some(c) = held.as_ref().filter(|c| fresh(c, now)) {
            return Ok(c.creds.clone());
        }
        match host.task_role_credentials(task_arn).await {
            Ok(creds) => {
                *held = Some(Cached { creds: creds.clone(), fetched: now });
                Ok(creds)
            }
            Err(e) => match held.as_ref().filter(|c| usable(c, Timestamp::now())) {
                Some(c) => {
                    tracing::warn!(task = task_arn, error = %e, "cannot refresh task role credentials; serving the ones held");
                    Ok(c.creds.clone())
                }
                None => Err(e),
            },
        }
    }

    pub fn forget(&self, task_arn: &str) {
        self.cache.lock().expect("credential cache poisoned").remove(task_arn);
    }
}

/// More than half of their lifetime left.
fn fresh(c: &Cached, now: Timestamp) -> bool {
    let lifetime = c.creds.expiration.0 - c.fetched.0;
    c.creds.expiration.0 - now.0 > lifetime / 2 && usable(c, now)
}

fn usable(c: &Cached, now: Timestamp) -> bool {
    c.creds.expiration.0 - now.0 > MIN_LEFT_MS
}

/// 244 random bits (two version 4 UUIDs, from the system's random source).
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

fn load_or_make_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = random_key();
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(fetched_s: i64, expires_s: i64) -> Cached {
        let creds = RoleCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: Timestamp(expires_s * 1000),
            role_arn: "r".into(),
        };
        Cached { creds, fetched: Timestamp(fetched_s * 1000) }
    }

    #[test]
    fn credentials_are_refreshed_past_half_their_lifetime_and_served_until_near_their_end() {
        let c = cached(0, 6 * 3600);
        assert!(fresh(&c, Timestamp(3 * 3600 * 1000 - 1000)));
        assert!(!fresh(&c, Timestamp(3 * 3600 * 1000 + 1000)));
        assert!(usable(&c, Timestamp((6 * 3600 - 600) * 1000)));
        assert!(!usable(&c, Timestamp((6 * 3600 - 60) * 1000)));
    }

    #[test]
    fn ids_are_stable_per_key_and_differ_between_tasks_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = Credentials::open(dir.path());
        let b = Credentials::open(dir.path());
        assert_eq!(a.id("arn:task/1"), b.id("arn:task/1"), "a restarted agent gives the same id");
        assert_ne!(a.id("arn:task/1"), a.id("arn:task/2"));
        assert_eq!(a.id("arn:task/1").len(), 32);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a.id("arn:task/1"), Credentials::open(other.path()).id("arn:task/1"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
