//! Who is on the other end of a request: the TCP peer, unless the peer is a proxy the
//! operator configured as trusted, in which case the address that proxy saw.

use std::net::IpAddr;

/// `HEALTHPLANE_TRUSTED_PROXIES`: addresses and CIDR blocks (`10.0.0.0/8`, `::1`) whose
/// `X-Forwarded-For` is believed. Empty by default: nobody's is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

/// Longest forwarded chain recorded.
const MAX_CHAIN: usize = 512;

impl TrustedProxies {
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry, None),
            };
            let address: IpAddr = address.parse().map_err(|_| {
                format!("HEALTHPLANE_TRUSTED_PROXIES: `{entry}` is not an address or CIDR block")
            })?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| {
                        format!("HEALTHPLANE_TRUSTED_PROXIES: `{entry}` has a bad prefix length")
                    })?,
            };
            blocks.push((address, bits));
        }
        Ok(TrustedProxies(blocks))
    }

    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0
            .iter()
            .any(|(block, bits)| contains(*block, *bits, address))
    }

    /// The client's address and, when the request came through proxies, the forwarded chain
    /// as received (for the record; never used as the address unless the peer is trusted).
    ///
    /// Behind trusted proxies the client is the rightmost `X-Forwarded-For` entry that is not
    /// itself a trusted proxy: entries left of it were written by the client and prove nothing.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> (String, Option<String>) {
        let chain = forwarded_for
            .map(|f| f.chars().take(MAX_CHAIN).collect::<String>())
            .filter(|f| !f.trim().is_empty());
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return (peer.to_string(), chain);
        }
        let mut client = peer;
        if let Some(chain) = &chain {
            for hop in chain.rsplit(',').map(str::trim) {
                match hop.parse::<IpAddr>().map(canonical) {
                    Ok(hop) if self.trusts(hop) => client = hop,
                    Ok(hop) => {
                        client = hop;
                        break;
                    }
                    // Garbage from a hop: stop at the last address we could believe.
                    Err(_) => break,
                }
            }
        }
        (client.to_string(), chain)
    }
}

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn contains(block: IpAddr, bits: u8, address: IpAddr) -> bool {
    match (block, address) {
        (IpAddr::V4(b), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(b) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(b) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::default();
        let (client, chain) = proxies.client(ip("203.0.113.9"), Some("1.2.3.4"));
        assert_eq!(client, "203.0.113.9");
        assert_eq!(chain.as_deref(), Some("1.2.3.4"));
        assert_eq!(
            proxies.client(ip("203.0.113.9"), None),
            ("203.0.113.9".into(), None)
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_first_untrusted_hop_from_the_right() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, ::1").unwrap();
        // The client wrote "6.6.6.6" itself; the ingress (10.0.0.2) appended what it saw.
        let (client, _) = proxies.client(ip("10.0.0.1"), Some("6.6.6.6, 198.51.100.7, 10.0.0.2"));
        assert_eq!(client, "198.51.100.7");
        assert_eq!(proxies.client(ip("::1"), None).0, "::1");
        assert_eq!(proxies.client(ip("10.0.0.1"), Some("junk")).0, "10.0.0.1");
        assert_eq!(
            proxies.client(ip("::ffff:10.1.2.3"), Some("192.0.2.1")).0,
            "192.0.2.1"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_setting_named() {
        assert!(
            TrustedProxies::parse("10.0.0.0/33")
                .unwrap_err()
                .contains("HEALTHPLANE_TRUSTED_PROXIES")
        );
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .trusts(ip("8.8.8.8"))
        );
    }
}
