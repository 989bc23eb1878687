//! Test support for this crate's tests and for other crates' integration tests:
//! a real `docker-registry` on 127.0.0.1, or over TLS with a private CA ([`Registry`]), helpers that push images
//! to it, and builders for layers and images ([`LayerTar`], [`TestImage`]),
//! including a runnable [`busybox_image`].
//!
//! Compiled only with the `testing` feature; another crate gets it with
//! `flotilla-image = { path = "../image", features = ["testing"] }` under
//! `[dev-dependencies]`.
//!
//! Everything here panics instead of returning errors: a failure is a broken test
//! environment or a broken test. [`Registry`] needs `docker-registry` on `PATH`
//! (`apt-get install -y docker-registry`) and a Tokio runtime; [`busybox_image`]
//! needs `busybox-static` (`apt-get install -y busybox-static`).

mod build;
mod registry;

pub use build::{
    BUSYBOX_APPLETS, ImageSpec, LayerTar, MTIME, TestImage, TestLayer, big_image, blob_path, busybox_image,
    busybox_layer, busybox_spec, compress, gzip, host_architecture, index, oci_layout, sha256, tar_of, zstd,
};
pub use registry::{Anonymous, Authorization, Htpasswd, Registry, RegistryAuth, non_loopback_ipv4};
