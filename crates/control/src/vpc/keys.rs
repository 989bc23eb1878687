//! Where networking records live in the store; the layout is described in the module doc of
//! `vpc`. Everything is under [`PREFIX`], so one watch sees every networking change.

use std::net::Ipv4Addr;

pub const PREFIX: &str = "ec2/";
pub const VPCS: &str = "ec2/vpcs/";
pub const SUBNETS: &str = "ec2/subnets/";
pub const SECURITY_GROUPS: &str = "ec2/sgs/";
pub const NETWORK_INTERFACES: &str = "ec2/enis/";
pub const PRIVATE_IPS: &str = "ec2/ips/";
pub const PUBLIC_IPS: &str = "ec2/public-ips/";
pub const ATTACHMENTS: &str = "ec2/attachments/";
/// Virtual services (Kubernetes ClusterIPs) per VPC and owner: `<prefix><vpc-id>/<owner>`.
pub const VIRTUAL_SERVICES: &str = "ec2/virtual-services/";
/// Every VPC's CIDR, in one record, so that non-overlap is one compare-and-write.
pub const VPC_INDEX: &str = "ec2/vpc-index";
/// Written once with the default VPC, so a deleted default VPC stays deleted.
pub const DEFAULT_NETWORK: &str = "ec2/default-network";

pub fn vpc(id: &str) -> String {
    format!("{VPCS}{id}")
}

pub fn virtual_services(vpc_id: &str, owner: &str) -> String {
    format!("{VIRTUAL_SERVICES}{vpc_id}/{owner}")
}

pub fn subnet(id: &str) -> String {
    format!("{SUBNETS}{id}")
}

pub fn security_group(id: &str) -> String {
    format!("{SECURITY_GROUPS}{id}")
}

pub fn network_interface(id: &str) -> String {
    format!("{NETWORK_INTERFACES}{id}")
}

/// The prefix of one subnet's address leases.
pub fn private_ips(subnet_id: &str) -> String {
    format!("{PRIVATE_IPS}{subnet_id}/")
}

pub fn private_ip(subnet_id: &str, ip: Ipv4Addr) -> String {
    format!("{PRIVATE_IPS}{subnet_id}/{ip}")
}

pub fn public_ip(ip: Ipv4Addr) -> String {
    format!("{PUBLIC_IPS}{ip}")
}

pub fn attachment(attachment: &str) -> String {
    format!("{ATTACHMENTS}{attachment}")
}
