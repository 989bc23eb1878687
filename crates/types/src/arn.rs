//! Amazon Resource Names for the resources Flotilla serves.

use std::fmt;

/// The ECS resource kinds Flotilla names with ARNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cluster,
    TaskDefinition,
    Task,
    Service,
    CapacityProvider,
    ContainerInstance,
    Container,
    Attachment,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::TaskDefinition => "task-definition",
            ResourceKind::Task => "task",
            ResourceKind::Service => "service",
            ResourceKind::CapacityProvider => "capacity-provider",
            ResourceKind::ContainerInstance => "container-instance",
            ResourceKind::Container => "container",
            ResourceKind::Attachment => "attachment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cluster" => ResourceKind::Cluster,
            "task-definition" => ResourceKind::TaskDefinition,
            "task" => ResourceKind::Task,
            "service" => ResourceKind::Service,
            "capacity-provider" => ResourceKind::CapacityProvider,
            "container-instance" => ResourceKind::ContainerInstance,
            "container" => ResourceKind::Container,
            "attachment" => ResourceKind::Attachment,
            _ => return None,
        })
    }
}

/// `arn:aws:ecs:<region>:<account>:<kind>/<resource>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceKind,
    /// Everything after `<kind>/`, e.g. `family:3` or `cluster-name/task-id`.
    pub resource: String,
}

impl Arn {
    pub fn new(region: &str, account: &str, kind: ResourceKind, resource: impl Into<String>) -> Self {
        Arn { region: region.to_owned(), account: account.to_owned(), kind, resource: resource.into() }
    }

    /// Parses an ECS ARN; `None` for anything else (other services, malformed strings).
    pub fn parse(s: &str) -> Option<Arn> {
        let rest = s.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let tail = parts.next()?;
        if partition.is_empty() || service != "ecs" || region.is_empty() || account.is_empty() {
            return None;
        }
        let (kind, resource) = tail.split_once('/')?;
        if resource.is_empty() {
            return None;
        }
        Some(Arn::new(region, account, ResourceKind::parse(kind)?, resource))
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:aws:ecs:{}:{}:{}/{}", self.region, self.account, self.kind.as_str(), self.resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let arn = Arn::new("us-east-1", "123456789012", ResourceKind::TaskDefinition, "web:3");
        let s = arn.to_string();
        assert_eq!(s, "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3");
        assert_eq!(Arn::parse(&s), Some(arn));
    }

    #[test]
    fn rejects_foreign_and_malformed() {
        assert_eq!(Arn::parse("arn:aws:iam::123456789012:role/x"), None);
        assert_eq!(Arn::parse("arn:aws:ecs:us-east-1:1:cluster/"), None);
        assert_eq!(Arn::parse("arn:aws:ecs:us-east-1:1:bogus/x"), None);
        assert_eq!(Arn::parse("web:3"), None);
    }
}
