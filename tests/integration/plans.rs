//! Plans that must stay per-row index lookups as tables grow: fetching or
//! acking one item must not read every instance, execution or session.
//!
//! The check is observable without reading plans: PostgreSQL counts the
//! sequential scans of every table (`pg_stat_user_tables.seq_scan`). With
//! thousands of analyzed rows in `instances`, `executions` and `sessions`, a
//! plan that hashes or scans them shows up there; index lookups do not.
//! Likewise for the worker queue, which a settling fetch (long polling)
//! probes once per young orchestrator message. The settings the procedures
//! and the pool pin so that plans are made this way are checked in
//! `settings`.

use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, InstanceFilter, Provider, ProviderAdmin, PruneOptions,
    SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::fixtures;
use crate::support::{
    TestSchema, counting_own_table_reads, database_url, fetch_both_queues_empty, in_both_modes,
    pool, provider_on, settling_provider, with_schema,
};

mod settings;
mod tags;

/// One test per SQL mode, `$procedures` and `$inline`, each running
/// `$check(mode)`.
const ROWS: i64 = 20_000;
const LOCK: Duration = Duration::from_secs(30);
/// The backlog queued after plans were made on small queues.
const BACKLOG: i64 = 2_000;

/// Sequential scans so far of the tables a fetch or an ack must not scan.
async fn seq_scans(pool: &PgPool, schema: &str) -> i64 {
    seq_scans_of(pool, schema, &["instances", "executions", "sessions"]).await
}

/// Sequential scans so far of `tables`.
async fn seq_scans_of(pool: &PgPool, schema: &str, tables: &[&str]) -> i64 {
    table_counter(pool, schema, tables, "seq_scan").await
}

/// Rows read so far from `tables`, by sequential and index scans alike.
async fn rows_read(pool: &PgPool, schema: &str, tables: &[&str]) -> i64 {
    table_counter(
        pool,
        schema,
        tables,
        "seq_tup_read + coalesce(idx_tup_fetch, 0)",
    )
    .await
}

/// The sum over `tables` of `counter`, an expression of
/// `pg_stat_user_tables` columns, as of now.
async fn table_counter(pool: &PgPool, schema: &str, tables: &[&str], counter: &str) -> i64 {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .expect("fresh statistics");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum({counter}), 0)::bigint FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = ANY ($2)"
    )))
    .bind(schema)
    .bind(tables)
    .fetch_one(&mut *conn)
    .await
    .expect("table counters")
}

/// Runs `setup` (migration, bulk rows) on a pool of its own and makes its
/// backends report their statistics before returning. Backends report scan
/// counters lazily, and building the migration's indexes scans the tables:
/// reported late, those scans would land between the test's two readings.
/// `pg_stat_force_next_flush()` makes a backend report as it goes idle,
/// before it answers, so every connection of the pool is made to call it.
async fn set_up<F, Fut>(schema: &TestSchema, setup: F)
where
    F: FnOnce(TestSchema) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const CONNECTIONS: u32 = 2;
    let pool = pool(CONNECTIONS).await;
    setup(TestSchema {
        pool: pool.clone(),
        name: schema.name.clone(),
    })
    .await;
    report_and_close(pool, CONNECTIONS).await;
}

/// Makes every backend of `pool` (at most `connections`) report its
/// statistics, then closes the pool. Closing alone is not enough: a backend
/// reports as it exits, after the client has moved on, so a reading taken
/// right after the close can miss its counts and a test that expects none
/// would pass whatever ran.
async fn report_and_close(pool: PgPool, connections: u32) {
    let mut held = Vec::new();
    for _ in 0..connections {
        held.push(pool.acquire().await.expect("connection"));
    }
    for connection in &mut held {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut **connection)
            .await
            .expect("flush statistics");
    }
    drop(held);
    pool.close().await;
}

/// Queues an activity of `instance` in session `session-{n}`, claims it with
/// `session` (waiting up to `poll`) and acks it with its completion.
async fn run_session_activity(
    provider: &PostgresProvider,
    instance: &str,
    n: usize,
    session: &SessionFetchConfig,
    poll: Duration,
) {
    let mut work = fixtures::activity(instance, 2);
    if let WorkItem::ActivityExecute { session_id, .. } = &mut work {
        *session_id = Some(format!("session-{n}"));
    }
    provider.enqueue_for_worker(work).await.expect("enqueue");
    let (_, token, _) = provider
        .fetch_work_item(LOCK, poll, Some(session), &TagFilter::DefaultOnly)
        .await
        .expect("fetch work")
        .expect("the activity");
    provider
        .ack_work_item(&token, Some(fixtures::completion(instance, 2)))
        .await
        .expect("ack");
}

/// Runs `insert` (its `$1` bound to [`ROWS`]) on `schema`, then analyzes
/// `table`.
async fn fill(schema: &TestSchema, table: &str, insert: &str) {
    sqlx::query(schema.statement(insert))
        .bind(ROWS)
        .execute(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
    sqlx::query(schema.statement(&format!("ANALYZE {{{{schema}}}}.{table}")))
        .execute(&schema.pool)
        .await
        .expect("analyze");
}

/// Fills the tables a fetch or an ack could be tempted to scan, and analyzes them.
async fn grow(schema: &TestSchema) {
    for statement in [
        "INSERT INTO {{schema}}.instances (instance_id, orchestration_name, orchestration_version, \
         current_execution_id, created_at_ms, updated_at_ms) \
         SELECT 'old-' || g, 'Old', '1.0.0', 1, 0, 0 FROM generate_series(1, $1::bigint) g",
        "INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms, \
         pinned_major, pinned_minor, pinned_patch) \
         SELECT 'old-' || g, 1, 'Completed', 0, 0, 1, 0 FROM generate_series(1, $1::bigint) g",
        "INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
         SELECT 'old-' || g, 'gone', 0, 0 FROM generate_series(1, $1::bigint) g",
    ] {
        sqlx::query(schema.statement(statement))
            .bind(ROWS)
            .execute(&schema.pool)
            .await
            .expect("rows");
    }
    for table in ["instances", "executions", "sessions"] {
        sqlx::query(schema.statement(&format!("ANALYZE {{{{schema}}}}.{table}")))
            .execute(&schema.pool)
            .await
            .expect("analyze");
    }
}

/// A provider in `mode` on `schema`, migrated and then filled by `fill`
/// (see `set_up`), on a pool of `connections` with the provider's connection
/// settings and notifications off; `report_and_close` the pool before
/// reading counters.
async fn provider_after<F, Fut>(
    schema: &TestSchema,
    mode: SqlMode,
    connections: u32,
    fill: F,
) -> (PgPool, PostgresProvider)
where
    F: FnOnce(TestSchema) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    set_up(schema, |setup| async move {
        setup.provider_with(mode, false).await; // migrate (no listener to outlive the pool)
        fill(setup).await;
    })
    .await;
    let pool = pool(connections).await;
    let provider = provider_on(&pool, &schema.name, mode, false).await;
    (pool, provider)
}

async fn turns_and_activities_scan_nothing_big(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("plans_{mode}"), |schema| async move {
        let (pool, provider) =
            provider_after(&schema, mode, 2, |setup| async move { grow(&setup).await }).await;
        let before = seq_scans(&schema.pool, &schema.name).await;

        let filter = DispatcherCapabilityFilter::default_for_current_build();
        let session = SessionFetchConfig {
            owner_id: "worker-1".to_string(),
            lock_timeout: LOCK,
        };
        for n in 0..8 {
            let instance = format!("new-{n}");
            provider
                .enqueue_for_orchestrator(fixtures::start(&instance), None)
                .await
                .expect("enqueue");
            // Instances abandoned by earlier rounds are back in the queue too.
            let (_, token, _) = provider
                .fetch_orchestration_item(LOCK, Duration::ZERO, Some(&filter))
                .await
                .expect("fetch")
                .expect("an instance");
            provider
                .abandon_orchestration_item(&token, None, false)
                .await
                .expect("abandon");

            run_session_activity(&provider, &instance, n, &session, Duration::ZERO).await;
        }
        drop(provider);
        report_and_close(pool, 2).await;

        let after = seq_scans(&schema.pool, &schema.name).await;
        assert_eq!(
            after - before,
            0,
            "fetches and acks scanned instances, executions or sessions ({ROWS} rows each)"
        );
    })
    .await;
}

in_both_modes!(
    turns_and_activities_scan_nothing_big:
    procedures_scan_no_table_that_grows_with_instances_or_sessions,
    inline_scans_no_table_that_grows_with_instances_or_sessions
);

/// A long-polling worker fetch asks when the queue next has something for it,
/// session lock expiries included: with many sessions held, finding the
/// earliest expiry must not read them all, on an empty fetch nor on the
/// claim of the last item (which reports the time too).
async fn long_polls_read_no_session_table(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("session_due_{mode}"), |schema| async move {
        set_up(&schema, |setup| async move {
            setup.provider_with(mode, false).await; // migrate (no listener to outlive the pool)
            // Held by other workers for an hour, and long expired.
            fill(
                &setup,
                "sessions",
                "INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
                 SELECT 'held-' || g, 'other-' || (g % 16), \
                        CASE WHEN g % 2 = 0 THEN {{now_ms}} + 3600000 ELSE 0 END, 0 \
                 FROM generate_series(1, $1::bigint) g",
            )
            .await;
        })
        .await;
        let pool = pool(3).await;
        let provider = settling_provider(&pool, &schema.name, mode, Duration::ZERO).await;
        let sessions = ["sessions"];
        let before = rows_read(&schema.pool, &schema.name, &sessions).await;
        let session = SessionFetchConfig {
            owner_id: "worker-1".to_string(),
            lock_timeout: LOCK,
        };
        let poll = Duration::from_millis(50);
        for n in 0..3 {
            // Nothing queued: the fetch asks when to look again.
            let none = provider
                .fetch_work_item(LOCK, poll, Some(&session), &TagFilter::DefaultOnly)
                .await
                .expect("empty fetch");
            assert!(none.is_none(), "nothing is queued");
            // The only item: its claim reports the time too.
            run_session_activity(&provider, &format!("new-{n}"), n, &session, poll).await;
        }
        drop(provider);
        report_and_close(pool, 3).await;
        let read = rows_read(&schema.pool, &schema.name, &sessions).await - before;
        // Per fetch: its own session's row (looked up, taken, touched by the
        // ack) and the earliest expiry, a handful of rows, not thousands.
        assert!(
            read < 100,
            "six long-polling fetches read {read} rows of {ROWS} sessions"
        );
    })
    .await;
}

in_both_modes!(
    long_polls_read_no_session_table:
    procedures_long_polls_read_no_session_table,
    inline_long_polls_read_no_session_table
);

/// Bulk deletes and prunes by instance id read those instances only (counted
/// in rows read: a scan in `created_at_ms` order reads them all by index), on the
/// provider's own pool settings (generic plans) and past the five custom
/// plans PostgreSQL makes before it may switch: their optional id filter
/// (`ids IS NULL OR instance_id = ANY (ids)`) has no generic plan that uses
/// the primary key, so they plan per call (`plan_cache_mode = auto`).
async fn bulk_deletes_by_id_read_only_the_named_instances(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("bulk_plan_{mode}"), |schema| async move {
        let (pool, provider) = provider_after(&schema, mode, 1, |setup| async move {
            grow(&setup).await;
            // The instances pruned below continued as new: execution 1
            // finished, 2 current (a bulk prune chooses only instances
            // with something to prune).
            setup
                .run_all(&[
                    "INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms) \
                     SELECT 'old-' || g, 2, 'Running', 0 FROM generate_series(100, 107) g",
                    "UPDATE {{schema}}.instances SET current_execution_id = 2 \
                     WHERE instance_id IN (SELECT 'old-' || g FROM generate_series(100, 107) g)",
                ])
                .await;
        })
        .await;
        let read = ["instances", "executions"];
        let before = rows_read(&schema.pool, &schema.name, &read).await;
        for n in 0..8 {
            let deleted = provider
                .delete_instance_bulk(InstanceFilter {
                    instance_ids: Some(vec![
                        format!("old-{}", 2 * n + 1),
                        format!("old-{}", 2 * n + 2),
                    ]),
                    completed_before: None,
                    limit: None,
                })
                .await
                .expect("bulk delete");
            assert_eq!(deleted.instances_deleted, 2, "round {n}");
            let pruned = provider
                .prune_executions_bulk(
                    InstanceFilter {
                        instance_ids: Some(vec![format!("old-{}", 100 + n)]),
                        completed_before: None,
                        limit: None,
                    },
                    PruneOptions::default(),
                )
                .await
                .expect("bulk prune");
            assert_eq!(pruned.instances_processed, 1, "round {n}");
        }
        drop(provider);
        report_and_close(pool, 1).await;
        // 24 named instances, each read a few times (filter, tree, delete, prune).
        let after = rows_read(&schema.pool, &schema.name, &read).await;
        assert!(
            after - before < 1_000,
            "bulk deletes of 24 named instances read {} rows of instances and executions \
             ({ROWS} rows each)",
            after - before
        );
    })
    .await;
}

in_both_modes!(
    bulk_deletes_by_id_read_only_the_named_instances:
    procedures_bulk_deletes_by_id_read_only_the_named_instances,
    inline_bulk_deletes_by_id_read_only_the_named_instances
);

/// The system-wide counts read two tables whole, so they are planned per
/// call with sequential scans, whatever the pool's generic plans (which
/// have them off): with thousands of analyzed rows, one call scans
/// `instances` and `executions` sequentially, never reads `history` (the
/// executions count their events, `0006_event_counts.sql`), and counts
/// right.
async fn system_metrics_read_their_tables_sequentially(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("metrics_plan_{mode}"), |schema| async move {
        let (pool, provider) = provider_after(&schema, mode, 1, |setup| async move {
            grow(&setup).await;
            fill(
                &setup,
                "history",
                "INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, \
                 event_data, created_at_ms) \
                 SELECT 'old-' || g, 1, e, 'Event', '{}', 0 \
                 FROM generate_series(1, $1::bigint) g, generate_series(1, 2) e",
            )
            .await;
            // Rows written by hand carry their counts as the provider's
            // statements would have written them.
            sqlx::query(setup.statement("UPDATE {{schema}}.executions SET event_count = 2"))
                .execute(&setup.pool)
                .await
                .expect("the executions' counts");
        })
        .await;
        let tables = ["instances", "executions"];
        let before = seq_scans_of(&schema.pool, &schema.name, &tables).await;
        let history_before = rows_read(&schema.pool, &schema.name, &["history"]).await;
        let metrics = provider.get_system_metrics().await.expect("metrics");
        drop(provider);
        report_and_close(pool, 1).await;
        let rows = u64::try_from(ROWS).expect("rows");
        assert_eq!(metrics.total_instances, rows);
        assert_eq!(metrics.total_executions, rows);
        assert_eq!(metrics.completed_instances, rows);
        assert_eq!(metrics.running_instances + metrics.failed_instances, 0);
        assert_eq!(metrics.total_events, 2 * rows);
        let scans = seq_scans_of(&schema.pool, &schema.name, &tables).await - before;
        assert!(
            scans >= 2,
            "get_system_metrics scanned {scans} of its two tables sequentially"
        );
        assert_eq!(
            rows_read(&schema.pool, &schema.name, &["history"]).await,
            history_before,
            "get_system_metrics read no history row"
        );
    })
    .await;
}

in_both_modes!(
    system_metrics_read_their_tables_sequentially:
    procedures_system_metrics_read_their_tables_sequentially,
    inline_system_metrics_read_their_tables_sequentially
);

/// A backlog is read from its head: with 20,000 visible messages and
/// activities queued (analyzed), fetching, abandoning and acking a few reads
/// a few rows of each queue, in both modes, on the provider's own pool
/// settings (generic plans, which cannot see that "now" is past every row).
async fn a_backlog_is_read_from_its_head(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("backlog_plan_{mode}"), |schema| async move {
        let (pool, provider) = provider_after(&schema, mode, 1, |setup| async move {
            fill_backlog(&setup, ROWS).await;
            for table in ["orchestrator_queue", "worker_queue"] {
                sqlx::query(setup.statement(&format!("ANALYZE {{{{schema}}}}.{table}")))
                    .execute(&setup.pool)
                    .await
                    .expect("analyze");
            }
        })
        .await;
        read_backlog_head(&schema, pool, provider, ROWS).await;
    })
    .await;
}

/// `rows` visible messages (instances `old-1`, `old-2`, ...) and as many
/// visible activities, queued a second ago.
async fn fill_backlog(schema: &TestSchema, rows: i64) {
    let start = fixtures::json(&fixtures::start("TEMPLATE"));
    let work = fixtures::json(&fixtures::activity("TEMPLATE", 1));
    for (statement, item) in [
        (
            "INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, \
             visible_at_ms, created_at_ms) \
             SELECT 'old-' || g, 'StartOrchestration', replace($2, 'TEMPLATE', 'old-' || g), \
             {{now_ms}} - 1000, 0 FROM generate_series(1, $1::bigint) g",
            start,
        ),
        (
            "INSERT INTO {{schema}}.worker_queue (work_item, visible_at_ms, instance_id, \
             execution_id, activity_id, created_at_ms) \
             SELECT replace($2, 'TEMPLATE', 'old-' || g), {{now_ms}} - 1000, 'old-' || g, 1, 1, 0 \
             FROM generate_series(1, $1::bigint) g",
            work,
        ),
    ] {
        sqlx::query(schema.statement(statement))
            .bind(rows)
            .bind(item)
            .execute(&schema.pool)
            .await
            .expect("backlog");
    }
}

/// Eight rounds of: fetch the orchestrator queue's head and abandon it
/// for an hour, fetch the worker queue's head and ack it; then checks that
/// they read fewer than 1,000 rows of the two `rows`-row queues.
async fn read_backlog_head(
    schema: &TestSchema,
    pool: PgPool,
    provider: PostgresProvider,
    rows: i64,
) {
    let queues = ["orchestrator_queue", "worker_queue"];
    let before = rows_read(&schema.pool, &schema.name, &queues).await;
    for n in 1..=8 {
        let (item, token, _) = provider
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the backlog's head");
        assert_eq!(item.instance, format!("old-{n}"));
        provider
            .abandon_orchestration_item(&token, Some(Duration::from_secs(3600)), false)
            .await
            .expect("abandon");
        let (_, token, _) = provider
            .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
            .await
            .expect("fetch work")
            .expect("the backlog's head");
        provider
            .ack_work_item(&token, Some(fixtures::completion(&format!("old-{n}"), 1)))
            .await
            .expect("ack");
    }
    drop(provider);
    report_and_close(pool, 1).await;
    let after = rows_read(&schema.pool, &schema.name, &queues).await;
    assert!(
        after - before < 1_000,
        "8 fetches from each queue read {} rows of {rows}-row backlogs",
        after - before
    );
}

in_both_modes!(
    a_backlog_is_read_from_its_head:
    procedures_a_backlog_is_read_from_its_head,
    inline_a_backlog_is_read_from_its_head
);

/// The same with plans made while the queues were empty and never
/// analyzed, as a new tenant's connections make them before its first
/// burst of work: the fetches' cached plans must still read the queues
/// from their heads, not sort every visible row (a scan bounded below by
/// the scan floor and above by the clock looked a few rows wide to the
/// planner).
async fn a_backlog_queued_after_the_first_fetch_is_read_from_its_head(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("grown_plan_{mode}"), |schema| async move {
        let (pool, provider) = provider_after(&schema, mode, 1, |_| async {}).await;
        read_backlog_after_empty_fetches(&schema, pool, provider, BACKLOG).await;
    })
    .await;
}

/// Plans made on the pool's one connection, on empty queues; then a
/// `backlog`-row backlog queued and its head read (`read_backlog_head`).
async fn read_backlog_after_empty_fetches(
    schema: &TestSchema,
    pool: PgPool,
    provider: PostgresProvider,
    backlog: i64,
) {
    fetch_both_queues_empty(&provider).await;
    fill_backlog(schema, backlog).await;
    read_backlog_head(schema, pool, provider, backlog).await;
}

in_both_modes!(
    a_backlog_queued_after_the_first_fetch_is_read_from_its_head:
    procedures_a_backlog_queued_after_the_first_fetch_is_read_from_its_head,
    inline_a_backlog_queued_after_the_first_fetch_is_read_from_its_head
);

/// The same with plans made while the queues were empty after work had
/// been done and vacuumed away, as autovacuum leaves an idle tenant's
/// queues (analyzed, zero pages), and as statistics taken while a queue
/// held a few rows leave it: the cached plans must still read a backlog
/// queued afterwards from its head. In procedure mode also on a pool
/// without the provider's connection settings: the procedures pin theirs.
async fn a_backlog_queued_after_an_idle_spell_is_read_from_its_head(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    let mut cases = vec![(0_i64, false), (20, false)];
    if mode == SqlMode::StoredProcedures {
        cases.push((0, true));
    }
    for (few, bare) in cases {
        with_schema(&format!("idle_plan_{mode}_{few}"), |schema| async move {
            set_up(&schema, |setup| async move {
                setup.provider_with(mode, false).await; // migrate
                fill_backlog(&setup, 20).await;
                // Empty and vacuumed (zero pages), or analyzed while 20
                // rows were queued and emptied since.
                let statements: &[&str] = if few == 0 {
                    &["DELETE FROM {{schema}}.T", "VACUUM ANALYZE {{schema}}.T"]
                } else {
                    &["ANALYZE {{schema}}.T", "DELETE FROM {{schema}}.T"]
                };
                for table in ["orchestrator_queue", "worker_queue"] {
                    for statement in statements {
                        sqlx::query(
                            setup.statement(&statement.replace(".T", &format!(".{table}"))),
                        )
                        .execute(&setup.pool)
                        .await
                        .expect("statistics");
                    }
                }
            })
            .await;
            let pool = if bare {
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(database_url())
                    .await
                    .expect("a pool without the provider's settings")
            } else {
                pool(1).await
            };
            let provider = provider_on(&pool, &schema.name, mode, false).await;
            read_backlog_after_empty_fetches(&schema, pool, provider, BACKLOG).await;
        })
        .await;
    }
}

in_both_modes!(
    a_backlog_queued_after_an_idle_spell_is_read_from_its_head:
    procedures_a_backlog_queued_after_an_idle_spell_is_read_from_its_head,
    inline_a_backlog_queued_after_an_idle_spell_is_read_from_its_head
);

/// A long-polling fetch passes over young messages of instances with
/// activities in flight (`completion_settle`). Those checks (activities in
/// flight, a young message of the instance) must be lookups per message:
/// planned as a hash of the worker queue, the first read the whole (small but
/// churning) queue on every fetch, the largest cost of a fetch under load.
/// Thousands of young, leased messages ahead of the one to claim and a few
/// hundred queued activities make the hash the planner's cheaper choice.
async fn settling_fetch_probes_the_worker_queue_per_message(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("settle_plan_{mode}"), |schema| async move {
        set_up(&schema, |setup| async move {
            setup.provider_with(mode, false).await; // migrate (no listener to outlive the pool)
            for statement in [
                "INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, \
                 visible_at_ms, created_at_ms) \
                 SELECT 'old-' || g, 'ActivityCompleted', '{}', {{now_ms}} - 1000, 0 \
                 FROM generate_series(1, $1::bigint) g",
                "INSERT INTO {{schema}}.instance_locks (instance_id, lock_token, locked_until_ms, locked_at_ms) \
                 SELECT 'old-' || g, 'held-' || g, {{now_ms}} + 3600000, 0 \
                 FROM generate_series(1, $1::bigint) g",
                "INSERT INTO {{schema}}.worker_queue (work_item, visible_at_ms, instance_id, created_at_ms) \
                 SELECT '{}', {{now_ms}} + 3600000, 'old-' || g, 0 FROM generate_series(1, 500) g",
            ] {
                sqlx::query(setup.statement(statement))
                    .bind(5_000_i64)
                    .execute(&setup.pool)
                    .await
                    .expect("rows");
            }
            for table in ["orchestrator_queue", "instance_locks", "worker_queue"] {
                sqlx::query(setup.statement(&format!("ANALYZE {{{{schema}}}}.{table}")))
                    .execute(&setup.pool)
                    .await
                    .expect("analyze");
            }
        })
        .await;
        let pool = pool(3).await;
        // Every message counts as young.
        let provider =
            settling_provider(&pool, &schema.name, mode, Duration::from_secs(3600)).await;
        let probed = ["worker_queue", "orchestrator_queue"];
        let before = seq_scans_of(&schema.pool, &schema.name, &probed).await;
        for n in 0..3 {
            let instance = format!("new-{n}");
            provider
                .enqueue_for_orchestrator(fixtures::start(&instance), None)
                .await
                .expect("enqueue");
            let (item, token, _) = provider
                .fetch_orchestration_item(LOCK, Duration::from_secs(5), None)
                .await
                .expect("fetch")
                .expect("the new instance");
            assert_eq!(item.instance, instance);
            provider
                .abandon_orchestration_item(&token, Some(Duration::from_secs(3600)), false)
                .await
                .expect("abandon");
        }
        drop(provider);
        report_and_close(pool, 3).await;
        let after = seq_scans_of(&schema.pool, &schema.name, &probed).await;
        assert_eq!(after - before, 0, "settling fetches scanned a queue");
    })
    .await;
}

in_both_modes!(
    settling_fetch_probes_the_worker_queue_per_message:
    procedures_settling_fetch_probes_the_worker_queue_per_message,
    inline_settling_fetch_probes_the_worker_queue_per_message
);
