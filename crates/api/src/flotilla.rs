//! Flotilla's own operations (`Flotilla_20261206`, JSON 1.1, signed like any AWS call with the
//! root credentials): issuing and revoking hosts' tokens, listing hosts, and registering an
//! existing Kubernetes cluster as an EKS cluster whose Fargate side Flotilla is. The model is
//! written by hand in botocore's format (`model/flotilla.json`); the AWS CLI does not know the
//! service, `flotilla hosts` does.

use flotilla_control::HostView;
use flotilla_eks::{KubeAuth, NewCluster, PlaneSource};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};
use crate::server::ApiState;
use crate::sigv4::Caller;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRef {
    pub host_id: String,
}

/// An existing cluster (k3s, kubeadm, ...): its API server, the CA that signed it, and the
/// credentials Flotilla uses there (a token, or a client certificate and key), besides what
/// CreateCluster takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterCluster {
    pub name: String,
    pub role_arn: String,
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    pub service_ipv4_cidr: Option<String>,
    pub version: Option<String>,
    pub endpoint: String,
    pub certificate_authority: String,
    pub token: Option<String>,
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
}

pub enum FlotillaRequest {
    AddHost(HostRef),
    RevokeHost(HostRef),
    ListHosts,
    RegisterCluster(Box<RegisterCluster>),
}

impl FlotillaRequest {
    pub fn parse(operation: &str, input: Value) -> Result<FlotillaRequest, ApiError> {
        Ok(match operation {
            "AddHost" => FlotillaRequest::AddHost(parse(input)?),
            "RevokeHost" => FlotillaRequest::RevokeHost(parse(input)?),
            "ListHosts" => FlotillaRequest::ListHosts,
            "RegisterCluster" => FlotillaRequest::RegisterCluster(parse(input)?),
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

/// The plane a RegisterCluster names, checked field by field.
fn registered_plane(r: &RegisterCluster) -> Result<PlaneSource, ApiError> {
    if !r.endpoint.starts_with("https://") {
        return Err(ApiError::invalid_parameter(format!(
            "endpoint: {:?} is not an https:// URL of the cluster's API server.",
            r.endpoint
        )));
    }
    if !r.certificate_authority.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ApiError::invalid_parameter(
            "certificateAuthority: give the PEM of the CA that signed the API server's certificate.",
        ));
    }
    let auth = match (&r.token, &r.client_certificate, &r.client_key) {
        (Some(token), None, None) if !token.is_empty() => KubeAuth::Token { token: token.clone() },
        (None, Some(cert_pem), Some(key_pem)) => {
            KubeAuth::ClientCertificate { cert_pem: cert_pem.clone(), key_pem: key_pem.clone() }
        }
        _ => {
            return Err(ApiError::invalid_parameter(
                "token, clientCertificate, clientKey: give either a token or a client certificate and its key, for an identity that may administer the cluster.",
            ));
        }
    };
    Ok(PlaneSource::Registered { endpoint: r.endpoint.clone(), ca_pem: r.certificate_authority.clone(), auth })
}

pub async fn execute(state: &ApiState, caller: &Caller, request: FlotillaRequest) -> Result<Value, ApiError> {
    let control = &state.control;
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
        FlotillaRequest::RegisterCluster(r) => {
            let eks = state
                .eks
                .as_deref()
                .ok_or_else(|| ApiError::new("ServiceUnavailableException", "This server does not serve EKS."))?;
            let plane = registered_plane(&r)?;
            // The cluster's role is passed to EKS, as CreateCluster's is.
            crate::authz::check(state, caller, "iam:PassRole", &r.role_arn).await?;
            let r = *r;
            let new = NewCluster {
                name: r.name,
                role_arn: r.role_arn,
                subnet_ids: r.subnet_ids,
                security_group_ids: r.security_group_ids,
                service_ipv4_cidr: r.service_ipv4_cidr,
                version: r.version,
                creator_arn: caller.principal.arn.clone(),
                registered: Some(plane),
                ..NewCluster::default()
            };
            let cluster = eks.create_cluster(new).await.map_err(crate::eks::api_error)?;
            Ok(json!({ "name": cluster.name, "arn": cluster.arn, "status": cluster.status.as_str() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        endpoint: &str,
        ca: &str,
        token: Option<&str>,
        cert: Option<&str>,
        key: Option<&str>,
    ) -> RegisterCluster {
        RegisterCluster {
            name: "k3s".into(),
            role_arn: "arn:aws:iam::000000000000:role/eks".into(),
            subnet_ids: vec![],
            security_group_ids: vec![],
            service_ipv4_cidr: None,
            version: None,
            endpoint: endpoint.into(),
            certificate_authority: ca.into(),
            token: token.map(Into::into),
            client_certificate: cert.map(Into::into),
            client_key: key.map(Into::into),
        }
    }

    #[test]
    fn a_registered_plane_needs_https_a_ca_and_one_kind_of_credentials() {
        let ca = "-----BEGIN CERTIFICATE-----\n...";
        let ok = registered_plane(&request("https://10.0.0.1:6443", ca, Some("t"), None, None)).unwrap();
        assert!(matches!(ok, PlaneSource::Registered { auth: KubeAuth::Token { .. }, .. }));
        let ok = registered_plane(&request("https://h:6443", ca, None, Some("c"), Some("k"))).unwrap();
        assert!(matches!(ok, PlaneSource::Registered { auth: KubeAuth::ClientCertificate { .. }, .. }));
        let field = |r: RegisterCluster| registered_plane(&r).unwrap_err().message;
        assert!(field(request("http://h:6443", ca, Some("t"), None, None)).starts_with("endpoint:"));
        assert!(field(request("https://h", "not a pem", Some("t"), None, None)).starts_with("certificateAuthority:"));
        assert!(field(request("https://h", ca, None, None, None)).starts_with("token, clientCertificate"));
        assert!(
            field(request("https://h", ca, Some("t"), Some("c"), Some("k"))).starts_with("token, clientCertificate")
        );
        assert!(field(request("https://h", ca, None, Some("c"), None)).starts_with("token, clientCertificate"));
    }
}
