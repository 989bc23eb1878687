//! `flotilla up`: the all-in-one server in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use flotilla_api::router;
use flotilla_store::EmbeddedStore;

use crate::home::Home;
use crate::plane::{ControlPlane, PlaneOptions, no_delay, shutdown_signal};

pub struct UpOptions {
    pub listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub region: Option<String>,
    pub account_id: Option<String>,
    /// Serve the control plane only; tasks are left for agents elsewhere.
    pub no_agent: bool,
    /// Instead of this host's agent, run this many simulated hosts (no containers, no root):
    /// the real API, control plane and store over pretend tasks.
    pub simulated_hosts: u32,
    /// `--overcommit-cpu` and `--overcommit-memory`: what hosts offer beyond their hardware.
    pub overcommit: flotilla_agent::capacity::Overcommit,
    /// `--max-tasks`: this host takes at most this many tasks (lowered further if its
    /// open-file limit allows fewer).
    pub max_tasks: Option<u32>,
    pub public_ip_pool: flotilla_control::Ipv4Cidr,
    /// Where the task network's host side lives; `None`: this process's namespace.
    pub net_namespace: Option<std::path::PathBuf>,
    /// Where internet-facing load balancers listen on the host (`--lb-address`, default the
    /// API's listen address).
    pub lb_address: std::net::IpAddr,
    /// A PEM bundle of extra CAs trusted for registries (`--registry-ca`,
    /// `FLOTILLA_REGISTRY_CA`).
    pub registry_ca: Option<std::path::PathBuf>,
    /// `--efs-root`: where EFS file systems' directories live (default `<data-dir>/efs`).
    pub efs_root: Option<std::path::PathBuf>,
    /// `--require-roles`: Fargate's rules for task definitions without an execution role.
    pub require_roles: bool,
    /// `--kms-key-file` (default [`crate::home::default_kms_key_file`]).
    pub kms_key_file: Option<std::path::PathBuf>,
    /// `--kubernetes-bin`, `--eks-webhook-listen`: EKS clusters' control planes.
    pub kubernetes: crate::kubernetes::KubernetesArgs,
}

/// Image store options with the CAs of the PEM bundle `registry_ca` (one or more
/// certificates) trusted for registries on top of the built-in roots. Errors name the file.
pub fn image_store_options(registry_ca: Option<&std::path::Path>) -> anyhow::Result<flotilla_image::StoreOptions> {
    let mut options = flotilla_image::StoreOptions::default();
    if let Some(path) = registry_ca {
        let pem = std::fs::read(path).with_context(|| {
            format!("cannot read the registry CA bundle {} (--registry-ca / FLOTILLA_REGISTRY_CA)", path.display())
        })?;
        let count = options.registry.add_root_certificates_pem(pem).with_context(|| {
            format!(
                "invalid registry CA bundle {}: expected PEM certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            )
        })?;
        tracing::debug!(path = %path.display(), count, "trusting extra registry CAs");
    }
    Ok(options)
}

pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    // Checked first, even with --no-agent: a bad CA bundle is a mistake worth reporting.
    let image_options = image_store_options(opts.registry_ca.as_deref())?;
    let home = Home::open(&opts.data_dir)?;
    let identity = home.identity(opts.region.as_deref(), opts.account_id.as_deref())?;
    let (credentials, generated) = home.credentials()?;
    let store = EmbeddedStore::open(home.store_path()).with_context(|| {
        format!("cannot open the store in {}; is another flotilla using this --data-dir?", home.dir.display())
    })?;
    let efs_root = opts.efs_root.clone().unwrap_or_else(|| home.dir.join("efs"));
    let plane = ControlPlane::start(
        Arc::new(store),
        PlaneOptions {
            region: identity.region.clone(),
            account_id: identity.account_id.clone(),
            public_ip_pool: opts.public_ip_pool,
            lb_address: Some(opts.lb_address),
            logs_dir: home.dir.join("logs"),
            efs_root: efs_root.clone(),
            require_roles: opts.require_roles,
            kms_key_file: home.kms_key_file(opts.kms_key_file.as_deref())?,
            root_credentials: credentials.clone(),
            data_dir: home.dir.clone(),
            kubernetes: opts.kubernetes.clone(),
            eks_planes: None,
        },
    )
    .await?;
    let host_api = plane.host_api.clone();
    let state = plane.api_state(&credentials);
    let agents: Vec<Arc<flotilla_agent::Agent>> = if opts.simulated_hosts > 0 {
        simulated_agents(&home, host_api, &identity.region, opts.simulated_hosts, opts.overcommit)
    } else if opts.no_agent {
        Vec::new()
    } else {
        let setup = AgentSetup {
            region: identity.region.clone(),
            spec: this_host(&identity.region, opts.overcommit, opts.max_tasks),
            dns_store: plane.store.clone(),
            net_namespace: opts.net_namespace.clone(),
            lb_address: opts.lb_address,
            image_options,
            efs_root: efs_root.clone(),
            // The same API as the listener's, at the task endpoint: tasks call it there.
            api: Some(router(state.clone())),
        };
        vec![start_agent(&home, host_api, setup).await?]
    };
    // Each in-process agent runs the commands of ECS Exec in its own tasks' containers.
    for agent in &agents {
        plane.exec_targets.register(agent.host_id(), agent.clone() as Arc<dyn flotilla_host::exec::ExecTarget>);
    }
    let (stop_agents, _) = tokio::sync::watch::channel(false);
    let agents: Vec<_> = agents
        .into_iter()
        .map(|agent| {
            let mut stop = stop_agents.subscribe();
            tokio::spawn(agent.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect();

    // EKS on Fargate: the pods of ACTIVE EKS clusters run as this plane's tasks.
    let fargate = crate::fargate::start(&plane, plane.eks.clone(), opts.listen.ip(), stop_agents.subscribe())?;

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
    plane.print_kms_key_file();
    if generated {
        println!("  generated credentials, kept in {}", home.dir.join("credentials.json").display());
    }
    print_usage(&endpoint, &credentials, &identity.region);
    // Recorded last: once the file exists, the banner above is complete.
    home.record_endpoint(&endpoint)?;

    // With the peer's address: policies' `aws:SourceIp`.
    axum::serve(no_delay(listener), router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    // Tasks keep running under their shims; the next `flotilla up` adopts them.
    let _ = stop_agents.send(true);
    let _ = fargate.await;
    for agent in agents {
        let _ = agent.await;
    }
    // In-flight requests have finished; dropping the store (the plane's last holder of it)
    // flushes and closes it.
    plane.stop().await;
    println!("Flotilla stopped.");
    Ok(())
}

/// How to use a server from the AWS CLI and this one.
pub(crate) fn print_usage(endpoint: &str, credentials: &flotilla_api::Credentials, region: &str) {
    println!("Use it with the AWS CLI:");
    println!("  aws configure set aws_access_key_id {} --profile flotilla", credentials.access_key_id);
    println!("  aws configure set aws_secret_access_key {} --profile flotilla", credentials.secret_access_key);
    println!("  aws configure set region {region} --profile flotilla");
    println!("  aws --profile flotilla --endpoint-url {endpoint} ecs list-clusters");
    println!("or with this CLI: flotilla clusters");
}

/// What a host's agent is made of besides its host API.
pub(crate) struct AgentSetup {
    pub region: String,
    pub spec: flotilla_host::HostSpec,
    /// Where the VPC resolvers read Cloud Map's records.
    pub dns_store: Arc<dyn flotilla_store::Store>,
    pub net_namespace: Option<std::path::PathBuf>,
    pub lb_address: std::net::IpAddr,
    pub image_options: flotilla_image::StoreOptions,
    /// Where EFS file systems' directories are.
    pub efs_root: std::path::PathBuf,
    /// Flotilla's AWS API, served at the task endpoint when it runs in this process.
    pub api: Option<axum::Router>,
}

/// The host agent: image store, task sandboxes and log shipping under the data dir (each
/// data dir its own tasks, nftables table and agent state, so several agents share a machine).
pub(crate) async fn start_agent(
    home: &Home,
    host: Arc<dyn flotilla_host::HostApi>,
    setup: AgentSetup,
) -> anyhow::Result<Arc<flotilla_agent::Agent>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "running tasks needs root (namespaces, cgroups, mounts): run flotilla up as root, or pass --no-agent to serve the API only"
        );
    }
    let images_dir = crate::home::images_dir(&home.dir);
    let images = flotilla_image::ImageStore::open_with(&images_dir, setup.image_options)
        .await
        .with_context(|| format!("cannot open the image store in {}", images_dir.display()))?;
    let config = flotilla_sandbox::LinuxSandboxConfig { root: home.dir.join("tasks"), ..Default::default() };
    if !config.shim_binary.exists() && which("flotilla-shim").is_none() {
        anyhow::bail!(
            "flotilla-shim is not next to {} nor on PATH: build it with `cargo build -p flotilla-shim` (scripts/up.sh does)",
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    if which("runc").is_none() {
        anyhow::bail!("runc is not installed: `apt-get install -y runc` (scripts/deps.sh does)");
    }
    let sandbox = Arc::new(flotilla_sandbox::LinuxSandbox::new(config));
    match flotilla_sandbox::Sandbox::adopt_existing(sandbox.as_ref()).await {
        Ok(adopted) if !adopted.is_empty() => println!("  adopted {} running task(s)", adopted.len()),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not adopt existing tasks; their supervisors will retry"),
    }
    let networking =
        start_networking(home, &setup.region, setup.dns_store, host.clone(), setup.net_namespace.clone(), &setup.spec)
            .await?;
    let load_balancing =
        flotilla_agent::lb::LbConfig { host_address: Some(setup.lb_address), vpc_netns: setup.net_namespace };
    Ok(flotilla_agent::Agent::new(flotilla_agent::AgentParts {
        host,
        spec: setup.spec,
        images: Arc::new(images),
        sandbox,
        network: networking,
        ship_logs: true,
        state_dir: home.dir.join("agent"),
        region: setup.region,
        metadata: true,
        api: setup.api,
        load_balancing: Some(load_balancing),
        liveness: flotilla_agent::Liveness::from_env(),
        efs_root: Some(setup.efs_root),
    }))
}

/// This machine as a host: its name, the region's first zone, and what it offers tasks. Its
/// limits are raised here (only a host that runs tasks needs them), and what is left of them
/// caps its task count with `max_tasks`.
pub(crate) fn this_host(
    region: &str,
    overcommit: flotilla_agent::capacity::Overcommit,
    max_tasks: Option<u32>,
) -> flotilla_host::HostSpec {
    let id = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "local".to_owned());
    let (cpu, memory) = flotilla_agent::capacity::this_machine(overcommit);
    let max_tasks = Some(crate::limits::HostLimits::raise().cap(max_tasks));
    flotilla_host::HostSpec { id, availability_zone: format!("{region}a"), cpu, memory, underlay_ip: None, max_tasks }
}

/// `--simulated-hosts N`: hosts `sim-1`..`sim-N` spread over three zones, each an agent over
/// simulated containers on a pretend 4-vCPU, 16 GiB machine (with the overcommit given).
fn simulated_agents(
    home: &Home,
    host: Arc<dyn flotilla_host::HostApi>,
    region: &str,
    count: u32,
    overcommit: flotilla_agent::capacity::Overcommit,
) -> Vec<Arc<flotilla_agent::Agent>> {
    let (cpu, memory) = flotilla_agent::capacity::allocatable(4, 16 * 1024, overcommit);
    (1..=count)
        .map(|n| {
            let zone = ["a", "b", "c"][(n as usize - 1) % 3];
            let spec = flotilla_host::HostSpec {
                id: format!("sim-{n}"),
                availability_zone: format!("{region}{zone}"),
                cpu,
                memory,
                underlay_ip: None,
                max_tasks: None,
            };
            let sandbox = flotilla_sandbox::sim::SimSandbox::new();
            let state_dir = home.dir.join("agent").join(&spec.id);
            flotilla_agent::sim::agent(host.clone(), spec, sandbox, region, state_dir)
        })
        .collect()
}

/// The awsvpc data plane (one nftables table per data dir, so two servers on one host never
/// touch each other's rules) and the VPC resolvers.
async fn start_networking(
    home: &Home,
    region: &str,
    dns_store: Arc<dyn flotilla_store::Store>,
    host: Arc<dyn flotilla_host::HostApi>,
    net_namespace: Option<std::path::PathBuf>,
    spec: &flotilla_host::HostSpec,
) -> anyhow::Result<Arc<flotilla_agent::Networking>> {
    if which("nft").is_none() {
        anyhow::bail!("nft is not installed: `apt-get install -y nftables` (scripts/deps.sh does)");
    }
    let config = flotilla_net::NetConfig {
        nft_table: nft_table_for(&home.dir),
        uplink: None,
        host_netns: net_namespace.clone(),
    };
    let table = config.nft_table.clone();
    let net = tokio::task::spawn_blocking(move || flotilla_net::Network::new(config)).await?.with_context(|| {
        match &net_namespace {
            Some(ns) => format!("cannot set up task networking in {}", ns.display()),
            None => "cannot set up task networking (nftables table, forwarding)".to_owned(),
        }
    })?;
    tracing::debug!(table, "task network ready");
    let dns = flotilla_api::servicediscovery::DnsServer::start(
        dns_store,
        flotilla_api::servicediscovery::Upstreams::system(),
    )
    .await
    .context("cannot start the VPC DNS server")?;
    let networking =
        flotilla_agent::Networking::new(host, region.to_owned(), Arc::new(net), Arc::new(VpcResolvers(Arc::new(dns))));
    // A host with an underlay address shares its VPCs with the other hosts (the overlay).
    Ok(Arc::new(match spec.underlay_ip {
        Some(ip) => networking.with_underlay(spec.id.clone(), ip),
        None => networking,
    }))
}

/// Cloud Map's DNS server as the agent's VPC resolvers.
struct VpcResolvers(Arc<flotilla_api::servicediscovery::DnsServer>);

impl flotilla_agent::Resolvers for VpcResolvers {
    fn serve_vpc(&self, vpc_id: &str, udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> std::io::Result<()> {
        self.0.serve_vpc(vpc_id, udp, tcp).map(|_| ()).map_err(std::io::Error::other)
    }

    fn bindings(&self) -> Vec<(SocketAddr, String)> {
        self.0.bindings()
    }

    fn unbind(&self, addr: SocketAddr) {
        self.0.unbind(addr);
    }

    fn set_names(
        &self,
        names: std::collections::HashMap<String, std::collections::HashMap<String, Vec<std::net::Ipv4Addr>>>,
    ) {
        self.0.set_names(names);
    }
}

/// `flotilla_<fnv32 of the data dir>`: stable across restarts of one data dir, distinct
/// between data dirs.
fn nft_table_for(dir: &std::path::Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let hash = canonical
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    format!("flotilla_{hash:08x}")
}

fn which(binary: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(binary)).find(|p| p.is_file())
}
