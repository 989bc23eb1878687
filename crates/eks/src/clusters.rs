//! CreateCluster, DeleteCluster and ListClusters with EKS's rules: the name, the subnets (in at
//! least two availability zones of one VPC), the service CIDR, the Kubernetes version the
//! launched plane runs, and the idempotency token.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;
use flotilla_types::page::{self, Order, PageError};
use flotilla_types::time::Timestamp;
use ipnet::Ipv4Net;

use crate::record::{StoredCluster, cluster_key, encode};
use crate::{ClusterRecord, ClusterStatus, Eks, EksError, PlaneSource, check_tags};

/// The Kubernetes version the launched control plane runs (`major.minor`).
pub const KUBERNETES_VERSION: &str = "1.20";
/// EKS's default service CIDR when the request names none.
pub const DEFAULT_SERVICE_CIDR: &str = "10.100.0.0/16";
/// ListClusters' and ListFargateProfiles' page size when `maxResults` is absent, and their most.
pub(crate) const MAX_PAGE: usize = 100;

/// A CreateCluster request, as checked by the model.
#[derive(Clone, Debug, Default)]
pub struct NewCluster {
    pub name: String,
    pub role_arn: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub endpoint_public_access: Option<bool>,
    pub endpoint_private_access: Option<bool>,
    pub public_access_cidrs: Vec<String>,
    pub service_ipv4_cidr: Option<String>,
    pub version: Option<String>,
    pub client_request_token: Option<String>,
    pub tags: Vec<Tag>,
    /// The caller's principal ARN: the cluster's administrator.
    pub creator_arn: String,
    /// An existing cluster to register (Flotilla is then only its Fargate side); `None`:
    /// Flotilla launches one.
    pub registered: Option<PlaneSource>,
}

/// One page of a List operation; `next_token` when more follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Whether `name` is a cluster or profile name EKS accepts: 1 to 100 characters, a letter or
/// digit first, then letters, digits, `-` and `_`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// An IAM role's ARN in this partition: `arn:aws:iam::ACCOUNT:role/[PATH/]NAME`.
pub(crate) fn check_role_arn(field: &str, arn: &str) -> Result<(), EksError> {
    let ok =
        arn.strip_prefix("arn:aws:iam::").and_then(|rest| rest.split_once(":role/")).is_some_and(|(account, name)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        });
    if ok {
        Ok(())
    } else {
        Err(EksError::InvalidParameter(format!(
            "{field}: {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)."
        )))
    }
}

/// EKS's rules for `serviceIpv4Cidr`: within an RFC 1918 block, between /12 and /24, and not
/// overlapping the cluster's subnets (Flotilla's stand-in for the VPC's own CIDR).
fn check_service_cidr(cidr: &str, subnets: &[Ipv4Net]) -> Result<Ipv4Net, EksError> {
    let invalid =
        |why: &str| EksError::InvalidParameter(format!("kubernetesNetworkConfig.serviceIpv4Cidr: {cidr:?} {why}"));
    let net: Ipv4Net = cidr.parse().map_err(|_| invalid("is not an IPv4 CIDR block (like 10.100.0.0/16)."))?;
    if net.network() != net.addr() {
        return Err(invalid("has host bits set; give the block's network address."));
    }
    let private =
        [(Ipv4Addr::new(10, 0, 0, 0), 8), (Ipv4Addr::new(172, 16, 0, 0), 12), (Ipv4Addr::new(192, 168, 0, 0), 16)];
    let within = private.iter().any(|&(a, p)| Ipv4Net::new(a, p).is_ok_and(|block| block.contains(&net)));
    if !within {
        return Err(invalid("must be within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16."));
    }
    if !(12..=24).contains(&net.prefix_len()) {
        return Err(invalid("must be between /12 and /24."));
    }
    if let Some(subnet) = subnets.iter().find(|s| s.contains(&net.network()) || net.contains(&s.network())) {
        return Err(invalid(&format!("overlaps the cluster's subnet {subnet}.")));
    }
    Ok(net)
}

impl Eks {
    pub async fn create_cluster(&self, new: NewCluster) -> Result<ClusterRecord, EksError> {
        if !valid_name(&new.name) {
            return Err(EksError::InvalidParameter(format!(
                "name: {:?} must be 1 to 100 characters: a letter or digit, then letters, digits, hyphens and underscores.",
                new.name
            )));
        }
        let key = cluster_key(&new.name);
        if let Some((existing, _)) = self.read::<StoredCluster>(&key).await? {
            return self.same_request(existing, &new);
        }
        check_role_arn("roleArn", &new.role_arn)?;
        let version = match new.version.as_deref() {
            // A registered cluster runs what its operator runs.
            v if new.registered.is_some() => v.unwrap_or("unknown").to_string(),
            None | Some(KUBERNETES_VERSION) => KUBERNETES_VERSION.to_string(),
            Some(other) => {
                return Err(EksError::InvalidParameter(format!(
                    "version: unsupported Kubernetes version {other}. This Flotilla launches Kubernetes {KUBERNETES_VERSION}: give version {KUBERNETES_VERSION} or none."
                )));
            }
        };
        check_tags(&new.tags).map_err(EksError::InvalidParameter)?;
        let (vpc_id, cidrs) = self.cluster_subnets(&new.subnet_ids).await?;
        for group in &new.security_group_ids {
            match self.vpcs()?.security_group_vpc(group).await.map_err(|e| self.vpc_failure(e))? {
                Some(vpc) if vpc == vpc_id => {}
                Some(vpc) => {
                    return Err(EksError::InvalidParameter(format!(
                        "resourcesVpcConfig.securityGroupIds: security group {group} is in {vpc}, not in the subnets' VPC {vpc_id}."
                    )));
                }
                None => {
                    return Err(EksError::InvalidParameter(format!(
                        "resourcesVpcConfig.securityGroupIds: the security group '{group}' does not exist"
                    )));
                }
            }
        }
        let cidr = check_service_cidr(new.service_ipv4_cidr.as_deref().unwrap_or(DEFAULT_SERVICE_CIDR), &cidrs)?;
        let public = new.endpoint_public_access.unwrap_or(true);
        let private = new.endpoint_private_access.unwrap_or(false);
        if !public && !private {
            return Err(EksError::InvalidParameter(
                "resourcesVpcConfig: endpointPublicAccess and endpointPrivateAccess cannot both be false.".into(),
            ));
        }
        let cluster = ClusterRecord {
            name: new.name.clone(),
            arn: self.identity.eks_cluster(&new.name),
            status: ClusterStatus::Creating,
            version,
            role_arn: new.role_arn.clone(),
            subnet_ids: new.subnet_ids.clone(),
            security_group_ids: new.security_group_ids.clone(),
            vpc_id,
            service_ipv4_cidr: cidr.to_string(),
            endpoint: None,
            ca_pem: None,
            creator_arn: new.creator_arn.clone(),
            created_at: Timestamp::now(),
            source: new.registered.clone().unwrap_or(PlaneSource::Launched),
            tags: new.tags.clone(),
            failure: None,
        };
        let stored = StoredCluster {
            cluster,
            endpoint_public_access: public,
            endpoint_private_access: private,
            public_access_cidrs: if public && new.public_access_cidrs.is_empty() {
                vec!["0.0.0.0/0".into()]
            } else {
                new.public_access_cidrs.clone()
            },
            client_request_token: new.client_request_token.clone(),
        };
        let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, encode(&stored)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(stored.cluster),
            TxnOutcome::Conflict => match self.read::<StoredCluster>(&key).await? {
                Some((existing, _)) => self.same_request(existing, &new),
                None => {
                    Err(EksError::InUse(format!("Cluster {} is being created by another request; retry.", new.name)))
                }
            },
        }
    }

    /// A retried CreateCluster (same token) answers with the cluster it made; any other
    /// request for a taken name is refused.
    fn same_request(&self, existing: StoredCluster, new: &NewCluster) -> Result<ClusterRecord, EksError> {
        match (&existing.client_request_token, &new.client_request_token) {
            (Some(a), Some(b)) if a == b => Ok(existing.cluster),
            _ => Err(EksError::InUse(format!("Cluster already exists with name: {}", new.name))),
        }
    }

    /// The cluster's VPC and its subnets' blocks: every subnet must exist, all in one VPC, in at
    /// least two availability zones.
    async fn cluster_subnets(&self, subnet_ids: &[String]) -> Result<(String, Vec<Ipv4Net>), EksError> {
        if subnet_ids.is_empty() {
            return Err(EksError::InvalidParameter(
                "resourcesVpcConfig.subnetIds: at least two subnets are required.".into(),
            ));
        }
        let mut vpcs = BTreeSet::new();
        let mut zones = BTreeSet::new();
        let mut cidrs = Vec::new();
        for id in subnet_ids {
            let subnet = self.vpcs()?.subnet(id).await.map_err(|e| self.vpc_failure(e))?.ok_or_else(|| {
                EksError::InvalidParameter(format!("resourcesVpcConfig.subnetIds: the subnet ID '{id}' does not exist"))
            })?;
            vpcs.insert(subnet.vpc_id);
            zones.insert(subnet.availability_zone);
            cidrs.push(subnet.cidr);
        }
        if vpcs.len() > 1 {
            let list: Vec<&str> = vpcs.iter().map(String::as_str).collect();
            return Err(EksError::InvalidParameter(format!(
                "resourcesVpcConfig.subnetIds: subnets specified must be in the same VPC; they are in {}.",
                list.join(", ")
            )));
        }
        if zones.len() < 2 {
            return Err(EksError::InvalidParameter("Subnets specified must be in at least two different AZs".into()));
        }
        Ok((vpcs.into_iter().next().unwrap_or_default(), cidrs))
    }

    /// Marks the cluster DELETING (the reconciler stops its plane and forgets it). Refused while
    /// it has Fargate profiles, as EKS does.
    pub async fn delete_cluster(&self, name: &str) -> Result<ClusterRecord, EksError> {
        let key = cluster_key(name);
        for _ in 0..crate::CONFLICT_RETRIES {
            let (mut stored, revision) =
                self.read::<StoredCluster>(&key).await?.ok_or_else(|| EksError::ClusterNotFound(name.to_string()))?;
            if let Some(profile) = self.profiles(name).await?.first() {
                return Err(EksError::InUse(format!(
                    "Cannot delete because cluster {name} currently has Fargate profile {} in status {}",
                    profile.name,
                    profile.status.as_str()
                )));
            }
            if stored.cluster.status == ClusterStatus::Deleting {
                return Ok(stored.cluster);
            }
            stored.cluster.status = ClusterStatus::Deleting;
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&stored)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(stored.cluster);
            }
        }
        Err(EksError::InUse(format!("Cluster {name} is being changed by other requests; retry.")))
    }

    /// Cluster names by name, one page.
    pub async fn list_clusters(
        &self,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Listing<String>, EksError> {
        let names = self.clusters().await?.into_iter().map(|c| (c.name.clone(), c.name)).collect();
        paged(names, max_results, next_token)
    }

    /// The cluster as the API describes it, with its endpoint access settings.
    pub async fn describe_cluster(&self, name: &str) -> Result<StoredCluster, EksError> {
        Ok(self
            .read::<StoredCluster>(&cluster_key(name))
            .await?
            .ok_or_else(|| EksError::ClusterNotFound(name.to_string()))?
            .0)
    }
}

pub(crate) fn paged<T>(
    items: Vec<(String, T)>,
    max_results: Option<i64>,
    token: Option<&str>,
) -> Result<Listing<T>, EksError> {
    let refused = |e| match e {
        PageError::Size { got, max } => {
            EksError::InvalidParameter(format!("maxResults: must be between 1 and {max}, got {got}."))
        }
        PageError::Token => EksError::InvalidParameter("nextToken: not a token this server issued.".into()),
    };
    let size = page::page_size(max_results, MAX_PAGE, MAX_PAGE).map_err(refused)?;
    let page = page::paginate(items, Order::Ascending, size, token).map_err(refused)?;
    Ok(Listing { items: page.items, next_token: page.next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "my-fargate-cluster", "A_1", "0x", &"a".repeat(100)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "a.b", "a b", "a/b", &"a".repeat(101)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn service_cidrs() {
        let subnets: Vec<Ipv4Net> = vec!["172.31.0.0/20".parse().unwrap()];
        assert!(check_service_cidr("10.100.0.0/16", &subnets).is_ok());
        assert!(check_service_cidr("172.20.0.0/16", &subnets).is_ok());
        assert!(check_service_cidr("192.168.0.0/24", &subnets).is_ok());
        for bad in ["10.100.0.0", "10.100.0.1/16", "8.8.0.0/16", "10.0.0.0/8", "10.1.2.0/25", "172.31.0.0/16", "x"] {
            let err = check_service_cidr(bad, &subnets).unwrap_err().to_string();
            assert!(err.starts_with("kubernetesNetworkConfig.serviceIpv4Cidr"), "{bad}: {err}");
        }
    }

    #[test]
    fn role_arns() {
        assert!(check_role_arn("roleArn", "arn:aws:iam::123456789012:role/eks").is_ok());
        assert!(check_role_arn("roleArn", "arn:aws:iam::123456789012:role/path/eks").is_ok());
        for bad in
            ["eks", "arn:aws:iam::123456789012:user/eks", "arn:aws:iam::12:role/eks", "arn:aws:iam::123456789012:role/"]
        {
            assert!(check_role_arn("roleArn", bad).is_err(), "{bad}");
        }
    }
}
