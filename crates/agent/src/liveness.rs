//! The agent's side of host liveness: a heartbeat every couple of seconds, and the fence. An
//! agent that cannot heartbeat for its fence time stops every task it runs (as Nomad's
//! `stop_on_client_after` does), and starts none until it is heard again: the control plane
//! declares the host lost only after a longer grace (fence time plus a margin) and only then
//! starts replacements, so two copies of a task never run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flotilla_host::HostApiError;
use tokio::time::Instant;

use crate::Agent;

/// Heartbeat period and fence time.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    pub heartbeat: Duration,
    pub fence: Duration,
}

impl Liveness {
    pub const DEFAULT_FENCE: Duration = Duration::from_secs(10);

    /// A fence time, with heartbeats five times within it (every 2 s at most).
    pub fn with_fence(fence: Duration) -> Liveness {
        Liveness { heartbeat: (fence / 5).min(Duration::from_secs(2)), fence }
    }

    /// `FLOTILLA_AGENT_FENCE` (seconds, fractions allowed) or the default 10 s.
    pub fn from_env() -> Liveness {
        let fence = std::env::var("FLOTILLA_AGENT_FENCE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(Self::DEFAULT_FENCE, Duration::from_secs_f64);
        Liveness::with_fence(fence)
    }
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness::with_fence(Self::DEFAULT_FENCE)
    }
}

impl Agent {
    /// Heartbeats until aborted; fences when none got through for the fence time, and lifts
    /// the fence at the next one that does.
    pub(crate) async fn keep_alive(self: Arc<Self>) {
        let Liveness { heartbeat, fence } = self.liveness;
        let mut last_heard = Instant::now();
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let beat =
                tokio::time::timeout(heartbeat.max(Duration::from_millis(500)), self.host.heartbeat(&self.spec.id));
            match beat.await {
                Ok(Ok(())) => {
                    last_heard = Instant::now();
                    if self.fenced.swap(false, Ordering::SeqCst) {
                        tracing::warn!(host = %self.spec.id, "heard by the control plane again; the fence is lifted");
                    }
                }
                Ok(Err(HostApiError::NotFound { .. })) => {
                    // The control plane forgot the host (its store was replaced): register
                    // again; that counts as being heard.
                    if self.host.register(self.spec.clone()).await.is_ok() {
                        last_heard = Instant::now();
                    }
                }
                Ok(Err(e)) => tracing::debug!(host = %self.spec.id, error = %e, "heartbeat failed"),
                Err(_) => tracing::debug!(host = %self.spec.id, "heartbeat timed out"),
            }
            if last_heard.elapsed() >= fence && !self.fenced.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    host = %self.spec.id,
                    fence_secs = fence.as_secs_f64(),
                    "no heartbeat got through for the fence time: stopping every task on this host"
                );
                self.stop_everything().await;
            }
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The fence: every supervisor aborted and every task's sandbox destroyed, without the
    /// control plane (which cannot be reached).
    async fn stop_everything(&self) {
        let supervisors: Vec<_> = self.supervisors.lock().expect("supervisor table poisoned").drain().collect();
        for (_, s) in supervisors {
            s.handle.abort();
            let _ = s.handle.await;
        }
        let tasks: Vec<String> = {
            let latest = self.assignments.lock().expect("assignment table poisoned");
            latest.values().map(|a| a.task.id().to_owned()).collect()
        };
        for id in tasks {
            if let Err(e) = self.sandbox.destroy(&id).await {
                tracing::warn!(task = %id, error = %e, "cannot stop a task while fenced");
            }
        }
    }
}
