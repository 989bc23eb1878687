//! Public addresses between hosts: a task's public address lives on the task's host. Its 1:1
//! NAT is only there (the interface's own rules), so the host also *announces* the address on
//! its underlay link (a `/32` there, answered by ARP like any address of the host), and the
//! network beyond delivers it to that host wherever the task runs, as an internet gateway
//! would. Packets for it are DNAT'd in prerouting before routing, so the host's own stack never
//! sees them as its own; only the neighbour answer needs the address.

use std::net::Ipv4Addr;

use crate::error::{NetError, Object};
use crate::network::{Network, nl};

impl Network {
    /// Announces `public` on the link holding `underlay` (this host's underlay address).
    pub fn announce_public(&self, underlay: Ipv4Addr, public: Ipv4Addr) -> Result<(), NetError> {
        let object = Object::Network(self.table.clone());
        let mut inner = self.lock();
        let link = underlay_link(&mut inner.host, &object, underlay)?;
        inner.host.replace_address(link, public, 32, false).map_err(nl(&object, format!("announce {public}")))
    }

    /// Stops announcing `public`; nothing to remove is not an error.
    pub fn withdraw_public(&self, underlay: Ipv4Addr, public: Ipv4Addr) -> Result<(), NetError> {
        let object = Object::Network(self.table.clone());
        let mut inner = self.lock();
        let link = underlay_link(&mut inner.host, &object, underlay)?;
        inner.host.delete_address(link, public, 32).map_err(nl(&object, format!("withdraw {public}")))?;
        Ok(())
    }
}

fn underlay_link(host: &mut crate::netlink::Socket, object: &Object, underlay: Ipv4Addr) -> Result<i32, NetError> {
    host.link_with_address(underlay).map_err(nl(object, "list addresses"))?.ok_or_else(|| NetError::InvalidSpec {
        object: object.clone(),
        reason: format!("underlay address {underlay} is on no link of this host"),
    })
}
