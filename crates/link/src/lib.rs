//! The host API between hosts: each agent keeps one authenticated, bidirectional gRPC
//! stream (tonic over HTTP/2) to any of the servers, and every [`flotilla_host::HostApi`]
//! call and event stream travels on it as plain serde JSON.
//!
//! [`LinkServer`] serves the control plane's host API to agents; [`RemoteHostApi`] is the
//! host API as an agent on another machine uses it. The desired set goes down as the
//! assignment stream, with a generation (each assignment's revision, and the snapshot's),
//! and an agent that reconnects resumes from the newest revision it received.
//!
//! **Architecture Invariant:** the link knows the host API's types and nothing of the
//! control plane or the store: what the stream carries is exactly what the in-process host
//! API carries, so the agent cannot tell one from the other.
//!
//! **Architecture Invariant:** a host is who its token says: every stream is opened with a
//! host id and its bearer token, checked by [`HostAuth`], and calls that name another host
//! are refused. A revoked token closes the stream at once.
//!
//! ECS Exec reverses the direction: a server given the control plane's `ExecTargets`
//! registers each connected agent's host there, and carries each session's bytes over the
//! agent's stream to the agent's own `ExecTarget` (see `exec.rs`).

mod client;
mod exec;
mod protocol;
mod server;

pub use client::{LinkStatus, RemoteHostApi, UNREACHABLE_AFTER};
pub use protocol::{AgentFrame, Call, ServerFrame, Watch};
pub use server::{AuthError, HostAuth, LinkServer};
