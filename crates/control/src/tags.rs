//! Resource tags: TagResource, UntagResource, ListTagsForResource, and the rules tags obey.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;
use flotilla_types::{Arn, ResourceKind};

use crate::cluster::Cluster;
use crate::record::{cluster_key, encode, load, task_definition_key};
use crate::task_definition::TaskDefinitionRecord;
use crate::{Control, ControlError};

const MAX_TAGS: usize = 50;

pub(crate) fn validate_tags(tags: &[Tag]) -> Result<(), ControlError> {
    if tags.len() > MAX_TAGS {
        return Err(ControlError::invalid(format!("tags: at most {MAX_TAGS} tags per resource, got {}.", tags.len())));
    }
    for tag in tags {
        let key = tag.key.as_str();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(ControlError::invalid("tags.key: a tag key must be 1 to 128 characters."));
        }
        if tag.value.chars().count() > 256 {
            return Err(ControlError::invalid(format!(
                "tags.value: the value of tag '{key}' is longer than 256 characters."
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ControlError::invalid(format!("tags.key: '{key}' uses the reserved prefix aws:.")));
        }
    }
    Ok(())
}

enum Tagged {
    Cluster(String),
    Service { cluster: String, name: String },
    TaskDefinition { family: String, revision: u32 },
}

impl Control {
    fn tagged(&self, resource_arn: &str) -> Result<Tagged, ControlError> {
        let not_found = || ControlError::ResourceNotFound { arn: resource_arn.to_owned() };
        let arn = Arn::parse(resource_arn)
            .ok_or_else(|| ControlError::invalid(format!("resourceArn: '{resource_arn}' is not a valid ECS ARN.")))?;
        if arn.region != self.identity.region || arn.account != self.identity.account {
            return Err(not_found());
        }
        match arn.kind {
            ResourceKind::Cluster => Ok(Tagged::Cluster(arn.resource)),
            ResourceKind::Service => {
                let (cluster, name) = arn.resource.split_once('/').ok_or_else(not_found)?;
                Ok(Tagged::Service { cluster: cluster.to_owned(), name: name.to_owned() })
            }
            ResourceKind::TaskDefinition => {
                let (family, revision) = arn.resource.rsplit_once(':').ok_or_else(not_found)?;
                let revision = revision.parse().map_err(|_| not_found())?;
                Ok(Tagged::TaskDefinition { family: family.to_owned(), revision })
            }
            _ => Err(not_found()),
        }
    }

    pub async fn list_tags(&self, resource_arn: &str) -> Result<Vec<Tag>, ControlError> {
        let not_found = || ControlError::ResourceNotFound { arn: resource_arn.to_owned() };
        match self.tagged(resource_arn)? {
            Tagged::Cluster(name) => {
                let (cluster, _) =
                    load::<Cluster>(self.store.as_ref(), &cluster_key(&name)).await?.ok_or_else(not_found)?;
                Ok(cluster.tags.unwrap_or_default())
            }
            Tagged::Service { cluster, name } => self.service_tags_mut(&cluster, &name, |_| Ok(())).await,
            Tagged::TaskDefinition { family, revision } => {
                let (record, _) =
                    load::<TaskDefinitionRecord>(self.store.as_ref(), &task_definition_key(&family, revision))
                        .await?
                        .ok_or_else(not_found)?;
                Ok(record.tags)
            }
        }
    }

    pub async fn tag_resource(&self, resource_arn: &str, tags: Vec<Tag>) -> Result<(), ControlError> {
        validate_tags(&tags)?;
        self.change_tags(resource_arn, |current| {
            flotilla_types::tag::merge(current, tags.iter().cloned());
            validate_tags(current)
        })
        .await
    }

    pub async fn untag_resource(&self, resource_arn: &str, keys: Vec<String>) -> Result<(), ControlError> {
        self.change_tags(resource_arn, |current| {
            current.retain(|t| !keys.contains(&t.key));
            Ok(())
        })
        .await
    }

    async fn change_tags(
        &self,
        resource_arn: &str,
        change: impl Fn(&mut Vec<Tag>) -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let not_found = || ControlError::ResourceNotFound { arn: resource_arn.to_owned() };
        let target = self.tagged(resource_arn)?;
        if let Tagged::Service { cluster, name } = &target {
            self.service_tags_mut(cluster, name, change).await?;
            return Ok(());
        }
        loop {
            let (key, value, rev) = match &target {
                Tagged::Cluster(name) => {
                    let key = cluster_key(name);
                    let (mut cluster, rev) = load::<Cluster>(self.store.as_ref(), &key).await?.ok_or_else(not_found)?;
                    change(cluster.tags.get_or_insert_with(Vec::new))?;
                    (key, encode(&cluster), rev)
                }
                Tagged::TaskDefinition { family, revision } => {
                    let key = task_definition_key(family, *revision);
                    let (mut record, rev) =
                        load::<TaskDefinitionRecord>(self.store.as_ref(), &key).await?.ok_or_else(not_found)?;
                    change(&mut record.tags)?;
                    (key, encode(&record), rev)
                }
                Tagged::Service { .. } => unreachable!("service tags are changed above"),
            };
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, value));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
    }
}
