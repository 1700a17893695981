//! Client addresses.

use std::net::IpAddr;

/// Unmaps IPv4-mapped IPv6 addresses (dual-stack sockets report IPv4 clients that way).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ip_unmaps() {
        assert_eq!(
            canonical_ip("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(canonical_ip("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}
