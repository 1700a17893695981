//! The gas table: what each contract operation costs, single updates against batches, and what
//! a year of reputation updates would cost (the original's experiment 7.6, corrected: it
//! measured only one-transaction-per-user updates and projected from those, while the tracker
//! writes credit in batches).
//!
//! Every figure is the `gasUsed` of a mined transaction's receipt on the node given (anvil in
//! the experiments), never an estimate.

use alloy::primitives::{Address, B256, U256};

use pbts_chain::{ChainClient, ChainError, CreditEntry, TxOutcome, UserRecord};

/// One measured operation.
#[derive(Debug, Clone, PartialEq)]
pub struct GasRow {
    /// What was done.
    pub operation: String,
    /// Users the transaction touched.
    pub users: usize,
    /// Gas of the whole transaction.
    pub gas: u64,
}

impl GasRow {
    /// Gas per user touched.
    pub fn per_user(&self) -> f64 {
        self.gas as f64 / self.users.max(1) as f64
    }
}

/// A cost projection for one update schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// How often each user's totals are written.
    pub frequency: &'static str,
    /// Writes per user per year.
    pub updates_per_year: u64,
    /// Users.
    pub users: u64,
    /// `updateUser`, one transaction per user and update.
    pub single_gas: f64,
    /// `creditUsers` batches of [`GasReport::batch_size`] users.
    pub batched_gas: f64,
}

impl Projection {
    /// ETH at `gwei` per gas.
    pub fn eth(gas: f64, gwei: f64) -> f64 {
        gas * gwei * 1e-9
    }

    /// (single, batched) yearly cost in ETH at [`GWEI_PER_GAS`].
    pub fn eth_at_reference_price(&self) -> (f64, f64) {
        (Self::eth(self.single_gas, GWEI_PER_GAS), Self::eth(self.batched_gas, GWEI_PER_GAS))
    }
}

/// The measured table.
#[derive(Debug, Clone, PartialEq)]
pub struct GasReport {
    /// Every operation, in the order measured.
    pub rows: Vec<GasRow>,
    /// Users per batch in the batch rows.
    pub batch_size: usize,
    /// Projections for the original's schedules and user counts.
    pub projections: Vec<Projection>,
}

/// The original's price assumptions, kept so the projection compares with its figures: 30 gwei
/// per gas and $3000 per ETH.
pub const GWEI_PER_GAS: f64 = 30.0;
/// See [`GWEI_PER_GAS`].
pub const USD_PER_ETH: f64 = 3000.0;

fn row(operation: impl Into<String>, users: usize, tx: &TxOutcome) -> GasRow {
    GasRow { operation: operation.into(), users, gas: tx.gas_used }
}

fn hash(s: &str) -> B256 {
    B256::from(pbts_chain::key_hash(s.as_bytes()))
}

/// Deploys fresh contracts and measures every operation, with batches of `batch_size` users.
///
/// # Errors
/// Any RPC failure or unexpected revert.
pub async fn measure(c: &ChainClient, batch_size: usize) -> Result<GasReport, ChainError> {
    let n = batch_size.max(2);
    let mut rows = Vec::new();
    let factory = c.deploy_factory().await?;
    rows.push(row("deploy ReputationFactory", 0, &factory.tx));
    let factory = factory.address;
    let rep = c.create_reputation(factory, Address::ZERO, Vec::new()).await?;
    rows.push(row("createReputation(0x0, \"\")", 0, &rep.tx));
    let marked = c
        .create_reputation(factory, Address::ZERO, pbts_chain::NO_TEE_ATTESTATION.to_vec())
        .await?;
    rows.push(row("createReputation(0x0, \"PBTS-Tracker-v1.0\")", 0, &marked.tx));
    let rep = rep.address;

    let user0 = UserRecord {
        username: "user0".into(),
        salt: "salt0".into(),
        password_hash: hash("password"),
        download_size: U256::ZERO,
        upload_size: U256::from(1024),
    };
    rows.push(row("addUser (one user)", 1, &c.add_user(rep, &user0).await?));
    let tx = c.update_user(rep, "user0", U256::from(1024), U256::from(2048)).await?;
    rows.push(row("updateUser, first (download 0 -> non-zero)", 1, &tx));
    let tx = c.update_user(rep, "user0", U256::from(4096), U256::from(8192)).await?;
    rows.push(row("updateUser, later (non-zero -> non-zero)", 1, &tx));

    let child = c.create_reputation(factory, rep, Vec::new()).await?;
    rows.push(row("createReputation(referrer)", 0, &child.tx));
    let m = c.migrate_user(child.address, "user0").await?;
    rows.push(row("migrateUserData (found one level up)", 1, &m.tx));
    let m = c.migrate_user(child.address, "nobody").await?;
    rows.push(row("migrateUserData (absent, no-op)", 1, &m.tx));

    // n users, added then updated one transaction each: the original's way.
    let names: Vec<String> = (1..=n).map(|i| format!("batchuser{i}")).collect();
    let (mut add, mut upd) = (0u64, 0u64);
    for (i, name) in names.iter().enumerate() {
        let i = i as u64 + 1;
        let u = UserRecord {
            username: name.clone(),
            salt: format!("salt{i}"),
            password_hash: hash(name),
            download_size: U256::ZERO,
            upload_size: U256::from(1024 * i),
        };
        add += c.add_user(rep, &u).await?.gas_used;
        upd += c.update_user(rep, name, U256::from(512 * i), U256::from(2048 * i)).await?.gas_used;
    }
    rows.push(GasRow {
        operation: format!("addUser x{n}, one transaction each"),
        users: n,
        gas: add,
    });
    rows.push(GasRow {
        operation: format!("updateUser x{n}, one transaction each"),
        users: n,
        gas: upd,
    });
    let batch: Vec<(String, U256, U256)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), U256::from(1000 + i), U256::from(3000 + i)))
        .collect();
    let tx = c.update_users(rep, &batch).await?;
    rows.push(row(format!("updateUsers, {n} users in one transaction"), n, &tx));

    // The tracker's outbox: creditUsers batches.
    let entries = |prefix: &str, down: u64, up: u64| -> Vec<CreditEntry> {
        (1..=n)
            .map(|i| CreditEntry {
                username: format!("{prefix}{i}"),
                key_hash: pbts_chain::key_hash(format!("{prefix}{i}").as_bytes()),
                download_delta: down,
                upload_delta: up,
            })
            .collect()
    };
    let fresh = entries("batchuser", 0, 0); // existing users: credit only
    let credit = |r: pbts_chain::BatchOutcome| match r {
        pbts_chain::BatchOutcome::Applied(tx) => Ok(tx),
        pbts_chain::BatchOutcome::AlreadyApplied => {
            Err(ChainError::Rpc("a measured batch was unexpectedly a replay".into()))
        }
    };
    let single = vec![CreditEntry {
        username: "user0".into(),
        key_hash: hash("password").0,
        download_delta: 1,
        upload_delta: 1,
    }];
    let tx = credit(c.credit_users(rep, 1, &single).await?)?;
    rows.push(row("creditUsers, one existing user", 1, &tx));
    let mut existing = fresh;
    for e in &mut existing {
        e.download_delta = 262_144;
        e.upload_delta = 524_288;
    }
    let tx = credit(c.credit_users(rep, 2, &existing).await?)?;
    rows.push(row(format!("creditUsers, {n} existing users"), n, &tx));
    let tx = credit(c.credit_users(rep, 3, &entries("newuser", 262_144, 524_288)).await?)?;
    rows.push(row(format!("creditUsers, {n} new users"), n, &tx));
    // A successor instance's first batch: every user carried over from the referrer.
    let mut carried = existing;
    for e in &mut carried {
        e.key_hash = hash(&e.username).0;
    }
    let tx = credit(c.credit_users(child.address, 1, &carried).await?)?;
    rows.push(row(format!("creditUsers, {n} users migrated from the referrer"), n, &tx));

    let single_gas =
        rows.iter().find(|r| r.operation.starts_with("updateUser x")).map_or(0.0, GasRow::per_user);
    let batch_gas = rows
        .iter()
        .find(|r| r.operation == format!("creditUsers, {n} existing users"))
        .map_or(0.0, GasRow::per_user);
    let mut projections = Vec::new();
    for (frequency, updates_per_year) in
        [("per transfer (10/day)", 3650u64), ("hourly", 8760), ("daily", 365), ("weekly", 52)]
    {
        for users in [100u64, 1000, 10_000] {
            let writes = (updates_per_year * users) as f64;
            projections.push(Projection {
                frequency,
                updates_per_year,
                users,
                single_gas: writes * single_gas,
                batched_gas: writes * batch_gas,
            });
        }
    }
    Ok(GasReport { rows, batch_size: n, projections })
}

impl GasReport {
    /// The operations as a Markdown table.
    pub fn rows_markdown(&self) -> String {
        let mut out =
            String::from("| operation | users | gas | gas per user |\n|---|---:|---:|---:|\n");
        for r in &self.rows {
            let per_user = if r.users > 0 { format!("{:.0}", r.per_user()) } else { "".into() };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.operation, r.users, r.gas, per_user
            ));
        }
        out
    }

    /// The projections as a Markdown table (ETH and USD at [`GWEI_PER_GAS`], [`USD_PER_ETH`]).
    pub fn projections_markdown(&self) -> String {
        let mut out = format!(
            "| schedule | users | updates/yr | updateUser each: ETH | USD | creditUsers x{}: ETH | USD |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
            self.batch_size
        );
        for p in &self.projections {
            let (e1, e2) = p.eth_at_reference_price();
            out.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} |\n",
                p.frequency,
                p.users,
                p.updates_per_year,
                e1,
                e1 * USD_PER_ETH,
                e2,
                e2 * USD_PER_ETH
            ));
        }
        out
    }

    /// The operations as CSV (`operation,users,gas,gas_per_user`).
    pub fn rows_csv(&self) -> String {
        let mut out = String::from("operation,users,gas,gas_per_user\n");
        for r in &self.rows {
            out.push_str(&format!(
                "\"{}\",{},{},{:.1}\n",
                r.operation.replace('"', "\"\""),
                r.users,
                r.gas,
                r.per_user()
            ));
        }
        out
    }

    /// The projections as CSV.
    pub fn projections_csv(&self) -> String {
        let mut out = String::from(
            "schedule,users,updates_per_year,single_gas,single_eth,single_usd,batched_gas,batched_eth,batched_usd\n",
        );
        for p in &self.projections {
            let (e1, e2) = p.eth_at_reference_price();
            out.push_str(&format!(
                "\"{}\",{},{},{:.0},{:.4},{:.2},{:.0},{:.4},{:.2}\n",
                p.frequency,
                p.users,
                p.updates_per_year,
                p.single_gas,
                e1,
                e1 * USD_PER_ETH,
                p.batched_gas,
                e2,
                e2 * USD_PER_ETH
            ));
        }
        out
    }
}
