//! Which peers we upload to: tit-for-tat with an optimistic unchoke (BEP 3's "choking").
//!
//! Every [`ROUND`] the interested peers are ranked by what they give us (download rate from
//! them while we leech; while we seed, by the rate we upload to them, so the fastest takers
//! finish and leave first) and the best `slots - 1` are unchoked; one more slot goes to a
//! randomly chosen choked peer, rotated every [`OPTIMISTIC_ROUNDS`] rounds, so a newcomer with
//! nothing to give gets its first pieces and a chance to reciprocate. Newly connected peers
//! are three times as likely to be chosen, as in the mainline client.
//!
//! Between rounds a peer that becomes interested is unchoked at once while slots are free, so a
//! transfer starts without waiting for the next round.

use std::hash::Hash;
use std::time::Duration;

use rand::Rng;

/// Time between two choking rounds.
pub const ROUND: Duration = Duration::from_secs(10);

/// Rounds an optimistic unchoke lasts (30 s).
pub const OPTIMISTIC_ROUNDS: u32 = 3;

/// One peer as the choker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// The peer.
    pub key: K,
    /// It wants our pieces.
    pub interested: bool,
    /// Bytes per second it is ranked by (see the module doc).
    pub rate: u64,
    /// Connected within the last optimistic period.
    pub new: bool,
    /// Ranked before every peer that is not (a pbts peer, when peers without receipts are
    /// served only after them).
    pub preferred: bool,
}

/// The unchoke decisions of one torrent.
#[derive(Debug)]
pub struct Choker<K> {
    slots: usize,
    optimistic: Option<K>,
    round: u32,
}

impl<K: Copy + Eq + Hash> Choker<K> {
    /// A choker with `slots` upload slots (at least one: the optimistic one).
    pub fn new(slots: usize) -> Self {
        Self { slots: slots.max(1), optimistic: None, round: 0 }
    }

    /// Upload slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether a peer that just became interested may be unchoked now, `unchoked` peers being
    /// unchoked already.
    pub fn has_free_slot(&self, unchoked: usize) -> bool {
        unchoked < self.slots
    }

    /// A choking round: the peers to have unchoked from now on (every other peer is choked).
    pub fn round(&mut self, peers: &[Candidate<K>], rng: &mut impl Rng) -> Vec<K> {
        let mut interested: Vec<&Candidate<K>> = peers.iter().filter(|c| c.interested).collect();
        // Preferred first, then fastest; equal ranks keep a stable, arbitrary order.
        interested.sort_by_key(|c| std::cmp::Reverse((c.preferred, c.rate)));
        let regular = self.slots - 1;
        let mut unchoke: Vec<K> = interested.iter().take(regular).map(|c| c.key).collect();

        let still_there = self
            .optimistic
            .is_some_and(|o| interested.iter().any(|c| c.key == o) && !unchoke.contains(&o));
        if self.round.is_multiple_of(OPTIMISTIC_ROUNDS) || !still_there {
            self.optimistic = pick_optimistic(&interested, &unchoke, rng);
        }
        self.round = self.round.wrapping_add(1);
        if let Some(o) = self.optimistic {
            unchoke.push(o);
        }
        // Fewer interested peers than regular slots: the slot is simply unused.
        unchoke
    }
}

/// A random interested peer outside `unchoke`, new peers weighted three to one.
fn pick_optimistic<K: Copy + Eq>(
    interested: &[&Candidate<K>],
    unchoke: &[K],
    rng: &mut impl Rng,
) -> Option<K> {
    let weight = |c: &Candidate<K>| if c.new { 3 } else { 1 };
    let pool: Vec<&Candidate<K>> =
        interested.iter().copied().filter(|c| !unchoke.contains(&c.key)).collect();
    let total: u32 = pool.iter().map(|c| weight(c)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.random_range(0..total);
    for c in pool {
        let w = weight(c);
        if ticket < w {
            return Some(c.key);
        }
        ticket -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn c(key: u32, interested: bool, rate: u64) -> Candidate<u32> {
        Candidate { key, interested, rate, new: false, preferred: false }
    }

    #[test]
    fn the_fastest_interested_peers_and_one_optimistic_are_unchoked() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut ch = Choker::new(4);
        let peers = [
            c(1, true, 100),
            c(2, true, 500),
            c(3, false, 900),
            c(4, true, 300),
            c(5, true, 200),
            c(6, true, 0),
        ];
        let got = ch.round(&peers, &mut rng);
        assert_eq!(got.len(), 4);
        // The three fastest interested peers; 3 is fast but not interested.
        assert_eq!(&got[..3], &[2, 4, 5]);
        // The optimistic one is one of the others that want something.
        assert!([1, 6].contains(&got[3]), "{got:?}");

        // It stays for OPTIMISTIC_ROUNDS rounds, then rotates among the choked.
        let first = got[3];
        for _ in 1..OPTIMISTIC_ROUNDS {
            assert_eq!(ch.round(&peers, &mut rng)[3], first);
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..30 {
            let got = ch.round(&peers, &mut rng);
            assert_eq!(&got[..3], &[2, 4, 5]);
            seen.insert(got[3]);
        }
        assert_eq!(seen, [1, 6].into_iter().collect());
    }

    #[test]
    fn an_optimistic_peer_that_left_or_lost_interest_is_replaced_at_once() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut ch = Choker::new(2);
        let got = ch.round(&[c(1, true, 10), c(2, true, 0)], &mut rng);
        assert_eq!(got, vec![1, 2]);
        // 2 lost interest; 3 arrived: 3 becomes optimistic in the very next round.
        let got = ch.round(&[c(1, true, 10), c(2, false, 0), c(3, true, 0)], &mut rng);
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn few_peers_leave_slots_unused_and_no_peer_is_unchoked_twice() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut ch = Choker::new(4);
        assert_eq!(ch.round(&[c(7, true, 0)], &mut rng), vec![7]);
        assert_eq!(ch.round(&[], &mut rng), Vec::<u32>::new());
        assert_eq!(ch.round(&[c(1, false, 5)], &mut rng), Vec::<u32>::new());
        assert!(ch.has_free_slot(3) && !ch.has_free_slot(4));
        // A zero-slot request still keeps the optimistic slot.
        assert_eq!(Choker::<u32>::new(0).slots(), 1);
    }

    #[test]
    fn new_peers_are_three_times_as_likely_to_be_the_optimistic_one() {
        let mut rng = SmallRng::seed_from_u64(4);
        let interested = [
            Candidate { key: 1u32, interested: true, rate: 0, new: true, preferred: false },
            Candidate { key: 2, interested: true, rate: 0, new: false, preferred: false },
        ];
        let refs: Vec<&Candidate<u32>> = interested.iter().collect();
        let new = (0..4000).filter(|_| pick_optimistic(&refs, &[], &mut rng) == Some(1)).count();
        // Expected 3000 of 4000; six standard deviations (27) either way.
        assert!((2840..3160).contains(&new), "{new}");
    }
}
