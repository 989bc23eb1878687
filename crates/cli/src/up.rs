//! `flotilla up`: the all-in-one server in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use flotilla_api::logs::LogStore;
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
    // Logs live in their own file so that their volume never bloats the control-plane store.
    let logs_dir = home.dir.join("logs");
    let logs = Arc::new(
        LogStore::open(&logs_dir).with_context(|| format!("cannot open the log store in {}", logs_dir.display()))?,
    );
    let expiry = tokio::spawn(expire_logs(logs.clone()));
    let state = Arc::new(ApiState::new(control, std::slice::from_ref(&credentials)).with_logs(logs));

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
    expiry.abort();
    println!("Flotilla stopped.");
    Ok(())
}

/// Applies the log groups' retention policies every few minutes.
async fn expire_logs(logs: Arc<LogStore>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        tick.tick().await;
        if let Err(e) = logs.expire(flotilla_api::logs::now_millis()).await {
            tracing::warn!(error = %e, "log retention pass failed; retrying at the next one");
        }
    }
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
