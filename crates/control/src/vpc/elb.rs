//! The VPC side of Elastic Load Balancing: what `flotilla-elb` asks of the network (subnets,
//! groups, one interface per subnet for each load balancer), answered from the same records
//! and address leases as tasks' interfaces.

use std::sync::Arc;

use flotilla_elb::{BoxFuture, ElbError, NodeAddress, SubnetInfo, Vpcs};

use super::{NetworkError, NetworkInterfaceSpec};
use crate::{Control, ResourceFilter};

/// [`Vpcs`] over the control plane.
pub struct ElbVpcs(pub Arc<Control>);

/// A load balancer's interface in a subnet is attached to `<owner>#<subnet>`, so creating it
/// again returns the same one and its addresses never leak.
fn node_attachment(owner: &str, subnet_id: &str) -> String {
    format!("{owner}#{subnet_id}")
}

fn elb_error(e: NetworkError) -> ElbError {
    match e {
        NetworkError::Store(_) | NetworkError::CorruptRecord { .. } => ElbError::Internal(e.to_string()),
        other => ElbError::Validation(other.to_string()),
    }
}

impl Vpcs for ElbVpcs {
    fn subnet<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SubnetInfo>, ElbError>> {
        Box::pin(async move {
            match self.0.subnet(id).await {
                Ok(s) => Ok(Some(SubnetInfo {
                    id: s.id,
                    vpc_id: s.vpc_id,
                    availability_zone: s.availability_zone,
                    cidr: ipnet::Ipv4Net::new(s.cidr.network(), s.cidr.prefix())
                        .map_err(|e| ElbError::Internal(e.to_string()))?,
                })),
                Err(NetworkError::NotFound { .. } | NetworkError::MalformedId { .. }) => Ok(None),
                Err(e) => Err(elb_error(e)),
            }
        })
    }

    fn security_group_vpc<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>, ElbError>> {
        Box::pin(async move {
            match self.0.security_group(id).await {
                Ok(g) => Ok(Some(g.vpc_id)),
                Err(NetworkError::NotFound { .. } | NetworkError::MalformedId { .. }) => Ok(None),
                Err(e) => Err(elb_error(e)),
            }
        })
    }

    fn default_security_group<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<String, ElbError>> {
        Box::pin(async move {
            let filters = [
                ResourceFilter { name: "vpc-id".into(), values: vec![vpc_id.to_owned()] },
                ResourceFilter { name: "group-name".into(), values: vec!["default".into()] },
            ];
            let groups = self.0.describe_security_groups(&[], &[], &filters).await.map_err(elb_error)?;
            groups
                .into_iter()
                .next()
                .map(|g| g.id)
                .ok_or_else(|| ElbError::Validation(format!("VPC '{vpc_id}' has no default security group")))
        })
    }

    fn vpc_exists<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<bool, ElbError>> {
        Box::pin(async move {
            match self.0.vpc(vpc_id).await {
                Ok(_) => Ok(true),
                Err(NetworkError::NotFound { .. } | NetworkError::MalformedId { .. }) => Ok(false),
                Err(e) => Err(elb_error(e)),
            }
        })
    }

    fn ensure_node<'a>(
        &'a self,
        owner: &'a str,
        description: &'a str,
        subnet_id: &'a str,
        security_groups: &'a [String],
        public: bool,
    ) -> BoxFuture<'a, Result<NodeAddress, ElbError>> {
        Box::pin(async move {
            let spec = NetworkInterfaceSpec {
                subnet_id: subnet_id.to_owned(),
                security_group_ids: security_groups.to_vec(),
                description: Some(description.to_owned()),
                assign_public_ip: public,
                attachment: Some(node_attachment(owner, subnet_id)),
            };
            let eni = self.0.create_network_interface(spec).await.map_err(elb_error)?;
            Ok(NodeAddress { subnet_id: eni.subnet_id, private_ip: eni.private_ip, public_ip: eni.public_ip })
        })
    }

    fn release_nodes<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), ElbError>> {
        Box::pin(async move {
            let prefix = format!("{owner}#");
            for eni in self.0.describe_network_interfaces(&[], &[]).await.map_err(elb_error)? {
                if eni.attachment.as_deref().is_some_and(|a| a.starts_with(&prefix)) {
                    self.0.delete_network_interface(&eni.id).await.map_err(elb_error)?;
                }
            }
            Ok(())
        })
    }
}
