//! Tags on networking resources: validation, CreateTags and DeleteTags.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::interfaces::NetworkInterface;
use super::security_groups::SecurityGroup;
use super::subnets::Subnet;
use super::vpcs::Vpc;
use super::{NetworkError, NetworkResource, Tag, check_id, encode, keys, load};
use crate::Control;

/// Most tags per resource, as on AWS.
const MAX_TAGS: usize = 50;

pub(crate) fn validate_tags(tags: &[Tag]) -> Result<(), NetworkError> {
    if tags.len() > MAX_TAGS {
        return Err(NetworkError::invalid_value(format!("A resource may have at most {MAX_TAGS} tags.")));
    }
    for tag in tags {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(NetworkError::invalid_value(format!(
                "Tag key '{}' is invalid: keys are 1 to 128 characters.",
                tag.key
            )));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(NetworkError::invalid_value(format!(
                "Tag key '{}' is invalid: keys starting with 'aws:' are reserved for AWS use.",
                tag.key
            )));
        }
        if tag.value.chars().count() > 256 {
            return Err(NetworkError::invalid_value(format!(
                "Tag value for key '{}' is invalid: values are at most 256 characters.",
                tag.key
            )));
        }
    }
    Ok(())
}

/// A tag to remove: any value, or only this value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRemoval {
    pub key: String,
    pub value: Option<String>,
}

trait Tagged: Serialize + DeserializeOwned {
    fn tags_mut(&mut self) -> &mut Vec<Tag>;
}

macro_rules! tagged {
    ($($t:ty),*) => {$(
        impl Tagged for $t {
            fn tags_mut(&mut self) -> &mut Vec<Tag> {
                &mut self.tags
            }
        }
    )*};
}
tagged!(Vpc, Subnet, SecurityGroup, NetworkInterface);

fn resource_of(id: &str) -> Result<NetworkResource, NetworkError> {
    let resource = match id.split_once('-').map(|(prefix, _)| prefix) {
        Some("vpc") => NetworkResource::Vpc,
        Some("subnet") => NetworkResource::Subnet,
        Some("sg") => NetworkResource::SecurityGroup,
        Some("eni") => NetworkResource::NetworkInterface,
        _ => {
            return Err(NetworkError::invalid_value(format!(
                "The ID '{id}' is not valid: Flotilla tags VPCs, subnets, security groups and network interfaces."
            )));
        }
    };
    check_id(resource, id)?;
    Ok(resource)
}

impl Control {
    /// Adds or overwrites tags on each resource (all must exist).
    pub async fn create_tags(&self, resources: &[String], tags: &[Tag]) -> Result<(), NetworkError> {
        validate_tags(tags)?;
        self.retag(resources, |existing| {
            for tag in tags {
                match existing.iter_mut().find(|t| t.key == tag.key) {
                    Some(t) => t.value = tag.value.clone(),
                    None => existing.push(tag.clone()),
                }
            }
            validate_tags(existing)
        })
        .await
    }

    /// Removes tags from each resource (all must exist); no tags given removes every tag.
    pub async fn delete_tags(&self, resources: &[String], tags: &[TagRemoval]) -> Result<(), NetworkError> {
        self.retag(resources, |existing| {
            if tags.is_empty() {
                existing.clear();
            }
            existing.retain(|t| !tags.iter().any(|r| r.key == t.key && r.value.as_ref().is_none_or(|v| *v == t.value)));
            Ok(())
        })
        .await
    }

    async fn retag(
        &self,
        resources: &[String],
        change: impl Fn(&mut Vec<Tag>) -> Result<(), NetworkError>,
    ) -> Result<(), NetworkError> {
        let kinds = resources.iter().map(|id| resource_of(id)).collect::<Result<Vec<_>, _>>()?;
        for (id, kind) in resources.iter().zip(kinds) {
            match kind {
                NetworkResource::Vpc => self.retag_one::<Vpc>(&keys::vpc(id), kind, id, &change).await?,
                NetworkResource::Subnet => self.retag_one::<Subnet>(&keys::subnet(id), kind, id, &change).await?,
                NetworkResource::SecurityGroup => {
                    self.retag_one::<SecurityGroup>(&keys::security_group(id), kind, id, &change).await?
                }
                NetworkResource::NetworkInterface => {
                    self.retag_one::<NetworkInterface>(&keys::network_interface(id), kind, id, &change).await?
                }
                NetworkResource::SecurityGroupRule => unreachable!("resource_of never names rules"),
            }
        }
        Ok(())
    }

    async fn retag_one<T: Tagged>(
        &self,
        key: &str,
        kind: NetworkResource,
        id: &str,
        change: &impl Fn(&mut Vec<Tag>) -> Result<(), NetworkError>,
    ) -> Result<(), NetworkError> {
        loop {
            let (mut record, revision) =
                load::<T>(self.store.as_ref(), key).await?.ok_or_else(|| NetworkError::not_found(kind, id))?;
            change(record.tags_mut())?;
            let txn = Txn::new().when(Compare::revision(key, revision)).then(Op::put(key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
    }
}
