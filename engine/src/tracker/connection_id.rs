//! BEP 15 connection ids as keyed hashes: stateless, unforgeable without the key, valid for one
//! to two minutes.
//!
//! The id is SipHash-2-4 over (source IP, minute) under a per-process random key. It is bound to
//! the IP, not the port: aquatic_udp_load_test (and some NATs) obtain an id on one socket and use
//! it from others.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use pbts_proto::udp::ConnectionId;

use crate::clock::Uptime;

/// Seconds per validity bucket; an id is accepted in its bucket and the next one.
pub const BUCKET_SECS: u32 = 60;

/// Makes and checks connection ids.
#[derive(Clone)]
pub struct ConnectionValidator {
    key: [u8; 16],
}

impl std::fmt::Debug for ConnectionValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionValidator { key: <redacted> }")
    }
}

impl ConnectionValidator {
    /// A validator with the given secret key.
    pub fn new(key: [u8; 16]) -> Self {
        Self { key }
    }

    fn hash(&self, ip: IpAddr, bucket: u32) -> ConnectionId {
        let mut h = SipHasher24::new_with_key(&self.key);
        match ip {
            IpAddr::V4(ip) => h.write(&ip.octets()),
            IpAddr::V6(ip) => h.write(&ip.octets()),
        }
        h.write_u64(u64::from(bucket));
        ConnectionId(h.finish())
    }

    /// The id for `ip` at `now`.
    pub fn make(&self, ip: IpAddr, now: Uptime) -> ConnectionId {
        self.hash(ip, now.secs() / BUCKET_SECS)
    }

    /// Whether `id` was made for `ip` within the last one to two minutes.
    pub fn check(&self, id: ConnectionId, ip: IpAddr, now: Uptime) -> bool {
        let bucket = now.secs() / BUCKET_SECS;
        id == self.hash(ip, bucket) || (bucket > 0 && id == self.hash(ip, bucket - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_ip_and_expire() {
        let v = ConnectionValidator::new([7; 16]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let t = Uptime(1000);
        let id = v.make(ip, t);
        assert!(v.check(id, ip, t));
        assert!(v.check(id, ip, t.after(BUCKET_SECS)));
        assert!(!v.check(id, ip, t.after(2 * BUCKET_SECS)));
        assert!(!v.check(id, "10.1.2.4".parse().unwrap(), t));
        assert!(!ConnectionValidator::new([8; 16]).check(id, ip, t));
    }
}
