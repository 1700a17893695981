//! Receipt helpers shared by the receipt and chain tests: users with client-made keys, a
//! registered torrent, signed receipts in the original's JSON field names.

use std::net::SocketAddr;

use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::Receipt;
use serde_json::{Value, json};

use super::{Proc, TestServer, get_body, http_request};

#[allow(unused_imports)]
pub use pbts_testkit::receipts::receipt_json;

/// Anything with an HTTP address.
pub trait Target {
    fn addr(&self) -> SocketAddr;
}

impl Target for TestServer {
    fn addr(&self) -> SocketAddr {
        self.v4
    }
}

impl Target for Proc {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Target for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

pub const IH: [u8; 20] = [0xab; 20];
pub const OTHER_IH: [u8; 20] = [0xcd; 20];
/// 3 pieces: 16384, 16384 and 7232 bytes.
pub const PIECE: u64 = 16384;
pub const SIZE: u64 = 40000;
pub const LAST: u64 = SIZE - 2 * PIECE;

pub use pbts_engine::encoding::b64;

pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

#[allow(unused_imports)]
pub use pbts_engine::clock::unix_now as now;

pub fn post(srv: &impl Target, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, resp) = http_request(srv.addr(), "POST", path, Some(&body.to_string()));
    let v = serde_json::from_slice(&resp)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&resp)));
    (status, v)
}

pub fn get(srv: &impl Target, path: &str) -> Value {
    serde_json::from_slice(&get_body(srv.addr(), path)).unwrap()
}

/// A user who registered a key made on the client.
pub struct Peer {
    pub name: String,
    pub sk: SecretKey,
    pub passkey: String,
}

pub fn register(srv: &impl Target, name: &str, seed: u8) -> Peer {
    register_with_key(srv, name, &SecretKey::from_ikm(&[seed; 32]).unwrap())
}

/// Registers `name` with the key `sk` (the same person on another tracker instance).
pub fn register_with_key(srv: &impl Target, name: &str, sk: &SecretKey) -> Peer {
    let (status, v) = post(
        srv,
        "/register",
        &json!({
            "user_id": name,
            "public_key": b64(&sk.public_key().to_bytes().0),
            "proof_of_possession": b64(&sk.prove_possession().0),
        }),
    );
    assert_eq!(status, 200, "{v}");
    Peer {
        name: name.to_owned(),
        sk: sk.clone(),
        passkey: v["passkey"].as_str().unwrap().to_owned(),
    }
}

pub fn register_torrent(srv: &impl Target, ih: &[u8; 20]) {
    let (status, v) = post(
        srv,
        "/admin/torrents",
        &json!({"info_hash": hex(ih), "piece_length": PIECE, "total_size": SIZE}),
    );
    assert!(status == 201 || status == 200, "{v}");
}

/// A receipt `signer` signs for piece `index` of `ih` received from `uploader`.
pub fn receipt(ih: &[u8; 20], uploader: &Peer, signer: &SecretKey, index: u32, ts: u64) -> Receipt {
    let uploader = uploader.sk.public_key().to_bytes();
    pbts_testkit::receipts::sign(*ih, uploader, signer, index, [index as u8 ^ 0x5a; 20], ts)
}

pub fn report(srv: &impl Target, who: &Peer, receipts: &[Value]) -> (u16, Value) {
    post(srv, "/report", &json!({"passkey": who.passkey, "receipts": receipts}))
}

/// (code, reason) of each result; `("ok", bytes)` for credited ones.
pub fn verdicts(v: &Value) -> Vec<(String, String)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["index"], i);
            if r["accepted"] == true {
                ("ok".to_owned(), r["credited_bytes"].to_string())
            } else {
                (r["code"].as_str().unwrap().to_owned(), r["reason"].as_str().unwrap().to_owned())
            }
        })
        .collect()
}

pub fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

pub fn user(srv: &impl Target, name: &str) -> Value {
    get(srv, &format!("/user/{name}"))
}

pub fn verified(srv: &impl Target, name: &str) -> (u64, u64) {
    let u = user(srv, name);
    (u["verified_uploaded"].as_u64().unwrap(), u["verified_downloaded"].as_u64().unwrap())
}
