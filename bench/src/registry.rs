//! A real `docker-registry` on loopback with the benchmark images pushed, for the shell
//! benchmarks. Writes `{"host", "busybox", "big", "ca"}` to OUT (atomically) once ready, then serves
//! until SIGTERM/SIGINT, when the registry and its storage are removed.
//!
//! `bench-registry OUT [big] [tls]`: `busybox:latest` always; with `big`, also `big:latest`, the
//! busybox layer with `big_image(4, 25 MiB)`'s four incompressible layers on top (~100 MB).
//! With `tls`, the registry serves HTTPS on this machine's non-loopback address instead (for
//! clients in other network namespaces, whose loopback is their own), and OUT has `ca`, the
//! PEM certificate of the CA that signed its certificate.

use anyhow::{Context, bail};
use flotilla_image::testing::{Anonymous, Registry, big_image, busybox_image, busybox_spec, sha256};
use serde_json::json;

/// Pushes the busybox layer with big_image's layers stacked on it, as one runnable image.
async fn push_big(registry: &Registry) -> String {
    let base = busybox_image();
    let big = big_image(4, 25 << 20);
    let layers: Vec<_> = base.layers.iter().chain(big.layers.iter()).collect();
    for l in &layers {
        registry.push_blob("big", &l.blob).await;
    }
    let config = serde_json::to_vec(&json!({
        "architecture": busybox_spec().architecture,
        "os": "linux",
        "config": busybox_spec().container_config,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": [],
    }))
    .expect("config serialises");
    registry.push_blob("big", &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
    }))
    .expect("manifest serialises");
    registry.push_manifest("big", "latest", "application/vnd.oci.image.manifest.v1+json", &manifest).await;
    let bytes: usize = layers.iter().map(|l| l.blob.len()).sum();
    eprintln!(
        "bench-registry: big:latest is {} layers, {:.1} MiB of blobs",
        layers.len(),
        bytes as f64 / (1 << 20) as f64
    );
    registry.reference("big:latest")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else { bail!("usage: bench-registry OUT [big] [tls]") };
    let registry = if args.iter().any(|a| a == "tls") {
        Registry::start_tls(Anonymous).await.map_err(anyhow::Error::msg).context("a registry over TLS")?
    } else {
        Registry::start().await
    };
    registry.push_image("busybox", Some("latest"), &busybox_image()).await;
    let big = if args.iter().any(|a| a == "big") { Some(push_big(&registry).await) } else { None };
    let info = json!({"host": registry.host(), "busybox": registry.reference("busybox:latest"), "big": big,
        "ca": registry.ca_pem()});
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, info.to_string()).with_context(|| format!("writing {tmp}"))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {out}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(registry);
    Ok(())
}
