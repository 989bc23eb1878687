//! Cloud Map's asynchronous operations and the worker that carries them out.
//!
//! A request writes the operation (SUBMITTED) and a `pending/` marker in one transaction. The
//! worker takes unfinished operations in the order they were written, marks each PENDING, then
//! re-reads the world, decides, and commits the change together with SUCCESS (or just FAIL with
//! the reason) and the removal of the marker. Every step is compare-and-write on the operation,
//! so a second worker (another process, later) can never apply an operation twice.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use flotilla_store::{Compare, KeyValue, Op, Txn, TxnOutcome};
use tokio::sync::Notify;

use crate::error::{DiscoveryError, Result};
use crate::record::{
    Instance, Namespace, OPERATIONS, Operation, OperationStatus, OperationType, PENDING, Service, Work, decode, encode,
    instance_key, namespace_key, namespace_name_key, new_id, now_millis, operation_key, pending_key, service_key,
};
use crate::{CONFLICT_RETRIES, Discovery, OPERATIONS_POLL, Page, paginate};

/// Finished operations are kept this long for GetOperation and ListOperations.
const OPERATION_RETENTION_MILLIS: i64 = 24 * 3600 * 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Default)]
pub struct OperationQuery {
    pub namespace_ids: Option<Vec<String>>,
    pub service_ids: Option<Vec<String>>,
    pub statuses: Option<Vec<OperationStatus>>,
    pub types: Option<Vec<OperationType>>,
    /// Inclusive bounds on the last update, in epoch milliseconds.
    pub updated_between: Option<(i64, i64)>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

impl OperationQuery {
    fn matches(&self, op: &Operation) -> bool {
        let within = |ids: &Option<Vec<String>>, id: &Option<String>| {
            ids.as_ref().is_none_or(|ids| id.as_ref().is_some_and(|id| ids.contains(id)))
        };
        within(&self.namespace_ids, &op.namespace_id)
            && within(&self.service_ids, &op.service_id)
            && self.statuses.as_ref().is_none_or(|s| s.contains(&op.status))
            && self.types.as_ref().is_none_or(|t| t.contains(&op.kind))
            && self.updated_between.is_none_or(|(from, to)| (from..=to).contains(&op.updated_millis))
    }
}

/// A new SUBMITTED operation.
pub(crate) fn submitted(
    kind: OperationType,
    work: Work,
    namespace_id: Option<String>,
    service_id: Option<String>,
    instance_id: Option<String>,
) -> Operation {
    let now = now_millis();
    Operation {
        id: format!("{}-{}", new_id("", 32), new_id("", 8)),
        kind,
        status: OperationStatus::Submitted,
        namespace_id,
        service_id,
        instance_id,
        created_millis: now,
        updated_millis: now,
        error_code: None,
        error_message: None,
        work,
    }
}

/// The writes that queue `op`, to go into the request's transaction.
pub(crate) fn queue_ops(op: &Operation) -> [Op; 2] {
    [Op::put(operation_key(&op.id), encode(op)), Op::put(pending_key(&op.id), op.id.as_bytes().to_vec())]
}

/// What the worker decided for one operation.
enum Plan {
    Apply(Txn),
    Fail(DiscoveryError),
}

/// The `ErrorCode` an operation that failed for `e` reports.
fn failure_code(e: &DiscoveryError) -> &'static str {
    match e {
        DiscoveryError::NamespaceNotFound { .. } => "NAMESPACE_NOT_FOUND",
        DiscoveryError::ServiceNotFound { .. } => "SERVICE_NOT_FOUND",
        DiscoveryError::InstanceNotFound { .. } => "INSTANCE_NOT_FOUND",
        DiscoveryError::ResourceInUse(_) => "RESOURCE_IN_USE",
        DiscoveryError::InvalidInput(_) => "INVALID_INPUT",
        _ => "INTERNAL_FAILURE",
    }
}

impl Discovery {
    pub async fn operation(&self, id: &str) -> Result<Operation> {
        match self.get(&operation_key(id)).await? {
            Some(kv) => decode(&kv),
            None => Err(DiscoveryError::OperationNotFound { id: id.to_owned() }),
        }
    }

    pub async fn list_operations(&self, query: &OperationQuery) -> Result<Page<Operation>> {
        let mut ops = Vec::new();
        for kv in self.store.list_prefix(OPERATIONS).await? {
            let op: Operation = decode(&kv)?;
            if query.matches(&op) {
                ops.push(op);
            }
        }
        paginate(ops, |op| &op.id, query.max_results, query.next_token.as_deref())
    }

    /// Records `op` for the worker and returns its id.
    pub(crate) async fn queue(&self, op: Operation) -> Result<String> {
        let mut txn = Txn::new().when(Compare::absent(operation_key(&op.id)));
        txn.ops.extend(queue_ops(&op));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => {
                self.work.notify_one();
                Ok(op.id)
            }
            // Only a colliding random id gets here.
            TxnOutcome::Conflict => Err(DiscoveryError::DuplicateRequest {
                operation_id: op.id,
                message: "An operation with this id already exists".into(),
            }),
        }
    }

    /// Unfinished operations, oldest first, with the record each was read from.
    pub(crate) async fn pending_operations(&self) -> Result<Vec<(KeyValue, Operation)>> {
        let mut ops = Vec::new();
        for marker in self.store.list_prefix(PENDING).await? {
            let id = &marker.key[PENDING.len()..];
            if let Some(kv) = self.get(&operation_key(id)).await? {
                let op: Operation = decode(&kv)?;
                if !op.status.is_finished() {
                    ops.push((kv, op));
                    continue;
                }
            }
            // A marker whose operation is gone or finished guards nothing.
            let _ = self.store.txn(Txn::new().then(Op::delete(&marker.key))).await?;
        }
        ops.sort_by_key(|(kv, _)| kv.create_revision);
        Ok(ops)
    }

    /// Carries out every unfinished operation.
    async fn drain(&self) -> Result<()> {
        // Bounded so that an operation that keeps losing races cannot hold the worker forever;
        // the next poll picks it up again.
        for _ in 0..CONFLICT_RETRIES {
            let pending = self.pending_operations().await?;
            if pending.is_empty() {
                return Ok(());
            }
            for (kv, op) in pending {
                self.complete(kv, op).await?;
            }
        }
        Ok(())
    }

    async fn complete(&self, mut kv: KeyValue, mut op: Operation) -> Result<()> {
        let key = operation_key(&op.id);
        for _ in 0..CONFLICT_RETRIES {
            if op.status == OperationStatus::Submitted {
                op.status = OperationStatus::Pending;
                op.updated_millis = now_millis();
                let txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::put(&key, encode(&op)));
                self.store.txn(txn).await?;
            } else {
                let mut done = op.clone();
                let mut txn = match self.plan(&op.work).await? {
                    Plan::Apply(txn) => {
                        done.status = OperationStatus::Success;
                        txn
                    }
                    Plan::Fail(e) => {
                        tracing::info!(operation = %op.id, kind = op.kind.as_str(), error = %e, "operation failed");
                        done.status = OperationStatus::Fail;
                        done.error_code = Some(failure_code(&e).to_owned());
                        done.error_message = Some(e.to_string());
                        Txn::new()
                    }
                };
                debug_assert!(op.status.can_become(done.status));
                done.updated_millis = now_millis();
                txn.compares.push(Compare::revision(&key, kv.mod_revision));
                txn.ops.push(Op::put(&key, encode(&done)));
                txn.ops.push(Op::delete(pending_key(&op.id)));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                    return Ok(());
                }
            }
            // Re-read after every step: the PENDING write's revision, or whatever won the race.
            match self.get(&key).await? {
                Some(fresh) => {
                    op = decode(&fresh)?;
                    kv = fresh;
                    if op.status.is_finished() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Reads what `work` touches and decides: the transaction that carries it out, or why not.
    async fn plan(&self, work: &Work) -> Result<Plan> {
        Ok(match work {
            Work::CreateNamespace(ns) => {
                let key = namespace_key(&ns.id);
                Plan::Apply(Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(ns))))
            }
            Work::DeleteNamespace { namespace_id } => {
                let key = namespace_key(namespace_id);
                let Some(kv) = self.get(&key).await? else {
                    return Ok(Plan::Fail(DiscoveryError::NamespaceNotFound { id: namespace_id.clone() }));
                };
                let ns: Namespace = decode(&kv)?;
                if ns.service_count > 0 {
                    return Ok(Plan::Fail(DiscoveryError::ResourceInUse(format!(
                        "Namespace {namespace_id} has {} service(s); delete them first.",
                        ns.service_count
                    ))));
                }
                Plan::Apply(
                    Txn::new()
                        .when(Compare::revision(&key, kv.mod_revision))
                        .then(Op::delete(&key))
                        .then(Op::delete(namespace_name_key(&ns.name))),
                )
            }
            Work::RegisterInstance(instance) => {
                let srv_key = service_key(&instance.service_id);
                let Some(srv_kv) = self.get(&srv_key).await? else {
                    return Ok(Plan::Fail(DiscoveryError::ServiceNotFound { id: instance.service_id.clone() }));
                };
                let mut service: Service = decode(&srv_kv)?;
                let key = instance_key(&instance.service_id, &instance.id);
                let existing = self.get(&key).await?;
                let mut record = instance.clone();
                let guard = match &existing {
                    Some(kv) => {
                        // Re-registering updates attributes but keeps the reported health.
                        let old: Instance = decode(kv)?;
                        record.health = old.health;
                        Compare::revision(&key, kv.mod_revision)
                    }
                    None => {
                        service.instance_count += 1;
                        Compare::absent(&key)
                    }
                };
                // The service is written even when its count is unchanged: its revision is the
                // instances' revision that DiscoverInstances reports.
                Plan::Apply(
                    Txn::new()
                        .when(Compare::revision(&srv_key, srv_kv.mod_revision))
                        .when(guard)
                        .then(Op::put(&key, encode(&record)))
                        .then(Op::put(&srv_key, encode(&service))),
                )
            }
            Work::DeregisterInstance { service_id, instance_id } => {
                let srv_key = service_key(service_id);
                let Some(srv_kv) = self.get(&srv_key).await? else {
                    return Ok(Plan::Fail(DiscoveryError::ServiceNotFound { id: service_id.clone() }));
                };
                let key = instance_key(service_id, instance_id);
                let Some(kv) = self.get(&key).await? else {
                    return Ok(Plan::Fail(DiscoveryError::InstanceNotFound {
                        service_id: service_id.clone(),
                        instance_id: instance_id.clone(),
                    }));
                };
                let mut service: Service = decode(&srv_kv)?;
                service.instance_count = service.instance_count.saturating_sub(1);
                Plan::Apply(
                    Txn::new()
                        .when(Compare::revision(&srv_key, srv_kv.mod_revision))
                        .when(Compare::revision(&key, kv.mod_revision))
                        .then(Op::delete(&key))
                        .then(Op::put(&srv_key, encode(&service))),
                )
            }
        })
    }

    /// Forgets finished operations older than the retention.
    async fn prune(&self) -> Result<()> {
        let cutoff = now_millis() - OPERATION_RETENTION_MILLIS;
        let mut txn = Txn::new();
        for kv in self.store.list_prefix(OPERATIONS).await? {
            let op: Operation = decode(&kv)?;
            if op.status.is_finished() && op.updated_millis < cutoff {
                txn = txn.when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::delete(&kv.key));
            }
            if txn.ops.len() >= 100 {
                self.store.txn(std::mem::take(&mut txn)).await?;
            }
        }
        if !txn.ops.is_empty() {
            self.store.txn(txn).await?;
        }
        Ok(())
    }
}

/// Runs operations as they are queued, and every [`OPERATIONS_POLL`] anyway, until the
/// [`Discovery`] is dropped.
pub(crate) async fn run_worker(discovery: Weak<Discovery>, work: Arc<Notify>) {
    let mut last_prune: Option<Instant> = None;
    loop {
        {
            let Some(discovery) = discovery.upgrade() else { return };
            if let Err(e) = discovery.drain().await {
                tracing::warn!(error = %e, "service discovery operations could not run; retrying");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                if let Err(e) = discovery.prune().await {
                    tracing::warn!(error = %e, "pruning old service discovery operations failed");
                }
                last_prune = Some(Instant::now());
            }
        }
        let _ = tokio::time::timeout(OPERATIONS_POLL, work.notified()).await;
    }
}
