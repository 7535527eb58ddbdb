//! Forged notifications: a role with no rights on a tenant's schema
//! `NOTIFY`s its channel as fast as it can while the tenant's runtime is
//! idle. The flood costs a bounded number of fetches per interval, not one
//! per notification, and work committed during the flood still completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;

use super::{eventually, with_schemas};
use crate::support::{Kind, Slot, database_url, in_both_modes, provider_on};

/// How long the idle runtime is flooded before the count.
const FLOOD: Duration = Duration::from_secs(3);
/// Connections sending the flood.
const FLOODERS: usize = 3;
/// Notifications the flood must deliver at least, however long it takes
/// (up to five times [`FLOOD`]).
const MIN_RECEIVED: u64 = 600;
/// Worker and orchestration slots of the runtime.
const SLOTS: usize = 2;
/// The crate's flood window (`FLOOD_WINDOW`, 100 ms), as documented.
const WINDOW: Duration = Duration::from_millis(100);

/// Floods `channel` with `NOTIFY`s (each its own transaction, so none is
/// folded into another) from a connection of `role` until `stop`; counts
/// them in `sent`.
async fn flood(role: String, channel: String, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let options = database_url()
        .parse::<PgConnectOptions>()
        .unwrap_or_else(|e| panic!("{e}"))
        .username(&role);
    let conn = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
    let statements = [
        format!("NOTIFY \"{channel}\", 'orchestrator'"),
        format!("NOTIFY \"{channel}\", 'worker'"),
        format!("NOTIFY \"{channel}\", 'orchestrator settle'"),
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            (statements[i % statements.len()]).to_string(),
        ))
        .execute(&conn)
        .await
        .unwrap_or_else(|e| panic!("notify: {e}"));
        sent.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    conn.close().await;
}

fn runtime_parts() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = crate::fixtures::echo_activities();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Real",
            |ctx: OrchestrationContext, input: String| async move {
                let out = ctx.schedule_activity("Echo", input).await?;
                ctx.schedule_timer(Duration::from_millis(20)).await;
                Ok(out)
            },
        )
        .build();
    (activities, orchestrations)
}

async fn a_flood_costs_few_fetches(mode: SqlMode) {
    let _slot = Slot::acquire(Kind::Runtime);
    with_schemas("flood", 1, |pool, names, _| async move {
        let schema = names[0].clone();
        let provider = Arc::new(provider_on(&pool, &schema, mode, true).await);
        let role = format!("{schema}_flooder");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN")))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("create role: {e}"));
        let (activities, orchestrations) = runtime_parts();
        let options = RuntimeOptions {
            orchestration_concurrency: SLOTS,
            worker_concurrency: SLOTS,
            ..Default::default()
        };
        let runtime =
            Runtime::start_with_options(provider.clone(), activities, orchestrations, options)
                .await;
        eventually("listener up", || async {
            provider.notification_stats().is_some_and(|s| s.subscribed)
        })
        .await;
        // The runtime settles into waiting: every dispatcher has fetched once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = |p: &PostgresProvider| p.notification_stats().unwrap_or_default();
        let before = stats(&provider);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|_| {
                tokio::spawn(flood(
                    role.clone(),
                    schema.clone(),
                    stop.clone(),
                    sent.clone(),
                ))
            })
            .collect();
        // At least FLOOD, and on until the flood is one (a busy machine
        // sends fewer per second), within reason.
        let began = Instant::now();
        tokio::time::sleep(FLOOD).await;
        while stats(&provider).received - before.received < MIN_RECEIVED
            && began.elapsed() < FLOOD * 5
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let idle = stats(&provider);
        let idle_for = began.elapsed();

        // Real work during the flood still runs, promptly.
        let client = Client::new(provider.clone());
        let started = Instant::now();
        client
            .start_orchestration("real-1", "Real", "payload")
            .await
            .expect("start");
        let status = client
            .wait_for_orchestration("real-1", Duration::from_secs(30))
            .await
            .expect("wait");
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for flooder in flooders {
            flooder.await.expect("flooder");
        }
        runtime.shutdown(None).await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&pool)
        .await;

        match status {
            OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "payload"),
            other => panic!("{mode}: {other:?}"),
        }
        let received = idle.received - before.received;
        let queries = idle.queries - before.queries;
        // Per flood window at most one wake-up per queue (one orchestrator,
        // one worker); a worker wake-up that finds nothing is handed on to
        // each other worker slot once. Before the window applies, three
        // empty wake-ups per queue, each handed on as well.
        let windows = idle_for.as_millis() / WINDOW.as_millis() + 2;
        let per_window = 1 + SLOTS as u128;
        let bound = windows * per_window + 2 * 3 * per_window;
        eprintln!(
            "{mode}: {} NOTIFYs sent, {received} received in {idle_for:?}: {queries} fetch \
             statements, {} coalesced (bound {bound}); real work took {took:?}",
            sent.load(Ordering::Relaxed),
            idle.coalesced - before.coalesced,
        );
        assert!(
            received >= MIN_RECEIVED,
            "{mode}: the flood must be a flood ({received} received)"
        );
        assert!(
            u128::from(queries) <= bound,
            "{mode}: {received} forged notifications cost {queries} fetches (bound {bound})"
        );
        assert!(
            took < Duration::from_secs(10),
            "{mode}: real work during the flood took {took:?}"
        );
    })
    .await;
}

in_both_modes!(a_flood_costs_few_fetches:
    a_notify_flood_costs_a_bounded_number_of_fetches_with_procedures,
    a_notify_flood_costs_a_bounded_number_of_fetches_inline; 4);
