//! EKS on Fargate in a server: the Fargate scheduler (`flotilla_k8s::scheduler`) runs the pods
//! of every ACTIVE EKS cluster as tasks of this control plane, and each pod's node serves its
//! kubelet API on this host. One server among those sharing a store runs it (the
//! `fargate-scheduler` role); `flotilla up` always holds it.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use flotilla_control::hold_role;
use flotilla_k8s::kubelet::{Kubelet, PodExec};
use flotilla_k8s::scheduler::{FargateScheduler, PodClusters};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plane::ControlPlane;

/// Starts the Fargate scheduler until `shutdown`; nodes' kubelet APIs listen on `address`
/// (the API's listen address; loopback when that is a wildcard).
pub fn start(
    plane: &ControlPlane,
    clusters: Arc<dyn PodClusters>,
    address: IpAddr,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let address = if address.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { address };
    let exec = PodExec { control: plane.control.clone(), targets: plane.exec_targets.clone() };
    let kubelet = Kubelet::new(address, plane.logs.clone()).context("cannot set up the Fargate nodes' kubelet API")?;
    let kubelet = Arc::new(kubelet.with_exec(exec));
    let (store, control) = (plane.store.clone(), plane.control.clone());
    // Pods' configMap and secret volumes: the agents ask this server's control plane for them.
    let files = Arc::new(flotilla_k8s::scheduler::files::PodFiles::default());
    control.attach_task_files(files.clone());
    Ok(tokio::spawn(async move {
        let mut stopped = shutdown.clone();
        let stopping = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        hold_role(store.as_ref(), "fargate-scheduler", stopping, || {
            FargateScheduler::new(clusters.clone(), control.clone(), kubelet.clone())
                .with_files(files.clone())
                .run(shutdown.clone())
        })
        .await
    }))
}
