//! The control plane: what users have asked for (clusters, task definitions, tasks, services)
//! and the rules for changing it.
//!
//! Every public method is one API request's worth of work: it reads the store, decides, and
//! commits with compare-and-write, retrying only its own optimistic-concurrency conflicts.
//!
//! **Architecture Invariant:** this crate never touches the kernel, the network or the wire
//! protocol. It speaks domain types in and out; the `api` crate maps them to AWS shapes and
//! maps [`ControlError`] to AWS error codes.

mod capacity;
mod cluster;
mod error;
mod exec;
mod host;
mod page;
mod record;
mod roles;
mod service;
mod tags;
mod task;
mod task_definition;
mod task_files;
mod task_roles;
mod vpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_store::Store;
/// The installation's region and account; it builds every ARN (`flotilla_types::arn`).
pub use flotilla_types::Identity;

pub use capacity::{CapacityProvider, CapacityProviderStrategyItem};
pub use cluster::{Cluster, ClusterInclude, ClusterSetting, CreateClusterInput};
pub use error::ControlError;
pub use exec::{EXEC_REFUSED, ExecPlacement};
pub use host::{Allocation, HostLiveness, HostView, LocalHostApi, Reservation};
pub use page::Page;
pub use roles::{hold_role, process_holder};
pub use service::{
    BreakerState, CircuitBreaker, CreateServiceInput, DeleteServiceInput, Deployment, DeploymentConfiguration,
    DeploymentController, DeploymentStatus, ListServiceDeploymentsInput, ListServicesInput, LoadBalancer, PassSummary,
    ProtectedTask, RevisionSummary, Rollback, RolloutState, Service, ServiceDeployment, ServiceDeploymentBrief,
    ServiceDeploymentStatus, ServiceEvent, ServiceRecord, ServiceRegistry, ServiceRevision, ServiceStatus, StopType,
    UpdateServiceInput,
};
pub use task::{ListTasksInput, RunTaskInput, TaskRecord};
pub use task_definition::{FamilyStatusFilter, ListTaskDefinitionsInput, SortOrder};
pub use task_files::TaskFiles;
pub use task_roles::{AWSLOGS_NEEDS_ROLE, ECS_TASKS, REGISTRY_AUTH_NEEDS_ROLE, SECRETS_NEED_ROLE, unable_to_assume};
pub use vpc::{
    AddressLease, AwsvpcPlacement, CidrError, CreateSubnetInput, CreateVpcInput, DEFAULT_PUBLIC_IP_POOL,
    DEFAULT_VPC_CIDR, ElbVpcs, GroupRef, GroupSelector, IpProtocol, Ipv4Cidr, NetworkError, NetworkInterface,
    NetworkInterfaceSpec, NetworkResource, RESERVED_ADDRESSES, ResourceFilter, RuleChange, RuleDirection, RulePeer,
    RulePeerSpec, RuleSpec, SecurityGroup, SecurityGroupRule, Subnet, Tag, TagRemoval, Vpc, keys as network_keys,
    vni_of,
};

pub struct Control {
    store: Arc<dyn Store>,
    identity: Identity,
    /// Serialises revision allocation per family inside this process; compare-and-write keeps
    /// it correct across processes.
    family_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// VPC networking settings (the public IP pool) and allocation queues.
    network: vpc::NetworkState,
    /// Cloud Map, where services register their tasks; attached by the server that runs it.
    discovery: std::sync::OnceLock<Arc<flotilla_discovery::Discovery>>,
    /// Elastic Load Balancing, whose target groups services register their tasks in; attached
    /// by the server that runs it.
    elb: std::sync::OnceLock<Arc<flotilla_elb::Elb>>,
    /// IAM, which task definitions' roles are checked against and the platform acts for a
    /// task's execution role through; absent, the platform acts for the account.
    iam: std::sync::OnceLock<Arc<flotilla_iam::Iam>>,
    /// Fargate's rules for task definitions without an execution role (`--require-roles`).
    require_roles: bool,
    /// Fills tasks' file volumes (an EKS pod's configMaps and secrets); attached by the server
    /// that runs the Fargate scheduler.
    task_files: std::sync::OnceLock<Arc<dyn TaskFiles>>,
    /// Hosts' heartbeats heard and not yet written (answered from memory).
    heartbeats: Arc<host::Heartbeats>,
}

impl Control {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> Control {
        Control {
            store,
            identity,
            family_locks: Mutex::new(HashMap::new()),
            network: Default::default(),
            discovery: Default::default(),
            elb: Default::default(),
            iam: Default::default(),
            require_roles: false,
            task_files: Default::default(),
            heartbeats: Arc::new(host::Heartbeats::from_env()),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Gives the control plane the Cloud Map that service registries name (once).
    pub fn attach_discovery(&self, discovery: Arc<flotilla_discovery::Discovery>) {
        let _ = self.discovery.set(discovery);
    }

    pub(crate) fn discovery(&self) -> Option<&Arc<flotilla_discovery::Discovery>> {
        self.discovery.get()
    }

    /// Gives the control plane the load balancers that services and the host API name (once).
    pub fn attach_load_balancing(&self, elb: Arc<flotilla_elb::Elb>) {
        let _ = self.elb.set(elb);
    }

    pub(crate) fn elb(&self) -> Option<&Arc<flotilla_elb::Elb>> {
        self.elb.get()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn family_lock(&self, family: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.family_locks.lock().expect("family lock table poisoned");
        locks.entry(family.to_owned()).or_default().clone()
    }
}
