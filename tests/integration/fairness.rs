//! Fetch admission on a shared pool: a tenant whose fetches are stuck holds
//! neither the connections that leased work needs nor every fetch slot.

use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::{event, metadata, start};
use crate::support::{TestSchema, in_both_modes, pool, with_schema};

const LEASE: Duration = Duration::from_secs(5);

async fn provider(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    PostgresProvider::from_pool_with(
        pool.clone(),
        PostgresOptions::default()
            .schema(schema.name.clone())
            .sql_mode(mode)
            .notifications(false),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider on {}: {e}", schema.name))
}

/// Backends waiting for a lock on `schema`'s orchestrator queue.
async fn blocked_on_queue(pool: &PgPool, schema: &TestSchema) -> i64 {
    sqlx::query_scalar(&schema.sql(
        "SELECT count(*) FROM pg_locks WHERE NOT granted \
           AND relation = '{{schema}}.orchestrator_queue'::regclass",
    ))
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}

in_both_modes!(a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections:
    a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections_procedures,
    a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections_inline; 4);

/// Tenant B's fetches all block on a lock (a stand-in for any slow fetch:
/// a huge history, a burst on a busy server). On a pool of five, tenant A
/// must still commit the turn it holds before its lease ends, and claim new
/// work.
async fn a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections(mode: SqlMode) {
    with_schema("fair_a", |a| async move {
        with_schema("fair_b", |b| async move {
            let shared = pool(5).await;
            let pa = provider(&shared, &a, mode).await;
            let pb = provider(&shared, &b, mode).await;
            for id in ["a1", "a2"] {
                pa.enqueue_for_orchestrator(start(id), None)
                    .await
                    .expect("enqueue");
            }
            let (_, token, _) = pa
                .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("a1 claimed");
            for i in 0..10 {
                pb.enqueue_for_orchestrator(start(&format!("b{i}")), None)
                    .await
                    .expect("enqueue");
            }

            let mut blocker = b.pool.begin().await.expect("begin");
            sqlx::query(
                &b.sql("LOCK TABLE {{schema}}.orchestrator_queue IN ACCESS EXCLUSIVE MODE"),
            )
            .execute(&mut *blocker)
            .await
            .expect("lock");
            let stuck: Vec<_> = (0..10)
                .map(|_| {
                    let pb = pb.clone();
                    tokio::spawn(async move {
                        pb.fetch_orchestration_item(LEASE, Duration::ZERO, None)
                            .await
                    })
                })
                .collect();
            // B holds its share of the fetch slots, every one stuck; its other
            // fetches wait for a slot.
            let cap = pb.admission_stats().per_schema;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let blocked = blocked_on_queue(&a.pool, &b).await;
                let stats = pb.admission_stats();
                if blocked == cap as i64 && stats.waiting == 10 - cap {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "B never settled: {blocked} blocked, {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            // A's turn commits within its lease, and A claims new work.
            let ack = tokio::time::timeout(
                LEASE,
                pa.ack_orchestration_item(
                    &token,
                    1,
                    vec![event("a1", 1)],
                    vec![],
                    vec![],
                    metadata(),
                    vec![],
                ),
            )
            .await;
            assert!(
                matches!(ack, Ok(Ok(()))),
                "{mode}: A's ack behind B's fetches: {ack:?}"
            );
            let next = tokio::time::timeout(
                LEASE,
                pa.fetch_orchestration_item(LEASE, Duration::ZERO, None),
            )
            .await;
            match next {
                Ok(Ok(Some((item, _, _)))) => assert_eq!(item.instance, "a2"),
                other => panic!("{mode}: A could not fetch beside stuck B: {other:?}"),
            }

            blocker.rollback().await.expect("unlock");
            for task in stuck {
                task.await
                    .expect("task")
                    .expect("B's fetch completes once unblocked");
            }
            assert_eq!(pb.admission_stats().held, 0);
            shared.close().await;
        })
        .await;
    })
    .await;
}
