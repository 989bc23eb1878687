//! The Kubernetes side of EKS as `flotilla up` and `flotilla server` assemble it: the webhook
//! listener API servers call (token authentication through the API's own SigV4 verifier,
//! profile admission from the store's profiles), and the control planes Flotilla launches
//! (`flotilla_k8s::plane::Planes`, given to `flotilla_eks::Eks::with_planes`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use flotilla_eks::PlaneFuture;
use flotilla_k8s::plane::Planes;
use flotilla_k8s::webhook::{AwsIdentity, CallerVerifier, PresignedRequest, Webhooks};

/// The options of `flotilla up` and `flotilla server` for EKS clusters' control planes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubernetesArgs {
    /// Directory holding kube-apiserver and kube-controller-manager, for EKS clusters Flotilla
    /// launches (default: found on PATH). etcd comes from PATH (Debian's etcd-server).
    #[arg(long, value_name = "DIR", env = "FLOTILLA_KUBERNETES_BIN")]
    pub kubernetes_bin: Option<PathBuf>,
    /// Where API servers reach Flotilla's EKS webhooks (token authentication, pod admission),
    /// over HTTPS. Default: where the last start listened, else 127.0.0.1:8449 (a free loopback
    /// port when that is taken).
    #[arg(long, value_name = "ADDR")]
    pub eks_webhook_listen: Option<SocketAddr>,
}

/// What EKS needs from this process: the planes, and the listener they are configured with.
pub struct Kubernetes {
    pub planes: Arc<Planes>,
    pub webhooks: Webhooks,
}

/// Starts the webhook listener (its files in `<data>/eks-webhook`) and prepares the planes
/// (`<data>/eks/<cluster>`). `lookup` reads clusters and profiles (an `Eks` over the store, given
/// the planes here so that the webhooks reach clusters' API servers); `verifier` checks tokens'
/// signatures.
pub async fn start(
    data_dir: &Path,
    args: &KubernetesArgs,
    lookup: flotilla_eks::Eks,
    verifier: flotilla_api::sigv4::Verifier,
) -> anyhow::Result<Kubernetes> {
    let bound = Webhooks::bind(&flotilla_k8s::webhook::dir(data_dir), args.eks_webhook_listen)
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot start the EKS webhook listener (--eks-webhook-listen)")?;
    let binaries = flotilla_k8s::find_binaries(args.kubernetes_bin.as_deref());
    if let Err(why) = &binaries {
        tracing::debug!("EKS clusters cannot be launched here: {why}");
    }
    let planes = Arc::new(Planes::new(data_dir.join("eks"), binaries, bound.endpoint()));
    let lookup = Arc::new(lookup.with_planes(planes.clone()));
    let webhooks = bound.serve(lookup, Arc::new(SigV4Callers(verifier)));
    Ok(Kubernetes { planes, webhooks })
}

/// EKS tokens' presigned STS URLs checked by the API's SigV4 verifier (IAM's keys and sessions).
struct SigV4Callers(flotilla_api::sigv4::Verifier);

impl CallerVerifier for SigV4Callers {
    fn verify<'a>(&'a self, request: &'a PresignedRequest) -> PlaneFuture<'a, Result<AwsIdentity, String>> {
        Box::pin(async move {
            let signed = flotilla_api::sigv4::SignedRequest {
                method: "GET",
                path: &request.path,
                query: &request.query,
                headers: request.headers.clone(),
                body: b"",
            };
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let lifetime = Some(flotilla_k8s::webhook::token::TOKEN_LIFETIME_SECS);
            let caller = self
                .0
                .verify_presigned(&signed, "sts", now, lifetime)
                .await
                .map_err(|e| format!("{}: {}", e.code, e.message))?;
            let principal = caller.principal;
            let role = match principal.kind {
                flotilla_iam::PrincipalKind::AssumedRole { role_arn, session_name, .. } => {
                    Some((role_arn, session_name))
                }
                _ => None,
            };
            Ok(AwsIdentity {
                arn: principal.arn,
                account: principal.account,
                user_id: principal.user_id,
                access_key_id: caller.access_key_id,
                role,
            })
        })
    }
}
