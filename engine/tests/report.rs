//! Receipt-backed credit over real HTTP on 127.0.0.1: `POST /report` with a verdict per
//! receipt, zero-sum verified stats, double-spend prevention (in a batch, across batches,
//! concurrently, across restarts), `/config`, `/keygen`, `/attest`, and the verified ratio gate.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::receipts::*;
use common::*;
use pbts_engine::config::{RatioSource, ServerSideKeys, TrackerMode};
use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::SignatureBytes;
use serde_json::{Value, json};

#[test]
fn each_receipt_gets_its_own_verdict_and_good_ones_are_credited() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    let carol = register(&srv, "carol", 3);
    let mallory = SecretKey::from_ikm(&[4; 32]).unwrap(); // never registered
    register_torrent(&srv, &IH);
    let t = now();

    let good = receipt(&IH, &alice, &bob.sk, 0, t);
    // Carol's signature over a receipt naming Bob as the signer.
    let mut forged = receipt(&IH, &alice, &bob.sk, 1, t);
    forged.signature = carol.sk.sign(&forged.message());
    let stale = receipt(&IH, &alice, &bob.sk, 1, t - 3601 - 5);
    let future = receipt(&IH, &alice, &bob.sk, 1, t + 301 + 5);
    let wrong_sender = receipt(&IH, &carol, &bob.sk, 1, t);
    let unregistered_signer = receipt(&IH, &alice, &mallory, 1, t);
    let mut malformed = receipt_json(&good);
    malformed["piece_hash"] = "zz".into();
    let last = receipt(&IH, &alice, &bob.sk, 2, t);
    let self_signed = receipt(&IH, &alice, &alice.sk, 1, t);
    let unknown_torrent = receipt(&OTHER_IH, &alice, &bob.sk, 1, t);
    let out_of_range = receipt(&IH, &alice, &bob.sk, 3, t);
    // Carol's claim on piece 1 (Bob's is in this batch already), with a signature that is not
    // a curve point.
    let mut bad_point = receipt(&IH, &alice, &carol.sk, 1, t + 1);
    bad_point.signature = SignatureBytes([0x11; 96]);
    let mut missing = receipt_json(&good);
    missing.as_object_mut().unwrap().remove("timestamp");

    let batch = vec![
        receipt_json(&good),
        receipt_json(&forged),
        receipt_json(&good),
        receipt_json(&stale),
        receipt_json(&future),
        receipt_json(&wrong_sender),
        receipt_json(&unregistered_signer),
        malformed,
        receipt_json(&last),
        receipt_json(&self_signed),
        receipt_json(&unknown_torrent),
        receipt_json(&out_of_range),
        receipt_json(&bad_point),
        missing,
        json!({"infohash": 5}),
    ];
    let (status, v) = report(&srv, &alice, &batch);
    assert_eq!(status, 200, "{v}");
    let got = verdicts(&v);
    let expected = vec![
        pair("ok", &PIECE.to_string()),
        pair("bad_signature", "bad signature"),
        pair("duplicate_in_batch", "another receipt in this report claims the same piece"),
        pair("stale", "stale receipt (age 3606 s)"),
        pair("future", "timestamp in the future (306 s ahead)"),
        pair("wrong_sender", "sender_pk is not the reporter's registered key"),
        pair("unregistered_signer", "receiver_public_key is not a registered user's key"),
        pair("malformed", "malformed receipt: piece_hash is not valid hex"),
        pair("ok", &LAST.to_string()),
        pair("self_signed", "receipt signed by the reporter's own key"),
        pair("unregistered_torrent", "torrent not registered"),
        pair("piece_out_of_range", "piece_index 3 out of range (the torrent has 3 pieces)"),
        pair("malformed_signature", "malformed signature"),
        pair("malformed", "malformed receipt: missing timestamp"),
        pair(
            "malformed",
            "malformed receipt: invalid receipt: invalid type: integer `5`, expected a string",
        ),
    ];
    // Stale/future ages depend on the second the server read its clock: allow one second.
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        if i == 3 || i == 4 {
            assert_eq!(g.0, e.0);
        } else {
            assert_eq!(g, e, "receipt {i}");
        }
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(v["success"], true);
    assert_eq!(v["user_id"], "alice");
    assert_eq!(v["verified_receipts"], 2);
    assert_eq!(v["rejected_receipts"], 13);
    assert_eq!(v["credited_bytes"], PIECE + LAST);
    assert_eq!(v["verified_uploaded"], PIECE + LAST);
    assert_eq!(v["verified_downloaded"], 0);
    assert_eq!(v["total_uploaded"], 0, "claimed totals are untouched by receipts");
    assert!(v.get("warning").is_none());

    // Zero-sum: Alice's verified upload is exactly Bob's verified download; nobody else moved.
    assert_eq!(verified(&srv, "alice"), (PIECE + LAST, 0));
    assert_eq!(verified(&srv, "bob"), (0, PIECE + LAST));
    assert_eq!(verified(&srv, "carol"), (0, 0));

    // Replays are refused; the forged copy's reservation was released, so the genuine receipt
    // for piece 1 (same message) is credited now.
    let genuine = receipt(&IH, &alice, &bob.sk, 1, t);
    let (status, v) = report(&srv, &alice, &[receipt_json(&good), receipt_json(&genuine)]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        verdicts(&v),
        vec![
            pair("already_credited", "piece already credited for this downloader"),
            pair("ok", &PIECE.to_string())
        ]
    );
    assert_eq!(verified(&srv, "alice"), (2 * PIECE + LAST, 0));
    assert_eq!(verified(&srv, "bob"), (0, 2 * PIECE + LAST));

    // Credit flows the other way too: Bob uploads to Alice.
    let back = receipt(&IH, &bob, &alice.sk, 0, t);
    let (status, v) = report(&srv, &bob, &[receipt_json(&back)]);
    assert_eq!((status, v["verified_receipts"].as_u64()), (200, Some(1)));
    assert_eq!(verified(&srv, "alice"), (2 * PIECE + LAST, PIECE));
    assert_eq!(verified(&srv, "bob"), (PIECE, 2 * PIECE + LAST));

    let stats = get(&srv, "/stats");
    assert_eq!(stats["receipts"]["reports"], 3);
    assert_eq!(stats["receipts"]["accepted"], 4);
    assert_eq!(stats["receipts"]["rejected"], 14);
    assert_eq!(stats["receipts"]["credited_bytes"], 3 * PIECE + LAST);
    assert_eq!(stats["receipts"]["credited_pieces"], 4);
    assert_eq!(stats["receipts"]["in_flight"], 0);
    assert_eq!(get(&srv, "/config")["used_receipts_count"], 4);
    let metrics = String::from_utf8(get_body(srv.v4, "/metrics")).unwrap();
    assert!(metrics.contains("pbts_receipts_accepted_total 4\n"), "{metrics}");
    assert!(metrics.contains("pbts_credited_pieces 4\n"), "{metrics}");
}

#[test]
fn report_authentication_and_request_errors() {
    let srv = TestServer::start(TrackerMode::Private, |c| c.receipts.max_receipts_per_report = 3);
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let r = receipt_json(&receipt(&IH, &alice, &bob.sk, 0, now()));
    fails(
        post(&srv, "/report", &json!({"user_id": "alice", "receipts": [r]})),
        401,
        "passkey required: send \"passkey\" in the body or POST /<passkey>/report",
    );
    fails(
        post(&srv, "/report", &json!({"passkey": "0".repeat(32), "receipts": [r]})),
        401,
        "unknown passkey",
    );
    fails(
        post(
            &srv,
            "/report",
            &json!({"passkey": alice.passkey, "user_id": "bob", "receipts": [r]}),
        ),
        403,
        "user_id does not match the passkey",
    );
    let bob_pk = b64(&bob.sk.public_key().to_bytes().0);
    fails(
        post(
            &srv,
            "/report",
            &json!({"passkey": alice.passkey, "public_key": bob_pk, "receipts": [r]}),
        ),
        403,
        "public_key is not the reporter's registered key",
    );
    fails(
        report(&srv, &alice, &[]),
        400,
        "no receipts: upload is credited only for receipts signed by downloaders \
         (uploaded_delta and downloaded_delta are not credited)",
    );
    fails(
        report(&srv, &alice, &[r.clone(), r.clone(), r.clone(), r.clone()]),
        413,
        "too many receipts: 4 (limit 3 per report)",
    );
    let (status, v) =
        post(&srv, "/report", &json!({"passkey": alice.passkey, "receipts": [r], "bogus": 1}));
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("invalid JSON body: unknown field `bogus`"));
    // A user an admin created has a passkey but no key: nothing can name them as sender.
    let dave = srv.create_user("dave");
    fails(
        post(&srv, "/report", &json!({"passkey": dave, "receipts": [r]})),
        403,
        "no public key registered for this user: POST /register first",
    );
    fails(
        post(
            &srv,
            &format!("/{}/report", bob.passkey),
            &json!({"passkey": alice.passkey, "receipts": [r]}),
        ),
        400,
        "passkey in the path and in the body differ",
    );

    // The passkey in the path; the original's fields (user_id, public_key, deltas, piece_size)
    // are accepted, and the claimed deltas are not credited.
    let mut with_size = r;
    with_size["piece_size"] = 999_999_999.into();
    let alice_pk = b64(&alice.sk.public_key().to_bytes().0);
    let (status, v) = post(
        &srv,
        &format!("/{}/report", alice.passkey),
        &json!({
            "user_id": "alice", "public_key": alice_pk, "uploaded_delta": 999_999,
            "downloaded_delta": 0, "receipts": [with_size]
        }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["credited_bytes"], PIECE, "piece_size is the client's claim, never credited");
    assert_eq!(
        v["warning"],
        "uploaded_delta and downloaded_delta are ignored: credit comes only from verified receipts"
    );
    assert_eq!(v["total_uploaded"], 0);
    let r2 = receipt_json(&receipt(&IH, &alice, &bob.sk, 1, now()));
    let (status, v) = post(&srv, &format!("/report/{}", alice.passkey), &json!({"receipts": [r2]}));
    assert_eq!((status, v["verified_receipts"].as_u64()), (200, Some(1)));

    let (status, _, body) = http_request(srv.v4, "GET", "/report", None);
    assert_eq!(
        (status, body),
        (405, br#"{"success":false,"error":"method not allowed"}"#.to_vec())
    );
}

#[test]
fn large_reports_fit_and_other_large_bodies_are_refused() {
    // Loopback is not an admin here, so the normal 64 KiB body limit applies to everything but
    // reports.
    let srv = TestServer::start(TrackerMode::Private, |c| c.admin.allow_loopback = false);
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    // (No torrent is registered: without admin access, every receipt is "unregistered_torrent";
    // what matters here is that the 200-receipt body is read whole.)
    let t = now();
    let receipts: Vec<Value> =
        (0..200).map(|i| receipt_json(&receipt(&IH, &alice, &bob.sk, i, t))).collect();
    let body = json!({"passkey": alice.passkey, "receipts": receipts}).to_string();
    assert!(body.len() > 64 << 10, "{}", body.len());
    // Only a known passkey in the path lets a body grow past 64 KiB: anonymous clients cannot
    // make the server buffer a megabyte per connection.
    let too_large = "request body too large (limit 65536 bytes): reports larger than that need \
                     a registered passkey in the path (POST /<passkey>/report)\n";
    for path in ["/report".to_owned(), format!("/{}/report", "0".repeat(32))] {
        let (status, _, resp) = http_request(srv.v4, "POST", &path, Some(&body));
        assert_eq!((status, String::from_utf8_lossy(&resp).as_ref()), (413, too_large), "{path}");
    }
    let (status, _, resp) =
        http_request(srv.v4, "POST", &format!("/{}/report", alice.passkey), Some(&body));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["rejected_receipts"], 200);
    assert!(verdicts(&v).iter().all(|(code, _)| code == "unregistered_torrent"));

    let padding = " ".repeat(70 << 10);
    let big = format!(r#"{{"user_id":"x"{padding}}}"#);
    let (status, _, resp) = http_request(srv.v4, "POST", "/register", Some(&big));
    assert_eq!((status, resp), (413, b"request body too large (limit 65536 bytes)\n".to_vec()));
}

#[test]
fn concurrent_reports_of_the_same_receipts_credit_once() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let t = now();
    let receipts: Vec<Value> = (0..3)
        .flat_map(|i| (0..8).map(move |k| (i, t - k)))
        .map(|(i, ts)| receipt_json(&receipt(&IH, &alice, &bob.sk, i, ts)))
        .collect();
    assert_eq!(receipts.len(), 24);
    let body = json!({"passkey": alice.passkey, "receipts": receipts}).to_string();
    let barrier = std::sync::Barrier::new(8);
    let accepted: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let (status, _, resp) = http_request(srv.v4, "POST", "/report", Some(&body));
                    assert_eq!(status, 200);
                    let v: Value = serde_json::from_slice(&resp).unwrap();
                    for (code, _) in verdicts(&v) {
                        assert!(
                            matches!(
                                code.as_str(),
                                "ok" | "in_flight" | "already_credited" | "duplicate_in_batch"
                            ),
                            "{code}"
                        );
                    }
                    v["verified_receipts"].as_u64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Three pieces, each signed with eight timestamps, reported eight times at once: Bob
    // received three pieces, so three receipts are credited.
    assert_eq!(accepted.iter().sum::<u64>(), 3, "{accepted:?}");
    let expected = 2 * PIECE + LAST;
    assert_eq!(verified(&srv, "alice"), (expected, 0));
    assert_eq!(verified(&srv, "bob"), (0, expected));
    assert_eq!(get(&srv, "/stats")["receipts"]["in_flight"], 0);
}

#[test]
fn credited_pieces_and_verified_stats_survive_a_restart() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let r = receipt_json(&receipt(&IH, &alice, &bob.sk, 0, now()));
    assert_eq!(report(&srv, &alice, std::slice::from_ref(&r)).1["verified_receipts"], 1);

    let srv = srv.restart(TrackerMode::Private, |_| {});
    assert_eq!(verified(&srv, "alice"), (PIECE, 0));
    assert_eq!(verified(&srv, "bob"), (0, PIECE));
    assert_eq!(get(&srv, "/config")["used_receipts_count"], 1);
    let (status, v) = report(&srv, &alice, &[r]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        verdicts(&v),
        vec![pair("already_credited", "piece already credited for this downloader")]
    );
    assert_eq!(verified(&srv, "alice"), (PIECE, 0));
}

#[test]
fn a_credited_piece_stays_credited_whatever_the_window() {
    let tweak = |c: &mut pbts_engine::config::Config| {
        c.receipts.window_secs = 2;
        c.receipts.max_future_secs = 0;
    };
    let srv = TestServer::start(TrackerMode::Private, tweak);
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let t = now();
    let r = receipt_json(&receipt(&IH, &alice, &bob.sk, 0, t));
    assert_eq!(report(&srv, &alice, std::slice::from_ref(&r)).1["verified_receipts"], 1);
    // Once the window has passed, the receipt is stale (uploaders must report promptly)...
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = report(&srv, &alice, std::slice::from_ref(&r));
        if verdicts(&v)[0].0 == "stale" {
            break;
        }
        assert_eq!(verdicts(&v)[0].0, "already_credited");
        assert!(Instant::now() < deadline, "the receipt never went stale");
        std::thread::sleep(Duration::from_millis(250));
    }
    // ...and raising the window reopens nothing, now or after a restart: the piece is credited.
    let (status, v) = post(&srv, "/config", &json!({"receipt_window": 86_400}));
    assert_eq!(status, 200, "{v}");
    let fresh = receipt_json(&receipt(&IH, &alice, &bob.sk, 0, now()));
    for r in [&r, &fresh] {
        let (_, v) = report(&srv, &alice, std::slice::from_ref(r));
        assert_eq!(verdicts(&v)[0].0, "already_credited");
    }
    let srv = srv.restart(TrackerMode::Private, tweak);
    let (_, v) = report(&srv, &alice, &[r, fresh]);
    assert_eq!(verdicts(&v)[0].0, "already_credited");
    assert_eq!(verdicts(&v)[1].0, "already_credited");
    assert_eq!(verified(&srv, "alice"), (PIECE, 0));
}

#[test]
fn config_reads_and_admin_writes_all_or_nothing_and_persist() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let c = get(&srv, "/config");
    assert_eq!(c["instance_id"], srv.instance_id());
    assert_eq!(c["verify_signatures"], true);
    assert_eq!(c["receipt_window"], 3600);
    assert_eq!(c["min_ratio"], 0.5);
    assert_eq!(c["max_peers"], 50);
    assert_eq!(c["used_receipts_count"], 0);
    assert_eq!((c["tee_available"].as_bool(), c["tee_mode"].as_str()), (Some(false), Some("none")));
    assert_eq!(c["ratio_source"], "claimed");
    fails(
        post(&srv, "/config", &json!({"verify_signatures": false})),
        400,
        "verify_signatures cannot be turned off: upload credit comes only from verified signatures",
    );
    let (status, v) = post(&srv, "/config", &json!({"verify_signatures": "false"}));
    assert_eq!(status, 400, "the string \"false\" is not a boolean: {v}");
    fails(
        post(&srv, "/config", &json!({"tee_mode": "enabled"})),
        400,
        "tee_mode is chosen at start-up (TEE_MODE), not at run time",
    );
    fails(
        post(&srv, "/config", &json!({"min_ratio": 0.9, "receipt_window": 0})),
        400,
        "receipt_window must be in 1..=2592000 seconds, got 0",
    );
    fails(
        post(&srv, "/config", &json!({"min_ratio": -1})),
        400,
        "min_ratio must be a finite number >= 0",
    );
    assert_eq!(get(&srv, "/config")["min_ratio"], 0.5, "a rejected change applies nothing");

    let (status, v) = post(
        &srv,
        "/config",
        &json!({"min_ratio": 0.8, "receipt_window": 7200, "verify_signatures": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"], "Configuration updated");
    assert_eq!(
        (v["config"]["min_ratio"].as_f64(), v["config"]["receipt_window"].as_u64()),
        (Some(0.8), Some(7200))
    );
    assert_eq!(get(&srv, "/stats")["min_ratio"], 0.8);

    let srv = srv.restart(TrackerMode::Private, |_| {});
    let c = get(&srv, "/config");
    assert_eq!((c["min_ratio"].as_f64(), c["receipt_window"].as_u64()), (Some(0.8), Some(7200)));
    // A receipt 5000 s old is fresh under the persisted 7200 s window.
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let r = receipt_json(&receipt(&IH, &alice, &bob.sk, 0, now() - 5000));
    assert_eq!(report(&srv, &alice, &[r]).1["verified_receipts"], 1);

    let srv = srv.restart(TrackerMode::Private, |c| c.admin.allow_loopback = false);
    fails(
        post(&srv, "/config", &json!({"min_ratio": 0.1})),
        403,
        "changing the configuration requires admin access",
    );
}

#[test]
fn server_side_keygen_and_attest_for_loopback_compatibility() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let (status, k) = post(&srv, "/keygen", &json!({}));
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["key_type"], "BLS12-381");
    assert_eq!(
        (k["private_key_size"].as_u64(), k["public_key_size"].as_u64()),
        (Some(32), Some(48))
    );
    assert_eq!(k["warning"], "Store private key securely! Never share it!");
    // The returned key pair is consistent and registers (its proof of possession verifies).
    let raw = |f: &str| pbts_engine::encoding::unb64(k[f].as_str().unwrap()).unwrap();
    let sk = SecretKey::from_bytes(&raw("private_key").try_into().unwrap()).unwrap();
    assert_eq!(sk.public_key().to_bytes().0.to_vec(), raw("public_key"));
    let (status, v) = post(
        &srv,
        "/register",
        &json!({"user_id": "bob", "public_key": k["public_key"], "proof_of_possession": k["proof_of_possession"]}),
    );
    assert_eq!(status, 200, "{v}");
    let bob = Peer { name: "bob".into(), sk, passkey: v["passkey"].as_str().unwrap().into() };
    let alice = register(&srv, "alice", 1);
    register_torrent(&srv, &IH);

    // /attest signs a receipt with the private key sent to it; /report credits it.
    let t = now();
    let expected = receipt(&IH, &alice, &bob.sk, 1, t);
    let (status, a) = post(
        &srv,
        "/attest",
        &json!({
            "receiver_private_key": k["private_key"],
            "sender_public_key": b64(&alice.sk.public_key().to_bytes().0),
            "piece_hash": hex(expected.piece_hash.as_bytes()),
            "piece_index": 1,
            "infohash": hex(&IH),
            "timestamp": t,
        }),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["message"], "Receipt generated successfully");
    assert_eq!(a["timestamp"], t);
    assert_eq!(a["receipt"], b64(&expected.signature.0), "BLS signatures are deterministic");
    let (_, v) = report(&srv, &alice, &[receipt_json(&expected)]);
    assert_eq!(v["verified_receipts"], 1, "{v}");
    assert_eq!(verified(&srv, &bob.name), (0, PIECE));

    let zero_key = b64(&[0; 32]);
    fails(
        post(
            &srv,
            "/attest",
            &json!({"receiver_private_key": zero_key, "sender_public_key": b64(&[0; 48]),
                    "piece_hash": hex(&[1; 20]), "piece_index": 0, "infohash": hex(&IH)}),
        ),
        400,
        "Invalid secret key",
    );
    fails(
        post(
            &srv,
            "/attest",
            &json!({"receiver_private_key": "AAAA", "sender_public_key": b64(&[0; 48]),
                    "piece_hash": hex(&[1; 20]), "piece_index": 0, "infohash": hex(&IH)}),
        ),
        400,
        "receiver_private_key must decode to 32 bytes, got 3",
    );

    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.receipts.server_side_keys = ServerSideKeys::Disabled;
    });
    let text = "server-side key endpoints handle private keys and are limited to loopback clients \
                (receipts.server_side_keys); make keys on the client (pbts keygen)";
    fails(post(&srv, "/keygen", &json!({})), 403, text);
    fails(post(&srv, "/attest", &json!({})), 403, text);
}

#[test]
fn ratio_gate_can_count_verified_upload_only() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.ratio.source = RatioSource::Verified;
        c.ratio.grace_bytes = 0;
        c.ratio.min_ratio = 0.5;
    });
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let announce = |who: &Peer, ih: &[u8; 20], extra: &str| {
        let peer_id = [who.name.as_bytes()[0]; 20];
        let q = format!("info_hash={}&peer_id={}&port=6881{extra}", pct(ih), pct(&peer_id));
        String::from_utf8(get_body(srv.v4, &format!("/{}/announce?{q}", who.passkey))).unwrap()
    };
    // Bob claims a huge upload in announces: under the verified source it does not count.
    assert!(
        announce(&bob, &OTHER_IH, "&uploaded=0&downloaded=0&left=100&event=started")
            .starts_with("d8:complete")
    );
    assert!(
        announce(&bob, &OTHER_IH, "&uploaded=1000000000&downloaded=1000&left=10")
            .starts_with("d8:complete")
    );
    let text = "insufficient ratio: 0.00 < 0.50 (verified uploaded 0 bytes, downloaded 1000 bytes)";
    assert_eq!(
        announce(&bob, &OTHER_IH, "&uploaded=1000000000&downloaded=1000&left=10"),
        format!("d14:failure reason{}:{text}e", text.len())
    );
    // Alice has proven upload (Bob signed for two pieces): she may leech.
    let t = now();
    let rs: Vec<Value> =
        (0..2).map(|i| receipt_json(&receipt(&IH, &alice, &bob.sk, i, t))).collect();
    assert_eq!(report(&srv, &alice, &rs).1["verified_receipts"], 2);
    assert!(
        announce(&alice, &OTHER_IH, "&uploaded=0&downloaded=0&left=100&event=started")
            .starts_with("d8:complete")
    );
    assert!(
        announce(&alice, &OTHER_IH, "&uploaded=0&downloaded=60000&left=10")
            .starts_with("d8:complete")
    );
    assert!(
        announce(&alice, &OTHER_IH, "&uploaded=0&downloaded=60000&left=10")
            .starts_with("d8:complete")
    );
    let u = user(&srv, "alice");
    assert_eq!(u["ratio_source"], "verified");
    assert_eq!(u["ratio"].as_f64(), Some((2 * PIECE) as f64 / 60000.0));
    // Bob's proven download counts even though he claimed only 1000 bytes.
    let u = user(&srv, "bob");
    assert_eq!(
        (u["total_downloaded"].as_u64(), u["verified_downloaded"].as_u64()),
        (Some(1000), Some(2 * PIECE))
    );
    assert_eq!(u["ratio"].as_f64(), Some(0.0));
}

/// The whole flow through the real `pbts` binary: two users register keys made on the client,
/// one uploads to the other and reports the receipts, and both users' verified stats and ratios
/// change by exactly the credited pieces.
#[test]
fn end_to_end_two_users_receipts_and_ratios_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let proc_ = Proc::spawn(dir.path(), "[ratio]\nsource = \"verified\"\n");
    let addr = proc_.addr;
    let call = |method: &str, path: &str, body: Option<Value>| {
        let (status, _, resp) =
            http_request(addr, method, path, body.map(|b| b.to_string()).as_deref());
        (status, serde_json::from_slice::<Value>(&resp).unwrap())
    };
    let mut peers = Vec::new();
    for (name, seed) in [("uploader", 21u8), ("downloader", 22)] {
        let sk = SecretKey::from_ikm(&[seed; 32]).unwrap();
        let (status, v) = call(
            "POST",
            "/register",
            Some(json!({"user_id": name, "public_key": b64(&sk.public_key().to_bytes().0),
                        "proof_of_possession": b64(&sk.prove_possession().0)})),
        );
        assert_eq!(status, 200, "{v}");
        peers.push(Peer { name: name.into(), sk, passkey: v["passkey"].as_str().unwrap().into() });
    }
    let (up, down) = (&peers[0], &peers[1]);
    let (status, v) = call(
        "POST",
        "/admin/torrents",
        Some(json!({"info_hash": hex(&IH), "piece_length": PIECE, "total_size": SIZE})),
    );
    assert_eq!(status, 201, "{v}");
    let before = |name: &str| call("GET", &format!("/user/{name}"), None).1;
    assert_eq!(before("uploader")["ratio"], Value::Null);
    assert_eq!(before("downloader")["ratio"], Value::Null);

    // The downloader received all three pieces and signed a receipt for each.
    let t = now();
    let rs: Vec<Value> = (0..3).map(|i| receipt_json(&receipt(&IH, up, &down.sk, i, t))).collect();
    let (status, v) = call("POST", "/report", Some(json!({"passkey": up.passkey, "receipts": rs})));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verified_receipts"], 3);
    assert_eq!(v["credited_bytes"], SIZE);
    let u = call("GET", "/user/uploader", None).1;
    assert_eq!(
        (u["verified_uploaded"].as_u64(), u["verified_downloaded"].as_u64()),
        (Some(SIZE), Some(0))
    );
    assert_eq!(u["ratio"], Value::Null, "uploaded without downloading: undefined, never Infinity");
    let d = call("GET", "/user/downloader", None).1;
    assert_eq!(
        (d["verified_uploaded"].as_u64(), d["verified_downloaded"].as_u64()),
        (Some(0), Some(SIZE))
    );
    assert_eq!(d["ratio"].as_f64(), Some(0.0));

    // The downloader seeds one piece back to the uploader.
    let back = receipt(&IH, down, &up.sk, 0, t);
    let (_, v) = call(
        "POST",
        &format!("/{}/report", down.passkey),
        Some(json!({"receipts": [receipt_json(&back)]})),
    );
    assert_eq!(v["verified_receipts"], 1, "{v}");
    let u = call("GET", "/user/uploader", None).1;
    assert_eq!(u["ratio"].as_f64(), Some(SIZE as f64 / PIECE as f64));
    let d = call("GET", "/user/downloader", None).1;
    assert_eq!(d["ratio"].as_f64(), Some(PIECE as f64 / SIZE as f64));
}

#[test]
fn acknowledged_credit_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let call = |addr, path: &str, body: Value| {
        let (status, _, resp) = http_request(addr, "POST", path, Some(&body.to_string()));
        (status, serde_json::from_slice::<Value>(&resp).unwrap())
    };
    let mut p = Proc::spawn(dir.path(), "");
    let keys = [SecretKey::from_ikm(&[31; 32]).unwrap(), SecretKey::from_ikm(&[32; 32]).unwrap()];
    let mut passkeys = Vec::new();
    for (name, sk) in ["up", "down"].iter().zip(&keys) {
        let (status, v) = call(
            p.addr,
            "/register",
            json!({"user_id": name, "public_key": b64(&sk.public_key().to_bytes().0),
                   "proof_of_possession": b64(&sk.prove_possession().0)}),
        );
        assert_eq!(status, 200, "{v}");
        passkeys.push(v["passkey"].as_str().unwrap().to_owned());
    }
    let body = json!({"info_hash": hex(&IH), "piece_length": PIECE, "total_size": SIZE});
    assert_eq!(call(p.addr, "/admin/torrents", body).0, 201);
    let up = Peer { name: "up".into(), sk: keys[0].clone(), passkey: passkeys[0].clone() };
    let r = receipt_json(&receipt(&IH, &up, &keys[1], 0, now()));
    let report_body = json!({"passkey": up.passkey, "receipts": [r]});
    assert_eq!(call(p.addr, "/report", report_body.clone()).1["verified_receipts"], 1);

    // No graceful shutdown: what /report acknowledged must already be on disk.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let p = Proc::spawn(dir.path(), "");
    let (_, _, u) = http_request(p.addr, "GET", "/user/up", None);
    let u: Value = serde_json::from_slice(&u).unwrap();
    assert_eq!(u["verified_uploaded"], PIECE);
    let (_, v) = call(p.addr, "/report", report_body);
    assert_eq!(
        verdicts(&v),
        vec![pair("already_credited", "piece already credited for this downloader")]
    );
}

#[test]
fn registry_fills_in_piece_lengths_but_never_changes_them() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    let (status, v) = post(&srv, "/admin/torrents", &json!({"info_hash": hex(&IH)}));
    assert_eq!((status, v["new"].as_bool()), (201, Some(true)));
    let t = now();
    let (_, v) = report(&srv, &alice, &[receipt_json(&receipt(&IH, &alice, &bob.sk, 0, t))]);
    assert_eq!(
        verdicts(&v),
        vec![pair("no_piece_length", "torrent has no registered piece length")]
    );

    let (status, v) = post(
        &srv,
        "/admin/torrents",
        &json!({"info_hash": hex(&IH), "piece_length": PIECE, "total_size": SIZE, "name": "x"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["new"].as_bool(), v["piece_length"].as_u64()), (Some(false), Some(PIECE)));
    let (_, v) = report(&srv, &alice, &[receipt_json(&receipt(&IH, &alice, &bob.sk, 0, t))]);
    assert_eq!(v["credited_bytes"], PIECE, "{v}");

    let (status, _, body) = http_request(
        srv.v4,
        "POST",
        "/admin/torrents",
        Some(&json!({"info_hash": hex(&IH), "piece_length": 1}).to_string()),
    );
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (
            409,
            r#"{"success":false,"error":"torrent already registered with piece_length 16384, not 1"}"#.to_owned()
        )
    );
    // The registry survives a restart with its piece lengths.
    let srv = srv.restart(TrackerMode::Private, |_| {});
    let (_, v) = report(&srv, &alice, &[receipt_json(&receipt(&IH, &alice, &bob.sk, 2, t))]);
    assert_eq!(v["credited_bytes"], LAST, "{v}");
}

#[test]
fn a_full_verification_queue_answers_503_with_retry_after() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.receipts.max_receipts_per_report = 4;
        c.receipts.max_pending_receipts = 8;
    });
    let alice = register(&srv, "alice", 1);
    let bob = register(&srv, "bob", 2);
    register_torrent(&srv, &IH);
    let body = json!({"passkey": alice.passkey, "receipts": [receipt_json(&receipt(&IH, &alice, &bob.sk, 0, now()))]});
    // Other reports hold 8 receipts under verification: no room for one more.
    let stats = &srv.server.as_ref().unwrap().state().receipt_stats;
    stats.in_flight.store(8, std::sync::atomic::Ordering::SeqCst);
    let (status, head, resp) = http_request(srv.v4, "POST", "/report", Some(&body.to_string()));
    assert_eq!(status, 503);
    assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&resp).unwrap(),
        json!({"success": false, "error": "verifier busy: 8 receipts are being verified (limit 8); retry later"})
    );
    assert_eq!(verified(&srv, "alice"), (0, 0), "nothing credited");
    // Room again: the same report is credited (it was not reserved by the refusal).
    stats.in_flight.store(7, std::sync::atomic::Ordering::SeqCst);
    let (status, v) = post(&srv, "/report", &body);
    assert_eq!((status, v["verified_receipts"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        stats.in_flight.load(std::sync::atomic::Ordering::SeqCst),
        7,
        "the report returned its share"
    );
}

/// A `.torrent` of `pieces` 16 KiB pieces (the last `last` bytes long) whose piece `i` has hash
/// `[i ^ 0x5a; 20]`, as [`receipt`] signs; with `hybrid`, a BEP 52 file tree too.
fn torrent_file(name: &str, pieces: u32, last: u64, hybrid: bool) -> Vec<u8> {
    let size = u64::from(pieces - 1) * PIECE + last;
    let hashes: Vec<u8> = (0..pieces).flat_map(|i| [i as u8 ^ 0x5a; 20]).collect();
    let mut info = Vec::new();
    if hybrid {
        info.extend_from_slice(
            format!("9:file treed{}:{name}d0:d6:lengthi{size}eeee", name.len()).as_bytes(),
        );
    }
    info.extend_from_slice(format!("6:lengthi{size}e").as_bytes());
    if hybrid {
        info.extend_from_slice(b"12:meta versioni2e");
    }
    info.extend_from_slice(
        format!("4:name{}:{name}12:piece lengthi{PIECE}e", name.len()).as_bytes(),
    );
    info.extend_from_slice(format!("6:pieces{}:", hashes.len()).as_bytes());
    info.extend_from_slice(&hashes);
    let mut t = b"d4:infod".to_vec();
    t.extend_from_slice(&info);
    t.extend_from_slice(b"ee");
    t
}

/// Registers a `.torrent`; returns its v1 info-hash and, for a hybrid, the truncated v2 hash.
fn upload_torrent(srv: &TestServer, file: &[u8]) -> ([u8; 20], Option<[u8; 20]>) {
    let (status, _, resp) = http_request_with(
        srv.v4,
        "POST",
        "/admin/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        file,
    );
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["piece_hashes"], true);
    let hash = |s: &Value| -> [u8; 20] {
        const_hex::decode(&s.as_str().unwrap()[..40]).unwrap().try_into().unwrap()
    };
    (hash(&v["info_hash"]), v["v2_info_hash"].as_str().map(|_| hash(&v["v2_info_hash"])))
}

/// Issue 10's collusion: one downloader and one uploader try every variation of re-signing
/// they have, then sybil signers join. The credit never exceeds the bound: each downloader's
/// verified download per torrent is at most the torrent's size, and the uploader's verified
/// upload is the sum of those.
#[test]
fn a_colluding_pair_cannot_credit_more_than_the_torrent() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = register(&srv, "alice", 1); // the uploader
    let bob = register(&srv, "bob", 2); // her accomplice, who signs
    let carol = register(&srv, "carol", 3); // a second uploader account of theirs
    // T1: 4 pieces from a .torrent (piece hashes known); size 3 * 16384 + 1000.
    let (t1, _) = upload_torrent(&srv, &torrent_file("t1", 4, 1000, false));
    let size1 = 3 * PIECE + 1000;
    // T2: registered by JSON (no piece hashes): 3 pieces, 40000 bytes.
    register_torrent(&srv, &IH);
    // T3: a hybrid torrent, announced under two hashes.
    let (t3_v1, t3_v2) = upload_torrent(&srv, &torrent_file("t3", 2, 500, true));
    let t3_v2 = t3_v2.unwrap();
    let size3 = PIECE + 500;
    let t = now();
    let tally = |v: &Value| -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for (code, _) in verdicts(v) {
            *m.entry(code).or_default() += 1;
        }
        m
    };
    let counts = |pairs: &[(&str, usize)]| -> std::collections::BTreeMap<String, usize> {
        pairs.iter().map(|&(c, n)| (c.to_owned(), n)).collect()
    };

    // 1. Piece 0 re-signed with ten timestamps: in one report, then one per report.
    let resigned: Vec<Value> =
        (0..10).map(|k| receipt_json(&receipt(&t1, &alice, &bob.sk, 0, t - k))).collect();
    let (_, v) = report(&srv, &alice, &resigned);
    assert_eq!(tally(&v), counts(&[("ok", 1), ("duplicate_in_batch", 9)]));
    for r in &resigned {
        let (_, v) = report(&srv, &alice, std::slice::from_ref(r));
        assert_eq!(tally(&v), counts(&[("already_credited", 1)]));
    }
    // 2. Piece 1 with ten invented piece hashes: not the torrent's.
    let invented: Vec<Value> = (0..10u8)
        .map(|k| {
            let mut r = receipt(&t1, &alice, &bob.sk, 1, t);
            r.piece_hash = pbts_verifier::receipt::PieceHash::from_slice(&[k; 20]).unwrap();
            bob.sk.sign_receipt(&mut r);
            receipt_json(&r)
        })
        .collect();
    let (_, v) = report(&srv, &alice, &invented);
    assert_eq!(tally(&v), counts(&[("wrong_piece_hash", 10)]));
    assert_eq!(verdicts(&v)[0].1, "piece_hash is not the torrent's hash for this piece_index");
    // 3. Pieces past the end.
    let past: Vec<Value> = [4, 5, u32::MAX]
        .iter()
        .map(|&i| receipt_json(&receipt(&t1, &alice, &bob.sk, i, t)))
        .collect();
    let (_, v) = report(&srv, &alice, &past);
    assert_eq!(tally(&v), counts(&[("piece_out_of_range", 3)]));
    // 4. Every real piece, then all of them again for Carol, the second uploader account.
    let all: Vec<Value> =
        (0..4).map(|i| receipt_json(&receipt(&t1, &alice, &bob.sk, i, t - 1))).collect();
    let (_, v) = report(&srv, &alice, &all);
    assert_eq!(tally(&v), counts(&[("ok", 3), ("already_credited", 1)]));
    let for_carol: Vec<Value> =
        (0..4).map(|i| receipt_json(&receipt(&t1, &carol, &bob.sk, i, t - 2))).collect();
    let (_, v) = report(&srv, &carol, &for_carol);
    assert_eq!(tally(&v), counts(&[("already_credited", 4)]));
    // 5. Another torrent's hash: an unregistered one, and the JSON-registered T2 whose piece
    //    hashes are unknown (any hash goes, but each piece still counts once).
    let other = receipt_json(&receipt(&OTHER_IH, &alice, &bob.sk, 0, t));
    let (_, v) = report(&srv, &alice, &[other]);
    assert_eq!(tally(&v), counts(&[("unregistered_torrent", 1)]));
    let t2: Vec<Value> = (0..10u8)
        .map(|k| {
            let mut r = receipt(&IH, &alice, &bob.sk, u32::from(k % 3), t - u64::from(k));
            r.piece_hash = pbts_verifier::receipt::PieceHash::from_slice(&[k; 20]).unwrap();
            bob.sk.sign_receipt(&mut r);
            receipt_json(&r)
        })
        .collect();
    let (_, v) = report(&srv, &alice, &t2);
    assert_eq!(tally(&v), counts(&[("ok", 3), ("duplicate_in_batch", 7)]));
    // 6. The hybrid torrent under each of its two hashes: one torrent.
    let (_, v) = report(
        &srv,
        &alice,
        &[
            receipt_json(&receipt(&t3_v1, &alice, &bob.sk, 0, t)),
            receipt_json(&receipt(&t3_v2, &alice, &bob.sk, 0, t)),
            receipt_json(&receipt(&t3_v2, &alice, &bob.sk, 1, t)),
        ],
    );
    assert_eq!(tally(&v), counts(&[("ok", 2), ("duplicate_in_batch", 1)]));
    let (_, v) = report(&srv, &alice, &[receipt_json(&receipt(&t3_v1, &alice, &bob.sk, 1, t))]);
    assert_eq!(tally(&v), counts(&[("already_credited", 1)]));

    // Bob's verified download is exactly the three torrents' sizes; Alice got exactly that.
    let bound = size1 + SIZE + size3;
    assert_eq!(verified(&srv, "bob"), (0, bound));
    assert_eq!(verified(&srv, "alice"), (bound, 0));
    assert_eq!(verified(&srv, "carol"), (0, 0));

    // 7. Sybils (open registration): each throwaway signer adds at most one torrent's size,
    //    and carries that much verified download itself.
    let sybils: Vec<Peer> = (0..5).map(|i| register(&srv, &format!("sybil{i}"), 10 + i)).collect();
    for s in &sybils {
        let rs: Vec<Value> = (0..4)
            .flat_map(|i| (0..3).map(move |k| (i, k)))
            .map(|(i, k)| receipt_json(&receipt(&t1, &alice, &s.sk, i, t - k)))
            .collect();
        let (_, v) = report(&srv, &alice, &rs);
        assert_eq!(tally(&v), counts(&[("ok", 4), ("duplicate_in_batch", 8)]));
        assert_eq!(verified(&srv, &s.name), (0, size1));
    }
    assert_eq!(verified(&srv, "alice"), (bound + 5 * size1, 0));
    assert_eq!(get(&srv, "/stats")["receipts"]["credited_pieces"], 4 + 3 + 2 + 5 * 4);
}
