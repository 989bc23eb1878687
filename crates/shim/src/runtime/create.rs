//! Building the sandbox: cgroups, namespaces, scratch filesystem, shared /etc files, volumes,
//! and for each container its overlay root, runtime config and stdio FIFOs. Nothing starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use flotilla_sandbox::cgroup;
use flotilla_sandbox::ephemeral::{self, CommandRunner, PooledScratch, Scratch};
use flotilla_sandbox::protocol::{CreateReport, ShimError, ShimErrorKind, Timings};
use flotilla_sandbox::shared_scratch;
use flotilla_sandbox::spec::{self, EtcFiles, SpecInput, TaskNamespaces, UserDb, VolumeMount};
use flotilla_sandbox::{ContainerSpec, ContainerStatus, SpecError, TaskPhase, TaskSpec, mount, namespaces, rootfs};

use super::{Runtime, ShimResult, io_err, runtime_err};
use crate::logs::make_fifos;
use crate::reaper::Reaper;

/// Static inits that work in any image (no libc needed), in order of preference.
const INIT_CANDIDATES: &[&str] = &["/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init"];

struct ReaperRunner<'a>(&'a Reaper);

impl CommandRunner for ReaperRunner<'_> {
    fn run(&self, cmd: &mut Command) -> std::io::Result<std::process::Output> {
        self.0.output(cmd)
    }
}

fn invalid(e: SpecError) -> ShimError {
    ShimError::new(ShimErrorKind::InvalidSpec, e.reason)
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

impl Runtime {
    pub(super) fn create(self: &Arc<Self>, spec: TaskSpec, pooled: Option<PooledScratch>) -> ShimResult<CreateReport> {
        let _ops = self.lock_ops();
        let leftovers = {
            let st = self.lock_state();
            match st.phase {
                TaskPhase::Ready => {
                    return match (&st.spec, &st.report) {
                        (Some(existing), Some(report)) if *existing == spec => Ok(report.clone()),
                        _ => Err(ShimError::new(
                            ShimErrorKind::AlreadyExists,
                            "the task exists with a different spec".to_string(),
                        )),
                    };
                }
                TaskPhase::Destroying => {
                    return Err(ShimError::new(ShimErrorKind::InvalidState, "the task is being destroyed"));
                }
                TaskPhase::Creating => st.spec.is_some(),
            }
        };
        spec.validate().map_err(invalid)?;
        if spec.task_id != self.task_id {
            return Err(invalid(SpecError::invalid(format!(
                "task id {:?} does not match the task directory {:?}",
                spec.task_id, self.task_id
            ))));
        }
        if leftovers {
            // A previous shim died half-way through; start from nothing.
            self.release_resources()?;
            mount::unmount_all_under(&self.cfg.task_dir).map_err(|e| runtime_err(&e))?;
        }
        self.update(|st| {
            st.spec = Some(spec.clone());
            st.phase = TaskPhase::Creating;
            st.containers.clear();
        })?;

        let mut timings = Timings::new();
        let dir = self.cfg.task_dir.clone();

        let t = Instant::now();
        self.cgroups.create_task(&spec.task_id, &cgroup::task_budget(&spec)).map_err(|e| runtime_err(&e))?;
        timings.insert("cgroup".into(), micros(t));

        let t = Instant::now();
        let mut ns =
            namespaces::create(&dir, &spec.hostname(), self.cfg.host_mounts.as_ref()).map_err(|e| runtime_err(&e))?;
        timings.insert("namespaces".into(), micros(t));

        if spec.pid_mode_task {
            let t = Instant::now();
            ns.pid = Some(self.start_pause()?);
            timings.insert("pid_namespace".into(), micros(t));
        }

        let t = Instant::now();
        let data = self.data_dir();
        let (image, size) = (dir.join("ephemeral.img"), spec.ephemeral_storage_gib());
        // The host's shared scratch filesystem when the agent mounted one (a subvolume each),
        // else a filesystem of the task's own, pooled or made here.
        let shared = self.cfg.shared_scratch.as_ref();
        let adopted = if shared.is_some() { None } else { pooled.map(|p| ephemeral::adopt(&p, &image, &data, size)) };
        if let Some(Err(e)) = &adopted {
            tracing::warn!(error = %flotilla_sandbox::error::chain(e), "pooled scratch filesystem unusable; making one");
        }
        let scratch = match (&shared, &adopted) {
            (Some(shared), _) => {
                shared_scratch::create(shared, &spec.task_id, size, &data).map_err(|e| runtime_err(&e))?;
                Scratch::Limited
            }
            (None, Some(Ok(_))) => Scratch::Limited,
            _ => ephemeral::create(&image, &data, size, &ReaperRunner(&self.reaper)).map_err(|e| runtime_err(&e))?,
        };
        timings.insert("ephemeral_fs".into(), micros(t));
        // Not a duration: 0 = made here, 1 = pooled device mounted here, 2 = pooled mount
        // attached, 3 = a subvolume of the shared filesystem.
        let pooled = match adopted {
            _ if shared.is_some() => 3,
            Some(Ok(ephemeral::Adopted::Attached)) => 2,
            Some(Ok(ephemeral::Adopted::Mounted)) => 1,
            _ => 0,
        };
        timings.insert("ephemeral_fs_pooled".into(), pooled);

        let t = Instant::now();
        let etc = rootfs::write_etc_files(&dir.join("etc"), &spec.hostname()).map_err(|e| runtime_err(&e))?;
        for v in &spec.volumes {
            let path = data.join("volumes").join(v);
            std::fs::create_dir_all(&path).map_err(|e| io_err("mkdir", &path, e))?;
        }
        for v in &spec.efs_volumes {
            flotilla_sandbox::efs::mount(&self.cfg.task_dir, v).map_err(|e| {
                ShimError::new(
                    ShimErrorKind::Runtime,
                    format!(
                        "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: \
                         mounting {}:{} failed: {}",
                        v.name,
                        v.path,
                        flotilla_sandbox::error::chain(&e)
                    ),
                )
            })?;
        }
        timings.insert("etc_and_volumes".into(), micros(t));

        let (mut rootfs_us, mut config_us) = (0, 0);
        for c in &spec.containers {
            let t = Instant::now();
            self.mount_rootfs(c)?;
            rootfs_us += micros(t);
            let t = Instant::now();
            self.write_config(&spec, c, &ns, &etc)?;
            config_us += micros(t);
        }
        timings.insert("rootfs".into(), rootfs_us);
        timings.insert("runtime_config".into(), config_us);

        let report = CreateReport { netns: ns.net, ephemeral_storage_limited: scratch == Scratch::Limited, timings };
        self.update(|st| {
            st.phase = TaskPhase::Ready;
            st.containers = spec.containers.iter().map(|c| ContainerStatus::created(&c.name)).collect();
            st.report = Some(report.clone());
        })?;
        tracing::info!(task_id = %spec.task_id, timings = ?report.timings, "task created");
        self.spawn_precreate(spec.containers.iter().map(|c| c.name.clone()).collect());
        Ok(report)
    }

    /// Starts the task's pause process and pins its PID namespace.
    fn start_pause(&self) -> ShimResult<PathBuf> {
        let out = self
            .reaper
            .output(Command::new(&self.cfg.self_exe).arg("pause"))
            .map_err(|e| io_err("running", &self.cfg.self_exe, e))?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            ShimError::new(
                ShimErrorKind::Runtime,
                format!("pause process failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            )
        })?;
        self.update(|st| st.pause_pid = Some(pid))?;
        let target = namespaces::paths(&self.cfg.task_dir, true).pid.unwrap_or_default();
        namespaces::pin(pid, "pid", &target).map_err(|e| runtime_err(&e))?;
        Ok(target)
    }

    fn mount_rootfs(&self, c: &ContainerSpec) -> ShimResult<()> {
        let data = self.data_dir();
        let target = self.container_dir(&c.name).join("rootfs");
        let upper = data.join("upper").join(&c.name);
        let work = data.join("work").join(&c.name);
        rootfs::mount_overlay(&c.layers, &upper, &work, &target).map_err(|e| match e {
            rootfs::RootfsError::Io(_) => runtime_err(&e),
            other => ShimError::new(ShimErrorKind::InvalidSpec, other.to_string()),
        })
    }

    fn init_binary(&self) -> Option<PathBuf> {
        self.cfg.init.clone().or_else(|| INIT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()))
    }

    fn write_config(&self, spec: &TaskSpec, c: &ContainerSpec, ns: &TaskNamespaces, etc: &EtcFiles) -> ShimResult<()> {
        let cdir = self.container_dir(&c.name);
        let rootfs = cdir.join("rootfs");
        let user_db = UserDb::load(&rootfs);
        let volumes = spec
            .resolved_mounts(&c.name)
            .map_err(invalid)?
            .into_iter()
            .map(|m| {
                Ok(VolumeMount {
                    source: match spec.efs_volumes.iter().find(|v| v.name == m.source_volume) {
                        Some(v) => efs_source(&self.cfg.task_dir, v, c, &user_db)?,
                        None => self.data_dir().join("volumes").join(&m.source_volume),
                    },
                    destination: m.container_path,
                    read_only: m.read_only,
                })
            })
            .collect::<ShimResult<Vec<_>>>()?;
        let init = self.init_binary();
        let input = SpecInput {
            task: spec,
            container: c,
            rootfs: &rootfs,
            user_db: &user_db,
            host_limits: &self.host_limits,
            namespaces: ns,
            etc,
            volumes,
            cgroups_path: self.cgroups.runtime_path(&spec.task_id, &c.name),
            swap_limit_supported: self.cgroups.swap_limit_supported(),
            init_binary: init.as_deref(),
        };
        let oci = spec::build(&input).map_err(invalid)?;
        let path = cdir.join("config.json");
        let json = serde_json::to_vec_pretty(&oci).map_err(|e| runtime_err(&e))?;
        std::fs::write(&path, json).map_err(|e| io_err("writing", &path, e))?;
        make_fifos(&cdir).map_err(|e| io_err("mkfifo in", &cdir, e))?;
        Ok(())
    }
}

/// Paths of a container's root filesystem mount, for teardown.
pub(super) fn rootfs_mount(task_dir: &Path, name: &str) -> PathBuf {
    task_dir.join(flotilla_sandbox::protocol::CONTAINERS_DIR).join(name).join("rootfs")
}

/// Where a container's mount of an EFS volume comes from: the task's mount, or an idmapped
/// clone of it when the volume's access point has a POSIX user ([`flotilla_sandbox::efs`]).
fn efs_source(
    task_dir: &std::path::Path,
    volume: &flotilla_sandbox::efs::EfsMount,
    c: &ContainerSpec,
    user_db: &UserDb,
) -> ShimResult<std::path::PathBuf> {
    let user = user_db.resolve(c.user.as_deref().or(c.image_config.user.as_deref())).map_err(invalid)?;
    let identity = flotilla_sandbox::efs::EfsIdentity { uid: user.uid, gid: user.gid };
    flotilla_sandbox::efs::container_source(task_dir, volume, &c.name, identity).map_err(|e| {
        ShimError::new(
            ShimErrorKind::Runtime,
            format!(
                "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: {}",
                flotilla_sandbox::error::chain(&e)
            ),
        )
    })
}
