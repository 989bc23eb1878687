//! Flotilla's EKS subset: clusters and their Fargate profiles, kept in the store under `eks/`.
//!
//! A cluster is a Kubernetes control plane: one Flotilla launches and keeps running (as EKS
//! does) or one an operator registered (endpoint, CA and the credentials Flotilla uses). What
//! talks to Kubernetes lives in `flotilla-k8s`, behind [`ControlPlanes`]; this crate holds the
//! records, EKS's rules for them, the Fargate pod sizing table and profile matching, and the
//! reconciler that moves clusters and profiles through their statuses.
//!
//! CONTRACT (eks-base): the items below are shared by three workstreams. Their signatures stay.
//!
//! The store keeps `eks/clusters/<name>` ([`StoredCluster`]: a [`ClusterRecord`] plus what only
//! the API reads) and `eks/profiles/<cluster>/<name>`; every write is compare-and-write.
//! `clusters.rs`, `profiles.rs` and `tags.rs` are the API's operations with EKS's rules,
//! `reconcile.rs` the reconciler, `sizing.rs` the pod sizing table.
//!
//! **Architecture Invariant:** no HTTP, no AWS wire format and no Kubernetes client here;
//! `api/src/eks/` maps [`EksError`] to EKS's codes and `flotilla-k8s` implements
//! [`ControlPlanes`].

mod clusters;
mod profiles;
mod reconcile;
mod record;
pub mod sizing;
mod tags;

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_store::Store;
use flotilla_types::arn::Identity;
use flotilla_types::tag::Tag;
use flotilla_types::time::Timestamp;
use serde::{Deserialize, Serialize};

pub use clusters::{DEFAULT_SERVICE_CIDR, KUBERNETES_VERSION, Listing, NewCluster};
pub use flotilla_elb::Vpcs;
pub use profiles::{MAX_LABELS, MAX_PROFILES, MAX_SELECTORS, NewProfile};
pub use record::{CLUSTERS, PROFILES, ROOT, StoredCluster, cluster_key, profile_key, profiles_prefix};
pub use sizing::{CAPACITY_ANNOTATION, ContainerResources, PodSize, SizingError, sizing};
pub(crate) use tags::check_tags;

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
    let mut matching: Vec<&FargateProfile> = profiles
        .iter()
        .filter(|p| p.status == ProfileStatus::Active && p.selectors.iter().any(|s| s.matches(namespace, labels)))
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    let named = labels.get(PROFILE_LABEL).and_then(|name| matching.iter().find(|p| &p.name == name));
    named.or(matching.first()).copied()
}

impl Selector {
    /// Whether a pod in `namespace` with `labels` is selected: the namespace is equal and every
    /// label of the selector is on the pod with the same value.
    pub fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
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
    /// A tagging request names something that is not an EKS resource, or tags EKS refuses.
    #[error("{0}")]
    BadTagRequest(String),
    /// A tagging request's ARN names no cluster or profile here.
    #[error("{0}")]
    TagTargetNotFound(String),
    /// The VPC side (subnets, security groups) could not be asked.
    #[error("the VPC records cannot be read")]
    Vpc(#[source] flotilla_elb::ElbError),
    /// The cluster's Kubernetes side could not be reached or configured.
    #[error("cluster {cluster}: {reason}")]
    Plane { cluster: String, reason: String },
    #[error("internal store failure")]
    Store(#[from] flotilla_store::StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
}

/// The EKS subset over the store.
pub struct Eks {
    store: Arc<dyn Store>,
    identity: Identity,
    planes: Option<Arc<dyn ControlPlanes>>,
    vpcs: Option<Arc<dyn Vpcs>>,
}

/// Writes retried on conflict before giving up (other writers kept winning).
const CONFLICT_RETRIES: usize = 16;

/// Why a cluster cannot get its control plane when the server was started without one.
pub const NO_PLANES: &str = "this Flotilla has no Kubernetes control planes configured (kube-apiserver, kube-controller-manager and etcd were not found)";

impl ClusterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Creating => "CREATING",
            ClusterStatus::Active => "ACTIVE",
            ClusterStatus::Deleting => "DELETING",
            ClusterStatus::Failed => "FAILED",
            ClusterStatus::Updating => "UPDATING",
            ClusterStatus::Pending => "PENDING",
        }
    }
}

impl ProfileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileStatus::Creating => "CREATING",
            ProfileStatus::Active => "ACTIVE",
            ProfileStatus::Deleting => "DELETING",
            ProfileStatus::CreateFailed => "CREATE_FAILED",
            ProfileStatus::DeleteFailed => "DELETE_FAILED",
        }
    }
}

impl Eks {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> Eks {
        Eks { store, identity, planes: None, vpcs: None }
    }

    /// Gives CreateCluster and CreateFargateProfile the VPC records their subnets are checked
    /// against (the control plane's, as EFS and ELB use).
    pub fn with_vpcs(mut self, vpcs: Arc<dyn Vpcs>) -> Eks {
        self.vpcs = Some(vpcs);
        self
    }

    pub(crate) fn vpcs(&self) -> Result<&dyn Vpcs, EksError> {
        self.vpcs
            .as_deref()
            .ok_or_else(|| EksError::InvalidRequest("This server has no VPC records to check subnets against.".into()))
    }

    pub(crate) fn vpc_failure(&self, e: flotilla_elb::ElbError) -> EksError {
        EksError::Vpc(e)
    }

    /// Gives the reconciler the Kubernetes side. Without one, CREATING clusters become FAILED
    /// with [`NO_PLANES`] as the reason.
    pub fn with_planes(mut self, planes: Arc<dyn ControlPlanes>) -> Eks {
        self.planes = Some(planes);
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) async fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, EksError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((record::decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    pub(crate) async fn list<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, EksError> {
        self.store.list_prefix(prefix).await?.iter().map(record::decode).collect()
    }

    pub async fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, EksError> {
        Ok(self.read::<ClusterRecord>(&record::cluster_key(name)).await?.map(|(c, _)| c))
    }

    /// Every cluster, by name.
    pub async fn clusters(&self) -> Result<Vec<ClusterRecord>, EksError> {
        self.list(record::CLUSTERS).await
    }

    /// The cluster's profiles, every status, by name.
    pub async fn profiles(&self, cluster: &str) -> Result<Vec<FargateProfile>, EksError> {
        self.list(&record::profiles_prefix(cluster)).await
    }

    /// How Flotilla reaches an ACTIVE cluster's API server (through [`ControlPlanes::access`]).
    pub async fn access(&self, cluster: &str) -> Result<KubeAccess, EksError> {
        let record = self.cluster(cluster).await?.ok_or_else(|| EksError::ClusterNotFound(cluster.to_string()))?;
        if record.status != ClusterStatus::Active {
            return Err(EksError::InvalidRequest(format!(
                "Cluster {cluster} is {}, not ACTIVE.",
                record.status.as_str()
            )));
        }
        let planes = self
            .planes
            .as_ref()
            .ok_or_else(|| EksError::Plane { cluster: cluster.to_string(), reason: NO_PLANES.to_string() })?;
        planes.access(&record).await.map_err(|reason| EksError::Plane { cluster: cluster.to_string(), reason })
    }

    /// Moves clusters and profiles through their statuses until `shutdown` fires: CREATING
    /// clusters get their plane (`ensure`) and become ACTIVE (or FAILED with the reason);
    /// clusters found ACTIVE at start are ensured again (adopted); DELETING ones are removed
    /// and their records deleted; profiles become ACTIVE once their cluster is, and DELETING
    /// ones go. Run by `flotilla up` (and by the server holding the `eks` role).
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.reconcile(shutdown).await
    }
}

#[cfg(test)]
mod tests;
