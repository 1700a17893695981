//! Unit tests of the store commands, each on a temporary redb.

use pbts_verifier::credit::Rejection;
use pbts_verifier::receipt::{PieceHash, Receipt, SignatureBytes};
use redb::ReadTransaction;

use super::*;
use crate::store::{ReserveItem, encode_public_key};

/// The clock of every report in these tests, Unix seconds.
const NOW: u64 = 1_700_000_000;

/// A database in a temporary directory, with the in-memory state the store thread keeps.
struct Fixture {
    db: Db,
    accounts: Accounts,
    stats: Arc<ReceiptStats>,
    outbox: Arc<OutboxStats>,
    health: Arc<StoreStats>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (stats, outbox, health) = (Arc::default(), Arc::default(), Arc::default());
        let db = Db::open(
            dir.path(),
            Freshness::default(),
            Arc::clone(&stats),
            Arc::clone(&outbox),
            Arc::clone(&health),
        )
        .unwrap();
        // Tests run in parallel threads: faults are injected through the field, never
        // through PBTS_FAULT_COMMIT.
        assert_eq!(db.commit_faults, 0);
        Self { db, accounts: Accounts::default(), stats, outbox, health, dir }
    }

    /// Applies `cmds` as one batch; returns the accounting kept for retry.
    fn apply(&mut self, cmds: Vec<StoreCmd>) -> Vec<StoreCmd> {
        self.db.apply(cmds, &self.accounts)
    }

    /// Applies one command as a batch of its own and returns its reply.
    fn ask<T>(&mut self, cmd: impl FnOnce(Reply<T>) -> StoreCmd) -> Result<T, StoreError> {
        let (reply, rx) = flume::bounded(1);
        assert!(self.apply(vec![cmd(reply)]).is_empty());
        rx.try_recv().expect("a command that does not fail its batch is answered")
    }

    fn create_user(&mut self, name: &str, key: Option<u8>) -> UserRecord {
        let public_key = key.map(pk);
        self.ask(|reply| StoreCmd::CreateUser {
            name: name.to_owned(),
            invite: None,
            public_key,
            reply,
        })
        .unwrap()
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>) -> T {
        f(&self.db.db.begin_read().unwrap()).unwrap()
    }

    fn write(&self, f: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>) {
        let tx = self.db.db.begin_write().unwrap();
        f(&tx).unwrap();
        tx.commit().unwrap();
    }

    fn len<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> u64 {
        self.read(|tx| Ok(tx.open_table(table)?.len()?))
    }

    fn user(&self, id: u32) -> UserRecord {
        self.read(|tx| {
            let v = tx.open_table(USERS)?.get(id)?.expect("user stored");
            Ok(serde_json::from_slice(v.value()).unwrap())
        })
    }

    fn meta(&self, key: &str) -> Option<u64> {
        self.read(|tx| Ok(tx.open_table(META)?.get(key)?.map(|v| v.value())))
    }

    fn meta_text(&self, key: &str) -> Option<String> {
        self.read(|tx| Ok(tx.open_table(META_TEXT)?.get(key)?.map(|v| v.value().to_owned())))
    }

    fn invited_by(&self, id: u32) -> Option<u32> {
        self.read(|tx| Ok(tx.open_table(INVITED_BY)?.get(id)?.map(|v| v.value())))
    }

    /// A user's verified credit waiting for the chain: (download, upload).
    fn pending(&self, id: u32) -> Option<(u64, u64)> {
        self.read(|tx| {
            let table = tx.open_table(CHAIN_PENDING)?;
            Ok(table.get(id)?.map(|v| decode_pair(v.value()).unwrap()))
        })
    }

    fn set_pending(&self, rows: &[(u32, u64, u64)]) {
        self.write(|tx| {
            let mut table = tx.open_table(CHAIN_PENDING)?;
            for &(id, down, up) in rows {
                table.insert(id, &encode_pair(down, up)[..])?;
            }
            Ok(())
        });
    }

    fn credited(&self, claim: &PieceClaim) -> PieceSet {
        self.read(|tx| read_set(&tx.open_table(CREDITED)?, &claim.set_key()))
    }

    fn reserve(&mut self, receipts: &[Receipt]) -> Vec<Result<PieceClaim, ReserveError>> {
        let items =
            receipts.iter().map(|&r| ReserveItem { receipt: r, torrent: r.info_hash }).collect();
        self.ask(|reply| StoreCmd::ReserveReceipts { items, now: NOW, reply }).unwrap()
    }

    fn set_reputation(&mut self, contract: u8, last_batch_id: u64) -> Result<(), StoreError> {
        let contract = address(contract);
        self.ask(|reply| StoreCmd::SetReputation { contract, last_batch_id, reply })
    }

    fn take_batch(
        &mut self,
        contract: u8,
        max_users: usize,
    ) -> Result<Option<ChainBatch>, StoreError> {
        let contract = address(contract);
        self.ask(|reply| StoreCmd::TakeChainBatch { contract, max_users, reply })
    }
}

fn pk(n: u8) -> PublicKeyBytes {
    PublicKeyBytes([n; 48])
}

fn address(n: u8) -> pbts_chain::Address {
    pbts_chain::Address::repeat_byte(n)
}

/// The torrent most tests use.
const T: InfoHash = InfoHash([0xaa; 20]);

/// Piece `index` of a torrent has the hash `[index + 1; 20]` in these tests.
fn piece_hash(index: u32) -> [u8; 20] {
    [index as u8 + 1; 20]
}

/// A receipt signed by the holder of `pk(signer)` for piece `index` of `T`, from `pk(9)`.
fn receipt(signer: u8, index: u32) -> Receipt {
    Receipt {
        info_hash: T,
        sender_pk: pk(9),
        receiver_pk: pk(signer),
        piece_hash: PieceHash::from_slice(&piece_hash(index)).unwrap(),
        piece_index: index,
        timestamp: NOW,
        signature: SignatureBytes([0; 96]),
    }
}

fn torrent(info_hash: InfoHash) -> TorrentRecord {
    TorrentRecord {
        info_hash: crate::encoding::hex(&info_hash.0),
        name: Some("debian".to_owned()),
        registered_at: 5,
        v2_info_hash: None,
        piece_length: None,
        total_size: None,
    }
}

#[test]
fn create_user_stores_the_user_and_publishes_it_once_committed() {
    let mut f = Fixture::new();
    let alice = f.create_user("alice", Some(1));
    assert_eq!(alice.id, 1);
    assert_eq!(alice.name, "alice");
    assert!(Passkey::parse(alice.passkey.as_bytes()).is_some(), "{}", alice.passkey);
    assert_eq!(alice.public_key, Some(encode_public_key(&pk(1))));
    assert_eq!((alice.uploaded, alice.verified_uploaded), (0, 0));
    assert_eq!(f.user(1), alice);
    assert_eq!(f.read(|tx| Ok(tx.open_table(USER_NAMES)?.get("alice")?.unwrap().value())), 1);
    assert_eq!(f.read(|tx| Ok(tx.open_table(USER_KEYS)?.get(&pk(1).0[..])?.unwrap().value())), 1);
    assert_eq!(f.invited_by(1), None);
    assert_eq!(f.meta("next_user_id"), Some(2));
    let user = f.accounts.by_name("alice").unwrap();
    assert_eq!(user.id, 1);
    assert_eq!(f.accounts.by_key(&pk(1)).unwrap().id, 1);
    let passkey = Passkey::parse(alice.passkey.as_bytes()).unwrap();
    assert_eq!(f.accounts.by_passkey(&passkey).unwrap().id, 1);

    let bob = f.create_user("bob", None);
    assert_eq!((bob.id, bob.public_key), (2, None));
    assert_ne!(bob.passkey, alice.passkey);
    assert_eq!(f.meta("next_user_id"), Some(3));
    assert_eq!(f.len(USER_KEYS), 1);
    assert_eq!(f.accounts.len(), 2);
}

#[test]
fn create_user_refuses_a_taken_name_or_key_and_writes_nothing() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    let again = f.ask(|reply| StoreCmd::CreateUser {
        name: "alice".to_owned(),
        invite: None,
        public_key: Some(pk(2)),
        reply,
    });
    assert!(matches!(&again, Err(StoreError::UserExists(n)) if n == "alice"), "{again:?}");
    let same_key = f.ask(|reply| StoreCmd::CreateUser {
        name: "bob".to_owned(),
        invite: None,
        public_key: Some(pk(1)),
        reply,
    });
    assert!(matches!(same_key, Err(StoreError::KeyExists)), "{same_key:?}");
    assert_eq!(f.meta("next_user_id"), Some(2));
    assert_eq!((f.len(USERS), f.len(USER_NAMES), f.len(USER_KEYS)), (1, 1, 1));
    assert_eq!(f.accounts.len(), 1);
    assert!(f.accounts.by_key(&pk(2)).is_none());
}

#[test]
fn create_user_consumes_an_invite_once_and_records_who_invited() {
    let mut f = Fixture::new();
    f.create_user("alice", None);
    let admins = f.ask(|reply| StoreCmd::CreateInvite { by: None, reply }).unwrap();
    let alices = f.ask(|reply| StoreCmd::CreateInvite { by: Some((1, 5)), reply }).unwrap();
    for code in [&admins, &alices] {
        assert!(Passkey::parse(code.as_bytes()).is_some(), "{code}");
    }
    assert_ne!(admins, alices);
    assert_eq!(f.len(INVITES), 2);
    let invite = |f: &mut Fixture, name: &str, code: &str| {
        let (name, invite) = (name.to_owned(), Some(code.to_owned()));
        f.ask(|reply| StoreCmd::CreateUser { name, invite, public_key: None, reply })
    };

    assert_eq!(invite(&mut f, "bob", &admins).unwrap().id, 2);
    assert_eq!(f.invited_by(2), Some(0));
    let reused = invite(&mut f, "carol", &admins);
    assert!(matches!(reused, Err(StoreError::InvalidInvite)), "{reused:?}");
    let unknown = invite(&mut f, "carol", "0123456789abcdef0123456789abcdef");
    assert!(matches!(unknown, Err(StoreError::InvalidInvite)), "{unknown:?}");
    assert_eq!(f.meta("next_user_id"), Some(3));
    assert_eq!(invite(&mut f, "carol", &alices).unwrap().id, 3);
    assert_eq!(f.invited_by(3), Some(1));
    assert_eq!(f.invited_by(1), None);
    assert_eq!(f.len(INVITES), 0);
}

#[test]
fn create_invite_counts_a_users_invites_against_their_budget() {
    let mut f = Fixture::new();
    for _ in 0..2 {
        f.ask(|reply| StoreCmd::CreateInvite { by: Some((7, 2)), reply }).unwrap();
    }
    let over = f.ask(|reply| StoreCmd::CreateInvite { by: Some((7, 2)), reply });
    assert!(matches!(over, Err(StoreError::NoInvitesLeft { used: 2, budget: 2 })), "{over:?}");
    let none = f.ask(|reply| StoreCmd::CreateInvite { by: Some((8, 0)), reply });
    assert!(matches!(none, Err(StoreError::NoInvitesLeft { used: 0, budget: 0 })), "{none:?}");
    // An admin's invites are not counted.
    f.ask(|reply| StoreCmd::CreateInvite { by: None, reply }).unwrap();
    let used =
        |f: &Fixture, id| f.read(|tx| Ok(tx.open_table(USER_INVITES)?.get(id)?.map(|v| v.value())));
    assert_eq!((used(&f, 7), used(&f, 8), used(&f, 0)), (Some(2), None, None));
    assert_eq!(f.len(INVITES), 3);
}

#[test]
fn attach_key_gives_a_keyless_user_one_key_for_good() {
    let mut f = Fixture::new();
    let alice = f.create_user("alice", None);
    f.create_user("bob", Some(2));
    let mut attach = |name: &str, key| {
        let name = name.to_owned();
        f.ask(|reply| StoreCmd::AttachKey { name, public_key: pk(key), reply })
    };
    let nobody = attach("nobody", 1);
    assert!(matches!(nobody, Err(StoreError::UserNotFound)), "{nobody:?}");
    let taken = attach("alice", 2);
    assert!(matches!(taken, Err(StoreError::KeyExists)), "{taken:?}");
    let has = attach("bob", 3);
    assert!(matches!(has, Err(StoreError::UserHasKey)), "{has:?}");
    let record = attach("alice", 1).unwrap();
    assert_eq!(record, UserRecord { public_key: Some(encode_public_key(&pk(1))), ..alice });
    let again = attach("alice", 4);
    assert!(matches!(again, Err(StoreError::UserHasKey)), "{again:?}");

    assert_eq!(f.user(1), record);
    assert_eq!(f.read(|tx| Ok(tx.open_table(USER_KEYS)?.get(&pk(1).0[..])?.unwrap().value())), 1);
    assert_eq!(f.len(USER_KEYS), 2);
    assert_eq!(f.accounts.by_key(&pk(1)).unwrap().id, 1);
    assert_eq!(f.accounts.by_name("alice").unwrap().public_key.get(), Some(&pk(1)));
    assert!(f.accounts.by_key(&pk(3)).is_none() && f.accounts.by_key(&pk(4)).is_none());
}

#[test]
fn register_torrent_stores_under_every_hash_and_fills_in_but_never_changes() {
    let mut f = Fixture::new();
    let v2 = [0xbb; 32];
    let first = TorrentRecord { v2_info_hash: Some(crate::encoding::hex(&v2)), ..torrent(T) };
    let mut register = |record: &TorrentRecord, pieces: Option<Vec<u8>>| {
        let record = record.clone();
        f.ask(|reply| StoreCmd::RegisterTorrent { record, pieces, reply })
    };
    assert_eq!(register(&first, None).unwrap(), (true, first.clone()));

    let pieces: Vec<u8> = (0..3).flat_map(piece_hash).collect();
    let sized = TorrentRecord {
        piece_length: Some(16384),
        total_size: Some(40000),
        name: Some("other".to_owned()),
        registered_at: 9,
        ..first.clone()
    };
    let merged =
        TorrentRecord { piece_length: Some(16384), total_size: Some(40000), ..first.clone() };
    assert_eq!(register(&sized, Some(pieces.clone())).unwrap(), (false, merged.clone()));
    // Registering by the truncated v2 hash finds the same torrent.
    assert_eq!(register(&torrent(InfoHash([0xbb; 20])), None).unwrap(), (false, merged.clone()));

    let longer = TorrentRecord { piece_length: Some(32768), ..sized.clone() };
    let conflict = register(&longer, None);
    assert!(
        matches!(
            conflict,
            Err(StoreError::TorrentConflict {
                field: "piece_length",
                existing: 16384,
                given: 32768
            })
        ),
        "{conflict:?}"
    );
    let other_pieces = register(&sized, Some(pieces[..40].to_vec()));
    assert!(
        matches!(
            other_pieces,
            Err(StoreError::TorrentConflict { field: "pieces", existing: 3, given: 2 })
        ),
        "{other_pieces:?}"
    );

    let stored = |f: &Fixture, key: [u8; 20]| {
        f.read(|tx| {
            let v = tx.open_table(TORRENTS)?.get(&key[..])?.expect("stored");
            Ok(serde_json::from_slice::<TorrentRecord>(v.value()).unwrap())
        })
    };
    assert_eq!(stored(&f, T.0), merged);
    assert_eq!(stored(&f, [0xbb; 20]), merged);
    assert_eq!(f.len(TORRENTS), 2);
    let hashes =
        f.read(|tx| Ok(tx.open_table(PIECE_HASHES)?.get(&T.0[..])?.map(|v| v.value().to_vec())));
    assert_eq!(hashes, Some(pieces));
    assert_eq!(f.len(PIECE_HASHES), 1);
}

#[test]
fn reserve_receipts_checks_piece_hashes_then_the_ledger() {
    let mut f = Fixture::new();
    let pieces: Vec<u8> = (0..3).flat_map(piece_hash).collect();
    let record = torrent(T);
    f.ask(|reply| StoreCmd::RegisterTorrent { record, pieces: Some(pieces), reply }).unwrap();
    let no_hashes = InfoHash([0xcc; 20]);
    let wrong_hash =
        Receipt { piece_hash: PieceHash::from_slice(&[9; 20]).unwrap(), ..receipt(1, 1) };
    let stale = Receipt { timestamp: NOW - 3601, ..receipt(1, 2) };
    let elsewhere = Receipt { info_hash: no_hashes, ..receipt(1, 7) };
    let verdicts = f.reserve(&[
        receipt(1, 0),
        wrong_hash,
        Receipt { timestamp: NOW - 1, ..receipt(1, 0) },
        receipt(1, 5),
        elsewhere,
        stale,
    ]);
    let claim = PieceClaim { downloader: pk(1), torrent: T, piece_index: 0 };
    let other = PieceClaim { downloader: pk(1), torrent: no_hashes, piece_index: 7 };
    assert_eq!(
        verdicts,
        vec![
            Ok(claim),
            Err(ReserveError::WrongPieceHash),
            Err(ReserveError::Ledger(Rejection::DuplicateInBatch)),
            // Past the last piece: no hash to match.
            Err(ReserveError::WrongPieceHash),
            Ok(other),
            Err(ReserveError::Ledger(Rejection::Stale { age_secs: 3601 })),
        ]
    );
    assert!(f.db.ledger.is_reserved(&claim) && f.db.ledger.is_reserved(&other));
    assert_eq!(f.db.ledger.reserved_len(), 2);
    assert_eq!(f.len(CREDITED), 0);
    assert_eq!(f.reserve(&[receipt(1, 0)]), vec![Err(ReserveError::Ledger(Rejection::InFlight))]);

    let credit = ReceiptCredit { claim, uploader: 9, signer: 1, bytes: 100 };
    let (credits, release) = (vec![credit], vec![other]);
    f.ask(|reply| StoreCmd::CreditReceipts { credits, release, reply }).unwrap();
    assert_eq!(
        f.reserve(&[receipt(1, 0), receipt(2, 0)]),
        vec![
            Err(ReserveError::Ledger(Rejection::AlreadyCredited)),
            Ok(PieceClaim { downloader: pk(2), ..claim }),
        ]
    );
}

#[test]
fn credit_receipts_records_pieces_and_both_users_verified_totals() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.create_user("bob", Some(2));
    let claims: Vec<PieceClaim> = f
        .reserve(&[receipt(2, 0), receipt(2, 1), receipt(2, 2)])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let credit = |claim, bytes| ReceiptCredit { claim, uploader: 1, signer: 2, bytes };
    let credits = vec![credit(claims[0], 100), credit(claims[1], 100)];
    let release = vec![claims[2]];
    f.ask(|reply| StoreCmd::CreditReceipts { credits, release, reply }).unwrap();

    let set = f.credited(&claims[0]);
    assert_eq!(
        (set.len(), set.contains(0), set.contains(1), set.contains(2)),
        (2, true, true, false)
    );
    assert_eq!(f.meta("credited_pieces"), Some(2));
    assert_eq!(f.stats.credited_pieces.load(Ordering::Relaxed), 2);
    let (alice, bob) = (f.user(1), f.user(2));
    assert_eq!((alice.verified_uploaded, alice.verified_downloaded), (200, 0));
    assert_eq!((bob.verified_uploaded, bob.verified_downloaded), (0, 200));
    assert_eq!((alice.uploaded, bob.downloaded), (0, 0));
    assert_eq!((f.pending(1), f.pending(2)), (Some((0, 200)), Some((200, 0))));
    assert_eq!(f.outbox.pending_users.load(Ordering::Relaxed), 2);
    let memory = |f: &Fixture, id| {
        let u = f.accounts.by_id(id).unwrap();
        (u.verified_uploaded.load(Ordering::Relaxed), u.verified_downloaded.load(Ordering::Relaxed))
    };
    assert_eq!((memory(&f, 1), memory(&f, 2)), ((200, 0), (0, 200)));
    assert_eq!(f.db.ledger.reserved_len(), 0);

    // The released piece can be reserved again, and credit adds up.
    let again = f.reserve(&[receipt(2, 2)]);
    assert_eq!(again, vec![Ok(claims[2])]);
    let credits = vec![credit(claims[2], 50)];
    f.ask(|reply| StoreCmd::CreditReceipts { credits, release: Vec::new(), reply }).unwrap();
    assert_eq!((f.pending(1), f.pending(2)), (Some((0, 250)), Some((250, 0))));
    assert_eq!(f.user(1).verified_uploaded, 250);
    assert_eq!(f.meta("credited_pieces"), Some(3));
    assert_eq!(f.stats.credited_pieces.load(Ordering::Relaxed), 3);
    assert_eq!(f.credited(&claims[0]).len(), 3);
}

#[test]
fn credit_receipts_of_a_piece_already_credited_fails_the_batch() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.create_user("bob", Some(2));
    let claim = f.reserve(&[receipt(2, 0)])[0].unwrap();
    let credit = ReceiptCredit { claim, uploader: 1, signer: 2, bytes: 100 };
    f.ask(|reply| StoreCmd::CreditReceipts { credits: vec![credit], release: vec![], reply })
        .unwrap();
    // Not reserved again: only a bug could send this.
    let (reply, rx) = flume::bounded(1);
    let cmd = StoreCmd::CreditReceipts { credits: vec![credit], release: vec![], reply };
    assert!(f.apply(vec![cmd]).is_empty());
    assert!(matches!(rx.try_recv(), Ok(Err(StoreError::NotCommitted(_)))));
    assert_eq!(f.health.commit_failures.load(Ordering::Relaxed), 1);
    assert_eq!(f.meta("credited_pieces"), Some(1));
    assert_eq!(f.user(1).verified_uploaded, 100);
    assert_eq!(f.pending(1), Some((0, 100)));
    assert_eq!(f.stats.credited_pieces.load(Ordering::Relaxed), 1);
}

#[test]
fn flush_adds_announce_deltas_and_snatches_in_one_write_per_user() {
    let mut f = Fixture::new();
    f.create_user("alice", None);
    let u = InfoHash([0xcc; 20]);
    let delta =
        |user, info_hash, uploaded, downloaded| StatDelta { user, info_hash, uploaded, downloaded };
    let retry = f.apply(vec![
        StoreCmd::Flush {
            deltas: vec![delta(1, T, 10, 20), delta(1, u, 1, 2)],
            snatches: vec![(T, 1)],
        },
        StoreCmd::Flush {
            deltas: vec![delta(1, T, 5, 7), delta(99, T, 3, 4)],
            snatches: vec![(T, 2), (u, 1)],
        },
    ]);
    assert!(retry.is_empty());
    assert_eq!(f.db.user_torrents(1).unwrap(), vec![(T, 15, 27), (u, 1, 2)]);
    // Accounting of a user unknown to the table is kept per torrent.
    assert_eq!(f.db.user_torrents(99).unwrap(), vec![(T, 3, 4)]);
    let snatches = |f: &Fixture, ih: InfoHash| {
        f.read(|tx| Ok(tx.open_table(SNATCHES)?.get(&ih.0[..])?.map(|v| v.value())))
    };
    assert_eq!((snatches(&f, T), snatches(&f, u)), (Some(3), Some(1)));
    let alice = f.user(1);
    assert_eq!((alice.uploaded, alice.downloaded), (16, 29));
    assert_eq!((alice.verified_uploaded, alice.verified_downloaded), (0, 0));
    assert_eq!(f.len(USERS), 1);
    assert_eq!(f.len(CHAIN_PENDING), 0);
    // The in-memory totals are the serving cores' to keep.
    assert_eq!(f.accounts.by_id(1).unwrap().uploaded.load(Ordering::Relaxed), 0);

    f.apply(vec![StoreCmd::Flush { deltas: vec![delta(1, T, 1, 1)], snatches: vec![] }]);
    assert_eq!(f.db.user_torrents(1).unwrap(), vec![(T, 16, 28), (u, 1, 2)]);
    assert_eq!(f.user(1).uploaded, 17);
}

#[test]
fn set_overrides_merges_persists_and_sets_the_receipt_window() {
    let mut f = Fixture::new();
    let (tx1, rx1) = flume::bounded(1);
    let (tx2, rx2) = flume::bounded(1);
    let ratio = Overrides { min_ratio: Some(0.5), receipt_window_secs: None };
    let window = Overrides { min_ratio: None, receipt_window_secs: Some(60) };
    let both = Overrides { min_ratio: Some(0.5), receipt_window_secs: Some(60) };
    f.apply(vec![
        StoreCmd::SetOverrides { overrides: ratio, reply: tx1 },
        StoreCmd::SetOverrides { overrides: window, reply: tx2 },
    ]);
    assert_eq!(rx1.try_recv().unwrap().unwrap(), ratio);
    assert_eq!(rx2.try_recv().unwrap().unwrap(), both);
    assert_eq!(f.db.overrides(), both);
    assert_eq!(f.db.ledger.freshness(), Freshness { window_secs: 60, max_future_secs: 300 });
    let stored: Overrides =
        serde_json::from_str(&f.meta_text("config_overrides").unwrap()).unwrap();
    assert_eq!(stored, both);
    let raised = Overrides { min_ratio: Some(1.0), receipt_window_secs: None };
    let now = f.ask(|reply| StoreCmd::SetOverrides { overrides: raised, reply }).unwrap();
    assert_eq!(now, Overrides { min_ratio: Some(1.0), receipt_window_secs: Some(60) });

    let Fixture { db, stats, outbox, health, dir, .. } = f;
    drop(db);
    let reopened = Db::open(dir.path(), Freshness::default(), stats, outbox, health).unwrap();
    assert_eq!(reopened.overrides(), now);
    assert_eq!(reopened.ledger.freshness().window_secs, 60);
}

#[test]
fn set_reputation_points_the_outbox_unless_another_contracts_batch_is_in_flight() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.set_reputation(0xa1, 7).unwrap();
    assert_eq!(f.meta_text("chain_contract"), Some(address(0xa1).to_string()));
    assert_eq!(f.meta("chain_last_batch"), Some(7));
    assert_eq!(f.outbox.last_batch_id.load(Ordering::Relaxed), 7);

    f.set_pending(&[(1, 10, 20)]);
    assert_eq!(f.take_batch(0xa1, 10).unwrap().unwrap().id, 8);
    let busy = f.set_reputation(0xb2, 0);
    assert!(
        matches!(&busy, Err(StoreError::ChainBusy(c)) if *c == address(0xa1).to_string()),
        "{busy:?}"
    );
    assert_eq!(f.meta_text("chain_contract"), Some(address(0xa1).to_string()));
    assert_eq!(f.meta("chain_last_batch"), Some(7));
    // The same contract again (adopted from the configuration at start-up) is no conflict.
    f.set_reputation(0xa1, 7).unwrap();
}

#[test]
fn take_chain_batch_makes_one_batch_and_resends_it_until_done() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.create_user("bob", None);
    f.create_user("carol", Some(3));
    f.set_pending(&[(1, 10, 20), (2, 5, 5), (3, 30, 40), (99, 1, 1)]);
    let unset = f.take_batch(0xa1, 10);
    let asked = address(0xa1).to_string();
    assert!(
        matches!(&unset, Err(StoreError::ChainContract { current, asked: a }) if current == "nothing" && *a == asked),
        "{unset:?}"
    );
    f.set_reputation(0xa1, 4).unwrap();
    let other = f.take_batch(0xb2, 10);
    assert!(
        matches!(&other, Err(StoreError::ChainContract { current, .. }) if *current == asked),
        "{other:?}"
    );

    // Users 1 and 2: bob has no key, so his credit is dropped.
    let entry = |name: &str, key, download_delta, upload_delta| pbts_chain::CreditEntry {
        username: name.to_owned(),
        key_hash: pbts_chain::key_hash(&pk(key).0),
        download_delta,
        upload_delta,
    };
    let first =
        ChainBatch { id: 5, contract: address(0xa1), entries: vec![entry("alice", 1, 10, 20)] };
    assert_eq!(f.take_batch(0xa1, 2).unwrap(), Some(first.clone()));
    assert_eq!((f.pending(1), f.pending(2), f.pending(3)), (None, None, Some((30, 40))));
    let o = &f.outbox;
    assert_eq!(o.batch_id.load(Ordering::Relaxed), 5);
    assert_eq!(o.batch_users.load(Ordering::Relaxed), 1);
    assert_eq!(o.pending_users.load(Ordering::Relaxed), 2);
    // Resent as it is until the chain confirms it.
    assert_eq!(f.take_batch(0xa1, 10).unwrap(), Some(first));
    assert_eq!(f.len(CHAIN_PENDING), 2);

    f.ask(|reply| StoreCmd::ChainBatchDone { id: 5, reply }).unwrap();
    assert_eq!(f.len(CHAIN_BATCH), 0);
    assert_eq!(f.meta("chain_last_batch"), Some(5));
    assert_eq!(f.outbox.batch_id.load(Ordering::Relaxed), 0);
    assert_eq!(f.outbox.last_batch_id.load(Ordering::Relaxed), 5);

    // User 99 is unknown: dropped too.
    let second =
        ChainBatch { id: 6, contract: address(0xa1), entries: vec![entry("carol", 3, 30, 40)] };
    assert_eq!(f.take_batch(0xa1, 10).unwrap(), Some(second));
    assert_eq!(f.len(CHAIN_PENDING), 0);
    f.ask(|reply| StoreCmd::ChainBatchDone { id: 6, reply }).unwrap();
    assert_eq!(f.take_batch(0xa1, 10).unwrap(), None);

    // Only credit nobody can receive: no batch, and the credit is gone.
    f.set_pending(&[(2, 1, 1)]);
    assert_eq!(f.take_batch(0xa1, 10).unwrap(), None);
    assert_eq!(f.len(CHAIN_PENDING), 0);
    assert_eq!(f.outbox.pending_users.load(Ordering::Relaxed), 0);
    assert_eq!(f.meta("chain_last_batch"), Some(6));
}

#[test]
fn renumber_chain_batch_moves_the_batch_in_flight() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.set_reputation(0xa1, 4).unwrap();
    f.ask(|reply| StoreCmd::RenumberChainBatch { to: 3, reply }).unwrap();
    assert_eq!(f.meta("chain_last_batch"), Some(4));
    assert_eq!(f.len(CHAIN_BATCH), 0);

    f.set_pending(&[(1, 10, 20)]);
    let batch = f.take_batch(0xa1, 10).unwrap().unwrap();
    assert_eq!(batch.id, 5);
    f.ask(|reply| StoreCmd::RenumberChainBatch { to: 2, reply }).unwrap();
    let moved = ChainBatch { id: 2, ..batch };
    let stored = f.read(|tx| Ok(chain_batches(tx)));
    assert_eq!(stored, vec![(2, moved.clone())]);
    assert_eq!(f.meta("chain_last_batch"), Some(1));
    assert_eq!(f.outbox.batch_id.load(Ordering::Relaxed), 2);
    assert_eq!(f.outbox.last_batch_id.load(Ordering::Relaxed), 1);
    assert_eq!(f.take_batch(0xa1, 10).unwrap(), Some(moved));
}

/// Every row of `chain_batch`.
fn chain_batches(tx: &ReadTransaction) -> Vec<(u64, ChainBatch)> {
    let table = tx.open_table(CHAIN_BATCH).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            (k.value(), serde_json::from_slice(v.value()).unwrap())
        })
        .collect()
}

#[test]
fn sync_is_answered_once_the_commands_before_it_are_durable() {
    let mut f = Fixture::new();
    let (reply, rx) = flume::bounded(1);
    let user = StatDelta { user: 1, info_hash: T, uploaded: 3, downloaded: 4 };
    let flush = StoreCmd::Flush { deltas: vec![user], snatches: vec![] };
    assert!(f.apply(vec![flush, StoreCmd::Sync { reply }]).is_empty());
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    assert_eq!(f.db.user_torrents(1).unwrap(), vec![(T, 3, 4)]);
}

#[test]
fn a_failed_commit_applies_nothing_and_releases_its_receipts_for_a_later_batch() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.create_user("bob", Some(2));
    let claims: Vec<PieceClaim> =
        f.reserve(&[receipt(2, 0), receipt(2, 1)]).into_iter().map(Result::unwrap).collect();
    let credits: Vec<ReceiptCredit> = claims
        .iter()
        .map(|&claim| ReceiptCredit { claim, uploader: 1, signer: 2, bytes: 100 })
        .collect();
    let delta = StatDelta { user: 1, info_hash: T, uploaded: 10, downloaded: 20 };

    let before = (f.user(1), f.user(2));
    f.db.commit_faults = 1;
    // Only a batch with announce accounting is refused (PBTS_FAULT_COMMIT's contract).
    f.ask(|reply| StoreCmd::Sync { reply }).unwrap();
    assert_eq!(f.db.commit_faults, 1);
    let (credit_tx, credit_rx) = flume::bounded(1);
    let (user_tx, user_rx) = flume::bounded(1);
    let (taken_tx, taken_rx) = flume::bounded(1);
    let (overrides_tx, overrides_rx) = flume::bounded(1);
    let (sync_tx, sync_rx) = flume::bounded(1);
    let window = Overrides { min_ratio: None, receipt_window_secs: Some(60) };
    let retry = f.apply(vec![
        StoreCmd::CreditReceipts { credits: credits.clone(), release: vec![], reply: credit_tx },
        StoreCmd::CreateUser {
            name: "carol".to_owned(),
            invite: None,
            public_key: Some(pk(3)),
            reply: user_tx,
        },
        StoreCmd::CreateUser {
            name: "alice".to_owned(),
            invite: None,
            public_key: None,
            reply: taken_tx,
        },
        StoreCmd::SetOverrides { overrides: window, reply: overrides_tx },
        StoreCmd::Flush { deltas: vec![delta], snatches: vec![(T, 1)] },
        StoreCmd::Sync { reply: sync_tx },
    ]);

    // Every reply that waited for the commit says why it did not happen; a refusal was sent as
    // it was.
    let refused = "not saved: the database failed (commit refused by fault injection (0 more to \
                   refuse)); nothing was changed, try again";
    let text = |r: Result<(), StoreError>| r.map_err(|e| e.to_string());
    assert_eq!(text(credit_rx.try_recv().unwrap()), Err(refused.to_owned()));
    assert_eq!(text(user_rx.try_recv().unwrap().map(drop)), Err(refused.to_owned()));
    assert_eq!(text(overrides_rx.try_recv().unwrap().map(drop)), Err(refused.to_owned()));
    assert_eq!(text(sync_rx.try_recv().unwrap()), Err(refused.to_owned()));
    assert!(matches!(taken_rx.try_recv(), Ok(Err(StoreError::UserExists(_)))));
    assert_eq!(f.db.commit_faults, 0);
    assert_eq!(f.health.commit_failures.load(Ordering::Relaxed), 1);
    // Nothing is on disk.
    assert_eq!(f.credited(&claims[0]).len(), 0);
    assert_eq!(f.meta("credited_pieces"), None);
    assert_eq!((f.user(1), f.user(2)), before);
    assert_eq!((f.pending(1), f.pending(2)), (None, None));
    assert_eq!(f.meta("next_user_id"), Some(3));
    assert_eq!(
        (f.len(USERS), f.len(USER_KEYS), f.len(USER_TORRENT), f.len(SNATCHES)),
        (2, 2, 0, 0)
    );
    assert_eq!(f.meta_text("config_overrides"), None);
    // Nor in memory, and the reservations are gone.
    assert!(f.accounts.by_name("carol").is_none() && f.accounts.by_key(&pk(3)).is_none());
    assert_eq!(f.accounts.by_id(1).unwrap().verified_uploaded.load(Ordering::Relaxed), 0);
    assert_eq!(f.stats.credited_pieces.load(Ordering::Relaxed), 0);
    assert_eq!(f.db.overrides(), Overrides::default());
    assert_eq!(f.db.ledger.freshness(), Freshness::default());
    assert_eq!(f.db.ledger.reserved_len(), 0);
    // The accounting is handed back for a retry, as it was.
    let [StoreCmd::Flush { deltas, snatches }] = retry.as_slice() else {
        panic!("one flush to retry, not {retry:?}")
    };
    assert_eq!((deltas.as_slice(), snatches.as_slice()), (&[delta][..], &[(T, 1)][..]));

    // A later batch credits the same receipts, once.
    assert_eq!(f.reserve(&[receipt(2, 0), receipt(2, 1)]), vec![Ok(claims[0]), Ok(claims[1])]);
    f.ask(|reply| StoreCmd::CreditReceipts { credits, release: vec![], reply }).unwrap();
    assert!(f.apply(retry).is_empty());
    assert_eq!(f.meta("credited_pieces"), Some(2));
    assert_eq!((f.user(1).verified_uploaded, f.user(2).verified_downloaded), (200, 200));
    assert_eq!((f.user(1).uploaded, f.user(1).downloaded), (10, 20));
    assert_eq!(f.db.user_torrents(1).unwrap(), vec![(T, 10, 20)]);
    assert_eq!(f.health.commit_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn a_command_failing_half_way_aborts_the_whole_batch() {
    let mut f = Fixture::new();
    f.create_user("alice", Some(1));
    f.create_user("bob", Some(2));
    // A name without its user: attaching a key to it is a database error, not a refusal.
    f.write(|tx| {
        tx.open_table(USER_NAMES)?.insert("ghost", 42)?;
        Ok(())
    });
    let claims = f.reserve(&[receipt(2, 0), receipt(2, 1)]);
    let (claim, later) = (claims[0].unwrap(), claims[1].unwrap());
    let credit = ReceiptCredit { claim, uploader: 1, signer: 2, bytes: 100 };
    let later_credit = ReceiptCredit { claim: later, ..credit };
    let (credit_tx, credit_rx) = flume::bounded(1);
    let (user_tx, user_rx) = flume::bounded(1);
    let (ghost_tx, ghost_rx) = flume::bounded(1);
    let (later_tx, later_rx) = flume::bounded(1);
    let (sync_tx, sync_rx) = flume::bounded(1);
    let retry = f.apply(vec![
        StoreCmd::CreditReceipts { credits: vec![credit], release: vec![], reply: credit_tx },
        StoreCmd::CreateUser {
            name: "dave".to_owned(),
            invite: None,
            public_key: None,
            reply: user_tx,
        },
        StoreCmd::AttachKey { name: "ghost".to_owned(), public_key: pk(4), reply: ghost_tx },
        StoreCmd::CreditReceipts { credits: vec![later_credit], release: vec![], reply: later_tx },
        StoreCmd::Sync { reply: sync_tx },
    ]);
    assert!(retry.is_empty());
    // Every command is answered: none of them happened, and each caller may try again.
    let not_saved = |e: &StoreError| matches!(e, StoreError::NotCommitted(_));
    assert!(credit_rx.try_recv().unwrap().is_err_and(|e| not_saved(&e)));
    assert!(user_rx.try_recv().unwrap().is_err_and(|e| not_saved(&e)));
    assert!(ghost_rx.try_recv().unwrap().is_err_and(|e| not_saved(&e)));
    assert!(later_rx.try_recv().unwrap().is_err_and(|e| not_saved(&e)));
    assert!(sync_rx.try_recv().unwrap().is_err_and(|e| not_saved(&e)));
    assert_eq!(f.health.commit_failures.load(Ordering::Relaxed), 1);
    assert_eq!((f.len(USERS), f.meta("next_user_id")), (2, Some(3)));
    assert!(f.accounts.by_name("dave").is_none());
    assert_eq!((f.credited(&claim).len(), f.user(1).verified_uploaded), (0, 0));
    // The receipts of both credits, before and after the failing command, are free again:
    // a later report credits them.
    assert!(!f.db.ledger.is_reserved(&claim));
    assert!(!f.db.ledger.is_reserved(&later));
    assert_eq!(f.reserve(&[receipt(2, 0), receipt(2, 1)]), vec![Ok(claim), Ok(later)]);
}

#[test]
fn add_to_pair_adds_saturates_and_refuses_a_corrupt_value() {
    let f = Fixture::new();
    f.write(|tx| {
        let mut table = tx.open_table(USER_TORRENT)?;
        let key = [7u8; 24];
        assert_eq!(add_to_pair(&mut table, "user_torrent", &key[..], (1, 2))?, (1, 2));
        assert_eq!(add_to_pair(&mut table, "user_torrent", &key[..], (3, 4))?, (4, 6));
        assert_eq!(add_to_pair(&mut table, "user_torrent", &key[..], (u64::MAX, 0))?, (u64::MAX, 6));
        let stored = table.get(&key[..])?.map(|v| decode_pair(v.value()));
        assert_eq!(stored, Some(Some((u64::MAX, 6))));
        table.insert(&[8u8; 24][..], &[1u8, 2, 3][..])?;
        let corrupt = add_to_pair(&mut table, "user_torrent", &[8u8; 24][..], (1, 1));
        assert!(
            matches!(&corrupt, Err(StoreError::Corrupt { table: "user_torrent", message }) if message == "value"),
            "{corrupt:?}"
        );
        let mut pending = tx.open_table(CHAIN_PENDING)?;
        assert_eq!(add_to_pair(&mut pending, "chain_pending", 5, (5, 6))?, (5, 6));
        Ok(())
    });
}
