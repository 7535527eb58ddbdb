//! WAL flushes per orchestration, per SQL mode, with a real runtime.
//!
//! ```text
//! DATABASE_URL=postgres://... cargo run --example wal_flushes -- [ORCHESTRATIONS]
//! ```
//!
//! For each SQL mode, on a fresh schema: a runtime (duroxide's default
//! options, long polling on) runs ORCHESTRATIONS (default 200) orchestrations
//! of one activity each, started together; the server's `pg_stat_wal`
//! (`wal_sync`: WAL flushes, `wal_write`: WAL writes; from PostgreSQL 18
//! `pg_stat_io`'s `fsyncs` and `writes` of the WAL) is read before the
//! first start and after the last completion, and divided by the count.
//! Run it on a durable server nobody else uses (`scripts/pg-throwaway.sh
//! --durable`): on a server with fsync off `wal_sync` stays 0, and other
//! sessions' commits would be counted too. A backend reports its WAL
//! counts to `pg_stat_wal` at most once a second, and an idle one only
//! after ten, so the counters are read from a connection of their own
//! once the runtime's pool is closed and its backends have exited (each
//! reports what it still held as it exits). Concurrent dispatchers let
//! commits share a flush, so these are at most the per-call counts of
//! `scripts/claims-ab-bench.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The WAL's flushes and writes, read on a connection of its own once
/// no backend of the application `app` is left (each reports its pending
/// counts as it exits).
async fn wal(url: &str, app: &str) -> Result<(i64, i64), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = $1",
        )
        .bind(app)
        .fetch_one(&mut conn)
        .await?;
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{left} backends of {app} are still there").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let version: i32 =
        sqlx::query_scalar("SELECT pg_catalog.current_setting('server_version_num')::integer")
            .fetch_one(&mut conn)
            .await?;
    // PostgreSQL 18 moved the WAL's I/O counts from pg_stat_wal to pg_stat_io.
    let counts = sqlx::query_as(if version >= 180_000 {
        "SELECT coalesce(sum(fsyncs), 0)::bigint, coalesce(sum(writes), 0)::bigint \
           FROM pg_catalog.pg_stat_io WHERE object = 'wal'"
    } else {
        "SELECT wal_sync::bigint, wal_write::bigint FROM pg_catalog.pg_stat_wal"
    })
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(counts)
}

async fn run(url: &str, mode: SqlMode, n: usize) -> Result<(), BoxError> {
    let schema = format!("wal_flushes_{}", mode.to_string().to_lowercase());
    let app = format!("wal_flushes/{schema}");
    let connect = || -> Result<sqlx::postgres::PgConnectOptions, BoxError> {
        Ok(PostgresOptions::default()
            .connect_options(url)?
            .application_name(&app))
    };
    // The schema, made by a pool closed before the first reading.
    let setup = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect()?)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&setup)
    .await?;
    PostgresProvider::from_pool_with(
        setup.clone(),
        PostgresOptions::default().schema(&schema).sql_mode(mode),
    )
    .await?;
    setup.close().await;
    let (sync_before, write_before) = wal(url, &app).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(connect()?)
        .await?;
    let provider = Arc::new(
        PostgresProvider::from_pool_with(
            pool.clone(),
            PostgresOptions::default().schema(&schema).sql_mode(mode),
        )
        .await?,
    );
    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "One",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Echo", input).await
            },
        )
        .build();
    let rt = Runtime::start_with_options(
        provider.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await;
    let client = Client::new(provider.clone());
    let begun = Instant::now();
    for i in 0..n {
        client
            .start_orchestration(&format!("o-{i}"), "One", "x")
            .await?;
    }
    for i in 0..n {
        match client
            .wait_for_orchestration(&format!("o-{i}"), Duration::from_secs(300))
            .await?
        {
            OrchestrationStatus::Completed { .. } => {}
            other => return Err(format!("o-{i}: {other:?}").into()),
        }
    }
    let elapsed = begun.elapsed();
    rt.shutdown(None).await;
    drop(client);
    drop(provider);
    pool.close().await;
    let (sync_after, write_after) = wal(url, &app).await?;
    println!(
        "{mode:<10} {n:>6} orchestrations in {:>6.1} s: {:.2} WAL flushes and {:.2} WAL writes per orchestration",
        elapsed.as_secs_f64(),
        (sync_after - sync_before) as f64 / n as f64,
        (write_after - write_before) as f64 / n as f64,
    );
    let cleanup = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect()?)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&cleanup)
    .await?;
    cleanup.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL (scripts/pg-throwaway.sh --durable prints one)")?;
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 200,
    };
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        run(&url, mode, n).await?;
    }
    Ok(())
}
