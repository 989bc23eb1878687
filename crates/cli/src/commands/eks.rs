//! `flotilla eks register`: an existing Kubernetes cluster becomes an EKS cluster whose
//! Fargate side Flotilla is (Flotilla's own `RegisterCluster`; the AWS CLI cannot carry a
//! cluster's credentials).

use flotilla_cli::client::Client;
use flotilla_cli::output::{Format, Output, text};
use flotilla_eks::KubeAuth;
use serde_json::json;

use crate::EksAction;

pub async fn run(client: &Client, out: &Output, action: EksAction) -> anyhow::Result<()> {
    match action {
        EksAction::Register { name, kubeconfig, context, role_arn, subnets, security_groups, service_cidr } => {
            let access = flotilla_k8s::plane::access_from_kubeconfig(&kubeconfig, context.as_deref())
                .map_err(|e| anyhow::anyhow!("cannot read the cluster's access from the kubeconfig: {e}"))?;
            let mut body = json!({
                "name": name,
                "roleArn": role_arn,
                "subnetIds": subnets,
                "securityGroupIds": security_groups,
                "endpoint": access.endpoint,
                "certificateAuthority": access.ca_pem,
            });
            if let Some(cidr) = service_cidr {
                body["serviceIpv4Cidr"] = json!(cidr);
            }
            match access.auth {
                KubeAuth::Token { token } => body["token"] = json!(token),
                KubeAuth::ClientCertificate { cert_pem, key_pem } => {
                    body["clientCertificate"] = json!(cert_pem);
                    body["clientKey"] = json!(key_pem);
                }
            }
            let answer = client.call("flotilla", "Flotilla_20261206.RegisterCluster", &body).await?;
            if out.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "Registered {} ({}), {}.",
                    text(&answer, "name"),
                    text(&answer, "arn"),
                    text(&answer, "status")
                );
                println!("It becomes ACTIVE once Flotilla reaches its API server and installs the profile webhook:");
                println!("  aws eks describe-cluster --name {name}");
                println!("Then create Fargate profiles for it with `aws eks create-fargate-profile`.");
            }
        }
    }
    Ok(())
}
