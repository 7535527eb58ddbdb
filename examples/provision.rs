//! Provisioning benchmark: migrates `--tenants` fresh schemas on one pool,
//! `--parallel` at a time (`tenants::migrate_many_with`), and prints tenants
//! per second.
//!
//! ```text
//! cargo run --release --example provision -- [--tenants 1000] [--parallel 1] [--mode procedures|inline] [--keep]
//! ```
//!
//! Without `DATABASE_URL` it starts its own throwaway server with
//! `--durable` (fsync on), as a production server would run. The schemas it
//! creates (`prov_bench_N`) are dropped at the end, unless `--keep` leaves
//! them in place (to crowd a server with other tenants' schemas).

use std::time::Instant;

use duroxide_postgres::{
    PostgresOptions, SchemaName, SqlMode, ThrowawayPostgres, migrate, tenants,
};
use sqlx::postgres::PgPoolOptions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), BoxError> {
    let tenants: usize = arg("--tenants").map_or(Ok(1000), |v| v.parse())?;
    let parallel: usize = arg("--parallel").map_or(Ok(1), |v| v.parse())?;
    let keep = std::env::args().any(|a| a == "--keep");
    let mode = match arg("--mode").as_deref() {
        None | Some("procedures") => SqlMode::StoredProcedures,
        Some("inline") => SqlMode::InlineSql,
        Some(other) => return Err(format!("unknown mode {other}").into()),
    };
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => ThrowawayPostgres::start_with_args(&["--durable"])?
            .url()
            .to_string(),
    };
    tokio::runtime::Runtime::new()?.block_on(run(&url, tenants, parallel.max(1), mode, keep))
}

async fn run(
    url: &str,
    tenants: usize,
    parallel: usize,
    mode: SqlMode,
    keep: bool,
) -> Result<(), BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(parallel)?.max(1))
        .connect_with(PostgresOptions::default().connect_options(url)?)
        .await?;
    let schemas: Vec<SchemaName> = (0..tenants)
        .map(|i| SchemaName::new(&format!("prov_bench_{i}")))
        .collect::<Result<_, _>>()?;
    for schema in &schemas {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            schema.quoted()
        )))
        .execute(&pool)
        .await?;
    }
    let started = Instant::now();
    let outcomes = tenants::migrate_many_with(&pool, &schemas, mode, parallel, |p| {
        if p.done % 100 == 0 {
            eprintln!(
                "{} tenants in {:.1} s",
                p.done,
                started.elapsed().as_secs_f64()
            );
        }
    })
    .await;
    for outcome in outcomes {
        outcome.result?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "provisioned {tenants} tenants ({mode}, {parallel} at a time) in {elapsed:.1} s: {:.1} tenants/s",
        tenants as f64 / elapsed
    );
    // A current schema: what every later start costs.
    let started = Instant::now();
    for schema in &schemas {
        migrate::migrate(&pool, schema, mode).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "re-checked {tenants} current tenants in {elapsed:.1} s: {:.1} tenants/s",
        tenants as f64 / elapsed
    );
    if !keep {
        for schema in &schemas {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                schema.quoted()
            )))
            .execute(&pool)
            .await?;
        }
    }
    pool.close().await;
    Ok(())
}
