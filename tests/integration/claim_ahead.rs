//! A worker's ack claims the activity its task fetches next: the ack of the
//! item a task fetched last runs that fetch's claim in the same call, and
//! the task's next fetch with the same parameters takes the item without a
//! statement. Anything else gets the item back first: another parameter
//! set, the window's end, a task that never comes back.
//!
//! Where a fetch was answered is shown by holding the worker queue locked:
//! a fetch sent to the server waits, one answered from the ack does not.

mod held_sessions;

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::Row;

use crate::fixtures;
use crate::sessions::{fetch_in_session, hold_session_row};
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
        let session = fixtures::session_activity("i1", 9, "s1");
        sqlx::query(schema.statement("DELETE FROM {{schema}}.worker_queue"))
            .execute(&schema.pool)
            .await
            .expect("empty the queue");
        provider.enqueue_for_worker(session).await.expect("enqueue");
        enqueue(&provider, 1).await;
        let p = provider.clone();
        tokio::spawn(async move {
            let (item, token, _) = fetch_in_session(&p, "w1", LEASE, Duration::ZERO)
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

/// The claim an ack makes takes no session's item and touches no session
/// row: a session another transaction holds does not hold up the ack (nor
/// could the ack fail, and its activity run again, because of it), and the
/// worker's session stays as it was (a claimed item given back would
/// otherwise leave the session taken). The session's item stays for a
/// fetch of its own.
async fn an_acks_claim_takes_no_session(mode: SqlMode) {
    with_schema(&format!("ahead_no_session_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 1).await;
        provider
            .enqueue_for_worker(fixtures::session_activity("i1", 9, "s1"))
            .await
            .expect("enqueue the session's activity");
        provider
            .enqueue_for_worker(fixtures::activity("i1", 3))
            .await
            .expect("enqueue");
        // Session s1: expired, so worker w1 may take it; held by another
        // transaction while the ack runs.
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
             VALUES ('s1', 'gone', 0, 0)",
        ))
        .execute(&schema.pool)
        .await
        .expect("an expired session");
        let holder = hold_session_row(&schema, "s1").await;

        let p = provider.clone();
        let (acked_tx, acked) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let dispatcher = tokio::spawn(async move {
            let fetch = |p: PostgresProvider| async move {
                fetch_in_session(&p, "w1", LEASE, Duration::ZERO)
                    .await
                    .expect("fetch")
                    .map(|(item, token, _)| (activity_id(&item), token))
            };
            let (first, token) = fetch(p.clone()).await.expect("the oldest");
            assert_eq!(first, 2);
            let ack = tokio::time::timeout(Duration::from_secs(10), p.ack_work_item(&token, None))
                .await;
            acked_tx.send(ack.map(|r| r.is_ok())).expect("report");
            wait.await.expect("go");
            let (second, _) = fetch(p.clone()).await.expect("the next");
            let (third, _) = fetch(p).await.expect("the session's");
            (second, third)
        });
        let acked = acked.await.expect("the ack's outcome");
        assert_eq!(
            acked,
            Ok(true),
            "{mode}: the ack commits at once, the session's row held elsewhere (Err: it waited 10 s)"
        );
        holder.rollback().await.expect("let the session go");
        let owner: String = sqlx::query_scalar(schema.statement(
            "SELECT owner_id FROM {{schema}}.sessions WHERE session_id = 's1'",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("the session");
        assert_eq!(owner, "gone", "{mode}: the ack's claim took no session");
        go.send(()).expect("go");
        let (second, third) = dispatcher.await.expect("the dispatcher");
        assert_eq!(
            (second, third),
            (3, 9),
            "{mode}: the claim took the next item without a session; the session's item followed"
        );
    })
    .await;
}
in_both_modes!(an_acks_claim_takes_no_session: an_acks_claim_takes_no_session_procedures, an_acks_claim_takes_no_session_inline);

/// What an ack reports is what it committed, when the claim it makes ahead
/// fails (here a trigger refuses every claim): both modes run the ack and
/// the claim in one transaction, so the ack fails as a whole, queues no
/// completion and leaves the activity leased to its worker (which gives it
/// back, or its lease runs out, and it runs again).
async fn a_failed_claim_ahead_reports_what_the_ack_committed(mode: SqlMode) {
    with_schema(&format!("ahead_claim_fails_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 2).await;
        schema
            .run_all(&[
                "CREATE FUNCTION {{schema}}.refuse_claims() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'claims refused'; END $$",
                "CREATE TRIGGER refuse_claims BEFORE UPDATE ON {{schema}}.worker_queue \
                 FOR EACH ROW WHEN (NEW.lock_token IS NOT NULL AND OLD.lock_token IS NULL) \
                 EXECUTE FUNCTION {{schema}}.refuse_claims()",
            ])
            .await;
        // The first claim happens before the trigger: fetched directly.
        sqlx::query(
            schema.statement("ALTER TABLE {{schema}}.worker_queue DISABLE TRIGGER refuse_claims"),
        )
        .execute(&schema.pool)
        .await
        .expect("disable");
        let p = provider.clone();
        let pool = schema.pool.clone();
        let enable = schema.sql("ALTER TABLE {{schema}}.worker_queue ENABLE TRIGGER refuse_claims");
        let outcome = tokio::spawn(async move {
            let (_, token, _) = fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("the first activity");
            sqlx::query(sqlx::AssertSqlSafe(enable))
                .execute(&pool)
                .await
                .expect("enable");
            p.ack_work_item(&token, Some(fixtures::completion("i1", 2)))
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .expect("task");
        let completions: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        let left = queue(&schema).await;
        assert!(outcome.is_err(), "{mode}: one transaction, failed");
        assert_eq!(completions, 0, "{mode}: nothing committed");
        assert_eq!(
            left,
            vec![(2, true, 1), (3, false, 0)],
            "{mode}: still leased"
        );
    })
    .await;
}
/// The ack that claims commits as durably as the ack alone, in both modes:
/// the claim's statement lets a fetch's transaction commit without waiting
/// for its WAL flush, and the transaction it shares with the ack must not
/// keep that. A deferred trigger on the completion's insert records the
/// transaction's `synchronous_commit` as it commits, on connections that
/// start with it on (the test server may run with it off).
async fn the_ack_that_claims_keeps_its_commit_durable(mode: SqlMode) {
    with_schema(&format!("ahead_durable_{mode}"), |schema| async move {
        let connect = PostgresOptions::default()
            .connect_options(support::database_url())
            .expect("options")
            .options([("synchronous_commit", "on")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .expect("pool");
        let provider = support::provider_with_options(
            &pool,
            &schema.name,
            mode,
            PostgresOptions::default().prefetch_window(LONG_WINDOW),
        )
        .await;
        schema
            .run_all(&[
                "CREATE TABLE {{schema}}.commit_modes (mode text)",
                "CREATE FUNCTION {{schema}}.note_commit_mode() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN INSERT INTO {{schema}}.commit_modes \
                 VALUES (pg_catalog.current_setting('synchronous_commit')); RETURN NULL; END $$",
                "CREATE CONSTRAINT TRIGGER note_commit_mode AFTER INSERT ON {{schema}}.orchestrator_queue \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
                 EXECUTE FUNCTION {{schema}}.note_commit_mode()",
            ])
            .await;
        enqueue(&provider, 2).await;
        // A task of its own: the claim is kept for the task's next fetch.
        let p = provider.clone();
        tokio::spawn(async move {
            let (_, token, _) = fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("the first activity");
            p.ack_work_item(&token, Some(fixtures::completion("i1", 2)))
                .await
                .expect("ack and claim");
        })
        .await
        .expect("task");
        assert_eq!(
            queue(&schema).await,
            vec![(3, true, 1)],
            "{mode}: the ack claimed the next activity"
        );
        let modes: Vec<String> = sqlx::query_scalar(
            schema.statement("SELECT mode FROM {{schema}}.commit_modes"),
        )
        .fetch_all(&schema.pool)
        .await
        .expect("read");
        assert_eq!(modes, vec!["on".to_string()], "{mode}: the ack's commit waits for its flush");
        drop(provider);
        pool.close().await;
    })
    .await;
}
in_both_modes!(the_ack_that_claims_keeps_its_commit_durable: the_ack_that_claims_keeps_its_commit_durable_procedures, the_ack_that_claims_keeps_its_commit_durable_inline);

in_both_modes!(a_failed_claim_ahead_reports_what_the_ack_committed: a_failed_claim_ahead_reports_what_the_ack_committed_procedures, a_failed_claim_ahead_reports_what_the_ack_committed_inline);

/// An ack's claim leaves sessions out, so finding nothing it does not tell
/// the task's long-polling fetch the queue is quiet (until a delayed item's
/// time): that fetch still sends its statement, and takes the session's
/// item waiting there.
async fn a_claim_without_sessions_does_not_quiet_the_long_poll(mode: SqlMode) {
    with_schema(&format!("ahead_not_quiet_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        // A delayed item: the claim's empty answer carries its due time.
        provider
            .enqueue_for_worker(fixtures::activity("i1", 3))
            .await
            .expect("enqueue");
        let (_, token, _) = fetch(&provider, &TagFilter::DefaultOnly)
            .await
            .expect("the item to delay");
        provider
            .abandon_work_item(&token, Some(Duration::from_secs(600)), true)
            .await
            .expect("delay it");
        enqueue(&provider, 1).await;
        provider
            .enqueue_for_worker(fixtures::session_activity("i1", 9, "s1"))
            .await
            .expect("enqueue the session's activity");
        // Quiet notes are kept only while the listener is subscribed.
        support::eventually("the listener subscribed", || async {
            provider.notification_stats().is_some_and(|s| s.subscribed)
        })
        .await;
        let skips = || provider.notification_stats().map_or(0, |s| s.quiet_skips);
        let skipped_before = skips();
        let p = provider.clone();
        let next = tokio::spawn(async move {
            let poll = Duration::from_secs(60);
            let (first, token, _) = fetch_in_session(&p, "w1", LEASE, poll)
                .await
                .expect("fetch")
                .expect("the oldest");
            assert_eq!(activity_id(&first), 2);
            p.ack_work_item(&token, None).await.expect("ack");
            fetch_in_session(&p, "w1", LEASE, poll)
                .await
                .expect("fetch")
                .map(|(item, ..)| activity_id(&item))
        })
        .await
        .expect("task");
        assert_eq!(next, Some(9), "{mode}: the session's item");
        assert_eq!(
            skips(),
            skipped_before,
            "{mode}: the fetch after the ack sent its statement (no quiet note from the claim)"
        );
    })
    .await;
}
in_both_modes!(a_claim_without_sessions_does_not_quiet_the_long_poll: a_claim_without_sessions_does_not_quiet_the_long_poll_procedures, a_claim_without_sessions_does_not_quiet_the_long_poll_inline);

/// An ack that would claim its task's next activity meets its queue
/// locked (an operator's `LOCK TABLE`): it gives each wait up after a
/// second and the provider tries again until the lock is gone, then it
/// commits. Procedure mode acks and claims in one transaction, so a lock
/// timeout rolls both back; the retry is a plain ack. Nothing is acked
/// twice or lost: the completion is queued once, and the next activity is
/// claimed by nobody until the next fetch, which takes it with one attempt.
async fn an_ack_that_claims_ahead_waits_out_its_locked_queue(mode: SqlMode) {
    with_schema(&format!("ahead_locked_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let provider = provider(&schema, mode, options).await;
        enqueue(&provider, 2).await;
        let (fetched_tx, fetched) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let p = provider.clone();
        let dispatcher = tokio::spawn(async move {
            let (_, token, _) = fetch(&p, &TagFilter::DefaultOnly)
                .await
                .expect("the first activity");
            fetched_tx.send(()).expect("report");
            wait.await.expect("go");
            p.ack_work_item(&token, Some(fixtures::completion("i1", 2)))
                .await
        });
        fetched.await.expect("fetched");
        let holder = support::hold_table(&schema, "worker_queue", "ACCESS EXCLUSIVE").await;
        go.send(()).expect("go");
        // Two waits given up, a second each, and the ack still at it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !dispatcher.is_finished(),
            "{mode}: the ack ended while its queue was locked"
        );
        support::release_table(holder).await;
        let acked = tokio::time::timeout(Duration::from_secs(20), dispatcher).await;
        assert!(matches!(acked, Ok(Ok(Ok(())))), "{mode}: {acked:?}");
        let completions: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(completions, 1, "{mode}: the completion, once");
        assert_eq!(queue(&schema).await, vec![(3, false, 0)], "{mode}");
        let (next, _, attempts) = fetch(&provider, &TagFilter::DefaultOnly)
            .await
            .expect("the next activity");
        assert_eq!((activity_id(&next), attempts), (3, 1), "{mode}");
        assert!(fetch(&provider, &TagFilter::DefaultOnly).await.is_none());
    })
    .await;
}
in_both_modes!(an_ack_that_claims_ahead_waits_out_its_locked_queue: an_ack_that_claims_ahead_waits_out_its_locked_queue_procedures, an_ack_that_claims_ahead_waits_out_its_locked_queue_inline);
