//! Task sandboxes for Flotilla.
//!
//! The agent talks to a [`Sandbox`]: create a task (its isolation and filesystems), start,
//! signal, inspect, exec into and destroy its containers. [`LinuxSandbox`] implements it with
//! one `flotilla-shim` process per task, which drives runc and outlives the agent;
//! [`SimSandbox`] implements it in memory, for tests of what sits above it.
//!
//! The other modules are the kernel plumbing the shim uses: cgroups v1/v2 ([`cgroup`]), the
//! task's shared namespaces ([`namespaces`]), overlay root filesystems ([`rootfs`]), the
//! size-limited scratch filesystem ([`ephemeral`]), and the OCI runtime config ([`spec`],
//! [`oci`], [`seccomp`]).
//!
//! Layout of a task directory (`<root>/<task-id>/`):
//! ```text
//! shim.sock shim.lock shim.log state.json
//! ns/{net,uts,ipc[,pid],mnt}      pinned namespaces (mnt: the shim's own mount namespace)
//! etc/{hosts,resolv.conf,hostname}
//! ephemeral.img  data/            scratch filesystem: upper/<c>, work/<c>, volumes/<v>
//!                                 (often a pooled one, see [`scratch_pool`])
//! runc/                           runc's state root for this task
//! containers/<c>/config.json rootfs/ log.jsonl stdout.fifo stderr.fifo runc.log
//! ```

pub mod cgroup;
pub mod efs;
pub mod ephemeral;
pub mod error;
pub mod linux;
mod linux_exec;
pub mod mntns;
pub mod mount;
pub mod namespaces;
pub use flotilla_oci as oci;
pub mod protocol;
pub mod rootfs;
pub mod sandbox;
pub mod scratch_pool;
pub mod seccomp;
pub mod shared_scratch;
pub mod sim;
pub mod spec;
pub mod status;
pub mod task;

pub use error::SandboxError;
pub use linux::{LinuxSandbox, LinuxSandboxConfig};
pub use sandbox::{
    BoxFuture, ContainerStarted, ExecProcess, ExecStdio, InteractiveSpec, NetworkAttachment, Sandbox, TaskHandle,
};
pub use sim::{SimEvent, SimOp, SimSandbox};
pub use status::{
    ContainerState, ContainerStatus, ExecResult, ExecSpec, OOM_REASON, ResourceStats, StorageStats, TaskPhase,
    TaskStats, TaskStatus,
};
pub use task::{ContainerSpec, EnvVar, ImageConfig, MountPoint, SpecError, TaskSpec, Ulimit, VolumeFrom};
