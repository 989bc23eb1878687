//! `netns::replace_address` against the kernel: the address appears on the link inside the
//! namespace (and only there), a second call is a no-op, and a missing link is named.

mod common;

use std::net::{Ipv4Addr, TcpListener};

use common::Netns;
use flotilla_net::{AddressError, Ipv4Net, netns};

#[test]
fn an_address_is_added_inside_the_namespace_once() {
    let ns = Netns::new("addr").unwrap();
    let addr = Ipv4Net::new(Ipv4Addr::new(169, 254, 170, 2), 32).unwrap();
    netns::replace_address(&ns.path, "lo", addr).unwrap();
    netns::replace_address(&ns.path, "lo", addr).unwrap();
    let shown = ns.ip(&["-4", "-o", "addr", "show", "dev", "lo"]).unwrap();
    assert_eq!(shown.matches("169.254.170.2/32").count(), 1, "{shown}");
    // Usable there: a listener binds to it inside the namespace.
    netns::run_in(&ns.path, || TcpListener::bind((Ipv4Addr::new(169, 254, 170, 2), 0))).unwrap().unwrap();
    // And nowhere else: this process's namespace does not have it.
    assert!(TcpListener::bind((Ipv4Addr::new(169, 254, 170, 2), 0)).is_err());

    let err = netns::replace_address(&ns.path, "nope0", addr).unwrap_err();
    assert!(matches!(&err, AddressError::NoLink { link, .. } if link == "nope0"), "{err}");
}
