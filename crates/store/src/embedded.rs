//! The embedded backend: one redb file, written by one thread with group commit.
//!
//! Every write transaction goes through a single writer thread. It drains whatever is queued,
//! applies each transaction in order inside one redb write transaction (each one's compares
//! see the writes of those before it), commits once — one fsync for the whole batch — and only
//! then answers the callers. Under concurrency this turns N fsyncs into one without weakening
//! the guarantee that an acknowledged write is durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{Batch, Compare, Event, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch};

/// key -> [create_revision u64 BE][mod_revision u64 BE][value]
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
/// Most transactions one batch (one fsync) takes.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<TxnOutcome, StoreError>>;

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` once dropped, which ends the writer thread.
    writer: Option<std_mpsc::Sender<(Txn, Reply)>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    events: broadcast::Sender<Arc<Batch>>,
}

fn backend(operation: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| StoreError::Backend { operation, source: Box::new(e) }
}

fn encode(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_be_bytes());
    out.extend_from_slice(&modified.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Corrupt { key: key.to_owned(), reason: "record shorter than its header" });
    }
    let create = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let modified = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
    Ok(KeyValue { key: key.to_owned(), value: raw[16..].to_vec(), create_revision: create, mod_revision: modified })
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |e: redb::Error| StoreError::Open { path: path.display().to_string(), source: Box::new(e) };
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        // Make sure both tables exist so readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        {
            txn.open_table(KV).map_err(|e| open_err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| open_err(e.into()))?;
            if meta.get(REVISION_KEY).map_err(|e| open_err(e.into()))?.is_none() {
                meta.insert(REVISION_KEY, 0).map_err(|e| open_err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| open_err(e.into()))?;

        let db = Arc::new(db);
        let (events, _) = broadcast::channel(4096);
        let (writer, queue) = std_mpsc::channel();
        let thread_db = db.clone();
        let thread_events = events.clone();
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&thread_db, &queue, &thread_events))
            .map_err(|e| StoreError::Open { path: path.display().to_string(), source: Box::new(e) })?;
        Ok(EmbeddedStore { db, path, writer: Some(writer), writer_thread: Some(writer_thread), events })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_revision(&self) -> Result<Revision, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend("read")(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| backend("read")(e.into()))?;
        let rev = meta.get(REVISION_KEY).map_err(|e| backend("read")(e.into()))?;
        Ok(rev.map(|g| g.value()).unwrap_or(0))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend("get")(e.into()))?;
        let table = txn.open_table(KV).map_err(|e| backend("get")(e.into()))?;
        match table.get(key).map_err(|e| backend("get")(e.into()))? {
            Some(raw) => Ok(Some(decode(key, raw.value())?)),
            None => Ok(None),
        }
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend("list")(e.into()))?;
        let table = txn.open_table(KV).map_err(|e| backend("list")(e.into()))?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| backend("list")(e.into()))? {
            let (k, v) = item.map_err(|e| backend("list")(e.into()))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(decode(key, v.value())?);
        }
        Ok(out)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send((txn, tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::new(prefix.to_owned(), self.events.subscribe())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.read_revision()
    }
}

impl Drop for EmbeddedStore {
    /// Finishes queued writes and releases the database file, so that it can be reopened.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(db: &Database, queue: &std_mpsc::Receiver<(Txn, Reply)>, events: &broadcast::Sender<Arc<Batch>>) {
    // Ends when every sender (the store) is dropped.
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        match apply_batch(db, batch.iter().map(|(t, _)| t)) {
            Ok((outcomes, changes)) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                if !changes.is_empty() {
                    // Nobody listening is fine.
                    let _ = events.send(Arc::new(Batch::Events(changes)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store batch failed; none of it was acknowledged");
                let text = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Backend { operation: "commit", source: text.clone().into() }));
                }
            }
        }
    }
}

fn apply_batch<'a>(
    db: &Database,
    txns: impl Iterator<Item = &'a Txn>,
) -> Result<(Vec<TxnOutcome>, Vec<Event>), StoreError> {
    let err = |e: redb::Error| StoreError::Backend { operation: "commit", source: Box::new(e) };
    let write = db.begin_write().map_err(|e| err(e.into()))?;
    let mut outcomes = Vec::new();
    let mut changes = Vec::new();
    {
        let mut table = write.open_table(KV).map_err(|e| err(e.into()))?;
        let mut meta = write.open_table(META).map_err(|e| err(e.into()))?;
        let mut revision = meta.get(REVISION_KEY).map_err(|e| err(e.into()))?.map(|g| g.value()).unwrap_or(0);
        for txn in txns {
            let mut holds = true;
            for Compare::ModRevision { key, revision: want } in &txn.compares {
                let have = match table.get(key.as_str()).map_err(|e| err(e.into()))? {
                    Some(raw) => decode(key, raw.value())?.mod_revision,
                    None => 0,
                };
                if have != *want {
                    holds = false;
                    break;
                }
            }
            if !holds {
                outcomes.push(TxnOutcome::Conflict);
                continue;
            }
            revision += 1;
            for op in &txn.ops {
                match op {
                    Op::Put { key, value } => {
                        let create = match table.get(key.as_str()).map_err(|e| err(e.into()))? {
                            Some(raw) => decode(key, raw.value())?.create_revision,
                            None => revision,
                        };
                        table
                            .insert(key.as_str(), encode(create, revision, value).as_slice())
                            .map_err(|e| err(e.into()))?;
                        changes.push(Event::Put(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: revision,
                        }));
                    }
                    Op::Delete { key } => {
                        if table.remove(key.as_str()).map_err(|e| err(e.into()))?.is_some() {
                            changes.push(Event::Delete { key: key.clone(), revision });
                        }
                    }
                }
            }
            outcomes.push(TxnOutcome::Committed(revision));
        }
        meta.insert(REVISION_KEY, revision).map_err(|e| err(e.into()))?;
    }
    write.commit().map_err(|e| err(e.into()))?;
    Ok((outcomes, changes))
}
