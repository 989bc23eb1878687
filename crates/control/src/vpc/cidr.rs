//! IPv4 CIDR blocks: parsing, containment and overlap, and addressing inside a block. The
//! arithmetic is `ipnet`'s; this type adds the strict parsing EC2 does and the serde form the
//! store keeps.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 block such as `10.0.0.0/16`, always in canonical form (no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr(Ipv4Net);

/// Why text is not a CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not an IPv4 CIDR block such as 10.0.0.0/16")]
    Malformed(String),
    #[error("'{text}' has host bits set; the block is {canonical}")]
    HostBitsSet { text: String, canonical: Ipv4Cidr },
}

impl Ipv4Cidr {
    /// The block of `prefix` bits containing `addr`.
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let net = Ipv4Net::new(addr, prefix.min(32)).expect("prefixes up to 32 are valid");
        Ipv4Cidr(net.trunc())
    }

    pub fn network(self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn prefix(self) -> u8 {
        self.0.prefix_len()
    }

    /// Number of addresses in the block.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix()))
    }

    /// The last address of the block (its broadcast address).
    pub fn last(self) -> Ipv4Addr {
        self.0.broadcast()
    }

    /// The address `offset` places into the block, if the block is that large.
    pub fn nth(self, offset: u64) -> Option<Ipv4Addr> {
        // Below `size`, the offset fits in 32 bits and the sum cannot pass the broadcast address.
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.network()) + offset as u32))
    }

    /// How far into the block `addr` is, if it is inside.
    pub fn offset_of(self, addr: Ipv4Addr) -> Option<u64> {
        self.contains_addr(addr).then(|| u64::from(u32::from(addr) - u32::from(self.network())))
    }

    pub fn contains_addr(self, addr: Ipv4Addr) -> bool {
        self.0.contains(&addr)
    }

    /// Whether `other` lies entirely inside this block.
    pub fn contains(self, other: Ipv4Cidr) -> bool {
        self.0.contains(&other.0)
    }

    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Ipv4Cidr, CidrError> {
        let malformed = || CidrError::Malformed(text.to_owned());
        let (addr, prefix) = text.split_once('/').ok_or_else(malformed)?;
        // Strict dotted quads and a plain decimal prefix, as EC2 accepts: std's address parser
        // refuses leading zeros and short forms.
        let addr: Ipv4Addr = addr.parse().map_err(|_| malformed())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let prefix: u8 = prefix.parse().map_err(|_| malformed())?;
        if prefix > 32 {
            return Err(malformed());
        }
        let cidr = Ipv4Cidr::containing(addr, prefix);
        if cidr.network() != addr {
            return Err(CidrError::HostBitsSet { text: text.to_owned(), canonical: cidr });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix())
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ipv4Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_canonical_blocks_only() {
        assert_eq!(cidr("10.0.0.0/16").to_string(), "10.0.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").size(), 1 << 32);
        assert!(matches!("10.0.0.1/16".parse::<Ipv4Cidr>(), Err(CidrError::HostBitsSet { .. })));
        for bad in
            ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "10.0.0.0/-1", "10.0.0.0/", "x/8", "010.0.0.0/8", "10.0.0.0/008"]
        {
            assert!(matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn containment_and_overlap() {
        let vpc = cidr("10.0.0.0/16");
        assert!(vpc.contains(cidr("10.0.1.0/24")));
        assert!(!vpc.contains(cidr("10.1.0.0/24")));
        assert!(!vpc.contains(cidr("10.0.0.0/8")));
        assert!(vpc.overlaps(cidr("10.0.0.0/8")));
        assert!(!cidr("10.0.0.0/24").overlaps(cidr("10.0.1.0/24")));
    }

    #[test]
    fn addressing() {
        let s = cidr("10.0.1.0/24");
        assert_eq!(s.nth(1), Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(s.nth(256), None);
        assert_eq!(s.last(), Ipv4Addr::new(10, 0, 1, 255));
        assert_eq!(s.offset_of(Ipv4Addr::new(10, 0, 1, 23)), Some(23));
        assert_eq!(s.offset_of(Ipv4Addr::new(10, 0, 2, 23)), None);
    }
}
