//! The task endpoint's address: `169.254.170.2`, where Fargate serves a task's metadata and its
//! role credentials on port 80. It is a `/32` on the host namespace's loopback, so one listener
//! of the host's (the agent's) serves every task of the table, on the host side of each task's
//! interface: the task's default route brings the connection to the host, whose stack takes it
//! as its own. Each task's egress chain lets it through before its groups (they do not govern
//! the endpoint, as on AWS) and after anti-spoofing, so the listener can tell the task by the
//! connection's source; `input` admits only TCP port 80 there, so a task reaches no other host
//! service through the address.

use std::net::Ipv4Addr;

use crate::error::{NetError, NetlinkError, Object};
use crate::network::{Network, nl};

/// Where containers find their task's metadata and credentials.
pub const TASK_ENDPOINT: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Its port: 80, as on Fargate (the address is the host's, so the task's own port 80 stays free).
pub const TASK_ENDPOINT_PORT: u16 = 80;

impl Network {
    /// Puts [`TASK_ENDPOINT`] on the host namespace's loopback (idempotent). The caller then
    /// binds its listener to `TASK_ENDPOINT:TASK_ENDPOINT_PORT` in [`Network::host_netns`].
    pub fn ensure_task_endpoint(&self) -> Result<(), NetError> {
        let object = Object::Network(self.table().to_owned());
        let mut socket = self.host_socket(&object)?;
        let lo = socket.link("lo").map_err(nl(&object, "get link lo"))?;
        let no_lo = || NetlinkError { errno: libc::ENODEV, message: Some("no loopback link".into()) };
        let lo = lo.ok_or_else(|| NetError::netlink(&object, "get link lo", no_lo()))?;
        socket
            .replace_address(lo.index, TASK_ENDPOINT, 32, true)
            .map_err(nl(&object, format!("add address {TASK_ENDPOINT}/32 to lo")))
    }
}
