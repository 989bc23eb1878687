//! The `flotilla` binary's pieces, exposed as a library for tests and benchmarks.

pub mod agent;
pub mod client;
pub mod fargate;
pub mod home;
pub mod kubernetes;
pub mod limits;
pub mod output;
pub mod plane;
pub mod server;
pub mod sim_agents;
pub mod up;
