//! The system metrics' event total stays the number of history rows
//! through every statement that writes or deletes history, in both modes,
//! without reading the history (`0006_event_counts.sql`), and the
//! migration that introduces the counts fills them in for history already
//! there.

use std::time::Duration;

use duroxide::providers::{ExecutionMetadata, Provider, ProviderAdmin, PruneOptions};
use duroxide::{Event, EventKind};
use duroxide_postgres::{PostgresProvider, SqlMode, migrate};

use crate::fixtures::{completion, event, metadata, start};
use crate::support::{TestSchema, in_both_modes, with_schema};

const LOCK: Duration = Duration::from_secs(30);

/// Event `id` of `instance`'s execution `execution`.
fn event_of(instance: &str, execution: u64, id: u64) -> Event {
    Event::with_event_id(
        id,
        instance.to_string(),
        execution,
        None,
        EventKind::ExternalEvent {
            name: "Go".to_string(),
            data: id.to_string(),
        },
    )
}

/// `base` with the execution ending in `status` (and an output).
fn ending(status: &str, base: ExecutionMetadata) -> ExecutionMetadata {
    ExecutionMetadata {
        status: Some(status.to_string()),
        output: Some("\"out\"".to_string()),
        ..base
    }
}

/// The history's rows, counted.
async fn history_rows(schema: &TestSchema) -> u64 {
    let n: i64 = sqlx::query_scalar(schema.statement("SELECT count(*) FROM {{schema}}.history"))
        .fetch_one(&schema.pool)
        .await
        .expect("count the history");
    u64::try_from(n).expect("a count")
}

/// The metrics' event total is the history's row count after `step`.
async fn check(schema: &TestSchema, p: &PostgresProvider, step: &str, expected: u64) {
    let metrics = p.get_system_metrics().await.expect("metrics");
    assert_eq!(
        history_rows(schema).await,
        expected,
        "history rows after {step}"
    );
    assert_eq!(metrics.total_events, expected, "total_events after {step}");
}

/// Claims the next turn and acks it on `execution` with `events`, with
/// `metadata`.
async fn turn(
    p: &PostgresProvider,
    execution: u64,
    events: Vec<Event>,
    metadata: ExecutionMetadata,
) {
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("a turn");
    p.ack_orchestration_item(&token, execution, events, vec![], vec![], metadata, vec![])
        .await
        .expect("ack");
}

in_both_modes!(the_event_total_is_the_history_through_every_write_and_delete:
    the_event_total_is_the_history_through_every_write_and_delete_procedures,
    the_event_total_is_the_history_through_every_write_and_delete_inline);

/// Turns, appends to an execution with a row and to executions without one
/// (of a started instance and of an id never started), a turn that creates
/// the row of an execution appended to before, a prune, a failed append,
/// and deletes: after each, the total is the history's row count.
async fn the_event_total_is_the_history_through_every_write_and_delete(mode: SqlMode) {
    with_schema(&format!("event_total_{mode}"), |schema| async move {
        let p = schema.provider_in(mode).await;
        check(&schema, &p, "nothing", 0).await;

        p.enqueue_for_orchestrator(start("a"), None)
            .await
            .expect("start");
        let continued = ending("ContinuedAsNew", metadata());
        turn(&p, 1, vec![event("a", 1), event("a", 2)], continued).await;
        check(&schema, &p, "a turn of two events", 2).await;

        p.append_with_execution("a", 1, vec![event_of("a", 1, 3)])
            .await
            .expect("append to an execution with a row");
        check(&schema, &p, "an append to an execution with a row", 3).await;

        p.append_with_execution("a", 2, vec![event_of("a", 2, 1), event_of("a", 2, 2)])
            .await
            .expect("append to an execution without a row");
        p.append_with_execution("ghost", 1, vec![event_of("ghost", 1, 1)])
            .await
            .expect("append for an id never started");
        check(&schema, &p, "appends to executions without a row", 6).await;

        let duplicate = p
            .append_with_execution(
                "ghost",
                1,
                vec![event_of("ghost", 1, 2), event_of("ghost", 1, 1)],
            )
            .await;
        assert!(
            duplicate.is_err(),
            "a duplicate event id is refused: {duplicate:?}"
        );
        check(&schema, &p, "a refused append", 6).await;

        // A turn on execution 2 creates its row (the events appended to it
        // before stay counted where they were), and continues as new.
        p.enqueue_for_orchestrator(completion("a", 2), None)
            .await
            .expect("a message");
        let continued = ending("ContinuedAsNew", ExecutionMetadata::default());
        turn(&p, 2, vec![event_of("a", 2, 3)], continued).await;
        check(&schema, &p, "a turn that creates the execution's row", 7).await;
        p.enqueue_for_orchestrator(completion("a", 3), None)
            .await
            .expect("a message");
        let done = ending("Completed", ExecutionMetadata::default());
        turn(&p, 3, vec![event_of("a", 3, 1)], done).await;
        check(&schema, &p, "a turn on execution 3", 8).await;

        // Executions 1 and 2 go, with the events their rows counted and
        // those appended to execution 2 before it had one.
        let pruned = p
            .prune_executions("a", PruneOptions::default())
            .await
            .expect("prune");
        assert_eq!((pruned.executions_deleted, pruned.events_deleted), (2, 6));
        check(&schema, &p, "a prune", 2).await;

        p.enqueue_for_orchestrator(start("b"), None)
            .await
            .expect("start");
        let completed = ending("Completed", metadata());
        turn(&p, 1, vec![event("b", 1)], completed).await;
        p.append_with_execution("b", 3, vec![event_of("b", 3, 1)])
            .await
            .expect("append to an execution without a row");
        check(&schema, &p, "a second instance", 4).await;

        p.delete_instance("b", true).await.expect("delete b");
        check(&schema, &p, "deleting an instance with uncounted events", 2).await;
        p.delete_instance_bulk(Default::default())
            .await
            .expect("delete the rest");
        let left = history_rows(&schema).await;
        check(&schema, &p, "a bulk delete", left).await;
        assert_eq!(left, 1, "only the id never started keeps its event");
    })
    .await;
}

/// A schema whose history was written before `0006_event_counts.sql`:
/// the migration counts every execution's events and the events of no
/// execution, so the total is right from the start.
#[tokio::test]
async fn the_migration_counts_the_history_already_there() {
    with_schema("event_total_migration", |schema| async move {
        let p = schema.provider_in(SqlMode::StoredProcedures).await;
        for i in 0..3 {
            let id = format!("old-{i}");
            p.enqueue_for_orchestrator(start(&id), None)
                .await
                .expect("start");
            turn(&p, 1, vec![event(&id, 1), event(&id, 2)], metadata()).await;
        }
        p.append_with_execution(
            "stray",
            4,
            vec![event_of("stray", 4, 1), event_of("stray", 4, 2)],
        )
        .await
        .expect("append");
        drop(p);
        schema
            .run_all(&[
                "ALTER TABLE {{schema}}.executions DROP COLUMN event_count",
                "DROP TABLE {{schema}}.events_without_execution",
                "DELETE FROM {{schema}}._duroxide_migrations WHERE version = 6",
            ])
            .await;
        let name = schema.schema_name();
        migrate::migrate(&schema.pool, &name, SqlMode::StoredProcedures)
            .await
            .expect("migrate");
        let counts: Vec<i64> = sqlx::query_scalar(
            schema.statement("SELECT event_count FROM {{schema}}.executions ORDER BY instance_id"),
        )
        .fetch_all(&schema.pool)
        .await
        .expect("counts");
        assert_eq!(counts, vec![2, 2, 2]);
        let p = schema.provider_in(SqlMode::StoredProcedures).await;
        check(&schema, &p, "the migration", 8).await;
    })
    .await;
}

/// The recount docs/operations.md gives an operator ("Upgrading to
/// migration 0006") puts counts that read low (events appended by a build
/// that did not count) back to the history's row count.
#[tokio::test]
async fn the_documented_recount_restores_the_total() {
    with_schema("event_total_recount", |schema| async move {
        let p = schema.provider_in(SqlMode::InlineSql).await;
        p.enqueue_for_orchestrator(start("a"), None)
            .await
            .expect("start");
        turn(&p, 1, vec![event("a", 1), event("a", 2)], metadata()).await;
        p.append_with_execution("stray", 1, vec![event_of("stray", 1, 1)])
            .await
            .expect("append");
        // What an earlier build's statements leave: events nobody counted.
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, \
             event_data, created_at_ms) VALUES ('a', 1, 3, 'Event', '{}', 0), \
             ('stray', 1, 2, 'Event', '{}', 0), ('other', 7, 1, 'Event', '{}', 0)",
        ))
        .execute(&schema.pool)
        .await
        .expect("uncounted events");
        assert_eq!(
            p.get_system_metrics().await.expect("metrics").total_events,
            3
        );

        let doc = include_str!("../../docs/operations.md");
        let start_at = doc
            .find("-- recount tenant_a's events")
            .expect("the recount in docs/operations.md");
        let block = &doc[start_at..];
        let block = &block[..block.find("```").expect("the end of the block")];
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            block.replace("tenant_a.", &format!("\"{}\".", schema.name)),
        ))
        .execute(&schema.pool)
        .await
        .expect("the documented recount");
        check(&schema, &p, "the recount", 6).await;
    })
    .await;
}
