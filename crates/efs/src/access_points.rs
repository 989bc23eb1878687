//! Access points: a file system's entry with a POSIX user and a root directory (made on first
//! use from its `CreationInfo`, by the host that mounts it).

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;

use crate::record::{self, AccessPoint, CreationInfo, PosixUser};
use crate::{Efs, EfsError, Listing, check_tags, encode, new_id, paged};

/// A CreateAccessPoint request.
#[derive(Clone, Debug, Default)]
pub struct NewAccessPoint {
    pub client_token: String,
    pub file_system_id: String,
    pub tags: Vec<Tag>,
    pub posix_user: Option<PosixUser>,
    pub root_path: Option<String>,
    pub creation_info: Option<CreationInfo>,
}

/// `path` as EFS accepts a root directory: absolute, at most 4 levels and 100 characters, no
/// `.` or `..`; returned without a trailing `/`.
pub fn normalise_root(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("The root directory path {path:?} must be absolute."));
    }
    if path.len() > 100 {
        return Err(format!("The root directory path {path:?} is longer than 100 characters."));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("The root directory path {path:?} must not contain '.' or '..'."));
    }
    if parts.len() > 4 {
        return Err(format!("The root directory path {path:?} is deeper than 4 levels."));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses octal permissions as EFS takes them (`"755"`, `"0755"`).
pub fn parse_permissions(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

impl Efs {
    pub(crate) async fn access_point_record(&self, id_or_arn: &str) -> Result<(AccessPoint, u64), EfsError> {
        let not_found = || EfsError::AccessPointNotFound { id: id_or_arn.to_owned() };
        let id = self.local_id(id_or_arn, "access-point").ok_or_else(not_found)?;
        self.read(&record::access_point_key(id)).await?.ok_or_else(not_found)
    }

    pub async fn create_access_point(&self, new: NewAccessPoint) -> Result<AccessPoint, EfsError> {
        check_tags(&new.tags)?;
        let root_path = normalise_root(new.root_path.as_deref().unwrap_or("/")).map_err(EfsError::BadRequest)?;
        if let Some(info) = &new.creation_info
            && parse_permissions(&info.permissions).is_none()
        {
            return Err(EfsError::BadRequest(format!(
                "CreationInfo.Permissions {:?} must be octal digits, such as 0755.",
                info.permissions
            )));
        }
        if let Some(existing) = self.store.get(&record::access_point_token_key(&new.client_token)).await? {
            return Err(EfsError::AccessPointAlreadyExists {
                id: String::from_utf8_lossy(&existing.value).into_owned(),
                token: new.client_token,
            });
        }
        let (fs, fs_revision) = self.file_system_record(&new.file_system_id).await?;
        let id = new_id("fsap");
        let ap = AccessPoint {
            arn: self.identity.efs_access_point(&id),
            id: id.clone(),
            client_token: new.client_token.clone(),
            file_system_id: fs.id.clone(),
            owner_id: self.identity.account.clone(),
            posix_user: new.posix_user,
            root_path,
            creation_info: new.creation_info,
            tags: new.tags,
        };
        let token_key = record::access_point_token_key(&ap.client_token);
        // Compared on the file system so that one deleted meanwhile takes no access point.
        let txn = Txn::new()
            .when(Compare::revision(record::file_system_key(&fs.id), fs_revision))
            .when(Compare::absent(token_key.clone()))
            .then(Op::put(token_key, id.clone().into_bytes()))
            .then(Op::put(record::access_point_key(&id), encode(&ap)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(ap),
            // The file system changed (a tag, a mount target) or the token was taken: try once
            // more from the top, which answers either case properly.
            TxnOutcome::Conflict => {
                Box::pin(self.create_access_point(NewAccessPoint {
                    client_token: ap.client_token,
                    file_system_id: ap.file_system_id,
                    tags: ap.tags,
                    posix_user: ap.posix_user,
                    root_path: Some(ap.root_path),
                    creation_info: ap.creation_info,
                }))
                .await
            }
        }
    }

    pub async fn describe_access_points(
        &self,
        access_point_id: Option<&str>,
        file_system_id: Option<&str>,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Listing<AccessPoint>, EfsError> {
        let points: Vec<AccessPoint> = match (access_point_id, file_system_id) {
            (Some(id), _) => vec![self.access_point_record(id).await?.0],
            (None, Some(fs)) => {
                let fs = self.file_system_record(fs).await?.0.id;
                let mut all: Vec<AccessPoint> = self.list(record::ACCESS_POINTS).await?;
                all.retain(|ap| ap.file_system_id == fs);
                all
            }
            (None, None) => self.list(record::ACCESS_POINTS).await?,
        };
        paged(points.into_iter().map(|ap| (ap.id.clone(), ap)).collect(), max_results, next_token)
    }

    /// DeleteAccessPoint: the directory it made stays, as on EFS.
    pub async fn delete_access_point(&self, id: &str) -> Result<(), EfsError> {
        let (ap, revision) = self.access_point_record(id).await?;
        let txn = Txn::new()
            .when(Compare::revision(record::access_point_key(&ap.id), revision))
            .then(Op::delete(record::access_point_key(&ap.id)))
            .then(Op::delete(record::access_point_token_key(&ap.client_token)));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::Conflict => Box::pin(self.delete_access_point(id)).await,
        }
    }
}
