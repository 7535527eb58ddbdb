//! A worker's ack claims the activity its task fetches next: the ack of the
//! item a task fetched last runs that fetch's claim in the same call, and
//! the task's next fetch with the same parameters takes the item without a
//! statement. Anything else gets the item back first: another parameter
//! set, the window's end, a task that never comes back.
//!
//! Where a fetch was answered is shown by holding the worker queue locked:
//! a fetch sent to the server waits, one answered from the ack does not.

use std::time::Duration;

use duroxide::providers::{Provider, SessionFetchConfig, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::Row;

use crate::fixtures;
use crate::support::{self, TestSchema, in_both_modes, with_schema};

const LEASE: Duration = Duration::from_secs(60);

/// A window no test run comes near.
const LONG_WINDOW: Duration = Duration::from_secs(600);

async fn provider(
    schema: &TestSchema,
    mode: SqlMode,
    options: PostgresOptions,
) -> PostgresProvider {
    support::provider_with_options(&schema.pool, &schema.name, mode, options).await
}

/// `n` activities of instance `i1` (scheduling ids 2..), enqueued in order.
async fn enqueue(provider: &PostgresProvider, n: u64) {
    for id in 2..2 + n {
        provider
            .enqueue_for_worker(fixtures::activity("i1", id))
            .await
            .expect("enqueue");
    }
}

/// Each queued activity's id (its scheduling event), whether it is locked,
/// and its attempt count, oldest first.
async fn queue(schema: &TestSchema) -> Vec<(u64, bool, i32)> {
    sqlx::query(schema.statement(
        "SELECT work_item, lock_token IS NOT NULL AS locked, attempt_count \
           FROM {{schema}}.worker_queue ORDER BY id",
    ))
    .fetch_all(&schema.pool)
    .await
    .expect("read the queue")
    .into_iter()
    .map(|row| {
        let json: String = row.get("work_item");
        let item: WorkItem = serde_json::from_str(&json).expect("a work item");
        let WorkItem::ActivityExecute { id, .. } = item else {
            panic!("not an activity: {item:?}");
        };
        (id, row.get("locked"), row.get("attempt_count"))
    })
    .collect()
}

fn activity_id(item: &WorkItem) -> u64 {
    match item {
        WorkItem::ActivityExecute { id, .. } => *id,
        other => panic!("not an activity: {other:?}"),
    }
}

/// Fetches with `filter` and no session, as duroxide's dispatcher does.
async fn fetch(provider: &PostgresProvider, filter: &TagFilter) -> Option<(WorkItem, String, u32)> {
    provider
        .fetch_work_item(LEASE, Duration::ZERO, None, filter)
        .await
        .expect("fetch")
}

/// Fetches the next activity (no session, untagged) and acks it, in the
/// current task: what the dispatcher does before its next fetch.
async fn fetch_and_ack(provider: &PostgresProvider) {
    let (_, token, _) = fetch(provider, &TagFilter::DefaultOnly)
        .await
        .expect("an activity");
    provider.ack_work_item(&token, None).await.expect("ack");
}

/// Fetches until an activity is claimable, for up to 20 s (`never`: the
/// failure's message).
async fn until_claimable(provider: &PostgresProvider, never: &str) -> (WorkItem, String, u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(next) = fetch(provider, &TagFilter::DefaultOnly).await {
            return next;
        }
        assert!(std::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dispatcher's loop: the ack of the item a task fetched claims its
/// next, which the task's next fetch takes without a statement (it does
/// not wait for the locked queue), with its attempt counted once. The
/// claim is the oldest item, as the fetch would have taken.
async fn the_next_fetch_takes_what_the_ack_claimed(mode: SqlMode) {
    with_schema(&format!("ahead_hit_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 3).await;
        let (acked_tx, acked) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let p = provider.clone();
        let dispatcher = tokio::spawn(async move {
            let (first, token, _) = fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("the first activity");
            p.ack_work_item(&token, None).await.expect("ack");
            acked_tx.send(first).expect("report");
            wait.await.expect("go");
            fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("the second activity")
        });
        let first = acked.await.expect("acked");
        assert_eq!(activity_id(&first), 2);
        assert_eq!(
            queue(&schema).await,
            vec![(3, true, 1), (4, false, 0)],
            "the ack claimed the oldest item left"
        );
        // Nothing can read the queue now; the next fetch still returns.
        let holder = support::hold_table(&schema, "worker_queue", "ACCESS EXCLUSIVE").await;
        go.send(()).expect("go");
        let next = tokio::time::timeout(Duration::from_secs(20), dispatcher)
            .await
            .expect("the fetch after the ack waited for the locked queue")
            .expect("dispatcher task");
        support::release_table(holder).await;
        assert_eq!(activity_id(&next.0), 3);
        assert_eq!(next.2, 1, "one attempt");
        assert_eq!(queue(&schema).await, vec![(3, true, 1), (4, false, 0)]);
    })
    .await;
}
in_both_modes!(the_next_fetch_takes_what_the_ack_claimed: the_next_fetch_takes_what_the_ack_claimed_procedures, the_next_fetch_takes_what_the_ack_claimed_inline);

/// A fetch with other parameters (another lease, another tag filter) gets
/// the claimed item back first: visible again, its attempt not counted, and
/// then fetched as usual.
async fn other_parameters_give_it_back(mode: SqlMode) {
    with_schema(&format!("ahead_other_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 2).await;
        let provider2 = provider.clone();
        let next = tokio::spawn(async move {
            fetch_and_ack(&provider2).await;
            provider2
                .fetch_work_item(
                    Duration::from_secs(30),
                    Duration::ZERO,
                    None,
                    &TagFilter::Any,
                )
                .await
                .expect("fetch")
                .expect("the second activity")
        })
        .await
        .expect("task");
        assert_eq!(activity_id(&next.0), 3);
        assert_eq!(next.2, 1, "given back, then claimed once more: one attempt");
        assert_eq!(queue(&schema).await, vec![(3, true, 1)]);
    })
    .await;
}
in_both_modes!(other_parameters_give_it_back: other_parameters_give_it_back_procedures, other_parameters_give_it_back_inline);

/// A task that does not fetch again (a dispatcher shutting down) leaves
/// nothing leased: the claimed item is given back when the window ends,
/// and another task claims it with one attempt. The window (2 s) is long
/// enough for the queue to be read while the item is still claimed on a
/// machine running the whole suite (with 200 ms it once ended first).
async fn an_item_nobody_takes_goes_back_when_the_window_ends(mode: SqlMode) {
    with_schema(&format!("ahead_timer_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(Duration::from_secs(2));
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 2).await;
        let p = provider.clone();
        tokio::spawn(async move {
            fetch_and_ack(&p).await;
        })
        .await
        .expect("task");
        assert_eq!(
            queue(&schema).await,
            vec![(3, true, 1)],
            "claimed by the ack"
        );
        // Another task: nothing until the window ends, then the item.
        let next = until_claimable(&provider, "never given back").await;
        assert_eq!(activity_id(&next.0), 3);
        assert_eq!(next.2, 1, "the given-back claim is not an attempt");
    })
    .await;
}
in_both_modes!(an_item_nobody_takes_goes_back_when_the_window_ends: an_item_nobody_takes_goes_back_when_the_window_ends_procedures, an_item_nobody_takes_goes_back_when_the_window_ends_inline);

/// What an ack claims nothing for: an item another task fetched, an item
/// of a session (its ack touches the session's row), a token the ack does
/// not find, and a provider with the claim switched off.
async fn only_the_fetching_tasks_ack_of_a_sessionless_item_claims(mode: SqlMode) {
    with_schema(&format!("ahead_none_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 2).await;

        // Fetched here, acked from another task.
        let (_, token, _) = fetch(&provider, &TagFilter::DefaultOnly)
            .await
            .expect("an activity");
        let p = provider.clone();
        tokio::spawn(async move { p.ack_work_item(&token, None).await.expect("ack") })
            .await
            .expect("task");
        assert_eq!(queue(&schema).await, vec![(3, false, 0)]);

        // A token the ack does not find: an error, and nothing claimed.
        let p = provider.clone();
        tokio::spawn(async move {
            let (_, token, _) = fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("an activity");
            p.abandon_work_item(&token, None, true)
                .await
                .expect("abandon");
            assert!(
                p.ack_work_item(&token, None).await.is_err(),
                "a released token"
            );
        })
        .await
        .expect("task");
        assert_eq!(queue(&schema).await, vec![(3, false, 0)]);

        // A session's item.
        let session = WorkItem::ActivityExecute {
            instance: "i1".into(),
            execution_id: 1,
            id: 9,
            name: "Work".into(),
            input: String::new(),
            session_id: Some("s1".into()),
            tag: None,
        };
        sqlx::query(schema.statement("DELETE FROM {{schema}}.worker_queue"))
            .execute(&schema.pool)
            .await
            .expect("empty the queue");
        provider.enqueue_for_worker(session).await.expect("enqueue");
        enqueue(&provider, 1).await;
        let p = provider.clone();
        tokio::spawn(async move {
            let config = SessionFetchConfig {
                owner_id: "w1".into(),
                lock_timeout: LEASE,
            };
            let (item, token, _) = p
                .fetch_work_item(
                    LEASE,
                    Duration::ZERO,
                    Some(&config),
                    &TagFilter::DefaultOnly,
                )
                .await
                .expect("fetch")
                .expect("the session's activity");
            assert_eq!(activity_id(&item), 9);
            p.ack_work_item(&token, None).await.expect("ack");
        })
        .await
        .expect("task");
        assert_eq!(queue(&schema).await, vec![(2, false, 0)]);

        // Switched off.
        let off = provider_named(&schema, mode, false).await;
        enqueue(&off, 1).await;
        let p = off.clone();
        tokio::spawn(async move {
            fetch_and_ack(&p).await;
        })
        .await
        .expect("task");
        assert_eq!(queue(&schema).await, vec![(2, false, 0)]);
    })
    .await;
}
in_both_modes!(only_the_fetching_tasks_ack_of_a_sessionless_item_claims: only_the_fetching_tasks_ack_of_a_sessionless_item_claims_procedures, only_the_fetching_tasks_ack_of_a_sessionless_item_claims_inline);

async fn provider_named(schema: &TestSchema, mode: SqlMode, claim_ahead: bool) -> PostgresProvider {
    provider(
        schema,
        mode,
        PostgresOptions::default()
            .prefetch_window(LONG_WINDOW)
            .claim_ahead(claim_ahead),
    )
    .await
}

/// The claim must not make the ack lazy: `fetch_work_item` lets its own
/// transaction commit without waiting for the WAL flush, and the combined
/// procedure puts the transaction's setting back after it, so the ack's
/// commit is as durable as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_that_claims_commits_durably() {
    with_schema("ahead_durable", |schema| async move {
        let provider = schema.provider().await;
        enqueue(&provider, 2).await;
        let (_, token, _) = fetch(&provider, &TagFilter::DefaultOnly)
            .await
            .expect("an activity");
        let mut tx = schema.pool.begin().await.expect("begin");
        // The test server may run with it off.
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await
            .expect("set");
        let row = sqlx::query(schema.statement(
            "SELECT acked, lock_token, pg_catalog.current_setting('synchronous_commit') AS sync \
               FROM {{schema}}.ack_work_item_and_claim{{suffix}}($1, NULL, NULL, NULL, 60000, \
                    'default', '{}', NULL, NULL, false, NULL, NULL, NULL)",
        ))
        .bind(&token)
        .fetch_one(&mut *tx)
        .await
        .expect("ack and claim");
        let lazy_alone: String = sqlx::query_scalar(schema.statement(
            "SELECT pg_catalog.current_setting('synchronous_commit') \
               FROM {{schema}}.fetch_work_item{{suffix}}(60000, 'default', '{}', NULL, NULL, \
                    false, NULL, NULL) LIMIT 1",
        ))
        .fetch_one(&mut *tx)
        .await
        .expect("fetch alone");
        tx.rollback().await.expect("rollback");
        assert!(row.get::<bool, _>("acked"));
        assert!(
            row.get::<Option<String>, _>("lock_token").is_some(),
            "claimed the next"
        );
        assert_eq!(
            row.get::<String, _>("sync"),
            "on",
            "the ack's commit waits for its flush"
        );
        assert_eq!(lazy_alone, "off", "the fetch alone commits lazily");
    })
    .await;
}

/// Milliseconds until the lease of the queue's only locked item ends.
async fn lease_left_ms(schema: &TestSchema) -> i64 {
    sqlx::query_scalar(schema.statement(
        "SELECT locked_until_ms - {{now_ms}} FROM {{schema}}.worker_queue \
          WHERE lock_token IS NOT NULL",
    ))
    .fetch_one(&schema.pool)
    .await
    .expect("one locked item")
}

/// A runtime shut down right after an ack (then the process's end) runs no
/// give-back timer: the timer's task is dropped with the tokio runtime,
/// and that gives the claimed item back at once, unattempted. The claim
/// took the fetch's whole lease until then.
async fn a_runtime_that_ends_gives_its_claim_back(mode: SqlMode) {
    with_schema(&format!("ahead_gone_{mode}"), |schema| async move {
        let name = schema.name.clone();
        let (acked_tx, acked) = std::sync::mpsc::channel();
        let (end_tx, end) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let pool = support::pool(2).await;
                let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
                let p = support::provider_with_options(&pool, &name, mode, options).await;
                enqueue(&p, 2).await;
                tokio::spawn(async move { fetch_and_ack(&p).await })
                    .await
                    .expect("task");
            });
            acked_tx.send(()).expect("report");
            end.recv().expect("end");
            // The runtime ends, and the give-back timer with it.
            drop(rt);
        });
        acked.recv().expect("acked");
        assert_eq!(
            queue(&schema).await,
            vec![(3, true, 1)],
            "claimed by the ack"
        );
        let left = lease_left_ms(&schema).await;
        assert!(
            left > 50_000,
            "the fetch's whole 60 s lease: {left} ms left"
        );
        end_tx.send(()).expect("end");
        other.join().expect("the other runtime");
        assert_eq!(
            queue(&schema).await,
            vec![(3, false, 0)],
            "given back, its attempt not counted"
        );
    })
    .await;
}
in_both_modes!(a_runtime_that_ends_gives_its_claim_back: a_runtime_that_ends_gives_its_claim_back_procedures, a_runtime_that_ends_gives_its_claim_back_inline);
