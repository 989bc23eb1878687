//! The reconciler: moves clusters and profiles through their statuses. Each pass re-reads
//! every record under `eks/` (after any change there, and every few seconds) and writes by
//! compare-and-write, so a pass may be repeated or cut short at any point. The slow part, a
//! control plane's `ensure` and `remove`, runs as one task a cluster, so one cluster's launch
//! never holds up another's; its outcome is written only if the record still asks for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use tokio::task::{Id, JoinSet};

use crate::record::{self, StoredCluster, cluster_key, encode, profiles_prefix};
use crate::{ClusterStatus, Eks, EksError, FargateProfile, NO_PLANES, ProfileStatus};

/// A pass at least this often, without changes.
const PASS_INTERVAL: Duration = Duration::from_secs(5);
/// How long after a failed adoption (`ensure` of an ACTIVE cluster) it is tried again.
const ADOPT_RETRY: Duration = Duration::from_secs(30);

/// What a cluster's task did.
enum Done {
    /// The cluster's plane answers (`true`: created or adopted by this process), or an ACTIVE
    /// cluster's does not (`false`: tried again later).
    Ensured(String, bool),
    /// A CREATING cluster became FAILED, or a DELETING one was removed or not.
    Settled,
}

/// The reconciler's memory between passes: which clusters have a task running, and which
/// ACTIVE ones were ensured since this process started.
#[derive(Default)]
struct Passes {
    tasks: JoinSet<Done>,
    busy: HashMap<Id, String>,
    adopted: HashSet<String>,
    retry_adoption: HashMap<String, Instant>,
}

impl Passes {
    fn busy(&self, name: &str) -> bool {
        self.busy.values().any(|n| n == name)
    }
}

impl Eks {
    pub(crate) async fn reconcile(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut changes = self.store.watch(record::ROOT);
        let mut passes = Passes::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.clone().pass(&mut passes).await {
                tracing::warn!(error = %e, "EKS reconciler pass failed; retrying");
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { return },
                r = changes.next() => if r.is_err() { changes = self.store.watch(record::ROOT) },
                Some(done) = passes.tasks.join_next_with_id() => {
                    let id = match &done { Ok((id, _)) => *id, Err(e) => e.id() };
                    let name = passes.busy.remove(&id).unwrap_or_default();
                    match done {
                        Ok((_, Done::Ensured(name, true))) => { passes.adopted.insert(name); }
                        Ok((_, Done::Ensured(name, false))) => {
                            passes.retry_adoption.insert(name, Instant::now() + ADOPT_RETRY);
                        }
                        Ok((_, Done::Settled)) => {}
                        Err(e) => tracing::error!(cluster = %name, error = %e, "EKS cluster task failed"),
                    }
                }
                _ = tokio::time::sleep(PASS_INTERVAL) => {}
            }
        }
    }

    /// One pass over every cluster and profile.
    async fn pass(self: Arc<Self>, passes: &mut Passes) -> Result<(), EksError> {
        for kv in self.store.list_prefix(record::CLUSTERS).await? {
            let stored: StoredCluster = record::decode(&kv)?;
            let name = stored.cluster.name.clone();
            let task_name = name.clone();
            self.settle_profiles(&name, stored.cluster.status).await?;
            if passes.busy(&name) {
                continue;
            }
            let planes = self.planes.clone();
            let work = self.clone();
            let task = match (stored.cluster.status, planes) {
                (ClusterStatus::Creating, None) => {
                    self.fail(&name, NO_PLANES).await?;
                    None
                }
                (ClusterStatus::Creating, Some(planes)) => Some(passes.tasks.spawn(async move {
                    let outcome = planes.ensure(&stored.cluster).await;
                    let ensured = outcome.is_ok();
                    match work.settle_creation(&name, outcome).await {
                        Ok(()) if ensured => Done::Ensured(name, true),
                        Ok(()) => Done::Settled,
                        Err(e) => {
                            tracing::warn!(cluster = %name, error = %e, "cannot record the cluster's new status");
                            Done::Settled
                        }
                    }
                })),
                (ClusterStatus::Active, planes) => {
                    let due = passes.retry_adoption.get(&name).is_none_or(|t| *t <= Instant::now());
                    match planes {
                        _ if passes.adopted.contains(&name) || !due => None,
                        None => {
                            tracing::warn!(cluster = %name, "{NO_PLANES}: the ACTIVE cluster's plane is not run");
                            passes.adopted.insert(name);
                            None
                        }
                        Some(planes) => Some(passes.tasks.spawn(async move {
                            let ok = match planes.ensure(&stored.cluster).await {
                                Ok((endpoint, ca)) => match work.record_plane(&name, endpoint, ca).await {
                                    Ok(()) => true,
                                    Err(e) => {
                                        tracing::warn!(cluster = %name, error = %e, "cannot record the cluster's endpoint");
                                        false
                                    }
                                },
                                Err(reason) => {
                                    tracing::warn!(cluster = %name, %reason, "cannot adopt the cluster's control plane");
                                    false
                                }
                            };
                            Done::Ensured(name, ok)
                        })),
                    }
                }
                (ClusterStatus::Deleting, None) => {
                    self.forget(&name).await?;
                    None
                }
                (ClusterStatus::Deleting, Some(planes)) => Some(passes.tasks.spawn(async move {
                    match planes.remove(&stored.cluster).await {
                        Ok(()) => {
                            if let Err(e) = work.forget(&name).await {
                                tracing::warn!(cluster = %name, error = %e, "cannot forget the deleted cluster");
                            }
                        }
                        Err(reason) => tracing::warn!(cluster = %name, %reason, "cannot remove the cluster's control plane; retrying"),
                    }
                    Done::Settled
                })),
                (ClusterStatus::Failed | ClusterStatus::Updating | ClusterStatus::Pending, _) => None,
            };
            if let Some(handle) = task {
                passes.busy.insert(handle.id(), task_name);
            }
        }
        Ok(())
    }

    /// Profiles follow their cluster: CREATING ones become ACTIVE once it is, DELETING ones go.
    async fn settle_profiles(&self, cluster: &str, status: ClusterStatus) -> Result<(), EksError> {
        for kv in self.store.list_prefix(&profiles_prefix(cluster)).await? {
            let mut profile: FargateProfile = record::decode(&kv)?;
            let txn = match profile.status {
                ProfileStatus::Deleting => Txn::new().then(Op::delete(&kv.key)),
                ProfileStatus::Creating if status == ClusterStatus::Active => {
                    profile.status = ProfileStatus::Active;
                    Txn::new().then(Op::put(&kv.key, encode(&profile)))
                }
                _ => continue,
            };
            // A conflict means someone changed the profile: the next pass sees it.
            self.store.txn(txn.when(Compare::revision(&kv.key, kv.mod_revision))).await?;
        }
        Ok(())
    }

    /// Changes the cluster's record if `change` says so (returns true), by compare-and-write.
    async fn update_cluster(&self, name: &str, change: impl Fn(&mut StoredCluster) -> bool) -> Result<(), EksError> {
        let key = cluster_key(name);
        for _ in 0..crate::CONFLICT_RETRIES {
            let Some((mut stored, revision)) = self.read::<StoredCluster>(&key).await? else { return Ok(()) };
            if !change(&mut stored) {
                return Ok(());
            }
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&stored)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(EksError::InUse(format!("Cluster {name} is being changed by other requests; retry.")))
    }

    async fn fail(&self, name: &str, reason: &str) -> Result<(), EksError> {
        tracing::warn!(cluster = %name, %reason, "EKS cluster FAILED");
        self.update_cluster(name, |s| {
            let creating = s.cluster.status == ClusterStatus::Creating;
            if creating {
                s.cluster.status = ClusterStatus::Failed;
                s.cluster.failure = Some(reason.to_string());
            }
            creating
        })
        .await
    }

    async fn settle_creation(&self, name: &str, outcome: Result<(String, String), String>) -> Result<(), EksError> {
        match outcome {
            Ok((endpoint, ca)) => {
                tracing::info!(cluster = %name, %endpoint, "EKS cluster ACTIVE");
                self.update_cluster(name, |s| {
                    let creating = s.cluster.status == ClusterStatus::Creating;
                    if creating {
                        s.cluster.status = ClusterStatus::Active;
                        s.cluster.endpoint = Some(endpoint.clone());
                        s.cluster.ca_pem = Some(ca.clone());
                        s.cluster.failure = None;
                    }
                    creating
                })
                .await
            }
            Err(reason) => self.fail(name, &reason).await,
        }
    }

    /// Records an adopted plane's endpoint and CA when they changed.
    async fn record_plane(&self, name: &str, endpoint: String, ca: String) -> Result<(), EksError> {
        self.update_cluster(name, |s| {
            let changed = s.cluster.status == ClusterStatus::Active
                && (s.cluster.endpoint.as_deref() != Some(&endpoint) || s.cluster.ca_pem.as_deref() != Some(&ca));
            if changed {
                s.cluster.endpoint = Some(endpoint.clone());
                s.cluster.ca_pem = Some(ca.clone());
            }
            changed
        })
        .await
    }

    /// Deletes a DELETING cluster's record and any profile record left under it.
    async fn forget(&self, name: &str) -> Result<(), EksError> {
        let key = cluster_key(name);
        let Some(kv) = self.store.get(&key).await? else { return Ok(()) };
        let stored: StoredCluster = record::decode(&kv)?;
        if stored.cluster.status != ClusterStatus::Deleting {
            return Ok(());
        }
        let mut txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::delete(&key));
        for profile in self.store.list_prefix(&profiles_prefix(name)).await? {
            txn = txn.then(Op::delete(profile.key));
        }
        if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
            tracing::info!(cluster = %name, "EKS cluster deleted");
        }
        Ok(())
    }
}
