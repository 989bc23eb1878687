//! The etcd backend against real etcd members (Debian's etcd-server): the shared behaviour
//! (`behaviour/mod.rs`) on a one-member cluster each, then what only a cluster can show.

mod behaviour;

use std::any::Any;
use std::sync::Arc;

use flotilla_store::Store;
use flotilla_store::testing::EtcdCluster;

async fn open_etcd() -> (Arc<dyn Store>, Box<dyn Any>) {
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await.expect("connect to etcd");
    (Arc::new(store), Box::new(cluster))
}

store_behaviour!(open_etcd);
