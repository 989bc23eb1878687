//! Sessions and their tokens, in memory: a server restart ends every session (the processes
//! die with their channels, see `flotilla_host::exec`).
//!
//! A token is random, single-use, bound to its session (it is checked against the session the
//! URL names) and expires [`TOKEN_TTL`] after it was issued; only its SHA-256 is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_host::exec::{ExecRequest, ExecTargets};
use flotilla_logs::LogStore;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::channel::Live;

/// How long an issued token may wait for its data channel.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long a session whose client went away (without ending it) waits for ResumeSession.
pub const DETACHED_TTL: Duration = Duration::from_secs(60);

/// What a session runs, fixed when ExecuteCommand accepts it.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// The host whose [`flotilla_host::exec::ExecTarget`] runs the command.
    pub host_id: String,
    pub request: ExecRequest,
    /// The CloudWatch Logs group that records the session's output, in a stream named after
    /// the session (as ECS names it); `None` records nothing.
    pub log_group: Option<String>,
}

/// Why a data channel was refused. The client learns only that it was.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("no such session")]
    UnknownSession,
    #[error("the token is not this session's, was used already or expired")]
    BadToken,
}

struct Token {
    hash: [u8; 32],
    expires: Instant,
}

/// One session: its spec, its current token and, once started, its process and stream state.
pub struct Session {
    pub id: String,
    pub spec: SessionSpec,
    token: Mutex<Option<Token>>,
    /// Taken by the connection that serves the session; kept across a reconnect.
    pub(crate) live: tokio::sync::Mutex<Live>,
    /// Set by TerminateSession (or the reaper): the connection closes the channel.
    pub(crate) terminate: watch::Sender<bool>,
    /// Tells the connection serving the session that a resumed one takes over (the old one
    /// may not have noticed yet that its client is gone).
    pub(crate) superseded: tokio::sync::Notify,
    /// When the last connection left without ending the session; `None` while attached or
    /// never opened.
    detached_at: Mutex<Option<Instant>>,
}

impl Session {
    pub(crate) fn mark_detached(&self, detached: bool) {
        *self.detached_at.lock().unwrap_or_else(|e| e.into_inner()) = detached.then(Instant::now);
    }
}

/// Every open session of this server, and what sessions need: the hosts and the log store.
pub struct Sessions {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) targets: ExecTargets,
    pub(crate) logs: Option<Arc<LogStore>>,
}

fn new_token() -> (String, Token) {
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    let hash = Sha256::digest(token.as_bytes()).into();
    (token, Token { hash, expires: Instant::now() + TOKEN_TTL })
}

impl Sessions {
    pub fn new(targets: ExecTargets, logs: Option<Arc<LogStore>>) -> Sessions {
        Sessions { sessions: Mutex::new(HashMap::new()), targets, logs }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; returns its id (`ecs-execute-command-<random>`, as ECS forms it)
    /// and its first token.
    pub fn create(&self, spec: SessionSpec) -> (String, String) {
        self.reap();
        // ECS's ids end in 17 hex digits.
        let suffix: [u8; 9] = rand::random();
        let id = format!("ecs-execute-command-{}", &hex::encode(suffix)[..17]);
        let (token, stored) = new_token();
        let session = Arc::new(Session {
            id: id.clone(),
            spec,
            token: Mutex::new(Some(stored)),
            live: tokio::sync::Mutex::new(Live::default()),
            terminate: watch::channel(false).0,
            superseded: tokio::sync::Notify::new(),
            detached_at: Mutex::new(None),
        });
        self.lock().insert(id.clone(), session);
        (id, token)
    }

    /// Checks and spends `token` for session `id`.
    pub fn open(&self, id: &str, token: &str) -> Result<Arc<Session>, OpenError> {
        self.reap();
        let session = self.lock().get(id).cloned().ok_or(OpenError::UnknownSession)?;
        let mut slot = session.token.lock().unwrap_or_else(|e| e.into_inner());
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match slot.take() {
            Some(t) if t.expires > Instant::now() && t.hash == presented => {}
            other => {
                // A wrong token does not burn the right one.
                *slot = other;
                return Err(OpenError::BadToken);
            }
        }
        drop(slot);
        session.mark_detached(false);
        Ok(session)
    }

    /// ResumeSession: a new token for a session that is still open.
    pub fn resume(&self, id: &str) -> Option<String> {
        self.reap();
        let session = self.lock().get(id).cloned()?;
        if *session.terminate.borrow() {
            return None;
        }
        let (token, stored) = new_token();
        *session.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        Some(token)
    }

    /// TerminateSession: ends the session (its process is killed when its channel goes).
    /// `false` if there was no such session.
    pub fn terminate(&self, id: &str) -> bool {
        let Some(session) = self.lock().remove(id) else {
            return false;
        };
        session.terminate.send_replace(true);
        true
    }

    /// Forgets a session that has ended.
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops sessions whose token expired unused, and sessions left detached too long:
    /// dropping one drops its process's input, which kills the process. Also run by every
    /// other call; `api` schedules it once a token or a detached session could have expired.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.lock().retain(|_, s| {
            let never_opened = s.token.lock().map(|t| t.as_ref().is_some_and(|t| t.expires <= now)).unwrap_or(false)
                && s.live.try_lock().map(|l| !l.started()).unwrap_or(false);
            let abandoned =
                s.detached_at.lock().map(|d| d.is_some_and(|d| now.duration_since(d) > DETACHED_TTL)).unwrap_or(false);
            if never_opened || abandoned {
                gone.push(s.clone());
            }
            !(never_opened || abandoned)
        });
        for s in gone {
            s.terminate.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        SessionSpec {
            host_id: "h".into(),
            request: ExecRequest {
                task_arn: "t".into(),
                container: "web".into(),
                command: vec!["sh".into()],
                tty: true,
                size: None,
            },
            log_group: None,
        }
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_session() {
        let sessions = Sessions::new(ExecTargets::new(), None);
        let (a, token_a) = sessions.create(spec());
        let (b, token_b) = sessions.create(spec());
        assert!(a.starts_with("ecs-execute-command-") && a != b);
        assert_eq!(sessions.open(&a, &token_b).err(), Some(OpenError::BadToken));
        assert_eq!(sessions.open(&a, "forged").err(), Some(OpenError::BadToken));
        assert!(sessions.open(&a, &token_a).is_ok());
        assert_eq!(sessions.open(&a, &token_a).err(), Some(OpenError::BadToken));
        assert_eq!(sessions.open("nope", &token_b).err(), Some(OpenError::UnknownSession));
        let again = sessions.resume(&a).unwrap();
        assert!(sessions.open(&a, &again).is_ok());
        assert!(sessions.terminate(&b));
        assert!(sessions.resume(&b).is_none());
    }
}
