//! Flotilla's own operations (`Flotilla_20261206`, JSON 1.1, signed like any AWS call with the
//! root credentials): issuing and revoking hosts' tokens and listing hosts. The model is
//! written by hand in botocore's format (`model/flotilla.json`); the AWS CLI does not know the
//! service, `flotilla hosts` does.

use flotilla_control::{Control, HostSummary};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRef {
    pub host_id: String,
}

pub enum FlotillaRequest {
    AddHost(HostRef),
    RevokeHost(HostRef),
    ListHosts,
}

impl FlotillaRequest {
    pub fn parse(operation: &str, input: Value) -> Result<FlotillaRequest, ApiError> {
        Ok(match operation {
            "AddHost" => FlotillaRequest::AddHost(parse(input)?),
            "RevokeHost" => FlotillaRequest::RevokeHost(parse(input)?),
            "ListHosts" => FlotillaRequest::ListHosts,
            other => {
                return Err(ApiError::new("UnknownOperationException", format!("Flotilla does not serve '{other}'.")));
            }
        })
    }
}

/// A host as `ListHosts` returns it: its record (as the control plane keeps it) and what its
/// tasks reserve.
fn host(summary: HostSummary) -> Value {
    let mut value = serde_json::to_value(&summary.host).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("runningTasksCount".into(), json!(summary.tasks));
        map.insert("allocatedCpu".into(), json!(summary.cpu));
        map.insert("allocatedMemory".into(), json!(summary.memory));
    }
    strip_nulls(value)
}

pub async fn execute(control: &Control, request: FlotillaRequest) -> Result<Value, ApiError> {
    match request {
        FlotillaRequest::AddHost(r) => {
            let token = control.issue_host_token(&r.host_id).await?;
            Ok(json!({ "hostId": r.host_id, "token": token }))
        }
        FlotillaRequest::RevokeHost(r) => {
            control.revoke_host_token(&r.host_id).await?;
            Ok(json!({}))
        }
        FlotillaRequest::ListHosts => {
            let hosts = control.host_summaries().await?;
            Ok(json!({ "hosts": hosts.into_iter().map(host).collect::<Vec<_>>() }))
        }
    }
}
