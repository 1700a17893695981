//! The async client: one alloy HTTP provider with the tracker's signer, typed calls on the
//! reputation contracts, and one way of sending a transaction (simulate, estimate, send, wait,
//! check the receipt).

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionReceipt;
use alloy::transports::http::{Http, reqwest};
use tokio::sync::Mutex;

use crate::bindings::{Reputation, ReputationFactory};
use crate::config::{ChainConfig, SigningKey};
use crate::revert::RevertReason;
use crate::types::{
    BatchOutcome, ChainError, CreditEntry, Deployed, FoundUser, Migration, Status, TxFailure,
    TxOutcome, UserRecord,
};

/// A connection to the node, signing as the tracker's account.
#[derive(Debug)]
pub struct ChainClient {
    provider: DynProvider,
    account: Address,
    gas_margin_percent: u64,
    tx_timeout: Duration,
    /// Held while a transaction is prepared, sent and mined: one at a time, so the pending
    /// nonce the node reports is always the next free one.
    send_lock: Mutex<()>,
}

/// Turns an alloy contract error into ours, decoding the revert data into a typed reason when
/// the call reverted.
fn contract_error(e: &alloy::contract::Error) -> ChainError {
    if let Some(data) = e.as_revert_data() {
        return ChainError::Reverted(RevertReason::decode(&data));
    }
    let text = e.to_string();
    // Nodes that report a revert without data still say so in the message, sometimes with the
    // reason string after it.
    if let Some(pos) = text.find("execution reverted") {
        let reason = text[pos + "execution reverted".len()..].trim_start_matches([':', ' ']);
        return ChainError::Reverted(if reason.is_empty() {
            RevertReason::NoData
        } else {
            RevertReason::Message(reason.to_owned())
        });
    }
    ChainError::Rpc(text)
}

fn rpc_error(e: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc(e.to_string())
}

fn outcome(receipt: &TransactionReceipt) -> Result<TxOutcome, ChainError> {
    let tx_hash = receipt.transaction_hash;
    if !receipt.status() {
        return Err(ChainError::Failed { tx_hash, reason: TxFailure::RevertedWhenMined });
    }
    Ok(TxOutcome {
        tx_hash,
        gas_used: receipt.gas_used,
        block_number: receipt.block_number.unwrap_or_default(),
    })
}

impl ChainClient {
    /// Connects to `config.rpc_url` (no request is made yet).
    ///
    /// # Errors
    /// A URL that does not parse.
    pub fn connect(config: &ChainConfig, key: &SigningKey) -> Result<Self, ChainError> {
        let url: reqwest::Url = config.rpc_url.trim().parse().map_err(|_| {
            ChainError::Config(format!("chain.rpc_url {:?} is not a URL", config.rpc_url))
        })?;
        let http_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.rpc_timeout_secs))
            .build()
            .map_err(rpc_error)?;
        let is_local =
            url.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        let rpc = RpcClient::new(Http::with_client(http_client, url), is_local);
        let provider = ProviderBuilder::default()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(key.0.clone()))
            .connect_client(rpc)
            .erased();
        Ok(Self {
            provider,
            account: key.address(),
            gas_margin_percent: config.gas_margin_percent,
            tx_timeout: Duration::from_secs(config.tx_timeout_secs),
            send_lock: Mutex::new(()),
        })
    }

    /// The tracker's account.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The provider, for callers that need raw RPC (tests, the gas table).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Chain id, latest block and the account's balance (three RPC round trips).
    ///
    /// # Errors
    /// [`ChainError::Rpc`].
    pub async fn status(&self) -> Result<Status, ChainError> {
        let chain_id = self.provider.get_chain_id().await.map_err(rpc_error)?;
        let block_number = self.provider.get_block_number().await.map_err(rpc_error)?;
        let balance = self.provider.get_balance(self.account).await.map_err(rpc_error)?;
        Ok(Status { chain_id, block_number, account: self.account, balance })
    }

    /// Simulates, estimates, sends and waits for one contract call; every write goes here.
    async fn send<D>(
        &self,
        call: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt, ChainError>
    where
        D: alloy::contract::CallDecoder,
    {
        let _one_at_a_time = self.send_lock.lock().await;
        let call = call.from(self.account);
        let estimate = call.estimate_gas().await.map_err(|e| contract_error(&e))?;
        let gas = estimate.saturating_mul(100 + self.gas_margin_percent) / 100;
        let pending = call.gas(gas).send().await.map_err(|e| contract_error(&e))?;
        let receipt = pending
            .with_timeout(Some(self.tx_timeout))
            .get_receipt()
            .await
            .map_err(|e| ChainError::Rpc(format!("waiting for the receipt: {e}")))?;
        outcome(&receipt)?;
        Ok(receipt)
    }

    /// Deploys a [`ReputationFactory`].
    ///
    /// # Errors
    /// RPC failures or a failed deployment.
    pub async fn deploy_factory(&self) -> Result<Deployed, ChainError> {
        let receipt = self.send(ReputationFactory::deploy_builder(&self.provider)).await?;
        let tx = outcome(&receipt)?;
        let address = receipt.contract_address.ok_or(ChainError::Failed {
            tx_hash: tx.tx_hash,
            reason: TxFailure::NoContractAddress,
        })?;
        Ok(Deployed { address, tx })
    }

    /// `factory.createReputation(referrer, attestation)`: a new contract owned by the tracker,
    /// its address read from the `ReputationCreated` event (not from `logs[0]`).
    ///
    /// # Errors
    /// RPC failures, a revert (`ReferrerNotContract`, `ReferrerNotReputation`: see
    /// [`ReputationError`](crate::revert::ReputationError)), or a receipt without the event.
    pub async fn create_reputation(
        &self,
        factory: Address,
        referrer: Address,
        attestation: Vec<u8>,
    ) -> Result<Deployed, ChainError> {
        let f = ReputationFactory::new(factory, self.provider.clone());
        let receipt = self.send(f.createReputation(referrer, Bytes::from(attestation))).await?;
        let tx = outcome(&receipt)?;
        let event = receipt
            .decoded_log::<ReputationFactory::ReputationCreated>()
            .filter(|log| log.address == factory)
            .ok_or(ChainError::Failed {
                tx_hash: tx.tx_hash,
                reason: TxFailure::NoReputationCreated,
            })?;
        Ok(Deployed { address: event.data.newReputationAddress, tx })
    }

    /// `addUser` (refuses an existing user).
    ///
    /// # Errors
    /// RPC failures or a revert (`UserExists`, `ZeroPasswordHash`, `NotOwner`).
    pub async fn add_user(
        &self,
        reputation: Address,
        user: &UserRecord,
    ) -> Result<TxOutcome, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let call = r.addUser(
            user.username.clone(),
            user.salt.clone(),
            user.password_hash,
            user.download_size,
            user.upload_size,
        );
        outcome(&self.send(call).await?)
    }

    /// `updateUser` with absolute totals.
    ///
    /// # Errors
    /// RPC failures or a revert (`UserDoesNotExist`, `NotOwner`).
    pub async fn update_user(
        &self,
        reputation: Address,
        username: &str,
        download_size: U256,
        upload_size: U256,
    ) -> Result<TxOutcome, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        outcome(&self.send(r.updateUser(username.to_owned(), download_size, upload_size)).await?)
    }

    /// `updateUsers`: many absolute updates in one transaction, all or nothing.
    ///
    /// # Errors
    /// RPC failures or a revert (`UserDoesNotExist` for the first unknown user, `NotOwner`).
    pub async fn update_users(
        &self,
        reputation: Address,
        users: &[(String, U256, U256)],
    ) -> Result<TxOutcome, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let names = users.iter().map(|u| u.0.clone()).collect();
        let downs = users.iter().map(|u| u.1).collect();
        let ups = users.iter().map(|u| u.2).collect();
        outcome(&self.send(r.updateUsers(names, downs, ups)).await?)
    }

    /// `migrateUserData`: copies the user from the nearest referrer that has it.
    ///
    /// # Errors
    /// RPC failures or a revert (`UserExists`, `NotOwner`).
    pub async fn migrate_user(
        &self,
        reputation: Address,
        username: &str,
    ) -> Result<Migration, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let receipt = self.send(r.migrateUserData(username.to_owned())).await?;
        let tx = outcome(&receipt)?;
        let source = receipt
            .decoded_log::<Reputation::UserMigrated>()
            .filter(|log| log.address == reputation)
            .map(|log| log.data.source);
        Ok(Migration { source, tx })
    }

    /// `creditUsers`: one batch of verified credit, exactly once. A batch the contract already
    /// applied (its id at or below `lastBatchId`) is reported as such without sending anything.
    ///
    /// # Errors
    /// RPC failures or a revert (`BatchOutOfOrder` when an earlier batch is missing,
    /// `ZeroPasswordHash`, `NotOwner`).
    pub async fn credit_users(
        &self,
        reputation: Address,
        batch_id: u64,
        entries: &[CreditEntry],
    ) -> Result<BatchOutcome, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let call = r.creditUsers(
            batch_id,
            entries.iter().map(|e| e.username.clone()).collect(),
            entries.iter().map(|e| B256::from(e.key_hash)).collect(),
            entries.iter().map(|e| U256::from(e.download_delta)).collect(),
            entries.iter().map(|e| U256::from(e.upload_delta)).collect(),
        );
        // A replay returns false without reverting: ask first, and send only a new batch.
        let applies = call.call().await.map_err(|e| contract_error(&e))?;
        if !applies {
            return Ok(BatchOutcome::AlreadyApplied);
        }
        let receipt = self.send(call).await?;
        let tx = outcome(&receipt)?;
        let applied = receipt
            .decoded_log::<Reputation::BatchApplied>()
            .is_some_and(|log| log.address == reputation && log.data.batchId == batch_id);
        if applied {
            Ok(BatchOutcome::Applied(tx))
        } else {
            // Mined between our check and our send by someone else: it is applied either way.
            Ok(BatchOutcome::AlreadyApplied)
        }
    }

    /// The contract's `lastBatchId`.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn last_batch_id(&self, reputation: Address) -> Result<u64, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        r.lastBatchId().call().await.map_err(|e| contract_error(&e))
    }

    /// `getUserData`: the record in this contract only; `None` when absent.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn get_user(
        &self,
        reputation: Address,
        username: &str,
    ) -> Result<Option<UserRecord>, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let d = r.getUserData(username.to_owned()).call().await.map_err(|e| contract_error(&e))?;
        Ok((d.passwordHash != B256::ZERO).then(|| record(d)))
    }

    /// `findUser`: the record here or up the referrer chain.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn find_user(
        &self,
        reputation: Address,
        username: &str,
    ) -> Result<Option<FoundUser>, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let found = r.findUser(username.to_owned()).call().await.map_err(|e| contract_error(&e))?;
        Ok(found.found.then(|| FoundUser { source: found.source, user: record(found.data) }))
    }

    /// The attestation `factory` published when it created `reputation` (from its
    /// `ReputationCreated` events); `None` if it did not create it.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn reputation_attestation(
        &self,
        factory: Address,
        reputation: Address,
    ) -> Result<Option<Vec<u8>>, ChainError> {
        use alloy::sol_types::SolEvent as _;
        let filter = alloy::rpc::types::Filter::new()
            .address(factory)
            .event_signature(ReputationFactory::ReputationCreated::SIGNATURE_HASH)
            .from_block(0u64);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc_error)?;
        Ok(logs.iter().find_map(|log| {
            let e = ReputationFactory::ReputationCreated::decode_log(&log.inner).ok()?;
            (e.data.newReputationAddress == reputation).then(|| e.data.attestation.to_vec())
        }))
    }

    /// `owner()` and `referrerReputation()` of a contract.
    ///
    /// # Errors
    /// RPC failures (or an address that is not a Reputation).
    pub async fn describe(&self, reputation: Address) -> Result<(Address, Address), ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        let owner = r.owner().call().await.map_err(|e| contract_error(&e))?;
        let referrer = r.referrerReputation().call().await.map_err(|e| contract_error(&e))?;
        Ok((owner, referrer))
    }

    /// `setOffchainDataUrl`.
    ///
    /// # Errors
    /// RPC failures or a revert.
    pub async fn set_offchain_url(
        &self,
        reputation: Address,
        url: &str,
    ) -> Result<TxOutcome, ChainError> {
        let r = Reputation::new(reputation, self.provider.clone());
        outcome(&self.send(r.setOffchainDataUrl(url.to_owned())).await?)
    }
}

fn record(d: Reputation::UserData) -> UserRecord {
    UserRecord {
        username: d.username,
        salt: d.salt,
        password_hash: d.passwordHash,
        download_size: d.downloadSize,
        upload_size: d.uploadSize,
    }
}

#[cfg(test)]
mod tests {
    use alloy::sol_types::SolInterface as _;

    use super::*;
    use crate::ReputationError;

    /// An alloy contract error from a node's JSON-RPC error object.
    fn node_error(json: &str) -> alloy::contract::Error {
        let payload = serde_json::from_str(json).expect("the test's JSON is an error object");
        alloy::contract::Error::TransportError(alloy::transports::TransportError::ErrorResp(
            payload,
        ))
    }

    #[test]
    fn a_node_error_becomes_a_typed_revert_or_an_rpc_error() {
        let exists = ReputationError::UserExists(Reputation::UserExists { username: "al".into() });
        let data = alloy::hex::encode_prefixed(exists.abi_encode());
        let cases = [
            // anvil and geth: code 3 with the revert data.
            (
                format!(r#"{{"code":3,"message":"execution reverted","data":"{data}"}}"#),
                ChainError::Reverted(RevertReason::Reputation(exists)),
            ),
            // Data from a contract that is not ours: kept raw.
            (
                r#"{"code":3,"message":"execution reverted","data":"0xdeadbeef"}"#.to_owned(),
                ChainError::Reverted(RevertReason::Unknown(alloy::hex!("deadbeef").into())),
            ),
            // Nodes that give no data: the text after "execution reverted", if any.
            (
                r#"{"code":-32000,"message":"execution reverted: Old text"}"#.to_owned(),
                ChainError::Reverted(RevertReason::Message("Old text".into())),
            ),
            (
                r#"{"code":-32000,"message":"execution reverted"}"#.to_owned(),
                ChainError::Reverted(RevertReason::NoData),
            ),
            (
                r#"{"code":-32000,"message":"insufficient funds for gas"}"#.to_owned(),
                ChainError::Rpc(
                    "server returned an error response: error code -32000: insufficient funds \
                     for gas"
                        .into(),
                ),
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(contract_error(&node_error(&json)), expected, "{json}");
        }
    }
}
