//! Who the caller is, network-wise: the TCP peer, or — when the peer is one of the operator's
//! proxies (`TRUSTED_PROXIES`) — the right-most `X-Forwarded-For` hop that is not one of them
//! (hops to its left were written by the client and prove nothing). IPv6 addresses count per
//! /64: one customer usually holds a whole /64, so per-address limits apply to it as one.

use std::net::IpAddr;

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length above {max}"))?,
        };
        Ok(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `TRUSTED_PROXIES`: comma-separated CIDR blocks.
pub fn parse_trusted(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// The caller's address key for limits and logs.
pub fn client_key(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> String {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return key(peer);
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return key(ip),
            // Garbage where an address belongs: the last hop we could trust is the caller.
            Err(_) => break,
        }
    }
    key(client)
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_caller_is_the_right_most_untrusted_hop() {
        let trusted = parse_trusted("10.0.0.0/8, 192.168.1.1").unwrap();
        // Not behind a trusted proxy: the peer, whatever the header says.
        assert_eq!(
            client_key(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            "203.0.113.9"
        );
        // Behind the proxy: the right-most hop that is not a proxy; a forged left part is ignored.
        assert_eq!(
            client_key(
                ip("10.1.2.3"),
                Some("6.6.6.6, 198.51.100.7, 192.168.1.1"),
                &trusted
            ),
            "198.51.100.7"
        );
        // Only proxies in the header: the left-most proxy is the caller.
        assert_eq!(
            client_key(ip("10.1.2.3"), Some("10.9.9.9"), &trusted),
            "10.9.9.9"
        );
        assert_eq!(client_key(ip("10.1.2.3"), None, &trusted), "10.1.2.3");
        assert_eq!(
            client_key(ip("10.1.2.3"), Some("garbage, 10.0.0.7"), &trusted),
            "10.0.0.7"
        );
        // Without TRUSTED_PROXIES the header is never read.
        assert_eq!(client_key(ip("10.1.2.3"), Some("1.2.3.4"), &[]), "10.1.2.3");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), None, &[]),
            client_key(ip("2001:db8:1:2:bbbb::9"), None, &[])
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1"), None, &[]),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1"), None, &[]),
            client_key(ip("2001:db8:1:2::1"), None, &[])
        );
        assert_eq!(
            client_key(ip("::ffff:198.51.100.7"), None, &[]),
            "198.51.100.7"
        );
        let trusted = parse_trusted("fd00::/8").unwrap();
        assert!(trusted[0].contains(ip("fd12::1")));
        assert!(!trusted[0].contains(ip("fe80::1")));
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.example").is_err());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }
}
