//! Quiet notes: a fetch that left its queue empty (found nothing, or claimed
//! all there was) lets the next fetch with the same parameters wait without
//! a query until a notification or a due time, and anything that makes work
//! claimable (an enqueue, the claimer's own ack) invalidates the note.
//! Waiters that wake at one due time send one fetch between them.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::{
    LOCK, LONG, claimed, eventually, subscribed, tagged_pool, waiting_fetch, with_schemas,
};
use crate::fixtures::{self, activity, event, metadata, start};
use crate::support::{Kind, Slot, provider_on};

/// How long a quiet note holds at most (the provider's `QUIET_MAX`).
const NOTE_HOLDS: Duration = Duration::from_secs(1);

/// A poll timeout for fetches expected to find nothing.
const SHORT: Duration = Duration::from_millis(50);

const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// A connection held for the silent writes, taken before the fetch whose
/// note they must fall within: a quiet note holds for at most a second, and
/// a write that first waited for a pooled connection could outlast it on a
/// loaded machine (the suite's first seconds saw 6–8 s acquires).
async fn writer(pool: &PgPool) -> PoolConnection<Postgres> {
    pool.acquire()
        .await
        .unwrap_or_else(|e| panic!("writer connection: {e}"))
}

/// Writes a claimable start of `instance` behind the provider's back: no
/// notification.
async fn silent_start(conn: &mut PgConnection, schema: &str, instance: &str) {
    let json = fixtures::json(&start(instance));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".orchestrator_queue \
         (instance_id, item_kind, work_item, visible_at_ms, created_at_ms) \
         VALUES ($1, 'StartOrchestration', $2, {NOW_MS}, {NOW_MS})"
    )))
    .bind(instance)
    .bind(json)
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("silent insert: {e}"));
}

/// Writes a claimable activity of `instance` behind the provider's back.
async fn silent_activity(conn: &mut PgConnection, schema: &str, instance: &str) {
    let json = fixtures::json(&activity(instance, 2));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".worker_queue \
         (work_item, visible_at_ms, instance_id, execution_id, activity_id, created_at_ms) \
         VALUES ($1, {NOW_MS}, $2, 1, 2, {NOW_MS})"
    )))
    .bind(json)
    .bind(instance)
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("silent insert: {e}"));
}

/// Waits until the waiter's listener has received one more notification
/// than `before`, so a fetch begun after this reads the count it bumped.
async fn notified(p: &PostgresProvider, before: u64) {
    eventually("the notification is received", || async {
        p.notification_stats().is_some_and(|s| s.received > before)
    })
    .await;
}

fn received(p: &PostgresProvider) -> u64 {
    p.notification_stats().unwrap_or_default().received
}

fn quiet_skips(p: &PostgresProvider) -> u64 {
    p.notification_stats().unwrap_or_default().quiet_skips
}

fn queries(p: &PostgresProvider) -> u64 {
    p.notification_stats().unwrap_or_default().queries
}

/// A fetch right after an empty one with the same parameters, with no
/// notification in between, goes straight to waiting without a query: a
/// message written without a notification stays unseen by it, while a fetch
/// with other parameters (a capability filter) queries and claims it. A
/// waiter that skipped its query still wakes for the next commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_after_an_empty_one_waits_without_a_query_until_notified() {
    use duroxide::providers::DispatcherCapabilityFilter;
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("notify_quiet", 1, |pool, names, _| async move {
            let waiter = std::sync::Arc::new(provider_on(&pool, &names[0], mode, true).await);
            let other_pool = tagged_pool("notify_quiet_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            let mut writer = writer(&other_pool).await;
            eventually("listener up", || async {
                waiter.notification_stats().is_some_and(|s| s.connected && s.subscribed)
            })
            .await;
            let stats = || waiter.notification_stats().unwrap_or_default();
            let short = Duration::from_millis(50);

            // A live lease: the queue has a next due time (its expiry).
            enqueuer
                .enqueue_for_orchestrator(start("held"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let held = waiter
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert!(held.is_some(), "{mode}: the first instance is claimed");

            // A note is left only while the listener is subscribed (waited
            // for above), holds for at most QUIET_MAX, and ends when the
            // listener receives a notification or reconnects. When the
            // silent write took longer (the suite's first seconds can hold a
            // statement that long), or a notification came in meanwhile (the
            // enqueue's above is sent after its commit, and can arrive late
            // when the pool is slow to lend a connection), the next fetch
            // rightly queried and claimed the silent instance, which it
            // keeps; the steps run again with another one, and say so on
            // stderr. A query while the note still held fails.
            let mut silent = String::new();
            for attempt in 1..=5 {
                silent = format!("silent{attempt}");
                // What ends a note besides its time: a notification, or the
                // listener reconnecting (it wakes every waiter).
                let listened = || {
                    let s = stats();
                    s.received + s.connections
                };
                let heard = listened();
                // Empty: this fetch queries and leaves its note.
                let none = waiter
                    .fetch_orchestration_item(LOCK, short, None)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                assert!(none.is_none(), "{mode}: nothing claimable yet");
                // The note is at least this old when the next fetch starts.
                let noted_by = Instant::now();
                // Work written behind the provider's back: no notification.
                silent_start(&mut writer, &names[0], &silent).await;
                let skips = stats().quiet_skips;
                let age = noted_by.elapsed();
                let unseen = waiter
                    .fetch_orchestration_item(LOCK, short, None)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                if unseen.is_none() {
                    assert!(stats().quiet_skips > skips, "{mode}: counted as skipped");
                    break;
                }
                let notifications = listened() - heard;
                assert!(
                    (age > NOTE_HOLDS || notifications > 0) && attempt < 5,
                    "{mode}: the same parameters sent no query (attempt {attempt}, the note at least {age:?} old, {notifications} notification(s) or reconnection(s))"
                );
                let line = format!(
                    "note: {mode}: the note was at least {age:?} old when the fetch began (it holds {NOTE_HOLDS:?}) and {notifications} notification(s) or reconnection(s) came in; running the steps again\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
            let filter = DispatcherCapabilityFilter::default_for_current_build();
            let seen = waiter
                .fetch_orchestration_item(LOCK, short, Some(&filter))
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert_eq!(
                seen.map(|(item, _, _)| item.instance).as_deref(),
                Some(silent.as_str()),
                "{mode}: other parameters query"
            );

            // A waiter that skips its query still wakes for a commit. The
            // queue keeps one note, and the filtered claim just replaced it
            // with its own: an empty fetch notes the queue again first.
            let none = waiter
                .fetch_orchestration_item(LOCK, short, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert!(none.is_none(), "{mode}: nothing claimable");
            let (skips, wakeups) = (stats().quiet_skips, stats().wakeups);
            let fetch = waiting_fetch(&waiter, LONG);
            eventually("the waiter skipped its query", || async {
                stats().quiet_skips > skips
            })
            .await;
            enqueuer
                .enqueue_for_orchestrator(start("woken"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            assert_eq!(claimed(fetch).await.as_deref(), Some("woken"), "{mode}");
            assert!(
                stats().wakeups > wakeups,
                "{mode}: woken by the notification"
            );
            drop(writer);
            other_pool.close().await;
        })
        .await;
    }
}

/// A claim that was all there was (the first candidate, nothing more ready)
/// leaves the same note as an empty fetch: the dispatcher's next fetch waits
/// without a query, so work written without a notification stays unseen by
/// it. The claimer's own ack that schedules work for the queue (a timer)
/// notifies it, and the fetch after that notification queries and finds the
/// timer when it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_after_a_lone_claim_waits_without_a_query_until_its_ack_notifies() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("quiet_claim", 1, |pool, names, _| async move {
            let waiter = provider_on(&pool, &names[0], mode, true).await;
            let other_pool = tagged_pool("quiet_claim_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            let mut writer = writer(&other_pool).await;
            subscribed(&waiter).await;

            let before = received(&waiter);
            enqueuer
                .enqueue_for_orchestrator(start("only"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            notified(&waiter, before).await;
            let (item, token, _) = waiter
                .fetch_orchestration_item(LOCK, SHORT, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the only instance is claimed"));
            assert_eq!(item.instance, "only", "{mode}");

            silent_start(&mut writer, &names[0], "silent").await;
            let skips = quiet_skips(&waiter);
            let unseen = waiter
                .fetch_orchestration_item(LOCK, SHORT, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert!(unseen.is_none(), "{mode}: the claim's note held, no query");
            assert!(quiet_skips(&waiter) > skips, "{mode}: counted as skipped");
            // Take the silent one out of the way (other parameters query).
            let filter =
                duroxide::providers::DispatcherCapabilityFilter::default_for_current_build();
            let seen = waiter
                .fetch_orchestration_item(LOCK, SHORT, Some(&filter))
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert_eq!(
                seen.map(|(item, _, _)| item.instance).as_deref(),
                Some("silent"),
                "{mode}"
            );

            // The claimer's ack schedules a timer for its instance.
            let now_ms = u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX);
            let timer = WorkItem::TimerFired {
                instance: "only".to_string(),
                execution_id: 1,
                id: 2,
                fire_at_ms: now_ms + 200,
            };
            let before = received(&waiter);
            waiter
                .ack_orchestration_item(
                    &token,
                    1,
                    vec![event("only", 1)],
                    vec![],
                    vec![timer],
                    metadata(),
                    vec![],
                )
                .await
                .unwrap_or_else(|e| panic!("ack: {e}"));
            notified(&waiter, before).await;
            let skips = quiet_skips(&waiter);
            let fired = waiter
                .fetch_orchestration_item(LOCK, LONG, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the timer is fetched"));
            assert_eq!(fired.0.instance, "only", "{mode}");
            assert!(
                matches!(fired.0.messages.as_slice(), [WorkItem::TimerFired { .. }]),
                "{mode}: {:?}",
                fired.0.messages
            );
            assert_eq!(
                quiet_skips(&waiter),
                skips,
                "{mode}: the ack's notification voided the note"
            );
            drop(writer);
            other_pool.close().await;
        })
        .await;
    }
}

/// The same for the worker queue: after claiming the only activity, the
/// worker's next fetch waits without a query (an activity written without
/// a notification stays unseen) and still wakes for the next enqueue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_fetch_after_a_lone_claim_waits_without_a_query_until_notified() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("quiet_work", 1, |pool, names, _| async move {
            let waiter = std::sync::Arc::new(provider_on(&pool, &names[0], mode, true).await);
            let other_pool = tagged_pool("quiet_work_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            let mut writer = writer(&other_pool).await;
            subscribed(&waiter).await;
            let tags = Default::default();

            // The claim's note holds for at most NOTE_HOLDS from the
            // claim's start. When the silent write made the next fetch start
            // later than that (a loaded machine), that fetch rightly queried
            // and claimed the silent activity; the steps run again with
            // another one, and say so on stderr. A query while the note
            // still held fails.
            for attempt in 1..=5 {
                let before = received(&waiter);
                enqueuer
                    .enqueue_for_worker(activity(&format!("only{attempt}"), 2))
                    .await
                    .unwrap_or_else(|e| panic!("enqueue: {e}"));
                notified(&waiter, before).await;
                let heard = received(&waiter);
                let claim_began = Instant::now();
                let claimed_one = waiter
                    .fetch_work_item(LOCK, SHORT, None, &tags)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                assert!(
                    claimed_one.is_some(),
                    "{mode}: the only activity is claimed"
                );

                silent_activity(&mut writer, &names[0], &format!("silent{attempt}")).await;
                let skips = quiet_skips(&waiter);
                let age = claim_began.elapsed();
                let unseen = waiter
                    .fetch_work_item(LOCK, SHORT, None, &tags)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                if unseen.is_none() {
                    assert!(quiet_skips(&waiter) > skips, "{mode}: counted as skipped");
                    break;
                }
                let notifications = received(&waiter) - heard;
                assert!(
                    age > NOTE_HOLDS && attempt < 5,
                    "{mode}: the claim's note held, no query (attempt {attempt}, the next fetch began {age:?} after the claim, {notifications} notification(s) since)"
                );
                let line = format!(
                    "note: {mode}: the next fetch began {age:?} after the claim (its note holds at most {NOTE_HOLDS:?}); running the steps again\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }

            // A waiter that skipped its query wakes for the next enqueue.
            let skips = quiet_skips(&waiter);
            let fetch = {
                let waiter = waiter.clone();
                tokio::spawn(async move {
                    waiter
                        .fetch_work_item(LOCK, LONG, None, &Default::default())
                        .await
                })
            };
            eventually("the waiter skipped its query", || async {
                quiet_skips(&waiter) > skips
            })
            .await;
            enqueuer
                .enqueue_for_worker(activity("woken", 2))
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let woken = fetch
                .await
                .unwrap_or_else(|e| panic!("join: {e}"))
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert!(woken.is_some(), "{mode}: woken by the enqueue");
            drop(writer);
            other_pool.close().await;
        })
        .await;
    }
}

/// Waiters that learnt one due time wake at it together; one fetches and
/// the others take its outcome (`followed`) instead of racing it with
/// statements of their own. Here that fetch claims the delayed item, all there was, and
/// its note keeps the other three waiting without a query until their poll
/// timeout. Each waiter must have read the note before the item is due
/// (900 ms), so the test runs apart from the suite, as its lock-timing tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_woken_at_one_due_time_send_one_fetch_between_them() {
    let _slot = Slot::acquire(Kind::LockTiming);
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("quiet_due", 1, |pool, names, _| async move {
            let p = provider_on(&pool, &names[0], mode, true).await;
            subscribed(&p).await;
            // Warm the provider's connection first: its first fetch
            // resolves and compiles the fetch, which on a server holding
            // thousands of other tenants can outlast the delay below. The
            // timed part is about wake-ups, not that cold start. (The pool's
            // one idle connection, beside the listener's, serves both.)
            let warm = p
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("warm-up fetch: {e}"));
            assert!(warm.is_none(), "{mode}: nothing queued yet");
            // Under the 1 s a note is trusted for: one note covers the wait.
            let delay = Duration::from_millis(900);
            let before = received(&p);
            p.enqueue_for_orchestrator(start("due"), Some(delay))
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            notified(&p, before).await;
            // Queries, finds the item not yet due, and notes the queue quiet
            // until it is: the waiters below all learn that one due time.
            let early = p
                .fetch_orchestration_item(LOCK, SHORT, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"));
            assert!(early.is_none(), "{mode}: not due yet");
            let sent = queries(&p);

            let poll = delay + Duration::from_millis(400);
            let waiters: Vec<_> = (0..4).map(|_| waiting_fetch(&p, poll)).collect();
            let mut instances = Vec::new();
            for waiter in waiters {
                instances.extend(claimed(waiter).await);
            }
            assert_eq!(instances, ["due"], "{mode}: one waiter claims the item");
            // The others followed that fetch, or woke after it and found
            // its note; either way without a statement.
            assert_eq!(
                queries(&p) - sent,
                1,
                "{mode}: one fetch statement between the four waiters"
            );
        })
        .await;
    }
}
