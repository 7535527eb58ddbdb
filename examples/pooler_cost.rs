//! What `PostgresOptions::transaction_pooler` costs per operation.
//!
//! ```text
//! DATABASE_URL=postgres://...direct... POOLER_URL=postgres://...pgbouncer... \
//!     cargo run --release --example pooler_cost -- [--iterations 2000]
//! ```
//!
//! Runs the same sequential operations — enqueue a start, fetch it, ack the
//! turn (one history event), read the custom status — in both SQL modes,
//! one schema per configuration, and prints each operation's p50 and p90 in
//! microseconds for:
//!
//! * `direct`: the default settings, straight to the server;
//! * `direct+pooler-setting`: `transaction_pooler` on, straight to the
//!   server (the protocol's cost alone: `BEGIN`, unnamed parse, execute,
//!   `COMMIT` instead of one execute of a prepared statement);
//! * `pgbouncer+pooler-setting`: `transaction_pooler` on, through
//!   `POOLER_URL` (PgBouncer in transaction mode; skipped when unset).
//!
//! Notifications are off in every configuration (the fetches never wait).

use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::Connection;

#[path = "../tests/integration/fixtures.rs"]
mod fixtures;
use fixtures::{event, metadata, start};

const LOCK: Duration = Duration::from_secs(30);

/// Per-operation samples, in microseconds.
#[derive(Default)]
struct Samples {
    enqueue: Vec<u128>,
    fetch: Vec<u128>,
    ack: Vec<u128>,
    read: Vec<u128>,
}

fn percentile(samples: &mut [u128], p: f64) -> u128 {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

async fn measure(p: &PostgresProvider, prefix: &str, iterations: usize) -> Samples {
    let mut samples = Samples::default();
    for i in 0..iterations {
        let instance = format!("{prefix}-{i}");
        let t = Instant::now();
        p.enqueue_for_orchestrator(start(&instance), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        samples.enqueue.push(t.elapsed().as_micros());
        let t = Instant::now();
        let (_, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("fetch: {e}"))
            .unwrap_or_else(|| panic!("nothing fetched"));
        samples.fetch.push(t.elapsed().as_micros());
        let t = Instant::now();
        p.ack_orchestration_item(
            &token,
            1,
            vec![event(&instance, 1)],
            vec![],
            vec![],
            metadata(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));
        samples.ack.push(t.elapsed().as_micros());
        let t = Instant::now();
        p.get_custom_status(&instance, 0)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        samples.read.push(t.elapsed().as_micros());
    }
    samples
}

#[tokio::main]
async fn main() {
    let mut iterations = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("--iterations takes a number"));
            }
            other => panic!("unknown argument {other}; usage: pooler_cost [--iterations N]"),
        }
    }
    let direct = std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("set DATABASE_URL"));
    let pooler = std::env::var("POOLER_URL").ok();
    let mut configs = vec![
        ("direct", direct.clone(), false),
        ("direct+pooler-setting", direct.clone(), true),
    ];
    if let Some(pooler) = pooler {
        configs.push(("pgbouncer+pooler-setting", pooler, true));
    }
    println!(
        "| configuration | mode | enqueue p50/p90 µs | fetch p50/p90 µs | ack p50/p90 µs | read p50/p90 µs |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        for (n, (name, url, pooled)) in configs.iter().enumerate() {
            let schema = format!("pooler_cost_{}_{n}", mode.as_str());
            let options = PostgresOptions::default()
                .schema(&schema)
                .sql_mode(mode)
                .notifications(false)
                .max_connections(2)
                .transaction_pooler(*pooled);
            // A fresh schema, even after an interrupted run.
            let connect = PostgresOptions::default()
                .transaction_pooler(*pooled)
                .connect_options(url)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut conn = sqlx::PgConnection::connect_with(&connect)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("drop {schema}: {e}"));
            conn.close().await.unwrap_or_else(|e| panic!("{name}: {e}"));
            let p = PostgresProvider::connect_with(url, options)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // Warm up: connections, plans, caches.
            measure(&p, "warm", 50).await;
            let mut s = measure(&p, "cost", iterations).await;
            let cell = |v: &mut Vec<u128>| format!("{}/{}", percentile(v, 0.5), percentile(v, 0.9));
            println!(
                "| {name} | {mode} | {} | {} | {} | {} |",
                cell(&mut s.enqueue),
                cell(&mut s.fetch),
                cell(&mut s.ack),
                cell(&mut s.read)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(p.pool())
            .await
            .unwrap_or_else(|e| panic!("drop {schema}: {e}"));
        }
    }
}
