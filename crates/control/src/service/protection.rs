//! Task scale-in protection: UpdateTaskProtection and GetTaskProtection. A protected task is
//! never chosen when the service scheduler scales in or replaces tasks, until its protection
//! expires.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Timestamp;
use flotilla_types::task::TaskStatus;
use serde::Serialize;

use crate::record::{encode, load, task_key};
use crate::task::TaskRecord;
use crate::{Control, ControlError};

/// ECS's default and longest protection.
const DEFAULT_MINUTES: i32 = 2 * 60;
const MAX_MINUTES: i32 = 48 * 60;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedTask {
    pub task_arn: String,
    pub protection_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<Timestamp>,
}

fn view(record: &TaskRecord, now: Timestamp) -> ProtectedTask {
    let until = record.protection.filter(|t| *t > now);
    ProtectedTask {
        task_arn: record.task.task_arn.clone(),
        protection_enabled: until.is_some(),
        expiration_date: until,
    }
}

impl Control {
    pub async fn update_task_protection(
        &self,
        cluster: &str,
        tasks: &[String],
        enabled: bool,
        expires_in_minutes: Option<i32>,
    ) -> Result<(Vec<ProtectedTask>, Vec<(String, String)>), ControlError> {
        if tasks.is_empty() || tasks.len() > 10 {
            return Err(ControlError::invalid("tasks: give 1 to 10 task ids or ARNs."));
        }
        let minutes = expires_in_minutes.unwrap_or(DEFAULT_MINUTES);
        if enabled && !(1..=MAX_MINUTES).contains(&minutes) {
            return Err(ControlError::invalid(format!(
                "expiresInMinutes: must be between 1 and {MAX_MINUTES}, got {minutes}."
            )));
        }
        let (cluster, _) = self.active_cluster(Some(cluster)).await?;
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for raw in tasks {
            let (c, id) = self.task_ref(&cluster.cluster_name, raw)?;
            let key = task_key(&c, &id);
            loop {
                let now = Timestamp::now();
                let Some((mut record, rev)) = load::<TaskRecord>(self.store.as_ref(), &key).await? else {
                    failures.push((self.identity.task(&c, &id).to_string(), "MISSING".to_owned()));
                    break;
                };
                if record.task.last_status == TaskStatus::Stopped {
                    failures.push((record.task.task_arn.clone(), "TASK_NOT_VALID".to_owned()));
                    break;
                }
                record.protection = enabled.then(|| Timestamp(now.0 + i64::from(minutes) * 60_000));
                let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                    done.push(view(&record, now));
                    break;
                }
            }
        }
        Ok((done, failures))
    }

    pub async fn get_task_protection(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> Result<(Vec<ProtectedTask>, Vec<(String, String)>), ControlError> {
        if tasks.len() > 100 {
            return Err(ControlError::invalid("tasks: give at most 100 task ids or ARNs."));
        }
        let (cluster, _) = self.active_cluster(Some(cluster)).await?;
        let now = Timestamp::now();
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for raw in tasks {
            let (c, id) = self.task_ref(&cluster.cluster_name, raw)?;
            match load::<TaskRecord>(self.store.as_ref(), &task_key(&c, &id)).await? {
                Some((record, _)) => found.push(view(&record, now)),
                None => failures.push((self.identity.task(&c, &id).to_string(), "MISSING".to_owned())),
            }
        }
        Ok((found, failures))
    }
}
