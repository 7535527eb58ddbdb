//! A worker reads only the activities its tag filter lets it take. A
//! backlog queued for a tag no running worker serves (a pool scaled to
//! zero) must not make every fetch of the default workers walk over it,
//! nor a backlog of untagged activities every fetch of a tagged pool: the
//! queue is read per tag, from each tag's head.

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::SqlMode;

use super::{LOCK, ROWS, provider_after, report_and_close, rows_read};
use crate::fixtures;
use crate::support::{TestSchema, counting_own_table_reads, in_both_modes, with_schema};

fn tags(names: &[&str]) -> std::collections::HashSet<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

/// `rows` visible activities tagged `tag` (`None`: untagged), of instances
/// `{prefix}-1`, `{prefix}-2`, ..., queued a second ago after what is
/// queued already.
async fn queue(schema: &TestSchema, rows: i64, tag: Option<&str>, prefix: &str) {
    let work = fixtures::json(&fixtures::activity("TEMPLATE", 1));
    sqlx::query(schema.statement(
        "INSERT INTO {{schema}}.worker_queue (work_item, visible_at_ms, instance_id, \
         execution_id, activity_id, tag, created_at_ms) \
         SELECT replace($2, 'TEMPLATE', $4 || '-' || g), {{now_ms}} - 1000, $4 || '-' || g, 1, 1, $3, 0 \
         FROM generate_series(1, $1::bigint) g",
    ))
    .bind(rows)
    .bind(work)
    .bind(tag)
    .bind(prefix)
    .execute(&schema.pool)
    .await
    .expect("backlog");
}

in_both_modes!(
    a_backlog_for_other_workers_is_not_read:
    procedures_a_backlog_for_other_workers_is_not_read,
    inline_a_backlog_for_other_workers_is_not_read
);

/// Plans made on an empty queue, in every tag mode; then 20,000 activities
/// for a `gpu` pool nobody runs, 20,000 untagged ones behind them and eight
/// for a `cpu` pool last. Eight fetches (and acks) each of the default
/// workers, of the `cpu` pool, of a worker taking both, and of one taking
/// any, read fewer than 1,000 rows of the queue, each getting what it may
/// take in queue order.
async fn a_backlog_for_other_workers_is_not_read(mode: SqlMode) {
    let _counting = counting_own_table_reads().await;
    with_schema(&format!("tag_plan_{mode}"), |schema| async move {
        let (pool, provider) = provider_after(&schema, mode, 1, |_| async {}).await;
        let filters = [
            (TagFilter::DefaultOnly, "plain"),
            (TagFilter::Tags(tags(&["cpu", "fpga"])), "cpu"),
            (TagFilter::DefaultAnd(tags(&["cpu"])), "plain"),
            (TagFilter::Any, "gpu"),
        ];
        for (filter, _) in &filters {
            let found = provider
                .fetch_work_item(LOCK, Duration::ZERO, None, filter)
                .await
                .expect("fetch from the empty queue");
            assert!(found.is_none(), "{mode}: {filter:?}: {found:?}");
        }
        queue(&schema, ROWS, Some("gpu"), "gpu").await;
        queue(&schema, ROWS, None, "plain").await;
        queue(&schema, 8, Some("cpu"), "cpu").await;

        let before = rows_read(&schema.pool, &schema.name, &["worker_queue"]).await;
        for (filter, prefix) in &filters {
            for _ in 1..=8 {
                let (item, token, _) = provider
                    .fetch_work_item(LOCK, Duration::ZERO, None, filter)
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: {filter:?}: {e}"))
                    .unwrap_or_else(|| panic!("{mode}: {filter:?}: nothing claimed"));
                let duroxide::providers::WorkItem::ActivityExecute { instance, .. } = item else {
                    panic!("{mode}: {item:?}");
                };
                assert!(
                    instance.starts_with(&format!("{prefix}-")),
                    "{mode}: {filter:?} took {instance}"
                );
                provider
                    .ack_work_item(&token, Some(fixtures::completion(&instance, 1)))
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: ack: {e}"));
            }
        }
        drop(provider);
        report_and_close(pool, 1).await;
        let after = rows_read(&schema.pool, &schema.name, &["worker_queue"]).await;
        assert!(
            after - before < 1_000,
            "{mode}: 32 fetches read {} rows of the worker queue",
            after - before
        );
    })
    .await;
}
