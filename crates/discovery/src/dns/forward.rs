//! Relaying questions outside every namespace to the host's resolvers.
//!
//! The query is relayed as received (same id, same flags) and the upstream's answer returned as
//! is, over the transport the client used: a truncated UDP answer makes the client retry over
//! TCP, which is then relayed over TCP.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Where and how questions outside every namespace are sent.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub timeout: Duration,
}

impl Default for Upstreams {
    fn default() -> Upstreams {
        Upstreams { servers: Vec::new(), timeout: Duration::from_secs(2) }
    }
}

impl Upstreams {
    /// The `nameserver` lines of a resolv.conf, on port 53.
    pub fn from_resolv_conf(path: &Path) -> io::Result<Upstreams> {
        let text = std::fs::read_to_string(path)?;
        Ok(Upstreams { servers: parse_resolv_conf(&text), ..Upstreams::default() })
    }

    /// The host's resolvers from `/etc/resolv.conf`; none if it cannot be read.
    pub fn system() -> Upstreams {
        Upstreams::from_resolv_conf(Path::new("/etc/resolv.conf")).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read /etc/resolv.conf; names outside namespaces will not resolve");
            Upstreams::default()
        })
    }

    /// Relays `query` over UDP; `None` if no upstream answered in time.
    pub(crate) async fn udp(&self, query: &[u8], skip: impl Fn(SocketAddr) -> bool) -> Option<Vec<u8>> {
        for &server in self.servers.iter().filter(|s| !skip(**s)) {
            match tokio::time::timeout(self.timeout, udp_exchange(server, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream DNS server failed"),
                Err(_) => tracing::debug!(%server, "upstream DNS server timed out"),
            }
        }
        None
    }

    /// Relays `query` over TCP; `None` if no upstream answered in time.
    pub(crate) async fn tcp(&self, query: &[u8], skip: impl Fn(SocketAddr) -> bool) -> Option<Vec<u8>> {
        for &server in self.servers.iter().filter(|s| !skip(**s)) {
            match tokio::time::timeout(self.timeout, tcp_exchange(server, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream DNS server failed over TCP"),
                Err(_) => tracing::debug!(%server, "upstream DNS server timed out over TCP"),
            }
        }
        None
    }
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A link-local IPv6 resolver carries its interface (`fe80::1%eth0`); not supported.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: IpAddr = if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = UdpSocket::bind((local, 0)).await?;
    // Connected: only datagrams from the upstream reach us.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Same id, and a response: anything else is a stray datagram.
        if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\n";
        let servers = parse_resolv_conf(text);
        assert_eq!(servers, vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
    }
}
