//! The chain thread: a current-thread tokio runtime owning the [`ChainClient`], fed by a
//! channel of plain requests, each answered on its own reply channel.
//!
//! The handle's methods never block: they queue the request and return the reply receiver,
//! which a glommio task awaits with `recv_async` and a plain thread with `recv` or
//! `recv_timeout`. Requests run concurrently on the thread (reads overlap; writes queue on the
//! client's send lock). Dropping every handle stops the thread once queued requests are done.

use std::future::Future;
use std::sync::Arc;

use alloy::primitives::{Address, U256};

use crate::client::ChainClient;
use crate::config::{ChainConfig, SigningKey};
use crate::types::{
    BatchOutcome, ChainError, CreditEntry, Deployed, FoundUser, Migration, Status, TxOutcome,
    UserRecord,
};

/// A reply: the result of one request.
pub type Reply<T> = flume::Receiver<Result<T, ChainError>>;

type Job =
    Box<dyn FnOnce(Arc<ChainClient>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The engine's side of the chain thread. Cheap to clone.
#[derive(Clone)]
pub struct ChainHandle {
    jobs: flume::Sender<Job>,
    account: Address,
}

impl std::fmt::Debug for ChainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHandle").field("account", &self.account).finish()
    }
}

impl ChainHandle {
    /// Starts the `chain-01` thread.
    ///
    /// # Errors
    /// A bad RPC URL, or a thread or runtime that cannot be created.
    pub fn start(config: ChainConfig, key: SigningKey) -> Result<Self, ChainError> {
        let client = Arc::new(ChainClient::connect(&config, &key)?);
        let account = client.account();
        let (jobs, rx) = flume::unbounded::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ChainError::Config(format!("tokio runtime: {e}")))?;
        std::thread::Builder::new()
            .name("chain-01".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut running = tokio::task::JoinSet::new();
                    while let Ok(job) = rx.recv_async().await {
                        running.spawn(job(client.clone()));
                        // Reap finished requests so the set does not grow.
                        while running.try_join_next().is_some() {}
                    }
                    while running.join_next().await.is_some() {}
                });
            })
            .map_err(|e| ChainError::Config(format!("spawn chain thread: {e}")))?;
        Ok(Self { jobs, account })
    }

    /// The tracker's account.
    pub fn account(&self) -> Address {
        self.account
    }

    fn run<T, F, Fut>(&self, f: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<ChainClient>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ChainError>> + Send + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = tx.send(f(client).await);
            })
        });
        // A failed send drops the job and with it `tx`: the receiver reports disconnection,
        // which callers map to `ChainError::Stopped`.
        let _ = self.jobs.send(job);
        rx
    }

    /// See [`ChainClient::status`].
    pub fn status(&self) -> Reply<Status> {
        self.run(|c| async move { c.status().await })
    }

    /// See [`ChainClient::deploy_factory`].
    pub fn deploy_factory(&self) -> Reply<Deployed> {
        self.run(|c| async move { c.deploy_factory().await })
    }

    /// See [`ChainClient::create_reputation`].
    pub fn create_reputation(
        &self,
        factory: Address,
        referrer: Address,
        attestation: Vec<u8>,
    ) -> Reply<Deployed> {
        self.run(move |c| async move { c.create_reputation(factory, referrer, attestation).await })
    }

    /// See [`ChainClient::add_user`].
    pub fn add_user(&self, reputation: Address, user: UserRecord) -> Reply<TxOutcome> {
        self.run(move |c| async move { c.add_user(reputation, &user).await })
    }

    /// See [`ChainClient::update_user`].
    pub fn update_user(
        &self,
        reputation: Address,
        username: String,
        download: U256,
        upload: U256,
    ) -> Reply<TxOutcome> {
        self.run(
            move |c| async move { c.update_user(reputation, &username, download, upload).await },
        )
    }

    /// See [`ChainClient::migrate_user`].
    pub fn migrate_user(&self, reputation: Address, username: String) -> Reply<Migration> {
        self.run(move |c| async move { c.migrate_user(reputation, &username).await })
    }

    /// See [`ChainClient::credit_users`].
    pub fn credit_users(
        &self,
        reputation: Address,
        batch_id: u64,
        entries: Vec<CreditEntry>,
    ) -> Reply<BatchOutcome> {
        self.run(move |c| async move { c.credit_users(reputation, batch_id, &entries).await })
    }

    /// See [`ChainClient::last_batch_id`].
    pub fn last_batch_id(&self, reputation: Address) -> Reply<u64> {
        self.run(move |c| async move { c.last_batch_id(reputation).await })
    }

    /// See [`ChainClient::find_user`].
    pub fn find_user(&self, reputation: Address, username: String) -> Reply<Option<FoundUser>> {
        self.run(move |c| async move { c.find_user(reputation, &username).await })
    }

    /// The runtime bytecode at `address` (empty for an account without code).
    pub fn code_at(&self, address: Address) -> Reply<alloy::primitives::Bytes> {
        self.run(move |c| async move {
            use alloy::providers::Provider as _;
            c.provider().get_code_at(address).await.map_err(|e| ChainError::Rpc(e.to_string()))
        })
    }

    /// See [`ChainClient::reputation_attestation`].
    pub fn reputation_attestation(
        &self,
        factory: Address,
        reputation: Address,
    ) -> Reply<Option<Vec<u8>>> {
        self.run(move |c| async move { c.reputation_attestation(factory, reputation).await })
    }

    /// See [`ChainClient::describe`].
    pub fn describe(&self, reputation: Address) -> Reply<(Address, Address)> {
        self.run(move |c| async move { c.describe(reputation).await })
    }
}

/// Waits for a reply on a plain thread; a dead chain thread is [`ChainError::Stopped`].
///
/// # Errors
/// The request's error, or `Stopped`.
pub fn wait<T>(reply: &Reply<T>) -> Result<T, ChainError> {
    reply.recv().map_err(|_| ChainError::Stopped)?
}

/// Awaits a reply from async code (a glommio task); a dead chain thread is
/// [`ChainError::Stopped`].
///
/// # Errors
/// The request's error, or `Stopped`.
pub async fn wait_async<T>(reply: Reply<T>) -> Result<T, ChainError> {
    reply.recv_async().await.map_err(|_| ChainError::Stopped)?
}
