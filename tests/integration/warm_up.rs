//! Warming a tenant's home connection (`PostgresOptions::warm_up`;
//! `procedures/warm_up.sql` in procedure mode, `src/inline/warm_up.rs` in
//! inline mode): a client's start, a turn, an activity and the status reads
//! on an instance of its own, all rolled back. It must leave nothing behind
//! and touch no real message or activity, whatever the tenant has queued;
//! a provider built with tenant affinity does it once, before its build
//! returns, in either mode.

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::{self, start};
use crate::support::{
    TestSchema, connect_options, in_both_modes, provider_with_options, with_schema,
};

const LEASE: Duration = Duration::from_secs(60);

/// Every row of the tenant's tables (every table of the schema but the
/// migration bookkeeping, read from the catalog so a table added later is
/// covered too), as text, table by table: what the warm-up must leave as
/// it found it.
async fn contents(schema: &TestSchema) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_catalog.pg_tables \
          WHERE schemaname = $1 AND tablename NOT LIKE '\\_duroxide\\_%' ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&schema.pool)
    .await
    .expect("the schema's tables");
    assert!(tables.len() >= 10, "the tenant's tables: {tables:?}");
    let mut all = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(schema.statement(&format!(
            "SELECT t::text FROM {{{{schema}}}}.\"{table}\" t ORDER BY t::text"
        )))
        .fetch_all(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"));
        all.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    all
}

/// Runs the warm-up once on `schema` in `mode`; whether the whole sequence
/// ran. Procedure mode calls the procedure directly; inline mode has no
/// call of its own, so a provider with tenant affinity is built on a pool
/// of its own, and its pool's count of warmed connections tells.
async fn warm_up(schema: &TestSchema, mode: SqlMode) -> bool {
    match mode {
        SqlMode::StoredProcedures => {
            sqlx::query_scalar(schema.statement("SELECT {{schema}}.warm_up{{suffix}}()"))
                .fetch_one(&schema.pool)
                .await
                .expect("warm_up")
        }
        _ => {
            let pool = shared_pool(4).await;
            let warmed = provider(&pool, schema, mode)
                .await
                .admission_stats()
                .connections_warmed;
            pool.close().await;
            warmed == 1
        }
    }
}

/// With a start message, an instance mid-turn (leased), an activity and a
/// delayed message queued, the warm-up runs its whole sequence, and
/// afterwards every table holds exactly what it held before: no row added,
/// none locked, no attempt counted. The real work is then claimed as if it
/// had never run.
async fn the_warm_up_leaves_every_table_as_it_found_it(mode: SqlMode) {
    with_schema(&format!("warm_up_clean_{mode}"), |schema| async move {
        let p = schema.provider_in(mode).await;
        p.enqueue_for_orchestrator(start("leased"), None)
            .await
            .expect("enqueue");
        let (leased, _, _) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the leased instance's turn");
        p.enqueue_for_orchestrator(start("waiting"), None)
            .await
            .expect("enqueue");
        p.enqueue_for_orchestrator(start("later"), Some(Duration::from_secs(600)))
            .await
            .expect("enqueue");
        p.enqueue_for_worker(fixtures::activity("waiting", 2))
            .await
            .expect("enqueue activity");
        let before = contents(&schema).await;

        assert!(warm_up(&schema, mode).await, "the whole sequence ran");
        assert!(warm_up(&schema, mode).await, "and runs again");

        assert_eq!(contents(&schema).await, before, "nothing left behind");
        let (turn, _, attempts) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the waiting instance's turn");
        assert_eq!(
            (turn.instance.as_str(), attempts),
            ("waiting", 1),
            "the real start is claimed first, its first attempt"
        );
        let (item, _, attempts) = p
            .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
            .await
            .expect("fetch work")
            .expect("the real activity");
        assert_eq!(
            (item, attempts),
            (fixtures::activity("waiting", 2), 1),
            "the real activity, its first attempt"
        );
        assert_ne!(leased.instance, turn.instance);
    })
    .await;
}

in_both_modes!(
    the_warm_up_leaves_every_table_as_it_found_it:
    procedures_the_warm_up_leaves_every_table_as_it_found_it,
    inline_the_warm_up_leaves_every_table_as_it_found_it
);

/// A shared pool of `connections` built from `PostgresOptions::pool_options`.
async fn shared_pool(connections: u32) -> PgPool {
    PostgresOptions::default()
        .max_connections(connections)
        .pool_options()
        .connect_with(connect_options())
        .await
        .expect("shared pool")
}

async fn provider(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    let options = PostgresOptions::default()
        .notifications(false)
        .connections_per_tenant(1);
    provider_with_options(pool, &schema.name, mode, options).await
}

/// A provider with tenant affinity has warmed its home connection by the
/// time its build returns (the pool counts it), in either mode, leaving
/// nothing behind, and works as before.
#[tokio::test]
async fn a_provider_warms_its_home_connection_in_either_mode() {
    with_schema("warm_up_provider", |inline_schema| async move {
        with_schema("warm_up_provider", |schema| async move {
            let shared = shared_pool(4).await;
            let i = provider(&shared, &inline_schema, SqlMode::InlineSql).await;
            assert_eq!(i.admission_stats().connections_warmed, 1, "inline mode");
            assert!(
                contents(&inline_schema).await.is_empty(),
                "nothing left behind"
            );
            let p = provider(&shared, &schema, SqlMode::StoredProcedures).await;
            assert_eq!(
                p.admission_stats().connections_warmed,
                2,
                "warmed in the build"
            );
            assert!(contents(&schema).await.is_empty(), "nothing left behind");

            for (provider, id) in [(&i, "i1"), (&p, "p1")] {
                provider
                    .enqueue_for_orchestrator(start(id), None)
                    .await
                    .expect("enqueue");
                let (turn, _, attempts) = provider
                    .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                    .await
                    .expect("fetch")
                    .expect("a turn");
                assert_eq!((turn.instance.as_str(), attempts), (id, 1));
            }
            shared.close().await;
        })
        .await;
    })
    .await;
}

/// A table of the tenant locked by someone else (an operator's DDL, say)
/// does not hold the provider's build up: the warm-up waits a second at
/// most for a lock and gives up, leaving the connection cold, and the build
/// returns.
async fn a_locked_table_does_not_hold_up_the_build(mode: SqlMode) {
    with_schema(&format!("warm_up_locked_{mode}"), |schema| async move {
        // Migrated first, by a provider of its own.
        let first = shared_pool(2).await;
        drop(provider(&first, &schema, mode).await);
        first.close().await;

        let mut holder = schema.pool.begin().await.expect("begin");
        sqlx::query(
            schema.statement("LOCK TABLE {{schema}}.orchestrator_queue IN ACCESS EXCLUSIVE MODE"),
        )
        .execute(&mut *holder)
        .await
        .expect("lock");
        let shared = shared_pool(4).await;
        let built =
            tokio::time::timeout(Duration::from_secs(15), provider(&shared, &schema, mode)).await;
        holder.rollback().await.expect("release");
        let p = built.expect("the build returned while the table was locked");
        assert_eq!(p.admission_stats().connections_warmed, 0, "left cold");
        shared.close().await;
    })
    .await;
}

in_both_modes!(
    a_locked_table_does_not_hold_up_the_build:
    procedures_a_locked_table_does_not_hold_up_the_build,
    inline_a_locked_table_does_not_hold_up_the_build
);
