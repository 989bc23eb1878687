//! Mount targets: one per availability zone per file system, all in one VPC, each an interface
//! in its subnet (its address leased like a task's, so nothing else gets it) with security
//! groups of that VPC.

use std::net::Ipv4Addr;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};

use crate::record::{self, FileSystem, LifeCycleState, MountTarget, MountTargetRef};
use crate::{CONFLICT_RETRIES, Efs, EfsError, Listing, encode, new_id, paged};

/// A CreateMountTarget request.
#[derive(Clone, Debug, Default)]
pub struct NewMountTarget {
    pub file_system_id: String,
    pub subnet_id: String,
    pub ip_address: Option<Ipv4Addr>,
    pub security_groups: Vec<String>,
}

fn vpc_error(e: flotilla_elb::ElbError) -> EfsError {
    match e {
        flotilla_elb::ElbError::Validation(m) => EfsError::BadRequest(m),
        other => EfsError::Internal(other.to_string()),
    }
}

/// Who the mount target's interface belongs to, for the VPC side.
fn owner(id: &str) -> String {
    format!("efs:{id}")
}

impl Efs {
    pub(crate) async fn mount_target_record(&self, id: &str) -> Result<(MountTarget, u64), EfsError> {
        self.read(&record::mount_target_key(id))
            .await?
            .ok_or_else(|| EfsError::MountTargetNotFound { id: id.to_owned() })
    }

    pub async fn create_mount_target(&self, new: NewMountTarget) -> Result<MountTarget, EfsError> {
        let subnet = self
            .vpcs
            .subnet(&new.subnet_id)
            .await
            .map_err(vpc_error)?
            .ok_or_else(|| EfsError::SubnetNotFound { id: new.subnet_id.clone() })?;
        if let Some(ip) = new.ip_address
            && !subnet.cidr.contains(&ip)
        {
            return Err(EfsError::BadRequest(format!(
                "IpAddress {ip} is not in subnet {} ({}).",
                subnet.id, subnet.cidr
            )));
        }
        if new.ip_address.is_some() {
            return Err(EfsError::BadRequest(
                "Flotilla assigns mount target addresses from the subnet; omit IpAddress.".into(),
            ));
        }
        if new.security_groups.len() > 5 {
            return Err(EfsError::BadRequest("A mount target can have at most 5 security groups.".into()));
        }
        let mut groups = Vec::new();
        for g in &new.security_groups {
            match self.vpcs.security_group_vpc(g).await.map_err(vpc_error)? {
                None => return Err(EfsError::SecurityGroupNotFound { id: g.clone() }),
                Some(vpc) if vpc != subnet.vpc_id => {
                    return Err(EfsError::BadRequest(format!(
                        "Security group {g} is in VPC {vpc}, not in the subnet's VPC {}.",
                        subnet.vpc_id
                    )));
                }
                Some(_) => groups.push(g.clone()),
            }
        }
        if groups.is_empty() {
            groups.push(self.vpcs.default_security_group(&subnet.vpc_id).await.map_err(vpc_error)?);
        }
        // Refuse before taking an address; the transaction below checks again.
        let (fs, _) = self.file_system_record(&new.file_system_id).await?;
        check_room(&fs, &subnet.availability_zone, &subnet.vpc_id)?;

        let id = new_id("fsmt");
        let description = format!("EFS mount target for {} ({id})", fs.id);
        let node =
            self.vpcs.ensure_node(&owner(&id), &description, &subnet.id, &groups, false).await.map_err(vpc_error)?;
        let target = MountTarget {
            id: id.clone(),
            file_system_id: fs.id.clone(),
            owner_id: self.identity.account.clone(),
            subnet_id: subnet.id.clone(),
            vpc_id: subnet.vpc_id.clone(),
            availability_zone: subnet.availability_zone.clone(),
            ip_address: node.private_ip,
            security_groups: groups,
        };
        let written = self.record_mount_target(&target).await;
        if written.is_err() {
            let _ = self.vpcs.release_nodes(&owner(&id)).await;
        }
        written.map(|()| target)
    }

    async fn record_mount_target(&self, target: &MountTarget) -> Result<(), EfsError> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut fs, revision) = self.file_system_record(&target.file_system_id).await?;
            check_room(&fs, &target.availability_zone, &target.vpc_id)?;
            fs.mount_targets.push(MountTargetRef {
                id: target.id.clone(),
                availability_zone: target.availability_zone.clone(),
                vpc_id: target.vpc_id.clone(),
            });
            let txn = Txn::new()
                .when(Compare::revision(record::file_system_key(&fs.id), revision))
                .then(Op::put(record::file_system_key(&fs.id), encode(&fs)))
                .then(Op::put(record::mount_target_key(&target.id), encode(target)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(EfsError::Contended { id: target.file_system_id.clone() })
    }

    /// DescribeMountTargets: by mount target, by file system, or by access point (its file
    /// system's).
    pub async fn describe_mount_targets(
        &self,
        file_system_id: Option<&str>,
        mount_target_id: Option<&str>,
        access_point_id: Option<&str>,
        max_items: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Listing<MountTarget>, EfsError> {
        let targets: Vec<MountTarget> = match (mount_target_id, file_system_id, access_point_id) {
            (Some(id), _, _) => vec![self.mount_target_record(id).await?.0],
            (None, Some(fs), _) => self.of_file_system(fs).await?,
            (None, None, Some(ap)) => {
                let fs = self.access_point_record(ap).await?.0.file_system_id;
                self.of_file_system(&fs).await?
            }
            (None, None, None) => {
                return Err(EfsError::BadRequest(
                    "One of FileSystemId, MountTargetId or AccessPointId is required.".into(),
                ));
            }
        };
        paged(targets.into_iter().map(|t| (t.id.clone(), t)).collect(), max_items, marker)
    }

    async fn of_file_system(&self, fs_id: &str) -> Result<Vec<MountTarget>, EfsError> {
        let (fs, _) = self.file_system_record(fs_id).await?;
        let mut out = Vec::new();
        for t in &fs.mount_targets {
            if let Some((target, _)) = self.read::<MountTarget>(&record::mount_target_key(&t.id)).await? {
                out.push(target);
            }
        }
        Ok(out)
    }

    pub async fn mount_target_security_groups(&self, id: &str) -> Result<Vec<String>, EfsError> {
        Ok(self.mount_target_record(id).await?.0.security_groups)
    }

    /// DeleteMountTarget: the record goes with its file system's reference in one
    /// transaction, then the interface and its address.
    pub async fn delete_mount_target(&self, id: &str) -> Result<(), EfsError> {
        let (target, _) = self.mount_target_record(id).await?;
        for _ in 0..CONFLICT_RETRIES {
            let mut txn = Txn::new().then(Op::delete(record::mount_target_key(id)));
            if let Some((mut fs, revision)) =
                self.read::<FileSystem>(&record::file_system_key(&target.file_system_id)).await?
            {
                fs.mount_targets.retain(|t| t.id != id);
                txn = txn
                    .when(Compare::revision(record::file_system_key(&fs.id), revision))
                    .then(Op::put(record::file_system_key(&fs.id), encode(&fs)));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return self.vpcs.release_nodes(&owner(id)).await.map_err(vpc_error);
            }
        }
        Err(EfsError::Contended { id: id.to_owned() })
    }
}

fn check_room(fs: &FileSystem, zone: &str, vpc_id: &str) -> Result<(), EfsError> {
    if fs.life_cycle_state != LifeCycleState::Available {
        return Err(EfsError::IncorrectFileSystemLifeCycleState {
            id: fs.id.clone(),
            state: fs.life_cycle_state.as_str(),
        });
    }
    if let Some(t) = fs.mount_targets.iter().find(|t| t.availability_zone == zone) {
        return Err(EfsError::MountTargetConflict(format!(
            "File system '{}' already has a mount target ({}) in availability zone {zone}.",
            fs.id, t.id
        )));
    }
    if let Some(t) = fs.mount_targets.iter().find(|t| t.vpc_id != vpc_id) {
        return Err(EfsError::MountTargetConflict(format!(
            "File system '{}' has mount targets in VPC {}; all of its mount targets must be in one VPC.",
            fs.id, t.vpc_id
        )));
    }
    Ok(())
}
