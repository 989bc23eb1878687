//! `flotilla up`: the all-in-one server in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use flotilla_api::{ApiState, router};
use flotilla_control::{Control, Identity};
use flotilla_store::EmbeddedStore;

use crate::home::Home;

pub struct UpOptions {
    pub listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub region: Option<String>,
    pub account_id: Option<String>,
}

pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    let home = Home::open(&opts.data_dir)?;
    let identity = home.identity(opts.region.as_deref(), opts.account_id.as_deref())?;
    let (credentials, generated) = home.credentials()?;
    let store = EmbeddedStore::open(home.store_path()).with_context(|| {
        format!("cannot open the store in {}; is another flotilla using this --data-dir?", home.dir.display())
    })?;
    let store = Arc::new(store);
    let control = Arc::new(Control::new(
        store.clone(),
        Identity { region: identity.region.clone(), account: identity.account_id.clone() },
    ));
    let state = Arc::new(ApiState::new(control, std::slice::from_ref(&credentials)));

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --listen", opts.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: anyone who can reach this address can try credentials");
    }
    let endpoint = format!("http://{addr}");

    println!("Flotilla is up at {endpoint} (region {}, account {})", identity.region, identity.account_id);
    println!("  data dir: {}", home.dir.display());
    if generated {
        println!("  generated credentials, kept in {}", home.dir.join("credentials.json").display());
    }
    println!("Use it with the AWS CLI:");
    println!("  aws configure set aws_access_key_id {} --profile flotilla", credentials.access_key_id);
    println!("  aws configure set aws_secret_access_key {} --profile flotilla", credentials.secret_access_key);
    println!("  aws configure set region {} --profile flotilla", identity.region);
    println!("  aws --profile flotilla --endpoint-url {endpoint} ecs list-clusters");
    println!("or with this CLI: flotilla clusters");
    // Recorded last: once the file exists, the banner above is complete.
    home.record_endpoint(&endpoint)?;

    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await.context("server failed")?;
    // In-flight requests have finished; dropping the store flushes and closes it.
    drop(store);
    println!("Flotilla stopped.");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
