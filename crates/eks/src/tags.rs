//! TagResource, UntagResource and ListTagsForResource on clusters and Fargate profiles, by ARN.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;
use flotilla_types::tag::merge;

use crate::record::{StoredCluster, cluster_key, encode, profile_key};
use crate::{Eks, EksError, FargateProfile};

/// Tags a resource may have, as EKS allows.
pub const MAX_TAGS: usize = 50;

/// EKS's rules for tags: at most 50, keys 1 to 128 characters, values at most 256, no `aws:`.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("tags: a resource can have at most {MAX_TAGS} tags."));
    }
    for tag in tags {
        if tag.key.is_empty() || tag.key.chars().count() > 128 || tag.value.chars().count() > 256 {
            return Err(format!("tags: {:?}: keys must be 1 to 128 characters and values at most 256.", tag.key));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("tags: {:?}: the aws: prefix is reserved.", tag.key));
        }
    }
    Ok(())
}

/// What a tagging request's ARN names.
enum Tagged {
    Cluster(String),
    Profile { cluster: String, name: String },
}

impl Eks {
    fn tagged(&self, arn: &str) -> Result<Tagged, EksError> {
        let not_eks =
            || EksError::BadTagRequest(format!("resourceArn: {arn:?} is not an EKS cluster or Fargate profile ARN."));
        let prefix = self.identity.eks_cluster("");
        let prefix = prefix.strip_suffix("cluster/").ok_or_else(not_eks)?;
        let Some(rest) = arn.strip_prefix(prefix) else {
            return if arn.starts_with("arn:aws:eks:") {
                Err(EksError::TagTargetNotFound(format!(
                    "No resource found with ARN {arn} in this region and account."
                )))
            } else {
                Err(not_eks())
            };
        };
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["cluster", name] if !name.is_empty() => Ok(Tagged::Cluster(name.to_string())),
            ["fargateprofile", cluster, name, id] if !id.is_empty() => {
                Ok(Tagged::Profile { cluster: cluster.to_string(), name: name.to_string() })
            }
            _ => Err(not_eks()),
        }
    }

    pub async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, EksError> {
        let missing = || EksError::TagTargetNotFound(format!("No resource found with ARN {arn}."));
        match self.tagged(arn)? {
            Tagged::Cluster(name) => {
                let (stored, _) = self.read::<StoredCluster>(&cluster_key(&name)).await?.ok_or_else(missing)?;
                Ok(stored.cluster.tags)
            }
            Tagged::Profile { cluster, name } => {
                let (profile, _) =
                    self.read::<FargateProfile>(&profile_key(&cluster, &name)).await?.ok_or_else(missing)?;
                if profile.arn != arn {
                    return Err(missing());
                }
                Ok(profile.tags)
            }
        }
    }

    pub async fn tag_resource(&self, arn: &str, tags: Vec<Tag>) -> Result<(), EksError> {
        check_tags(&tags).map_err(EksError::BadTagRequest)?;
        self.change_tags(arn, |existing| {
            merge(existing, tags.iter().cloned());
            check_tags(existing).map_err(EksError::BadTagRequest)
        })
        .await
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), EksError> {
        self.change_tags(arn, |existing| {
            existing.retain(|t| !keys.contains(&t.key));
            Ok(())
        })
        .await
    }

    async fn change_tags(
        &self,
        arn: &str,
        change: impl Fn(&mut Vec<Tag>) -> Result<(), EksError>,
    ) -> Result<(), EksError> {
        let missing = || EksError::TagTargetNotFound(format!("No resource found with ARN {arn}."));
        let tagged = self.tagged(arn)?;
        for _ in 0..crate::CONFLICT_RETRIES {
            let (key, value, revision) = match &tagged {
                Tagged::Cluster(name) => {
                    let key = cluster_key(name);
                    let (mut stored, revision) = self.read::<StoredCluster>(&key).await?.ok_or_else(missing)?;
                    change(&mut stored.cluster.tags)?;
                    (key, encode(&stored), revision)
                }
                Tagged::Profile { cluster, name } => {
                    let key = profile_key(cluster, name);
                    let (mut profile, revision) = self.read::<FargateProfile>(&key).await?.ok_or_else(missing)?;
                    if profile.arn != arn {
                        return Err(missing());
                    }
                    change(&mut profile.tags)?;
                    (key, encode(&profile), revision)
                }
            };
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, value));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(EksError::InUse(format!("{arn} is being changed by other requests; retry.")))
    }
}
