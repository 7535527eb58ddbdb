//! A server, database or role whose connections default to a stricter
//! isolation level (`default_transaction_isolation = serializable`, as a
//! cautious operator may set): every provider transaction still runs at
//! READ COMMITTED, so nothing fails with a serialization error and the
//! procedures' statements see what they were written to see.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duroxide::Client;
use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::providers::{Provider, TagFilter};
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

use crate::fixtures::{
    activity, claim_and_ack_turn, completion, fan_outs_complete, start, start_fan_outs,
};
use crate::support::{
    Kind, Slot, TestSchema, connect_options, eventually, in_both_modes, provider_with_options,
    with_schema,
};

const LEASE: Duration = Duration::from_secs(30);

/// A pool whose connections default to SERIALIZABLE: from the start, or
/// (`later` set) only once `later` is switched on, each connection setting
/// it as it is handed out.
async fn strict_pool(later: Option<Arc<AtomicBool>>) -> PgPool {
    let (options, connect) = match later {
        None => (
            PgPoolOptions::new(),
            connect_options().options([("default_transaction_isolation", "serializable")]),
        ),
        Some(switch) => (
            PgPoolOptions::new().before_acquire(move |conn, _| {
                let switch = switch.clone();
                Box::pin(async move {
                    if switch.load(Ordering::SeqCst) {
                        sqlx::query("SET default_transaction_isolation = serializable")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(true)
                })
            }),
            connect_options(),
        ),
    };
    options
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect)
        .await
        .expect("strict pool")
}

/// A provider in `mode` on `schema` over `pool`, without notifications.
async fn provider(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> Arc<PostgresProvider> {
    let options = PostgresOptions::default().notifications(false);
    Arc::new(provider_with_options(pool, &schema.name, mode, options).await)
}

/// Starts `instance`, queues one of its activities and claims it; then,
/// while another session holds the activity's row, acks it with its
/// completion: the ack waits for the row, which the other session updates
/// and commits. At READ COMMITTED the ack then deletes the row's new
/// version; at a stricter level it fails with a serialization error.
async fn ack_behind_a_row_update(schema: &TestSchema, p: &Arc<PostgresProvider>, instance: &str) {
    p.enqueue_for_orchestrator(start(instance), None)
        .await
        .expect("start");
    claim_and_ack_turn(&**p, LEASE).await;
    p.enqueue_for_worker(activity(instance, 1))
        .await
        .expect("activity");
    let (_, token, _) = p
        .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
        .await
        .expect("fetch work")
        .expect("the activity is claimed");

    let mut holder = schema.pool.acquire().await.expect("holder").detach();
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query(schema.statement(
        "UPDATE {{schema}}.worker_queue SET attempt_count = attempt_count WHERE lock_token = $1",
    ))
    .bind(&token)
    .execute(&mut *tx)
    .await
    .expect("hold the activity's row");
    let ack = {
        let p = p.clone();
        let done = completion(instance, 1);
        tokio::spawn(async move { p.ack_work_item(&token, Some(done)).await })
    };
    eventually("the ack waits for the activity's row", || async {
        let waiting: i64 = sqlx::query_scalar(schema.statement(
            "SELECT count(*) FROM pg_catalog.pg_locks \
              WHERE locktype = 'tuple' AND relation = '{{schema}}.worker_queue'::regclass",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("pg_locks");
        waiting > 0
    })
    .await;
    tx.commit().await.expect("commit the holder");
    holder.close().await.expect("close holder");

    ack.await
        .expect("ack task")
        .unwrap_or_else(|e| panic!("the ack behind a row update failed: {e}"));
    let (item, _, _) = p
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("the completion is queued");
    assert_eq!(item.instance, instance);
    assert_eq!(item.messages.len(), 1, "{:?}", item.messages);
    let left = p
        .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
        .await
        .expect("fetch work");
    assert!(left.is_none(), "the acked activity is gone");
}

in_both_modes!(an_ack_behind_a_row_update_commits_on_a_serializable_pool:
    an_ack_behind_a_row_update_commits_on_a_serializable_pool_procedures,
    an_ack_behind_a_row_update_commits_on_a_serializable_pool_inline);

/// Connections that default to SERIALIZABLE from the start.
async fn an_ack_behind_a_row_update_commits_on_a_serializable_pool(mode: SqlMode) {
    with_schema("iso_ack", |schema| async move {
        let strict = strict_pool(None).await;
        let p = provider(&strict, &schema, mode).await;
        ack_behind_a_row_update(&schema, &p, "iso-ack").await;
        strict.close().await;
    })
    .await;
}

in_both_modes!(a_stricter_default_set_after_start_is_caught:
    a_stricter_default_set_after_start_is_caught_procedures,
    a_stricter_default_set_after_start_is_caught_inline);

/// Connections that turn SERIALIZABLE after the provider was built (an
/// `ALTER DATABASE ... SET` or `ALTER ROLE ... SET` meanwhile): the first
/// fetch that meets one still claims, and the ack still commits.
async fn a_stricter_default_set_after_start_is_caught(mode: SqlMode) {
    with_schema("iso_late", |schema| async move {
        let later = Arc::new(AtomicBool::new(false));
        let strict = strict_pool(Some(later.clone())).await;
        let p = provider(&strict, &schema, mode).await;
        later.store(true, Ordering::SeqCst);
        ack_behind_a_row_update(&schema, &p, "iso-late").await;
        strict.close().await;
    })
    .await;
}

in_both_modes!(a_fan_out_completes_on_a_serializable_pool:
    a_fan_out_completes_on_a_serializable_pool_procedures,
    a_fan_out_completes_on_a_serializable_pool_inline; 4);

/// A runtime at 4:4 dispatchers on SERIALIZABLE connections runs twenty
/// fan-outs of five activities to completion: none fails.
async fn a_fan_out_completes_on_a_serializable_pool(mode: SqlMode) {
    let _slot = Slot::acquire(Kind::Runtime);
    with_schema("iso_fan", |schema| async move {
        let strict = strict_pool(None).await;
        let options = PostgresOptions::default();
        let p = Arc::new(provider_with_options(&strict, &schema.name, mode, options).await);
        let runtime = Runtime::start_with_options(
            p.clone(),
            create_default_activities(0),
            create_default_orchestrations(),
            RuntimeOptions {
                orchestration_concurrency: 4,
                worker_concurrency: 4,
                ..Default::default()
            },
        )
        .await;
        let client = Client::new(p.clone());
        start_fan_outs(&client, 0..20).await;
        fan_outs_complete(&client, 0..20, Duration::from_secs(60), mode.as_str()).await;
        runtime.shutdown(None).await;
        strict.close().await;
    })
    .await;
}
