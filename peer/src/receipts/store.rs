//! The uploader's durable receipts: every receipt we earned is on disk before it counts, and
//! stays there until the tracker has given its verdict.
//!
//! One redb file per (identity, torrent), `$XDG_STATE_HOME/pbts-peer/<tracker>/<info-hash>.redb`:
//!
//! ```text
//! pending   key → receipt      verified, not yet reported (or reported without a verdict)
//! settled   key → verdict      the tracker credited or refused it: never reported again
//! key = receiver_pk (48) ‖ u32be(piece_index)      (the info-hash is the file's, the sender us)
//! ```
//!
//! Each insert is one transaction committed durably (fsync) before the caller counts the
//! receipts; a receipt already pending or settled is not stored twice, so a downloader that
//! offers its receipts again after a reconnect, or our own restart, changes nothing.

use std::path::Path;

use pbts_proto::InfoHash;
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const PENDING: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("pending");
const SETTLED: TableDefinition<'_, &[u8], u8> = TableDefinition::new("settled");

/// Bytes of a key.
const KEY_LEN: usize = 48 + 4;
/// Bytes of a stored receipt: info-hash, sender, receiver, hash length, hash (32, zero
/// padded), index, timestamp, signature.
const RECORD_LEN: usize = 20 + 48 + 48 + 1 + 32 + 4 + 8 + 96;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("receipt store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn other(text: String) -> Self {
        Self(text)
    }
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        Self(e.into().to_string())
    }
}

/// What the tracker said of a reported receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Credited to us.
    Credited = 1,
    /// Refused for good (already credited, stale, a bad signature, ...).
    Refused = 2,
}

/// Receipts held for the tracker.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn key(r: &Receipt) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..48].copy_from_slice(&r.receiver_pk.0);
    k[48..].copy_from_slice(&r.piece_index.to_be_bytes());
    k
}

fn encode(r: &Receipt) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let hash = r.piece_hash.as_bytes();
    out[..20].copy_from_slice(&r.info_hash.0);
    out[20..68].copy_from_slice(&r.sender_pk.0);
    out[68..116].copy_from_slice(&r.receiver_pk.0);
    out[116] = hash.len() as u8;
    out[117..117 + hash.len()].copy_from_slice(hash);
    out[149..153].copy_from_slice(&r.piece_index.to_be_bytes());
    out[153..161].copy_from_slice(&r.timestamp.to_be_bytes());
    out[161..].copy_from_slice(&r.signature.0);
    out
}

fn decode(b: &[u8]) -> Option<Receipt> {
    let b: &[u8; RECORD_LEN] = b.try_into().ok()?;
    let hash_len = usize::from(b[116]);
    Some(Receipt {
        info_hash: InfoHash(b[..20].try_into().ok()?),
        sender_pk: PublicKeyBytes(b[20..68].try_into().ok()?),
        receiver_pk: PublicKeyBytes(b[68..116].try_into().ok()?),
        piece_hash: PieceHash::from_slice(b.get(117..117 + hash_len)?)?,
        piece_index: u32::from_be_bytes(b[149..153].try_into().ok()?),
        timestamp: u64::from_be_bytes(b[153..161].try_into().ok()?),
        signature: SignatureBytes(b[161..].try_into().ok()?),
    })
}

impl Store {
    /// Opens (or creates) the store at `path`, creating its directory.
    ///
    /// # Errors
    /// The file cannot be created or is not a store (or another process holds it).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let db =
            Database::create(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write()?;
        tx.open_table(PENDING)?;
        tx.open_table(SETTLED)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// Stores the receipts not already pending or settled, durably, in one transaction.
    /// Returns those that were new (the ones to count).
    ///
    /// # Errors
    /// The write failed: nothing was stored.
    pub fn insert(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>, StoreError> {
        let tx = self.db.begin_write()?;
        let mut new = Vec::new();
        {
            let mut pending = tx.open_table(PENDING)?;
            let settled = tx.open_table(SETTLED)?;
            for r in receipts {
                let k = key(r);
                if pending.get(&k[..])?.is_some() || settled.get(&k[..])?.is_some() {
                    continue;
                }
                pending.insert(&k[..], &encode(r)[..])?;
                new.push(*r);
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Up to `limit` pending receipts, in key order.
    ///
    /// # Errors
    /// The read failed.
    pub fn pending(&self, limit: usize) -> Result<Vec<Receipt>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PENDING)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (_, v) = entry?;
            match decode(v.value()) {
                Some(r) => out.push(r),
                None => return Err(StoreError("a pending receipt is corrupt".to_owned())),
            }
        }
        Ok(out)
    }

    /// Pending receipts.
    ///
    /// # Errors
    /// The read failed.
    pub fn pending_len(&self) -> Result<u64, StoreError> {
        Ok(self.db.begin_read()?.open_table(PENDING)?.len()?)
    }

    /// Settled receipts.
    ///
    /// # Errors
    /// The read failed.
    pub fn settled_len(&self) -> Result<u64, StoreError> {
        Ok(self.db.begin_read()?.open_table(SETTLED)?.len()?)
    }

    /// Records the tracker's verdicts: each receipt leaves `pending` for `settled`, in one
    /// durable transaction.
    ///
    /// # Errors
    /// The write failed: nothing changed (they will be reported again, and the tracker will
    /// answer `already_credited` for those it credited).
    pub fn settle(&self, verdicts: &[(Receipt, Settled)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut pending = tx.open_table(PENDING)?;
            let mut settled = tx.open_table(SETTLED)?;
            for (r, v) in verdicts {
                let k = key(r);
                pending.remove(&k[..])?;
                settled.insert(&k[..], *v as u8)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(receiver: u8, index: u32, hash_len: usize) -> Receipt {
        Receipt {
            info_hash: InfoHash([7; 20]),
            sender_pk: PublicKeyBytes([1; 48]),
            receiver_pk: PublicKeyBytes([receiver; 48]),
            piece_hash: PieceHash::from_slice(&vec![9; hash_len]).unwrap(),
            piece_index: index,
            timestamp: 1_764_577_200 + u64::from(index),
            signature: SignatureBytes([index as u8; 96]),
        }
    }

    #[test]
    fn records_round_trip() {
        for r in [receipt(2, 0, 20), receipt(3, u32::MAX, 32)] {
            assert_eq!(decode(&encode(&r)), Some(r));
        }
        assert_eq!(decode(&[0u8; RECORD_LEN - 1]), None);
        let mut bad = encode(&receipt(2, 0, 20));
        bad[116] = 33;
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn a_receipt_is_stored_once_and_settled_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.redb");
        let store = Store::open(&path).unwrap();
        let (a, b, c) = (receipt(2, 0, 20), receipt(2, 1, 20), receipt(3, 0, 20));
        assert_eq!(store.insert(&[a, b]).unwrap(), [a, b]);
        // Offered again, with another: only the other is new.
        assert_eq!(store.insert(&[b, c, a]).unwrap(), [c]);
        assert_eq!(store.pending_len().unwrap(), 3);
        assert_eq!(store.pending(2).unwrap(), [a, b]);

        store.settle(&[(a, Settled::Credited), (c, Settled::Refused)]).unwrap();
        assert_eq!(store.pending(10).unwrap(), [b]);
        assert_eq!(store.settled_len().unwrap(), 2);
        // A settled receipt offered again is not pending again: it is never reported twice.
        assert_eq!(store.insert(&[a, c]).unwrap(), []);
        drop(store);

        // Reopened (a restart): what was pending still is.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pending(10).unwrap(), [b]);
        assert_eq!(store.settled_len().unwrap(), 2);
    }
}
