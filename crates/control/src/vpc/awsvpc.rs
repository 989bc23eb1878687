//! The checks RunTask makes on `awsvpcConfiguration`, with ECS's errors.

use super::subnets::Subnet;
use super::{NetworkError, NetworkResource, well_formed_id};
use crate::{Control, ControlError};

/// Most subnets and security groups one `awsvpcConfiguration` may name, as on ECS.
const MAX_SUBNETS: usize = 16;
const MAX_SECURITY_GROUPS: usize = 5;

/// Where a task's interface may go: checked subnets of one VPC and the groups to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsvpcPlacement {
    pub vpc_id: String,
    /// In the order given, without repeats.
    pub subnets: Vec<Subnet>,
    /// As given, or the VPC's `default` group if none were.
    pub security_group_ids: Vec<String>,
}

fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

fn lookup_failure(what: &str, id: &str, e: NetworkError) -> ControlError {
    match e {
        NetworkError::Store(source) => ControlError::Store(source),
        NetworkError::CorruptRecord { key, source } => ControlError::CorruptRecord { key, source },
        other => ControlError::invalid(format!("Error retrieving {what} information for [{id}]: {other}")),
    }
}

impl Control {
    /// Checks an `awsvpcConfiguration`'s subnets and security groups as Fargate's RunTask
    /// does: 1 to 16 subnets that exist and share one VPC, at most 5 groups that exist in that
    /// VPC. Failures are `InvalidParameterException`s naming the culprit.
    pub async fn validate_awsvpc(
        &self,
        subnets: &[String],
        security_groups: &[String],
    ) -> Result<AwsvpcPlacement, ControlError> {
        if subnets.is_empty() {
            return Err(ControlError::invalid("subnets can not be empty."));
        }
        if subnets.len() > MAX_SUBNETS {
            return Err(ControlError::invalid(format!("subnets can have at most {MAX_SUBNETS} items.")));
        }
        if security_groups.len() > MAX_SECURITY_GROUPS {
            return Err(ControlError::invalid(format!("securityGroups can have at most {MAX_SECURITY_GROUPS} items.")));
        }
        let mut found = Vec::new();
        for id in dedup(subnets) {
            if !well_formed_id(NetworkResource::Subnet, &id) {
                return Err(ControlError::invalid(format!(
                    "Error retrieving subnet information for [{id}]: Invalid id: \"{id}\" (expecting \"subnet-...\")"
                )));
            }
            found.push(self.subnet(&id).await.map_err(|e| lookup_failure("subnet", &id, e))?);
        }
        let vpc_id = found[0].vpc_id.clone();
        if let Some(other) = found.iter().find(|s| s.vpc_id != vpc_id) {
            return Err(ControlError::invalid(format!(
                "Subnets must all be in the same VPC: {} is in {vpc_id} but {} is in {}.",
                found[0].id, other.id, other.vpc_id
            )));
        }
        let mut groups = Vec::new();
        for id in dedup(security_groups) {
            if !well_formed_id(NetworkResource::SecurityGroup, &id) {
                return Err(ControlError::invalid(format!(
                    "Error retrieving security group information for [{id}]: Invalid id: \"{id}\" (expecting \"sg-...\")"
                )));
            }
            let group = self.security_group(&id).await.map_err(|e| lookup_failure("security group", &id, e))?;
            if group.vpc_id != vpc_id {
                return Err(ControlError::invalid(format!(
                    "Security group {id} is in {} but the subnets are in {vpc_id}: security groups and subnets must belong to the same VPC.",
                    group.vpc_id
                )));
            }
            groups.push(id);
        }
        if groups.is_empty() {
            let vpc = self.vpc(&vpc_id).await.map_err(|e| lookup_failure("vpc", &vpc_id, e))?;
            groups.push(vpc.default_security_group_id);
        }
        Ok(AwsvpcPlacement { vpc_id, subnets: found, security_group_ids: groups })
    }
}
