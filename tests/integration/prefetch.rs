//! The history a worker fetch returns: duroxide reads an activity's instance
//! history right after claiming the activity (to name its orchestration), so
//! the fetch returns that history and the provider answers the read that
//! follows in the same task from it, within `prefetch_window`,
//! instead of a round trip.
//!
//! Each test proves where a read was answered by holding the history table
//! locked: a read sent to the server waits, one answered from the fetch
//! does not.

use std::time::Duration;

use duroxide::Event;
use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgConnection;
use tokio::sync::oneshot;

use crate::fixtures;
use crate::support::{self, TestSchema, in_both_modes, with_schema};

const LEASE: Duration = Duration::from_secs(60);

/// A window no test run comes near, so that what a test shows does not
/// depend on how fast the machine is.
const LONG_WINDOW: Duration = Duration::from_secs(600);

/// A provider in `mode` with the history prefetch window set to `window`.
async fn provider(schema: &TestSchema, mode: SqlMode, window: Duration) -> PostgresProvider {
    support::provider_with_options(
        &schema.pool,
        &schema.name,
        mode,
        PostgresOptions::default().prefetch_window(window),
    )
    .await
}

/// Starts `instance` and acks its first turn with `events` history events
/// (the start and activities scheduled) and one activity queued; returns the
/// history as a read from the server gives it.
async fn instance_with_an_activity(
    provider: &PostgresProvider,
    instance: &str,
    events: u64,
) -> Vec<Event> {
    provider
        .enqueue_for_orchestrator(fixtures::start(instance), None)
        .await
        .expect("enqueue the start");
    let (_, token, _) = provider
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .expect("fetch the turn")
        .expect("a turn");
    provider
        .ack_orchestration_item(
            &token,
            1,
            (1..=events)
                .map(|id| fixtures::event(instance, id))
                .collect(),
            vec![fixtures::activity(instance, 2)],
            vec![],
            fixtures::metadata(),
            vec![],
        )
        .await
        .expect("ack the turn");
    provider.read(instance).await.expect("read")
}

/// Takes the history table's strongest lock: every read of the history
/// waits until [`support::release_table`].
async fn lock_history(schema: &TestSchema) -> PgConnection {
    lock(schema, "history").await
}

/// Takes `table`'s strongest lock: every read of it waits until
/// [`support::release_table`].
async fn lock(schema: &TestSchema, table: &str) -> PgConnection {
    support::hold_table(schema, table, "ACCESS EXCLUSIVE").await
}

/// Waits until some backend waits for the lock [`lock_history`] holds.
async fn a_read_waits_for_the_history(schema: &TestSchema) {
    a_read_waits_for(schema, "history").await;
}

/// Waits until some backend waits for a lock on `table`.
async fn a_read_waits_for(schema: &TestSchema, table: &str) {
    support::until_a_backend_waits_for(schema, table, "a read").await;
}

/// What a task that fetched an activity saw, in order: the fetch, then its
/// read of the activity's instance, made once the test says so.
struct Worker {
    fetched: oneshot::Receiver<String>,
    go: oneshot::Sender<()>,
    read: tokio::task::JoinHandle<Vec<Event>>,
}

/// Spawns a task that claims the next activity, reports its instance, and
/// reads that instance's history when told to (after `before_read`, run in
/// the same task, has written through the provider if it wants).
fn worker<F, Fut>(provider: &PostgresProvider, before_read: F) -> Worker
where
    F: FnOnce(PostgresProvider, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let provider = provider.clone();
    let (report, fetched) = oneshot::channel();
    let (go, wait) = oneshot::channel();
    let read = tokio::spawn(async move {
        let (item, _, _) = provider
            .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::Any)
            .await
            .expect("fetch the activity")
            .expect("an activity");
        let duroxide::providers::WorkItem::ActivityExecute { instance, .. } = item else {
            panic!("not an activity: {item:?}");
        };
        report.send(instance.clone()).expect("report");
        wait.await.expect("go");
        before_read(provider.clone(), instance.clone()).await;
        provider.read(&instance).await.expect("read")
    });
    Worker { fetched, go, read }
}

/// Where a read was answered.
#[derive(Debug, PartialEq)]
enum Answered {
    /// From what the fetch before it read: it did not wait for the locked
    /// history.
    FromTheFetch,
    /// By the server: it waited for the locked history.
    ByTheServer,
}

/// Claims the next activity in a task of its own ([`worker`]), locks the
/// history, and lets the task read (after `before_read`): where the read
/// was answered, and what it returned.
async fn read_after_a_fetch<F, Fut>(
    schema: &TestSchema,
    provider: &PostgresProvider,
    before_read: F,
) -> (Answered, Vec<Event>)
where
    F: FnOnce(PostgresProvider, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let worker = worker(provider, before_read);
    worker.fetched.await.expect("fetched");
    let holder = lock_history(schema).await;
    worker.go.send(()).expect("go");
    let mut read = worker.read;
    let (answered, events) = tokio::select! {
        done = &mut read => (Answered::FromTheFetch, Some(done.expect("worker task"))),
        () = a_read_waits_for_the_history(schema) => (Answered::ByTheServer, None),
    };
    support::release_table(holder).await;
    let events = match events {
        Some(events) => events,
        None => read.await.expect("worker task"),
    };
    (answered, events)
}

/// The read that follows a fetch in the same task is answered from what
/// the fetch read: it does not wait for the locked history, and it is what
/// the server returns. A read from another task goes to the server.
async fn a_read_after_a_fetch_is_answered_from_the_fetch(mode: SqlMode) {
    with_schema(&format!("prefetch_hit_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let expected = instance_with_an_activity(&provider, "i1", 3).await;
        assert_eq!(expected.len(), 3);

        let worker = worker(&provider, |_, _| async {});
        let instance = worker.fetched.await.expect("fetched");
        let holder = lock_history(&schema).await;
        worker.go.send(()).expect("go");
        let read = tokio::time::timeout(Duration::from_secs(20), worker.read)
            .await
            .expect("the read after the fetch waited for the locked history")
            .expect("worker task");
        assert_eq!(read, expected);

        // Any other task's read is the server's.
        let other = {
            let provider = provider.clone();
            tokio::spawn(async move { provider.read(&instance).await.expect("read") })
        };
        a_read_waits_for_the_history(&schema).await;
        support::release_table(holder).await;
        assert_eq!(other.await.expect("other task"), expected);
        support::fetch_both_queues_empty(&provider).await;
    })
    .await;
}
in_both_modes!(a_read_after_a_fetch_is_answered_from_the_fetch: a_read_after_a_fetch_is_answered_from_the_fetch_procedures, a_read_after_a_fetch_is_answered_from_the_fetch_inline);

/// What the fetch read is used once: a second read in the same task goes to
/// the server.
async fn what_a_fetch_read_answers_one_read(mode: SqlMode) {
    with_schema(&format!("prefetch_once_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let expected = instance_with_an_activity(&provider, "i1", 2).await;
        let second = read_after_a_fetch(&schema, &provider, |provider, instance| async move {
            provider.read(&instance).await.expect("first read");
        })
        .await;
        assert_eq!(second, (Answered::ByTheServer, expected));
    })
    .await;
}
in_both_modes!(what_a_fetch_read_answers_one_read: what_a_fetch_read_answers_one_read_procedures, what_a_fetch_read_answers_one_read_inline);

/// A history this provider appends to after the fetch is read again from
/// the server, so the task sees its own write.
async fn a_write_through_the_provider_is_never_hidden(mode: SqlMode) {
    with_schema(&format!("prefetch_write_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let before = instance_with_an_activity(&provider, "i1", 2).await;
        let worker = worker(&provider, |provider, instance| async move {
            provider
                .append_with_execution(&instance, 1, vec![fixtures::event(&instance, 3)])
                .await
                .expect("append");
        });
        worker.fetched.await.expect("fetched");
        worker.go.send(()).expect("go");
        let read = worker.read.await.expect("worker task");
        assert_eq!(
            read.len(),
            before.len() + 1,
            "the appended event is missing"
        );
        assert_eq!(read, provider.read("i1").await.expect("read"));
    })
    .await;
}
in_both_modes!(a_write_through_the_provider_is_never_hidden: a_write_through_the_provider_is_never_hidden_procedures, a_write_through_the_provider_is_never_hidden_inline);

/// The same for a turn of the instance that this provider acks after the
/// fetch: the read sees the turn's events.
async fn a_turn_acked_through_the_provider_is_never_hidden(mode: SqlMode) {
    with_schema(&format!("prefetch_turn_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let before = instance_with_an_activity(&provider, "i1", 2).await;
        let worker = worker(&provider, |provider, instance| async move {
            let event = fixtures::event(&instance, 3);
            ack_a_turn_with(&provider, &instance, event).await;
        });
        worker.fetched.await.expect("fetched");
        worker.go.send(()).expect("go");
        let read = worker.read.await.expect("worker task");
        assert_eq!(read.len(), before.len() + 1, "the turn's event is missing");
        assert_eq!(read, provider.read("i1").await.expect("read"));
    })
    .await;
}
in_both_modes!(a_turn_acked_through_the_provider_is_never_hidden: a_turn_acked_through_the_provider_is_never_hidden_procedures, a_turn_acked_through_the_provider_is_never_hidden_inline);

/// With the window zero the fetch returns no history and every read goes to
/// the server.
async fn a_zero_window_turns_the_prefetch_off(mode: SqlMode) {
    with_schema(&format!("prefetch_off_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, Duration::ZERO).await;
        let expected = instance_with_an_activity(&provider, "i1", 2).await;
        let read = read_after_a_fetch(&schema, &provider, |_, _| async {}).await;
        assert_eq!(read, (Answered::ByTheServer, expected));
    })
    .await;
}
in_both_modes!(a_zero_window_turns_the_prefetch_off: a_zero_window_turns_the_prefetch_off_procedures, a_zero_window_turns_the_prefetch_off_inline);

/// A history larger than the fetch returns
/// ([`PostgresOptions::HISTORY_PREFETCH_MAX_BYTES`]) is read from the
/// server.
async fn a_large_history_is_read_from_the_server(mode: SqlMode) {
    with_schema(&format!("prefetch_large_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let _ = instance_with_an_activity(&provider, "i1", 2).await;
        let mut large = fixtures::event("i1", 3);
        if let duroxide::EventKind::ActivityScheduled { input, .. } = &mut large.kind {
            *input = "x".repeat(PostgresOptions::HISTORY_PREFETCH_MAX_BYTES + 1);
        }
        provider
            .append_with_execution("i1", 1, vec![large])
            .await
            .expect("append a large event");
        let expected = provider.read("i1").await.expect("read");
        let read = read_after_a_fetch(&schema, &provider, |_, _| async {}).await;
        assert_eq!(read, (Answered::ByTheServer, expected));
    })
    .await;
}
in_both_modes!(a_large_history_is_read_from_the_server: a_large_history_is_read_from_the_server_procedures, a_large_history_is_read_from_the_server_inline);

/// An activity of an instance with no history (enqueued by hand) reads as
/// the server's read does: no events, answered from the fetch.
async fn an_activity_without_history_reads_empty(mode: SqlMode) {
    with_schema(&format!("prefetch_empty_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        provider
            .enqueue_for_worker(fixtures::activity("ghost", 2))
            .await
            .expect("enqueue an activity");
        let read = read_after_a_fetch(&schema, &provider, |_, _| async {}).await;
        assert_eq!(read, (Answered::FromTheFetch, Vec::new()));
        assert!(provider.read("ghost").await.expect("read").is_empty());
    })
    .await;
}
in_both_modes!(an_activity_without_history_reads_empty: an_activity_without_history_reads_empty_procedures, an_activity_without_history_reads_empty_inline);

/// The fetch reads the instance's latest execution, as `read` does, not the
/// activity's own.
async fn the_fetch_reads_the_latest_execution(mode: SqlMode) {
    with_schema(&format!("prefetch_latest_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let first = instance_with_an_activity(&provider, "i1", 2).await;
        // A second execution, written behind the provider's back.
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}.executions (instance_id, execution_id, started_at_ms) \
             VALUES ('i1', 2, 0)",
        ))
        .execute(&schema.pool)
        .await
        .expect("a second execution");
        let mut second = fixtures::event("i1", 1);
        second.execution_id = 2;
        provider
            .append_with_execution("i1", 2, vec![second])
            .await
            .expect("append to execution 2");
        let expected = provider.read("i1").await.expect("read");
        assert_eq!(expected.len(), 1);
        assert_ne!(expected, first);

        let read = read_after_a_fetch(&schema, &provider, |_, _| async {}).await;
        assert_eq!(read, (Answered::FromTheFetch, expected));
    })
    .await;
}
in_both_modes!(the_fetch_reads_the_latest_execution: the_fetch_reads_the_latest_execution_procedures, the_fetch_reads_the_latest_execution_inline);

/// Acks a turn of `instance` (a completion of activity 2 enqueued for it)
/// whose one history event is `event`.
async fn ack_a_turn_with(provider: &PostgresProvider, instance: &str, event: Event) {
    provider
        .enqueue_for_orchestrator(fixtures::completion(instance, 2), None)
        .await
        .expect("enqueue a completion");
    let (_, token, _) = provider
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .expect("fetch the turn")
        .expect("a turn");
    provider
        .ack_orchestration_item(
            &token,
            1,
            vec![event],
            vec![],
            vec![],
            Default::default(),
            vec![],
        )
        .await
        .expect("ack the turn");
}

/// Acks a turn of `instance` whose one event, `event_id`, sets the custom
/// status to `status`.
async fn set_custom_status(
    provider: &PostgresProvider,
    instance: &str,
    event_id: u64,
    status: &str,
) {
    let event = Event::with_event_id(
        event_id,
        instance.to_string(),
        1,
        None,
        duroxide::EventKind::CustomStatusUpdated {
            status: Some(status.to_string()),
        },
    );
    ack_a_turn_with(provider, instance, event).await;
}

/// The client's status: the custom status read right after the history, in
/// the same task, is answered from what the history read returned (it does
/// not wait for the locked instances table), and as the server answers: a
/// newer version only. Another task's status read goes to the server.
async fn a_status_read_after_a_history_read_is_answered_from_it(mode: SqlMode) {
    with_schema(&format!("prefetch_status_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        let _ = instance_with_an_activity(&provider, "i1", 2).await;
        set_custom_status(&provider, "i1", 3, "busy").await;
        let expected = provider
            .get_custom_status("i1", 0)
            .await
            .expect("status from the server");
        assert_eq!(expected, Some((Some("busy".to_string()), 1)));

        let (report_read, wait_read) = oneshot::channel::<()>();
        let (send_go, wait_go) = oneshot::channel::<()>();
        let (report_first, first) = oneshot::channel();
        let client = {
            let provider = provider.clone();
            tokio::spawn(async move {
                provider.read("i1").await.expect("read");
                report_read.send(()).expect("report");
                wait_go.await.expect("go");
                let status = provider.get_custom_status("i1", 0).await.expect("status");
                report_first.send(status).expect("report the status");
                provider.read("i1").await.expect("read again");
                provider.get_custom_status("i1", 1).await.expect("status")
            })
        };
        wait_read.await.expect("read");
        let holder = lock(&schema, "instances").await;
        send_go.send(()).expect("go");
        let first = tokio::time::timeout(Duration::from_secs(20), first)
            .await
            .expect("the status read after the history read waited for the locked instances")
            .expect("first status");
        assert_eq!(first, expected);
        // The client's next history read goes to the server and waits (it
        // joins the instances table), as does another task's status read.
        a_read_waits_for(&schema, "instances").await;
        let other = {
            let provider = provider.clone();
            tokio::spawn(async move { provider.get_custom_status("i1", 0).await.expect("status") })
        };
        support::release_table(holder).await;
        let second = client.await.expect("client task");
        assert_eq!(second, None, "version 1 was seen: no newer status");
        assert_eq!(other.await.expect("other task"), expected);
    })
    .await;
}
in_both_modes!(a_status_read_after_a_history_read_is_answered_from_it: a_status_read_after_a_history_read_is_answered_from_it_procedures, a_status_read_after_a_history_read_is_answered_from_it_inline);

/// The client polls an instance before its first turn (its start still
/// queued) and one that does not exist: the history read finds no event,
/// and the custom status read after it is answered from that read too (it
/// does not wait for the locked instances table), as the server answers:
/// no status.
async fn a_status_read_after_an_empty_history_read_is_answered_from_it(mode: SqlMode) {
    with_schema(&format!("prefetch_empty_{mode}"), |schema| async move {
        let provider = provider(&schema, mode, LONG_WINDOW).await;
        provider
            .enqueue_for_orchestrator(fixtures::start("queued"), None)
            .await
            .expect("enqueue");
        for instance in ["queued", "nowhere"] {
            let (report_read, wait_read) = oneshot::channel::<()>();
            let (send_go, wait_go) = oneshot::channel::<()>();
            let client = {
                let provider = provider.clone();
                tokio::spawn(async move {
                    let events = provider.read(instance).await.expect("read");
                    report_read.send(()).expect("report");
                    wait_go.await.expect("go");
                    let status = provider
                        .get_custom_status(instance, 0)
                        .await
                        .expect("status");
                    (events, status)
                })
            };
            wait_read.await.expect("read");
            let holder = lock(&schema, "instances").await;
            send_go.send(()).expect("go");
            let (events, status) = tokio::time::timeout(Duration::from_secs(20), client)
                .await
                .unwrap_or_else(|_| {
                    panic!("{instance}: the status read waited for the locked instances")
                })
                .expect("client task");
            assert!(events.is_empty(), "{instance}: {events:?}");
            assert_eq!(status, None, "{instance}");
            support::release_table(holder).await;
        }
    })
    .await;
}
in_both_modes!(a_status_read_after_an_empty_history_read_is_answered_from_it: a_status_read_after_an_empty_history_read_is_answered_from_it_procedures, a_status_read_after_an_empty_history_read_is_answered_from_it_inline);

/// A custom status this provider changes between the history read and the
/// status read of one task is read again from the server.
async fn a_status_changed_through_the_provider_is_never_hidden(mode: SqlMode) {
    with_schema(
        &format!("prefetch_status_write_{mode}"),
        |schema| async move {
            let provider = provider(&schema, mode, LONG_WINDOW).await;
            let _ = instance_with_an_activity(&provider, "i1", 2).await;
            set_custom_status(&provider, "i1", 3, "one").await;
            let task = {
                let provider = provider.clone();
                tokio::spawn(async move {
                    provider.read("i1").await.expect("read");
                    set_custom_status(&provider, "i1", 4, "two").await;
                    provider.get_custom_status("i1", 0).await.expect("status")
                })
            };
            assert_eq!(
                task.await.expect("task"),
                Some((Some("two".to_string()), 2))
            );
        },
    )
    .await;
}
in_both_modes!(a_status_changed_through_the_provider_is_never_hidden: a_status_changed_through_the_provider_is_never_hidden_procedures, a_status_changed_through_the_provider_is_never_hidden_inline);
