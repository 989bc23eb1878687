//! Flotilla's EKS subset: clusters and their Fargate profiles, kept in the store under `eks/`.
//!
//! A cluster is a Kubernetes control plane: one Flotilla launches and keeps running (as EKS
//! does) or one an operator registered (endpoint, CA and the credentials Flotilla uses). What
//! talks to Kubernetes lives in `flotilla-k8s`, behind [`ControlPlanes`]; this crate holds the
//! records, EKS's rules for them, the Fargate pod sizing table and profile matching, and the
//! reconciler that moves clusters and profiles through their statuses.
//!
//! CONTRACT (eks-base): the items below are shared by three workstreams. Their signatures stay;
//! bodies marked `todo!` are being written by the owner (`eks-api`).

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_store::Store;
use flotilla_types::arn::Identity;
use flotilla_types::tag::Tag;
use flotilla_types::time::Timestamp;
use serde::{Deserialize, Serialize};

/// A boxed future, as the `dyn` [`ControlPlanes`] returns.
pub type PlaneFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterStatus {
    Creating,
    Active,
    Deleting,
    Failed,
    Updating,
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProfileStatus {
    Creating,
    Active,
    Deleting,
    CreateFailed,
    DeleteFailed,
}

/// Where a cluster's Kubernetes control plane comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PlaneSource {
    /// Flotilla launches and supervises etcd, kube-apiserver and kube-controller-manager.
    Launched,
    /// An existing cluster (k3s, kubeadm): Flotilla is only its Fargate side.
    Registered { endpoint: String, ca_pem: String, auth: KubeAuth },
}

/// How Flotilla authenticates to a Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum KubeAuth {
    Token { token: String },
    ClientCertificate { cert_pem: String, key_pem: String },
}

/// What Flotilla needs to talk to a cluster's API server as its administrator.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeAccess {
    /// `https://host:port`.
    pub endpoint: String,
    pub ca_pem: String,
    pub auth: KubeAuth,
}

/// A cluster as the store keeps it (`eks/clusters/<name>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub name: String,
    pub arn: String,
    pub status: ClusterStatus,
    /// Kubernetes `major.minor` as EKS reports it (the launched API server's).
    pub version: String,
    pub role_arn: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub vpc_id: String,
    pub service_ipv4_cidr: String,
    /// The API server's address, once the plane answers.
    pub endpoint: Option<String>,
    /// The API server's CA, PEM (the wire carries it base64'd as `certificateAuthority.data`).
    pub ca_pem: Option<String>,
    /// The IAM principal that created the cluster: its administrator (`system:masters`).
    pub creator_arn: String,
    pub created_at: Timestamp,
    pub source: PlaneSource,
    pub tags: Vec<Tag>,
    /// Why the cluster is FAILED, when it is.
    pub failure: Option<String>,
}

/// One selector of a Fargate profile: a namespace, and labels that must all match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A Fargate profile as the store keeps it (`eks/profiles/<cluster>/<name>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateProfile {
    pub name: String,
    pub arn: String,
    pub cluster_name: String,
    pub created_at: Timestamp,
    pub pod_execution_role_arn: String,
    pub subnets: Vec<String>,
    pub selectors: Vec<Selector>,
    pub status: ProfileStatus,
    pub tags: Vec<Tag>,
}

/// The label a pod names its profile with when several match.
pub const PROFILE_LABEL: &str = "eks.amazonaws.com/fargate-profile";

/// The profile a pod in `namespace` with `labels` runs under: one whose selector's namespace
/// equals and whose selector labels all match. When several match, the one the pod names with
/// [`PROFILE_LABEL`], else the first by name (EKS picks one at random; Flotilla is
/// deterministic). Only ACTIVE profiles are considered.
pub fn match_profile<'a>(
    profiles: &'a [FargateProfile],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a FargateProfile> {
    let _ = (profiles, namespace, labels);
    todo!("eks-api")
}

/// The Kubernetes side: launches, adopts and stops control planes (`flotilla-k8s`).
pub trait ControlPlanes: Send + Sync {
    /// Makes the cluster's control plane run (launching it, or adopting one this host launched
    /// before a restart; for a registered cluster, checking it answers) and configured for
    /// Flotilla (token webhook, the admission webhook's registration). Returns once its API
    /// server answers; the endpoint and CA the clients of the cluster use.
    fn ensure<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(String, String), String>>;
    /// Stops and forgets a launched plane (its data too); for a registered one, removes what
    /// Flotilla configured in it.
    fn remove<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(), String>>;
    /// How Flotilla itself reaches the cluster's API server as its administrator.
    fn access<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>>;
}

#[derive(Debug, thiserror::Error)]
pub enum EksError {
    #[error("No cluster found for name: {0}.")]
    ClusterNotFound(String),
    #[error("No Fargate Profile found with name: {0}.")]
    ProfileNotFound(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Store(#[from] flotilla_store::StoreError),
}

/// The EKS subset over the store.
pub struct Eks {
    #[allow(dead_code)]
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    identity: Identity,
    #[allow(dead_code)]
    planes: Option<Arc<dyn ControlPlanes>>,
}

impl Eks {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> Eks {
        Eks { store, identity, planes: None }
    }

    /// Gives the reconciler the Kubernetes side. Without one, clusters stay CREATING.
    pub fn with_planes(mut self, planes: Arc<dyn ControlPlanes>) -> Eks {
        self.planes = Some(planes);
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub async fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, EksError> {
        let _ = name;
        todo!("eks-api")
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterRecord>, EksError> {
        todo!("eks-api")
    }

    /// The cluster's profiles, every status.
    pub async fn profiles(&self, cluster: &str) -> Result<Vec<FargateProfile>, EksError> {
        let _ = cluster;
        todo!("eks-api")
    }

    /// How Flotilla reaches an ACTIVE cluster's API server (through [`ControlPlanes::access`]).
    pub async fn access(&self, cluster: &str) -> Result<KubeAccess, EksError> {
        let _ = cluster;
        todo!("eks-api")
    }

    /// Moves clusters and profiles through their statuses until `shutdown` fires: CREATING
    /// clusters get their plane (`ensure`) and become ACTIVE (or FAILED with the reason);
    /// clusters found ACTIVE at start are ensured again (adopted); DELETING ones are removed
    /// and their records deleted; profiles become ACTIVE once their cluster is, and DELETING
    /// ones go. Run by `flotilla up` (and by the server holding the `eks` role).
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let _ = shutdown;
        todo!("eks-api")
    }
}
