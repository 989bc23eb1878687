//! The etcd backend: the same [`Store`] over an etcd v3 cluster, for many servers sharing state.
//!
//! Keys live under a prefix (default `flotilla/`) so that one etcd can hold other things: data
//! under `<prefix>kv/`, singleton roles under `<prefix>roles/`, transaction ids under
//! `<prefix>txn/`. A transaction is one etcd `Txn` comparing mod-revisions (`0` means absent,
//! as for etcd itself); its revision is etcd's. Each also writes a unique id key (leased, gone
//! after half a minute or so) and requires it absent, so sending it again after an unknown outcome
//! (a member died with it in flight) applies it at most once and tells whether it had applied.
//! Watchers share one etcd watch per store ([`watch`]), which resumes after a disconnect from
//! the revision after the last one it delivered. `get` and `list_prefix` are linearizable (a
//! ReadIndex round trip through the leader); `get_stale` and `list_prefix_stale` are etcd's
//! serializable reads, answered by whichever member from its own copy, and kept
//! read-your-writes for this process by a revision floor ([`stale`]). Roles are a lease kept alive plus a key
//! written only if absent ([`role`]); no etcd lock or election API is involved.
//!
//! **Architecture Invariant:** every etcd call has a deadline ([`EtcdOptions::deadline`]): with
//! the quorum lost a request fails with [`StoreError::Unavailable`], it never hangs. A request
//! is retried within its deadline only when it cannot have been applied (it was never sent, or
//! it only reads).

mod role;
mod stale;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::{Batch, Compare, KeyValue, Leadership, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch};

/// How long one etcd call may take before it fails as unavailable.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// The lease behind a singleton role: a dead holder's role passes on within about this long.
pub const DEFAULT_ROLE_TTL: Duration = Duration::from_secs(5);
/// Keys one range request returns at most; larger listings page at one revision.
const PAGE: i64 = 1000;
/// Largest answer read from etcd (a page of large records, a watch response carrying a big
/// transaction): tonic's default of 4 MiB is too small for either.
pub(crate) const MAX_MESSAGE: usize = 256 << 20;
/// Transaction id keys live on a lease of this TTL, replaced after half of it: long enough to
/// outlive every retry of their transaction (one deadline), short enough that the keys one
/// lease's expiry deletes at once stay few at thousands of transactions a second.
const TXN_ID_TTL: Duration = Duration::from_secs(30);

/// Files for TLS to the etcd members, as etcd's own `--cacert`, `--cert` and `--key`. With a CA
/// the members are dialled over `https`; a certificate and key make it mutual TLS.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key this store reads or writes starts with it.
    pub prefix: String,
    pub tls: TlsFiles,
    pub deadline: Duration,
    pub role_ttl: Duration,
}

impl EtcdOptions {
    /// Parses `etcd://h1:2379,h2:2379[/prefix/]`.
    pub fn from_url(url: &str, tls: TlsFiles) -> Result<EtcdOptions, StoreError> {
        let invalid = |why: &str| StoreError::Open {
            path: url.to_owned(),
            source: format!("{why}; expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX/]").into(),
        };
        let rest = url.strip_prefix("etcd://").ok_or_else(|| invalid("the scheme is not etcd://"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, "")) => (hosts, "flotilla/".to_owned()),
            Some((hosts, prefix)) => (hosts, format!("{}/", prefix.trim_end_matches('/'))),
            None => (rest, "flotilla/".to_owned()),
        };
        let endpoints: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if endpoints.is_empty() {
            return Err(invalid("no member is named"));
        }
        if let Some(bad) = endpoints.iter().find(|e| e.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
        {
            return Err(invalid(&format!("member {bad} has no port")));
        }
        Ok(EtcdOptions { endpoints, prefix, tls, deadline: DEFAULT_DEADLINE, role_ttl: DEFAULT_ROLE_TTL })
    }

    fn url(&self) -> String {
        format!("etcd://{}/{}", self.endpoints.join(","), self.prefix.trim_end_matches('/'))
    }
}

/// Opens the store a URL names: `etcd://h1:2379,h2:2379` (optionally `/prefix` after the
/// members). Fails with an error naming the URL and what to check when no member answers.
pub async fn open(url: &str, tls: &TlsFiles) -> Result<Arc<dyn Store>, StoreError> {
    let options = EtcdOptions::from_url(url, tls.clone())?;
    Ok(Arc::new(EtcdStore::connect(options).await?))
}

pub struct EtcdStore {
    client: Client,
    options: Arc<EtcdOptions>,
    /// `<prefix>kv/`: the store's keys are etcd's keys without it.
    data: String,
    events: broadcast::Sender<Arc<Batch>>,
    watcher: tokio::task::JoinHandle<()>,
    /// Logs the stale reads that fell back (`stale::report`).
    reporter: tokio::task::JoinHandle<()>,
    txn_ids: TxnIds,
    floor: Arc<stale::Floor>,
}

/// Unique ids for this store's transactions, and the lease their keys live on.
struct TxnIds {
    nonce: u64,
    next: std::sync::atomic::AtomicU64,
    lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
}

impl TxnIds {
    fn new() -> TxnIds {
        use std::hash::{BuildHasher, Hasher};
        // Random per store (std's hasher keys are), so ids differ across servers and restarts.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        TxnIds { nonce: hasher.finish(), next: Default::default(), lease: Default::default() }
    }
}

/// What a request is, for its error message: every request this backend sends is safe to
/// send again (reads; writes made idempotent, see [`EtcdStore::txn`]), so all are retried
/// within the deadline, but a write that timed out may still be applied later.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    Read,
    Write,
}

impl EtcdStore {
    /// Connects to the members and checks that the cluster answers (it needs a quorum).
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let url = options.url();
        let open_err =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open { path: url.clone(), source };
        let client = connect_client(&options).await.map_err(open_err)?;
        let data = format!("{}kv/", options.prefix);
        let (events, _) = broadcast::channel(4096);
        let mut store = EtcdStore {
            client,
            options: Arc::new(options),
            data,
            events,
            watcher: tokio::spawn(async {}),
            reporter: tokio::spawn(async {}),
            txn_ids: TxnIds::new(),
            floor: Default::default(),
        };
        let revision = store.current_revision("open").await.map_err(|e| {
            open_err(
                format!(
                    "{e}; check that the members run, that a majority of them is up, and (with TLS) that \
                     --cacert/--cert/--key match the cluster's"
                )
                .into(),
            )
        })?;
        store.watcher = tokio::spawn(watch::run(
            store.client.clone(),
            store.options.clone(),
            store.data.clone(),
            revision + 1,
            store.events.clone(),
            store.floor.clone(),
        ));
        store.reporter = tokio::spawn(stale::report(store.floor.clone()));
        Ok(store)
    }

    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// How many stale reads found their member behind this process and were made again
    /// linearizably.
    pub fn stale_fallbacks(&self) -> u64 {
        self.floor.fallbacks()
    }

    /// Pretends this process has seen etcd at `revision` (tests of the fallback: a floor
    /// above anything etcd has makes every stale read fall back).
    #[cfg(feature = "testing")]
    pub fn raise_floor(&self, revision: Revision) {
        self.floor.raise(revision_i64(revision));
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.data)
    }

    /// Runs one etcd request under the store's deadline, retried in attempts (see [`call`]).
    async fn call<T, F, Fut>(&self, operation: &'static str, request: Request, f: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        call(&self.client, &self.options, operation, request, f).await
    }

    async fn current_revision(&self, operation: &'static str) -> Result<i64, StoreError> {
        let key = self.data.clone();
        let response = self
            .call(operation, Request::Read, |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        self.floor.raise(revision);
        Ok(revision)
    }

    /// The lease for transaction id keys: granted on first use, replaced after half its TTL.
    async fn txn_lease(&self) -> Result<i64, StoreError> {
        let mut current = self.txn_ids.lease.lock().await;
        if let Some((lease, granted)) = *current
            && granted.elapsed() < TXN_ID_TTL / 2
        {
            return Ok(lease);
        }
        let ttl = i64::try_from(TXN_ID_TTL.as_secs()).unwrap_or(30);
        let granted = Instant::now();
        let lease = self.call("txn", Request::Write, |mut c| async move { c.lease_grant(ttl, None).await }).await?.id();
        *current = Some((lease, granted));
        Ok(lease)
    }

    async fn txn_once(&self, txn: &Txn, lease: i64) -> Result<TxnOutcome, StoreError> {
        let id = self.txn_ids.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id_key = format!("{}txn/{:016x}-{id}", self.options.prefix, self.txn_ids.nonce);
        let mut compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|Compare::ModRevision { key, revision }| {
                EtcdCompare::mod_revision(self.key(key), CompareOp::Equal, revision_i64(*revision))
            })
            .collect();
        compares.push(EtcdCompare::create_revision(id_key.as_str(), CompareOp::Equal, 0));
        // etcd refuses a key twice in one Txn; the embedded store applies ops in order, so
        // only each key's last op decides its end state.
        let last: std::collections::HashMap<&str, usize> =
            txn.ops.iter().enumerate().map(|(i, op)| (op.key(), i)).collect();
        let mut ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| last[op.key()] == *i)
            .map(|(_, op)| match op {
                Op::Put { key, value } => TxnOp::put(self.key(key), value.clone(), None),
                Op::Delete { key } => TxnOp::delete(self.key(key), None),
            })
            .collect();
        ops.push(TxnOp::put(id_key.as_str(), [], Some(PutOptions::new().with_lease(lease))));
        let request = EtcdTxn::new().when(compares).and_then(ops).or_else([TxnOp::get(id_key.as_str(), None)]);
        let response = self
            .call("txn", Request::Write, |mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        // Committed or not, etcd was at least at this revision: later stale reads see it.
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        self.floor.raise(revision);
        if response.succeeded() {
            return Ok(TxnOutcome::Committed(revision_u64(revision)));
        }
        // The id key exists only if an earlier attempt of this very request applied.
        let applied = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        Ok(match applied {
            Some(revision) => TxnOutcome::Committed(revision_u64(revision)),
            None => TxnOutcome::Conflict,
        })
    }

    fn decode(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        decode(&self.data, kv)
    }

    /// One listing at one revision (the first page's), and that revision. A `serializable`
    /// listing is answered by the member asked, from its own copy.
    async fn list_once(&self, prefix: &str, serializable: bool) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let floor = self.floor.get();
        let start = self.key(prefix);
        let end = range_end(start.as_bytes());
        let mut from = start.into_bytes();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut get = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if serializable {
                get = get.with_serializable();
            }
            if revision > 0 {
                get = get.with_revision(revision);
            }
            let key = from.clone();
            let page = |get: GetOptions| {
                let key = key.clone();
                self.call("list", Request::Read, move |c| {
                    let (key, get) = (key.clone(), get.clone());
                    async move { c.kv_client().max_decoding_message_size(MAX_MESSAGE).get(key, Some(get)).await }
                })
            };
            let response = match page(get.clone()).await {
                // A later page of a serializable listing reached a member that has not applied
                // the first page's revision yet: that page is read linearizably (at the same
                // revision) instead.
                Err(StoreError::Backend { source, .. }) if serializable && revision > 0 && is_future(&*source) => {
                    let mut linearizable = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                    linearizable = linearizable.with_revision(revision);
                    page(linearizable).await?
                }
                other => other?,
            };
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
                if serializable && revision < floor {
                    // This member is behind what this process knows: the caller reads again
                    // linearizably rather than page through an old revision.
                    return Ok((Vec::new(), revision));
                }
            }
            for kv in response.kvs() {
                out.push(self.decode(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// [`Store::list_prefix`], linearizable or serializable.
    async fn list(&self, prefix: &str, serializable: bool) -> Result<(Vec<KeyValue>, i64), StoreError> {
        // A listing spans pages at one revision; if etcd compacts that revision between two
        // pages, list again at a newer one.
        let mut attempts = 0;
        loop {
            match self.list_once(prefix, serializable).await {
                Err(StoreError::Backend { source, .. }) if attempts < 3 && is_compacted(&*source) => attempts += 1,
                other => return other,
            }
        }
    }

    /// One get, linearizable or serializable, with the revision it was answered at.
    async fn get_at(&self, key: &str, serializable: bool) -> Result<(Option<KeyValue>, i64), StoreError> {
        let key = self.key(key);
        let options = serializable.then(|| GetOptions::new().with_serializable());
        let response = self
            .call("get", Request::Read, |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.get(key, options).await }
            })
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        Ok((response.kvs().first().map(|kv| self.decode(kv)).transpose()?, revision))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
        self.reporter.abort();
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let (kv, revision) = self.get_at(key, false).await?;
        self.floor.raise(revision);
        Ok(kv)
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let (kvs, revision) = self.list(prefix, false).await?;
        self.floor.raise(revision);
        Ok(kvs)
    }

    async fn get_stale(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let floor = self.floor.get();
        let (kv, revision) = self.get_at(key, true).await?;
        if self.floor.covers(floor, revision) { Ok(kv) } else { self.get(key).await }
    }

    async fn list_prefix_stale(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let floor = self.floor.get();
        let (kvs, revision) = self.list(prefix, true).await?;
        if self.floor.covers(floor, revision) { Ok(kvs) } else { self.list_prefix(prefix).await }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let lease = self.txn_lease().await?;
        match self.txn_once(&txn, lease).await {
            // The id lease expired under us (a long pause): take a new one, once.
            Err(StoreError::Backend { source, .. }) if source.to_string().contains("lease not found") => {
                self.txn_ids.lease.lock().await.take();
                let lease = self.txn_lease().await?;
                self.txn_once(&txn, lease).await
            }
            other => other,
        }
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::new(prefix.to_owned(), self.events.subscribe())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(revision_u64(self.current_revision("revision").await?))
    }

    async fn acquire(&self, name: &str, holder: &str) -> Result<Leadership, StoreError> {
        let key = format!("{}roles/{name}", self.options.prefix);
        role::acquire(self.client.clone(), self.options.clone(), key, holder.to_owned()).await
    }
}

async fn connect_client(options: &EtcdOptions) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.deadline)
        // Notice a silent member (a partition, not just a closed socket) within a few seconds.
        .with_keep_alive(Duration::from_secs(2), options.deadline)
        // A member cut off from the leader refuses at once instead of waiting.
        .with_require_leader(true);
    let endpoints: Vec<String> = if let Some(ca) = &options.tls.ca {
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read TLS file {}: {e}", path.display()));
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (&options.tls.cert, &options.tls.key) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err("a client certificate needs both --cert and --key".into()),
        }
        connect = connect.with_tls(tls);
        options.endpoints.iter().map(|e| format!("https://{e}")).collect()
    } else {
        if options.tls.cert.is_some() || options.tls.key.is_some() {
            return Err("a client certificate needs --cacert too (TLS to the members)".into());
        }
        options.endpoints.iter().map(|e| format!("http://{e}")).collect()
    };
    Ok(Client::connect(endpoints, Some(connect)).await?)
}

/// One etcd request under `options.deadline`, in attempts of a third of it: a request stuck
/// on a member that has not yet noticed its leader died is abandoned and sent again (possibly
/// to another member) instead of waiting out etcd's own, longer, timeout.
async fn call<T, F, Fut>(
    client: &Client,
    options: &EtcdOptions,
    operation: &'static str,
    request: Request,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + options.deadline;
    let attempt = options.deadline / 3;
    let mut backoff = Duration::from_millis(20);
    loop {
        let attempt_end = (Instant::now() + attempt).min(deadline);
        match tokio::time::timeout_at(attempt_end, f(client.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if is_unavailable(&e) && Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, operation, "etcd request failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(400));
            }
            Ok(Err(e)) => return Err(classify(options, operation, request, e)),
            Err(_) if Instant::now() < deadline => {
                tracing::debug!(operation, "etcd request attempt timed out; retrying")
            }
            Err(_) => {
                let outcome = match request {
                    Request::Read => "",
                    Request::Write => "; the write may still be applied once etcd has a quorum again",
                };
                return Err(StoreError::Unavailable {
                    operation,
                    reason: format!(
                        "etcd at {} did not answer within {:?}{outcome}; {}",
                        options.endpoints.join(","),
                        options.deadline,
                        WHAT_TO_CHECK
                    ),
                });
            }
        }
    }
}

const WHAT_TO_CHECK: &str = "a majority of the etcd members may be down or unreachable (no quorum): check that they \
                             run and reach each other (`etcdctl endpoint health --cluster`)";

fn status(e: &etcd_client::Error) -> Option<&tonic::Status> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        _ => None,
    }
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            // `Cancelled` is what a request in flight gets when its connection to a member
            // that died closes under it: the next attempt goes to another member.
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ) && !is_compacted(e)
        }
        _ => false,
    }
}

/// A read at a revision the member asked has not applied yet (a serializable read).
fn is_future(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string().contains("required revision is a future revision")
}

fn is_compacted(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string().contains("required revision has been compacted")
}

fn classify(options: &EtcdOptions, operation: &'static str, request: Request, e: etcd_client::Error) -> StoreError {
    let unavailable = matches!(e, etcd_client::Error::TransportError(_))
        || status(&e).is_some_and(|s| {
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
        });
    if !unavailable {
        return StoreError::Backend { operation, source: Box::new(e) };
    }
    let outcome = if request == Request::Write { "; the write may or may not have been applied" } else { "" };
    StoreError::Unavailable {
        operation,
        reason: format!("etcd at {} failed: {e}{outcome}; {WHAT_TO_CHECK}", options.endpoints.join(",")),
    }
}

fn decode(data: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let full = String::from_utf8_lossy(kv.key());
    let key = kv.key_str().ok().and_then(|k| k.strip_prefix(data)).ok_or_else(|| StoreError::Corrupt {
        key: full.into_owned(),
        reason: "etcd key is not UTF-8 under the prefix",
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: revision_u64(kv.create_revision()),
        mod_revision: revision_u64(kv.mod_revision()),
    })
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn revision_u64(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

fn revision_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members_and_an_optional_prefix() {
        let o = EtcdOptions::from_url("etcd://h1:2379,h2:2379", TlsFiles::default()).unwrap();
        assert_eq!(o.endpoints, ["h1:2379", "h2:2379"]);
        assert_eq!(o.prefix, "flotilla/");
        let o = EtcdOptions::from_url("etcd://h1:2379/team-a", TlsFiles::default()).unwrap();
        assert_eq!(o.prefix, "team-a/");
        for bad in ["http://h1:2379", "etcd://", "etcd://h1"] {
            let e = EtcdOptions::from_url(bad, TlsFiles::default()).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn range_end_is_the_next_prefix() {
        assert_eq!(range_end(b"a/"), b"a0");
        assert_eq!(range_end(b"a\xff"), b"b");
    }
}
