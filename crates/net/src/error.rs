use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// What an operation was acting on, carried by every error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// The table and base chains (`Network::new`, `cleanup`).
    Network(String),
    Vpc(String),
    SecurityGroup(String),
    Interface(String),
    /// A load balancer's address in a VPC.
    LbAddress(Ipv4Addr),
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Network(table) => write!(f, "network table {table}"),
            Object::Vpc(id) => write!(f, "VPC {id}"),
            Object::SecurityGroup(id) => write!(f, "security group {id}"),
            Object::Interface(id) => write!(f, "interface {id}"),
            Object::LbAddress(ip) => write!(f, "load balancer address {ip}"),
        }
    }
}

/// A kernel answer to a netlink request (`errno` plus the extended-ACK text, when given).
#[derive(Debug, Clone)]
pub struct NetlinkError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NetlinkError {
    pub(crate) fn from_io(err: io::Error) -> Self {
        NetlinkError { errno: err.raw_os_error().unwrap_or(libc::EIO), message: None }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid id {id:?}: ids are 1 to 64 characters of [A-Za-z0-9-]")]
    InvalidId { id: String },
    #[error("invalid nft table name {name:?}: 1 to 32 characters of [A-Za-z0-9_], starting with a letter")]
    InvalidTable { name: String },
    #[error("{object}: {reason}")]
    InvalidSpec { object: Object, reason: String },
    #[error("{object}: netlink {op}")]
    Netlink {
        object: Object,
        op: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{object}: nft refused the change: {stderr}")]
    Nft { object: Object, stderr: String },
    #[error("{object}: nft printed a listing that is not the expected JSON")]
    NftListing {
        object: Object,
        #[source]
        source: serde_json::Error,
    },
    #[error("{object}: running {command}")]
    Spawn {
        object: Object,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{object}: entering network namespace {path}")]
    Netns {
        object: Object,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{object}: writing {path}")]
    Sysctl {
        object: Object,
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("VPC {id} is not known here (ensure_vpc first)")]
    UnknownVpc { id: String },
    #[error("security group {id} is not known here (ensure_security_group first)")]
    UnknownSecurityGroup { id: String },
    #[error("VPC {id} already exists with CIDR {existing}, not {requested}")]
    VpcCidrChanged { id: String, existing: Ipv4Net, requested: Ipv4Net },
    #[error("VPC {id} CIDR {cidr} overlaps VPC {other} ({other_cidr})")]
    VpcOverlap { id: String, cidr: Ipv4Net, other: String, other_cidr: Ipv4Net },
    #[error("VPC {id} still has interface {interface}")]
    VpcInUse { id: String, interface: String },
    #[error("security group {id} is still used by interface {interface}")]
    SecurityGroupInUse { id: String, interface: String },
    #[error("security group {id} is still referenced by the rules of security group {by}")]
    SecurityGroupReferenced { id: String, by: String },
    #[error("security group {id} belongs to VPC {existing}, not {requested}")]
    SecurityGroupVpc { id: String, existing: String, requested: String },
    #[error("interface {id} exists with {field} {existing}; an interface keeps it for life")]
    InterfaceChanged { id: String, field: &'static str, existing: String },
    #[error("interface {id} would take address {ip}, which interface {other} has")]
    AddressInUse { id: String, ip: Ipv4Addr, other: String },
    #[error("host link {name} exists but does not belong to interface {id} (alias {alias:?})")]
    NameClash { id: String, name: String, alias: Option<String> },
}

/// Why [`crate::netns::replace_address`] failed; each names the namespace it acted in.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("entering network namespace {}", netns.display())]
    Netns {
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening a netlink socket in network namespace {}", netns.display())]
    Socket {
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no link {link} in network namespace {}", netns.display())]
    NoLink { netns: PathBuf, link: String },
    #[error("netlink {op} {link} in network namespace {}", netns.display())]
    Netlink {
        netns: PathBuf,
        link: String,
        op: &'static str,
        #[source]
        source: NetlinkError,
    },
}

impl NetError {
    pub(crate) fn netlink(object: &Object, op: impl Into<String>, source: NetlinkError) -> Self {
        NetError::Netlink { object: object.clone(), op: op.into(), source }
    }
}
