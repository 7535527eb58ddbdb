//! A snapshot held anywhere in the database (a transaction left open in
//! `psql`, a long report, `pg_dump`) keeps every delivered message's row and
//! index entries from being cleaned up. A fetch must not walk all of them on
//! every call: it starts its scan from a lower bound on the queue's live
//! messages (`src/scan_floor.rs`), and that bound never hides a message for
//! long, whoever wrote it and with whatever visibility time.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use futures::FutureExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

use crate::fixtures::{self, event, json, metadata, start};
use crate::support::counting_own_table_reads;
use crate::support::{
    ScratchDatabase, database_url, fetch_both_queues_empty, url_with_database, with_schema,
};

const MODES: [SqlMode; 2] = [SqlMode::StoredProcedures, SqlMode::InlineSql];

/// Messages delivered (deleted) while the snapshot is held, per queue.
const DELIVERED: i64 = 4_000;

/// Index entries of `table` returned by scans so far, as the statistics
/// have them.
async fn index_entries_read(pool: &PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_catalog.pg_stat_user_indexes \
          WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("index statistics")
}

/// Heap blocks of `table` read by scans so far (from shared buffers or
/// not), as the statistics have them.
async fn heap_blocks_read(pool: &PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0))::bigint \
           FROM pg_catalog.pg_statio_user_tables WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("table statistics")
}

/// Runs `sql` on one connection of `admin` and makes that backend report
/// its statistics before returning, as `flush_statistics` does for the
/// provider's: a backend reports lazily (within a second, as it goes
/// idle), so the block reads of these writes (about two per row) could
/// otherwise land between a test's two readings of the counters.
async fn write_and_report(admin: &PgPool, sql: &str) {
    let mut conn = admin.acquire().await.expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .expect("write");
    sqlx::query("SELECT pg_catalog.pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush statistics");
}

/// Makes the provider's one backend report its statistics now (it does as
/// it goes idle after this call).
async fn flush_statistics(provider_pool: &PgPool) {
    sqlx::query("SELECT pg_catalog.pg_stat_force_next_flush()")
        .execute(provider_pool)
        .await
        .expect("flush statistics");
}

/// With a snapshot held and `DELIVERED` messages delivered from each queue
/// since it was taken, twenty empty fetches of each queue read fewer index
/// entries than four full walks over them (they read at least twenty
/// walks' worth when every fetch starts at the index's first entry); and
/// with as many leases taken and released, twenty empty long-polling
/// fetches read fewer blocks of the lease table than two reads of it
/// (their next due time read it whole before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_snapshot_does_not_make_every_fetch_walk_what_was_delivered() {
    let _counting = counting_own_table_reads().await;
    for mode in MODES {
        let name = format!("dx_snapshot_{}_{}", std::process::id(), mode.as_str());
        let scratch = ScratchDatabase::create(&name, 2).await;
        let admin = scratch.pool.clone();
        let url = url_with_database(database_url(), &name);
        let outcome = std::panic::AssertUnwindSafe(walks_in(admin, url, mode))
            .catch_unwind()
            .await;
        scratch.finish().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

async fn walks_in(admin: PgPool, url: String, mode: SqlMode) {
    let schema = "held";
    // One connection, so the test can make the backend that ran the
    // fetches report its statistics.
    let options = PostgresOptions::default()
        .connect_options(&url)
        .expect("options");
    let provider_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("provider pool");
    let provider = PostgresProvider::from_pool_with(
        provider_pool.clone(),
        PostgresOptions::default()
            .schema(schema)
            .sql_mode(mode)
            .notifications(false),
    )
    .await
    .expect("provider");

    let mut holder = sqlx::PgConnection::connect(&url).await.expect("holder");
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_catalog.pg_class",
    )
    .execute(&mut holder)
    .await
    .expect("snapshot");

    // Delivered a minute ago: inserted and deleted, as fetch and ack would.
    let now_ms = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
    write_and_report(&admin, &format!(
        "INSERT INTO {schema}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms) \
         SELECT 'gone-' || g, 'ExternalRaised', '{{}}', {now_ms} - 60000 + g, {now_ms} \
           FROM generate_series(1, {DELIVERED}) g; \
         DELETE FROM {schema}.orchestrator_queue; \
         INSERT INTO {schema}.worker_queue (work_item, visible_at_ms, created_at_ms) \
         SELECT '{{}}', {now_ms} - 60000 + g, {now_ms} FROM generate_series(1, {DELIVERED}) g; \
         DELETE FROM {schema}.worker_queue;"
    ))
    .await;

    flush_statistics(&provider_pool).await;
    let orchestrator_before = index_entries_read(&admin, schema, "orchestrator_queue").await;
    let worker_before = index_entries_read(&admin, schema, "worker_queue").await;
    for _ in 0..20 {
        let fetched = provider
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .expect("fetch");
        assert!(fetched.is_none(), "{mode}: nothing is queued");
        let fetched = provider
            .fetch_work_item(
                Duration::from_secs(30),
                Duration::ZERO,
                None,
                &TagFilter::Any,
            )
            .await
            .expect("fetch");
        assert!(fetched.is_none(), "{mode}: nothing is queued");
    }
    flush_statistics(&provider_pool).await;
    let orchestrator =
        index_entries_read(&admin, schema, "orchestrator_queue").await - orchestrator_before;
    let worker = index_entries_read(&admin, schema, "worker_queue").await - worker_before;

    // Leases taken and released while the snapshot is held: an empty
    // long-polling fetch's next due time looks only at the leases of
    // instances with queued messages, not at every lease row.
    write_and_report(&admin, &format!(
        "INSERT INTO {schema}.instance_locks (instance_id, lock_token, locked_until_ms, locked_at_ms) \
         SELECT 'gone-' || g, 'token-' || g, {now_ms} + 60000, {now_ms} \
           FROM generate_series(1, {DELIVERED}) g; \
         DELETE FROM {schema}.instance_locks;"
    ))
    .await;
    flush_statistics(&provider_pool).await;
    let lease_blocks_before = heap_blocks_read(&admin, schema, "instance_locks").await;
    for _ in 0..20 {
        let probe = provider
            .probe_fetch_orchestration_item(Duration::from_secs(30), Duration::from_millis(10))
            .await
            .expect("fetch");
        assert!(probe.item.is_none(), "{mode}: nothing is queued");
        assert_eq!(probe.next_due_ms, None, "{mode}: nothing is pending");
    }
    flush_statistics(&provider_pool).await;
    let lease_blocks =
        heap_blocks_read(&admin, schema, "instance_locks").await - lease_blocks_before;
    let lease_table_blocks: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_catalog.pg_relation_size('{schema}.instance_locks') / 8192"
    )))
    .fetch_one(&admin)
    .await
    .expect("table size");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("end");
    holder.close().await.expect("close");
    provider_pool.close().await;
    assert!(
        lease_blocks < 2 * lease_table_blocks,
        "{mode}: 20 next due times read {lease_blocks} blocks of a {lease_table_blocks}-block lease table"
    );
    assert!(
        orchestrator < 4 * DELIVERED,
        "{mode}: 20 orchestrator fetches read {orchestrator} index entries over {DELIVERED} delivered messages"
    );
    assert!(
        worker < 4 * DELIVERED,
        "{mode}: 20 worker fetches read {worker} index entries over {DELIVERED} delivered items"
    );
}

/// A timer whose fire time the runtime computed before the fetch's lower
/// bound (its clock behind the database's, or a long turn) is delivered by
/// the next fetch, not held back until the bound is recomputed.
#[tokio::test]
async fn a_timer_that_fired_before_the_scan_floor_is_delivered_at_once() {
    let _counting = counting_own_table_reads().await;
    for mode in MODES {
        with_schema("floor_timer", |schema| async move {
            let provider = schema.provider_with(mode, false).await;
            let lease = Duration::from_secs(30);
            fetch_both_queues_empty(&provider).await;
            provider
                .enqueue_for_orchestrator(start("timer"), None)
                .await
                .expect("start");
            let (item, token, _) = provider
                .fetch_orchestration_item(lease, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("the start");
            let an_hour_ago = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as u64
                - 3_600_000;
            provider
                .ack_orchestration_item(
                    &token,
                    1,
                    vec![event(&item.instance, 1)],
                    vec![],
                    vec![WorkItem::TimerFired {
                        instance: item.instance.clone(),
                        execution_id: 1,
                        id: 2,
                        fire_at_ms: an_hour_ago,
                    }],
                    metadata(),
                    vec![],
                )
                .await
                .expect("ack");
            let (item, _, _) = provider
                .fetch_orchestration_item(lease, Duration::ZERO, None)
                .await
                .expect("fetch")
                .unwrap_or_else(|| panic!("{mode}: the fired timer is ready"));
            assert!(
                matches!(item.messages.as_slice(), [WorkItem::TimerFired { fire_at_ms, .. }] if *fire_at_ms == an_hour_ago),
                "{mode}: {:?}",
                item.messages
            );
        })
        .await;
    }
}

/// Messages written behind the provider's back with a visibility time far
/// below the fetch's lower bound are still delivered: the bound is
/// recomputed from the whole queue every few seconds.
#[tokio::test]
async fn a_message_written_below_the_scan_floor_is_delivered_after_the_next_full_scan() {
    let _counting = counting_own_table_reads().await;
    for mode in MODES {
        with_schema("floor_rescan", |schema| async move {
            let provider = schema.provider_with(mode, false).await;
            let lease = Duration::from_secs(30);
            fetch_both_queues_empty(&provider).await;
            let an_hour_ago = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 3600000";
            sqlx::query(schema.statement(&format!(
                "INSERT INTO {{{{schema}}}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms) \
                 VALUES ('below', 'StartOrchestration', $1, {an_hour_ago}, {an_hour_ago})"
            )))
            .bind(json(&start("below")))
            .execute(&schema.pool)
            .await
            .expect("orchestrator message");
            sqlx::query(schema.statement(&format!(
                "INSERT INTO {{{{schema}}}}.worker_queue (work_item, visible_at_ms, instance_id, execution_id, activity_id, created_at_ms) \
                 VALUES ($1, {an_hour_ago}, 'below', 1, 1, {an_hour_ago})"
            )))
            .bind(json(&fixtures::activity("below", 1)))
            .execute(&schema.pool)
            .await
            .expect("worker item");

            let deadline = Instant::now() + Duration::from_secs(60);
            let mut turn = None;
            let mut activity = None;
            while turn.is_none() || activity.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{mode}: turn {:?}, activity {:?} after a minute",
                    turn.is_some(),
                    activity.is_some()
                );
                if turn.is_none() {
                    turn = provider
                        .fetch_orchestration_item(lease, Duration::ZERO, None)
                        .await
                        .expect("fetch");
                }
                if activity.is_none() {
                    activity = provider
                        .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::Any)
                        .await
                        .expect("fetch");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (item, _, _) = turn.expect("turn");
            assert_eq!(item.instance, "below", "{mode}");
        })
        .await;
    }
}
