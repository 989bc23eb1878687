//! The simulated agent: the real agent loop, host API, control plane and store, with
//! containers that only pretend (`flotilla_sandbox::sim::SimSandbox`), images that are never
//! pulled and no data plane. It needs no root, so the supervisor's failure paths can be
//! unit-tested, and scheduler and placement benchmarks can run thousands of tasks.

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_host::{BoxFuture, HostApi, HostSpec, RegistryLogin};
use flotilla_image::manifest::RootFs;
use flotilla_image::{Digest, Image, ImageConfig, Reference};
use flotilla_sandbox::Sandbox;

use crate::images::ImageSource;
use crate::network::NoNetwork;
use crate::{Agent, AgentParts};

/// Images that exist without a registry: an empty image for any well-formed reference.
/// A reference whose tag is `missing` fails as an unknown image does.
pub struct SimImages;

fn digest_of(text: &str) -> Digest {
    // Any stable 64-hex-digit name will do: the image has no content.
    let mut hex = String::new();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    while hex.len() < 64 {
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        hex.push_str(&format!("{h:016x}"));
    }
    Digest::from_hex(&hex[..64]).expect("64 hex digits make a digest")
}

impl ImageSource for SimImages {
    fn pull<'a>(&'a self, reference: &'a str, _: Option<&'a RegistryLogin>) -> BoxFuture<'a, Result<Image, String>> {
        Box::pin(async move {
            let parsed = Reference::parse(reference)
                .map_err(|e| format!("CannotPullContainerError: invalid reference {reference}: {e}"))?;
            if parsed.to_string().ends_with(":missing") {
                return Err(format!("CannotPullContainerError: {reference}: not found"));
            }
            Ok(Image {
                reference: parsed,
                manifest_digest: digest_of(reference),
                index_digest: None,
                config_digest: digest_of(&format!("config {reference}")),
                // An image without layers (its rootfs lists none) and with no process
                // defaults: the task definition says what runs.
                config: ImageConfig {
                    architecture: "amd64".into(),
                    os: "linux".into(),
                    variant: None,
                    created: None,
                    config: Default::default(),
                    rootfs: RootFs { kind: "layers".into(), diff_ids: Vec::new() },
                },
                layers: Vec::new(),
            })
        })
    }
}

/// An agent for `spec` over `sandbox` (normally a `SimSandbox`), with simulated images and
/// no data plane.
pub fn agent(
    host: Arc<dyn HostApi>,
    spec: HostSpec,
    sandbox: Arc<dyn Sandbox>,
    region: &str,
    state_dir: PathBuf,
) -> Arc<Agent> {
    agent_with(host, spec, sandbox, region, state_dir, crate::Liveness::from_env())
}

/// [`agent`] with the given heartbeat period and fence time.
pub fn agent_with(
    host: Arc<dyn HostApi>,
    spec: HostSpec,
    sandbox: Arc<dyn Sandbox>,
    region: &str,
    state_dir: PathBuf,
    liveness: crate::Liveness,
) -> Arc<Agent> {
    Agent::new(AgentParts {
        host,
        spec,
        images: Arc::new(SimImages),
        sandbox,
        network: Arc::new(NoNetwork),
        ship_logs: false,
        state_dir,
        region: region.to_owned(),
        metadata: false,
        api: None,
        load_balancing: None,
        liveness,
        efs_root: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn simulated_images_pull_without_a_registry() {
        let image = SimImages.pull("busybox:latest", None).await.expect("any well-formed reference pulls");
        assert_eq!(image.reference.to_string(), "docker.io/library/busybox:latest");
        assert!(image.layers.is_empty() && image.config.rootfs.diff_ids.is_empty());
        let again = SimImages.pull("busybox:latest", None).await.unwrap();
        assert_eq!(image.manifest_digest, again.manifest_digest, "the digest is stable");
        let err = SimImages.pull("busybox:missing", None).await.unwrap_err();
        assert!(err.starts_with("CannotPullContainerError: "), "{err}");
    }
}
