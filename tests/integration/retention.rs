//! Deleting, pruning and counting what is left, in both SQL modes: which
//! instances a delete or a bulk delete may take, which a bulk prune
//! reaches, what the counts read after a delete, and what an ack that
//! arrives after a delete leaves behind. Turns are driven through the
//! provider directly, as in `deletion_races`.

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{
    ExecutionMetadata, InstanceFilter, Provider, ProviderAdmin, ProviderError, PruneOptions,
    WorkItem,
};
use duroxide_postgres::SqlMode;

use crate::deletion_races::{
    LEASE, assert_nothing_left, await_waiters, fetched_activity, hold_rows, rows_left,
    spawn_completion, spawn_force_delete, started,
};
use crate::fixtures::{ORCHESTRATION, completion, event, metadata, start};
use crate::support::{TestSchema, in_both_modes, with_schema};

/// The `ContinueAsNew` a turn of `instance` queues to end its execution.
fn continue_as_new(instance: &str) -> WorkItem {
    WorkItem::ContinueAsNew {
        instance: instance.to_string(),
        orchestration: ORCHESTRATION.to_string(),
        input: "{}".to_string(),
        version: Some("1.0.0".to_string()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        carry_forward_events: vec![],
        initial_custom_status: None,
    }
}

/// Metadata of a turn that ends its execution with `status`.
fn ending(status: &str) -> ExecutionMetadata {
    ExecutionMetadata {
        status: Some(status.to_string()),
        output: Some("{}".to_string()),
        ..metadata()
    }
}

/// Messages queued for `instance` in the orchestrator queue.
async fn queued(schema: &TestSchema, instance: &str) -> i64 {
    sqlx::query_scalar(
        schema
            .statement("SELECT count(*) FROM {{schema}}.orchestrator_queue WHERE instance_id = $1"),
    )
    .bind(instance)
    .fetch_one(&schema.pool)
    .await
    .expect("count the queue")
}

/// Fetches the next turn, which must be `instance`'s, and acks it as
/// `execution_id` with one history event, `sends` and `meta`.
async fn turn(
    provider: &impl Provider,
    instance: &str,
    execution_id: u64,
    sends: Vec<WorkItem>,
    meta: ExecutionMetadata,
) {
    let (item, token, _) = provider
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("a turn is ready");
    assert_eq!(item.instance, instance);
    let mut first = event(instance, 1);
    first.execution_id = execution_id;
    provider
        .ack_orchestration_item(
            &token,
            execution_id,
            vec![first],
            vec![],
            sends,
            meta,
            vec![],
        )
        .await
        .expect("ack the turn");
}

/// An instance between the turn that ends execution 1 with ContinueAsNew
/// and the turn that starts execution 2 is still running: its current
/// execution's status is `ContinuedAsNew` and its next turn is queued. A
/// bulk delete used to take it as finished (purging the queued
/// ContinueAsNew with it), and a delete without force let it go; both now
/// treat it as running (duroxide: only Completed and Failed are eligible).
async fn a_continuing_instance_is_not_deleted_as_finished(mode: SqlMode) {
    with_schema(&format!("ret_can_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let instance = format!("continuing-{mode}");
        provider
            .enqueue_for_orchestrator(start(&instance), None)
            .await
            .expect("enqueue the start");
        turn(
            &provider,
            &instance,
            1,
            vec![continue_as_new(&instance)],
            ending("ContinuedAsNew"),
        )
        .await;

        let bulk = provider
            .delete_instance_bulk(InstanceFilter {
                instance_ids: Some(vec![instance.clone()]),
                completed_before: None,
                limit: None,
            })
            .await
            .expect("bulk delete");
        assert_eq!(bulk.instances_deleted, 0, "{mode}: the bulk delete took it");
        let refused = provider.delete_instance(&instance, false).await;
        assert!(
            refused.is_err(),
            "{mode}: a delete without force took it: {refused:?}"
        );
        assert_eq!(queued(&schema, &instance).await, 1, "{mode}: its next turn");

        // Its next turn starts execution 2.
        turn(&provider, &instance, 2, vec![], metadata()).await;
        let info = provider
            .get_instance_info(&instance)
            .await
            .expect("instance info");
        assert_eq!(
            (info.current_execution_id, info.status.as_str()),
            (2, "Running")
        );
        provider
            .delete_instance(&instance, true)
            .await
            .expect("a forced delete");
        let left = rows_left(&schema.pool, &schema, &instance).await;
        assert!(left.is_empty(), "{mode}: rows left: {left:?}");
    })
    .await;
}

in_both_modes!(a_continuing_instance_is_not_deleted_as_finished: a_continuing_instance_is_not_deleted_as_finished_procedures, a_continuing_instance_is_not_deleted_as_finished_inline);

/// The `StartOrchestration` of child `child` that `parent`'s execution 1
/// schedules with event `id`.
fn child_start(child: &str, parent: &str, id: u64) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: child.to_string(),
        orchestration: ORCHESTRATION.to_string(),
        input: "{}".to_string(),
        version: Some("1.0.0".to_string()),
        parent_instance: Some(parent.to_string()),
        parent_id: Some(id),
        parent_execution_id: Some(1),
        execution_id: 1,
    }
}

/// A parent deleted while its children's starts were still queued (the
/// tree it was deleted with was the parent alone): each child's first turn
/// then creates an instance whose parent no longer exists. Such a child was
/// left for good: a delete refused it as a sub-orchestration and a bulk
/// delete took only instances without a parent. A child whose parent is
/// gone is now a root to both.
async fn a_child_whose_parent_was_deleted_can_be_deleted(mode: SqlMode) {
    with_schema(&format!("ret_child_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let parent = format!("parent-{mode}");
        let children = [format!("child-a-{mode}"), format!("child-b-{mode}")];
        provider
            .enqueue_for_orchestrator(start(&parent), None)
            .await
            .expect("enqueue the start");
        let sends = vec![
            child_start(&children[0], &parent, 2),
            child_start(&children[1], &parent, 3),
        ];
        turn(&provider, &parent, 1, sends, metadata()).await;
        let deleted = provider
            .delete_instance(&parent, true)
            .await
            .expect("delete the parent");
        assert_eq!(deleted.instances_deleted, 1, "{mode}: the parent alone");

        // The children start (in either order) and finish.
        for _ in &children {
            let (item, token, _) = provider
                .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("a child's start");
            let meta = ExecutionMetadata {
                parent_instance_id: Some(parent.clone()),
                ..ending("Completed")
            };
            provider
                .ack_orchestration_item(
                    &token,
                    1,
                    vec![event(&item.instance, 1)],
                    vec![],
                    vec![],
                    meta,
                    vec![],
                )
                .await
                .expect("ack the child's turn");
        }

        let bulk = provider
            .delete_instance_bulk(InstanceFilter {
                instance_ids: Some(vec![children[0].clone()]),
                completed_before: None,
                limit: None,
            })
            .await
            .expect("bulk delete");
        assert_eq!(bulk.instances_deleted, 1, "{mode}: the bulk delete");
        let single = provider.delete_instance(&children[1], false).await;
        assert_eq!(
            single.map(|d| d.instances_deleted).ok(),
            Some(1),
            "{mode}: the delete"
        );
        assert_nothing_left(&schema, mode, &[&children[0], &children[1]]).await;
    })
    .await;
}

in_both_modes!(a_child_whose_parent_was_deleted_can_be_deleted: a_child_whose_parent_was_deleted_can_be_deleted_procedures, a_child_whose_parent_was_deleted_can_be_deleted_inline);

/// A bulk prune limited to `limit` instances chose the oldest `limit`
/// instances whether or not they had anything to prune (and locked them
/// all): with old single-execution instances ahead of the ContinueAsNew
/// ones, every bulk prune pruned nothing. It now chooses only instances
/// with an execution the options prune, and counts those.
async fn a_bulk_prune_reaches_past_instances_with_nothing_to_prune(mode: SqlMode) {
    with_schema(&format!("ret_prune_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let ids = [
            format!("oldest-{mode}"),
            format!("older-{mode}"),
            format!("newest-{mode}"),
        ];
        for (created, instance) in ids.iter().enumerate() {
            started(&provider, instance, false).await;
            sqlx::query(
                schema.statement("UPDATE {{schema}}.instances SET created_at_ms = $2 WHERE instance_id = $1"),
            )
            .bind(instance)
            .bind(created as i64 + 1)
            .execute(&schema.pool)
            .await
            .expect("age the instance");
        }
        // The newest continued as new: execution 1 finished, 2 current.
        sqlx::query(schema.statement(
            "WITH done AS (UPDATE {{schema}}.executions SET status = 'ContinuedAsNew', completed_at_ms = 1 \
                            WHERE instance_id = $1), \
                  next AS (INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms) \
                           VALUES ($1, 2, 'Running', 2)) \
             UPDATE {{schema}}.instances SET current_execution_id = 2 WHERE instance_id = $1",
        ))
        .bind(&ids[2])
        .execute(&schema.pool)
        .await
        .expect("a second execution");

        let pruned = provider
            .prune_executions_bulk(
                InstanceFilter {
                    instance_ids: None,
                    completed_before: None,
                    limit: Some(2),
                },
                PruneOptions::default(),
            )
            .await
            .expect("bulk prune");
        assert_eq!(
            (pruned.instances_processed, pruned.executions_deleted, pruned.events_deleted),
            (1, 1, 1),
            "{mode}: {pruned:?}"
        );
        let left = provider.list_executions(&ids[2]).await.expect("executions");
        assert_eq!(left, vec![2], "{mode}");
    })
    .await;
}

in_both_modes!(a_bulk_prune_reaches_past_instances_with_nothing_to_prune: a_bulk_prune_reaches_past_instances_with_nothing_to_prune_procedures, a_bulk_prune_reaches_past_instances_with_nothing_to_prune_inline);

/// History an earlier build wrote without counting it
/// (docs/operations.md, "Upgrading to migration 0006"), deleted with its
/// instance, takes more off the event total than was ever counted: the
/// total went negative and `get_system_metrics` failed on it. It now reads
/// 0 (and the provider warns, naming the recount).
async fn uncounted_history_deleted_leaves_the_metrics_readable(mode: SqlMode) {
    with_schema(&format!("ret_count_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let instance = format!("uncounted-{mode}");
        started(&provider, &instance, false).await;
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, \
             event_data, created_at_ms) \
             SELECT $1, 1, g, 'Event', '{}', 0 FROM generate_series(2, 4) g",
        ))
        .bind(&instance)
        .execute(&schema.pool)
        .await
        .expect("uncounted events");
        let deleted = provider
            .delete_instance(&instance, true)
            .await
            .expect("delete");
        assert_eq!(deleted.events_deleted, 4, "{mode}");

        let metrics = provider.get_system_metrics().await;
        assert_eq!(
            metrics
                .as_ref()
                .map(|m| (m.total_instances, m.total_events))
                .ok(),
            Some((0, 0)),
            "{mode}: {metrics:?}"
        );
    })
    .await;
}

in_both_modes!(uncounted_history_deleted_leaves_the_metrics_readable: uncounted_history_deleted_leaves_the_metrics_readable_procedures, uncounted_history_deleted_leaves_the_metrics_readable_inline);

/// Asserts that the ack of `instance`'s completion, arriving once a force
/// delete took the instance, failed (`acked`) and left no row behind.
async fn assert_the_late_ack_left_nothing(
    schema: &TestSchema,
    instance: &str,
    mode: SqlMode,
    acked: Result<(), ProviderError>,
) {
    let left = rows_left(&schema.pool, schema, instance).await;
    assert!(
        acked
            .as_ref()
            .is_err_and(|e| e.message.contains("work item not found")),
        "{mode}: the ack: {acked:?}; rows left: {left:?}"
    );
    assert!(left.is_empty(), "{mode}: rows left after the ack: {left:?}");
}

/// A worker's completion arriving after its instance was force-deleted:
/// the ack fails (its activity is gone) and used to commit a new claim
/// row for the deleted instance all the same (the ack creates the row
/// when it finds none). A failed ack now writes nothing.
async fn an_ack_after_a_force_delete_leaves_nothing(mode: SqlMode) {
    with_schema(&format!("ret_ack_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let instance = format!("acked-late-{mode}");
        started(&provider, &instance, false).await;
        let token = fetched_activity(&provider, &instance).await;
        provider
            .delete_instances_atomic(std::slice::from_ref(&instance), true)
            .await
            .expect("the force delete");

        let acked = provider
            .ack_work_item(&token, Some(completion(&instance, 2)))
            .await;
        assert_the_late_ack_left_nothing(&schema, &instance, mode, acked).await;
    })
    .await;
}

in_both_modes!(an_ack_after_a_force_delete_leaves_nothing: an_ack_after_a_force_delete_leaves_nothing_procedures, an_ack_after_a_force_delete_leaves_nothing_inline);

/// The same ack arriving while the force delete runs: it waits for the
/// claim row the delete holds, which the delete's purge then removes, so
/// the ack finds no row (as if the instance had never had one) and used to
/// create it.
async fn an_ack_waiting_for_a_force_delete_leaves_nothing(mode: SqlMode) {
    with_schema(&format!("ret_ack_race_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        let instance = format!("acked-meanwhile-{mode}");
        started(&provider, &instance, false).await;
        let token = fetched_activity(&provider, &instance).await;

        // The delete stops at the instance row, on this lock, holding the
        // instance's claim row.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.instances WHERE instance_id = $1 FOR UPDATE",
            &instance,
        )
        .await;
        let delete = spawn_force_delete(&provider, std::slice::from_ref(&instance));
        await_waiters(&schema, 1, &[&delete]).await;
        let ack = spawn_completion(&provider, token, &instance);
        await_waiters(&schema, 2, &[&ack]).await;
        helper.rollback().await.expect("let the delete go");

        delete
            .await
            .expect("delete task")
            .expect("the force delete, first in line, commits");
        let acked = ack.await.expect("ack task");
        assert_the_late_ack_left_nothing(&schema, &instance, mode, acked).await;
    })
    .await;
}

in_both_modes!(an_ack_waiting_for_a_force_delete_leaves_nothing: an_ack_waiting_for_a_force_delete_leaves_nothing_procedures, an_ack_waiting_for_a_force_delete_leaves_nothing_inline);

in_both_modes!(a_delete_refused_for_a_running_instance_takes_no_lock:
    a_delete_refused_for_a_running_instance_takes_no_lock_procedures,
    a_delete_refused_for_a_running_instance_takes_no_lock_inline);

/// A delete refused because the instance is running refuses before it
/// locks anything. It used to lock the instance's claim row first, so it
/// waited for whoever held that row (an ack in flight), and held the row
/// itself until its rollback, which PostgreSQL runs only after the client
/// has the error: a fetch meanwhile skipped the instance, and a
/// long-polling one then slept to its poll timeout. Here another session
/// holds the claim row all along, and the refusal must come all the same.
async fn a_delete_refused_for_a_running_instance_takes_no_lock(mode: SqlMode) {
    with_schema(&format!("ret_refuse_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        let instance = format!("refused-{mode}");
        provider
            .enqueue_for_orchestrator(start(&instance), None)
            .await
            .expect("enqueue the start");
        turn(&provider, &instance, 1, vec![], metadata()).await;

        let holder = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.instance_claims WHERE instance_id = $1 FOR UPDATE",
            &instance,
        )
        .await;
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            provider.delete_instance(&instance, false),
        )
        .await
        .unwrap_or_else(|_| panic!("{mode}: the refusal waited for the claim row"));
        let e = refused.expect_err("a running instance deleted without force");
        assert!(
            e.message.contains("still running"),
            "{mode}: refused as running: {e:?}"
        );
        holder.rollback().await.expect("release the claim row");
        assert_eq!(
            queued(&schema, &instance).await,
            0,
            "{mode}: nothing queued"
        );
        let info = provider
            .get_instance_info(&instance)
            .await
            .expect("instance info");
        assert_eq!(info.status, "Running", "{mode}: the instance is untouched");
    })
    .await;
}
