//! What one pbts peer owes us in receipts: the pieces we sent it whole that no receipt has
//! covered yet. The unchoker reads [`Ledger::behind`]; past the slack the peer is choked until
//! its receipts catch up.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The uploader's account of one peer.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Bytes sent of pieces not yet sent whole.
    sent: HashMap<u32, u32>,
    /// Pieces sent whole with no receipt yet; when, and whether we asked for it.
    owed: BTreeMap<u32, (Instant, bool)>,
    /// Receipts from this peer we stored (new ones only).
    pub stored: u64,
    /// It sent a receipt that is not valid: it gets nothing more from us.
    pub bad: bool,
}

impl Ledger {
    /// `len` bytes of `piece` (of `piece_len` bytes) went to the peer; `true` if that made the
    /// piece whole (it is owed from now on).
    pub fn block_sent(&mut self, piece: u32, len: u32, piece_len: u32, now: Instant) -> bool {
        let sent = self.sent.entry(piece).or_insert(0);
        *sent = sent.saturating_add(len);
        if *sent < piece_len {
            return false;
        }
        self.sent.remove(&piece);
        self.owed.insert(piece, (now, false));
        true
    }

    /// A valid receipt for `piece` arrived (new or not): it is no longer owed.
    pub fn receipted(&mut self, piece: u32) {
        self.owed.remove(&piece);
    }

    /// Pieces owed.
    pub fn behind(&self) -> usize {
        self.owed.len()
    }

    /// Owed pieces sent whole more than `after` ago that we have not asked a receipt for yet;
    /// each is returned once.
    pub fn to_ask(&mut self, now: Instant, after: Duration) -> Vec<u32> {
        let mut out = Vec::new();
        for (&piece, (at, asked)) in &mut self.owed {
            if !*asked && now.saturating_duration_since(*at) >= after {
                *asked = true;
                out.push(piece);
            }
        }
        out
    }

    /// Forgets owed pieces sent whole more than `limit` ago: the peer credited them to someone
    /// else (it received the piece twice in endgame) or lost them; they no longer count
    /// against it.
    pub fn expire(&mut self, now: Instant, limit: Duration) {
        self.owed.retain(|_, (at, _)| now.saturating_duration_since(*at) < limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_owed_once_whole_until_receipted() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        assert!(!l.block_sent(3, 16384, 32768, t0));
        assert_eq!(l.behind(), 0);
        assert!(l.block_sent(3, 16384, 32768, t0));
        assert!(l.block_sent(4, 1000, 1000, t0));
        assert_eq!(l.behind(), 2);
        l.receipted(3);
        l.receipted(9);
        assert_eq!(l.behind(), 1);

        let later = t0 + Duration::from_secs(6);
        assert_eq!(l.to_ask(later, Duration::from_secs(5)), [4]);
        assert_eq!(l.to_ask(later, Duration::from_secs(5)), Vec::<u32>::new());
        l.expire(later, Duration::from_secs(10));
        assert_eq!(l.behind(), 1);
        l.expire(t0 + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!(l.behind(), 0);
    }
}
