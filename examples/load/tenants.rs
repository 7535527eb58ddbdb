//! The `tenants` scenario: many tenants (schemas) starting on one pool, as
//! an operator's process does at start-up, and what their joining costs the
//! pool's shared listener and the tenants already waiting.
//!
//! Tenant 0 joins first and has a fetch waiting; tenants 1..N then join one
//! after another. Reported: listening connections made, wake-ups of waiting
//! fetches (tenant 0's waiter should sleep through every join), and how long
//! after the last join a commit for the last tenant reaches its waiter.

use std::time::{Duration, Instant};

use std::sync::Arc;

use duroxide::Client;
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::BoxError;

/// A poll timeout no fetch here should reach.
const POLL: Duration = Duration::from_secs(60);
const LOCK: Duration = Duration::from_secs(30);

/// One row of the tenants table.
pub struct Row {
    mode: SqlMode,
    tenants: usize,
    /// Listening connections made from the first join to the end.
    connections: u64,
    /// Waiting fetches woken while tenants 1..N joined.
    wakeups_while_joining: u64,
    /// Mean time to create one tenant's provider (migration included), ms.
    join_ms: f64,
    /// From a commit for the last tenant to its waiter's claim, ms.
    last_claim_ms: f64,
}

async fn provider(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    notify: bool,
) -> Result<PostgresProvider, BoxError> {
    let options = PostgresOptions::default()
        .schema(schema.to_string())
        .sql_mode(mode)
        .notifications(notify);
    Ok(PostgresProvider::from_pool_with(pool.clone(), options).await?)
}

/// A client of tenant `schema` on another pool, without notifications.
async fn client(pool: &PgPool, schema: &str, mode: SqlMode) -> Result<Client, BoxError> {
    Ok(Client::new(Arc::new(
        provider(pool, schema, mode, false).await?,
    )))
}

/// A fetch on `p` that waits up to [`POLL`], returning when it claimed.
fn waiter(p: &PostgresProvider) -> tokio::task::JoinHandle<Option<Instant>> {
    let p = p.clone();
    tokio::spawn(async move {
        let claimed = p.fetch_orchestration_item(LOCK, POLL, None).await;
        matches!(claimed, Ok(Some(_))).then(Instant::now)
    })
}

/// Runs the scenario for one mode with `tenants` schemas.
pub async fn run(
    url: &str,
    admin: &PgPool,
    mode: SqlMode,
    tenants: usize,
) -> Result<Row, BoxError> {
    let tenants = tenants.max(2);
    let names: Vec<String> = (0..tenants)
        .map(|i| format!("tenant_{}_{i}", mode.as_str()))
        .collect();
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(admin)
        .await?;
    }
    // Both pools carry the provider's connection settings (generic plans,
    // statement cache), as a pool built for tenants should.
    let connect = PostgresOptions::default().connect_options(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(connect.clone())
        .await?;
    let enqueuer_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect)
        .await?;

    let first = provider(&pool, &names[0], mode, true).await?;
    // The mode in force, which the environment may have overridden.
    let mode = first.sql_mode();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.notification_stats().is_some_and(|s| s.connected) {
        if Instant::now() > deadline {
            return Err("the listener did not connect in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_waiter = waiter(&first);
    // Let tenant 0's fetch run its query and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = first.notification_stats().unwrap_or_default();

    let joining = Instant::now();
    let mut last = None;
    for name in &names[1..] {
        last = Some(provider(&pool, name, mode, true).await?);
    }
    let join_ms = joining.elapsed().as_secs_f64() * 1e3 / (tenants - 1) as f64;
    let last = last.ok_or("no second tenant")?;
    let after_join = first.notification_stats().unwrap_or_default();

    // A commit for the last tenant, right after it joined.
    let enqueuer = client(&enqueuer_pool, &names[tenants - 1], mode).await?;
    let last_waiter = waiter(&last);
    let committed = Instant::now();
    enqueuer.start_orchestration("last", "Tenant", "{}").await?;
    let last_claim_ms = last_waiter.await?.map_or(f64::NAN, |t| {
        t.duration_since(committed).as_secs_f64() * 1e3
    });

    // Release tenant 0's waiter.
    client(&enqueuer_pool, &names[0], mode)
        .await?
        .start_orchestration("first", "Tenant", "{}")
        .await?;
    first_waiter.await?;
    let end = first.notification_stats().unwrap_or_default();

    drop((first, last));
    pool.close().await;
    enqueuer_pool.close().await;
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(admin)
        .await?;
    }
    eprintln!(
        "[tenants {mode} x{tenants}] {} listening connection(s), {} wake-up(s) while joining",
        end.connections,
        after_join.wakeups - before.wakeups
    );
    Ok(Row {
        mode,
        tenants,
        connections: end.connections,
        wakeups_while_joining: after_join.wakeups - before.wakeups,
        join_ms,
        last_claim_ms,
    })
}

/// Prints the tenants table.
pub fn print(rows: &[Row]) {
    println!();
    println!(
        "| mode | tenants on one pool | listening connections | wake-ups while joining | join ms/tenant | last tenant: commit to claim ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            r.mode, r.tenants, r.connections, r.wakeups_while_joining, r.join_ms, r.last_claim_ms
        );
    }
}
