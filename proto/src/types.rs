//! Wire identifiers shared by every BitTorrent protocol: the HTTP and UDP tracker protocols and
//! the peer wire.

use core::fmt;

/// A 20-byte BitTorrent v1 info-hash (or the 20-byte truncation of a v2 hash, as BEP 52 trackers
/// receive it). Arbitrary bytes: never text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// A 20-byte peer id chosen by the client. Arbitrary bytes: never text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

/// Lowercase hex of a byte string, written straight into a formatter (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The `Debug` form of every byte-string type of the project: `Name(0123abcd)`, or the first
/// `limit` bytes followed by `…` when there are more (keys and signatures are long, and their
/// start identifies them).
///
/// # Errors
/// The formatter's.
pub fn debug_hex(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    bytes: &[u8],
    limit: usize,
) -> fmt::Result {
    match bytes.get(..limit) {
        Some(head) if bytes.len() > limit => write!(f, "{name}({}…)", Hex(head)),
        _ => write!(f, "{name}({})", Hex(bytes)),
    }
}

macro_rules! hex_debug {
    ($t:ty) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                debug_hex(f, stringify!($t), &self.0, 20)
            }
        }
        impl fmt::Display for $t {
            /// Lowercase hex, 40 characters.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                Hex(&self.0).fmt(f)
            }
        }
        impl $t {
            /// Builds from a slice of exactly 20 bytes; `None` for any other length.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 20]>::try_from(bytes).ok().map(Self)
            }

            /// Parses 40 hex digits (either case); `None` otherwise.
            pub fn from_hex(hex: &str) -> Option<Self> {
                if hex.len() != 40 {
                    return None;
                }
                const_hex::decode_to_array(hex.as_bytes()).ok().map(Self)
            }
        }
    };
}

hex_debug!(InfoHash);
hex_debug!(PeerId);

/// The `event` of an announce (BEP 3, BEP 15, BEP 21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AnnounceEvent {
    /// A regular interval announce (no `event`, or an empty one).
    #[default]
    None,
    /// The first announce of a download.
    Started,
    /// The client is leaving the swarm.
    Stopped,
    /// The download finished (counts a snatch).
    Completed,
    /// BEP 21: a partial seed that has paused; treated as a regular announce.
    Paused,
}

impl AnnounceEvent {
    /// The HTTP query spelling (`None` has no spelling and is omitted).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::Paused => "paused",
        }
    }

    /// The BEP 15 event number (0 none, 1 completed, 2 started, 3 stopped). BEP 15 has no
    /// `paused`; it is sent as none.
    pub fn to_udp(self) -> u32 {
        match self {
            Self::None | Self::Paused => 0,
            Self::Completed => 1,
            Self::Started => 2,
            Self::Stopped => 3,
        }
    }

    /// Parses a BEP 15 event number; `None` for values outside 0..=3.
    pub fn from_udp(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::None,
            1 => Self::Completed,
            2 => Self::Started,
            3 => Self::Stopped,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let ih = InfoHash([0xab; 20]);
        let s = ih.to_string();
        assert_eq!(s, "ab".repeat(20));
        assert_eq!(InfoHash::from_hex(&s), Some(ih));
        assert_eq!(InfoHash::from_hex(&s.to_uppercase()), Some(ih));
        assert_eq!(InfoHash::from_hex("ab"), None);
        assert_eq!(InfoHash::from_hex(&"zz".repeat(20)), None);
    }

    #[test]
    fn udp_event_numbers() {
        for n in 0..4 {
            assert_eq!(AnnounceEvent::from_udp(n).unwrap().to_udp(), n);
        }
        assert_eq!(AnnounceEvent::from_udp(4), None);
        assert_eq!(AnnounceEvent::Paused.to_udp(), 0);
    }
}
