//! Tags resolved a moment ago are not resolved again.
//!
//! The ECS agent's default pull behaviour asks the registry for a tag's manifest on every
//! task start (and falls back to a local copy when the registry fails); so does
//! [`ImageStore::pull`](crate::ImageStore::pull), with one refinement: a successful pull of
//! a tag, with the same credentials, is remembered for [`StoreOptions::recent_pull_ttl`]
//! (a few seconds), and a pull within that window returns the same image without a request.
//! Tasks started together (RunTask `count`, a service scaling out, back-to-back starts) then
//! resolve a tag once, which is what the registry would have answered anyway, give or take a
//! push in those seconds. The window never extends a failure: only successful pulls are
//! remembered, and a pull that fails still takes the fallback path its caller chose.
//!
//! The remembered digest is only used if the image record on disk still names it, so
//! removing, re-importing or re-pulling the image elsewhere is seen at once.
//!
//! [`StoreOptions::recent_pull_ttl`]: crate::StoreOptions::recent_pull_ttl

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Credentials;
use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reference: String,
    /// Who pulled: a pull with other (or no) credentials must ask the registry itself.
    credentials: Option<(String, String)>,
}

pub(crate) struct RecentPulls {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Digest)>>,
}

impl RecentPulls {
    pub fn new(ttl: Duration) -> Self {
        RecentPulls { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn key(reference: &str, credentials: Option<&Credentials>) -> Key {
        Key {
            reference: reference.to_owned(),
            credentials: credentials.map(|c| (c.username.clone(), c.password.clone())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Digest)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manifest digest `reference` was pulled at within the window, if it was.
    pub fn get(&self, reference: &str, credentials: Option<&Credentials>) -> Option<Digest> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        entries.get(&Self::key(reference, credentials)).map(|(_, d)| d.clone())
    }

    pub fn insert(&self, reference: &str, credentials: Option<&Credentials>, digest: Digest) {
        if !self.ttl.is_zero() {
            self.lock().insert(Self::key(reference, credentials), (Instant::now(), digest));
        }
    }

    /// Forgets `reference` whoever pulled it.
    pub fn forget(&self, reference: &str) {
        self.lock().retain(|k, _| k.reference != reference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_reference_and_credentials_until_the_window_ends() {
        let d = Digest::of(b"manifest");
        let recent = RecentPulls::new(Duration::from_millis(200));
        let alice = Credentials::new("alice", "pw");
        recent.insert("r/a:1", Some(&alice), d.clone());
        assert_eq!(recent.get("r/a:1", Some(&alice)), Some(d.clone()));
        assert_eq!(recent.get("r/a:1", None), None);
        assert_eq!(recent.get("r/a:1", Some(&Credentials::new("alice", "other"))), None);
        assert_eq!(recent.get("r/a:2", Some(&alice)), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(recent.get("r/a:1", Some(&alice)), None);

        recent.insert("r/a:1", None, d.clone());
        recent.forget("r/a:1");
        assert_eq!(recent.get("r/a:1", None), None);

        let off = RecentPulls::new(Duration::ZERO);
        off.insert("r/a:1", None, d);
        assert_eq!(off.get("r/a:1", None), None);
    }
}
