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
