//! Notifications sent after the commit, not inside it: a waiter of another
//! process (a provider on another pool) is woken by an ack of this one;
//! every notification of ours comes from the pool's listening connection,
//! none from the connection that ran the durable transaction; the sending
//! connection survives being terminated; our own notification, coming back
//! to the listener, wakes nobody a second time.

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::postgres::PgListener;
use tokio::time::Instant;

use super::{LOCK, LONG, eventually, listeners, subscribed, tagged_pool, with_schemas};
use crate::fixtures::{activity, event, metadata, start};
use crate::support::{in_both_modes, provider_on};

/// Bound on waiting for a notification that must come (a failure, not a timing).
const DELIVERY: Duration = Duration::from_secs(15);

/// Starts `instance` on `p` and claims its first turn: the lock token.
async fn claim_turn(p: &PostgresProvider, instance: &str) -> String {
    p.enqueue_for_orchestrator(start(instance), None)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}"))
        .unwrap_or_else(|| panic!("the start of {instance} is claimed"));
    assert_eq!(item.instance, instance);
    token
}

/// Acks a turn of `instance` that schedules activity 1.
async fn ack_scheduling(p: &PostgresProvider, token: &str, instance: &str) {
    p.ack_orchestration_item(
        token,
        1,
        vec![event(instance, 1)],
        vec![activity(instance, 1)],
        vec![],
        metadata(),
        vec![],
    )
    .await
    .unwrap_or_else(|e| panic!("ack: {e}"));
}

/// A worker waiting on `p` for up to [`LONG`]: whether it claimed an
/// activity, and how long it waited.
fn waiting_worker(p: &PostgresProvider) -> tokio::task::JoinHandle<(bool, Duration)> {
    let p = p.clone();
    tokio::spawn(async move {
        let begun = Instant::now();
        let item = p
            .fetch_work_item(LOCK, LONG, None, &TagFilter::Any)
            .await
            .unwrap_or_else(|e| panic!("fetch: {e}"));
        (item.is_some(), begun.elapsed())
    })
}

async fn an_ack_wakes_a_waiter_of_another_process(mode: SqlMode) {
    with_schemas("after_other", 1, |pool, names, _| async move {
        let acker = provider_on(&pool, &names[0], mode, true).await;
        // Another pool: another hub and listening connection, as another
        // process would have.
        let other_pool = tagged_pool("after_other_waiter").await;
        let waiter = provider_on(&other_pool, &names[0], mode, true).await;
        subscribed(&acker).await;
        subscribed(&waiter).await;
        let token = claim_turn(&acker, "woken").await;

        let fetch = waiting_worker(&waiter);
        // The waiter finds the queue empty and sleeps (whether or not it
        // has by now, the assertions hold).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = acker.notification_stats().unwrap_or_default().sent;
        ack_scheduling(&acker, &token, "woken").await;
        let (found, waited) = fetch.await.unwrap_or_else(|e| panic!("join: {e}"));
        assert!(
            found,
            "{mode}: the ack's activity is claimed by the other process"
        );
        assert!(
            waited < LONG / 2,
            "{mode}: woken by the ack's notification after {waited:?}, not by the poll timeout"
        );
        eventually("the notification counted as sent", || async {
            acker.notification_stats().unwrap_or_default().sent > sent
        })
        .await;
        other_pool.close().await;
    })
    .await;
}

in_both_modes!(an_ack_wakes_a_waiter_of_another_process:
    an_ack_wakes_a_waiter_of_another_process_procedures,
    an_ack_wakes_a_waiter_of_another_process_inline);

/// Every notification a provider's operations cause comes from its pool's
/// listening connection, after the commit: none from the backend that ran
/// the durable transaction (which would hold the notification-queue lock
/// through its WAL flush). The provider's own waiters are woken at the
/// commit, so its listener ignores the notification when it comes back.
async fn notifications_come_from_the_listener_not_the_transaction(mode: SqlMode) {
    with_schemas("after_sender", 1, |pool, names, app| async move {
        let p = provider_on(&pool, &names[0], mode, true).await;
        subscribed(&p).await;
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "{mode}: one listening connection");
        let listener_pid = u32::try_from(pids[0]).unwrap_or_default();

        let control = tagged_pool("after_sender_control").await;
        let mut watch = PgListener::connect_with(&control)
            .await
            .unwrap_or_else(|e| panic!("listener: {e}"));
        let marker = crate::support::fresh_schema_name("after_marker");
        watch
            .listen_all([names[0].as_str(), marker.as_str()])
            .await
            .unwrap_or_else(|e| panic!("listen: {e}"));
        let before = p.notification_stats().unwrap_or_default();

        // Every operation that wakes someone: enqueues, both acks (the
        // work ack with a completion), both abandons.
        let token = claim_turn(&p, "sent").await;
        ack_scheduling(&p, &token, "sent").await;
        let (_, work_token, _) = p
            .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
            .await
            .unwrap_or_else(|e| panic!("fetch work: {e}"))
            .unwrap_or_else(|| panic!("{mode}: the scheduled activity is claimed"));
        p.abandon_work_item(&work_token, None, false)
            .await
            .unwrap_or_else(|e| panic!("abandon work: {e}"));
        let (_, work_token, _) = p
            .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
            .await
            .unwrap_or_else(|e| panic!("fetch work: {e}"))
            .unwrap_or_else(|| panic!("{mode}: the abandoned activity is claimed"));
        p.ack_work_item(&work_token, Some(crate::fixtures::completion("sent", 1)))
            .await
            .unwrap_or_else(|e| panic!("ack work: {e}"));
        let (_, turn, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("fetch: {e}"))
            .unwrap_or_else(|| panic!("{mode}: the completion's turn is claimed"));
        p.abandon_orchestration_item(&turn, None, false)
            .await
            .unwrap_or_else(|e| panic!("abandon: {e}"));

        // enqueue (orchestrator), ack (worker), abandon (worker), ack work
        // (orchestrator), abandon (orchestrator): five wake-ups, each sent
        // alone or folded into an identical one pending with it. Once none
        // is unsent, a marker sent now arrives after all of them.
        eventually("every notification sent", || async {
            p.probe_unsent_notifications() == 0
        })
        .await;
        sqlx::query("SELECT pg_catalog.pg_notify($1, 'marker')")
            .bind(&marker)
            .execute(&control)
            .await
            .unwrap_or_else(|e| panic!("marker: {e}"));
        let mut arrived = Vec::new();
        loop {
            let n = tokio::time::timeout(DELIVERY, watch.recv())
                .await
                .unwrap_or_else(|_| panic!("{mode}: no marker; {arrived:?} arrived"))
                .unwrap_or_else(|e| panic!("recv: {e}"));
            if n.channel() == marker {
                break;
            }
            arrived.push((n.payload().to_string(), n.process_id()));
        }
        let after = p.notification_stats().unwrap_or_default();
        assert_eq!(
            after.local - before.local,
            5,
            "{mode}: each commit woke this pool's waiters once, directly"
        );
        assert_eq!(
            arrived.len() as u64,
            5 - (after.folded - before.folded),
            "{mode}: {arrived:?}, {after:?}"
        );
        assert!(
            arrived.iter().all(|(_, pid)| *pid == listener_pid),
            "{mode}: {arrived:?} sent by other backends than the listener ({listener_pid})"
        );
        assert_eq!(
            after.received - before.received,
            5,
            "{mode}: its own notifications are not dispatched again"
        );
        eventually("the echoes", || async {
            p.notification_stats().unwrap_or_default().echoes - before.echoes
                == arrived.len() as u64
        })
        .await;
        // The listener holds one of the control pool's connections, and a
        // pool's close waits for every connection it lent out.
        drop(watch);
        control.close().await;
    })
    .await;
}

in_both_modes!(notifications_come_from_the_listener_not_the_transaction:
    notifications_come_from_the_listener_not_the_transaction_procedures,
    notifications_come_from_the_listener_not_the_transaction_inline);

/// The connection that sends the notifications is terminated: the hub
/// reconnects, and notifications of commits made meanwhile and afterwards
/// still reach a waiter of another process before its poll timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_survives_its_connection_being_terminated() {
    with_schemas("after_kill", 1, |pool, names, app| async move {
        let mode = SqlMode::StoredProcedures;
        let sender = provider_on(&pool, &names[0], mode, true).await;
        let other_pool = tagged_pool("after_kill_waiter").await;
        let waiter = provider_on(&other_pool, &names[0], mode, true).await;
        subscribed(&sender).await;
        subscribed(&waiter).await;
        let connections = sender.notification_stats().unwrap_or_default().connections;
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "one listening (and sending) connection");
        // The sender has sent on it before.
        sender
            .enqueue_for_worker(activity("before", 1))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        let (found, _) = waiting_worker(&waiter)
            .await
            .unwrap_or_else(|e| panic!("join: {e}"));
        assert!(found);
        eventually("sent", || async {
            sender.probe_unsent_notifications() == 0
        })
        .await;

        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pids[0])
            .fetch_one(&other_pool)
            .await
            .unwrap_or_else(|e| panic!("terminate: {e}"));
        assert!(killed);
        // Committed while the sending connection is gone or coming back,
        // with the waiter (most likely) asleep.
        let fetch = waiting_worker(&waiter);
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender
            .enqueue_for_worker(activity("gap", 1))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        let (found, waited) = fetch.await.unwrap_or_else(|e| panic!("join: {e}"));
        assert!(found, "the activity committed during the gap is claimed");
        assert!(waited < LONG / 2, "woken after {waited:?}");
        eventually("the sender reconnected", || async {
            sender
                .notification_stats()
                .is_some_and(|s| s.connected && s.connections > connections)
        })
        .await;

        // And later notifications arrive as before.
        for round in 0..3 {
            let fetch = waiting_worker(&waiter);
            tokio::time::sleep(Duration::from_millis(200)).await;
            sender
                .enqueue_for_worker(activity("after", 2 + round))
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let (found, waited) = fetch.await.unwrap_or_else(|e| panic!("join: {e}"));
            assert!(found, "round {round}: claimed");
            assert!(waited < LONG / 2, "round {round}: woken after {waited:?}");
        }
        let stats = sender.notification_stats().unwrap_or_default();
        assert_eq!(stats.dropped, 0, "nothing given up: {stats:?}");
        other_pool.close().await;
    })
    .await;
}
