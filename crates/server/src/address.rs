//! Client addresses as the server's limits count them. One IPv6 client owns a whole /64
//! (it can pick any address in it), so IPv6 counts by /64 everywhere; IPv4 counts by the
//! address for connections and by the /24 for sign-in attempts, where a guesser could
//! otherwise spread over neighbouring addresses.

use std::net::IpAddr;

/// Who a limit counts a request against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address or network (the rest zeroed); IPv4-mapped IPv6 counts as IPv4.
    V4([u8; 4]),
    /// An IPv6 /64.
    V6Prefix([u8; 8]),
}

impl AddressKey {
    /// The key for connections: the IPv4 address, or the IPv6 /64.
    pub fn host(ip: IpAddr) -> Self {
        Self::with_v4_prefix(ip, 32)
    }

    /// The key for sign-in attempts: the IPv4 /24, or the IPv6 /64.
    pub fn network(ip: IpAddr) -> Self {
        Self::with_v4_prefix(ip, 24)
    }

    fn with_v4_prefix(ip: IpAddr, bits: u32) -> Self {
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        if let Some(v4) = v4 {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            return AddressKey::V4((u32::from(v4) & mask).to_be_bytes());
        }
        let IpAddr::V6(v6) = ip else { unreachable!("an IPv4 address returned above") };
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&v6.octets()[..8]);
        AddressKey::V6Prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_and_networks() {
        assert_ne!(AddressKey::host(ip("127.0.0.50")), AddressKey::host(ip("127.0.0.51")));
        assert_eq!(AddressKey::network(ip("127.0.0.50")), AddressKey::network(ip("127.0.0.53")));
        assert_ne!(AddressKey::network(ip("127.0.0.50")), AddressKey::network(ip("127.0.1.50")));
        assert_eq!(AddressKey::host(ip("2001:db8:1:2::1")), AddressKey::host(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(AddressKey::network(ip("2001:db8:1:2::1")), AddressKey::network(ip("2001:db8:1:3::1")));
        assert_eq!(AddressKey::host(ip("::ffff:192.0.2.7")), AddressKey::host(ip("192.0.2.7")));
    }
}
