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

pub mod anvil;
pub mod dstack;
pub mod gas;
pub mod http;
pub mod receipts;
