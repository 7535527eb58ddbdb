//! The `latency` scenario: how fast an idle runtime picks up work, and what
//! it costs the server while it waits.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use super::{BoxError, stat_snapshot};

/// Sequential orchestrations measured per row.
const RUNS: usize = 30;
/// Idle time measured for statements per second.
const IDLE: Duration = Duration::from_secs(10);

/// One row of the latency table.
pub struct Row {
    mode: SqlMode,
    notifications: bool,
    /// Sorted end-to-end latencies, ms.
    latencies_ms: Vec<f64>,
    /// Statements per second the idle runtime sent (None without pg_stat_statements).
    idle_per_sec: Option<f64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the scenario for one mode and notifications setting.
pub async fn run(
    url: &str,
    client_url: &str,
    admin: &PgPool,
    mode: SqlMode,
    notifications: bool,
) -> Result<Row, BoxError> {
    let schema = format!("latency_{}_{notifications}", mode.as_str());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(admin)
    .await?;
    let options = PostgresOptions::default()
        .schema(schema.clone())
        .sql_mode(mode)
        .notifications(notifications);
    let provider = Arc::new(PostgresProvider::connect_with(url, options.clone()).await?);
    let client_provider = Arc::new(PostgresProvider::connect_with(client_url, options).await?);
    // The mode in force, which the environment may have overridden.
    let mode = provider.sql_mode();
    let runtime_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(provider.pool())
        .await?;

    let activities = ActivityRegistry::builder()
        .register("Step", |_ctx: ActivityContext, input: String| async move {
            Ok(format!("{input}+"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "ThreeSteps",
            |ctx: OrchestrationContext, input: String| async move {
                let a = ctx.schedule_activity("Step", input).await?;
                let b = ctx.schedule_activity("Step", a).await?;
                ctx.schedule_activity("Step", b).await
            },
        )
        .build();
    // Runtime defaults: 30 s long-poll timeout, 100 ms minimum poll interval.
    let rt = Runtime::start_with_options(
        provider.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await;
    let client = Client::new(client_provider);

    // Idle cost first: nothing to do for IDLE.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stat_snapshot(admin, &runtime_role).await;
    tokio::time::sleep(IDLE).await;
    let after = stat_snapshot(admin, &runtime_role).await;
    let idle_per_sec = before
        .zip(after)
        .map(|(b, a)| (a.0 - b.0) / IDLE.as_secs_f64());

    let mut latencies_ms = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        // Let the runtime go back to waiting: the system is idle at each start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let instance = format!("seq-{i}");
        let t0 = now_ms();
        client
            .start_orchestration(&instance, "ThreeSteps", "go")
            .await?;
        client
            .wait_for_orchestration(&instance, Duration::from_secs(30))
            .await?;
        // Completion time as the database recorded it, so the client's own
        // status polling interval does not inflate the figure.
        let completed: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT completed_at_ms FROM \"{schema}\".executions WHERE instance_id = $1 AND execution_id = 1"
        )))
        .bind(&instance)
        .fetch_one(admin)
        .await?;
        if let Some(done) = completed {
            latencies_ms.push((done - t0) as f64);
        }
    }
    rt.shutdown(None).await;
    latencies_ms.sort_by(f64::total_cmp);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(admin)
    .await?;
    eprintln!(
        "[latency {mode} notify {}] p50 {:.1} ms",
        if notifications { "on" } else { "off" },
        percentile(&latencies_ms, 0.5)
    );
    Ok(Row {
        mode,
        notifications,
        latencies_ms,
        idle_per_sec,
    })
}

/// Prints the latency table.
pub fn print(rows: &[Row]) {
    println!();
    println!(
        "| mode | notify | 3-step p50 ms | 3-step p90 ms | 3-step p99 ms | idle statements/s (one runtime) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            r.mode,
            if r.notifications { "on" } else { "off" },
            percentile(&r.latencies_ms, 0.5),
            percentile(&r.latencies_ms, 0.9),
            percentile(&r.latencies_ms, 0.99),
            r.idle_per_sec
                .map_or("n/a".to_string(), |v| format!("{v:.2}"))
        );
    }
}
