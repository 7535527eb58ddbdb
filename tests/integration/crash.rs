//! A crash under load loses nothing an ack committed: a runtime
//! runs orchestrations on a durable server (fsync and `synchronous_commit`
//! on) of this module's own; the server is killed (`pg_ctl stop -m
//! immediate`: no checkpoint, WAL not yet flushed is gone, as in a crash)
//! while work is in flight, and started again on the same data directory.
//!
//! Half of the orchestrations wait on a durable timer first, so work is in
//! flight (and a timer pending) whenever the crash comes. Every
//! orchestration the client saw completed before the crash is still
//! completed, with the same output and the same history, and every
//! orchestration started (each start was acknowledged to the client) still
//! completes afterwards (at-least-once: leases, renewals and abandons commit
//! without waiting for the flush and may be lost; see docs/architecture.md,
//! "Durability").

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode, ThrowawayPostgres};
use futures::FutureExt;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::support::{Kind, Slot, fresh_schema_name, in_both_modes};

/// The crash tests take turns: each kills the one crash server.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Orchestrations per test.
const ORCHESTRATIONS: usize = 40;

/// The module's own durable server, started on first use.
fn crash_server() -> &'static ThrowawayPostgres {
    static SERVER: OnceLock<ThrowawayPostgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        let start = || {
            let mut failures = Vec::new();
            for _ in 0..3 {
                match ThrowawayPostgres::start_with_args(&["--durable"]) {
                    Ok(server) => return server,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            panic!("no durable crash server could start: {failures:?}")
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(start),
            _ => start(),
        }
    })
}

/// Runs `pg_ctl ACTION` on the crash server (see [`crate::support::pg_ctl`]).
async fn pg_ctl(action: &[&str]) {
    crate::support::pg_ctl(crash_server().dir(), action).await;
}

fn expected_output(id: &str) -> String {
    format!("{id}:a:b:c")
}

fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register(
            "Append",
            |_ctx: ActivityContext, input: String| async move {
                let (acc, step) = input.split_once('|').unwrap_or((&input, "?"));
                Ok(format!("{acc}:{step}"))
            },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Chain",
            |ctx: OrchestrationContext, input: String| async move {
                // Odd ids wait on a durable timer first: they are still in
                // flight when the crash comes, however slowly the test
                // observes the others complete.
                if input.ends_with(['1', '3', '5', '7', '9']) {
                    ctx.schedule_timer(Duration::from_secs(10)).await;
                }
                let mut acc = input;
                for step in ["a", "b", "c"] {
                    acc = ctx
                        .schedule_activity("Append", format!("{acc}|{step}"))
                        .await?;
                }
                Ok(acc)
            },
        )
        .build();
    (activities, orchestrations)
}

/// The history of `id` as the provider reads it, serialized for comparison.
async fn history(p: &PostgresProvider, id: &str) -> Option<String> {
    let events = p.read(id).await.ok()?;
    serde_json::to_string(&events).ok()
}

in_both_modes!(crash_loses_nothing_acked:
    a_crash_loses_nothing_an_ack_committed_procedures,
    a_crash_loses_nothing_an_ack_committed_inline; 4);

async fn crash_loses_nothing_acked(mode: SqlMode) {
    let _turn = TURN.lock().await;
    let _slot = Slot::acquire(Kind::Runtime);
    let url = crash_server().url().to_string();
    let schema = fresh_schema_name(&format!("crash_{mode}"));
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(
            PostgresOptions::default()
                .connect_options(&url)
                .unwrap_or_else(|e| panic!("{url}: {e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let p = Arc::new(
        PostgresProvider::from_pool_with(
            pool.clone(),
            PostgresOptions::default().schema(&schema).sql_mode(mode),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode} provider: {e}")),
    );
    let outcome = AssertUnwindSafe(async {
        let (activities, orchestrations) = registries();
        let options = RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(10),
            orchestration_concurrency: 2,
            worker_concurrency: 2,
            ..Default::default()
        };
        let rt = Runtime::start_with_options(p.clone(), activities, orchestrations, options).await;
        let client = Client::new(p.clone());
        let ids: Vec<String> = (0..ORCHESTRATIONS).map(|i| format!("crash-{i}")).collect();
        for id in &ids {
            client
                .start_orchestration(id, "Chain", id)
                .await
                .unwrap_or_else(|e| panic!("{mode}: start {id}: {e}"));
        }

        // Observe completions until an eighth of them are done (the odd ids
        // wait on their timers), recording each one's output and history as
        // the client saw it.
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < ORCHESTRATIONS / 8 {
            assert!(
                Instant::now() < deadline,
                "{mode}: only {} completions before the crash",
                seen.len()
            );
            for id in &ids {
                if seen.contains_key(id) {
                    continue;
                }
                if let Ok(OrchestrationStatus::Completed { output, .. }) =
                    client.get_orchestration_status(id).await
                {
                    let events = history(&p, id)
                        .await
                        .expect("history of a completed instance");
                    seen.insert(id.clone(), (output, events));
                }
            }
            // Polling the condition: the client has no way to be told.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            seen.len() < ORCHESTRATIONS,
            "{mode}: everything completed before the crash; nothing was in flight"
        );

        // The crash, while the runtime works; then the server comes back.
        pg_ctl(&["stop", "-m", "immediate"]).await;
        pg_ctl(&["restart"]).await;

        // Nothing the client saw is lost.
        for (id, (output, events)) in &seen {
            let status = client.get_orchestration_status(id).await;
            match status {
                Ok(OrchestrationStatus::Completed { output: after, .. }) => {
                    assert_eq!(&after, output, "{mode}: {id}'s output changed")
                }
                other => panic!("{mode}: {id}, completed before the crash, is now {other:?}"),
            }
            assert_eq!(
                history(&p, id).await.as_ref(),
                Some(events),
                "{mode}: {id}'s history changed across the crash"
            );
        }
        // Every orchestration started completes.
        for id in &ids {
            match client
                .wait_for_orchestration(id, Duration::from_secs(120))
                .await
            {
                Ok(OrchestrationStatus::Completed { output, .. }) => {
                    assert_eq!(output, expected_output(id), "{mode}: {id}")
                }
                other => panic!("{mode}: {id} after the crash: {other:?}"),
            }
        }
        eprintln!(
            "crash ({mode}): {} of {ORCHESTRATIONS} completed before the crash, all after",
            seen.len()
        );
        rt.shutdown(None).await;
    })
    .catch_unwind()
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await;
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
