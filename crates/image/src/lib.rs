//! Flotilla's OCI image layer: turns the `image` string of an ECS task definition
//! into unpacked layer directories and an image config that a sandbox can stack
//! with overlayfs.
//!
//! - [`Reference`]: Docker-compatible parsing and normalisation of image names.
//! - [`ImageStore`]: pull (registry v2 / OCI distribution, anonymous, Basic or
//!   Bearer auth), import (OCI layout and `docker save` tarballs), list, get, remove
//!   and prune, over a content-addressed store on local disk.
//! - [`unpack_layer`]: safe layer extraction with overlayfs whiteouts and a
//!   decompression budget.
//! - `testing` (feature `testing`): a real registry on loopback and image builders
//!   for tests, this crate's and others'.
//!
//! **Architecture Invariant:** this crate knows nothing of tasks, sandboxes or
//! mounts. It hands out directories and a parsed config; mounting them is the
//! sandbox's business.

mod auth;
mod cas;
pub mod digest;
mod import;
pub mod manifest;
mod progress;
mod pull;
mod recent;
pub mod reference;
mod registry;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unpack;

pub use auth::Credentials;
pub use cas::IngestError;
pub use digest::{Digest, DigestError};
pub use import::ImportError;

pub use manifest::{ContainerConfig, ImageConfig, Platform};
pub use progress::{Progress, PullEvent};
pub use pull::{PullError, error_chain};
pub use reference::{Reference, ReferenceError};
pub use registry::{RegistryConfig, RegistryError};
pub use store::{Image, ImageStore, Layer, PruneReport, StoreError, StoreOptions};
pub use unpack::{UnpackError, UnpackLimits, UnpackOptions, UnpackStats, unpack_layer};
