use std::net::SocketAddr;
use std::path::PathBuf;

mod commands;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flotilla_api::Credentials;
use flotilla_cli::client::{AwsError, Client};
use flotilla_cli::home::{Home, default_data_dir};
use flotilla_cli::output::{Format, Output};
use flotilla_cli::up::{self, UpOptions};
use serde_json::Value;

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
        /// Serve the API only, without running tasks on this host (no root needed).
        #[arg(long)]
        no_agent: bool,
        /// Run this many simulated hosts instead of this host's agent: tasks are placed,
        /// reported and stopped through the real API and control plane, but their containers
        /// only pretend (for scheduler benchmarks and trying Flotilla without root).
        #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "no_agent")]
        simulated_hosts: u32,
        /// How many times its CPU (after a reserve for the host) this host offers tasks; each
        /// task's CPU quota still caps it.
        #[arg(long, value_name = "FACTOR", default_value_t = 4.0)]
        overcommit_cpu: f64,
        /// How many times its memory (after a reserve for the host) this host offers tasks.
        #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
        overcommit_memory: f64,
        /// At most this many tasks run on this host at once; placement refuses more with ECS's
        /// RESOURCE:TASKS failure. Default (and ceiling): what the open-file limit allows.
        #[arg(long, value_name = "N")]
        max_tasks: Option<u32>,
        /// Public addresses for tasks run with assignPublicIp=ENABLED; the network must route
        /// this block to this host.
        #[arg(long, default_value = flotilla_control::DEFAULT_PUBLIC_IP_POOL)]
        public_ip_pool: flotilla_control::Ipv4Cidr,
        /// Network namespace (a path such as /run/netns/NAME) that holds the task network's
        /// host side (routes, firewall, VPC resolvers) instead of this process's own. Keeps
        /// tasks off the host's main namespace; the tests give every server its own.
        #[arg(long, value_name = "PATH")]
        net_namespace: Option<std::path::PathBuf>,
        /// Host address where internet-facing load balancers' listeners listen, each on its
        /// listener's port (default: the --listen address, so loopback on a default install).
        /// A port something else holds there is refused when the listener is created.
        #[arg(long, value_name = "IP")]
        lb_address: Option<std::net::IpAddr>,
        /// PEM bundle of extra CAs (one or more certificates) to trust for registries served
        /// over HTTPS with a private CA, on top of the built-in roots.
        #[arg(long, value_name = "FILE", env = "FLOTILLA_REGISTRY_CA")]
        registry_ca: Option<PathBuf>,
        /// Where EFS file systems keep their data, one directory each (default: <data-dir>/efs).
        /// Hosts of a cluster point this at one shared mount so that tasks anywhere see the
        /// same files.
        #[arg(long, value_name = "DIR", env = "FLOTILLA_EFS_ROOT")]
        efs_root: Option<PathBuf>,
        /// Apply Fargate's rules to task definitions without an execution role: awslogs,
        /// `secrets` and private registry credentials need one (refused at
        /// RegisterTaskDefinition and RunTask, in ECS's words). Without it such a task
        /// definition works as before, the platform acting for the account.
        #[arg(long)]
        require_roles: bool,
        /// The KMS master key file (32 random bytes, mode 0600; made on first start): every
        /// SecureString and secret is encrypted under keys sealed with it. Keep it apart from
        /// the data dir and back it up; every server of a store needs the same one. Default:
        /// /etc/flotilla/kms.key (root), else ~/.config/flotilla/kms.key.
        #[arg(long, value_name = "FILE", env = "FLOTILLA_KMS_KEY_FILE")]
        kms_key_file: Option<PathBuf>,
        #[command(flatten)]
        kubernetes: flotilla_cli::kubernetes::KubernetesArgs,
    },
    /// Run a server of a cluster: the API and the control plane over a shared store, and the
    /// link agents connect to. No tasks run here.
    Server {
        /// The store: etcd://HOST:PORT[,HOST:PORT...], or file:PATH for an embedded store
        /// (one server only). Default: the data dir's embedded store.
        #[arg(long, env = "FLOTILLA_STORE")]
        store: Option<String>,
        /// CA bundle that signs the etcd members' certificates (then they are dialled over TLS).
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Client certificate for etcd (mutual TLS), with --key.
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The client certificate's private key.
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Address of the AWS API.
        #[arg(long, default_value = "127.0.0.1:7780")]
        listen: SocketAddr,
        /// Address agents connect to (gRPC).
        #[arg(long, default_value = "127.0.0.1:7946")]
        agent_listen: SocketAddr,
        /// Region for ARNs (fixed by the first server of the store).
        #[arg(long)]
        region: Option<String>,
        /// 12-digit account id (fixed by the first server of the store).
        #[arg(long)]
        account_id: Option<String>,
        /// Public addresses for tasks run with assignPublicIp=ENABLED.
        #[arg(long, default_value = flotilla_control::DEFAULT_PUBLIC_IP_POOL)]
        public_ip_pool: flotilla_control::Ipv4Cidr,
        /// Where EFS file systems keep their data (default: <data-dir>/efs); the agents'
        /// `--efs-root` must show the same files (one shared mount).
        #[arg(long, value_name = "DIR", env = "FLOTILLA_EFS_ROOT")]
        efs_root: Option<PathBuf>,
        /// Apply Fargate's rules to task definitions without an execution role: awslogs,
        /// `secrets` and private registry credentials need one (refused at
        /// RegisterTaskDefinition and RunTask, in ECS's words). Without it such a task
        /// definition works as before, the platform acting for the account.
        #[arg(long)]
        require_roles: bool,
        /// The KMS master key file (32 random bytes, mode 0600; made on first start): every
        /// SecureString and secret is encrypted under keys sealed with it. Keep it apart from
        /// the data dir and back it up; every server of a store needs the same one. Default:
        /// /etc/flotilla/kms.key (root), else ~/.config/flotilla/kms.key.
        #[arg(long, value_name = "FILE", env = "FLOTILLA_KMS_KEY_FILE")]
        kms_key_file: Option<PathBuf>,
        #[command(flatten)]
        kubernetes: flotilla_cli::kubernetes::KubernetesArgs,
    },
    /// Run one host's agent: it registers the host with the servers and runs the tasks
    /// placed on it (needs root).
    Agent {
        /// Servers' agent addresses (their --agent-listen), comma-separated; any will do.
        #[arg(long, value_delimiter = ',', required = true, env = "FLOTILLA_SERVERS")]
        server: Vec<String>,
        /// The host's token, from `flotilla hosts add HOST_ID`.
        #[arg(long, env = "FLOTILLA_HOST_TOKEN", hide_env_values = true, required_unless_present = "simulated_hosts")]
        token: Option<String>,
        #[arg(long, required_unless_present = "simulated_hosts")]
        host_id: Option<String>,
        /// The host's availability zone (its region is the zone's).
        #[arg(long, required_unless_present = "simulated_hosts")]
        zone: Option<String>,
        /// Instead of this host, run simulated hosts (containers only pretend; no root), one
        /// per line of FILE: `HOST_ID ZONE TOKEN`. Each has its own link to the servers and
        /// offers a pretend 4-vCPU, 16 GiB machine with the overcommit given. For benchmarks.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["token", "host_id", "zone", "underlay_ip", "net_namespace"])]
        simulated_hosts: Option<PathBuf>,
        /// The host's address between hosts, for the VPC overlay.
        #[arg(long, value_name = "IP")]
        underlay_ip: Option<std::net::Ipv4Addr>,
        /// CPU units offered per CPU unit the host has (quotas still cap each task).
        #[arg(long, default_value_t = 4.0)]
        overcommit_cpu: f64,
        /// Memory offered per MiB the host has.
        #[arg(long, default_value_t = 1.0)]
        overcommit_memory: f64,
        /// At most this many tasks run on this host at once (see `flotilla up --max-tasks`).
        #[arg(long, value_name = "N")]
        max_tasks: Option<u32>,
        /// Network namespace (a path such as /run/netns/NAME) for the task network's host side.
        #[arg(long, value_name = "PATH")]
        net_namespace: Option<std::path::PathBuf>,
        /// Host address internet-facing load balancers listen on (default: the underlay
        /// address, else loopback).
        #[arg(long, value_name = "IP")]
        lb_address: Option<std::net::IpAddr>,
        #[arg(long, value_name = "FILE", env = "FLOTILLA_REGISTRY_CA")]
        registry_ca: Option<PathBuf>,
        /// Where EFS file systems keep their data, one directory each (default: <data-dir>/efs).
        /// Hosts of a cluster point this at one shared mount so that tasks anywhere see the
        /// same files.
        #[arg(long, value_name = "DIR", env = "FLOTILLA_EFS_ROOT")]
        efs_root: Option<PathBuf>,
    },
    /// List the hosts (capacity, allocation, tasks, health), or add / revoke one's token.
    Hosts {
        #[command(subcommand)]
        action: Option<HostAction>,
    },
    /// EKS: register an existing Kubernetes cluster whose Fargate side Flotilla is.
    Eks {
        #[command(subcommand)]
        action: EksAction,
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
    /// Print a task's container output (awslogs driver); --follow keeps printing until it stops.
    Logs {
        /// Task id or ARN.
        task: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Only this container.
        #[arg(long)]
        container: Option<String>,
        #[arg(long, short)]
        follow: bool,
    },
    /// Run a command in a task's container (ECS Exec), and exit with its status.
    Exec {
        /// Task id or ARN.
        task: String,
        #[arg(long)]
        cluster: Option<String>,
        /// The container (needed when the task has more than one).
        #[arg(long)]
        container: Option<String>,
        /// Keep stdin open and send it to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Run the command under a pseudo-terminal (the local one in raw mode, resizes forwarded).
        #[arg(short, long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// This host's image store: pull, import, ls, rm, prune.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// List running tasks (or --stopped ones), or run / show / stop one.
    Tasks {
        #[command(subcommand)]
        action: Option<TaskAction>,
        /// Cluster name or ARN (default: `default`).
        #[arg(long, global = true)]
        cluster: Option<String>,
        /// List tasks whose desired status is STOPPED instead of RUNNING.
        #[arg(long)]
        stopped: bool,
    },
    /// List services, or show one with its deployments and recent events.
    Services {
        #[command(subcommand)]
        action: Option<ServiceAction>,
        /// Cluster name or ARN (default: `default`).
        #[arg(long, global = true)]
        cluster: Option<String>,
    },
    /// List load balancers, or show one with its listeners, rules and targets' health.
    LoadBalancers {
        #[command(subcommand)]
        action: Option<LoadBalancerAction>,
    },
    /// List the certificates imported into ACM: domain, status, expiry, load balancers using them.
    Certificates,
}

#[derive(Subcommand)]
pub(crate) enum HostAction {
    /// Issue a token for a host (printed once); a token it had before stops working.
    Add { host_id: String },
    /// Revoke a host's token: its agent is disconnected at once and cannot connect again.
    Revoke { host_id: String },
}

#[derive(Subcommand)]
pub(crate) enum EksAction {
    /// Register an existing cluster (k3s, kubeadm, ...) as an EKS cluster: its Fargate
    /// profiles' pods then run on Flotilla. `aws eks create-cluster` launches a new one instead.
    Register {
        /// The EKS cluster's name.
        #[arg(long)]
        name: String,
        /// A kubeconfig with an administrator's token or client certificate for the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The kubeconfig's context (default: its current one).
        #[arg(long)]
        context: Option<String>,
        /// The cluster's IAM role, as CreateCluster's `roleArn`.
        #[arg(long)]
        role_arn: String,
        /// Subnets its Fargate profiles may use (comma-separated; two zones of one VPC).
        #[arg(long, value_delimiter = ',', required = true)]
        subnets: Vec<String>,
        /// Security groups for its pods (comma-separated).
        #[arg(long, value_delimiter = ',')]
        security_groups: Vec<String>,
        /// The cluster's service CIDR, when it is not EKS's default 10.100.0.0/16.
        #[arg(long)]
        service_cidr: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum LoadBalancerAction {
    /// Show one load balancer by name or ARN: its settings, listeners, rules in words, and
    /// the health of every target its rules forward to.
    Show { load_balancer: String },
}

#[derive(Subcommand)]
pub(crate) enum ImageAction {
    /// Pull an image into this host's store, showing progress.
    Pull {
        reference: String,
        /// PEM bundle of extra CAs (one or more certificates) to trust for registries served
        /// over HTTPS with a private CA, on top of the built-in roots.
        #[arg(long, value_name = "FILE", env = "FLOTILLA_REGISTRY_CA")]
        registry_ca: Option<PathBuf>,
    },
    /// Load an OCI-layout or `docker save` tarball, for hosts without registry access.
    Import {
        file: PathBuf,
        /// Name for the image. REPOSITORY:TAG (or @DIGEST) names the archive's one image,
        /// whatever names the archive carries; a bare REPOSITORY completes archives that give
        /// only a tag and names unnamed images REPOSITORY:latest.
        #[arg(long)]
        reference: Option<String>,
    },
    /// List stored images.
    Ls,
    /// Forget an image (its layers go at the next prune).
    Rm { reference: String },
    /// Delete blobs and layers no image uses.
    Prune,
}

#[derive(Subcommand)]
pub(crate) enum TaskAction {
    /// Run a task definition on Fargate.
    Run {
        task_definition: String,
        #[arg(long, default_value_t = 1)]
        count: i32,
        /// Subnet for the task's network interface; without it, the default VPC's default
        /// subnets (one per zone), as the AWS console picks them.
        #[arg(long)]
        subnet: Option<String>,
    },
    /// Show one task by id or ARN.
    Show { task: String },
    /// Stop a task: SIGTERM, then SIGKILL after its stopTimeout.
    Stop {
        task: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServiceAction {
    /// Show one service by name or ARN: its settings, deployments and most recent events.
    Show {
        service: String,
        /// How many of the newest events to show (ECS keeps at most 100).
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
}

#[derive(Subcommand)]
pub(crate) enum ClusterAction {
    Create { name: String },
    Delete { name: String },
}

#[derive(Subcommand)]
pub(crate) enum TaskDefinitionAction {
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
        Command::Up {
            listen,
            region,
            account_id,
            no_agent,
            simulated_hosts,
            overcommit_cpu,
            overcommit_memory,
            max_tasks,
            public_ip_pool,
            net_namespace,
            lb_address,
            registry_ca,
            efs_root,
            require_roles,
            kms_key_file,
            kubernetes,
        } => {
            up::run(UpOptions {
                listen,
                data_dir,
                region,
                account_id,
                no_agent,
                simulated_hosts,
                overcommit: flotilla_agent::capacity::Overcommit { cpu: overcommit_cpu, memory: overcommit_memory },
                max_tasks,
                public_ip_pool,
                net_namespace,
                lb_address: lb_address.unwrap_or(listen.ip()),
                registry_ca,
                efs_root,
                require_roles,
                kms_key_file,
                kubernetes,
            })
            .await
        }
        Command::Server {
            store,
            cacert,
            cert,
            key,
            listen,
            agent_listen,
            region,
            account_id,
            public_ip_pool,
            efs_root,
            require_roles,
            kms_key_file,
            kubernetes,
        } => {
            flotilla_cli::server::run(flotilla_cli::server::ServerOptions {
                store,
                store_tls: flotilla_store::TlsFiles { ca: cacert, cert, key },
                listen,
                agent_listen,
                data_dir,
                region,
                account_id,
                public_ip_pool,
                efs_root,
                require_roles,
                kms_key_file,
                kubernetes,
            })
            .await
        }
        Command::Agent {
            server,
            token,
            host_id,
            zone,
            underlay_ip,
            overcommit_cpu,
            overcommit_memory,
            max_tasks,
            net_namespace,
            lb_address,
            registry_ca,
            simulated_hosts,
            efs_root,
        } => {
            let overcommit = flotilla_agent::capacity::Overcommit { cpu: overcommit_cpu, memory: overcommit_memory };
            if let Some(hosts_file) = simulated_hosts {
                return flotilla_cli::sim_agents::run(server, &hosts_file, &data_dir, overcommit).await;
            }
            let (Some(token), Some(host_id), Some(zone)) = (token, host_id, zone) else {
                bail!("--token, --host-id and --zone are required");
            };
            let lb_address = lb_address.unwrap_or(match underlay_ip {
                Some(ip) => std::net::IpAddr::V4(ip),
                None => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            });
            flotilla_cli::agent::run(flotilla_cli::agent::AgentOptions {
                servers: server,
                token,
                host_id,
                zone,
                underlay_ip,
                overcommit_cpu,
                overcommit_memory,
                max_tasks,
                data_dir,
                net_namespace,
                lb_address,
                registry_ca,
                efs_root,
            })
            .await
        }
        Command::Hosts { action } => commands::hosts::run(&connect(&data_dir, cli.endpoint)?, &out, action).await,
        Command::Eks { action } => commands::eks::run(&connect(&data_dir, cli.endpoint)?, &out, action).await,
        Command::Clusters { action } => commands::clusters::run(&connect(&data_dir, cli.endpoint)?, &out, action).await,
        Command::TaskDefinitions { action, family_prefix, status } => {
            commands::task_definitions::run(&connect(&data_dir, cli.endpoint)?, &out, action, family_prefix, status)
                .await
        }
        Command::Logs { task, cluster, container, follow } => {
            let json_output = out.format == Format::Json;
            commands::logs::run(&connect(&data_dir, cli.endpoint)?, cluster, task, container, follow, json_output).await
        }
        Command::Exec { task, cluster, container, interactive, tty, command } => {
            let args = commands::exec::ExecArgs { cluster, task, container, interactive, tty, command };
            let status = commands::exec::run(&connect(&data_dir, cli.endpoint)?, args).await?;
            // The command's status is this process's; nothing is left to clean up.
            std::process::exit(status & 0xff);
        }
        Command::Image { action } => commands::images::run(&data_dir, &out, action).await,
        Command::Tasks { action, cluster, stopped } => {
            commands::tasks::run(&connect(&data_dir, cli.endpoint)?, &out, cluster, action, stopped).await
        }
        Command::Services { action, cluster } => {
            commands::services::run(&connect(&data_dir, cli.endpoint)?, &out, cluster, action).await
        }
        Command::LoadBalancers { action } => {
            commands::load_balancers::run(&connect(&data_dir, cli.endpoint)?, &out, action).await
        }
        Command::Certificates => commands::certificates::run(&connect(&data_dir, cli.endpoint)?, &out).await,
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
