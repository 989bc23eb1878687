//! The Kubernetes side of Flotilla's EKS (see `flotilla-eks` for the records).
//!
//! - `plane`: control planes Flotilla launches (etcd, kube-apiserver, kube-controller-manager,
//!   with certificates it makes) or is given; implements `flotilla_eks::ControlPlanes`.
//! - `webhook`: the HTTPS endpoints API servers call: token authentication (`aws eks get-token`
//!   tokens, verified as presigned STS GetCallerIdentity URLs) and profile admission.
//! - `scheduler`: the Fargate scheduler: pods for `fargate-scheduler` become Flotilla tasks on
//!   `fargate-ip-...` nodes.
//! - `kubelet`: each Fargate node's kubelet API (logs, exec).
//!
//! CONTRACT (eks-base): module owners are `k8splane` (plane, webhook) and `fargatesched`
//! (scheduler, kubelet).

pub mod kubelet;
pub mod plane;
pub mod scheduler;
pub mod webhook;

use std::path::{Path, PathBuf};

/// The Kubernetes control-plane binaries Flotilla launches: `--kubernetes-bin DIR` when given,
/// else the directory holding `kube-apiserver` on PATH. For tests: [`test_binaries`].
pub fn find_binaries(configured: Option<&Path>) -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("kube-apiserver").is_file() && d.join("kube-controller-manager").is_file();
    if let Some(dir) = configured {
        return if has_both(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(format!(
                "{} lacks kube-apiserver or kube-controller-manager; point --kubernetes-bin at the directory holding both",
                dir.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| has_both(d)).ok_or_else(|| {
        "kube-apiserver and kube-controller-manager are not on PATH; install them or give --kubernetes-bin DIR"
            .to_string()
    })
}

/// For tests: the Kubernetes 1.20 binaries shipped beside the project
/// (`../shared/tools/kubernetes`, unpacked once by its `unpack.sh`). `FLOTILLA_KUBE_TOOLS`
/// names the tools directory when it is elsewhere.
pub fn test_binaries() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates: Vec<PathBuf> = std::env::var_os("FLOTILLA_KUBE_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join("../shared/tools/kubernetes"), PathBuf::from("/work/shared/tools/kubernetes")])
        .collect();
    let tools = candidates
        .iter()
        .find(|d| d.join("unpack.sh").is_file())
        .ok_or_else(|| format!("no Kubernetes tools (unpack.sh) in any of {candidates:?}; set FLOTILLA_KUBE_TOOLS"))?;
    let out = std::process::Command::new("bash")
        .arg(tools.join("unpack.sh"))
        .output()
        .map_err(|e| format!("{}: {e}", tools.join("unpack.sh").display()))?;
    if !out.status.success() {
        return Err(format!("unpack.sh failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    find_binaries(Some(&dir))
}
