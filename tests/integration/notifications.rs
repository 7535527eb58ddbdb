//! LISTEN/NOTIFY long polling: waiters wake for committed work only (one
//! notification per transaction), at a timer's due time, after their listener
//! is killed, and only for their own tenant; one listening connection serves
//! a whole pool and subscribes tenants that join it later; a fetch after an
//! empty one, or after a claim that was all there was, skips its query until
//! something is notified (`quiet`).

use std::time::Duration;

use duroxide::providers::{Provider, ProviderError};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fixtures::start;
use crate::support::{
    database_url, drop_schema, eventually, fresh_schema_name, provider_on, settling_provider,
};

mod after_commit;
mod flood;
mod handoff;
mod listener;
mod presence;
mod quiet;

const LOCK: Duration = Duration::from_secs(30);
/// A poll timeout no test below may reach unless waking failed.
const LONG: Duration = Duration::from_secs(20);

/// A pool whose connections carry `application_name`, so this test can find
/// its own listener among every other test's.
async fn tagged_pool(application_name: &str) -> PgPool {
    let options: PgConnectOptions = database_url()
        .parse::<PgConnectOptions>()
        .unwrap_or_else(|e| panic!("{e}"))
        .application_name(application_name);
    PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// Runs `body` with fresh schemas on a tagged pool, dropping them afterwards.
async fn with_schemas<F, Fut>(tag: &str, count: usize, body: F)
where
    F: FnOnce(PgPool, Vec<String>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let application_name = fresh_schema_name(tag);
    let pool = tagged_pool(&application_name).await;
    let names: Vec<String> = (0..count).map(|_| fresh_schema_name(tag)).collect();
    let outcome = std::panic::AssertUnwindSafe(body(pool.clone(), names.clone(), application_name))
        .catch_unwind()
        .await;
    for name in &names {
        drop_schema(&pool, name).await;
    }
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Starts a fetch of the next orchestration instance that waits up to
/// `poll`; [`claimed`] joins it.
fn waiting_fetch(
    p: &PostgresProvider,
    poll: Duration,
) -> JoinHandle<Result<Option<String>, ProviderError>> {
    let p = p.clone();
    tokio::spawn(async move {
        p.fetch_orchestration_item(LOCK, poll, None)
            .await
            .map(|item| item.map(|(item, _, _)| item.instance))
    })
}

/// The instance a [`waiting_fetch`] claimed, if any.
async fn claimed(fetch: JoinHandle<Result<Option<String>, ProviderError>>) -> Option<String> {
    fetch
        .await
        .unwrap_or_else(|e| panic!("join: {e}"))
        .unwrap_or_else(|e| panic!("fetch: {e}"))
}

/// Listening backends of the pool tagged `application_name` (their last
/// query a `LISTEN` or the listener's keepalive).
async fn listeners(pool: &PgPool, application_name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
           AND (query LIKE 'LISTEN %' OR query LIKE '-- duroxide-postgres: LISTEN connection%')",
    )
    .bind(application_name)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("pg_stat_activity: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_for_a_commit_from_another_connection() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("notify_wake", 1, |pool, names, _| async move {
            let waiter = provider_on(&pool, &names[0], mode, true).await;
            // The enqueuer is another pool: another backend, no listener of its own.
            let other_pool = tagged_pool("notify_wake_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            eventually("listener up", || async {
                waiter
                    .notification_stats()
                    .is_some_and(|s| s.connected && s.subscribed)
            })
            .await;

            let begun = Instant::now();
            let fetch = waiting_fetch(&waiter, LONG);
            // Give the waiter time to find the queue empty and go to sleep; the
            // assertions hold whether or not it already has.
            tokio::time::sleep(Duration::from_millis(300)).await;
            enqueuer
                .enqueue_for_orchestrator(start("woken"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            assert_eq!(claimed(fetch).await.as_deref(), Some("woken"), "{mode}");
            assert!(
                begun.elapsed() < LONG,
                "{mode}: woken by the commit, not by the poll timeout"
            );
            other_pool.close().await;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_enqueue_wakes_nobody() {
    with_schemas("notify_rollback", 1, |pool, names, _| async move {
        let waiter = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        eventually("listener up", || async {
            waiter
                .notification_stats()
                .is_some_and(|s| s.connected && s.subscribed)
        })
        .await;
        let received_before = waiter.notification_stats().map_or(0, |s| s.received);

        let poll = Duration::from_millis(1500);
        let begun = Instant::now();
        let fetch = waiting_fetch(&waiter, poll);
        let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT \"{}\".{}('ghost', 'StartOrchestration', 'x', 0)",
            names[0],
            duroxide_postgres::SchemaName::new(&names[0])
                .map(|n| n.procedure_name("enqueue_orchestrator_item"))
                .unwrap_or_else(|e| panic!("{e}"))
        )))
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("enqueue in transaction: {e}"));
        tx.rollback().await.unwrap_or_else(|e| panic!("{e}"));

        assert!(claimed(fetch).await.is_none());
        assert!(
            begun.elapsed() >= poll,
            "the waiter slept until its timeout"
        );
        assert_eq!(
            waiter.notification_stats().map_or(0, |s| s.received),
            received_before,
            "a rolled-back transaction sends no notification"
        );
    })
    .await;
}

/// The database's clock, in milliseconds since the Unix epoch, as the
/// provider stamps due times.
async fn database_clock_ms(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("the database's clock: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_a_delayed_item_becomes_due() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("notify_timer", 1, |pool, names, _| async move {
            let p = provider_on(&pool, &names[0], mode, true).await;
            let delay = Duration::from_millis(1200);
            // The due time is stamped by the database's clock while the
            // enqueue runs: count on that clock from just before it (how
            // long the enqueue took on a loaded machine is not known), with
            // 5 ms for the millisecond stamp. This process's monotonic
            // clock would not do: the server reads the wall clock, which
            // can step ahead of it (once by about 0.9 s in CI, on a virtual
            // machine restored from a snapshot mid-run).
            let enqueuing = database_clock_ms(&pool).await;
            p.enqueue_for_orchestrator(start("later"), Some(delay))
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let begun = Instant::now();
            let fetched = p
                .fetch_orchestration_item(LOCK, LONG, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            let waited = begun.elapsed();
            let since_enqueue = database_clock_ms(&pool).await - enqueuing;
            assert!(fetched.is_some(), "{mode}: the delayed item is fetched");
            assert!(
                since_enqueue + 5 >= i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                "{mode}: not before it is due ({since_enqueue} ms after the enqueue began)"
            );
            assert!(
                waited < LONG,
                "{mode}: woken at the due time, not at the poll timeout"
            );
        })
        .await;
    }
}

/// A pool's first provider is subscribed on the listener's first
/// connection: no reconnect to add its channel, so the hub never reports
/// itself connected while not yet listening to it. (It did reconnect once,
/// every time, and a test reading `pg_stat_activity` in that window found
/// no listener.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_first_provider_listens_from_the_first_connection() {
    with_schemas("notify_first", 1, |pool, names, app| async move {
        let p = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        eventually("listener up", || async {
            p.notification_stats()
                .is_some_and(|s| s.connected && s.subscribed)
        })
        .await;
        assert_eq!(listeners(&pool, &app).await.len(), 1, "listening once up");
        // A whole notification round trip: a reconnect pending at start-up
        // has happened by the end of it.
        let fetch = waiting_fetch(&p, LONG);
        let other_pool = tagged_pool("notify_first_other").await;
        let enqueuer = provider_on(&other_pool, &names[0], SqlMode::StoredProcedures, false).await;
        enqueuer
            .enqueue_for_orchestrator(start("first"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        assert_eq!(claimed(fetch).await.as_deref(), Some("first"));
        other_pool.close().await;
        assert_eq!(
            p.notification_stats().map_or(0, |s| s.connections),
            1,
            "one connection, no reconnect"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_recover_after_the_listener_backend_is_terminated() {
    with_schemas("notify_kill", 1, |pool, names, app| async move {
        let p = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        eventually("listener up", || async {
            p.notification_stats()
                .is_some_and(|s| s.connected && s.subscribed)
        })
        .await;
        let connections = p.notification_stats().map_or(0, |s| s.connections);
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "one listening connection");

        let waiter = p.clone();
        let fetch = tokio::spawn(async move {
            let begun = Instant::now();
            let item = waiter
                .fetch_work_item(LOCK, LONG, None, &duroxide::providers::TagFilter::Any)
                .await;
            (item.map(|i| i.is_some()), begun.elapsed())
        });
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pids[0])
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("terminate: {e}"));
        assert!(killed);
        // Work committed while the listener is down (or reconnecting) ...
        p.enqueue_for_worker(crate::fixtures::activity("gap", 1))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        // ... is fetched without waiting for the poll timeout.
        let (found, waited) = fetch.await.unwrap_or_else(|e| panic!("join: {e}"));
        assert!(found.unwrap_or_else(|e| panic!("fetch: {e}")));
        assert!(waited < LONG, "fetched after {waited:?}");

        eventually("listener back", || async {
            p.notification_stats()
                .is_some_and(|s| s.connected && s.connections > connections)
        })
        .await;
        let after = listeners(&pool, &app).await;
        assert_eq!(after.len(), 1, "one listening connection again");
        assert_ne!(after[0], pids[0], "a new backend");

        // And notifications work again.
        let waiter = p.clone();
        let begun = Instant::now();
        let fetch = tokio::spawn(async move {
            waiter
                .fetch_work_item(LOCK, LONG, None, &duroxide::providers::TagFilter::Any)
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.enqueue_for_worker(crate::fixtures::activity("after", 1))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        let item = fetch
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|e| panic!("fetch: {e}"));
        assert!(item.is_some());
        assert!(begun.elapsed() < LONG);
    })
    .await;
}

/// Waits until the pool's listener is subscribed to `p`'s schema.
async fn subscribed(p: &PostgresProvider) {
    eventually("listener subscribed", || async {
        p.notification_stats().is_some_and(|s| s.subscribed)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_joining_a_listening_pool_subscribes_on_the_same_connection() {
    with_schemas("notify_join", 2, |pool, names, app| async move {
        let a = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        subscribed(&a).await;
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "one listening connection");
        let a_waiter = waiting_fetch(&a, LONG);
        let wakeups = a.notification_stats().map_or(0, |s| s.wakeups);

        let b = provider_on(&pool, &names[1], SqlMode::StoredProcedures, true).await;
        subscribed(&b).await;
        assert_eq!(
            listeners(&pool, &app).await,
            pids,
            "the same backend listens"
        );
        let stats = b.notification_stats().unwrap_or_default();
        assert_eq!(stats.connections, 1, "no reconnect for the second tenant");
        assert_eq!(stats.wakeups, wakeups, "tenant a's waiter was not woken");

        // Tenant b's waiters hear of commits from elsewhere.
        let other_pool = tagged_pool("notify_join_other").await;
        let begun = Instant::now();
        let b_waiter = waiting_fetch(&b, LONG);
        for (schema, instance) in [(&names[1], "for-b"), (&names[0], "for-a")] {
            let enqueuer = provider_on(&other_pool, schema, SqlMode::StoredProcedures, false).await;
            enqueuer
                .enqueue_for_orchestrator(start(instance), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue {instance}: {e}"));
            // Sent after the commit: not lost to the pool closing below.
            eventually("the enqueue's notification sent", || async {
                enqueuer.probe_unsent_notifications() == 0
            })
            .await;
        }
        other_pool.close().await;
        assert_eq!(claimed(b_waiter).await.as_deref(), Some("for-b"));
        assert_eq!(claimed(a_waiter).await.as_deref(), Some("for-a"));
        assert!(begun.elapsed() < LONG, "woken, not timed out");
    })
    .await;
}

/// Subscribing a joining tenant interrupts the listener's wait for the next
/// message; nothing may be lost or misread when messages are streaming in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_joining_while_notifications_stream_in_lose_none() {
    const SENT: u64 = 300;
    with_schemas("notify_stream", 12, |pool, names, _| async move {
        let a = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        subscribed(&a).await;
        let before = a.notification_stats().unwrap_or_default();
        let other_pool = tagged_pool("notify_stream_other").await;
        // One transaction, so one notification, per statement (a provider's
        // own would fold identical ones pending together).
        let (sender, channel) = (other_pool.clone(), names[0].clone());
        let flood = tokio::spawn(async move {
            for i in 0..SENT {
                sqlx::query("SELECT pg_catalog.pg_notify($1, 'orchestrator')")
                    .bind(&channel)
                    .execute(&sender)
                    .await
                    .unwrap_or_else(|e| panic!("notify {i}: {e}"));
            }
        });
        let mut joined = Vec::new();
        for name in &names[1..] {
            joined.push(provider_on(&pool, name, SqlMode::StoredProcedures, true).await);
        }
        flood.await.unwrap_or_else(|e| panic!("join: {e}"));
        for p in &joined {
            subscribed(p).await;
        }
        eventually("every notification received", || async {
            a.notification_stats()
                .is_some_and(|s| s.received - before.received >= SENT)
        })
        .await;
        let stats = a.notification_stats().unwrap_or_default();
        assert_eq!(stats.received - before.received, SENT, "each one once");
        assert_eq!(stats.connections, 1, "no reconnect, no protocol error");
        other_pool.close().await;
    })
    .await;
}

/// When a schema's last provider on a pool is dropped (with its clones),
/// the pool's listener stops listening to that schema: its notifications no
/// longer arrive, while the other tenant's still do on the same connection.
/// A provider that joins the schema again is listened to again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tenant_is_unlistened_and_a_returning_one_listened_again() {
    with_schemas("notify_leave", 2, |pool, names, app| async move {
        let stays = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        let leaves = provider_on(&pool, &names[1], SqlMode::StoredProcedures, true).await;
        let twin = leaves.clone();
        subscribed(&stays).await;
        subscribed(&leaves).await;
        let channels = || stays.notification_stats().unwrap_or_default().channels;
        assert_eq!(channels(), 2, "both schemas listened to");
        assert_eq!(listeners(&pool, &app).await.len(), 1, "one listener");

        // The provider and every clone of it.
        drop(leaves);
        drop(twin);
        eventually("the schema is unlistened", || async { channels() == 1 }).await;

        // Notifications for the dropped schema, then for the remaining
        // one, committed in that order and so delivered in that order: when
        // the remaining tenant's waiter is woken by its notification, the
        // first would have been received already, had it been listened to.
        let other_pool = tagged_pool("notify_leave_other").await;
        let gone = provider_on(&other_pool, &names[1], SqlMode::StoredProcedures, false).await;
        let here = provider_on(&other_pool, &names[0], SqlMode::StoredProcedures, false).await;
        let stats = || stays.notification_stats().unwrap_or_default();
        // A delayed item gives the queue a due time, so an empty fetch
        // leaves a quiet note and the waiter below goes straight to waiting
        // (observable as a skip): it can only be woken by a notification.
        let received = stats().received;
        here.enqueue_for_orchestrator(start("later"), Some(Duration::from_secs(600)))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        eventually("the delayed enqueue is received", || async {
            stats().received > received
        })
        .await;
        let none = stays
            .fetch_orchestration_item(LOCK, Duration::from_millis(50), None)
            .await
            .unwrap_or_else(|e| panic!("fetch: {e}"));
        assert!(none.is_none(), "nothing claimable yet");
        let (before, skips) = (stats().received, stats().quiet_skips);
        let fetch = waiting_fetch(&stays, LONG);
        eventually("the waiter is waiting", || async {
            stats().quiet_skips > skips
        })
        .await;
        gone.enqueue_for_orchestrator(start("unheard"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        here.enqueue_for_orchestrator(start("heard"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        assert_eq!(claimed(fetch).await.as_deref(), Some("heard"));
        assert_eq!(
            stats().received,
            before + 1,
            "only the listened schema's notification arrived"
        );
        assert_eq!(stats().connections, 1, "the same connection, no reconnect");

        let back = provider_on(&pool, &names[1], SqlMode::StoredProcedures, true).await;
        subscribed(&back).await;
        assert_eq!(channels(), 2, "listened to again");
        let before = stats().received;
        gone.enqueue_for_orchestrator(start("heard-again"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        eventually("its notifications arrive again", || async {
            stats().received > before
        })
        .await;
        other_pool.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_one_pool_share_a_listener_and_do_not_wake_each_other() {
    with_schemas("notify_tenants", 2, |pool, names, app| async move {
        let a = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        let b = provider_on(&pool, &names[1], SqlMode::StoredProcedures, true).await;
        subscribed(&a).await;
        subscribed(&b).await;
        assert_eq!(
            listeners(&pool, &app).await.len(),
            1,
            "one listener per pool"
        );

        let poll = Duration::from_millis(1500);
        let begun = Instant::now();
        let fetch = waiting_fetch(&a, poll);
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.enqueue_for_orchestrator(start("for-b"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        assert!(
            claimed(fetch).await.is_none(),
            "tenant a sees nothing of tenant b"
        );
        assert!(begun.elapsed() >= poll, "tenant a slept to its timeout");
        let (item, _, _) = b
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("fetch b: {e}"))
            .unwrap_or_else(|| panic!("b's item is still there"));
        assert_eq!(item.instance, "for-b");
    })
    .await;
}

/// The procedures say what to wake and leave the notifying to the provider,
/// after the commit: called directly, in one transaction that commits,
/// they return the wake-ups and no notification arrives (a marker sent
/// after the commit arrives, and nothing before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_procedure_call_sends_no_notification_itself() {
    with_schemas("notify_fold", 1, |pool, names, _| async move {
        let p = provider_on(&pool, &names[0], SqlMode::StoredProcedures, true).await;
        subscribed(&p).await;
        let before = p.notification_stats().map_or(0, |s| s.received);
        let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
        for i in 0..5 {
            let wake: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT \"{}\".{}($1, 'StartOrchestration', 'x', 0)",
                names[0],
                duroxide_postgres::SchemaName::new(&names[0])
                    .map(|n| n.procedure_name("enqueue_orchestrator_item"))
                    .unwrap_or_else(|e| panic!("{e}"))
            )))
            .bind(format!("fold-{i}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("enqueue {i}: {e}"));
            assert_eq!(wake, ["orchestrator"], "what to wake, returned");
        }
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        // Notifications arrive in commit order: the marker comes after any
        // the enqueues' transaction sent.
        sqlx::query("SELECT pg_catalog.pg_notify($1, 'marker')")
            .bind(&names[0])
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("marker: {e}"));
        eventually("the marker", || async {
            p.notification_stats().map_or(0, |s| s.received) > before
        })
        .await;
        // Nothing else is coming: give a second one time to arrive, then count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            p.notification_stats().map_or(0, |s| s.received),
            before + 1,
            "the marker only: five enqueues committed, none notified inside"
        );
    })
    .await;
}

/// Starts `instance` with activities `2..2 + activities` scheduled, completes
/// activity 2, and returns once its completion is queued, with the instant
/// just before that completion's ack was sent.
async fn fan_out_with_one_done(p: &PostgresProvider, instance: &str, activities: u64) -> Instant {
    use crate::fixtures::{activity, completion, event, metadata};
    p.enqueue_for_orchestrator(start(instance), None)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}"))
        .unwrap_or_else(|| panic!("{instance} starts"));
    let scheduled: Vec<_> = (2..2 + activities)
        .map(|id| activity(instance, id))
        .collect();
    p.ack_orchestration_item(
        &token,
        1,
        vec![event(instance, 1)],
        scheduled,
        vec![],
        metadata(),
        vec![],
    )
    .await
    .unwrap_or_else(|e| panic!("ack: {e}"));
    let (_, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("fetch work: {e}"))
        .unwrap_or_else(|| panic!("{instance}'s first activity"));
    let completing = Instant::now();
    p.ack_work_item(&token, Some(completion(instance, 2)))
        .await
        .unwrap_or_else(|e| panic!("ack work: {e}"));
    completing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_with_siblings_in_flight_settles_and_a_last_one_does_not() {
    const SETTLE: Duration = Duration::from_millis(1500);
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        // (activities scheduled, poll timeout, whether the fetch should wait)
        let cases = [
            (2, LONG, true),            // a sibling still queued: wait for it, at most SETTLE
            (1, LONG, false),           // the only activity: taken at once
            (2, Duration::ZERO, false), // a fetch that does not long-poll never waits
        ];
        with_schemas("notify_settle", cases.len(), |pool, names, _| async move {
            for ((activities, poll, waits), schema) in cases.into_iter().zip(&names) {
                let p = settling_provider(&pool, schema, mode, SETTLE).await;
                // The completion is stamped while its ack runs, so the settle
                // time counts from no earlier than just before the ack; how
                // long the ack itself took (a loaded machine) is not known.
                let completing = fan_out_with_one_done(&p, "fan-out", activities).await;
                let begun = Instant::now();
                let fetched = p
                    .fetch_orchestration_item(LOCK, poll, None)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                let waited = begun.elapsed();
                let since_completion = completing.elapsed();
                let case = format!("{mode}, {activities} activities, poll {poll:?}");
                let (item, _, _) = fetched.unwrap_or_else(|| panic!("{case}: nothing fetched"));
                assert_eq!(item.messages.len(), 1, "{case}: the completion");
                if waits {
                    // 5 ms: the stamp is in whole milliseconds.
                    assert!(
                        since_completion + Duration::from_millis(5) >= SETTLE,
                        "{case}: taken before the settle time ({since_completion:?} after the ack began)"
                    );
                    assert!(
                        waited < LONG,
                        "{case}: taken at the settle time ({waited:?})"
                    );
                } else {
                    assert!(waited < SETTLE, "{case}: waited ({waited:?})");
                }
            }
        })
        .await;
    }
}

/// An absurdly long `completion_settle` (`Duration::MAX`) is a settle that
/// never ends while siblings are in flight, not an arithmetic error in the
/// fetch: a settling completion waits out the poll timeout, and a lone
/// completion is still taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_settle_time_is_not_an_error() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("notify_settle_max", 2, |pool, names, _| async move {
            for ((activities, claimed), schema) in [(2, false), (1, true)].into_iter().zip(&names) {
                let p = settling_provider(&pool, schema, mode, Duration::MAX).await;
                fan_out_with_one_done(&p, "forever", activities).await;
                let fetched = p
                    .fetch_orchestration_item(LOCK, Duration::from_millis(300), None)
                    .await
                    .unwrap_or_else(|e| panic!("{mode}, {activities} activities: fetch: {e}"));
                assert_eq!(
                    fetched.is_some(),
                    claimed,
                    "{mode}, {activities} activities: claimed"
                );
            }
        })
        .await;
    }
}

/// The settle window restarts at each completion: an instance with an
/// activity still in flight waits until its newest completion is the settle
/// time old, not its oldest, so completions that trickle in land in one turn;
/// but it waits no longer than five settle times after its oldest completion.
/// The completions' visibility times are set directly, so the expected claim
/// time does not depend on how fast this machine runs the set-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_window_restarts_at_each_completion_up_to_a_cap() {
    use crate::fixtures::completion;
    const SETTLE: Duration = Duration::from_secs(2);
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        // (name, oldest completion's age, newest's age, expected wait from
        // the update, claimed before): restarting, the newest decides (2000 -
        // 400); capped, the oldest does (5 × 2000 - 9700) while the newest
        // alone would hold the instance back until 1800.
        let cases = [
            ("restart", 1800_u64, 400_u64, 1600_u64, LONG),
            ("cap", 9700, 200, 300, Duration::from_millis(1200)),
        ];
        with_schemas("notify_resettle", cases.len(), |pool, names, _| async move {
            for ((case, oldest, newest, expected, before), schema) in cases.into_iter().zip(&names)
            {
                let p = settling_provider(&pool, schema, mode, SETTLE).await;
                // Activities 2, 3 and 4: 2 and 3 complete, 4 stays queued.
                fan_out_with_one_done(&p, "trickle", 3).await;
                let (_, token, _) = p
                    .fetch_work_item(LOCK, Duration::ZERO, None, &Default::default())
                    .await
                    .unwrap_or_else(|e| panic!("fetch work: {e}"))
                    .unwrap_or_else(|| panic!("the second activity"));
                p.ack_work_item(&token, Some(completion("trickle", 3)))
                    .await
                    .unwrap_or_else(|e| panic!("ack work: {e}"));
                let updated = Instant::now();
                let aged = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE \"{schema}\".orchestrator_queue q \
                        SET visible_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                                            - CASE WHEN q.id = (SELECT min(id) FROM \"{schema}\".orchestrator_queue) \
                                                   THEN $1::bigint ELSE $2::bigint END"
                ).to_string()))
                .bind(i64::try_from(oldest).unwrap_or(i64::MAX))
                .bind(i64::try_from(newest).unwrap_or(i64::MAX))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("age the completions: {e}"));
                assert_eq!(aged.rows_affected(), 2, "{mode}, {case}: two completions queued");
                // Aged behind the provider's back, the completions now lie
                // below the scan floor `p` keeps, which only its next full
                // scan, up to 10 s later, would look under (src/scan_floor.rs).
                p.probe_forget_scan_floors();
                let fetched = p
                    .fetch_orchestration_item(LOCK, LONG, None)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                let waited = updated.elapsed();
                let label = format!("{mode}, {case}");
                let (item, _, _) = fetched.unwrap_or_else(|| panic!("{label}: nothing fetched"));
                assert_eq!(item.messages.len(), 2, "{label}: both completions in one turn");
                // 5 ms: the times are in whole milliseconds.
                assert!(
                    waited + Duration::from_millis(5) >= Duration::from_millis(expected),
                    "{label}: taken after {waited:?}, before {expected} ms"
                );
                assert!(waited < before, "{label}: taken after {waited:?}");
            }
        })
        .await;
    }
}
