//! `SimSandbox`: the [`Sandbox`] trait in memory, for testing what sits above it (the
//! agent's supervisor) without root, processes or kernel state.
//!
//! Containers "run" from their start until the test ends them ([`SimSandbox::exit`],
//! [`SimSandbox::oom`]) or a signal does: SIGKILL always, any other signal unless
//! [`SimSandbox::ignore_sigterm`] was called for the container (as a process that traps its
//! signals). Each operation can be made to fail once ([`SimSandbox::fail_next`]) or, for one
//! task, until healed ([`SimSandbox::fail_task`]); a task can vanish ([`SimSandbox::lose`]);
//! and [`SimSandbox::log`] records the operations received, in order, so a test can assert
//! the order of starts and stops.
//!
//! Errors and edge cases follow `LinuxSandbox`: a missing task is `TaskNotFound`, starting a
//! container twice or signalling one that is not running is `InvalidState`, `destroy` is
//! idempotent, a failed start leaves the container exited with `CannotStartContainerError`.
//! Only log files, the network namespace path and `resolv.conf` are real files, under a
//! temporary directory the sim owns and removes when dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::error::SandboxError;
use crate::protocol::{CONTAINER_LOG_FILE, CONTAINERS_DIR, Timings};
use crate::sandbox::{
    BoxFuture, ContainerStarted, ExecProcess, InteractiveSpec, NetworkAttachment, Sandbox, TaskHandle,
};
use crate::status::{
    ContainerState, ContainerStatus, ExecResult, ExecSpec, OOM_REASON, ResourceStats, TaskPhase, TaskStats, TaskStatus,
};
use crate::task::TaskSpec;

const SIGKILL: i32 = 9;
/// The task id under which a behaviour applies to every task's container of that name.
const EVERY_TASK: &str = "*";
/// Operations `SimSandbox::log` keeps: far more than a test makes, and a bound for a
/// simulated host that runs for hours.
const LOG_CAPACITY: usize = 1 << 16;

/// The operations [`SimSandbox::fail_next`] can make fail. `State` covers `wait_change` too:
/// both are how the caller observes the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    Create,
    Start,
    Signal,
    Exec,
    Destroy,
    State,
}

/// One operation the sim received, failed ones included (a failed call was still made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    Create { task: String },
    Start { task: String, container: String },
    Signal { task: String, container: String, signal: i32 },
    Exec { task: String, container: String, argv: Vec<String> },
    Destroy { task: String },
}

/// How a container behaves, set by the test; keyed by task id and container name, so it can
/// be set before the task exists (the test may not control when it is created).
#[derive(Default)]
struct Behaviour {
    ignore_signals: bool,
    exec_result: Option<ExecResult>,
    exit_on_start: Option<i32>,
}

struct SimTask {
    spec: TaskSpec,
    phase: TaskPhase,
    containers: Vec<ContainerStatus>,
    generation: u64,
    /// Carries `generation` to this task's waiters; dropped with the task, which wakes them
    /// to find it gone. Per task, so a change wakes only the waiters that care.
    changes: watch::Sender<u64>,
}

impl SimTask {
    fn status(&self) -> TaskStatus {
        TaskStatus {
            task_id: self.spec.task_id.clone(),
            phase: self.phase,
            containers: self.containers.clone(),
            generation: self.generation,
        }
    }

    fn container_mut(&mut self, name: &str) -> Option<&mut ContainerStatus> {
        self.containers.iter_mut().find(|c| c.name == name)
    }
}

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<String, SimTask>,
    failures: HashMap<SimOp, VecDeque<String>>,
    /// Lasting faults of one task's operations (`fail_task`), until `heal`.
    faults: HashMap<(String, SimOp), String>,
    log: VecDeque<SimEvent>,
    behaviour: HashMap<(String, String), Behaviour>,
    /// Source of every task's generation: sim-wide, so a task created again after `lose` or
    /// `destroy` never repeats a generation an earlier waiter saw.
    generation: u64,
    next_pid: u32,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn record(&mut self, event: SimEvent) {
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(event);
    }

    /// Marks `task_id` changed and wakes its waiters.
    fn touch(&mut self, task_id: &str) {
        let generation = self.bump();
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.generation = generation;
            t.changes.send_replace(generation);
        }
    }

    fn take_failure(&mut self, op: SimOp, task_id: &str) -> Result<(), SandboxError> {
        if let Some(message) = self.faults.get(&(task_id.to_string(), op)) {
            return Err(SandboxError::Runtime { task_id: task_id.to_string(), message: message.clone() });
        }
        match self.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(message) => Err(SandboxError::Runtime { task_id: task_id.to_string(), message }),
            None => Ok(()),
        }
    }

    fn task(&self, task_id: &str) -> Result<&SimTask, SandboxError> {
        self.tasks.get(task_id).ok_or_else(|| SandboxError::TaskNotFound { task_id: task_id.to_string() })
    }

    fn task_mut(&mut self, task_id: &str) -> Result<&mut SimTask, SandboxError> {
        self.tasks.get_mut(task_id).ok_or_else(|| SandboxError::TaskNotFound { task_id: task_id.to_string() })
    }

    /// The named container, which must be running (what signal and exec need).
    fn running(&mut self, task_id: &str, name: &str) -> Result<&mut ContainerStatus, SandboxError> {
        let c = self.task_mut(task_id)?.container_mut(name).ok_or_else(|| not_found(task_id, name))?;
        if !c.state.can_signal() {
            return Err(SandboxError::InvalidState {
                task_id: task_id.to_string(),
                message: format!("container {name:?} is not running"),
            });
        }
        Ok(c)
    }

    /// The behaviour set for this task's container, or for that container name in every task.
    fn behaviour_of(&self, key: &(String, String)) -> Option<&Behaviour> {
        self.behaviour.get(key).or_else(|| self.behaviour.get(&(EVERY_TASK.to_string(), key.1.clone())))
    }

    /// Ends a container the way the shim records an exit. Returns whether it was running.
    fn end(&mut self, task_id: &str, name: &str, exit_code: i32, oom: bool) -> bool {
        let Some(c) = self.tasks.get_mut(task_id).and_then(|t| t.container_mut(name)) else { return false };
        if c.state != ContainerState::Running {
            return false;
        }
        c.state = ContainerState::Exited;
        c.pid = None;
        c.exit_code = Some(exit_code);
        c.oom_killed = oom;
        c.exited_at = Some(now_millis());
        c.reason = oom.then(|| OOM_REASON.to_string());
        self.touch(task_id);
        true
    }
}

/// An in-memory [`Sandbox`]; see the module documentation.
pub struct SimSandbox {
    inner: Mutex<Inner>,
    root: PathBuf,
}

impl SimSandbox {
    /// Panics if it cannot make its temporary directory (it is a test fixture).
    pub fn new() -> Arc<SimSandbox> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("flotilla-sim-{}-{n}", std::process::id()));
        // Left by an earlier process that had the same pid.
        let _ = std::fs::remove_dir_all(&root);
        if let Err(e) = std::fs::create_dir_all(&root) {
            panic!("SimSandbox: creating {}: {e}", root.display());
        }
        let inner = Inner { next_pid: 10_000, ..Inner::default() };
        Arc::new(SimSandbox { inner: Mutex::new(inner), root })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn task_dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// The directory under which the sim keeps its files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ends a running container with `exit_code`. Returns false (and changes nothing) when
    /// the container is not running, e.g. because a signal already ended it.
    pub fn exit(&self, task_id: &str, container: &str, exit_code: i32) -> bool {
        self.lock().end(task_id, container, exit_code, false)
    }

    /// The kernel's OOM killer ends a running container: 137, `oom_killed`, ECS's reason.
    pub fn oom(&self, task_id: &str, container: &str) -> bool {
        self.lock().end(task_id, container, 128 + SIGKILL, true)
    }

    /// The task vanishes without a destroy, as after a host reboot: every later call on it
    /// (waits in progress included) is `TaskNotFound`, and `adopt_existing` does not list it.
    pub fn lose(&self, task_id: &str) {
        self.lock().tasks.remove(task_id);
    }

    /// The next call of `op` (on any task) fails with `SandboxError::Runtime { message }`
    /// and has no effect, except that a failed start leaves the container exited as the shim
    /// does. Calls queue: two `fail_next(Start, ..)` fail the next two starts.
    pub fn fail_next(&self, op: SimOp, message: impl Into<String>) {
        self.lock().failures.entry(op).or_default().push_back(message.into());
    }

    /// Every call of `op` on `task_id` fails as `fail_next` makes one fail, until
    /// [`SimSandbox::heal`]: a fault that lasts (a mount that stays busy, a shim that does
    /// not answer), so a test can watch the caller retry without racing it. Queued
    /// `fail_next` failures are not consumed meanwhile. May be set before the task exists.
    pub fn fail_task(&self, task_id: &str, op: SimOp, message: impl Into<String>) {
        self.lock().faults.insert((task_id.to_string(), op), message.into());
    }

    /// Ends the lasting faults `fail_task` set on `task_id`.
    pub fn heal(&self, task_id: &str) {
        self.lock().faults.retain(|(task, _), _| task != task_id);
    }

    fn behaviour(&self, task_id: &str, container: &str, f: impl FnOnce(&mut Behaviour)) {
        f(self.lock().behaviour.entry((task_id.to_string(), container.to_string())).or_default());
    }

    /// The container ignores every signal but SIGKILL (a process that traps SIGTERM). Like
    /// the other behaviours, this may be set before the task exists.
    pub fn ignore_sigterm(&self, task_id: &str, container: &str) {
        self.behaviour(task_id, container, |b| b.ignore_signals = true);
    }

    /// What every later exec in the container returns (default: exit code 0, no output).
    pub fn set_exec_result(&self, task_id: &str, container: &str, result: ExecResult) {
        self.behaviour(task_id, container, |b| b.exec_result = Some(result));
    }

    /// The container exits with `exit_code` as soon as it has started (a one-shot job, or a
    /// process that dies at once): its start succeeds and the state shows it exited.
    pub fn exit_on_start(&self, task_id: &str, container: &str, exit_code: i32) {
        self.behaviour(task_id, container, |b| b.exit_on_start = Some(exit_code));
    }

    /// Like [`SimSandbox::exit_on_start`] for the container of that name in every task,
    /// including tasks a scheduler makes later.
    pub fn exit_on_start_everywhere(&self, container: &str, exit_code: i32) {
        self.behaviour(EVERY_TASK, container, |b| b.exit_on_start = Some(exit_code));
    }

    /// Like [`SimSandbox::set_exec_result`] for the container of that name in every task.
    pub fn set_exec_result_everywhere(&self, container: &str, result: ExecResult) {
        self.behaviour(EVERY_TASK, container, |b| b.exec_result = Some(result));
    }

    /// The operations received so far, in order (the last 65536 of them).
    pub fn log(&self) -> Vec<SimEvent> {
        self.lock().log.iter().cloned().collect()
    }

    /// The tasks that exist, sorted.
    pub fn tasks(&self) -> Vec<String> {
        self.lock().tasks.keys().cloned().collect()
    }

    /// The task's state as `state` would return it, without counting as an operation.
    pub fn status(&self, task_id: &str) -> Option<TaskStatus> {
        self.lock().tasks.get(task_id).map(SimTask::status)
    }

    /// The spec the task was created with.
    pub fn spec(&self, task_id: &str) -> Option<TaskSpec> {
        self.lock().tasks.get(task_id).map(|t| t.spec.clone())
    }

    /// Appends a stdout line to the container's log, as the shim writes one.
    pub fn write_log(&self, task_id: &str, container: &str, line: &str) -> std::io::Result<()> {
        self.write_log_stream(task_id, container, "stdout", line)
    }

    /// Appends a line of `stream` (`stdout` or `stderr`) to the container's log.
    pub fn write_log_stream(&self, task_id: &str, container: &str, stream: &str, line: &str) -> std::io::Result<()> {
        let path = self.container_log(task_id, container);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut record = serde_json::to_vec(&serde_json::json!({ "t": now_millis(), "stream": stream, "line": line }))
            .map_err(std::io::Error::other)?;
        record.push(b'\n');
        std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(&record)
    }

    /// Makes the files a real sandbox has from its create on: empty logs, the namespace's
    /// pin file, `resolv.conf`.
    fn make_files(&self, spec: &TaskSpec) -> std::io::Result<()> {
        let dir = self.task_dir(&spec.task_id);
        let _ = std::fs::remove_dir_all(&dir);
        for c in &spec.containers {
            let log = self.container_log(&spec.task_id, &c.name);
            std::fs::create_dir_all(log.parent().unwrap_or(&dir))?;
            std::fs::File::create(&log)?;
        }
        let (netns, resolv_conf) = (self.network_namespace(&spec.task_id), self.resolv_conf(&spec.task_id));
        for file in [&netns, &resolv_conf] {
            std::fs::create_dir_all(file.parent().unwrap_or(&dir))?;
        }
        std::fs::File::create(&netns)?;
        std::fs::write(&resolv_conf, "nameserver 127.0.0.53\n")
    }

    fn create(&self, spec: TaskSpec) -> Result<TaskHandle, SandboxError> {
        let task_id = spec.task_id.clone();
        let mut inner = self.lock();
        inner.record(SimEvent::Create { task: task_id.clone() });
        inner.take_failure(SimOp::Create, &task_id)?;
        validate(&spec)?;
        match inner.tasks.get(&task_id) {
            Some(t) if t.spec == spec => {}
            Some(_) => return Err(SandboxError::AlreadyExists { task_id }),
            None => {
                self.make_files(&spec)
                    .map_err(|e| crate::error::PathError::new("create", self.task_dir(&task_id), e))?;
                let containers = spec.containers.iter().map(|c| ContainerStatus::created(&c.name)).collect();
                let generation = inner.bump();
                let changes = watch::Sender::new(generation);
                let task = SimTask { spec, phase: TaskPhase::Ready, containers, generation, changes };
                inner.tasks.insert(task_id.clone(), task);
            }
        }
        drop(inner);
        Ok(TaskHandle {
            network: NetworkAttachment::NetNs { path: self.network_namespace(&task_id) },
            task_id,
            ephemeral_storage_limited: true,
            timings: Timings::new(),
        })
    }

    fn start(&self, task_id: &str, name: &str) -> Result<ContainerStarted, SandboxError> {
        let mut inner = self.lock();
        inner.record(SimEvent::Start { task: task_id.to_string(), container: name.to_string() });
        let state = inner.task(task_id)?.status().container(name).map(|c| c.state);
        let state = state.ok_or_else(|| not_found(task_id, name))?;
        if !state.can_start() && !state.can_restart() {
            return Err(SandboxError::InvalidState {
                task_id: task_id.to_string(),
                message: format!("container {name:?} is {state:?}"),
            });
        }
        let failed = inner.take_failure(SimOp::Start, task_id);
        let pid = inner.next_pid;
        inner.next_pid += 1;
        let c = inner.task_mut(task_id)?.container_mut(name).ok_or_else(|| not_found(task_id, name))?;
        match &failed {
            Ok(()) => {
                c.state = ContainerState::Running;
                c.pid = Some(pid);
                c.started_at = Some(now_millis());
                (c.exit_code, c.exited_at, c.reason, c.oom_killed) = (None, None, None, false);
            }
            Err(e) => {
                c.state = ContainerState::Exited;
                c.exited_at = Some(now_millis());
                c.reason = Some(format!("CannotStartContainerError: {e}"));
            }
        }
        inner.touch(task_id);
        let key = (task_id.to_string(), name.to_string());
        if let (Ok(()), Some(code)) = (&failed, inner.behaviour_of(&key).and_then(|b| b.exit_on_start)) {
            inner.end(task_id, name, code, false);
        }
        drop(inner);
        failed.map(|()| ContainerStarted { pid, timings: Timings::new() })
    }

    fn kill(&self, task_id: &str, name: &str, signal: i32) -> Result<(), SandboxError> {
        let mut inner = self.lock();
        inner.record(SimEvent::Signal { task: task_id.to_string(), container: name.to_string(), signal });
        inner.take_failure(SimOp::Signal, task_id)?;
        inner.running(task_id, name)?;
        let key = (task_id.to_string(), name.to_string());
        let ignored = inner.behaviour_of(&key).is_some_and(|b| b.ignore_signals);
        // Signal 0 only probes, as kill(2)'s does.
        if signal == SIGKILL || (signal != 0 && !ignored) {
            inner.end(task_id, name, 128 + signal, false);
        }
        drop(inner);
        Ok(())
    }

    fn run_exec(&self, task_id: &str, name: &str, exec: ExecSpec) -> Result<ExecResult, SandboxError> {
        let mut inner = self.lock();
        inner.record(SimEvent::Exec { task: task_id.to_string(), container: name.to_string(), argv: exec.argv });
        inner.take_failure(SimOp::Exec, task_id)?;
        inner.running(task_id, name)?;
        let scripted = inner.behaviour_of(&(task_id.to_string(), name.to_string())).and_then(|b| b.exec_result.clone());
        Ok(scripted.unwrap_or(ExecResult { exit_code: Some(0), timed_out: false, output: String::new() }))
    }

    fn remove(&self, task_id: &str) -> Result<(), SandboxError> {
        let mut inner = self.lock();
        inner.record(SimEvent::Destroy { task: task_id.to_string() });
        inner.take_failure(SimOp::Destroy, task_id)?;
        inner.tasks.remove(task_id);
        inner.bump();
        drop(inner);
        let dir = self.task_dir(task_id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::error::PathError::new("remove", dir, e).into());
            }
            _ => {}
        }
        Ok(())
    }

    fn observe(&self, task_id: &str) -> Result<TaskStatus, SandboxError> {
        let mut inner = self.lock();
        inner.take_failure(SimOp::State, task_id)?;
        inner.task(task_id).map(SimTask::status)
    }

    async fn wait(&self, task_id: &str, seen: u64, timeout: Duration) -> Result<TaskStatus, SandboxError> {
        // Subscribed under the same lock as the first look, so no change falls in between.
        let mut changes = {
            let mut inner = self.lock();
            inner.take_failure(SimOp::State, task_id)?;
            let task = inner.task(task_id)?;
            if task.generation != seen {
                return Ok(task.status());
            }
            task.changes.subscribe()
        };
        // Every change is sent, so one wake-up is enough: a change, the task's removal (then
        // `TaskNotFound`; a task created again under the same id has a new generation), or
        // the timeout, on tokio's clock so that tests with a paused clock do not wait for real.
        let woken = changes.changed();
        match tokio::time::Instant::now().checked_add(timeout) {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, woken).await;
            }
            None => {
                let _ = woken.await;
            }
        }
        self.lock().task(task_id).map(SimTask::status)
    }
}

impl Drop for SimSandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `TaskSpec::validate`, except that a container may have no image layers: simulated images
/// (the simulated agent's) have none, and nothing here would read them.
fn validate(spec: &TaskSpec) -> Result<(), SandboxError> {
    let mut checked = spec.clone();
    for c in checked.containers.iter_mut().filter(|c| c.layers.is_empty()) {
        c.layers.push(PathBuf::from("/"));
    }
    Ok(checked.validate()?)
}

fn not_found(task_id: &str, container: &str) -> SandboxError {
    SandboxError::NotFound { task_id: task_id.to_string(), message: format!("no container {container:?} in this task") }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Sandbox for SimSandbox {
    fn create_task(&self, spec: TaskSpec) -> BoxFuture<'_, Result<TaskHandle, SandboxError>> {
        Box::pin(async move { self.create(spec) })
    }

    fn start_container<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStarted, SandboxError>> {
        Box::pin(async move { self.start(task_id, container) })
    }

    fn signal<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        signal: i32,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { self.kill(task_id, container, signal) })
    }

    fn state<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStatus, SandboxError>> {
        Box::pin(async move { self.observe(task_id) })
    }

    fn wait_change<'a>(
        &'a self,
        task_id: &'a str,
        seen: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<TaskStatus, SandboxError>> {
        Box::pin(self.wait(task_id, seen, timeout))
    }

    fn stats<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStats, SandboxError>> {
        Box::pin(async move {
            let inner = self.lock();
            let task = inner.task(task_id)?;
            let containers = task.containers.iter().map(|c| (c.name.clone(), ResourceStats::default())).collect();
            Ok(TaskStats { containers, ..TaskStats::default() })
        })
    }

    fn exec<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        exec: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecResult, SandboxError>> {
        Box::pin(async move { self.run_exec(task_id, container, exec) })
    }

    /// A simulated container has no process to run a command beside: after the checks a
    /// real host makes (task, container, running), a clear refusal.
    fn exec_interactive<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        spec: InteractiveSpec,
    ) -> BoxFuture<'a, Result<ExecProcess, SandboxError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner.record(SimEvent::Exec {
                task: task_id.to_string(),
                container: container.to_string(),
                argv: spec.argv,
            });
            inner.take_failure(SimOp::Exec, task_id)?;
            inner.running(task_id, container)?;
            Err(SandboxError::Runtime {
                task_id: task_id.to_string(),
                message: "a simulated host has no containers to run commands in".to_string(),
            })
        })
    }

    fn destroy<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { self.remove(task_id) })
    }

    fn adopt_existing(&self) -> BoxFuture<'_, Result<Vec<String>, SandboxError>> {
        Box::pin(async move { Ok(self.tasks()) })
    }

    fn container_log(&self, task_id: &str, container: &str) -> PathBuf {
        self.task_dir(task_id).join(CONTAINERS_DIR).join(container).join(CONTAINER_LOG_FILE)
    }

    fn network_namespace(&self, task_id: &str) -> PathBuf {
        self.task_dir(task_id).join("ns").join("net")
    }

    fn resolv_conf(&self, task_id: &str) -> PathBuf {
        self.task_dir(task_id).join("etc").join("resolv.conf")
    }
}

#[cfg(test)]
mod tests;
