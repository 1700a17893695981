//! Swarm snapshots: every swarm written to one file on a graceful stop and read back at the next
//! start, so a restart (an upgrade) neither empties the swarms nor loses each peer's accounting
//! baseline (the counters its next announce is measured against).
//!
//! # File
//!
//! ```text
//! offset  size  field
//!      0     8  magic "PBTSSWRM"
//!      8     4  format version, u32 LE (VERSION)
//!     12     4  CRC-32 of the payload, u32 LE
//!     16     8  payload length, u64 LE
//!     24     8  zero
//!     32     …  payload: an rkyv archive of `Image`
//! ```
//!
//! The payload holds the writer's instance id, the Unix time it was written, the swarms, and
//! their peers in two flat arrays (IPv4, IPv6), each swarm followed by its peers in order. A
//! peer keeps its address, peer id, seeder and snatched flags, its owner, its baselines and
//! the seconds it had left before expiring.
//!
//! Writing goes to `<file>.tmp`, is fsynced, renamed over the file, and the directory fsynced:
//! a crash while writing leaves the previous file or none, never half of one.
//!
//! Reading checks, before anything enters the table: the magic, the version, the length
//! (bounded by [`MAX_BYTES`]), the checksum, rkyv's structural validation, the instance id,
//! the age (a snapshot older than the peer timeout holds only expired peers), and that the
//! swarms' peer counts add up. Peers whose time ran out while the tracker was down, duplicate
//! addresses and owners that no longer exist are skipped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use pbts_proto::{InfoHash, PeerId};
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

use super::{PeerInfo, PeerMap, SwarmTable, UserId};
use crate::clock::Uptime;

/// File name inside the data directory.
pub const FILE_NAME: &str = "swarms.snapshot";
/// The first 8 bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"PBTSSWRM";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// Header bytes before the payload.
const HEADER: usize = 32;
/// Largest payload read or written (rkyv's default 32-bit relative pointers stay well inside
/// it); about 35 million peers.
pub const MAX_BYTES: u64 = 2 << 30;
/// A snapshot stamped later than now by more than this was not written by this clock.
const FUTURE_SLACK_SECS: u64 = 60;

#[derive(Archive, Serialize)]
struct Image {
    instance_id: String,
    written_at: u64,
    swarms: Vec<SwarmRecord>,
    v4: Vec<PeerRecord<[u8; 4]>>,
    v6: Vec<PeerRecord<[u8; 16]>>,
}

#[derive(Archive, Serialize, Clone)]
struct SwarmRecord {
    info_hash: [u8; 20],
    snatches: u32,
    durable: bool,
    /// Its peers in `Image::v4` and `Image::v6`, following the previous swarm's.
    v4: u32,
    v6: u32,
}

#[derive(Archive, Serialize)]
struct PeerRecord<A> {
    ip: A,
    port: u16,
    peer_id: [u8; 20],
    seeder: bool,
    snatched: bool,
    /// Seconds it had left before expiring, when written.
    remaining: u32,
    user: Option<UserId>,
    last_uploaded: u64,
    last_downloaded: u64,
}

/// Why a snapshot was not written or not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with [`MAGIC`].
    #[error("not a pbts swarm snapshot (no PBTSSWRM header)")]
    NotASnapshot,
    /// Written by a build with another format.
    #[error("format version {found}; this pbts reads version {VERSION}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Larger than [`MAX_BYTES`].
    #[error("{0} bytes of payload, more than the {MAX_BYTES} a snapshot may hold")]
    TooLarge(u64),
    /// Shorter or longer than its header says.
    #[error(
        "truncated or padded: the header says {expected} bytes of payload, the file holds {found}"
    )]
    Length {
        /// Payload bytes the header announces.
        expected: u64,
        /// Payload bytes present.
        found: u64,
    },
    /// The payload's CRC-32 differs from the header's.
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    /// The archive does not validate, or its counts do not add up.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Written by a tracker with another database.
    #[error("written by another tracker instance ({found}; this one is {expected})")]
    OtherInstance {
        /// The file's instance id.
        found: String,
        /// Ours.
        expected: String,
    },
    /// Stamped in the future.
    #[error("written {0} s in the future (the clock went back?)")]
    Future(u64),
    /// Older than the peer timeout: every peer in it has expired.
    #[error(
        "written {age} s ago, beyond the peer timeout of {timeout} s: every peer in it has expired"
    )]
    Stale {
        /// Seconds since it was written.
        age: u64,
        /// The configured peer timeout.
        timeout: u32,
    },
}

impl SnapshotError {
    /// Whether the file is unusable as a snapshot (kept aside for inspection), as opposed to
    /// merely stale or unreadable for now.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io(_) | Self::Stale { .. })
    }
}

/// What a write or a load did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Swarms written or restored.
    pub torrents: usize,
    /// Peers written or restored.
    pub peers: usize,
    /// Peers left out: expired, duplicate, or owned by an account that no longer exists.
    pub skipped: usize,
    /// Bytes of payload.
    pub bytes: u64,
    /// Seconds between writing and loading (0 for a write).
    pub age_secs: u64,
}

/// Where a snapshot lives in `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

fn peer_record<A>(addr: A, port: u16, p: &PeerInfo, now: Uptime) -> Option<PeerRecord<A>> {
    let remaining = p.valid_until.secs().checked_sub(now.secs()).filter(|&r| r > 0)?;
    Some(PeerRecord {
        ip: addr,
        port,
        peer_id: p.peer_id.0,
        seeder: p.seeder,
        snatched: p.snatched,
        remaining,
        user: super::user_id(p.user),
        last_uploaded: p.last_uploaded,
        last_downloaded: p.last_downloaded,
    })
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

impl SwarmTable {
    fn image(&self, instance_id: &str, now: Uptime, unix_now: u64) -> Image {
        let mut image = Image {
            instance_id: instance_id.to_owned(),
            written_at: unix_now,
            swarms: Vec::with_capacity(self.swarms.len()),
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for entry in self.swarms.iter() {
            let swarm = entry.value();
            let (v4_before, v6_before) = (image.v4.len(), image.v6.len());
            for (&(ip, port), p) in swarm.v4.addrs.iter().zip(&swarm.v4.info) {
                image.v4.extend(peer_record(ip.octets(), port, p, now));
            }
            if let Some(v6) = &swarm.v6 {
                for (&(ip, port), p) in v6.addrs.iter().zip(&v6.info) {
                    image.v6.extend(peer_record(ip.octets(), port, p, now));
                }
            }
            let (v4, v6) = (image.v4.len() - v4_before, image.v6.len() - v6_before);
            if v4 + v6 == 0 && swarm.snatches == 0 {
                continue;
            }
            image.swarms.push(SwarmRecord {
                info_hash: entry.key().0,
                snatches: swarm.snatches,
                durable: swarm.durable,
                // A swarm holds fewer than 2^32 peers: its counters are u32.
                v4: u32::try_from(v4).unwrap_or(u32::MAX),
                v6: u32::try_from(v6).unwrap_or(u32::MAX),
            });
        }
        image
    }

    /// Writes every swarm to `path` atomically (see the module docs). `now` is the tracker's
    /// clock, `unix_now` the wall clock the next start compares with.
    ///
    /// # Errors
    /// I/O, or a table too large for one snapshot ([`SnapshotError::TooLarge`]).
    pub fn write_snapshot(
        &self,
        path: &Path,
        instance_id: &str,
        now: Uptime,
        unix_now: u64,
    ) -> Result<SnapshotStats, SnapshotError> {
        let image = self.image(instance_id, now, unix_now);
        let len = write_file(path, &image)?;
        Ok(SnapshotStats {
            torrents: image.swarms.len(),
            peers: image.v4.len() + image.v6.len(),
            skipped: 0,
            bytes: len,
            age_secs: 0,
        })
    }

    /// Loads the snapshot at `path` into the table, if there is one (`Ok(None)`: no file).
    /// `restore_owner(user)` is called for each restored peer that has an owner: `false` (no
    /// such account) skips the peer.
    ///
    /// Nothing enters the table unless the whole file passes its checks (module docs). The
    /// file is left where it is: the caller removes it once loaded, so a crash later cannot
    /// load the same baselines twice.
    ///
    /// # Errors
    /// See [`SnapshotError`]; [`SnapshotError::is_refusal`] tells a bad file from a stale
    /// one or an I/O error.
    pub fn load_snapshot(
        &self,
        path: &Path,
        at: &Restore<'_>,
        restore_owner: impl FnMut(UserId) -> bool,
    ) -> Result<Option<SnapshotStats>, SnapshotError> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut header = [0u8; HEADER];
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(SnapshotError::NotASnapshot);
            }
            Err(e) => return Err(e.into()),
        }
        let on_disk = file.metadata()?.len().saturating_sub(HEADER as u64);
        let (crc, len) = check_header(&header, on_disk)?;
        let mut payload = AlignedVec::<16>::with_capacity(len);
        payload.resize(len, 0);
        file.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Err(SnapshotError::Checksum);
        }
        self.restore(&payload, at, restore_owner).map(Some)
    }

    /// [`SwarmTable::load_snapshot`] from the file's bytes.
    ///
    /// # Errors
    /// As [`SwarmTable::load_snapshot`].
    pub fn load_snapshot_bytes(
        &self,
        bytes: &[u8],
        at: &Restore<'_>,
        restore_owner: impl FnMut(UserId) -> bool,
    ) -> Result<SnapshotStats, SnapshotError> {
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER>() else {
            return Err(SnapshotError::NotASnapshot);
        };
        let (crc, _) = check_header(header, rest.len() as u64)?;
        let mut payload = AlignedVec::<16>::with_capacity(rest.len());
        payload.extend_from_slice(rest);
        if crc32fast::hash(&payload) != crc {
            return Err(SnapshotError::Checksum);
        }
        self.restore(&payload, at, restore_owner)
    }

    /// The checks past the header, then the peers into the table.
    fn restore(
        &self,
        payload: &[u8],
        at: &Restore<'_>,
        mut restore_owner: impl FnMut(UserId) -> bool,
    ) -> Result<SnapshotStats, SnapshotError> {
        let image = rkyv::access::<ArchivedImage, RkyvError>(payload)
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if image.instance_id.as_str() != at.instance_id {
            return Err(SnapshotError::OtherInstance {
                found: image.instance_id.as_str().to_owned(),
                expected: at.instance_id.to_owned(),
            });
        }
        let written_at = image.written_at.to_native();
        if written_at > at.unix_now.saturating_add(FUTURE_SLACK_SECS) {
            return Err(SnapshotError::Future(written_at - at.unix_now));
        }
        let age = at.unix_now.saturating_sub(written_at);
        if age >= u64::from(at.peer_timeout) {
            return Err(SnapshotError::Stale { age, timeout: at.peer_timeout });
        }
        let claimed = |family: &str, counts: u64, len: usize| {
            if counts == len as u64 {
                Ok(())
            } else {
                Err(SnapshotError::Malformed(format!(
                    "the swarms hold {counts} {family} peers, the file {len}"
                )))
            }
        };
        let sum = |f: fn(&ArchivedSwarmRecord) -> u32| {
            image.swarms.iter().map(|s| u64::from(f(s))).sum::<u64>()
        };
        claimed("IPv4", sum(|s| s.v4.to_native()), image.v4.len())?;
        claimed("IPv6", sum(|s| s.v6.to_native()), image.v6.len())?;
        // We write each swarm once: a torrent twice is a made-up file, refused before anything
        // is restored (merging would double its counts).
        let mut seen = std::collections::HashSet::with_capacity(image.swarms.len());
        if let Some(twice) = image.swarms.iter().find(|s| !seen.insert(s.info_hash)) {
            return Err(SnapshotError::Malformed(format!(
                "torrent {} appears twice",
                const_hex::encode(twice.info_hash)
            )));
        }

        // `age < peer_timeout <= u32::MAX`.
        let age32 = u32::try_from(age).unwrap_or(u32::MAX);
        let now = at.now;
        let mut stats =
            SnapshotStats { bytes: payload.len() as u64, age_secs: age, ..Default::default() };
        let (mut v4_at, mut v6_at) = (0usize, 0usize);
        for rec in image.swarms.iter() {
            let (n4, n6) = (rec.v4.to_native() as usize, rec.v6.to_native() as usize);
            let v4 = &image.v4[v4_at..v4_at + n4];
            let v6 = &image.v6[v6_at..v6_at + n6];
            (v4_at, v6_at) = (v4_at + n4, v6_at + n6);
            let info_hash = InfoHash(rec.info_hash);
            let mut entry = self.swarms.entry(info_hash).or_default();
            let swarm = &mut *entry;
            let mut restored = 0usize;
            for p in v4 {
                let ip = Ipv4Addr::from(p.ip);
                restored +=
                    usize::from(restore(&mut swarm.v4, ip, p, now, age32, &mut restore_owner));
            }
            if !v6.is_empty() {
                let map = swarm.v6.get_or_insert_with(Box::default);
                for p in v6 {
                    let ip = Ipv6Addr::from(p.ip);
                    restored += usize::from(restore(map, ip, p, now, age32, &mut restore_owner));
                }
                if map.len() == 0 {
                    swarm.v6 = None;
                }
            }
            let (s4, l4) = seeders_leechers(&swarm.v4);
            let (s6, l6) = swarm.v6.as_deref().map_or((0, 0), seeders_leechers);
            swarm.seeders = u32::try_from(s4 + s6).unwrap_or(u32::MAX);
            swarm.leechers = u32::try_from(l4 + l6).unwrap_or(u32::MAX);
            // A registered torrent's count comes from the database (it is durable and was
            // flushed before the snapshot); otherwise the snapshot is all there is.
            if !swarm.durable {
                swarm.snatches = rec.snatches.to_native();
            }
            stats.peers += restored;
            stats.skipped += n4 + n6 - restored;
            let empty = swarm.is_empty() && swarm.snatches == 0 && !swarm.durable;
            drop(entry);
            if empty {
                self.swarms.remove_if(&info_hash, |_, s| s.is_empty());
            } else {
                stats.torrents += 1;
            }
        }
        Ok(stats)
    }
}

/// When and for whom a snapshot is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Restore<'a> {
    /// This tracker's instance id (the database's): a snapshot of another is refused.
    pub instance_id: &'a str,
    /// The tracker's clock now.
    pub now: Uptime,
    /// The wall clock now, Unix seconds.
    pub unix_now: u64,
    /// The configured peer timeout: an older snapshot holds only expired peers.
    pub peer_timeout: u32,
}

fn seeders_leechers<I: Copy + Eq + std::hash::Hash>(m: &PeerMap<I>) -> (usize, usize) {
    let seeders = m.info.iter().filter(|p| p.seeder).count();
    (seeders, m.len() - seeders)
}

/// One peer from the file into `map`; false if it was skipped.
fn restore<I: Copy + Eq + std::hash::Hash, A>(
    map: &mut PeerMap<I>,
    ip: I,
    p: &ArchivedPeerRecord<A>,
    now: Uptime,
    age: u32,
    restore_owner: &mut impl FnMut(UserId) -> bool,
) -> bool
where
    A: Archive,
{
    let port = p.port.to_native();
    let Some(left) = p.remaining.to_native().checked_sub(age).filter(|&l| l > 0) else {
        return false;
    };
    if map.find(ip, port).is_some() {
        return false;
    }
    let user = super::owner(p.user.as_ref().map(|u| u.to_native()));
    if let Some(u) = user
        && !restore_owner(u.get())
    {
        return false;
    }
    map.push(
        (ip, port),
        PeerInfo {
            peer_id: PeerId(p.peer_id),
            seeder: p.seeder,
            snatched: p.snatched,
            valid_until: now.after(left),
            user,
            last_uploaded: p.last_uploaded.to_native(),
            last_downloaded: p.last_downloaded.to_native(),
        },
    );
    true
}

/// The header for `payload`.
fn header_for(payload: &[u8]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header
}

/// The payload of `image`.
fn encode(image: &Image) -> Result<AlignedVec<16>, SnapshotError> {
    let payload = rkyv::to_bytes::<RkyvError>(image)
        .map_err(|e| SnapshotError::Malformed(format!("serializing: {e}")))?;
    let len = payload.len() as u64;
    if len > MAX_BYTES {
        return Err(SnapshotError::TooLarge(len));
    }
    Ok(payload)
}

/// Writes `image` to `path` atomically; the payload's length.
fn write_file(path: &Path, image: &Image) -> Result<u64, SnapshotError> {
    let payload = encode(image)?;
    let len = payload.len() as u64;
    let header = header_for(&payload);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(&payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(path)?;
    Ok(len)
}

/// The header's checks against the payload bytes present; its CRC and payload length.
fn check_header(header: &[u8; HEADER], present: u64) -> Result<(u32, usize), SnapshotError> {
    if header[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = word(8);
    if version != VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[16..24]);
    let expected = u64::from_le_bytes(len);
    if expected > MAX_BYTES {
        return Err(SnapshotError::TooLarge(expected));
    }
    if present != expected {
        return Err(SnapshotError::Length { expected, found: present });
    }
    // `expected <= MAX_BYTES`, which fits a usize on the 64-bit targets pbts runs on.
    Ok((word(12), usize::try_from(expected).map_err(|_| SnapshotError::TooLarge(expected))?))
}

/// The fuzz target's body (`pbts_engine::fuzzing::swarm_snapshot`): `data` as a whole file,
/// then as a payload behind a header made valid for it (so the fuzzer gets past the checksum
/// to rkyv's validation and the restore). Whatever loads must be consistent, and must write
/// back and load again to the same table.
#[doc(hidden)]
pub fn harness(data: &[u8]) {
    let at = Restore { instance_id: "fuzz", now: Uptime(0), unix_now: 1_000, peer_timeout: 3600 };
    let mut framed = header_for(data).to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        let table = SwarmTable::new();
        match table.load_snapshot_bytes(bytes, &at, |u| u % 2 == 0) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(stats) => {
                let t = table.totals();
                assert_eq!(t.peers_v4 + t.peers_v6, stats.peers);
                assert_eq!(t.seeders + t.leechers, stats.peers);
                assert_eq!(t.torrents, stats.torrents);
                let image = table.image("fuzz", Uptime(0), 1_000);
                let payload = encode(&image).expect("a restored table encodes");
                let mut again = header_for(&payload).to_vec();
                again.extend_from_slice(&payload);
                let copy = SwarmTable::new();
                let stats2 = copy.load_snapshot_bytes(&again, &at, |_| true).expect("reloads");
                assert_eq!(copy.totals(), t);
                assert_eq!(stats2.peers, stats.peers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AnnounceInput, PeerAnnounce, SelectedPeers};
    use super::*;
    use pbts_proto::AnnounceEvent;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashSet;

    const INSTANCE: &str = "0123456789abcdef0123456789abcdef";
    /// Written at Unix second 1000, tracker clock 10.
    const WRITTEN: u64 = 1000;

    fn announce(
        table: &SwarmTable,
        ih: u8,
        ip: &str,
        port: u16,
        left: u64,
        user: Option<UserId>,
        uploaded: u64,
    ) -> (super::super::AnnounceOutcome, SelectedPeers) {
        let input = AnnounceInput {
            peer: PeerAnnounce {
                info_hash: InfoHash([ih; 20]),
                peer_id: PeerId([port as u8; 20]),
                ip: ip.parse().unwrap(),
                port,
                event: AnnounceEvent::None,
                left: Some(left),
                uploaded,
                downloaded: 0,
                both_families: true,
                peer_ids: false,
            },
            numwant: 50,
            now: Uptime(10),
            valid_until: Uptime(100),
            user,
            durable_snatches: false,
            admit_new: true,
            max_peers_per_ip: 0,
        };
        let mut out = SelectedPeers::default();
        let o = table.announce(&input, &mut SmallRng::seed_from_u64(1), &mut out);
        (o, out)
    }

    /// Torrent 1: three IPv4 peers (users 1, 2 and none; one seeder) and an IPv6 leecher of
    /// user 1; torrent 2: one peer of user 3 and a snatch.
    fn populated() -> SwarmTable {
        let t = SwarmTable::new();
        announce(&t, 1, "10.0.0.1", 1001, 0, Some(1), 700);
        announce(&t, 1, "10.0.0.2", 1002, 50, Some(2), 0);
        announce(&t, 1, "10.0.0.3", 1003, 50, None, 0);
        announce(&t, 1, "2001:db8::1", 1004, 50, Some(1), 0);
        announce(&t, 2, "10.0.0.9", 1009, 50, Some(3), 0);
        announce(&t, 2, "10.0.0.9", 1009, 0, Some(3), 0); // completes: a snatch
        t
    }

    fn at(unix_now: u64) -> Restore<'static> {
        Restore { instance_id: INSTANCE, now: Uptime(0), unix_now, peer_timeout: 3600 }
    }

    fn written(dir: &Path) -> PathBuf {
        let path = path_in(dir);
        let stats = populated().write_snapshot(&path, INSTANCE, Uptime(10), WRITTEN).unwrap();
        assert_eq!((stats.torrents, stats.peers), (2, 5));
        path
    }

    #[test]
    fn round_trip_keeps_peers_counts_and_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        assert!(!dir.path().join("swarms.snapshot.tmp").exists());
        let t = SwarmTable::new();
        let mut owners = Vec::new();
        // Five seconds later; account 3 is gone.
        let stats = t
            .load_snapshot(&path, &at(WRITTEN + 5), |u| {
                owners.push(u);
                u != 3
            })
            .unwrap()
            .unwrap();
        assert_eq!((stats.torrents, stats.peers, stats.skipped, stats.age_secs), (2, 4, 1, 5));
        owners.sort_unstable();
        assert_eq!(owners, [1, 1, 2, 3]);
        let totals = t.totals();
        assert_eq!(
            (totals.peers_v4, totals.peers_v6, totals.seeders, totals.leechers),
            (3, 1, 1, 3)
        );
        // Torrent 2 kept its snatch though its only peer was skipped.
        assert_eq!(t.scrape(&InfoHash([2; 20])).map(|s| (s.complete, s.downloaded)), Some((0, 1)));
        // A newcomer gets every restored peer of torrent 1, with the restored counts.
        let (o, out) = announce(&t, 1, "10.0.0.50", 2000, 50, None, 0);
        assert_eq!((o.complete, o.incomplete), (1, 4));
        let got: HashSet<_> = out.v4.iter().map(|&(ip, port)| (ip.to_string(), port)).collect();
        let want: HashSet<_> = [("10.0.0.1", 1001), ("10.0.0.2", 1002), ("10.0.0.3", 1003)]
            .map(|(ip, port)| (ip.to_owned(), port))
            .into();
        assert_eq!(got, want);
        assert_eq!(out.v6, [("2001:db8::1".parse().unwrap(), 1004)]);
        // The baseline survived: 700 uploaded before, 1000 now: 300 credited, not 1000.
        let (o, _) = announce(&t, 1, "10.0.0.1", 1001, 0, Some(1), 1000);
        assert_eq!(o.credit.uploaded, 300);
        assert_eq!(o.joined, None, "the same owner: no new entry to count");
    }

    #[test]
    fn peers_keep_their_remaining_time_less_the_downtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let t = SwarmTable::new();
        // Valid until 100 at clock 10: 90 s left; 30 s of downtime leave 60 from clock 0.
        t.load_snapshot(&path, &at(WRITTEN + 30), |_| true).unwrap().unwrap();
        let mut owners = Vec::new();
        assert_eq!(t.expire(Uptime(60), &mut owners), 0);
        assert_eq!(t.expire(Uptime(61), &mut owners), 5);
        // 90 s of downtime: every peer had expired.
        let t = SwarmTable::new();
        let stats = t.load_snapshot(&path, &at(WRITTEN + 90), |_| true).unwrap().unwrap();
        assert_eq!((stats.peers, stats.skipped), (0, 5));
        assert_eq!(t.totals().peers_v4, 0);
    }

    #[test]
    fn no_file_is_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let t = SwarmTable::new();
        assert!(t.load_snapshot(&path_in(dir.path()), &at(WRITTEN), |_| true).unwrap().is_none());
    }

    /// Loads `bytes` into a fresh table: the error's text, and the table must stay empty.
    fn refusal(bytes: &[u8], at: &Restore<'_>) -> String {
        let t = SwarmTable::new();
        let e = t.load_snapshot_bytes(bytes, at, |_| true).unwrap_err();
        assert_eq!(t.totals(), Default::default(), "nothing entered the table");
        e.to_string()
    }

    #[test]
    fn bad_files_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(written(dir.path())).unwrap();
        let len = good.len() - HEADER;
        let at = at(WRITTEN + 5);
        assert_eq!(refusal(b"", &at), "not a pbts swarm snapshot (no PBTSSWRM header)");
        assert_eq!(refusal(&[b'x'; 64], &at), "not a pbts swarm snapshot (no PBTSSWRM header)");
        let mut v = good.clone();
        v[8] = 2;
        assert_eq!(refusal(&v, &at), "format version 2; this pbts reads version 1");
        assert_eq!(
            refusal(&good[..good.len() - 1], &at),
            format!(
                "truncated or padded: the header says {len} bytes of payload, the file holds {}",
                len - 1
            )
        );
        let mut v = good.clone();
        v[HEADER + 40] ^= 1;
        assert_eq!(refusal(&v, &at), "checksum mismatch: the file is corrupt");
        let mut v = good.clone();
        v[16..24].copy_from_slice(&(MAX_BYTES + 1).to_le_bytes());
        assert_eq!(
            refusal(&v, &at),
            format!(
                "{} bytes of payload, more than the {MAX_BYTES} a snapshot may hold",
                MAX_BYTES + 1
            )
        );
        // Garbage with a right checksum: rkyv's validation refuses it.
        let mut v = good[..HEADER].to_vec();
        let junk = vec![0xa5u8; len];
        v[12..16].copy_from_slice(&crc32fast::hash(&junk).to_le_bytes());
        v.extend_from_slice(&junk);
        assert!(refusal(&v, &at).starts_with("malformed: "));
        let other = Restore { instance_id: "ffffffffffffffffffffffffffffffff", ..at };
        assert_eq!(
            refusal(&good, &other),
            format!(
                "written by another tracker instance ({INSTANCE}; this one is \
                 ffffffffffffffffffffffffffffffff)"
            )
        );
        assert_eq!(
            refusal(&good, &Restore { unix_now: WRITTEN - 61, ..at }),
            "written 61 s in the future (the clock went back?)"
        );
        // Within a minute of clock skew it loads.
        let t = SwarmTable::new();
        assert!(
            t.load_snapshot_bytes(&good, &Restore { unix_now: WRITTEN - 60, ..at }, |_| true)
                .is_ok()
        );
        let stale = Restore { unix_now: WRITTEN + 3600, ..at };
        assert_eq!(
            refusal(&good, &stale),
            "written 3600 s ago, beyond the peer timeout of 3600 s: every peer in it has expired"
        );
        let t = SwarmTable::new();
        assert!(!t.load_snapshot_bytes(&good, &stale, |_| true).unwrap_err().is_refusal());
    }

    fn peer(ip: [u8; 4], port: u16) -> PeerRecord<[u8; 4]> {
        PeerRecord {
            ip,
            port,
            peer_id: [7; 20],
            seeder: false,
            snatched: false,
            remaining: 100,
            user: None,
            last_uploaded: 0,
            last_downloaded: 0,
        }
    }

    fn image(swarm_v4: u32, v4: Vec<PeerRecord<[u8; 4]>>) -> Image {
        Image {
            instance_id: INSTANCE.to_owned(),
            written_at: WRITTEN,
            swarms: vec![SwarmRecord {
                info_hash: [9; 20],
                snatches: 0,
                durable: false,
                v4: swarm_v4,
                v6: 0,
            }],
            v4,
            v6: Vec::new(),
        }
    }

    #[test]
    fn counts_must_add_up_and_duplicates_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        write_file(&path, &image(2, vec![peer([10, 0, 0, 1], 1)])).unwrap();
        let e = SwarmTable::new().load_snapshot(&path, &at(WRITTEN), |_| true).unwrap_err();
        assert_eq!(e.to_string(), "malformed: the swarms hold 2 IPv4 peers, the file 1");
        assert!(e.is_refusal());
        let twice = vec![peer([10, 0, 0, 1], 1), peer([10, 0, 0, 1], 1), peer([10, 0, 0, 1], 2)];
        write_file(&path, &image(3, twice)).unwrap();
        let t = SwarmTable::new();
        let stats = t.load_snapshot(&path, &at(WRITTEN), |_| true).unwrap().unwrap();
        assert_eq!((stats.peers, stats.skipped), (2, 1));
        assert_eq!(t.scrape(&InfoHash([9; 20])).map(|s| s.incomplete), Some(2));
    }

    /// `fuzz/regressions/swarm_snapshot/torrent_twice`: two records of one torrent were merged
    /// into one swarm but counted as two (and the second's snatches replaced the first's).
    #[test]
    fn a_torrent_twice_is_refused_before_anything_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut twice = image(1, vec![peer([10, 0, 0, 1], 1), peer([10, 0, 0, 2], 1)]);
        let again = twice.swarms[0].clone();
        twice.swarms.push(again);
        write_file(&path, &twice).unwrap();
        let t = SwarmTable::new();
        let e = t.load_snapshot(&path, &at(WRITTEN), |_| true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed: torrent 0909090909090909090909090909090909090909 appears twice"
        );
        assert!(e.is_refusal());
        assert_eq!(t.totals(), super::super::SwarmTotals::default());
    }

    /// Writes the fuzz seed (`PBTS_WRITE_FUZZ_SEEDS=1 cargo test -p pbts-engine --lib
    /// fuzz_seed`): the payload of `populated()`, as the framed half of the target reads it.
    #[test]
    fn fuzz_seed() {
        let image = populated().image("fuzz", Uptime(10), 1_000);
        let payload = encode(&image).unwrap();
        harness(&payload);
        if std::env::var_os("PBTS_WRITE_FUZZ_SEEDS").is_some() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/swarm_snapshot");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("populated"), &payload[..]).unwrap();
            let mut file = header_for(&payload).to_vec();
            file.extend_from_slice(&payload);
            std::fs::write(dir.join("populated_file"), file).unwrap();
        }
    }

    #[test]
    fn a_durable_count_from_the_database_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let t = SwarmTable::new();
        t.load_snatches(InfoHash([2; 20]), 5);
        t.load_snapshot(&path, &at(WRITTEN), |_| true).unwrap().unwrap();
        assert_eq!(t.scrape(&InfoHash([2; 20])).map(|s| (s.complete, s.downloaded)), Some((1, 5)));
    }
}
