//! The HTTP tracker and API: one accept loop per listener and core, one task per connection.

pub(crate) mod api;
pub(crate) mod conn;
pub(crate) mod contract;
pub(crate) mod receipt_json;
pub(crate) mod receipts;
pub(crate) mod tee;
pub(crate) mod worker;
