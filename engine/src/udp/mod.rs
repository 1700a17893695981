//! The UDP tracker (BEP 15, BEP 41).
//!
//! [`wire`] and [`connection`] are pure; [`worker`] owns the glommio sockets.

pub mod connection;
pub mod wire;
pub(crate) mod worker;
