//! Flotilla's domain vocabulary.
//!
//! **Architecture Invariant:** this crate does no I/O, spawns nothing and knows nothing of
//! HTTP, AWS wire protocols or storage. It is the shared language of the control plane and
//! the agent, so everything here is plain data plus pure functions over it.

pub mod arn;
pub mod page;
pub mod size;
pub mod tag;
pub mod task;
pub mod task_definition;
pub mod time;
pub mod validate;

pub use arn::{Arn, Identity, ResourceKind};
pub use size::{TaskSize, parse_cpu, parse_memory};
pub use tag::Tag;
pub use time::Timestamp;
pub use validate::{FieldError, validate_for_fargate};
