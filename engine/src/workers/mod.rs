//! The engine's worker roles, each on its own named thread under the supervisor
//! ([`crate::supervisor`]).
//!
//! | role | threads | what |
//! |---|---|---|
//! | [`verifier`] | `verifier-NN` | BLS batch verification of receipts for the serving cores |

pub mod verifier;
