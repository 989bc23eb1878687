//! Public addresses between hosts: a task's public address lives on the task's host. Its 1:1
//! NAT is only there (the interface's own rules), so the host also *announces* the address on
//! its underlay link (a `/32` there, answered by ARP like any address of the host), and the
//! network beyond delivers it to that host wherever the task runs, as an internet gateway
//! would. Packets for it are DNAT'd in prerouting before routing, so the host's own stack never
//! sees them as its own; only the neighbour answer needs the address. The `announced` set is
//! the record (an element before its address, removed after it), read back after a restart.

use std::net::Ipv4Addr;

use crate::error::{NetError, Object};
use crate::netlink::Socket;
use crate::network::{Network, nl};
use crate::nft::Script;

impl Network {
    /// Announces `public` on the link holding `underlay` (this host's underlay address).
    pub fn announce_public(&self, underlay: Ipv4Addr, public: Ipv4Addr) -> Result<(), NetError> {
        let object = Object::Network(self.table.clone());
        let mut inner = self.lock();
        let link = underlay_link(&mut inner.host, &object, underlay)?;
        if !inner.state.announced.contains(&public) {
            let mut script = Script::new(&self.table);
            script.cmd("add element", format_args!("announced {{ {public} }}"));
            self.nft.apply(&object, &script)?;
            inner.state.announced.insert(public);
        }
        inner.host.replace_address(link, public, 32, false).map_err(nl(&object, format!("announce {public}")))
    }

    /// Stops announcing `public`; nothing to remove is not an error.
    pub fn withdraw_public(&self, underlay: Ipv4Addr, public: Ipv4Addr) -> Result<(), NetError> {
        let object = Object::Network(self.table.clone());
        let mut inner = self.lock();
        let link = underlay_link(&mut inner.host, &object, underlay)?;
        inner.host.delete_address(link, public, 32).map_err(nl(&object, format!("withdraw {public}")))?;
        if inner.state.announced.contains(&public) {
            let mut script = Script::new(&self.table);
            script.delete_element("announced", &public.to_string(), &public.to_string());
            self.nft.apply(&object, &script)?;
            inner.state.announced.remove(&public);
        }
        Ok(())
    }

    /// After a restart: stops announcing every public address but `keep` (those of live tasks).
    pub fn withdraw_publics_except(&self, underlay: Ipv4Addr, keep: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, NetError> {
        let stale: Vec<Ipv4Addr> = self.lock().state.announced.iter().filter(|p| !keep.contains(p)).copied().collect();
        for public in &stale {
            self.withdraw_public(underlay, *public)?;
        }
        Ok(stale)
    }
}

fn underlay_link(host: &mut Socket, object: &Object, underlay: Ipv4Addr) -> Result<i32, NetError> {
    host.link_with_address(underlay).map_err(nl(object, "list addresses"))?.ok_or_else(|| NetError::InvalidSpec {
        object: object.clone(),
        reason: format!("underlay address {underlay} is on no link of this host"),
    })
}
