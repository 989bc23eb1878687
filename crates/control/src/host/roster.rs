//! The hosts as an operator lists them: each with what its tasks reserve.

use flotilla_host::Host;
use flotilla_types::task::TaskStatus;

use crate::record::{TASKS, decode};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// A host with its tasks that are not STOPPED and the CPU units and MiB they reserve.
#[derive(Clone, Debug)]
pub struct HostSummary {
    pub host: Host,
    pub tasks: u32,
    pub cpu: u64,
    pub memory: u64,
}

impl Control {
    pub async fn host_summaries(&self) -> Result<Vec<HostSummary>, ControlError> {
        let mut hosts: Vec<HostSummary> =
            self.hosts().await?.into_iter().map(|host| HostSummary { host, tasks: 0, cpu: 0, memory: 0 }).collect();
        for kv in self.store.list_prefix(TASKS).await? {
            let record: TaskRecord = decode(&kv)?;
            if record.task.last_status == TaskStatus::Stopped {
                continue;
            }
            let Some(summary) = hosts.iter_mut().find(|h| Some(&h.host.spec.id) == record.host_id.as_ref()) else {
                continue;
            };
            summary.tasks += 1;
            summary.cpu += record.task.cpu.parse::<u64>().unwrap_or(0);
            summary.memory += record.task.memory.parse::<u64>().unwrap_or(0);
        }
        Ok(hosts)
    }
}
