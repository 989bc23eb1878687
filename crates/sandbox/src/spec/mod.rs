//! Building a container's OCI `config.json` from the task and container specs. Pure: every
//! host fact it needs (paths, the image's user database, host rlimits) comes in through
//! [`SpecInput`], so the rules are unit-tested without root.

pub mod caps;
pub mod mounts;
pub mod process;
pub mod rlimit;
pub mod user;

use std::path::{Path, PathBuf};

use crate::oci;
use crate::task::{ContainerSpec, SpecError, TaskSpec};

pub use caps::{FARGATE_DEFAULT_CAPS, cap_mask, resolve_caps};
pub use rlimit::{HostLimits, resolve_rlimits};
pub use user::{ResolvedUser, UserDb};

/// Where Docker puts its init (`--init`); images and tooling know the path.
pub const INIT_PATH_IN_CONTAINER: &str = "/sbin/docker-init";

/// Namespace files of the task; containers join these rather than creating their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNamespaces {
    pub net: PathBuf,
    pub uts: PathBuf,
    pub ipc: PathBuf,
    /// Set when the task shares one PID namespace (`pidMode: task`).
    pub pid: Option<PathBuf>,
}

/// Files shared by all containers of a task, bind-mounted read-only over the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// A task volume as one container mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

pub struct SpecInput<'a> {
    pub task: &'a TaskSpec,
    pub container: &'a ContainerSpec,
    /// The mounted root filesystem (runc's `root.path`).
    pub rootfs: &'a Path,
    pub user_db: &'a UserDb,
    pub host_limits: &'a HostLimits,
    pub namespaces: &'a TaskNamespaces,
    pub etc: &'a EtcFiles,
    pub volumes: Vec<VolumeMount>,
    pub cgroups_path: String,
    pub swap_limit_supported: bool,
    /// A static init (tini) on the host, required when `init_process_enabled`.
    pub init_binary: Option<&'a Path>,
}

pub fn build(input: &SpecInput<'_>) -> Result<oci::Spec, SpecError> {
    let c = input.container;
    let hostname = input.task.hostname();
    let user = input.user_db.resolve(c.user.as_deref().or(c.image_config.user.as_deref()))?;
    let mut args = process::resolve_args(c)?;
    let env = process::resolve_env(&c.image_config.env, &c.environment, &hostname, &user.home);
    let cwd = process::resolve_cwd(c)?;
    let caps = resolve_caps(&c.cap_add, &c.cap_drop)?;
    let rlimits = resolve_rlimits(&c.ulimits, input.host_limits)?;

    let mut mounts = mounts::default_mounts();
    mounts.push(mounts::bind(&input.etc.hosts, "/etc/hosts", true));
    mounts.push(mounts::bind(&input.etc.resolv_conf, "/etc/resolv.conf", true));
    mounts.push(mounts::bind(&input.etc.hostname, "/etc/hostname", true));
    if c.init_process_enabled {
        let init = input.init_binary.ok_or_else(|| {
            SpecError::invalid(format!(
                "container {:?}: initProcessEnabled needs a static init on the host (apt-get install -y tini)",
                c.name
            ))
        })?;
        mounts.push(mounts::bind(init, INIT_PATH_IN_CONTAINER, true));
        // tini reaps zombies and forwards signals; `-s` would make it a subreaper, not needed as PID 1.
        args = [INIT_PATH_IN_CONTAINER.to_string(), "--".to_string()].into_iter().chain(args).collect();
    }
    // Parents before children, as Docker orders volume mounts.
    let mut volumes = input.volumes.clone();
    volumes.sort_by_key(|v| v.destination.split('/').filter(|p| !p.is_empty()).count());
    for v in &volumes {
        mounts.push(mounts::bind(&v.source, &v.destination, v.read_only));
    }

    let ns = |kind: &str, path: Option<&PathBuf>| oci::Namespace { kind: kind.to_string(), path: path.cloned() };
    let namespaces = vec![
        ns("pid", input.namespaces.pid.as_ref()),
        ns("network", Some(&input.namespaces.net)),
        ns("ipc", Some(&input.namespaces.ipc)),
        ns("uts", Some(&input.namespaces.uts)),
        ns("mount", None),
        ns("cgroup", None),
    ];

    let limit = c.memory_mib.map(|m| (m << 20) as i64);
    let own_memory = !shares_task_memory(input.task, c) && (limit.is_some() || c.memory_reservation_mib.is_some());
    let memory = own_memory.then(|| oci::Memory {
        limit,
        reservation: c.memory_reservation_mib.map(|m| (m << 20) as i64),
        swap: if input.swap_limit_supported { limit } else { None },
    });

    // Root keeps its capabilities; other users start with none effective, as Docker does,
    // so that a non-root image user cannot use them (the bounding set still caps setuid binaries,
    // and no_new_privileges stops those from gaining any).
    let (effective, permitted) = if user.uid == 0 { (caps.clone(), caps.clone()) } else { (vec![], vec![]) };
    let seccomp = crate::seccomp::default_profile(&effective_or_bounding(&effective, &caps));

    Ok(oci::Spec {
        oci_version: oci::OCI_VERSION.to_string(),
        process: oci::Process {
            terminal: false,
            user: oci::User { uid: user.uid, gid: user.gid, additional_gids: user.additional_gids },
            args,
            env,
            cwd,
            capabilities: oci::Capabilities {
                bounding: caps,
                effective,
                inheritable: vec![],
                permitted,
                ambient: vec![],
            },
            rlimits,
            no_new_privileges: true,
        },
        root: oci::Root { path: input.rootfs.to_path_buf(), readonly: c.readonly_root_filesystem },
        hostname: Some(hostname),
        mounts,
        linux: oci::Linux {
            namespaces,
            cgroups_path: input.cgroups_path.clone(),
            resources: oci::Resources {
                devices: mounts::device_rules(),
                memory,
                cpu: Some(container_cpu(input.task, c)),
            },
            masked_paths: mounts::MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            readonly_paths: mounts::READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
            seccomp,
        },
        annotations: [(oci::CGROUPS_AT_PARENT.to_string(), cgroups_at_parent(input.task, c).join(","))].into(),
    })
}

/// The cgroup v1 hierarchies where a container has no level of its own and joins its task's
/// ([`oci::CGROUPS_AT_PARENT`]): those it sets nothing in, and memory and pids too when it
/// [shares its task's memory](shares_task_memory). Every memory cgroup costs the kernel
/// shrinker state for each mounted filesystem on the host (~1 KiB per 64 of them, ~170 KiB
/// per cgroup at 1,000 tasks), so a lone container sharing its task's halves that. cpu
/// (shares, and the quota Go and the JVM size themselves from), cpuacct (per-container
/// usage) and devices keep a level.
pub fn cgroups_at_parent(task: &TaskSpec, c: &ContainerSpec) -> Vec<&'static str> {
    let mut list = vec![
        "cpuset",
        "freezer",
        "blkio",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
        "name=systemd",
    ];
    if shares_task_memory(task, c) {
        list.extend(["memory", "pids"]);
    }
    list
}

/// A task's only container whose memory settings add nothing to the task's (no reservation,
/// no limit below the task's; the agent repeats the task's limit on a container that has
/// none) counts in its task's memory cgroup: that level then holds exactly it, its limit is
/// the one the container would have had, and its usage and OOM kills are the container's.
pub fn shares_task_memory(task: &TaskSpec, c: &ContainerSpec) -> bool {
    task.containers.len() == 1
        && c.memory_reservation_mib.is_none()
        && c.memory_mib.is_none_or(|m| m >= task.memory_mib)
}

/// Seccomp rules follow what the process could ever hold: the bounding set. A non-root
/// process with an empty effective set could still regain bounding caps by becoming root.
fn effective_or_bounding(effective: &[String], bounding: &[String]) -> Vec<String> {
    if effective.is_empty() { bounding.to_vec() } else { effective.to_vec() }
}

/// Shares weigh the container against its siblings. The task's quota is repeated on the
/// container's own cgroup (the task's parent cgroup enforces it anyway) so that runtimes which
/// size themselves from their cgroup, like Go and the JVM, see the vCPUs the task really has.
fn container_cpu(task: &TaskSpec, c: &ContainerSpec) -> oci::Cpu {
    let budget = crate::cgroup::task_budget(task);
    oci::Cpu {
        shares: Some(cpu_shares(c.cpu_units)),
        quota: budget.cpu_quota_us.map(|q| q as i64),
        period: budget.cpu_quota_us.map(|_| crate::cgroup::CPU_PERIOD_US),
    }
}

/// ECS units map 1:1 to cpu shares; 0 means "no reservation", which the ECS agent gives the
/// kernel minimum of 2 shares.
pub fn cpu_shares(units: u32) -> u64 {
    (units as u64).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{EnvVar, ImageConfig, Ulimit};

    struct Fixture {
        task: TaskSpec,
        db: UserDb,
        host: HostLimits,
        ns: TaskNamespaces,
        etc: EtcFiles,
    }

    fn fixture() -> Fixture {
        let mut c = ContainerSpec::new("web", vec!["/layers/0".into()]);
        c.image_config = ImageConfig {
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            entrypoint: Some(vec!["/bin/httpd".into()]),
            cmd: Some(vec!["-f".into()]),
            working_dir: Some("/www".into()),
            user: Some("app".into()),
        };
        c.environment = vec![EnvVar { name: "MODE".into(), value: "task".into() }];
        c.cpu_units = 0;
        c.memory_mib = Some(128);
        c.memory_reservation_mib = Some(64);
        c.ulimits = vec![Ulimit { name: "nofile".into(), soft_limit: 100, hard_limit: 200 }];
        let mut host = HostLimits::unlimited();
        host.hard.insert("nofile".into(), 150);
        Fixture {
            task: TaskSpec {
                task_id: "task-1".into(),
                cpu_units: 256,
                memory_mib: 512,
                pids_limit: None,
                pid_mode_task: false,
                ephemeral_storage_gib: None,
                hostname: Some("ip-10-0-0-1".into()),
                volumes: vec![],
                efs_volumes: Vec::new(),
                containers: vec![c],
            },
            db: UserDb {
                users: user::parse_passwd("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
                groups: user::parse_group("app:x:1000:\nwww:x:33:app\n"),
            },
            host,
            ns: TaskNamespaces { net: "/t/ns/net".into(), uts: "/t/ns/uts".into(), ipc: "/t/ns/ipc".into(), pid: None },
            etc: EtcFiles {
                hosts: "/t/etc/hosts".into(),
                resolv_conf: "/t/etc/resolv.conf".into(),
                hostname: "/t/etc/hostname".into(),
            },
        }
    }

    fn input<'a>(f: &'a Fixture, init: Option<&'a Path>) -> SpecInput<'a> {
        SpecInput {
            task: &f.task,
            container: &f.task.containers[0],
            rootfs: Path::new("/t/containers/web/rootfs"),
            user_db: &f.db,
            host_limits: &f.host,
            namespaces: &f.ns,
            etc: &f.etc,
            volumes: vec![
                VolumeMount {
                    source: "/t/data/volumes/v/sub".into(),
                    destination: "/data/sub".into(),
                    read_only: true,
                },
                VolumeMount { source: "/t/data/volumes/v".into(), destination: "/data".into(), read_only: false },
            ],
            cgroups_path: "/flotilla/task-1/web".into(),
            swap_limit_supported: true,
            init_binary: init,
        }
    }

    #[test]
    fn process_section() {
        let f = fixture();
        let spec = build(&input(&f, None)).unwrap();
        let p = &spec.process;
        assert_eq!(p.args, ["/bin/httpd", "-f"]);
        assert_eq!(p.env, ["PATH=/bin", "MODE=task", "HOSTNAME=ip-10-0-0-1", "HOME=/home/app"]);
        assert_eq!(p.cwd, "/www");
        assert_eq!((p.user.uid, p.user.gid, p.user.additional_gids.clone()), (1000, 1000, vec![1000, 33]));
        assert!(p.no_new_privileges);
        assert_eq!(p.rlimits, vec![oci::Rlimit { kind: "RLIMIT_NOFILE".into(), hard: 150, soft: 100 }]);
        // Non-root: bounding set only.
        assert_eq!(p.capabilities.bounding.len(), 14);
        assert!(p.capabilities.effective.is_empty() && p.capabilities.permitted.is_empty());
        assert!(p.capabilities.inheritable.is_empty() && p.capabilities.ambient.is_empty());
        assert_eq!(spec.hostname.as_deref(), Some("ip-10-0-0-1"));
    }

    #[test]
    fn a_lone_container_adding_nothing_to_the_task_memory_shares_its_cgroup() {
        let at_parent = |f: &Fixture| {
            let spec = build(&input(f, None)).unwrap();
            let list = spec.annotations[oci::CGROUPS_AT_PARENT].clone();
            (list.split(',').any(|c| c == "memory"), spec.linux.resources.memory.is_some())
        };
        // A limit below the task's and a reservation: a memory cgroup of its own.
        let mut f = fixture();
        assert_eq!(at_parent(&f), (false, true));
        f.task.containers[0].memory_reservation_mib = None;
        assert_eq!(at_parent(&f), (false, true), "limit 128 below the task's 512");
        // The task's limit repeated (as the agent does), or none: the task's cgroup.
        f.task.containers[0].memory_mib = Some(512);
        assert_eq!(at_parent(&f), (true, false));
        f.task.containers[0].memory_mib = None;
        assert_eq!(at_parent(&f), (true, false));
        // Two containers: each keeps its own, for its usage and OOM kills.
        let second = f.task.containers[0].clone();
        f.task.containers.push(second);
        assert_eq!(at_parent(&f), (false, false));
    }

    #[test]
    fn root_user_gets_the_fargate_set_effective() {
        let mut f = fixture();
        f.task.containers[0].user = Some("0".into());
        let spec = build(&input(&f, None)).unwrap();
        let caps = &spec.process.capabilities;
        assert_eq!(caps.effective, caps.bounding);
        assert_eq!(caps.permitted, caps.bounding);
        assert_eq!(cap_mask(&caps.effective), 0xa80425fb);
    }

    #[test]
    fn linux_section() {
        let f = fixture();
        let spec = build(&input(&f, None)).unwrap();
        let l = &spec.linux;
        let kinds: Vec<(&str, bool)> = l.namespaces.iter().map(|n| (n.kind.as_str(), n.path.is_some())).collect();
        assert_eq!(
            kinds,
            [("pid", false), ("network", true), ("ipc", true), ("uts", true), ("mount", false), ("cgroup", false)]
        );
        assert_eq!(l.cgroups_path, "/flotilla/task-1/web");
        let mem = l.resources.memory.as_ref().unwrap();
        assert_eq!(mem.limit, Some(128 << 20));
        assert_eq!(mem.swap, Some(128 << 20));
        assert_eq!(mem.reservation, Some(64 << 20));
        assert_eq!(l.resources.cpu.as_ref().unwrap().shares, Some(2));
        assert!(l.masked_paths.contains(&"/proc/kcore".to_string()));
        assert!(l.readonly_paths.contains(&"/proc/sys".to_string()));
        assert!(!l.resources.devices[0].allow);
        assert_eq!(l.seccomp.default_action, "SCMP_ACT_ERRNO");
    }

    #[test]
    fn mounts_in_order_with_read_only_flags() {
        let f = fixture();
        let spec = build(&input(&f, None)).unwrap();
        let dests: Vec<&str> = spec.mounts.iter().map(|m| m.destination.as_str()).collect();
        let n = dests.len();
        assert_eq!(&dests[..3], ["/proc", "/dev", "/dev/pts"]);
        assert_eq!(&dests[n - 5..], ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/data", "/data/sub"]);
        assert!(spec.mounts[n - 1].options.contains(&"ro".to_string()));
        assert!(!spec.mounts[n - 2].options.contains(&"ro".to_string()));
        let sys = spec.mounts.iter().find(|m| m.destination == "/sys").unwrap();
        assert!(sys.options.contains(&"ro".to_string()));
    }

    #[test]
    fn init_process_wraps_the_command() {
        let mut f = fixture();
        f.task.containers[0].init_process_enabled = true;
        assert!(build(&input(&f, None)).unwrap_err().reason.contains("tini"));
        let spec = build(&input(&f, Some(Path::new("/usr/bin/tini-static")))).unwrap();
        assert_eq!(spec.process.args, [INIT_PATH_IN_CONTAINER, "--", "/bin/httpd", "-f"]);
        assert!(spec.mounts.iter().any(|m| m.destination == INIT_PATH_IN_CONTAINER));
    }

    #[test]
    fn pid_mode_task_joins_the_shared_namespace() {
        let mut f = fixture();
        f.ns.pid = Some("/t/ns/pid".into());
        let spec = build(&input(&f, None)).unwrap();
        assert_eq!(spec.linux.namespaces[0].path.as_deref(), Some(Path::new("/t/ns/pid")));
    }

    #[test]
    fn serialises_with_oci_field_names() {
        let f = fixture();
        let json = serde_json::to_value(build(&input(&f, None)).unwrap()).unwrap();
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["linux"]["cgroupsPath"], "/flotilla/task-1/web");
        assert!(json["linux"]["maskedPaths"].is_array());
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(json["process"]["user"]["additionalGids"][1], 33);
        assert_eq!(json["linux"]["namespaces"][1]["type"], "network");
    }

    #[test]
    fn cpu_shares_floor() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(512), 512);
    }
}
