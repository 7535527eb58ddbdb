//! SQL modes: the mode in force is visible, inline mode needs no procedures,
//! and runtimes in different modes can share one schema.

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

use crate::support::{Kind, Slot, TestSchema, with_schema};

async fn provider(schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    PostgresProvider::from_pool_with(
        schema.pool.clone(),
        PostgresOptions::default()
            .schema(schema.name.clone())
            .sql_mode(mode),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider: {e}"))
}

#[tokio::test]
async fn mode_in_force_shows_in_name_and_health() {
    with_schema("mode_visible", |schema| async move {
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            let p = provider(&schema, mode).await;
            assert_eq!(p.sql_mode(), mode);
            assert_eq!(p.name(), format!("duroxide-postgres[{mode}]"));
            let health = p.health().await;
            assert_eq!(health.sql_mode, mode);
            assert!(health.is_ready(), "{health:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn inline_mode_runs_with_every_procedure_dropped() {
    with_schema("mode_no_procs", |schema| async move {
        provider(&schema, SqlMode::StoredProcedures).await;
        // Roll back the procedures by hand, as an operator might.
        let drops: Vec<String> = sqlx::query_scalar(
            "SELECT format('DROP FUNCTION %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
        )
        .bind(&schema.name)
        .fetch_all(&schema.pool)
        .await
        .expect("list functions");
        assert!(!drops.is_empty());
        for drop in drops {
            sqlx::query(sqlx::AssertSqlSafe(drop.to_string())).execute(&schema.pool).await.expect("drop");
        }
        let inline = provider(&schema, SqlMode::InlineSql).await;
        assert!(inline.health().await.is_ready());
        let remaining: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
        )
        .bind(&schema.name)
        .fetch_one(&schema.pool)
        .await
        .expect("count functions");
        assert_eq!(remaining, 0, "inline mode must not reinstall procedures");
        run_workload(&[Arc::new(inline)], "solo", 5).await;
    })
    .await;
}

/// Starts one runtime per provider, runs `count` fan-out orchestrations
/// through the first provider's client, and checks every one completed with
/// the right result.
async fn run_workload(providers: &[Arc<PostgresProvider>], prefix: &str, count: usize) {
    let _slot = Slot::acquire(Kind::Runtime);
    let mut runtimes = Vec::new();
    for p in providers {
        let activities = ActivityRegistry::builder()
            .register(
                "Double",
                |_ctx: ActivityContext, input: String| async move {
                    let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
                    Ok((n * 2).to_string())
                },
            )
            .build();
        let orchestrations = OrchestrationRegistry::builder()
            .register(
                "SumOfDoubles",
                |ctx: OrchestrationContext, input: String| async move {
                    let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
                    let tasks = (1..=n)
                        .map(|i| ctx.schedule_activity("Double", i.to_string()))
                        .collect();
                    let mut total = 0u64;
                    for r in ctx.join(tasks).await {
                        total += r?.parse::<u64>().map_err(|e| format!("{e}"))?;
                    }
                    Ok(total.to_string())
                },
            )
            .build();
        let options = RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(10),
            ..Default::default()
        };
        runtimes.push(
            Runtime::start_with_options(p.clone(), activities, orchestrations, options).await,
        );
    }
    let client = Client::new(providers[0].clone());
    for i in 0..count {
        client
            .start_orchestration(format!("{prefix}-{i}"), "SumOfDoubles", "6")
            .await
            .expect("start");
    }
    for i in 0..count {
        match client
            .wait_for_orchestration(&format!("{prefix}-{i}"), Duration::from_secs(60))
            .await
            .expect("wait")
        {
            OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "42"),
            other => panic!("{prefix}-{i}: {other:?}"),
        }
    }
    for rt in runtimes {
        rt.shutdown(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtimes_in_both_modes_share_one_schema() {
    with_schema("mode_mixed", |schema| async move {
        let procedures = Arc::new(provider(&schema, SqlMode::StoredProcedures).await);
        let inline = Arc::new(provider(&schema, SqlMode::InlineSql).await);
        run_workload(&[procedures.clone(), inline], "mixed", 20).await;
        // Nothing lost or duplicated: 20 instances, queues empty, each with one
        // ActivityScheduled per task in its history.
        let (instances, queued, scheduled): (i64, i64, i64) = sqlx::query_as(schema.statement(
            "SELECT (SELECT count(*) FROM {{schema}}.instances), \
                    (SELECT count(*) FROM {{schema}}.orchestrator_queue) + (SELECT count(*) FROM {{schema}}.worker_queue), \
                    (SELECT count(*) FROM {{schema}}.history WHERE event_type = 'ActivityScheduled')",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("counts");
        assert_eq!((instances, queued, scheduled), (20, 0, 20 * 6));
    })
    .await;
}

crate::support::in_both_modes!(an_instance_row_without_a_version_is_fetched_alike:
    an_instance_row_without_a_version_is_fetched_alike_procedures,
    an_instance_row_without_a_version_is_fetched_alike_inline);

/// `instances.orchestration_version` allows NULL (a row written by another
/// tool, or by hand): both modes hand the instance's next turn over with
/// version "unknown", as for any item whose version is not known.
async fn an_instance_row_without_a_version_is_fetched_alike(mode: SqlMode) {
    with_schema("mode_null_version", |schema| async move {
        let p = provider(&schema, mode).await;
        p.enqueue_for_orchestrator(crate::fixtures::start("unversioned"), None)
            .await
            .expect("start");
        crate::fixtures::claim_and_ack_turn(&p, Duration::from_secs(30)).await;
        sqlx::query(schema.statement(
            "UPDATE {{schema}}.instances SET orchestration_version = NULL WHERE instance_id = 'unversioned'",
        ))
        .execute(&schema.pool)
        .await
        .expect("no version");
        p.enqueue_for_orchestrator(crate::fixtures::completion("unversioned", 2), None)
            .await
            .expect("an event");
        let (item, _, _) = p
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"))
            .expect("the next turn is claimed");
        assert_eq!(item.instance, "unversioned");
        assert_eq!(item.orchestration_name, crate::fixtures::ORCHESTRATION);
        assert_eq!(item.version, "unknown", "{mode}");
        assert_eq!(item.history.len(), 1);
    })
    .await;
}
