//! The host network data plane for awsvpc tasks: one veth pair per task interface, routed
//! point to point through the host (no bridges), with security groups, VPC isolation and NAT
//! in one nftables `inet` table. Design and ruleset: `crates/net/README.md`.
//!
//! **Architecture Invariant:** this crate only makes the kernel match specs it is given. It
//! allocates nothing durable (IP addresses, public addresses and MACs come from the control
//! plane) and keeps no state that is not in the kernel or the nft table.

mod batch;
mod endpoint;
mod error;
mod interface;
mod lb;
mod netlink;
pub mod netns;
mod network;
mod nft;
mod overlay;
pub mod phases;
mod public;
mod spec;
mod state;
mod vip;

pub use endpoint::{TASK_ENDPOINT, TASK_ENDPOINT_PORT};
pub use error::{AddressError, NetError, NetlinkError, Object};
pub use ipnet::Ipv4Net;
pub use network::Network;
pub use spec::{
    CleanupReport, GATEWAY, HOST_MAC, INTERNET_MTU, InterfaceSpec, InterfaceStatus, LbAddressSpec, NetConfig,
    OverlaySpec, OverlayStatus, Peer, Protocol, RemoteInterface, Rule, SecurityGroupSpec, TASK_LINK, VPC_MTU,
    VXLAN_OVERHEAD, VXLAN_PORT, VpcSpec, VpcStatus,
};
pub use vip::VirtualService;

#[cfg(test)]
mod tests {
    #[test]
    fn network_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::Network>();
    }
}
