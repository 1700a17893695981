//! Gas (the original's 7.6, corrected): every contract operation's gas from mined receipts on a
//! fresh anvil, single against batched updates, and the annual cost projection. Also writes
//! `gas.md` (the README's tables).

use crate::report::{Cell, Outcome, Raw, Table};
use pbts_testkit::gas::{GWEI_PER_GAS, USD_PER_ETH};

use super::Settings;

/// Runs the experiment; `out` receives `gas.md`.
pub fn run(s: &Settings, out: &std::path::Path) -> anyhow::Result<Outcome> {
    let users = if s.quick { 5 } else { 100 };
    let anvil = pbts_testkit::anvil::Anvil::start()?;
    let config = pbts_chain::ChainConfig { rpc_url: anvil.url(), ..Default::default() };
    let client = pbts_chain::ChainClient::connect(&config, &pbts_testkit::anvil::dev_key(0))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(pbts_testkit::gas::measure(&client, users))?;
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("gas.md"),
        format!(
            "Gas per operation (receipts' gasUsed on anvil; solc 0.8.37, optimizer 200 runs, cancun):\n\n{}\n\
             Annual cost at {GWEI_PER_GAS} gwei and ${USD_PER_ETH}/ETH (the original's assumptions), every \
             user written on each schedule tick:\n\n{}",
            report.rows_markdown(),
            report.projections_markdown()
        ),
    )?;
    let mut raw = Raw::default();
    let mut ops = Table::new(
        "gas_operations",
        "Gas per contract operation",
        &format!("gasUsed of mined transactions on anvil; batches of {users} users"),
        &["operation", "users", "gas", "gas per user"],
    );
    for r in &report.rows {
        raw.add(&r.operation, &r.users.to_string(), &[r.gas as f64], "gas");
        ops.row(vec![
            r.operation.as_str().into(),
            r.users.into(),
            Cell::Int(r.gas),
            Cell::num(r.per_user(), 0),
        ]);
    }
    let mut proj = Table::new(
        "gas_projection",
        "Annual cost of on-chain reputation",
        &format!(
            "Every user written on each tick, at {GWEI_PER_GAS} gwei and {USD_PER_ETH} USD/ETH: one \
             updateUser transaction per user against the outbox's creditUsers batches of {users}"
        ),
        &[
            "schedule",
            "users",
            "updates/yr",
            "single (ETH)",
            "single (USD)",
            "batched (ETH)",
            "batched (USD)",
        ],
    );
    for p in &report.projections {
        let (e1, e2) = p.eth_at_reference_price();
        proj.row(vec![
            p.frequency.into(),
            Cell::Int(p.users),
            Cell::Int(p.updates_per_year),
            Cell::num(e1, 2),
            Cell::num(e1 * USD_PER_ETH, 0),
            Cell::num(e2, 2),
            Cell::num(e2 * USD_PER_ETH, 0),
        ]);
    }
    Ok(Outcome { name: "gas", tables: vec![ops, proj], raw })
}
