//! Flotilla's own operations (`Flotilla_20261206`, JSON 1.1, signed like any AWS call with the
//! root credentials): issuing and revoking hosts' tokens and listing hosts. The model is
//! written by hand in botocore's format (`model/flotilla.json`); the AWS CLI does not know the
//! service, `flotilla hosts` does.

use flotilla_control::{Control, HostView};
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

/// A host as `ListHosts` returns it: what it offers, what its tasks reserve, and how the
/// control plane sees it.
fn host(view: HostView) -> Value {
    strip_nulls(json!({
        "id": view.id,
        "availabilityZone": view.availability_zone,
        "status": view.status,
        "cpu": view.cpu,
        "memory": view.memory,
        "allocatedCpu": view.allocated_cpu,
        "allocatedMemory": view.allocated_memory,
        "runningTasksCount": view.tasks,
        "registeredAt": view.registered_at,
        "lastSeen": view.last_seen,
        "underlayIp": view.underlay_ip,
    }))
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
            let hosts = control.host_overview().await?;
            Ok(json!({ "hosts": hosts.into_iter().map(host).collect::<Vec<_>>() }))
        }
    }
}
