//! Typed bindings generated from the committed artifacts (`chain/artifacts/*.json`), so the
//! Rust side can never drift from the bytecode that is deployed. The ABI's custom errors come
//! out as `Reputation::ReputationErrors`, which [`crate::revert`] decodes revert data into.

#![allow(missing_docs, clippy::too_many_arguments, unreachable_pub)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Reputation,
    "artifacts/Reputation.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    ReputationFactory,
    "artifacts/ReputationFactory.json"
);
