//! The embedded store: the shared behaviour (`behaviour/mod.rs`), plus reopening its file.

mod behaviour;

use std::any::Any;
use std::sync::Arc;

use flotilla_store::{EmbeddedStore, Op, Store, Txn};

async fn open_embedded() -> (Arc<dyn Store>, Box<dyn Any>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("state.redb")).expect("open store");
    (Arc::new(store), Box::new(dir))
}

store_behaviour!(open_embedded);

#[tokio::test]
async fn writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || EmbeddedStore::open(dir.path().join("state.redb")).expect("open store");
    let rev = {
        let store = open();
        store.txn(Txn::new().then(Op::put("k", "v"))).await.unwrap();
        store.revision().await.unwrap()
    };
    let store = open();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(store.revision().await.unwrap(), rev);
}
