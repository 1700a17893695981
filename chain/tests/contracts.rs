//! The contracts against a real anvil: every function, every revert, every event, the referrer
//! chain, exactly-once batches, and the committed bytecode being what runs.

#![allow(clippy::unwrap_used, missing_docs)]

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use pbts_chain::bindings::Reputation::{
    BatchOutOfOrder, LengthMismatch, NotOwner, ReferrerNotContract, ReferrerNotReputation,
    UserDoesNotExist, UserExists, ZeroPasswordHash,
};
use pbts_chain::bindings::{Reputation, ReputationFactory};
use pbts_chain::{
    BatchOutcome, ChainClient, ChainConfig, ChainError, CreditEntry, NO_TEE_ATTESTATION,
    ReputationError as E, RevertReason, TxOutcome, UserRecord,
};
use pbts_testkit::anvil::{Anvil, dev_key};

fn client(anvil: &Anvil, account: usize) -> ChainClient {
    let config = ChainConfig { rpc_url: anvil.url(), ..ChainConfig::default() };
    ChainClient::connect(&config, &dev_key(account)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn user(name: &str, hash: u8, down: u64, up: u64) -> UserRecord {
    UserRecord {
        username: name.to_owned(),
        salt: format!("salt-{name}"),
        password_hash: B256::repeat_byte(hash),
        download_size: U256::from(down),
        upload_size: U256::from(up),
    }
}

/// Asserts that `r` is the contract refusing with `expected`, decoded from its revert data.
fn reverted(r: Result<impl std::fmt::Debug, ChainError>, expected: E) {
    match r {
        Err(ChainError::Reverted(RevertReason::Reputation(got))) => assert_eq!(got, expected),
        other => panic!("expected revert {expected:?}, got {other:?}"),
    }
}

/// `NotOwner` for `caller` on a contract owned by `owner`.
fn not_owner(caller: &ChainClient, owner: &ChainClient) -> E {
    E::NotOwner(NotOwner { caller: caller.account(), owner: owner.account() })
}

fn user_exists(name: &str) -> E {
    E::UserExists(UserExists { username: name.into() })
}

fn no_such_user(name: &str) -> E {
    E::UserDoesNotExist(UserDoesNotExist { username: name.into() })
}

fn zero_hash(name: &str) -> E {
    E::ZeroPasswordHash(ZeroPasswordHash { username: name.into() })
}

/// `LengthMismatch(1, 0)`: one username, an empty array beside it.
fn one_name_no_values() -> E {
    E::LengthMismatch(LengthMismatch { expected: U256::from(1), got: U256::ZERO })
}

/// The logs of `E` that `tx` emitted from `from`.
async fn events<E: SolEvent>(c: &ChainClient, tx: &TxOutcome, from: Address) -> Vec<E> {
    let receipt = c.provider().get_transaction_receipt(tx.tx_hash).await.unwrap().unwrap();
    receipt
        .logs()
        .iter()
        .filter(|l| l.address() == from)
        .filter_map(|l| E::decode_log(&l.inner).ok().map(|l| l.data))
        .collect()
}

#[test]
fn factory_deploys_owned_reputations_and_publishes_the_attestation() {
    let anvil = Anvil::start().unwrap();
    let rt = rt();
    let c = client(&anvil, 0);
    rt.block_on(async {
        let factory = c.deploy_factory().await.unwrap();
        // What runs on chain is exactly the committed artifact.
        let code = c.provider().get_code_at(factory.address).await.unwrap();
        assert_eq!(code, ReputationFactory::DEPLOYED_BYTECODE);

        let rep = c
            .create_reputation(factory.address, Address::ZERO, NO_TEE_ATTESTATION.to_vec())
            .await
            .unwrap();
        let created =
            events::<ReputationFactory::ReputationCreated>(&c, &rep.tx, factory.address).await;
        assert_eq!(
            created,
            vec![ReputationFactory::ReputationCreated {
                newReputationAddress: rep.address,
                owner: c.account(),
                referrer: Address::ZERO,
                attestation: NO_TEE_ATTESTATION.to_vec().into(),
            }]
        );
        assert_eq!(c.describe(rep.address).await.unwrap(), (c.account(), Address::ZERO));
        let code = c.provider().get_code_at(rep.address).await.unwrap();
        assert_eq!(code, Reputation::DEPLOYED_BYTECODE);

        // The referrer is checked, not silently dropped.
        let eoa = dev_key(1).address();
        // The constructor's error bubbles up through the factory unchanged.
        reverted(
            c.create_reputation(factory.address, eoa, vec![]).await,
            E::ReferrerNotContract(ReferrerNotContract { referrer: eoa }),
        );
        reverted(
            c.create_reputation(factory.address, factory.address, vec![]).await,
            E::ReferrerNotReputation(ReferrerNotReputation { referrer: factory.address }),
        );
        let child =
            c.create_reputation(factory.address, rep.address, b"quote".to_vec()).await.unwrap();
        assert_eq!(c.describe(child.address).await.unwrap(), (c.account(), rep.address));
        // Another account's contract is owned by that account.
        let other = client(&anvil, 1);
        let theirs = other.create_reputation(factory.address, Address::ZERO, vec![]).await.unwrap();
        assert_eq!(c.describe(theirs.address).await.unwrap().0, other.account());
    });
}

#[test]
fn users_are_added_once_updated_by_the_owner_and_every_write_emits_an_event() {
    let anvil = Anvil::start().unwrap();
    let rt = rt();
    let c = client(&anvil, 0);
    let mallory = client(&anvil, 1);
    rt.block_on(async {
        let factory = c.deploy_factory().await.unwrap().address;
        let rep = c.create_reputation(factory, Address::ZERO, vec![]).await.unwrap().address;
        let alice = user("alice", 0xa1, 0, 1024);
        let tx = c.add_user(rep, &alice).await.unwrap();
        assert_eq!(c.get_user(rep, "alice").await.unwrap(), Some(alice.clone()));
        assert_eq!(
            events::<Reputation::UserAdded>(&c, &tx, rep).await,
            vec![Reputation::UserAdded {
                userKey: keccak256("alice"),
                username: "alice".into(),
                downloadSize: U256::ZERO,
                uploadSize: U256::from(1024),
            }]
        );
        assert_eq!(c.get_user(rep, "nobody").await.unwrap(), None);

        reverted(c.add_user(rep, &user("alice", 0xff, 9, 9)).await, user_exists("alice"));
        assert_eq!(c.get_user(rep, "alice").await.unwrap(), Some(alice), "no silent overwrite");
        reverted(c.add_user(rep, &user("zero", 0, 0, 0)).await, zero_hash("zero"));
        reverted(mallory.add_user(rep, &user("eve", 0xee, 0, 0)).await, not_owner(&mallory, &c));

        let tx = c.update_user(rep, "alice", U256::from(100), U256::from(200)).await.unwrap();
        let got = c.get_user(rep, "alice").await.unwrap().unwrap();
        assert_eq!((got.download_size, got.upload_size), (U256::from(100), U256::from(200)));
        assert_eq!(got.salt, "salt-alice");
        assert_eq!(
            events::<Reputation::UserUpdated>(&c, &tx, rep).await,
            vec![Reputation::UserUpdated {
                userKey: keccak256("alice"),
                username: "alice".into(),
                downloadSize: U256::from(100),
                uploadSize: U256::from(200),
            }]
        );
        reverted(c.update_user(rep, "bob", U256::ZERO, U256::ZERO).await, no_such_user("bob"));
        reverted(
            mallory.update_user(rep, "alice", U256::ZERO, U256::ZERO).await,
            not_owner(&mallory, &c),
        );

        // Batch update: all or nothing.
        c.add_user(rep, &user("bob", 0xb0, 0, 0)).await.unwrap();
        c.add_user(rep, &user("carol", 0xc0, 0, 0)).await.unwrap();
        let batch = |n: &[&str]| {
            n.iter()
                .enumerate()
                .map(|(i, s)| (s.to_string(), U256::from(i + 1), U256::from(10 * (i + 1))))
                .collect::<Vec<_>>()
        };
        reverted(
            c.update_users(rep, &batch(&["alice", "bob", "dave"])).await,
            no_such_user("dave"),
        );
        assert_eq!(c.get_user(rep, "bob").await.unwrap().unwrap().download_size, U256::ZERO);
        let tx = c.update_users(rep, &batch(&["alice", "bob", "carol"])).await.unwrap();
        assert_eq!(events::<Reputation::UserUpdated>(&c, &tx, rep).await.len(), 3);
        let carol = c.get_user(rep, "carol").await.unwrap().unwrap();
        assert_eq!((carol.download_size, carol.upload_size), (U256::from(3), U256::from(30)));
        let r = Reputation::new(rep, c.provider().clone());
        let mismatch = r.updateUsers(vec!["alice".into()], vec![], vec![U256::ZERO]);
        let err = mismatch.from(c.account()).estimate_gas().await.unwrap_err();
        assert_eq!(err.as_decoded_interface_error::<E>(), Some(one_name_no_values()), "{err}");

        // Off-chain URL.
        let tx = c.set_offchain_url(rep, "https://tracker.example/data").await.unwrap();
        assert_eq!(r.getOffchainDataUrl().call().await.unwrap(), "https://tracker.example/data");
        assert_eq!(r.offchainDataUrl().call().await.unwrap(), "https://tracker.example/data");
        assert_eq!(
            events::<Reputation::OffchainDataUrlSet>(&c, &tx, rep).await,
            vec![Reputation::OffchainDataUrlSet { url: "https://tracker.example/data".into() }]
        );
        reverted(mallory.set_offchain_url(rep, "x").await, not_owner(&mallory, &c));
        // The original's public getter still works.
        let row = r.allUsers("carol".into()).call().await.unwrap();
        assert_eq!((row.username, row.uploadSize), ("carol".to_owned(), U256::from(30)));
    });
}

#[test]
fn migration_walks_a_three_contract_referrer_chain() {
    let anvil = Anvil::start().unwrap();
    let rt = rt();
    let c = client(&anvil, 0);
    let mallory = client(&anvil, 1);
    rt.block_on(async {
        let factory = c.deploy_factory().await.unwrap().address;
        let c1 = c.create_reputation(factory, Address::ZERO, vec![]).await.unwrap().address;
        c.add_user(c1, &user("alice", 0xa1, 7, 9)).await.unwrap();
        c.add_user(c1, &user("bob", 0xb0, 1, 2)).await.unwrap();
        let c2 = c.create_reputation(factory, c1, vec![]).await.unwrap().address;
        c.add_user(c2, &user("carol", 0xc0, 3, 4)).await.unwrap();
        // Bob was re-added on c2 with newer totals: the nearest referrer wins.
        c.add_user(c2, &user("bob", 0xb0, 100, 200)).await.unwrap();
        let c3 = c.create_reputation(factory, c2, vec![]).await.unwrap().address;

        let m = c.migrate_user(c3, "alice").await.unwrap();
        assert_eq!(m.source, Some(c1), "two levels up");
        assert_eq!(c.get_user(c3, "alice").await.unwrap(), Some(user("alice", 0xa1, 7, 9)));
        assert_eq!(
            events::<Reputation::UserMigrated>(&c, &m.tx, c3).await,
            vec![Reputation::UserMigrated {
                userKey: keccak256("alice"),
                username: "alice".into(),
                source: c1,
                downloadSize: U256::from(7),
                uploadSize: U256::from(9),
            }]
        );
        assert_eq!(c.migrate_user(c3, "carol").await.unwrap().source, Some(c2));
        let found = c.find_user(c3, "bob").await.unwrap().unwrap();
        assert_eq!((found.source, found.user.upload_size), (c2, U256::from(200)));
        assert_eq!(c.migrate_user(c3, "bob").await.unwrap().source, Some(c2));
        // Nobody anywhere: a no-op, not an error.
        let none = c.migrate_user(c3, "nobody").await.unwrap();
        assert_eq!(none.source, None);
        assert!(events::<Reputation::UserMigrated>(&c, &none.tx, c3).await.is_empty());
        assert_eq!(c.find_user(c3, "nobody").await.unwrap(), None);
        reverted(c.migrate_user(c3, "alice").await, user_exists("alice"));
        reverted(mallory.migrate_user(c3, "dave").await, not_owner(&mallory, &c));
        // The old contracts are untouched; the new copy is independent.
        c.update_user(c3, "alice", U256::from(70), U256::from(90)).await.unwrap();
        assert_eq!(c.get_user(c1, "alice").await.unwrap(), Some(user("alice", 0xa1, 7, 9)));
        let found = c.find_user(c3, "alice").await.unwrap().unwrap();
        assert_eq!((found.source, found.user.download_size), (c3, U256::from(70)));
    });
}

#[test]
fn credit_batches_apply_once_in_order_and_carry_reputation_over_by_key() {
    let anvil = Anvil::start().unwrap();
    let rt = rt();
    let c = client(&anvil, 0);
    let mallory = client(&anvil, 1);
    let entry = |name: &str, key: u8, down: u64, up: u64| CreditEntry {
        username: name.to_owned(),
        key_hash: [key; 32],
        download_delta: down,
        upload_delta: up,
    };
    rt.block_on(async {
        let factory = c.deploy_factory().await.unwrap().address;
        let old = c.create_reputation(factory, Address::ZERO, vec![]).await.unwrap().address;
        let b1 = vec![entry("alice", 0xa1, 0, 1000), entry("bob", 0xb0, 1000, 0)];
        let BatchOutcome::Applied(tx) = c.credit_users(old, 1, &b1).await.unwrap() else {
            panic!()
        };
        let credited = events::<Reputation::UserCredited>(&c, &tx, old).await;
        assert_eq!(credited.len(), 2);
        assert_eq!(credited[0].uploadSize, U256::from(1000));
        assert_eq!(events::<Reputation::UserAdded>(&c, &tx, old).await.len(), 2);
        assert_eq!(
            events::<Reputation::BatchApplied>(&c, &tx, old).await,
            vec![Reputation::BatchApplied { batchId: 1, users: U256::from(2) }]
        );
        // A replay (the tracker resending after a crash) changes nothing and sends nothing.
        let block = c.provider().get_block_number().await.unwrap();
        assert_eq!(c.credit_users(old, 1, &b1).await.unwrap(), BatchOutcome::AlreadyApplied);
        assert_eq!(c.provider().get_block_number().await.unwrap(), block);
        reverted(
            c.credit_users(old, 3, &b1).await,
            E::BatchOutOfOrder(BatchOutOfOrder { expected: 2, got: 3 }),
        );
        reverted(mallory.credit_users(old, 2, &b1).await, not_owner(&mallory, &c));
        reverted(c.credit_users(old, 2, &[entry("zed", 0, 1, 1)]).await, zero_hash("zed"));
        assert!(matches!(
            c.credit_users(old, 2, &[entry("alice", 0xa1, 5, 500)]).await,
            Ok(BatchOutcome::Applied(_))
        ));
        assert_eq!(c.last_batch_id(old).await.unwrap(), 2);
        let a = c.get_user(old, "alice").await.unwrap().unwrap();
        assert_eq!(
            (a.download_size, a.upload_size, a.password_hash),
            (U256::from(5), U256::from(1500), B256::repeat_byte(0xa1))
        );
        assert_eq!(a.salt, "");

        // A successor instance: alice (same key) inherits, "bob" with another key does not.
        let new = c.create_reputation(factory, old, vec![]).await.unwrap().address;
        assert_eq!(c.last_batch_id(new).await.unwrap(), 0);
        let b = vec![entry("alice", 0xa1, 0, 1), entry("bob", 0xbb, 0, 1)];
        let BatchOutcome::Applied(tx) = c.credit_users(new, 1, &b).await.unwrap() else { panic!() };
        let migrated = events::<Reputation::UserMigrated>(&c, &tx, new).await;
        assert_eq!(migrated.len(), 1);
        assert_eq!((migrated[0].username.as_str(), migrated[0].source), ("alice", old));
        let a = c.get_user(new, "alice").await.unwrap().unwrap();
        assert_eq!((a.download_size, a.upload_size), (U256::from(5), U256::from(1501)));
        let bob = c.get_user(new, "bob").await.unwrap().unwrap();
        assert_eq!((bob.download_size, bob.upload_size), (U256::ZERO, U256::from(1)));
        assert_eq!(c.get_user(old, "bob").await.unwrap().unwrap().download_size, U256::from(1000));
    });
}

#[test]
fn concurrent_writes_through_the_chain_thread_never_collide_on_a_nonce() {
    let anvil = Anvil::start().unwrap();
    let config = ChainConfig { rpc_url: anvil.url(), ..ChainConfig::default() };
    let chain = pbts_chain::ChainHandle::start(config, dev_key(0)).unwrap();
    use pbts_chain::worker::wait;
    let factory = wait(&chain.deploy_factory()).unwrap().address;
    let rep = wait(&chain.create_reputation(factory, Address::ZERO, vec![])).unwrap().address;
    let replies: Vec<_> = (0..12u8)
        .map(|i| chain.add_user(rep, user(&format!("u{i}"), i + 1, 0, u64::from(i))))
        .collect();
    let mut hashes: Vec<_> = replies.iter().map(|r| wait(r).unwrap().tx_hash).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 12);
    for i in 0..12u8 {
        let found = wait(&chain.find_user(rep, format!("u{i}"))).unwrap().unwrap();
        assert_eq!(found.user.upload_size, U256::from(i));
    }
    let status = wait(&chain.status()).unwrap();
    assert_eq!(status.chain_id, 31337);
    assert_eq!(status.account, dev_key(0).address());
    // The node going away is a transient RPC error, not a revert.
    drop(anvil);
    let err = wait(&chain.status()).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[test]
fn gas_table_measures_every_operation_and_batches_are_cheaper_per_user() {
    let anvil = Anvil::start().unwrap();
    let c = client(&anvil, 0);
    let report = rt().block_on(pbts_testkit::gas::measure(&c, 5)).unwrap();
    assert_eq!(report.rows.len(), 16);
    assert!(report.rows.iter().all(|r| r.gas > 21_000), "{:?}", report.rows);
    let per_user = |prefix: &str| {
        report.rows.iter().find(|r| r.operation.starts_with(prefix)).unwrap().per_user()
    };
    let single = per_user("updateUser x5");
    let batched = per_user("creditUsers, 5 existing users");
    assert!(batched < single / 1.5, "batched {batched} vs single {single}");
    assert!(per_user("updateUsers, 5 users") < single);
    assert_eq!(report.projections.len(), 12);
    let daily_1000 =
        report.projections.iter().find(|p| p.frequency == "daily" && p.users == 1000).unwrap();
    assert_eq!(daily_1000.updates_per_year, 365);
    assert!((daily_1000.batched_gas - 365_000.0 * batched).abs() < 1.0);
    assert!(report.rows_markdown().starts_with("| operation | users | gas | gas per user |\n"));
    assert_eq!(report.rows_csv().lines().count(), 17);
    assert_eq!(report.projections_csv().lines().count(), 13);
}

#[test]
fn migration_depth_is_bounded_and_credit_arrays_must_match() {
    let anvil = Anvil::start().unwrap();
    let rt = rt();
    let c = client(&anvil, 0);
    rt.block_on(async {
        let factory = c.deploy_factory().await.unwrap().address;
        let root = c.create_reputation(factory, Address::ZERO, vec![]).await.unwrap().address;
        c.add_user(root, &user("deep", 0xde, 1, 1)).await.unwrap();
        let r = Reputation::new(root, c.provider().clone());
        let max: u64 = r.MAX_REFERRER_DEPTH().call().await.unwrap().try_into().unwrap();
        assert_eq!(max, 16);
        // A chain of exactly MAX_REFERRER_DEPTH referrers above the last contract still finds
        // the user; one more level does not.
        let mut tip = root;
        for _ in 0..max {
            tip = c.create_reputation(factory, tip, vec![]).await.unwrap().address;
        }
        assert_eq!(c.find_user(tip, "deep").await.unwrap().unwrap().source, root);
        let beyond = c.create_reputation(factory, tip, vec![]).await.unwrap().address;
        assert_eq!(c.find_user(beyond, "deep").await.unwrap(), None);
        assert_eq!(c.migrate_user(beyond, "deep").await.unwrap().source, None);

        let call = r.creditUsers(1, vec!["a".into()], vec![], vec![U256::ZERO], vec![U256::ZERO]);
        let err = call.from(c.account()).estimate_gas().await.unwrap_err();
        assert_eq!(err.as_decoded_interface_error::<E>(), Some(one_name_no_values()), "{err}");
    });
}
