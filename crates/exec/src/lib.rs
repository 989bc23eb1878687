//! ECS Exec sessions: what ExecuteCommand hands out (a session id and a single-use token) and
//! the Session Manager data channel that a client (AWS's `session-manager-plugin`, or
//! `flotilla exec`) speaks to run one command in a task's container.
//!
//! `session` keeps sessions and tokens in memory; `channel` is the service side of the data
//! channel over queues of binary frames (the WebSocket is `api`'s), which starts the command
//! through the task's host's [`flotilla_host::exec::ExecTarget`]; `client` is the other side
//! of the same protocol, for `flotilla exec`; `message` is the frame and its payloads.
//!
//! **Architecture Invariant:** nothing here knows HTTP or WebSocket framing, and nothing here
//! is persisted: a server restart ends every session, and with it every process it started.

mod channel;
mod client;
pub mod message;
mod session;

pub use channel::{Connection, Outcome};
pub use client::{ClientError, ClientEvent, ClientInput, open_data_channel, run_client};
pub use session::{DETACHED_TTL, OpenError, Session, SessionSpec, Sessions, TOKEN_TTL};

/// Splits ECS's `command` string into argv the way a POSIX shell splits words (quotes and
/// backslashes; no expansion): `sh -c 'id; ls /'` is `["sh", "-c", "id; ls /"]`.
pub fn split_command(command: &str) -> Option<Vec<String>> {
    shlex::split(command).filter(|argv| !argv.is_empty())
}

/// The inverse of [`split_command`], for `flotilla exec`'s argv; `None` if a word holds a NUL.
pub fn join_command(argv: &[String]) -> Option<String> {
    shlex::try_join(argv.iter().map(String::as_str)).ok()
}

#[cfg(test)]
mod tests;
