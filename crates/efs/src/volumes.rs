//! What a task's `efsVolumeConfiguration`s mount, resolved when the task starts as Fargate's
//! agent does with EFS utils: the file system must exist and have a mount target in the task's
//! zone, an access point must belong to it. A failure is the task's stopped reason, worded
//! as Fargate words it.

use flotilla_host::{EfsCreateRoot, EfsPosixUser, EfsVolume, HostApiError, TaskVolumes};
use flotilla_types::task_definition::{EfsVolumeConfiguration, Volume};

use crate::access_points::{normalise_root, parse_permissions};
use crate::{Efs, EfsError};

const PREFIX: &str = "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: ";

fn unresolvable(fs_id: &str, region: &str) -> String {
    format!(
        "{PREFIX}stderr: Failed to resolve \"{fs_id}.efs.{region}.amazonaws.com\" - check that your file system ID is \
         correct, and ensure that the VPC has an EFS mount target for this file system ID. See \
         https://docs.aws.amazon.com/console/efs/mount-dns-name for more detail. : unsuccessful EFS utils command \
         execution; code: 1"
    )
}

fn denied(what: &str) -> String {
    format!(
        "{PREFIX}stderr: b'mount.nfs4: access denied by server while mounting 127.0.0.1:/' ({what}) : unsuccessful \
         EFS utils command execution; code: 32"
    )
}

/// `base` joined with `rest`, both normalised paths inside the file system.
fn join(base: &str, rest: &str) -> String {
    let parts: Vec<&str> = base.split('/').chain(rest.split('/')).filter(|p| !p.is_empty() && *p != ".").collect();
    format!("/{}", parts.join("/"))
}

impl Efs {
    /// Every EFS volume of a task definition's `volumes`, for a task in `zone`; `Refused` carries the task's
    /// stopped reason, `Unavailable` a failure worth retrying.
    pub async fn task_volumes(&self, volumes: &[Volume], zone: &str) -> Result<TaskVolumes, HostApiError> {
        let mut out = TaskVolumes::default();
        for v in volumes {
            let Some(config) = &v.efs_volume_configuration else { continue };
            let name = v.name.clone().unwrap_or_default();
            out.efs.push(self.resolve(name, config, zone).await.map_err(|e| match e {
                Resolve::Reason(reason) => HostApiError::Refused { reason },
                Resolve::Failed(e) => HostApiError::Unavailable { reason: e.to_string() },
            })?);
        }
        Ok(out)
    }

    async fn resolve(&self, name: String, config: &EfsVolumeConfiguration, zone: &str) -> Result<EfsVolume, Resolve> {
        let region = &self.identity.region;
        let fs_id = &config.file_system_id;
        let fs = match self.file_system_record(fs_id).await {
            Ok((fs, _)) => fs,
            Err(EfsError::FileSystemNotFound { .. }) => return Err(Resolve::Reason(unresolvable(fs_id, region))),
            Err(e) => return Err(e.into()),
        };
        // A zone-less host (one machine standing in for every zone) still needs a mount target.
        let reachable = fs.mount_targets.iter().any(|t| zone.is_empty() || t.availability_zone == zone);
        if !reachable {
            return Err(Resolve::Reason(unresolvable(fs_id, region)));
        }
        let root = config.root_directory.as_deref().unwrap_or("/");
        if root.split('/').any(|p| p == "..") {
            return Err(Resolve::Reason(denied("rootDirectory must not contain '..'")));
        }
        let mut volume = EfsVolume {
            name,
            file_system_id: fs.id.clone(),
            path: join("/", root),
            create_root: None,
            posix_user: None,
        };
        if let Some(ap_id) = config.access_point_id() {
            let ap = match self.access_point_record(ap_id).await {
                Ok((ap, _)) => Some(ap),
                Err(EfsError::AccessPointNotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(ap) = ap.filter(|ap| ap.file_system_id == fs.id) else {
                return Err(Resolve::Reason(denied(&format!("access point {ap_id} is not one of {fs_id}"))));
            };
            let ap_root = normalise_root(&ap.root_path).map_err(|e| Resolve::Reason(denied(&e)))?;
            volume.path = join(&ap_root, root);
            volume.create_root = ap.creation_info.as_ref().and_then(|info| {
                Some(EfsCreateRoot {
                    path: ap_root.clone(),
                    owner_uid: info.owner_uid,
                    owner_gid: info.owner_gid,
                    permissions: parse_permissions(&info.permissions)?,
                })
            });
            volume.posix_user =
                ap.posix_user.map(|u| EfsPosixUser { uid: u.uid, gid: u.gid, secondary_gids: u.secondary_gids });
        }
        Ok(volume)
    }
}

enum Resolve {
    Reason(String),
    Failed(EfsError),
}

impl From<EfsError> for Resolve {
    fn from(e: EfsError) -> Resolve {
        Resolve::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn join_normalises() {
        assert_eq!(join("/", "/"), "/");
        assert_eq!(join("/app", "/"), "/app");
        assert_eq!(join("/app", "data/./x/"), "/app/data/x");
    }
}
