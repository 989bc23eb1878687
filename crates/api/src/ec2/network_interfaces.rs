//! DescribeNetworkInterfaces: the interfaces the control plane created for tasks.

use flotilla_control::{Control, NetworkInterface};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{WireFilter, filters, tag_list};
use crate::error::ApiError;

/// The DNS name EC2 gives a public address: `ec2-198-18-0-1.compute-1.amazonaws.com` in
/// us-east-1, `ec2-...<region>.compute.amazonaws.com` elsewhere.
fn public_dns_name(region: &str, ip: std::net::Ipv4Addr) -> String {
    let host = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ec2-{host}.compute-1.amazonaws.com")
    } else {
        format!("ec2-{host}.{region}.compute.amazonaws.com")
    }
}

fn interface_json(control: &Control, n: &NetworkInterface) -> Value {
    let identity = control.identity();
    let association = n.public_ip.map(|ip| {
        json!({
            "PublicIp": ip.to_string(),
            "PublicDnsName": public_dns_name(&identity.region, ip),
            "IpOwnerId": "amazon",
        })
    });
    let mut private = json!({
        "Primary": true,
        "PrivateIpAddress": n.private_ip.to_string(),
        "PrivateDnsName": n.private_dns_name,
    });
    if let Some(a) = &association {
        private["Association"] = a.clone();
    }
    let mut v = json!({
        "NetworkInterfaceId": n.id,
        "SubnetId": n.subnet_id,
        "VpcId": n.vpc_id,
        "AvailabilityZone": n.availability_zone,
        "Description": n.description,
        "Groups": n.groups.iter().map(|g| json!({"GroupId": g.id, "GroupName": g.name})).collect::<Vec<_>>(),
        "InterfaceType": "interface",
        "MacAddress": n.mac,
        "OwnerId": identity.account,
        "PrivateDnsName": n.private_dns_name,
        "PrivateIpAddress": n.private_ip.to_string(),
        "PrivateIpAddresses": [private],
        "Ipv6Addresses": [],
        // Interfaces of tasks are managed by the service, as Fargate's are.
        "RequesterManaged": n.attachment.is_some(),
        "SourceDestCheck": true,
        "Status": if n.attachment.is_some() { "in-use" } else { "available" },
        "TagSet": tag_list(&n.tags),
    });
    if let Some(a) = association {
        v["Association"] = a;
    }
    if let Some(attachment_id) = &n.attachment_id {
        v["Attachment"] = json!({
            "AttachmentId": attachment_id,
            "AttachTime": n.created_at.rfc3339(),
            "DeleteOnTermination": true,
            "DeviceIndex": 1,
            "NetworkCardIndex": 0,
            "InstanceOwnerId": identity.account,
            "Status": "attached",
        });
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeNetworkInterfaces {
    #[serde(default)]
    network_interface_ids: Vec<String>,
    #[serde(default)]
    filters: Vec<WireFilter>,
}

pub(super) async fn describe(control: &Control, req: DescribeNetworkInterfaces) -> Result<Value, ApiError> {
    let found = control.describe_network_interfaces(&req.network_interface_ids, &filters(req.filters)?).await?;
    Ok(json!({ "NetworkInterfaces": found.iter().map(|n| interface_json(control, n)).collect::<Vec<_>>() }))
}
