//! Capacity providers. Flotilla has exactly the two Fargate ones, as every AWS account does.

use flotilla_types::ResourceKind;
use flotilla_types::Tag;
use serde::{Deserialize, Serialize};

use crate::page::{Page, paginate};
use crate::{Control, ControlError};

pub const FARGATE: &str = "FARGATE";
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
const BUILT_IN: [&str; 2] = [FARGATE, FARGATE_SPOT];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderStrategyItem {
    pub capacity_provider: String,
    #[serde(default)]
    pub weight: i32,
    #[serde(default)]
    pub base: i32,
}

/// Serialises to the ECS `CapacityProvider` shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProvider {
    pub capacity_provider_arn: String,
    pub name: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

/// Checks a cluster's provider list and default strategy against each other.
pub(crate) fn validate_strategy(
    providers: &[String],
    strategy: &[CapacityProviderStrategyItem],
) -> Result<(), ControlError> {
    for p in providers {
        if !BUILT_IN.contains(&p.as_str()) {
            return Err(ControlError::invalid(format!(
                "capacityProviders: '{p}' does not exist. Flotilla provides FARGATE and FARGATE_SPOT."
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in providers {
        if !seen.insert(p) {
            return Err(ControlError::invalid(format!("capacityProviders: '{p}' is listed twice.")));
        }
    }
    validate_strategy_items(strategy)?;
    for item in strategy {
        if !providers.contains(&item.capacity_provider) {
            return Err(ControlError::invalid(format!(
                "defaultCapacityProviderStrategy: capacity provider '{}' is not associated with the cluster; add it to capacityProviders.",
                item.capacity_provider
            )));
        }
    }
    Ok(())
}

/// Rules every capacity provider strategy obeys, whether a cluster default or a RunTask's.
pub fn validate_strategy_items(strategy: &[CapacityProviderStrategyItem]) -> Result<(), ControlError> {
    if strategy.len() > 20 {
        return Err(ControlError::invalid("capacityProviderStrategy: at most 20 items are allowed."));
    }
    let mut seen = std::collections::HashSet::new();
    for item in strategy {
        if !seen.insert(&item.capacity_provider) {
            return Err(ControlError::invalid(format!(
                "capacityProviderStrategy: '{}' appears more than once.",
                item.capacity_provider
            )));
        }
        if !(0..=1000).contains(&item.weight) {
            return Err(ControlError::invalid(format!(
                "capacityProviderStrategy.weight: must be 0 to 1000, got {}.",
                item.weight
            )));
        }
        if !(0..=100_000).contains(&item.base) {
            return Err(ControlError::invalid(format!(
                "capacityProviderStrategy.base: must be 0 to 100000, got {}.",
                item.base
            )));
        }
    }
    if strategy.iter().filter(|i| i.base > 0).count() > 1 {
        return Err(ControlError::invalid(
            "capacityProviderStrategy.base: only one capacity provider in a strategy can have a base.",
        ));
    }
    if !strategy.is_empty() && strategy.iter().all(|i| i.weight == 0) {
        return Err(ControlError::invalid(
            "capacityProviderStrategy.weight: at least one capacity provider must have a weight greater than zero.",
        ));
    }
    Ok(())
}

impl Control {
    fn built_in_provider(&self, name: &str, with_tags: bool) -> CapacityProvider {
        CapacityProvider {
            capacity_provider_arn: self.identity.capacity_provider(name).to_string(),
            name: name.to_owned(),
            status: "ACTIVE".into(),
            kind: name.to_owned(),
            tags: with_tags.then(Vec::new),
        }
    }

    /// Providers by name or ARN (all when `names` is empty); unknown ones come back as failures.
    pub async fn describe_capacity_providers(
        &self,
        names: &[String],
        include_tags: bool,
        max_results: Option<i32>,
        next_token: Option<&str>,
    ) -> Result<(Page<CapacityProvider>, Vec<String>), ControlError> {
        if names.is_empty() {
            let items = BUILT_IN.iter().map(|n| (n.to_string(), self.built_in_provider(n, include_tags))).collect();
            return Ok((paginate(items, max_results, next_token, 10)?, Vec::new()));
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for raw in names {
            let short = match flotilla_types::Arn::parse(raw) {
                Some(arn) if arn.kind == ResourceKind::CapacityProvider => arn.resource,
                _ => raw.clone(),
            };
            if BUILT_IN.contains(&short.as_str()) {
                found.push(self.built_in_provider(&short, include_tags));
            } else {
                missing.push(raw.clone());
            }
        }
        Ok((Page { items: found, next_token: None }, missing))
    }
}
