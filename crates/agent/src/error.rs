//! What can go wrong in the agent. A failure to start a task is not an error here: it is a
//! report (the task stops with AWS's reason); these are the failures of the agent's own work.

use flotilla_host::HostApiError;
use flotilla_sandbox::SandboxError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the control plane did not take the call")]
    Host(#[from] HostApiError),
    #[error("the sandbox of task {task_id} failed")]
    Sandbox { task_id: String, source: SandboxError },
    #[error("task networking failed: {reason}")]
    Network { reason: String },
    #[error("tearing task {task_id} down failed")]
    Teardown { task_id: String, source: Box<AgentError> },
}
