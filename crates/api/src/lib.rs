//! The AWS wire layer.
//!
//! **Architecture Invariant:** this is the only crate that knows HTTP, AWS JSON, SigV4 and AWS
//! error codes. It parses a request into a call on the control plane and turns the one
//! `Result` back into a response; it holds no state of its own beyond credentials.

pub mod acm;
mod authz;
pub mod ec2;
pub mod ecs;
mod efs;
mod eks;
mod elbv2;
pub mod error;
mod exec;
pub mod flotilla;
mod iam;
mod json;
pub mod kms;
pub mod logs;
pub mod model;
pub mod query;
mod rest;
pub mod secrets;
pub mod server;
pub mod servicediscovery;
pub mod sigv4;

pub use error::ApiError;
pub use server::{ApiState, router};
pub use sigv4::Credentials;
