//! Security groups: CreateSecurityGroup, DescribeSecurityGroups, DeleteSecurityGroup and
//! their rules (Authorize/Revoke, ingress and egress).
//!
//! Rules are stored flat, one per peer (a CIDR or a group), the way the data plane enforces
//! them and the way EC2 numbers them (`sgr-...`); the API groups them back into
//! `IpPermissions` by protocol and ports.

use std::fmt;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::interfaces::NetworkInterface;
use super::keys;
use super::subnets::Subnet;
use super::tags::validate_tags;
use super::vpcs::Vpc;
use super::{
    Filterable, Ipv4Cidr, NetworkError, NetworkResource, ResourceFilter, Tag, check_id, encode, list, load, new_id,
    select,
};
use crate::Control;

/// The protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// Every protocol (`-1`); ports do not apply.
    All,
    Tcp,
    Udp,
    /// Ports are the ICMP type and code; -1 means any.
    Icmp,
    /// Any other IP protocol by number; ports do not apply.
    Other(u8),
}

impl IpProtocol {
    /// Reads EC2's forms: `tcp`, `udp`, `icmp`, `-1`/`all`, or a protocol number.
    pub fn parse(text: &str) -> Option<IpProtocol> {
        match text.to_ascii_lowercase().as_str() {
            "-1" | "all" => Some(IpProtocol::All),
            "tcp" | "6" => Some(IpProtocol::Tcp),
            "udp" | "17" => Some(IpProtocol::Udp),
            "icmp" | "1" => Some(IpProtocol::Icmp),
            n => n.parse::<u8>().ok().map(IpProtocol::Other),
        }
    }

    /// EC2's spelling: `-1`, `tcp`, `udp`, `icmp` or the number.
    pub fn as_ec2(self) -> String {
        match self {
            IpProtocol::All => "-1".into(),
            IpProtocol::Tcp => "tcp".into(),
            IpProtocol::Udp => "udp".into(),
            IpProtocol::Icmp => "icmp".into(),
            IpProtocol::Other(n) => n.to_string(),
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Icmp)
    }
}

impl Serialize for IpProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_ec2())
    }
}

impl<'de> Deserialize<'de> for IpProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpProtocol, D::Error> {
        let text = String::deserialize(d)?;
        IpProtocol::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown IP protocol '{text}'")))
    }
}

/// Whom a rule allows: a block of addresses, or the interfaces in a security group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RulePeer {
    Cidr(Ipv4Cidr),
    Group(String),
}

/// One allowed flow. For ingress the peer is the source, for egress the destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupRule {
    pub id: String,
    pub protocol: IpProtocol,
    /// First port (TCP, UDP) or ICMP type; `None` when the protocol has no ports.
    pub from_port: Option<i32>,
    /// Last port (TCP, UDP) or ICMP code.
    pub to_port: Option<i32>,
    pub peer: RulePeer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl SecurityGroupRule {
    /// Same flow, whatever the id and description.
    fn same_permission(&self, other: &SecurityGroupRule) -> bool {
        self.protocol == other.protocol
            && self.from_port == other.from_port
            && self.to_port == other.to_port
            && self.peer == other.peer
    }
}

/// EC2's wording of a rule in error messages.
impl fmt::Display for SecurityGroupRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = match &self.peer {
            RulePeer::Cidr(c) => c.to_string(),
            RulePeer::Group(g) => g.clone(),
        };
        write!(f, "peer: {peer}, {}", self.protocol.as_ec2().to_uppercase())?;
        if let (Some(from), Some(to)) = (self.from_port, self.to_port) {
            write!(f, ", from port: {from}, to port: {to}")?;
        }
        write!(f, ", ALLOW")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    pub description: String,
    pub ingress: Vec<SecurityGroupRule>,
    pub egress: Vec<SecurityGroupRule>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

const DEFAULT_GROUP: &str = "default";

fn allow_all_to_internet() -> SecurityGroupRule {
    SecurityGroupRule {
        id: new_id("sgr"),
        protocol: IpProtocol::All,
        from_port: None,
        to_port: None,
        peer: RulePeer::Cidr("0.0.0.0/0".parse().expect("a CIDR")),
        description: None,
    }
}

impl SecurityGroup {
    /// A VPC's `default` group: members reach each other; everything may leave.
    pub(crate) fn default_for(vpc_id: &str, id: &str) -> SecurityGroup {
        SecurityGroup {
            id: id.to_owned(),
            vpc_id: vpc_id.to_owned(),
            name: DEFAULT_GROUP.into(),
            description: "default VPC security group".into(),
            ingress: vec![SecurityGroupRule {
                id: new_id("sgr"),
                protocol: IpProtocol::All,
                from_port: None,
                to_port: None,
                peer: RulePeer::Group(id.to_owned()),
                description: None,
            }],
            egress: vec![allow_all_to_internet()],
            tags: Vec::new(),
        }
    }

    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_GROUP
    }

    pub fn rules(&self, direction: RuleDirection) -> &[SecurityGroupRule] {
        match direction {
            RuleDirection::Ingress => &self.ingress,
            RuleDirection::Egress => &self.egress,
        }
    }

    fn rules_mut(&mut self, direction: RuleDirection) -> &mut Vec<SecurityGroupRule> {
        match direction {
            RuleDirection::Ingress => &mut self.ingress,
            RuleDirection::Egress => &mut self.egress,
        }
    }

    fn references(&self, group_id: &str) -> bool {
        self.ingress.iter().chain(&self.egress).any(|r| r.peer == RulePeer::Group(group_id.to_owned()))
    }
}

fn rule_values<'a>(rules: &'a [SecurityGroupRule], name: &str) -> Option<Vec<String>> {
    let values: Box<dyn Iterator<Item = Option<String>> + 'a> = match name {
        "cidr" | "cidr-ip" => Box::new(rules.iter().map(|r| match &r.peer {
            RulePeer::Cidr(c) => Some(c.to_string()),
            RulePeer::Group(_) => None,
        })),
        "group-id" => Box::new(rules.iter().map(|r| match &r.peer {
            RulePeer::Group(g) => Some(g.clone()),
            RulePeer::Cidr(_) => None,
        })),
        "protocol" => Box::new(rules.iter().map(|r| Some(r.protocol.as_ec2()))),
        "from-port" => Box::new(rules.iter().map(|r| r.from_port.map(|p| p.to_string()))),
        "to-port" => Box::new(rules.iter().map(|r| r.to_port.map(|p| p.to_string()))),
        _ => return None,
    };
    Some(values.flatten().collect())
}

impl Filterable for SecurityGroup {
    const RESOURCE: NetworkResource = NetworkResource::SecurityGroup;
    const PREFIX: &'static str = keys::SECURITY_GROUPS;
    const FILTERS: &'static [&'static str] = &[
        "group-id",
        "group-name",
        "vpc-id",
        "description",
        "ip-permission.cidr",
        "ip-permission.cidr-ip",
        "ip-permission.group-id",
        "ip-permission.protocol",
        "ip-permission.from-port",
        "ip-permission.to-port",
        "egress.ip-permission.cidr",
        "egress.ip-permission.cidr-ip",
        "egress.ip-permission.group-id",
        "egress.ip-permission.protocol",
        "egress.ip-permission.from-port",
        "egress.ip-permission.to-port",
    ];

    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        if let Some(rest) = name.strip_prefix("egress.ip-permission.") {
            return rule_values(&self.egress, rest);
        }
        if let Some(rest) = name.strip_prefix("ip-permission.") {
            return rule_values(&self.ingress, rest);
        }
        Some(match name {
            "group-id" => vec![self.id.clone()],
            "group-name" => vec![self.name.clone()],
            "vpc-id" => vec![self.vpc_id.clone()],
            "description" => vec![self.description.clone()],
            _ => return None,
        })
    }

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleDirection {
    Ingress,
    Egress,
}

/// A security group named by id, or by name in the default VPC (EC2's `GroupName`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSelector {
    Id(String),
    Name(String),
}

/// A peer as a request gives it, before it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulePeerSpec {
    Cidr(String),
    GroupId(String),
    /// A group's name in the same VPC as the group the rule is added to.
    GroupName(String),
}

/// What Authorize or Revoke did to a group.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleChange {
    /// The group after the change.
    pub group: SecurityGroup,
    /// The rules added or removed.
    pub rules: Vec<SecurityGroupRule>,
    /// Rules a Revoke was given that matched nothing.
    pub unknown: Vec<RuleSpec>,
}

/// A rule as a request gives it, before it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub peer: RulePeerSpec,
    pub description: Option<String>,
}

fn check_group_name(name: &str) -> Result<(), NetworkError> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(NetworkError::invalid_value(format!(
            "Value ({name}) for parameter GroupName is invalid. Group names must be 1 to 255 characters."
        )));
    }
    if name.starts_with("sg-") {
        return Err(NetworkError::invalid_value(format!(
            "Value ({name}) for parameter GroupName is invalid. Group names may not be in the format sg-*."
        )));
    }
    check_ascii("GroupName", name)
}

fn check_ascii(parameter: &str, value: &str) -> Result<(), NetworkError> {
    if value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        Ok(())
    } else {
        Err(NetworkError::invalid_value(format!(
            "Value ({value}) for parameter {parameter} is invalid. Character sets beyond ASCII are not supported."
        )))
    }
}

/// Checks a rule's protocol and ports and puts them in canonical form.
fn normalize_ports(spec: &RuleSpec) -> Result<(IpProtocol, Option<i32>, Option<i32>), NetworkError> {
    let protocol = IpProtocol::parse(&spec.protocol).ok_or_else(|| {
        NetworkError::invalid_value(format!("Invalid value '{}' for IP protocol. Unknown protocol.", spec.protocol))
    })?;
    match protocol {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let (from, to) = match (spec.from_port, spec.to_port) {
                // `--port all` / -1: every port.
                (Some(-1), Some(-1)) => (0, 65535),
                (Some(from), Some(to)) => (from, to),
                _ => {
                    return Err(NetworkError::malformed_permission(format!(
                        "{} rules need both FromPort and ToPort.",
                        protocol.as_ec2().to_uppercase()
                    )));
                }
            };
            if !(0..=65535).contains(&from) || !(0..=65535).contains(&to) || from > to {
                return Err(NetworkError::malformed_permission(format!(
                    "Invalid port range {from}-{to}: ports are 0 to 65535 and FromPort may not exceed ToPort."
                )));
            }
            Ok((protocol, Some(from), Some(to)))
        }
        IpProtocol::Icmp => {
            let (kind, code) = (spec.from_port.unwrap_or(-1), spec.to_port.unwrap_or(-1));
            if !(-1..=255).contains(&kind) || !(-1..=255).contains(&code) {
                return Err(NetworkError::malformed_permission(format!(
                    "Invalid ICMP type {kind} or code {code}: each is -1 (any) or 0 to 255."
                )));
            }
            Ok((protocol, Some(kind), Some(code)))
        }
        IpProtocol::All | IpProtocol::Other(_) => Ok((protocol, None, None)),
    }
}

fn parse_rule_cidr(text: &str) -> Result<Ipv4Cidr, NetworkError> {
    text.parse().map_err(|e| match e {
        super::CidrError::HostBitsSet { canonical, .. } => NetworkError::malformed_permission(format!(
            "CIDR block {text} is malformed: it has host bits set; did you mean {canonical}?"
        )),
        super::CidrError::Malformed(_) => NetworkError::malformed_permission(format!(
            "CIDR block {text} is malformed: give an IPv4 block such as 203.0.113.0/24."
        )),
    })
}

fn check_description(description: &Option<String>) -> Result<(), NetworkError> {
    match description {
        Some(d) if d.chars().count() > 255 => {
            Err(NetworkError::invalid_value("Rule descriptions may be at most 255 characters."))
        }
        Some(d) => check_ascii("Description", d),
        None => Ok(()),
    }
}

impl Control {
    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: Option<&str>,
        tags: Vec<Tag>,
    ) -> Result<SecurityGroup, NetworkError> {
        check_group_name(name)?;
        if name.eq_ignore_ascii_case(DEFAULT_GROUP) {
            return Err(NetworkError::GroupReserved { name: name.to_owned() });
        }
        if description.chars().count() > 255 {
            return Err(NetworkError::invalid_value(
                "Value for parameter GroupDescription is invalid. Descriptions may be at most 255 characters.",
            ));
        }
        check_ascii("GroupDescription", description)?;
        validate_tags(&tags)?;
        let vpc_id = match vpc_id {
            Some(id) => {
                check_id(NetworkResource::Vpc, id)?;
                id.to_owned()
            }
            None => self.default_vpc().await?.ok_or(NetworkError::NoDefaultVpc)?.id,
        };
        let group = SecurityGroup {
            id: new_id("sg"),
            vpc_id: vpc_id.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            ingress: Vec::new(),
            egress: vec![allow_all_to_internet()],
            tags,
        };
        let vpc_key = keys::vpc(&vpc_id);
        loop {
            let (vpc, vpc_revision) = load::<Vpc>(self.store.as_ref(), &vpc_key)
                .await?
                .ok_or_else(|| NetworkError::not_found(NetworkResource::Vpc, vpc_id.as_str()))?;
            let groups = list::<SecurityGroup>(self.store.as_ref(), keys::SECURITY_GROUPS).await?;
            if groups.iter().any(|(g, _)| g.vpc_id == vpc_id && g.name == name) {
                return Err(NetworkError::GroupDuplicate { name: name.to_owned(), vpc_id });
            }
            // Rewriting the VPC serialises this against DeleteVpc and same-named creates.
            let txn = Txn::new()
                .when(Compare::revision(&vpc_key, vpc_revision))
                .when(Compare::absent(keys::security_group(&group.id)))
                .then(Op::put(&vpc_key, encode(&vpc)))
                .then(Op::put(keys::security_group(&group.id), encode(&group)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(group);
            }
        }
    }

    /// Groups by id, and by name in the default VPC (all groups if both are empty), that pass
    /// every filter.
    pub async fn describe_security_groups(
        &self,
        ids: &[String],
        names: &[String],
        filters: &[ResourceFilter],
    ) -> Result<Vec<SecurityGroup>, NetworkError> {
        let all: Vec<SecurityGroup> = self.describable(ids, filters).await?;
        let mut named = Vec::new();
        if !names.is_empty() {
            let vpc = self.default_vpc().await?.ok_or(NetworkError::NoDefaultVpc)?;
            for name in names {
                let group = all.iter().find(|g| g.vpc_id == vpc.id && &g.name == name).ok_or_else(|| {
                    NetworkError::GroupNameNotFound { name: name.clone(), vpc_id: vpc.id.clone(), default_vpc: true }
                })?;
                named.push(group.id.clone());
            }
        }
        let wanted =
            |g: &SecurityGroup| (ids.is_empty() && names.is_empty()) || ids.contains(&g.id) || named.contains(&g.id);
        select(all, wanted, filters)
    }

    pub async fn security_group(&self, id: &str) -> Result<SecurityGroup, NetworkError> {
        Ok(self.resolve_group(&GroupSelector::Id(id.to_owned())).await?.0)
    }

    /// The group `selector` names, with its revision.
    async fn resolve_group(&self, selector: &GroupSelector) -> Result<(SecurityGroup, u64), NetworkError> {
        match selector {
            GroupSelector::Id(id) => {
                check_id(NetworkResource::SecurityGroup, id)?;
                load(self.store.as_ref(), &keys::security_group(id))
                    .await?
                    .ok_or_else(|| NetworkError::not_found(NetworkResource::SecurityGroup, id.as_str()))
            }
            GroupSelector::Name(name) => {
                let vpc = self.default_vpc().await?.ok_or(NetworkError::NoDefaultVpc)?;
                self.group_by_name(&vpc.id, name).await?.ok_or_else(|| NetworkError::GroupNameNotFound {
                    name: name.clone(),
                    vpc_id: vpc.id,
                    default_vpc: true,
                })
            }
        }
    }

    async fn group_by_name(&self, vpc_id: &str, name: &str) -> Result<Option<(SecurityGroup, u64)>, NetworkError> {
        let groups = list::<SecurityGroup>(self.store.as_ref(), keys::SECURITY_GROUPS).await?;
        Ok(groups.into_iter().find(|(g, _)| g.vpc_id == vpc_id && g.name == name))
    }

    /// Deletes a group no interface uses and no other group's rules name; returns it.
    pub async fn delete_security_group(&self, selector: &GroupSelector) -> Result<SecurityGroup, NetworkError> {
        loop {
            let (group, revision) = self.resolve_group(selector).await?;
            if group.is_default() {
                return Err(NetworkError::CannotDelete { group_id: group.id });
            }
            // Everything whose change could add a dependency is read (with its revision)
            // before the dependencies are looked for, and compared at commit: the VPC (new
            // groups), its subnets (new interfaces) and its other groups (new references).
            let vpc_key = keys::vpc(&group.vpc_id);
            let vpc = load::<Vpc>(self.store.as_ref(), &vpc_key).await?;
            let subnets: Vec<(Subnet, u64)> = list::<Subnet>(self.store.as_ref(), keys::SUBNETS)
                .await?
                .into_iter()
                .filter(|(s, _)| s.vpc_id == group.vpc_id)
                .collect();
            let others: Vec<(SecurityGroup, u64)> = list::<SecurityGroup>(self.store.as_ref(), keys::SECURITY_GROUPS)
                .await?
                .into_iter()
                .filter(|(g, _)| g.vpc_id == group.vpc_id && g.id != group.id)
                .collect();
            if let Some((referrer, _)) = others.iter().find(|(g, _)| g.references(&group.id)) {
                return Err(NetworkError::DependencyViolation {
                    resource: "security group",
                    id: group.id,
                    reason: format!("rules of {} ({}) refer to it", referrer.id, referrer.name),
                });
            }
            let users: Vec<String> = list::<NetworkInterface>(self.store.as_ref(), keys::NETWORK_INTERFACES)
                .await?
                .into_iter()
                .filter(|(eni, _)| eni.groups.iter().any(|g| g.id == group.id))
                .map(|(eni, _)| eni.id)
                .collect();
            if !users.is_empty() {
                return Err(NetworkError::DependencyViolation {
                    resource: "security group",
                    id: group.id,
                    reason: format!("network interfaces use it ({})", users.join(", ")),
                });
            }
            let key = keys::security_group(&group.id);
            let mut txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::delete(&key));
            if let Some((vpc, vpc_revision)) = vpc {
                txn = txn.when(Compare::revision(&vpc_key, vpc_revision)).then(Op::put(&vpc_key, encode(&vpc)));
            }
            for (s, r) in &subnets {
                txn = txn.when(Compare::revision(keys::subnet(&s.id), *r));
            }
            for (g, r) in &others {
                txn = txn.when(Compare::revision(keys::security_group(&g.id), *r));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(group);
            }
        }
    }

    /// Adds rules to a group.
    pub async fn authorize_security_group(
        &self,
        selector: &GroupSelector,
        direction: RuleDirection,
        specs: &[RuleSpec],
    ) -> Result<RuleChange, NetworkError> {
        if specs.is_empty() {
            return Err(NetworkError::MissingParameter("IpPermissions".into()));
        }
        loop {
            let (mut group, revision) = self.resolve_group(selector).await?;
            let mut added: Vec<SecurityGroupRule> = Vec::new();
            // Groups the new rules refer to must still exist when the rules are written.
            let mut referenced: Vec<(String, u64)> = Vec::new();
            for spec in specs {
                check_description(&spec.description)?;
                let (protocol, from_port, to_port) = normalize_ports(spec)?;
                let peer = match &spec.peer {
                    RulePeerSpec::Cidr(text) => RulePeer::Cidr(parse_rule_cidr(text)?),
                    RulePeerSpec::GroupId(id) if *id == group.id => RulePeer::Group(id.clone()),
                    RulePeerSpec::GroupId(id) => {
                        check_id(NetworkResource::SecurityGroup, id)?;
                        let (peer, peer_revision) =
                            load::<SecurityGroup>(self.store.as_ref(), &keys::security_group(id))
                                .await?
                                .ok_or_else(|| NetworkError::not_found(NetworkResource::SecurityGroup, id.as_str()))?;
                        if peer.vpc_id != group.vpc_id {
                            return Err(NetworkError::InvalidParameter(format!(
                                "You have specified two resources that belong to different networks: {} is in {} and {} in {}.",
                                group.id, group.vpc_id, peer.id, peer.vpc_id
                            )));
                        }
                        referenced.push((peer.id.clone(), peer_revision));
                        RulePeer::Group(peer.id)
                    }
                    RulePeerSpec::GroupName(name) if *name == group.name => RulePeer::Group(group.id.clone()),
                    RulePeerSpec::GroupName(name) => {
                        let (peer, peer_revision) =
                            self.group_by_name(&group.vpc_id, name).await?.ok_or_else(|| {
                                NetworkError::GroupNameNotFound {
                                    name: name.clone(),
                                    vpc_id: group.vpc_id.clone(),
                                    default_vpc: false,
                                }
                            })?;
                        referenced.push((peer.id.clone(), peer_revision));
                        RulePeer::Group(peer.id)
                    }
                };
                let rule = SecurityGroupRule {
                    id: new_id("sgr"),
                    protocol,
                    from_port,
                    to_port,
                    peer,
                    description: spec.description.clone(),
                };
                if group.rules(direction).iter().chain(&added).any(|r| r.same_permission(&rule)) {
                    return Err(NetworkError::PermissionDuplicate { rule: rule.to_string() });
                }
                added.push(rule);
            }
            group.rules_mut(direction).extend(added.iter().cloned());
            let key = keys::security_group(&group.id);
            let mut txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&group)));
            for (id, r) in &referenced {
                txn = txn.when(Compare::revision(keys::security_group(id), *r));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(RuleChange { group, rules: added, unknown: Vec::new() });
            }
        }
    }

    /// Removes rules, given as rules or by id. Rules that match nothing are reported back in
    /// `unknown`; if nothing matched at all, it fails with `PermissionNotFound`.
    pub async fn revoke_security_group(
        &self,
        selector: &GroupSelector,
        direction: RuleDirection,
        specs: &[RuleSpec],
        rule_ids: &[String],
    ) -> Result<RuleChange, NetworkError> {
        if specs.is_empty() && rule_ids.is_empty() {
            return Err(NetworkError::MissingParameter("IpPermissions".into()));
        }
        loop {
            let (mut group, revision) = self.resolve_group(selector).await?;
            let mut doomed: Vec<String> = Vec::new();
            for id in rule_ids {
                check_id(NetworkResource::SecurityGroupRule, id)?;
                if !group.rules(direction).iter().any(|r| &r.id == id) {
                    return Err(NetworkError::not_found(NetworkResource::SecurityGroupRule, id.as_str()));
                }
                doomed.push(id.clone());
            }
            let mut unknown = Vec::new();
            for spec in specs {
                let (protocol, from_port, to_port) = normalize_ports(spec)?;
                let peer = match &spec.peer {
                    RulePeerSpec::Cidr(text) => Some(RulePeer::Cidr(parse_rule_cidr(text)?)),
                    RulePeerSpec::GroupId(id) => Some(RulePeer::Group(id.clone())),
                    RulePeerSpec::GroupName(name) if *name == group.name => Some(RulePeer::Group(group.id.clone())),
                    RulePeerSpec::GroupName(name) => {
                        self.group_by_name(&group.vpc_id, name).await?.map(|(g, _)| RulePeer::Group(g.id))
                    }
                };
                let found = peer.and_then(|peer| {
                    group.rules(direction).iter().find(|r| {
                        r.protocol == protocol && r.from_port == from_port && r.to_port == to_port && r.peer == peer
                    })
                });
                match found {
                    Some(rule) => doomed.push(rule.id.clone()),
                    None => unknown.push(spec.clone()),
                }
            }
            if doomed.is_empty() {
                return Err(NetworkError::PermissionNotFound);
            }
            let rules = group.rules_mut(direction);
            let (revoked, kept): (Vec<_>, Vec<_>) = rules.drain(..).partition(|r| doomed.contains(&r.id));
            *rules = kept;
            let key = keys::security_group(&group.id);
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&group)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(RuleChange { group, rules: revoked, unknown });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: &str, from: Option<i32>, to: Option<i32>) -> RuleSpec {
        RuleSpec {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            peer: RulePeerSpec::Cidr("0.0.0.0/0".into()),
            description: None,
        }
    }

    #[test]
    fn ports_are_checked_per_protocol() {
        assert_eq!(normalize_ports(&spec("tcp", Some(80), Some(80))).unwrap(), (IpProtocol::Tcp, Some(80), Some(80)));
        assert_eq!(normalize_ports(&spec("6", Some(-1), Some(-1))).unwrap(), (IpProtocol::Tcp, Some(0), Some(65535)));
        assert_eq!(normalize_ports(&spec("-1", Some(5), Some(9))).unwrap(), (IpProtocol::All, None, None));
        assert_eq!(normalize_ports(&spec("icmp", None, None)).unwrap(), (IpProtocol::Icmp, Some(-1), Some(-1)));
        assert_eq!(normalize_ports(&spec("47", None, None)).unwrap(), (IpProtocol::Other(47), None, None));
        for bad in [spec("tcp", Some(90), Some(80)), spec("udp", Some(0), Some(70000)), spec("tcp", None, Some(1))] {
            assert!(matches!(normalize_ports(&bad), Err(NetworkError::PermissionMalformed(_))), "{bad:?}");
        }
        assert!(matches!(normalize_ports(&spec("smtp", None, None)), Err(NetworkError::InvalidParameterValue(_))));
    }

    #[test]
    fn rules_read_like_ec2_messages() {
        let rule = SecurityGroupRule {
            id: "sgr-1".into(),
            protocol: IpProtocol::Tcp,
            from_port: Some(80),
            to_port: Some(80),
            peer: RulePeer::Cidr("0.0.0.0/0".parse().unwrap()),
            description: None,
        };
        assert_eq!(rule.to_string(), "peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW");
    }
}
