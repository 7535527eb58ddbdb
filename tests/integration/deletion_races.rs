//! Deletion and pruning racing the orchestration turn, in both SQL modes.
//!
//! Each race is driven into its exact interleaving with separate
//! connections: a helper connection holds a row lock the real fetch, ack or
//! prune needs next, so that call stops where the race happens, with its own
//! locks held; the other call is started and seen waiting; then the helper
//! lets go. The tables' one lock order (docs/architecture.md, "Lock order")
//! is what makes the outcome a wait instead of a deadlock or a resurrection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{
    DeleteInstanceResult, InstanceFilter, Provider, ProviderAdmin, ProviderError, PruneOptions,
    TagFilter,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;

use crate::fixtures::{ack_first_turn, activity, completion, event, metadata, start};
use crate::support::{Kind, ScratchDatabase, Slot, TestSchema, in_both_modes, with_schema};

pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// Runs a turn of `instance` through the provider: its start is fetched and
/// acked with `OrchestrationStarted`, so the instance, execution 1
/// (Running) and one history event exist. With `next_turn`, an activity
/// completion is then queued for a second turn.
pub(crate) async fn started(provider: &PostgresProvider, instance: &str, next_turn: bool) {
    provider
        .enqueue_for_orchestrator(start(instance), None)
        .await
        .expect("enqueue start");
    let (item, token, _) = provider
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .expect("fetch the start")
        .expect("the start is ready");
    assert_eq!(item.instance, instance);
    ack_first_turn(provider, &token, instance)
        .await
        .expect("ack the first turn");
    if next_turn {
        provider
            .enqueue_for_orchestrator(completion(instance, 2), None)
            .await
            .expect("enqueue a completion");
    }
}

/// Queues an activity of `instance` (scheduled by event 2) and fetches
/// it: the token its completion is acked with.
pub(crate) async fn fetched_activity(provider: &PostgresProvider, instance: &str) -> String {
    provider
        .enqueue_for_worker(activity(instance, 2))
        .await
        .expect("enqueue an activity");
    let (_, token, _) = provider
        .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
        .await
        .expect("fetch the activity")
        .expect("the activity is ready");
    token
}

/// A force delete of `ids`, started on a task of its own.
pub(crate) fn spawn_force_delete(
    provider: &Arc<PostgresProvider>,
    ids: &[String],
) -> JoinHandle<Result<DeleteInstanceResult, ProviderError>> {
    let (provider, ids) = (provider.clone(), ids.to_vec());
    tokio::spawn(async move { provider.delete_instances_atomic(&ids, true).await })
}

/// The ack of `instance`'s activity (fetched as `token`) with its
/// completion, started on a task of its own.
pub(crate) fn spawn_completion(
    provider: &Arc<PostgresProvider>,
    token: String,
    instance: &str,
) -> JoinHandle<Result<(), ProviderError>> {
    let (provider, instance) = (provider.clone(), instance.to_string());
    tokio::spawn(async move {
        provider
            .ack_work_item(&token, Some(completion(&instance, 2)))
            .await
    })
}

/// A transaction on its own connection holding row locks on the rows
/// `select` (a `SELECT ... FOR UPDATE` of `{{schema}}` tables, `$1` the
/// instance) returns.
pub(crate) async fn hold_rows<'a>(
    schema: &'a TestSchema,
    select: &str,
    instance: &str,
) -> Transaction<'a, Postgres> {
    let mut tx = schema.pool.begin().await.expect("begin the helper");
    let held: Vec<i32> = sqlx::query_scalar(schema.statement(select))
        .bind(instance)
        .fetch_all(&mut *tx)
        .await
        .expect("lock the rows");
    assert!(!held.is_empty(), "nothing to hold: {select}");
    tx
}

/// Waits until `n` backends are waiting on a lock in a statement of this
/// schema, or until every task in `done` has finished (a call that did not
/// need to wait), for at most 20 s.
pub(crate) async fn await_waiters<T>(schema: &TestSchema, n: i64, done: &[&JoinHandle<T>]) {
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let count: i64 = sqlx::query_scalar(waiting)
            .bind(&schema.name)
            .fetch_one(&schema.pool)
            .await
            .expect("pg_stat_activity");
        if count >= n || (!done.is_empty() && done.iter().all(|t| t.is_finished())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {n} expected lock waiters after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Rows left for `instance` in each table an instance owns.
pub(crate) async fn rows_left(
    pool: &PgPool,
    schema: &TestSchema,
    instance: &str,
) -> Vec<(String, i64)> {
    let mut left = Vec::new();
    for table in [
        "instances",
        "executions",
        "history",
        "orchestrator_queue",
        "instance_locks",
        "instance_claims",
        "worker_queue",
    ] {
        let sql = schema.sql(&format!(
            "SELECT count(*) FROM {{{{schema}}}}.{table} WHERE instance_id = $1"
        ));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(instance)
            .fetch_one(pool)
            .await
            .expect("count rows");
        if n > 0 {
            left.push((table.to_string(), n));
        }
    }
    left
}

/// Asserts that no row is left of any of `instances`.
pub(crate) async fn assert_nothing_left(schema: &TestSchema, mode: SqlMode, instances: &[&String]) {
    for instance in instances {
        let left = rows_left(&schema.pool, schema, instance).await;
        assert!(left.is_empty(), "{mode}: rows left of {instance}: {left:?}");
    }
}

/// The second call of a race: once the first call, stopped on `helper`'s
/// locks, waits, a force delete of `ids` starts and is seen waiting too
/// (or done: a delete that needed no lock); then `helper` lets the first
/// call go. The delete's task.
async fn force_delete_queued_behind(
    schema: &TestSchema,
    provider: &Arc<PostgresProvider>,
    ids: &[String],
    helper: Transaction<'_, Postgres>,
) -> JoinHandle<Result<DeleteInstanceResult, ProviderError>> {
    await_waiters::<()>(schema, 1, &[]).await;
    let delete = spawn_force_delete(provider, ids);
    await_waiters(schema, 2, &[&delete]).await;
    helper.rollback().await.expect("let the first call go");
    delete
}

/// Asserts that neither the `first` call of a race (which ended as
/// `outcome`) nor the force delete behind it failed with a deadlock.
fn assert_no_deadlock<A: std::fmt::Debug, B: std::fmt::Debug>(
    mode: SqlMode,
    first: &str,
    outcome: &Result<A, ProviderError>,
    deleted: &Result<B, ProviderError>,
) {
    assert!(
        !matches!((outcome, deleted), (Err(e), _) | (_, Err(e)) if is_deadlock(e)),
        "{mode}: {first} {outcome:?}, delete {deleted:?}"
    );
}

/// What a call of the stress test was, and how it ended.
type Outcome = (&'static str, Result<(), ProviderError>);

fn is_deadlock(e: &ProviderError) -> bool {
    e.message.contains("deadlock")
}

/// Point 2. A fetch that has claimed the instance and inserted its lease,
/// not yet committed, while a force delete of the instance starts: the
/// delete waits for the claim, so it sees the committed lease and removes
/// it; the fetched turn's ack then fails (its lease is gone) instead of
/// recreating the instance, an execution and a partial history.
async fn force_delete_racing_a_fetch_leaves_nothing_to_ack(mode: SqlMode) {
    with_schema(&format!("del_fetch_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        let instance = format!("raced-{mode}");
        started(&provider, &instance, true).await;

        // The fetch stops at its batch, on this lock of the queued
        // completion: it holds the claim and its lease, uncommitted.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.orchestrator_queue WHERE instance_id = $1 FOR UPDATE",
            &instance,
        )
        .await;
        let fetch = {
            let provider = provider.clone();
            tokio::spawn(async move {
                provider
                    .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                    .await
            })
        };
        let delete =
            force_delete_queued_behind(&schema, &provider, std::slice::from_ref(&instance), helper)
                .await;

        let (item, token, _) = fetch
            .await
            .expect("fetch task")
            .expect("fetch")
            .expect("the fetch claimed the instance");
        assert_eq!(item.instance, instance);
        let deleted = delete
            .await
            .expect("delete task")
            .expect("the force delete succeeds");
        assert_eq!(deleted.instances_deleted, 1);

        let ack = provider
            .ack_orchestration_item(
                &token,
                1,
                vec![event(&instance, 2)],
                vec![],
                vec![],
                metadata(),
                vec![],
            )
            .await;
        let left = rows_left(&schema.pool, &schema, &instance).await;
        assert!(
            ack.is_err(),
            "{mode}: the ack of a turn fetched before the force delete succeeded; rows left: {left:?}"
        );
        assert!(left.is_empty(), "{mode}: rows left after the delete: {left:?}");
    })
    .await;
}

in_both_modes!(force_delete_racing_a_fetch_leaves_nothing_to_ack: force_delete_racing_a_fetch_leaves_nothing_to_ack_procedures, force_delete_racing_a_fetch_leaves_nothing_to_ack_inline);

/// Point 2, the worker's side. An activity's completion committed while a
/// force delete of its instance waits for the activity row: the delete's
/// purge read the queue before the completion was there, and left it
/// behind for an instance that no longer exists (a message no fetch can
/// run). The delete now sweeps the queue again with a fresh snapshot.
async fn force_delete_racing_a_completion_leaves_no_message(mode: SqlMode) {
    with_schema(&format!("del_done_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        let instance = format!("working-{mode}");
        started(&provider, &instance, false).await;
        let token = fetched_activity(&provider, &instance).await;

        // The completion stops at deleting the activity row, on this lock.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.worker_queue WHERE instance_id = $1 FOR UPDATE",
            &instance,
        )
        .await;
        let done = spawn_completion(&provider, token, &instance);
        let delete =
            force_delete_queued_behind(&schema, &provider, std::slice::from_ref(&instance), helper)
                .await;

        done.await
            .expect("completion task")
            .expect("the completion, first in line, commits");
        let deleted = delete
            .await
            .expect("delete task")
            .expect("the force delete succeeds");
        let left = rows_left(&schema.pool, &schema, &instance).await;
        assert!(
            left.is_empty(),
            "{mode}: rows left after the delete: {left:?}"
        );
        // The completion (its activity was gone by the time the purge had it).
        assert_eq!(deleted.queue_messages_deleted, 1, "{mode}");
    })
    .await;
}

in_both_modes!(force_delete_racing_a_completion_leaves_no_message: force_delete_racing_a_completion_leaves_no_message_procedures, force_delete_racing_a_completion_leaves_no_message_inline);

/// Point 7. An ack that holds its lease and is deleting the consumed
/// messages, while a force delete of the instance starts: the ack goes on
/// to the instance row. In the old orders (ack: lease, messages, instance;
/// delete: instance, messages, lease) the delete held the instance row and
/// waited for the messages: a deadlock, one of them failed with 40P01. In
/// the one order the delete waits for the lease, so the ack commits and the
/// delete then removes everything.
async fn ack_racing_a_force_delete_does_not_deadlock(mode: SqlMode) {
    with_schema(&format!("del_ack_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        let instance = format!("acked-{mode}");
        started(&provider, &instance, true).await;
        let (item, token, _) = provider
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch the completion")
            .expect("the completion is ready");
        assert_eq!(item.instance, instance);

        // The ack stops at deleting the consumed message, on this lock,
        // holding its lease.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.orchestrator_queue WHERE instance_id = $1 FOR UPDATE",
            &instance,
        )
        .await;
        let ack = {
            let provider = provider.clone();
            let instance = instance.clone();
            tokio::spawn(async move {
                provider
                    .ack_orchestration_item(
                        &token,
                        1,
                        vec![event(&instance, 2)],
                        vec![],
                        vec![],
                        metadata(),
                        vec![],
                    )
                    .await
            })
        };
        let delete =
            force_delete_queued_behind(&schema, &provider, std::slice::from_ref(&instance), helper)
                .await;

        let acked = ack.await.expect("ack task");
        let deleted = delete.await.expect("delete task");
        assert_no_deadlock(mode, "ack", &acked, &deleted);
        acked.expect("the ack, first in line, commits");
        assert_eq!(deleted.expect("the delete").instances_deleted, 1);
        let left = rows_left(&schema.pool, &schema, &instance).await;
        assert!(
            left.is_empty(),
            "{mode}: rows left after the delete: {left:?}"
        );
    })
    .await;
}

in_both_modes!(ack_racing_a_force_delete_does_not_deadlock: ack_racing_a_force_delete_does_not_deadlock_procedures, ack_racing_a_force_delete_does_not_deadlock_inline);

/// Point 7. A bulk prune of two instances, pruning the older one, while a
/// force delete of both starts. The prune used to lock each instance row as
/// it came to it, oldest first, and the delete by id: with "a" newer than
/// "b", the prune held "b" and wanted "a", the delete held "a" and wanted
/// "b". Both now lock instance rows by id before anything else of theirs.
async fn bulk_prune_racing_a_force_delete_does_not_deadlock(mode: SqlMode) {
    with_schema(&format!("del_prune_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        let (a, b) = (format!("a-{mode}"), format!("b-{mode}"));
        for instance in [&b, &a] {
            started(&provider, instance, false).await;
        }
        // "b" is the older and has a finished execution 1 to prune under
        // its current execution 2.
        for (instance, created) in [(&b, 1), (&a, 2)] {
            sqlx::query(schema.statement(
                "UPDATE {{schema}}.instances SET created_at_ms = $2, current_execution_id = 2 \
                 WHERE instance_id = $1",
            ))
            .bind(instance)
            .bind(created as i64)
            .execute(&schema.pool)
            .await
            .expect("age the instance");
            sqlx::query(schema.statement(
                "WITH done AS (UPDATE {{schema}}.executions SET status = 'Completed', completed_at_ms = 1 \
                                WHERE instance_id = $1) \
                 INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms) \
                 VALUES ($1, 2, 'Running', 2)",
            ))
            .bind(instance)
            .execute(&schema.pool)
            .await
            .expect("a second execution");
        }

        // The prune stops at deleting b's execution 1, on this lock,
        // holding b's instance row.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.executions WHERE instance_id = $1 AND execution_id = 1 FOR UPDATE",
            &b,
        )
        .await;
        let prune = {
            let provider = provider.clone();
            let ids = vec![a.clone(), b.clone()];
            tokio::spawn(async move {
                provider
                    .prune_executions_bulk(
                        InstanceFilter {
                            instance_ids: Some(ids),
                            completed_before: None,
                            limit: None,
                        },
                        PruneOptions::default(),
                    )
                    .await
            })
        };
        let ids = [a.clone(), b.clone()];
        let delete = force_delete_queued_behind(&schema, &provider, &ids, helper).await;

        let pruned = prune.await.expect("prune task");
        let deleted = delete.await.expect("delete task");
        assert_no_deadlock(mode, "prune", &pruned, &deleted);
        assert_eq!(pruned.expect("the prune").executions_deleted, 2);
        assert_eq!(deleted.expect("the delete").instances_deleted, 2);
        assert_nothing_left(&schema, mode, &[&a, &b]).await;
    })
    .await;
}

in_both_modes!(bulk_prune_racing_a_force_delete_does_not_deadlock: bulk_prune_racing_a_force_delete_does_not_deadlock_procedures, bulk_prune_racing_a_force_delete_does_not_deadlock_inline);

/// Point 7. A bulk delete of two finished roots, deleting the older one,
/// while a delete of both starts. The bulk delete used to delete tree by
/// tree, holding the first tree's locks while it took the next one's: with
/// the second root first in the other delete's order (by id before the
/// claims, by claim key since), each held a root the other wanted. The bulk
/// delete now takes every tree's locks at once, in the one order.
async fn bulk_delete_racing_a_delete_does_not_deadlock(mode: SqlMode) {
    with_schema(&format!("del_bulk_{mode}"), |schema| async move {
        let provider = Arc::new(schema.provider_in(mode).await);
        // `second` comes before `first` by id and by claim key.
        let mut n = 0;
        let (first, second) = loop {
            let (first, second) = (format!("r1-{mode}-{n}"), format!("r0-{mode}-{n}"));
            let before: bool = sqlx::query_scalar("SELECT hashtext($1) < hashtext($2)")
                .bind(&second)
                .bind(&first)
                .fetch_one(&schema.pool)
                .await
                .expect("claim keys");
            if before {
                break (first, second);
            }
            n += 1;
        };
        for (instance, created) in [(&first, 1_i64), (&second, 2)] {
            started(&provider, instance, false).await;
            sqlx::query(schema.statement(
                "WITH done AS (UPDATE {{schema}}.executions SET status = 'Completed', completed_at_ms = 1 \
                                WHERE instance_id = $1) \
                 UPDATE {{schema}}.instances SET created_at_ms = $2 WHERE instance_id = $1",
            ))
            .bind(instance)
            .bind(created)
            .execute(&schema.pool)
            .await
            .expect("finish and age the instance");
        }

        // The bulk delete stops at the first root's history, on this lock,
        // holding that root's claim and instance row.
        let helper = hold_rows(
            &schema,
            "SELECT 1 FROM {{schema}}.history WHERE instance_id = $1 FOR UPDATE",
            &first,
        )
        .await;
        let ids = vec![first.clone(), second.clone()];
        let bulk = {
            let provider = provider.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                provider
                    .delete_instance_bulk(InstanceFilter {
                        instance_ids: Some(ids),
                        completed_before: None,
                        limit: None,
                    })
                    .await
            })
        };
        let delete = force_delete_queued_behind(&schema, &provider, &ids, helper).await;

        let bulked = bulk.await.expect("bulk task");
        let deleted = delete.await.expect("delete task");
        assert_no_deadlock(mode, "bulk", &bulked, &deleted);
        assert_eq!(bulked.expect("the bulk delete").instances_deleted, 2);
        deleted.expect("the delete");
        assert_nothing_left(&schema, mode, &[&first, &second]).await;
    })
    .await;
}

in_both_modes!(bulk_delete_racing_a_delete_does_not_deadlock: bulk_delete_racing_a_delete_does_not_deadlock_procedures, bulk_delete_racing_a_delete_does_not_deadlock_inline);

/// Point 7 under load, in a database of its own (so the server's deadlock
/// counter is this test's): three dispatchers turn six instances over
/// while one task force-deletes them all and another prunes them all, again
/// and again, for three seconds (and until three turns committed). No call
/// fails with a deadlock, and the server records none.
async fn turns_deletes_and_prunes_of_the_same_instances_never_deadlock(mode: SqlMode) {
    let _slot = Slot::acquire(Kind::Runtime);
    let scratch =
        ScratchDatabase::create(&format!("dx_delrace_{}_{mode}", std::process::id()), 8).await;
    let db_pool = scratch.pool.clone();
    let provider = Arc::new(
        PostgresProvider::from_pool_with(
            db_pool.clone(),
            PostgresOptions::default()
                .schema("public")
                .sql_mode(mode)
                .notifications(false),
        )
        .await
        .expect("provider"),
    );

    let ids: Vec<String> = (0..6).map(|i| format!("s-{i}")).collect();
    // Three seconds, and on until three turns have committed between the
    // deletes (a busy machine runs few turns; a minute at most).
    let begun = Instant::now();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = {
        let acked = acked.clone();
        move || {
            let elapsed = begun.elapsed();
            elapsed < Duration::from_secs(3)
                || (acked.load(std::sync::atomic::Ordering::SeqCst) < 3
                    && elapsed < Duration::from_secs(60))
        }
    };
    let mut tasks: Vec<JoinHandle<Vec<Outcome>>> = Vec::new();
    for d in 0..3 {
        let (provider, ids) = (provider.clone(), ids.clone());
        let (running, acked) = (running.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = d;
            while running() {
                n += 1;
                let fetched = provider
                    .fetch_orchestration_item(Duration::from_secs(5), Duration::ZERO, None)
                    .await;
                let (item, token) = match fetched {
                    Ok(Some((item, token, _))) => {
                        outcomes.push(("fetch", Ok(())));
                        (item, token)
                    }
                    Ok(None) => {
                        let queued = provider
                            .enqueue_for_orchestrator(start(&ids[n % ids.len()]), None)
                            .await;
                        outcomes.push(("enqueue", queued));
                        continue;
                    }
                    Err(e) => {
                        outcomes.push(("fetch", Err(e)));
                        continue;
                    }
                };
                let next = item.history.len() as u64 + 1;
                let acked_turn = provider
                    .ack_orchestration_item(
                        &token,
                        1,
                        vec![event(&item.instance, next)],
                        vec![],
                        vec![completion(&item.instance, next)],
                        metadata(),
                        vec![],
                    )
                    .await;
                if acked_turn.is_ok() {
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                outcomes.push(("ack", acked_turn));
            }
            outcomes
        }));
    }
    {
        let (provider, ids, running) = (provider.clone(), ids.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while running() {
                let deleted = provider.delete_instances_atomic(&ids, true).await;
                outcomes.push(("delete", deleted.map(|_| ())));
            }
            outcomes
        }));
    }
    {
        let (provider, ids, running) = (provider.clone(), ids.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while running() {
                let filter = InstanceFilter {
                    instance_ids: Some(ids.clone()),
                    completed_before: None,
                    limit: None,
                };
                let pruned = provider
                    .prune_executions_bulk(filter, PruneOptions::default())
                    .await;
                outcomes.push(("prune", pruned.map(|_| ())));
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("task"));
    }
    drop(provider);
    drop(db_pool);
    let deadlocks = scratch.finish().await;

    let count = |what: &str, ok: bool| {
        outcomes
            .iter()
            .filter(|(w, r)| *w == what && r.is_ok() == ok)
            .count()
    };
    let summary: Vec<String> = ["ack", "delete", "prune", "fetch", "enqueue"]
        .iter()
        .map(|w| format!("{w} {} ok / {} failed", count(w, true), count(w, false)))
        .collect();
    eprintln!("{mode}: {}", summary.join(", "));
    let deadlocked: Vec<String> = outcomes
        .iter()
        .filter_map(|(what, r)| match r {
            Err(e) if is_deadlock(e) => Some(format!("{what}: {}", e.message)),
            _ => None,
        })
        .collect();
    assert!(
        deadlocked.is_empty(),
        "{mode}: {} calls deadlocked, first {:?}; {}",
        deadlocked.len(),
        deadlocked.first(),
        summary.join(", ")
    );
    assert_eq!(deadlocks, 0, "{mode}: the server recorded deadlocks");
    for what in ["ack", "delete", "prune"] {
        assert!(
            count(what, true) > 0,
            "{mode}: no {what} succeeded: {summary:?}"
        );
    }
    // Only an ack whose lease a delete removed may fail, and only so.
    let other: Vec<String> = outcomes
        .iter()
        .filter_map(|(what, r)| match r {
            Err(e) if !(*what == "ack" && e.message.contains("Invalid lock token")) => {
                Some(format!("{what}: {}", e.message))
            }
            _ => None,
        })
        .collect();
    assert!(other.is_empty(), "{mode}: unexpected failures: {other:?}");
}

in_both_modes!(turns_deletes_and_prunes_of_the_same_instances_never_deadlock: turns_deletes_and_prunes_of_the_same_instances_never_deadlock_procedures, turns_deletes_and_prunes_of_the_same_instances_never_deadlock_inline; 4);
