//! On-chain reputation through the tracker, against a real anvil on 127.0.0.1: the
//! `/contract/*` endpoints, the durable outbox (anvil stopped and restarted, the tracker killed
//! and restarted: nothing lost, nothing applied twice), and reputation carried from one tracker
//! instance to another through the referrer chain.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::receipts::*;
use common::*;
use pbts_chain::worker::wait;
use pbts_chain::{Address, ChainConfig, ChainHandle};
use pbts_engine::config::TrackerMode;
use pbts_testkit::anvil::{Anvil, DEV_KEYS, dev_key, free_port};
use serde_json::{Value, json};

/// A chain client of our own, as development account 0.
fn chain(anvil: &Anvil) -> ChainHandle {
    let config = ChainConfig { rpc_url: anvil.url(), ..ChainConfig::default() };
    ChainHandle::start(config, dev_key(0)).unwrap()
}

/// Deploys a factory with development account 0, outside the tracker.
fn deploy_factory(anvil: &Anvil) -> Address {
    wait(&chain(anvil).deploy_factory()).unwrap().address
}

/// Writes development key `account` to a file in `dir`.
fn key_file(dir: &Path, account: usize) -> String {
    let path = dir.join(format!("chain-key-{account}"));
    std::fs::write(&path, DEV_KEYS[account]).unwrap();
    path.display().to_string()
}

/// The `[chain]` section for a server of ours.
fn chain_toml(anvil_url: &str, key: &str, factory: Address) -> String {
    format!(
        "[chain]\nrpc_url = \"{anvil_url}\"\nkey_file = \"{key}\"\nfactory_address = \"{factory}\"\n\
         flush_interval_secs = 1\nmax_backoff_secs = 1\nrpc_timeout_secs = 2\ntx_timeout_secs = 5\n"
    )
}

/// Polls `f` until it returns `Some`, for at most 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (downloadSize, uploadSize, source) of a user as the tracker at `addr` reads the chain.
fn on_chain(addr: SocketAddr, name: &str) -> Option<(u64, u64, String)> {
    let (status, v) = call(addr, "GET", &format!("/contract/user/{name}"), None);
    (status == 200).then(|| {
        let u = &v["user"];
        (
            u["downloadSize"].as_u64().unwrap(),
            u["uploadSize"].as_u64().unwrap(),
            v["source_address"].as_str().unwrap().to_owned(),
        )
    })
}

fn init(addr: SocketAddr, referrer: Option<&str>) -> String {
    let body = referrer.map_or(json!({}), |r| json!({"referrer_address": r}));
    let (status, v) = call(addr, "POST", "/contract/init", Some(body));
    assert_eq!(status, 200, "{v}");
    v["reputation_address"].as_str().unwrap().to_owned()
}

#[test]
fn contract_endpoints_write_as_admin_and_report_reverts_with_their_reason() {
    let anvil = Anvil::start().unwrap();
    let factory = deploy_factory(&anvil);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0);
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.chain = pbts_chain::ChainConfig {
            rpc_url: anvil.url(),
            key_file: key.clone(),
            factory_address: factory.to_string(),
            ..Default::default()
        };
    });
    let a = srv.v4;
    let (status, s) = call(a, "GET", "/contract/status", None);
    assert_eq!(status, 200);
    assert_eq!((s["configured"].as_bool(), s["connected"].as_bool()), (Some(true), Some(true)));
    assert_eq!(s["chain_id"], 31337);
    assert_eq!(s["account_address"], dev_key(0).address().to_string());
    assert_eq!(s["factory_address"], factory.to_string());
    assert_eq!(s["reputation_address"], Value::Null);
    assert_eq!(s["outbox"]["pending_users"], 0);

    let alice =
        json!({"username": "alice", "salt": "s", "password_hash": "0xabc", "upload_size": 1024});
    fails(
        call(a, "POST", "/contract/register", Some(alice.clone())),
        400,
        "No Reputation contract initialized. Call /contract/init first.",
    );
    fails(
        call(a, "POST", "/contract/init", Some(json!({"referrer_address": "0x123"}))),
        400,
        "referrer_address must be a 20-byte hex address",
    );
    let eoa = dev_key(2).address().to_string();
    fails(
        call(a, "POST", "/contract/init", Some(json!({"referrer_address": eoa}))),
        409,
        &format!("reverted: Referrer is not a contract: {eoa}"),
    );
    let first = init(a, None);
    assert_eq!(call(a, "GET", "/contract/status", None).1["reputation_address"], first);

    let (status, v) = call(a, "POST", "/contract/register", Some(alice.clone()));
    assert_eq!(status, 200, "{v}");
    assert!(v["tx_hash"].as_str().unwrap().starts_with("0x"));
    fails(call(a, "POST", "/contract/register", Some(alice)), 409, "reverted: User exists: alice");
    let (status, v) = call(a, "GET", "/contract/user/alice", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["user"],
        json!({
            "username": "alice", "salt": "s",
            "passwordHash": format!("0x{}abc", "0".repeat(61)),
            "downloadSize": 0, "uploadSize": 1024, "ratio": null,
        })
    );
    assert_eq!(v["source_address"], first);
    let (status, v) = call(
        a,
        "POST",
        "/contract/update",
        Some(json!({"username": "alice", "download_size": 100, "upload_size": 200})),
    );
    assert_eq!((status, v["download_size"].as_u64()), (200, Some(100)), "{v}");
    assert_eq!(call(a, "GET", "/contract/user/alice", None).1["user"]["ratio"], 2.0);
    fails(
        call(
            a,
            "POST",
            "/contract/update",
            Some(json!({"username": "bob", "download_size": 1, "upload_size": 1})),
        ),
        409,
        "reverted: User does not exist: bob",
    );
    fails(
        call(a, "GET", "/contract/user/nobody", None),
        404,
        &format!("user not found in {first} or its referrers"),
    );
    // On-chain names are free text: the path parameter is percent-decoded before the lookup.
    let spaced = json!({"username": "alice smith", "salt": "s", "password_hash": "0x1"});
    assert_eq!(call(a, "POST", "/contract/register", Some(spaced)).0, 200);
    let (status, v) = call(a, "GET", "/contract/user/alice%20smith", None);
    assert_eq!((status, v["user"]["username"].as_str()), (200, Some("alice smith")), "{v}");

    // A successor contract with the first as referrer: alice is visible at once, and copied on
    // migration.
    let second = init(a, Some(&first));
    let (_, v) = call(a, "GET", "/contract/user/alice", None);
    assert_eq!(
        (v["source_address"].as_str(), v["user"]["uploadSize"].as_u64()),
        (Some(first.as_str()), Some(200))
    );
    let (status, v) = call(a, "POST", "/contract/migrate", Some(json!({"username": "alice"})));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["migrated"].as_bool(), v["source_address"].as_str()),
        (Some(true), Some(first.as_str()))
    );
    assert_eq!(call(a, "GET", "/contract/user/alice", None).1["source_address"], second);
    fails(
        call(a, "POST", "/contract/migrate", Some(json!({"username": "alice"}))),
        409,
        "reverted: User exists: alice",
    );
    let (_, v) = call(a, "POST", "/contract/migrate", Some(json!({"username": "nobody"})));
    assert_eq!((v["migrated"].as_bool(), v["source_address"].clone()), (Some(false), Value::Null));

    // The contract in use survives a restart (the original kept it in memory only).
    let srv = srv.restart(TrackerMode::Private, |c| {
        c.chain = pbts_chain::ChainConfig {
            rpc_url: anvil.url(),
            key_file: key.clone(),
            factory_address: factory.to_string(),
            ..Default::default()
        };
        c.admin.allow_loopback = false;
    });
    assert_eq!(call(srv.v4, "GET", "/contract/status", None).1["reputation_address"], second);
    // Writes need admin access; reads do not.
    let body = json!({"username": "alice", "download_size": 1, "upload_size": 1});
    fails(
        call(srv.v4, "POST", "/contract/update", Some(body)),
        403,
        "contract writes require admin access",
    );
    fails(
        call(srv.v4, "POST", "/contract/init", None),
        403,
        "contract writes require admin access",
    );
    assert_eq!(on_chain(srv.v4, "alice").unwrap().1, 200);
}

/// Hosted RPC URLs carry API keys; `GET /contract/status` is public, so it shows the scheme and
/// host only, in `rpc_url` and in the errors it quotes.
#[test]
fn contract_status_redacts_the_rpc_url() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0);
    let port = free_port().unwrap();
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.chain = pbts_chain::ChainConfig {
            rpc_url: format!("http://user:pw@127.0.0.1:{port}/v2/SECRETKEY?apikey=SECRET2"),
            key_file: key.clone(),
            rpc_timeout_secs: 2,
            ..Default::default()
        };
    });
    let (status, _, body) = http_request(srv.v4, "GET", "/contract/status", None);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    let s: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["rpc_url"], format!("http://127.0.0.1:{port}/…"));
    assert_eq!((s["configured"].as_bool(), s["connected"].as_bool()), (Some(true), Some(false)));
    assert!(s["error"].is_string(), "{s}");
    for secret in ["SECRETKEY", "SECRET2", "user:pw", "/v2/"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn contract_endpoints_without_a_chain_say_so() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let (status, s) = call(srv.v4, "GET", "/contract/status", None);
    assert_eq!(status, 200);
    assert_eq!((s["configured"].as_bool(), s["connected"].as_bool()), (Some(false), Some(false)));
    let text =
        "on-chain reputation is not configured: set chain.rpc_url (RPC) and the signing key (PK0)";
    fails(call(srv.v4, "POST", "/contract/init", None), 503, text);
    fails(call(srv.v4, "GET", "/contract/user/alice", None), 503, text);
    // Asking for a chain without a key is a start-up error, not a silent fallback.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(TrackerMode::Private, dir.path());
    config.chain.rpc_url = "http://127.0.0.1:1".into();
    config.chain.key_env = "PBTS_TEST_NO_SUCH_KEY".into();
    let err = pbts_engine::start(config).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "chain key: configuration: no signing key: set chain.key_file or the environment variable \
         PBTS_TEST_NO_SUCH_KEY"
    );
}

#[test]
fn outbox_survives_an_anvil_restart_and_a_tracker_kill_without_loss_or_double_credit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let port = free_port().unwrap();
    let anvil = Anvil::start_on(port, Some(&state)).unwrap();
    let url = anvil.url();
    let factory = deploy_factory(&anvil);
    let key = key_file(dir.path(), 0);
    let toml = chain_toml(&url, &key, factory);
    let tracker_dir = dir.path().join("tracker");
    std::fs::create_dir_all(&tracker_dir).unwrap();
    let p = Proc::spawn(&tracker_dir, &toml);
    let contract = init(p.addr, None);
    let up = register(&p, "up", 1);
    let down = register(&p, "down", 2);
    register_torrent(&p, &IH);
    // Each piece is credited once per downloader: later rounds trade another torrent.
    register_torrent(&p, &OTHER_IH);

    // Three pieces: credited locally, then on chain after a flush.
    let t = now();
    let rs: Vec<Value> = (0..3).map(|i| receipt_json(&receipt(&IH, &up, &down.sk, i, t))).collect();
    assert_eq!(report(&p, &up, &rs).1["credited_bytes"], SIZE);
    let got = eventually("the first batch", || on_chain(p.addr, "up").filter(|u| u.1 == SIZE));
    assert_eq!(got, (0, SIZE, contract.clone()));
    assert_eq!(on_chain(p.addr, "down").unwrap(), (SIZE, 0, contract.clone()));

    // The chain goes away; credit keeps being granted and waits in the outbox.
    anvil.stop();
    let rs: Vec<Value> =
        (0..2).map(|i| receipt_json(&receipt(&OTHER_IH, &up, &down.sk, i, t + 1))).collect();
    assert_eq!(report(&p, &up, &rs).1["credited_bytes"], 2 * PIECE);
    let status = eventually("the outbox to notice", || {
        let (_, s) = call(p.addr, "GET", "/contract/status", None);
        (!s["outbox"]["last_error"].is_null()).then_some(s)
    });
    assert_eq!(status["connected"], false);
    assert!(
        status["outbox"]["batch_in_flight"]["id"].as_u64().is_some()
            || status["outbox"]["pending_users"] != 0,
        "{status}"
    );
    // Announces are still served while the chain is down.
    let q = announce_query(&IH, &[9; 20], 6881, "&left=0");
    assert!(get_body(p.addr, &format!("/{}/announce?{q}", up.passkey)).starts_with(b"d8:complete"));

    // The tracker dies without a chance to flush anything; then both come back.
    drop(p);
    let p = Proc::spawn(&tracker_dir, &toml);
    let _anvil = Anvil::start_on(port, Some(&state)).unwrap();
    let expected_up = SIZE + 2 * PIECE;
    let got = eventually("the batch in flight", || on_chain(p.addr, "up").filter(|u| u.1 != SIZE));
    assert_eq!(got, (0, expected_up, contract.clone()), "applied exactly once");
    assert_eq!(on_chain(p.addr, "down").unwrap(), (expected_up, 0, contract));
    // Local verified stats and the chain agree.
    assert_eq!(verified(&p, "up"), (expected_up, 0));
    let s = eventually("an idle outbox", || {
        let (_, s) = call(p.addr, "GET", "/contract/status", None);
        (s["outbox"]["batch_in_flight"].is_null() && s["outbox"]["pending_users"] == 0).then_some(s)
    });
    assert_eq!(s["outbox"]["last_error"], Value::Null);
    assert_eq!(s["connected"], true);
    // One more report after the restart goes through as a new batch, not a repeat.
    let r = receipt_json(&receipt(&OTHER_IH, &up, &down.sk, 2, t + 2));
    assert_eq!(report(&p, &up, &[r]).1["credited_bytes"], LAST);
    let got =
        eventually("the last batch", || on_chain(p.addr, "up").filter(|u| u.1 != expected_up));
    assert_eq!(got.1, expected_up + LAST);
}

/// One JSON-RPC call to anvil; its `result`.
fn anvil_rpc(anvil: &Anvil, method: &str, params: Value) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], anvil.port()));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, v) = call(addr, "POST", "/", Some(body));
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}

/// The chain loses an applied batch (a node restored from an older snapshot): the contract
/// refuses the tracker's next batch with `BatchOutOfOrder { expected: 2, got: 3 }`, and the
/// outbox renumbers it to 2 and sends it again instead of retrying batch 3 forever.
#[test]
fn outbox_renumbers_a_batch_the_contract_refuses_as_out_of_order() {
    let anvil = Anvil::start().unwrap();
    let factory = deploy_factory(&anvil);
    let dir = tempfile::tempdir().unwrap();
    let toml = chain_toml(&anvil.url(), &key_file(dir.path(), 0), factory);
    let tracker_dir = dir.path().join("tracker");
    std::fs::create_dir_all(&tracker_dir).unwrap();
    let p = Proc::spawn(&tracker_dir, &toml);
    let contract = init(p.addr, None);
    let up = register(&p, "up", 1);
    let down = register(&p, "down", 2);
    register_torrent(&p, &IH);
    register_torrent(&p, &OTHER_IH);
    let idle = || {
        let (_, s) = call(p.addr, "GET", "/contract/status", None);
        (s["outbox"]["batch_in_flight"].is_null() && s["outbox"]["pending_users"] == 0)
            .then_some(())
    };

    // Batch 1, then a snapshot of the chain.
    let t = now();
    let rs: Vec<Value> = (0..3).map(|i| receipt_json(&receipt(&IH, &up, &down.sk, i, t))).collect();
    assert_eq!(report(&p, &up, &rs).1["credited_bytes"], SIZE);
    eventually("batch 1", || on_chain(p.addr, "up").filter(|u| u.1 == SIZE));
    eventually("an idle outbox", idle);
    let snapshot = anvil_rpc(&anvil, "evm_snapshot", json!([]));

    // Batch 2 applies and the tracker forgets it; then the chain goes back to the snapshot.
    let rs: Vec<Value> =
        (0..2).map(|i| receipt_json(&receipt(&OTHER_IH, &up, &down.sk, i, t + 1))).collect();
    assert_eq!(report(&p, &up, &rs).1["credited_bytes"], 2 * PIECE);
    eventually("batch 2", || on_chain(p.addr, "up").filter(|u| u.1 == SIZE + 2 * PIECE));
    eventually("an idle outbox", idle);
    assert_eq!(anvil_rpc(&anvil, "evm_revert", json!([snapshot])), true);
    assert_eq!(on_chain(p.addr, "up").unwrap().1, SIZE);

    // The tracker's batch 3 is refused, renumbered to 2 and applied.
    let r = receipt_json(&receipt(&OTHER_IH, &up, &down.sk, 2, t + 2));
    assert_eq!(report(&p, &up, &[r]).1["credited_bytes"], LAST);
    let got = eventually("the renumbered batch", || on_chain(p.addr, "up").filter(|u| u.1 != SIZE));
    assert_eq!(got, (0, SIZE + LAST, contract.clone()));
    let contract: Address = contract.parse().unwrap();
    assert_eq!(wait(&chain(&anvil).last_batch_id(contract)).unwrap(), 2);
    eventually("an idle outbox", idle);
    let (_, s) = call(p.addr, "GET", "/contract/status", None);
    assert_eq!(s["outbox"]["last_error"], Value::Null);
}

#[test]
fn reputation_earned_on_one_instance_follows_the_user_to_another() {
    let anvil = Anvil::start().unwrap();
    let factory = deploy_factory(&anvil);
    let dir = tempfile::tempdir().unwrap();
    // Two trackers, two data directories, two chain accounts, one chain.
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Proc::spawn(&a_dir, &chain_toml(&anvil.url(), &key_file(dir.path(), 0), factory));
    let b = Proc::spawn(&b_dir, &chain_toml(&anvil.url(), &key_file(dir.path(), 1), factory));
    let contract_a = init(a.addr, None);

    let alice = register(&a, "alice", 1);
    let bob = register(&a, "bob", 2);
    register_torrent(&a, &IH);
    let t = now();
    let rs: Vec<Value> =
        (0..3).map(|i| receipt_json(&receipt(&IH, &alice, &bob.sk, i, t))).collect();
    assert_eq!(report(&a, &alice, &rs).1["verified_receipts"], 3);
    eventually("A's batch", || on_chain(a.addr, "alice").filter(|u| u.1 == SIZE));

    // B starts its own contract with A's as referrer: alice's reputation reads the same there.
    let contract_b = init(b.addr, Some(&contract_a));
    assert_ne!(contract_a, contract_b);
    assert_eq!(on_chain(b.addr, "alice").unwrap(), (0, SIZE, contract_a.clone()));
    assert_eq!(on_chain(b.addr, "bob").unwrap(), (SIZE, 0, contract_a.clone()));

    // The same people join B with the same keys and trade one more piece there: B's batch
    // carries their reputation over and adds to it.
    let alice_b = register_with_key(&b, "alice", &alice.sk);
    let bob_b = register_with_key(&b, "bob", &bob.sk);
    register_torrent(&b, &IH);
    let r = receipt_json(&receipt(&IH, &alice_b, &bob_b.sk, 0, t));
    assert_eq!(report(&b, &alice_b, &[r]).1["verified_receipts"], 1);
    let got = eventually("B's batch", || on_chain(b.addr, "alice").filter(|u| u.2 == contract_b));
    assert_eq!(got, (0, SIZE + PIECE, contract_b.clone()));
    assert_eq!(on_chain(b.addr, "bob").unwrap(), (SIZE + PIECE, 0, contract_b.clone()));
    // A's contract is untouched.
    assert_eq!(on_chain(a.addr, "alice").unwrap(), (0, SIZE, contract_a));

    // Someone else taking the name "carol" on B inherits nothing from A's carol.
    let carol = register(&a, "carol", 3);
    let dave = register(&a, "dave", 5); // Bob was credited every piece on A already
    let rs = vec![receipt_json(&receipt(&IH, &carol, &dave.sk, 1, t))];
    assert_eq!(report(&a, &carol, &rs).1["verified_receipts"], 1);
    eventually("A's carol", || on_chain(a.addr, "carol"));
    let impostor = register(&b, "carol", 4);
    let rs = vec![receipt_json(&receipt(&IH, &impostor, &bob_b.sk, 1, t))];
    assert_eq!(report(&b, &impostor, &rs).1["verified_receipts"], 1);
    let got = eventually("B's carol", || on_chain(b.addr, "carol").filter(|u| u.2 == contract_b));
    assert_eq!(got, (0, PIECE, contract_b));
}

#[test]
fn deploy_factory_command_writes_the_config() {
    let anvil = Anvil::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pbts.toml");
    let key = key_file(dir.path(), 0);
    std::fs::write(
        &config,
        format!(
            "# my tracker\n[chain]\nrpc_url = \"{}\" # local\nkey_file = \"{key}\"\n",
            anvil.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pbts"))
        .args(["chain", "deploy-factory", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let address = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# my tracker\n"), "{text}");
    assert!(text.contains("# local"), "comments are kept: {text}");
    assert!(text.contains(&format!("factory_address = \"{address}\"")), "{text}");
    let parsed = pbts_engine::config::Config::from_toml(&text).unwrap();
    let deployed: Address = parsed.chain.factory_address.parse().unwrap();
    let code = wait(&chain(&anvil).code_at(deployed)).unwrap();
    assert_eq!(code, pbts_chain::bindings::ReputationFactory::DEPLOYED_BYTECODE);
}

/// `--keep-existing` (compose's one-shot on every `up`): a file that does not exist is made from
/// the defaults; a configured address with no contract behind it is replaced; a deployed
/// factory is kept.
#[test]
fn deploy_factory_keep_existing_deploys_once() {
    let anvil = Anvil::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fresh/pbts.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let key = key_file(dir.path(), 0);
    let deploy = |factory: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pbts"));
        cmd.args(["chain", "deploy-factory", "--keep-existing"])
            .env("PBTS_CONFIG", &config)
            .env("RPC", anvil.url())
            .env("PK0", std::fs::read_to_string(&key).unwrap().trim());
        if let Some(f) = factory {
            cmd.env("FACTORY", f);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{err}");
        (String::from_utf8(out.stdout).unwrap().trim().to_owned(), err)
    };
    let (first, said) = deploy(None);
    assert!(said.contains(&format!("ReputationFactory deployed at {first}")), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(&pbts_engine::config::Config::default_toml()[..40]), "{text}");
    assert!(text.contains(&format!("factory_address = \"{first}\"")), "{text}");

    let (again, said) = deploy(None);
    assert_eq!(again, first);
    assert_eq!(said, format!("ReputationFactory at {first} is deployed: kept\n"));

    // Named by FACTORY with no file yet (a fresh config volume): kept, and written down.
    std::fs::remove_file(&config).unwrap();
    let (kept, said) = deploy(Some(&first));
    assert_eq!(kept, first);
    assert!(said.ends_with(&format!("ReputationFactory at {first} is deployed: kept\n")), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("factory_address = \"{first}\"")), "{text}");

    let nothing = "0x00000000000000000000000000000000000000aa";
    let (replaced, said) = deploy(Some(nothing));
    assert_ne!(replaced, first);
    assert!(
        said.starts_with(&format!(
            "no contract at chain.factory_address {}: deploying one\n",
            nothing.parse::<Address>().unwrap()
        )),
        "{said}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("factory_address = \"{replaced}\"")), "{text}");
}
