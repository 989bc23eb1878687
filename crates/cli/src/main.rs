use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flotilla_api::Credentials;
use flotilla_cli::client::{AwsError, Client};
use flotilla_cli::home::{Home, default_data_dir};
use flotilla_cli::output::{Format, Output, text};
use flotilla_cli::up::{self, UpOptions};
use serde_json::{Value, json};

/// Flotilla: AWS Fargate on your own machines.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Data directory (store, credentials, identity).
    #[arg(long, global = true, env = "FLOTILLA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Server to talk to; defaults to the one `flotilla up` recorded in the data directory.
    #[arg(long, global = true, env = "FLOTILLA_ENDPOINT")]
    endpoint: Option<String>,
    /// table for people, json for scripts.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground with its embedded store.
    Up {
        /// Address to listen on. Loopback by default: other machines cannot reach it.
        #[arg(long, default_value = "127.0.0.1:7780")]
        listen: SocketAddr,
        /// Region for ARNs and signature scopes (fixed when the data dir is first used).
        #[arg(long)]
        region: Option<String>,
        /// 12-digit account id for ARNs (fixed when the data dir is first used).
        #[arg(long)]
        account_id: Option<String>,
    },
    /// List clusters, or create / delete one.
    Clusters {
        #[command(subcommand)]
        action: Option<ClusterAction>,
    },
    /// List task definitions, or show / register / deregister one.
    TaskDefinitions {
        #[command(subcommand)]
        action: Option<TaskDefinitionAction>,
        /// Only families starting with this.
        #[arg(long)]
        family_prefix: Option<String>,
        /// ACTIVE (default), INACTIVE or DELETE_IN_PROGRESS.
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    Create { name: String },
    Delete { name: String },
}

#[derive(Subcommand)]
enum TaskDefinitionAction {
    /// Show one: FAMILY, FAMILY:REVISION or an ARN.
    Show { task_definition: String },
    /// Register from a JSON file (the `--cli-input-json` format of the AWS CLI).
    Register { file: PathBuf },
    /// Deregister FAMILY:REVISION.
    Deregister { task_definition: String },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("can start the async runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<AwsError>() {
                Some(aws) => eprintln!("error: {} ({})", aws.message, aws.code),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let out = Output::new(cli.output);
    match cli.command {
        Command::Up { listen, region, account_id } => up::run(UpOptions { listen, data_dir, region, account_id }).await,
        Command::Clusters { action } => clusters(&connect(&data_dir, cli.endpoint)?, &out, action).await,
        Command::TaskDefinitions { action, family_prefix, status } => {
            task_definitions(&connect(&data_dir, cli.endpoint)?, &out, action, family_prefix, status).await
        }
    }
}

/// A client for the server: endpoint and credentials from flags/environment, else from the
/// data directory that `flotilla up` uses on this machine.
fn connect(data_dir: &std::path::Path, endpoint: Option<String>) -> anyhow::Result<Client> {
    let home = Home { dir: data_dir.to_owned() };
    let endpoint = match endpoint.or_else(|| home.endpoint()) {
        Some(e) => e,
        None => bail!("no server known in {}: run `flotilla up`, or pass --endpoint", data_dir.display()),
    };
    let region = std::env::var("FLOTILLA_REGION").ok().or_else(|| {
        let raw = std::fs::read(data_dir.join("identity.json")).ok()?;
        serde_json::from_slice::<Value>(&raw).ok()?["region"].as_str().map(str::to_owned)
    });
    let credentials = match (std::env::var("FLOTILLA_ACCESS_KEY_ID"), std::env::var("FLOTILLA_SECRET_ACCESS_KEY")) {
        (Ok(access_key_id), Ok(secret_access_key)) => Credentials { access_key_id, secret_access_key },
        _ => {
            let raw = std::fs::read(data_dir.join("credentials.json")).with_context(|| {
                format!(
                    "no credentials: set FLOTILLA_ACCESS_KEY_ID and FLOTILLA_SECRET_ACCESS_KEY, or run on the machine where `flotilla up` keeps {}",
                    data_dir.display()
                )
            })?;
            let v: Value = serde_json::from_slice(&raw)?;
            Credentials {
                access_key_id: v["accessKeyId"].as_str().unwrap_or_default().to_owned(),
                secret_access_key: v["secretAccessKey"].as_str().unwrap_or_default().to_owned(),
            }
        }
    };
    Client::new(&endpoint, credentials, region.as_deref().unwrap_or("us-east-1"))
}

fn cluster_rows(clusters: &[Value]) -> Vec<Vec<String>> {
    clusters
        .iter()
        .map(|c| {
            let providers: Vec<&str> = c["capacityProviders"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(c, "clusterName"),
                text(c, "status"),
                text(c, "runningTasksCount"),
                text(c, "pendingTasksCount"),
                text(c, "activeServicesCount"),
                if providers.is_empty() { "-".into() } else { providers.join(",") },
            ]
        })
        .collect()
}

const CLUSTER_HEADERS: &[&str] = &["NAME", "STATUS", "RUNNING", "PENDING", "SERVICES", "CAPACITY PROVIDERS"];

async fn clusters(client: &Client, out: &Output, action: Option<ClusterAction>) -> anyhow::Result<()> {
    match action {
        None => {
            let mut arns = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = client.ecs("ListClusters", json!({ "nextToken": token })).await?;
                arns.extend(page["clusterArns"].as_array().cloned().unwrap_or_default());
                token = page["nextToken"].as_str().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            let mut described = Vec::new();
            for chunk in arns.chunks(100) {
                let answer = client
                    .ecs("DescribeClusters", json!({ "clusters": chunk, "include": ["SETTINGS", "TAGS"] }))
                    .await?;
                described.extend(answer["clusters"].as_array().cloned().unwrap_or_default());
            }
            out.print(&json!({ "clusters": described }), CLUSTER_HEADERS, cluster_rows(&described));
        }
        Some(ClusterAction::Create { name }) => {
            let answer = client.ecs("CreateCluster", json!({ "clusterName": name })).await?;
            out.print(&answer, CLUSTER_HEADERS, cluster_rows(std::slice::from_ref(&answer["cluster"])));
        }
        Some(ClusterAction::Delete { name }) => {
            let answer = client.ecs("DeleteCluster", json!({ "cluster": name })).await?;
            out.print(&answer, CLUSTER_HEADERS, cluster_rows(std::slice::from_ref(&answer["cluster"])));
        }
    }
    Ok(())
}

const TASK_DEFINITION_HEADERS: &[&str] = &["FAMILY", "REVISION", "STATUS", "CPU", "MEMORY", "CONTAINERS"];

fn task_definition_row(td: &Value) -> Vec<String> {
    let containers: Vec<String> = td["containerDefinitions"]
        .as_array()
        .map(|a| a.iter().map(|c| format!("{} ({})", text(c, "name"), text(c, "image"))).collect())
        .unwrap_or_default();
    vec![
        text(td, "family"),
        text(td, "revision"),
        text(td, "status"),
        text(td, "cpu"),
        text(td, "memory"),
        containers.join(", "),
    ]
}

async fn task_definitions(
    client: &Client,
    out: &Output,
    action: Option<TaskDefinitionAction>,
    family_prefix: Option<String>,
    status: Option<String>,
) -> anyhow::Result<()> {
    match action {
        None => {
            let mut arns = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .ecs(
                        "ListTaskDefinitions",
                        json!({ "familyPrefix": family_prefix, "status": status, "nextToken": token }),
                    )
                    .await?;
                arns.extend(page["taskDefinitionArns"].as_array().cloned().unwrap_or_default());
                token = page["nextToken"].as_str().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            let mut described = Vec::new();
            for arn in &arns {
                let answer = client.ecs("DescribeTaskDefinition", json!({ "taskDefinition": arn })).await?;
                described.push(answer["taskDefinition"].clone());
            }
            let rows = described.iter().map(task_definition_row).collect();
            out.print(&json!({ "taskDefinitions": described }), TASK_DEFINITION_HEADERS, rows);
        }
        Some(TaskDefinitionAction::Show { task_definition }) => {
            let answer = client
                .ecs("DescribeTaskDefinition", json!({ "taskDefinition": task_definition, "include": ["TAGS"] }))
                .await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
        Some(TaskDefinitionAction::Register { file }) => {
            let raw = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value =
                serde_json::from_slice(&raw).with_context(|| format!("{} is not JSON", file.display()))?;
            let answer = client.ecs("RegisterTaskDefinition", body).await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
        Some(TaskDefinitionAction::Deregister { task_definition }) => {
            let answer = client.ecs("DeregisterTaskDefinition", json!({ "taskDefinition": task_definition })).await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
    }
    Ok(())
}
