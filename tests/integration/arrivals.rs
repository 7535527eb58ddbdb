//! A message that arrives while its instance's turn commits wakes a waiting
//! fetch as soon as the lease is gone, not when the old lease would have
//! ended; messages for one instance arriving together do not wait for each
//! other's commit. The interleavings are driven exactly: a commit is held by
//! a deferred trigger waiting on an advisory lock the test holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderError, TagFilter, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};

use crate::fixtures::{activity, completion, event, metadata, start};
use crate::support::{
    TestSchema, close_gate, in_both_modes, provider_on, someone_waits_on, with_schema,
};

const LEASE: Duration = Duration::from_secs(30);

/// Whether a backend waits for a row lock on this schema's `instance_claims`
/// (an instance's claim row, held by a transaction not yet committed): it
/// holds or waits for the row's tuple lock while it waits for the holder's
/// transaction. Other tests' waits on the same server do not count.
async fn someone_waits_on_an_instance_claim(schema: &TestSchema) -> bool {
    sqlx::query_scalar(schema.statement(
        "SELECT EXISTS (SELECT 1 FROM pg_locks t \
           WHERE t.locktype = 'tuple' AND t.relation = '{{schema}}.instance_claims'::regclass \
             AND (NOT t.granted OR EXISTS (SELECT 1 FROM pg_locks x WHERE x.pid = t.pid \
                                             AND x.locktype = 'transactionid' AND NOT x.granted)))",
    ))
    .fetch_one(&schema.pool)
    .await
    .expect("pg_locks")
}

async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

in_both_modes!(an_event_arriving_while_a_turn_commits_is_fetched_at_once:
    an_event_arriving_while_a_turn_commits_is_fetched_at_once_procedures,
    an_event_arriving_while_a_turn_commits_is_fetched_at_once_inline; 4);

async fn an_event_arriving_while_a_turn_commits_is_fetched_at_once(mode: SqlMode) {
    with_schema("arrival_ack", |schema| async move {
        let owner: Arc<PostgresProvider> =
            Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
        let waiter = provider_on(&schema.pool, &schema.name, mode, true).await;
        let sender = provider_on(&schema.pool, &schema.name, mode, true).await;
        owner
            .enqueue_for_orchestrator(start("busy"), None)
            .await
            .expect("enqueue");
        let (_, token, _) = owner
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");

        let (mut holder, gate) = close_gate(&schema).await;
        // Every commit that releases a lease is held.
        hold_commits(&schema, gate, "DELETE", "instance_locks", "true").await;

        // A dispatcher waits for work; the instance is leased for 30 s.
        let fetch = tokio::spawn(async move {
            let begun = Instant::now();
            let item = waiter
                .fetch_orchestration_item(LEASE, Duration::from_secs(20), None)
                .await;
            (item, begun.elapsed())
        });
        // The turn commits, and is held at its commit.
        let acker = owner.clone();
        let ack = tokio::spawn(async move {
            acker
                .ack_orchestration_item(
                    &token,
                    1,
                    vec![event("busy", 1)],
                    vec![],
                    vec![],
                    metadata(),
                    vec![],
                )
                .await
        });
        until("the ack is held at its commit", async || {
            someone_waits_on(&schema.pool, gate).await
        })
        .await;
        // An event for the instance arrives now.
        let send = tokio::spawn(async move {
            sender
                .enqueue_for_orchestrator(
                    WorkItem::ExternalRaised {
                        instance: "busy".to_string(),
                        name: "Go".to_string(),
                        data: "1".to_string(),
                    },
                    None,
                )
                .await
        });
        let sent_or_waiting =
            async || send.is_finished() || someone_waits_on_an_instance_claim(&schema).await;
        until(
            "the event is committed or waits for the turn",
            sent_or_waiting,
        )
        .await;

        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(gate)
            .execute(&mut holder)
            .await
            .expect("release gate");
        ack.await.expect("ack task").expect("ack");
        send.await.expect("send task").expect("enqueue");

        let (item, waited) = fetch.await.expect("fetch task");
        let (item, _, _) = item.expect("fetch").expect("the event's turn is claimed");
        assert_eq!(item.instance, "busy");
        assert!(
            waited < Duration::from_secs(5),
            "{mode}: the waiting fetch slept {waited:?}, towards the old lease's end"
        );
    })
    .await;
}

/// A trigger that holds the commit of every transaction that runs `event`
/// on this schema's `table` for a row matching `when` (a trigger `WHEN`
/// condition), until the test lets go of advisory key `gate`.
async fn hold_commits(schema: &TestSchema, gate: i64, event: &str, table: &str, when: &str) {
    sqlx::query(schema.statement(&format!(
        "CREATE FUNCTION {{{{schema}}}}.test_gate() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_advisory_xact_lock({gate}); RETURN NULL; END $$"
    )))
    .execute(&schema.pool)
    .await
    .expect("gate function");
    sqlx::query(schema.statement(&format!(
        "CREATE CONSTRAINT TRIGGER test_gate AFTER {event} ON {{{{schema}}}}.{table} \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when}) \
         EXECUTE FUNCTION {{{{schema}}}}.test_gate()"
    )))
    .execute(&schema.pool)
    .await
    .expect("gate trigger");
}

/// Runs `first` until the gate (closed by [`close_gate`](crate::support::close_gate), with a
/// [`hold_commits`] trigger that holds `first` and not `second`) holds it at
/// its commit, then `second`, which must commit without waiting for it (it
/// returns and is never seen waiting on a claim row). Then the gate opens
/// and `first` commits too.
async fn second_commits_while_first_is_held(
    schema: &TestSchema,
    (mut holder, gate): (sqlx::PgConnection, i64),
    mode: SqlMode,
    what: &str,
    first: impl Future<Output = Result<(), ProviderError>> + Send + 'static,
    second: impl Future<Output = Result<(), ProviderError>> + Send + 'static,
) {
    let first = tokio::spawn(first);
    until(
        &format!("the first {what} is held at its commit"),
        async || someone_waits_on(&schema.pool, gate).await,
    )
    .await;
    let second = tokio::spawn(second);
    until(&format!("the second {what} commits or waits"), async || {
        second.is_finished() || someone_waits_on_an_instance_claim(schema).await
    })
    .await;
    assert!(
        second.is_finished(),
        "{mode}: the second {what} waits for the first one's commit"
    );
    assert!(!first.is_finished(), "{mode}: the first {what} is held");
    second.await.expect("second task").expect("second write");

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(gate)
        .execute(&mut holder)
        .await
        .expect("release gate");
    first.await.expect("first task").expect("first write");
}

in_both_modes!(a_completion_does_not_wait_for_a_sibling_committing:
    a_completion_does_not_wait_for_a_sibling_committing_procedures,
    a_completion_does_not_wait_for_a_sibling_committing_inline; 4);

/// Workers finishing activities of one fan-out at once: each ack commits on
/// its own, instead of after the sibling's commit (with its WAL flush, on a
/// durable server). Both completions reach the instance.
async fn a_completion_does_not_wait_for_a_sibling_committing(mode: SqlMode) {
    with_schema("arrival_siblings", |schema| async move {
        let p: Arc<PostgresProvider> =
            Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
        p.enqueue_for_orchestrator(start("fan"), None)
            .await
            .expect("start");
        let mut tokens = Vec::new();
        for id in [1, 2] {
            p.enqueue_for_worker(activity("fan", id))
                .await
                .expect("activity");
            let (item, token, _) = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
                .await
                .expect("fetch work")
                .expect("an activity");
            assert!(matches!(item, WorkItem::ActivityExecute { id: got, .. } if got == id));
            tokens.push(token);
        }
        let gate = close_gate(&schema).await;
        hold_commits(
            &schema,
            gate.1,
            "DELETE",
            "worker_queue",
            "OLD.activity_id = 1",
        )
        .await;
        let ack = |token: &String, id| {
            let (p, token) = (p.clone(), token.clone());
            async move { p.ack_work_item(&token, Some(completion("fan", id))).await }
        };
        second_commits_while_first_is_held(
            &schema,
            gate,
            mode,
            "completion",
            ack(&tokens[0], 1),
            ack(&tokens[1], 2),
        )
        .await;
        let (item, _, _) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the instance is claimed");
        assert_eq!(
            item.messages.len(),
            3,
            "{mode}: the start and both completions"
        );
    })
    .await;
}

in_both_modes!(an_event_does_not_wait_for_another_event_committing:
    an_event_does_not_wait_for_another_event_committing_procedures,
    an_event_does_not_wait_for_another_event_committing_inline; 4);

/// Events raised to one started instance at once (a burst of webhooks) each
/// commit on their own, and all of them reach the instance.
async fn an_event_does_not_wait_for_another_event_committing(mode: SqlMode) {
    with_schema("arrival_events", |schema| async move {
        let p: Arc<PostgresProvider> =
            Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
        p.enqueue_for_orchestrator(start("hook"), None)
            .await
            .expect("start");
        let raised = |name: &str| WorkItem::ExternalRaised {
            instance: "hook".to_string(),
            name: name.to_string(),
            data: "1".to_string(),
        };
        let gate = close_gate(&schema).await;
        hold_commits(
            &schema,
            gate.1,
            "INSERT",
            "orchestrator_queue",
            "NEW.work_item LIKE '%Held%'",
        )
        .await;
        let send = |name: &str| {
            let (p, item) = (p.clone(), raised(name));
            async move { p.enqueue_for_orchestrator(item, None).await }
        };
        second_commits_while_first_is_held(
            &schema,
            gate,
            mode,
            "event",
            send("Held"),
            send("Free"),
        )
        .await;
        let (item, _, _) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the instance is claimed");
        assert_eq!(item.messages.len(), 3, "{mode}: the start and both events");
    })
    .await;
}

in_both_modes!(a_turn_sending_to_an_instance_does_not_wait_for_its_other_writers:
    a_turn_sending_to_an_instance_does_not_wait_for_its_other_writers_procedures,
    a_turn_sending_to_an_instance_does_not_wait_for_its_other_writers_inline; 4);

/// A turn that sends to one other instance (a child's result for its
/// parent, an event for a sibling) while another writer of that instance
/// commits does not wait for it: children finishing together commit
/// together.
async fn a_turn_sending_to_an_instance_does_not_wait_for_its_other_writers(mode: SqlMode) {
    with_schema("arrival_sends", |schema| async move {
        let p: Arc<PostgresProvider> =
            Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
        let raised = |name: &str| WorkItem::ExternalRaised {
            instance: "parent".to_string(),
            name: name.to_string(),
            data: "1".to_string(),
        };
        p.enqueue_for_orchestrator(start("child"), None)
            .await
            .expect("start");
        let (item, token, _) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the child is claimed");
        assert_eq!(item.instance, "child");
        // The parent's queue was written to before (its claim row exists).
        p.enqueue_for_orchestrator(raised("Early"), None)
            .await
            .expect("early event");
        let gate = close_gate(&schema).await;
        hold_commits(
            &schema,
            gate.1,
            "INSERT",
            "orchestrator_queue",
            "NEW.work_item LIKE '%Held%'",
        )
        .await;
        let held = {
            let (p, item) = (p.clone(), raised("Held"));
            async move { p.enqueue_for_orchestrator(item, None).await }
        };
        let turn = {
            let (p, item) = (p.clone(), raised("Free"));
            async move {
                p.ack_orchestration_item(
                    &token,
                    1,
                    vec![event("child", 1)],
                    vec![],
                    vec![item],
                    metadata(),
                    vec![],
                )
                .await
            }
        };
        second_commits_while_first_is_held(&schema, gate, mode, "writer of the parent", held, turn)
            .await;
        let queued: i64 = sqlx::query_scalar(schema.statement(
            "SELECT count(*) FROM {{schema}}.orchestrator_queue WHERE instance_id = 'parent'",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("parent's queue");
        assert_eq!(queued, 3, "{mode}: the parent's three messages are queued");
    })
    .await;
}
