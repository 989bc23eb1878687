//! `flotilla image`: the host's image store (pull with progress, import for offline hosts,
//! list, remove, prune). It works on the data dir directly; the store's file lock makes that
//! safe while the server runs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use flotilla_cli::output::Output;
use flotilla_image::{ImageStore, Progress, PullEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::ImageAction;

fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// Draws one bar per layer on stderr while `events` arrive.
async fn show_progress(mut events: tokio::sync::mpsc::UnboundedReceiver<PullEvent>, quiet: bool) {
    let bars = MultiProgress::new();
    if quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:.cyan} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}")
        .expect("valid template");
    let mut by_digest: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            PullEvent::Resolved { layers, .. } => {
                for (digest, total) in layers {
                    let bar = bars
                        .add(ProgressBar::new(total).with_style(style.clone()).with_prefix(short(&digest.to_string())));
                    by_digest.insert(digest.to_string(), bar);
                }
            }
            PullEvent::LayerCached { digest, size } => {
                if let Some(bar) = by_digest.get(&digest.to_string()) {
                    bar.set_position(size);
                    bar.finish_with_message("already present");
                }
            }
            PullEvent::LayerDownloading { digest, downloaded, .. } => {
                if let Some(bar) = by_digest.get(&digest.to_string()) {
                    bar.set_position(downloaded);
                }
            }
            PullEvent::LayerDownloaded { digest, .. } => {
                if let Some(bar) = by_digest.get(&digest.to_string()) {
                    bar.set_message("verified, unpacking");
                }
            }
            PullEvent::LayerUnpacked { digest, .. } => {
                if let Some(bar) = by_digest.get(&digest.to_string()) {
                    bar.finish_with_message("done");
                }
            }
        }
    }
}

pub async fn run(data_dir: &Path, out: &Output, action: ImageAction) -> anyhow::Result<()> {
    let dir = flotilla_cli::home::images_dir(data_dir);
    // Only pulls talk to registries; a bad CA bundle must not break `ls` or `rm`.
    let options = match &action {
        ImageAction::Pull { registry_ca, .. } => flotilla_cli::up::image_store_options(registry_ca.as_deref())?,
        _ => flotilla_image::StoreOptions::default(),
    };
    let store = ImageStore::open_with(&dir, options)
        .await
        .with_context(|| format!("cannot open the image store in {}", dir.display()))?;
    match action {
        ImageAction::Pull { reference, .. } => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let quiet = out.format == flotilla_cli::output::Format::Json;
            let drawing = tokio::spawn(show_progress(rx, quiet));
            let result = store.pull(&reference, None, Progress::channel(tx)).await;
            let _ = drawing.await;
            let image = result.map_err(|e| anyhow::anyhow!("CannotPullContainerError: {}", e.aws_reason()))?;
            let raw = json!({ "reference": image.reference.to_string(), "digest": image.manifest_digest.to_string() });
            out.print(
                &raw,
                &["REFERENCE", "DIGEST"],
                vec![vec![image.reference.to_string(), image.manifest_digest.to_string()]],
            );
        }
        ImageAction::Import { file, reference } => {
            let images = store
                .import_named(&file, reference.as_deref())
                .await
                .with_context(|| format!("cannot import {}", file.display()))?;
            let rows = images.iter().map(|i| vec![i.reference.to_string(), i.manifest_digest.to_string()]).collect();
            let raw = json!({ "imported": images.iter().map(|i| i.reference.to_string()).collect::<Vec<_>>() });
            out.print(&raw, &["REFERENCE", "DIGEST"], rows);
        }
        ImageAction::Ls => {
            let images = store.list().await?;
            let rows = images
                .iter()
                .map(|i| {
                    let bytes: u64 = i.layers.iter().map(|l| l.size).sum();
                    vec![
                        i.reference.to_string(),
                        short(&i.manifest_digest.to_string()),
                        i.layers.len().to_string(),
                        size(bytes),
                    ]
                })
                .collect();
            let raw = json!({ "images": images.iter().map(|i| json!({
                "reference": i.reference.to_string(),
                "digest": i.manifest_digest.to_string(),
                "layers": i.layers.len(),
                "size": i.layers.iter().map(|l| l.size).sum::<u64>(),
            })).collect::<Vec<_>>() });
            out.print(&raw, &["REFERENCE", "DIGEST", "LAYERS", "SIZE"], rows);
        }
        ImageAction::Rm { reference } => {
            if !store.remove(&reference).await? {
                anyhow::bail!("no image {reference} in {}; `flotilla image ls` lists them", dir.display());
            }
            out.print(&json!({ "removed": reference }), &["REMOVED"], vec![vec![reference.clone()]]);
        }
        ImageAction::Prune => {
            let report = store.prune().await?;
            let raw = json!({ "blobsRemoved": report.blobs_removed, "layersRemoved": report.layers_removed, "bytesRemoved": report.bytes_removed });
            out.print(
                &raw,
                &["BLOBS REMOVED", "LAYERS REMOVED", "FREED"],
                vec![vec![
                    report.blobs_removed.to_string(),
                    report.layers_removed.to_string(),
                    size(report.bytes_removed),
                ]],
            );
        }
    }
    Ok(())
}
