//! Pull progress, for a CLI progress bar or the agent's task events.

use std::sync::Arc;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest is known: these layers (digest, compressed size) follow, lowest first.
    Resolved { reference: String, manifest: Digest, layers: Vec<(Digest, u64)> },
    /// The blob was already in the store; nothing is downloaded.
    LayerCached { digest: Digest, size: u64 },
    /// Bytes of a blob received so far (sent at most every 256 KiB, and at the end).
    LayerDownloading { digest: Digest, downloaded: u64, total: u64 },
    /// The blob is downloaded and verified.
    LayerDownloaded { digest: Digest, size: u64 },
    /// The layer is unpacked (`cached`: it already was).
    LayerUnpacked { digest: Digest, diff_id: Digest, cached: bool },
}

/// Where pull events go. Cheap to clone; the default discards them.
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<Arc<dyn Fn(PullEvent) + Send + Sync>>,
}

impl Progress {
    pub fn none() -> Self {
        Progress::default()
    }

    /// Calls `f` for each event, on the pulling task: keep it quick.
    pub fn from_fn(f: impl Fn(PullEvent) + Send + Sync + 'static) -> Self {
        Progress { sink: Some(Arc::new(f)) }
    }

    /// Sends each event to a channel; a closed receiver is ignored.
    pub fn channel(tx: tokio::sync::mpsc::UnboundedSender<PullEvent>) -> Self {
        Progress::from_fn(move |event| {
            let _ = tx.send(event);
        })
    }

    pub(crate) fn emit(&self, event: PullEvent) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }
}

impl From<tokio::sync::mpsc::UnboundedSender<PullEvent>> for Progress {
    fn from(tx: tokio::sync::mpsc::UnboundedSender<PullEvent>) -> Self {
        Progress::channel(tx)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sink.is_some() { "Progress(sink)" } else { "Progress(none)" })
    }
}
