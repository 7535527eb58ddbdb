//! Items this build cannot decode: a newer duroxide's work item or message
//! during a rolling upgrade, or a row written by hand. None is lost and
//! none holds up the items behind it. An activity is given back, its
//! attempt not counted, out of sight for a second (not claimed over and
//! over by workers that cannot read it), then for any worker to take. A
//! turn with a message that does not decode is neither run without it nor
//! counted toward poisoning its instance: the fetch fails and the turn is
//! set aside the same way, until a dispatcher that can read the message
//! runs it.

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, ProviderError, TagFilter, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_postgres::tenants::{self, QueueKind};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SchemaName, SqlMode, sqlstate};

use crate::fixtures::{self, claim_and_ack_turn, start};
use crate::support::{self, Kind, Slot, TestSchema, in_both_modes, with_schema};

const LOCK: Duration = Duration::from_secs(30);

/// What no duroxide release decodes as a work item.
const UNREADABLE: &str = r#"{"ActivityFromTheFuture":{}}"#;

async fn provider(schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    support::provider_with_options(&schema.pool, &schema.name, mode, PostgresOptions::default())
        .await
}

/// Rewrites the `nth` (from 1, oldest first) row of `table` to
/// [`UNREADABLE`], returning what it held.
async fn spoil(schema: &TestSchema, table: &str, nth: i64) -> String {
    let readable: String = sqlx::query_scalar(schema.statement(&format!(
        "SELECT work_item FROM {{{{schema}}}}.{table} ORDER BY id OFFSET $1 LIMIT 1"
    )))
    .bind(nth - 1)
    .fetch_one(&schema.pool)
    .await
    .unwrap_or_else(|e| panic!("read row {nth} of {table}: {e}"));
    mend(schema, table, UNREADABLE, &readable).await;
    readable
}

/// Puts `to` back where `from` is in `table`, asserting one row changed.
async fn mend(schema: &TestSchema, table: &str, to: &str, from: &str) {
    let changed = sqlx::query(schema.statement(&format!(
        "UPDATE {{{{schema}}}}.{table} SET work_item = $1 WHERE work_item = $2"
    )))
    .bind(to)
    .bind(from)
    .execute(&schema.pool)
    .await
    .unwrap_or_else(|e| panic!("rewrite a row of {table}: {e}"))
    .rows_affected();
    assert_eq!(changed, 1, "rows of {table} that held {from}");
}

/// Enqueues activities `ids` of `instance`, in order.
async fn enqueue_activities(p: &PostgresProvider, mode: SqlMode, instance: &str, ids: &[u64]) {
    for &id in ids {
        p.enqueue_for_worker(fixtures::activity(instance, id))
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
    }
}

/// A runtime whose one orchestration, registered as `name`, waits for an
/// event `Go` and returns its data; polling often, poisoning after
/// `max_attempts`. Returned with a client on the same provider.
async fn waiting_runtime(
    p: &PostgresProvider,
    name: &str,
    max_attempts: u32,
) -> (Arc<Runtime>, Client) {
    let orchestrations =
        OrchestrationRegistry::builder()
            .register(
                name,
                |ctx: OrchestrationContext, _input: String| async move {
                    Ok(ctx.schedule_wait("Go").await)
                },
            )
            .build();
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        max_attempts,
        ..Default::default()
    };
    let store: Arc<dyn Provider> = Arc::new(p.clone());
    let rt = Runtime::start_with_options(
        store.clone(),
        ActivityRegistry::builder().build(),
        orchestrations,
        options,
    )
    .await;
    (rt, Client::new(store))
}

async fn fetch_work(
    p: &PostgresProvider,
) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
    p.fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
}

in_both_modes!(an_activity_that_does_not_decode_is_given_back_for_a_worker_that_can:
    an_activity_that_does_not_decode_is_given_back_for_a_worker_that_can_procedures,
    an_activity_that_does_not_decode_is_given_back_for_a_worker_that_can_inline);

/// An activity this build cannot decode fails the fetch that claimed it, as
/// in duroxide's SQLite provider, whose claim then rolls back. It must not
/// stay leased to a worker that cannot run it: a worker that can read it
/// (here the same row, mended) claims it long before the lease ends, on
/// its first attempt.
async fn an_activity_that_does_not_decode_is_given_back_for_a_worker_that_can(mode: SqlMode) {
    with_schema(&format!("unread_activity_{mode}"), |schema| async move {
        let p = provider(&schema, mode).await;
        enqueue_activities(&p, mode, "future", &[1]).await;
        let readable = spoil(&schema, "worker_queue", 1).await;
        let fetched = fetch_work(&p).await;
        assert!(
            fetched.is_err(),
            "{mode}: an item that does not decode was delivered: {fetched:?}"
        );

        mend(&schema, "worker_queue", &readable, UNREADABLE).await;
        let deadline = std::time::Instant::now() + LOCK / 3;
        let (item, _, attempts) = loop {
            if let Some(claimed) = fetch_work(&p)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            {
                break claimed;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: the item is still leased to the failed fetch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(item, fixtures::activity("future", 1), "{mode}");
        assert_eq!(
            attempts, 1,
            "{mode}: the failed fetch's attempt not counted"
        );
    })
    .await;
}

in_both_modes!(an_activity_that_does_not_decode_is_not_claimed_again_at_once:
    an_activity_that_does_not_decode_is_not_claimed_again_at_once_procedures,
    an_activity_that_does_not_decode_is_not_claimed_again_at_once_inline);

/// The runtime's worker retries a failed fetch after 100 ms, each of its
/// slots, in every process. An item no worker can read, given back at once,
/// was claimed and given back again by each of them ten times a second:
/// two commits and a WARN each time, for as long as the row stays, on the
/// server every tenant shares. It is set aside for a second instead, then
/// claimable again (and reported again), so a newer worker still takes it
/// within a second.
async fn an_activity_that_does_not_decode_is_not_claimed_again_at_once(mode: SqlMode) {
    with_schema(&format!("unread_again_{mode}"), |schema| async move {
        let p = provider(&schema, mode).await;
        enqueue_activities(&p, mode, "i1", &[1]).await;
        spoil(&schema, "worker_queue", 1).await;
        assert_eq!(p.admission_stats().unreadable_set_aside, 0, "{mode}");
        assert!(fetch_work(&p).await.is_err(), "{mode}: the unreadable item");
        assert_eq!(
            p.admission_stats().unreadable_set_aside,
            1,
            "{mode}: the set-aside counted"
        );
        let again = fetch_work(&p).await;
        assert!(
            matches!(again, Ok(None)),
            "{mode}: claimed again at once: {again:?}"
        );
        assert_eq!(p.admission_stats().unreadable_set_aside, 1, "{mode}");
        let deadline = std::time::Instant::now() + LOCK / 3;
        while fetch_work(&p).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: the item never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

in_both_modes!(an_activity_that_does_not_decode_does_not_hold_up_the_rest:
    an_activity_that_does_not_decode_does_not_hold_up_the_rest_procedures,
    an_activity_that_does_not_decode_does_not_hold_up_the_rest_inline);

/// An activity nobody can decode at the head of the queue must not become
/// every fetch's claim: the runtime's worker retries a failed fetch after
/// 100 ms, and would claim the same item again, forever, while the queue
/// behind it waits. The next fetch takes the next item.
async fn an_activity_that_does_not_decode_does_not_hold_up_the_rest(mode: SqlMode) {
    with_schema(&format!("unread_head_{mode}"), |schema| async move {
        let p = provider(&schema, mode).await;
        enqueue_activities(&p, mode, "i1", &[1, 2]).await;
        spoil(&schema, "worker_queue", 1).await;
        assert!(fetch_work(&p).await.is_err(), "{mode}: the unreadable item");
        let next = fetch_work(&p)
            .await
            .unwrap_or_else(|e| panic!("{mode}: the fetch after it claimed it again: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: nothing claimed"));
        assert_eq!(next.0, fixtures::activity("i1", 2), "{mode}");
    })
    .await;
}

in_both_modes!(an_activity_claimed_ahead_that_does_not_decode_does_not_hold_up_the_rest:
    an_activity_claimed_ahead_that_does_not_decode_does_not_hold_up_the_rest_procedures,
    an_activity_claimed_ahead_that_does_not_decode_does_not_hold_up_the_rest_inline);

/// The same for the activity an ack claims for its task's next fetch
/// (`claim_ahead`): the unreadable claim is given back, and the task's
/// next fetch takes the item behind it, not the unreadable one again.
async fn an_activity_claimed_ahead_that_does_not_decode_does_not_hold_up_the_rest(mode: SqlMode) {
    with_schema(&format!("unread_ahead_{mode}"), |schema| async move {
        let p = provider(&schema, mode).await;
        enqueue_activities(&p, mode, "i1", &[1, 2, 3]).await;
        spoil(&schema, "worker_queue", 2).await;
        let stats = p.clone();
        let dispatcher = tokio::spawn(async move {
            let (first, token, _) = fetch_work(&p)
                .await
                .expect("fetch")
                .expect("the first activity");
            // Claims the second, which does not decode.
            p.ack_work_item(&token, None).await.expect("ack");
            (first, fetch_work(&p).await)
        });
        let (first, next) = dispatcher.await.expect("dispatcher task");
        assert_eq!(first, fixtures::activity("i1", 1), "{mode}");
        let next = next
            .unwrap_or_else(|e| panic!("{mode}: the fetch after the ack claimed it again: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: nothing claimed"));
        assert_eq!(next.0, fixtures::activity("i1", 3), "{mode}");
        assert_eq!(
            stats.admission_stats().unreadable_set_aside,
            1,
            "{mode}: the claim made ahead set aside, and counted"
        );
    })
    .await;
}

fn raised(instance: &str, data: &str) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: "Go".to_string(),
        data: data.to_string(),
    }
}

in_both_modes!(a_message_that_does_not_decode_is_set_aside_with_its_turn:
    a_message_that_does_not_decode_is_set_aside_with_its_turn_procedures,
    a_message_that_does_not_decode_is_set_aside_with_its_turn_inline);

/// A turn with a message this build cannot decode is not run without it
/// (its ack would consume the message unseen), and does not count toward
/// poisoning the instance (during a rolling upgrade most dispatchers may be
/// older ones, and the instance must not fail for it): the fetch fails
/// naming the message, and the turn is set aside for a second, its attempt
/// not counted, the other instances served meanwhile. A build that can
/// read it (here the row, mended) then gets the whole batch, first attempt.
async fn a_message_that_does_not_decode_is_set_aside_with_its_turn(mode: SqlMode) {
    with_schema(&format!("unread_message_{mode}"), |schema| async move {
        let p = provider(&schema, mode).await;
        for instance in ["i1", "i2"] {
            p.enqueue_for_orchestrator(start(instance), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: start: {e:?}"));
            claim_and_ack_turn(&p, LOCK).await;
        }
        for data in ["first", "second"] {
            p.enqueue_for_orchestrator(raised("i1", data), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        }
        p.enqueue_for_orchestrator(raised("i2", "other"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        let readable = spoil(&schema, "orchestrator_queue", 2).await;

        let fetch = || p.fetch_orchestration_item(LOCK, Duration::ZERO, None);
        let refused = fetch().await;
        let Err(error) = &refused else {
            panic!("{mode}: a turn without its message: {refused:?}");
        };
        assert!(
            error
                .message
                .starts_with("cannot decode message 2 of 2 of the turn: "),
            "{mode}: {error:?}"
        );
        assert_eq!(
            p.admission_stats().unreadable_set_aside,
            1,
            "{mode}: the set-aside counted"
        );
        let (item, token, _) = fetch()
            .await
            .unwrap_or_else(|e| panic!("{mode}: the turn was claimed again: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: the other instance was not served"));
        assert_eq!(item.instance, "i2", "{mode}");
        p.abandon_orchestration_item(&token, None, true)
            .await
            .unwrap_or_else(|e| panic!("{mode}: abandon: {e:?}"));
        // Back in a second: the other instance stays claimed meanwhile.
        let (item, token, _) = fetch()
            .await
            .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: nothing claimed"));
        assert_eq!(item.instance, "i2", "{mode}");

        mend(&schema, "orchestrator_queue", &readable, UNREADABLE).await;
        let deadline = std::time::Instant::now() + LOCK / 3;
        let (item, _, attempts) = loop {
            if let Some(claimed) = fetch()
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            {
                break claimed;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: the turn never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            item.messages,
            vec![raised("i1", "first"), raised("i1", "second")],
            "{mode}"
        );
        assert_eq!(item.history_error, None, "{mode}");
        assert_eq!(
            attempts, 1,
            "{mode}: the refused turn's attempt not counted"
        );
        drop(token);
    })
    .await;
}

in_both_modes!(a_runtime_waits_for_a_message_it_cannot_read:
    a_runtime_waits_for_a_message_it_cannot_read_procedures,
    a_runtime_waits_for_a_message_it_cannot_read_inline);

/// End to end: an event this runtime cannot read is neither run without
/// nor dropped. The runtime abandons the turn, counting attempts; once the
/// row can be read (as when a newer node takes it), the orchestration
/// receives the event and completes with its data.
async fn a_runtime_waits_for_a_message_it_cannot_read(mode: SqlMode) {
    with_schema(&format!("unread_runtime_{mode}"), |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = provider(&schema, mode).await;
        let (rt, client) =
            waiting_runtime(&p, "Wait", RuntimeOptions::default().max_attempts).await;
        client
            .start_orchestration("waiting", "Wait", "")
            .await
            .unwrap_or_else(|e| panic!("{mode}: start: {e:?}"));
        support::eventually("the orchestration to wait for its event", || async {
            matches!(
                client.get_orchestration_status("waiting").await,
                Ok(OrchestrationStatus::Running { .. })
            )
        })
        .await;
        // Visible in a second: time to spoil it before the runtime sees it.
        p.enqueue_for_orchestrator(raised("waiting", "go"), Some(Duration::from_secs(1)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        let readable = spoil(&schema, "orchestrator_queue", 1).await;
        // The runtime's fetch fails on it and sets the turn aside.
        support::eventually("the runtime to set the unreadable turn aside", || async {
            p.admission_stats().unreadable_set_aside >= 1
        })
        .await;
        mend(&schema, "orchestrator_queue", &readable, UNREADABLE).await;
        let outcome = client
            .wait_for_orchestration("waiting", Duration::from_secs(30))
            .await;
        rt.shutdown(None).await;
        match outcome {
            Ok(OrchestrationStatus::Completed { output, .. }) => assert_eq!(output, "go", "{mode}"),
            other => panic!("{mode}: the event was not delivered: {other:?}"),
        }
    })
    .await;
}

in_both_modes!(a_message_nobody_can_read_leaves_its_instance_waiting:
    a_message_nobody_can_read_leaves_its_instance_waiting_procedures,
    a_message_nobody_can_read_leaves_its_instance_waiting_inline);

/// When no node reads the message, its instance neither goes on without it
/// nor fails: it waits, running, the message kept, whatever the runtime's
/// `max_attempts` (here 2, well under the times the turn comes back while
/// the test watches), until an operator mends or removes the row.
async fn a_message_nobody_can_read_leaves_its_instance_waiting(mode: SqlMode) {
    with_schema(&format!("unread_waiting_{mode}"), |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = provider(&schema, mode).await;
        let (rt, client) = waiting_runtime(&p, "Wait", 2).await;
        client
            .start_orchestration("stuck", "Wait", "")
            .await
            .unwrap_or_else(|e| panic!("{mode}: start: {e:?}"));
        support::eventually("the orchestration to wait for its event", || async {
            matches!(
                client.get_orchestration_status("stuck").await,
                Ok(OrchestrationStatus::Running { .. })
            )
        })
        .await;
        p.enqueue_for_orchestrator(raised("stuck", "go"), Some(Duration::from_secs(1)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        spoil(&schema, "orchestrator_queue", 1).await;
        // Set aside at least three times: past max_attempts had they counted.
        support::eventually("the turn set aside three times", || async {
            p.admission_stats().unreadable_set_aside >= 3
        })
        .await;
        let status = client.get_orchestration_status("stuck").await;
        rt.shutdown(None).await;
        assert!(
            matches!(status, Ok(OrchestrationStatus::Running { .. })),
            "{mode}: {status:?}"
        );
        // A fetch the shutdown dropped gives its claim back a moment later.
        support::eventually(
            "the message kept, unclaimed, no attempt counted",
            || async {
                let attempts: Option<i32> = sqlx::query_scalar(schema.statement(
                "SELECT attempt_count FROM {{schema}}.orchestrator_queue WHERE lock_token IS NULL",
            ))
            .fetch_optional(&schema.pool)
            .await
            .unwrap_or_else(|e| panic!("{mode}: read the queue: {e}"));
                attempts == Some(0)
            },
        )
        .await;
    })
    .await;
}

/// The ids of `table`'s rows that hold [`UNREADABLE`].
async fn unreadable_ids(schema: &TestSchema, table: &str) -> Vec<i64> {
    sqlx::query_scalar(schema.statement(&format!(
        "SELECT id FROM {{{{schema}}}}.{table} WHERE work_item = $1 ORDER BY id"
    )))
    .bind(UNREADABLE)
    .fetch_all(&schema.pool)
    .await
    .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

/// An operator looking for what a growing `unreadable_set_aside` counts:
/// `tenants::unreadable` names every queued item this build cannot decode,
/// in either queue, with its instance, attempts and the decoder's error,
/// and nothing that decodes. It reads and changes nothing else: the items
/// stay where they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_the_items_this_build_cannot_decode() {
    with_schema("unread_list", |schema| async move {
        let p = provider(&schema, SqlMode::StoredProcedures).await;
        let tenant = SchemaName::new(&schema.name).expect("schema name");
        assert_eq!(
            tenants::unreadable(&schema.pool, &tenant)
                .await
                .expect("list"),
            Vec::new(),
            "a clean tenant"
        );
        enqueue_activities(&p, SqlMode::StoredProcedures, "i1", &[1, 2]).await;
        p.enqueue_for_orchestrator(start("i2"), None)
            .await
            .expect("start");
        claim_and_ack_turn(&p, LOCK).await;
        for data in ["first", "second"] {
            p.enqueue_for_orchestrator(raised("i2", data), None)
                .await
                .expect("raise");
        }
        spoil(&schema, "worker_queue", 2).await;
        spoil(&schema, "orchestrator_queue", 1).await;
        let activity = unreadable_ids(&schema, "worker_queue").await;
        let message = unreadable_ids(&schema, "orchestrator_queue").await;

        let listed = tenants::unreadable(&schema.pool, &tenant)
            .await
            .expect("list");
        let found: Vec<(QueueKind, i64, Option<&str>, u32)> = listed
            .iter()
            .map(|item| {
                (
                    item.queue,
                    item.id,
                    item.instance_id.as_deref(),
                    item.attempt_count,
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (QueueKind::Orchestrator, message[0], Some("i2"), 0),
                (QueueKind::Worker, activity[0], Some("i1"), 0),
            ]
        );
        for item in &listed {
            assert!(
                item.error
                    .contains("unknown variant `ActivityFromTheFuture`"),
                "{item:?}"
            );
            assert!(!item.leased, "{item:?}");
        }
        assert_eq!(unreadable_ids(&schema, "worker_queue").await, activity);
        assert_eq!(unreadable_ids(&schema, "orchestrator_queue").await, message);
    })
    .await;
}

/// A schema that holds no tenant is named as such (the command's exit
/// code 8), not reported as a missing table.
#[tokio::test]
async fn listing_unreadable_items_of_a_schema_without_a_tenant_says_so() {
    with_schema("unread_none", |schema| async move {
        sqlx::query(schema.statement("CREATE SCHEMA {{schema}}"))
            .execute(&schema.pool)
            .await
            .expect("create the schema");
        let tenant = SchemaName::new(&schema.name).expect("schema name");
        let error = tenants::unreadable(&schema.pool, &tenant)
            .await
            .expect_err("no tenant");
        assert_eq!(
            error.sqlstate().as_deref(),
            Some(sqlstate::NOT_FOUND),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("holds no duroxide-postgres tenant"),
            "{error}"
        );
    })
    .await;
}
