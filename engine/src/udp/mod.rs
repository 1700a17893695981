//! The UDP tracker (BEP 15, BEP 41).
//!
//! The codec is `pbts_proto::udp`; [`connection`] (connection ids) is pure; [`worker`] owns the
//! glommio sockets.

pub mod connection;
pub(crate) mod worker;
