//! # pbts-testkit
//!
//! What tests, benches and the experiments harness share, kept out of the production crates
//! (`publish = false`; only dev-dependencies and the harness use it).
//!
//! | module | what |
//! |---|---|
//! | [`http`] | a keep-alive blocking HTTP/1.1 client, one-shot request helpers |
//! | [`receipts`] | deterministic keys, signed receipts, their JSON spelling |
//! | [`anvil`] | a local dev chain (anvil from npm) on a free port, its funded keys |
//! | [`gas`] | the gas table of the Reputation contracts, measured on a dev chain |
//! | [`dstack`] | a development dstack guest agent (Unix socket or HTTP) |
//! | [`LT_CLIENT`] | a real-client helper script over Debian's python3-libtorrent |

/// `clients/lt_client.py`: makes torrents, seeds and leeches with libtorrent (Debian's
/// python3-libtorrent 2.0); its docstring lists the commands.
pub const LT_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/lt_client.py");

pub mod anvil;
pub mod dstack;
pub mod gas;
pub mod http;
pub mod receipts;
