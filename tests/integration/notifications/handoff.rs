//! A wake-up that reaches a waiter that cannot use the work is passed on:
//! the waiter whose session owns the item, or whose capability filter
//! admits it, is woken at once, not at its poll timeout, and an idle queue
//! costs no fetches for it afterwards.

use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, Provider, ProviderError, SemverRange, SessionFetchConfig,
    TagFilter, WorkItem,
};
use duroxide_postgres::{PostgresProvider, SqlMode};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{LOCK, LONG, eventually, subscribed, tagged_pool, with_schemas};
use crate::fixtures::{completion, event, metadata, start};
use crate::support::provider_on;

/// Well under [`LONG`], the waiters' poll timeout.
const PROMPT: Duration = Duration::from_secs(5);

fn queries(p: &PostgresProvider) -> u64 {
    p.notification_stats().unwrap_or_default().queries
}

/// Starts `fetch` on a clone of `p` once the fetches before it are
/// waiting: it is registered after them, so a notification wakes them
/// first (tokio's `Notify` wakes the oldest waiter).
async fn waiter<T, F, Fut>(p: &PostgresProvider, fetch: F) -> JoinHandle<(Option<T>, Duration)>
where
    T: Send + 'static,
    F: FnOnce(PostgresProvider) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ProviderError>> + Send + 'static,
{
    let before = queries(p);
    let fetch = fetch(p.clone());
    let handle = tokio::spawn(async move {
        let begun = Instant::now();
        let found = fetch.await.unwrap_or_else(|e| panic!("fetch: {e}"));
        (found, begun.elapsed())
    });
    eventually("the waiter's first fetch", || async { queries(p) > before }).await;
    handle
}

/// Checks the pass: `claimer` gets the item promptly after `commit`, and
/// the queue then stays quiet while `other` keeps waiting.
async fn assert_handed_on<T>(
    what: &str,
    p: &PostgresProvider,
    other: JoinHandle<(Option<T>, Duration)>,
    claimer: JoinHandle<(Option<T>, Duration)>,
    commit: impl std::future::Future<Output = ()>,
) {
    // Both first fetches have returned empty-handed and wait (a fetch
    // still running at the commit could claim the item by itself).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = queries(p);
    let handed = p.notification_stats().unwrap_or_default().handed_on;
    let committed = Instant::now();
    commit.await;
    let (found, _) = claimer.await.unwrap_or_else(|e| panic!("join: {e}"));
    let took = committed.elapsed();
    assert!(found.is_some(), "{what}: the item is claimed");
    assert!(took < PROMPT, "{what}: claimed {took:?} after the commit");
    let sent = queries(p) - before;
    assert!(sent <= 3, "{what}: {sent} fetches for one notification");
    let handed = p.notification_stats().unwrap_or_default().handed_on - handed;
    assert_eq!(handed, 1, "{what}: the wake-up was handed on once");

    // Idle: the other waiter sleeps on; no fetch storm.
    let idle = queries(p);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = queries(p) - idle;
    assert!(sent <= 1, "{what}: {sent} fetches in 2 s idle");
    assert!(!other.is_finished(), "{what}: the other waiter still waits");
    other.abort();
}

fn session_activity(instance: &str, id: u64) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        name: "Work".to_string(),
        input: id.to_string(),
        session_id: Some("s1".to_string()),
        tag: None,
    }
}

fn slot(owner: &str) -> SessionFetchConfig {
    SessionFetchConfig {
        owner_id: owner.to_string(),
        lock_timeout: Duration::from_secs(120),
    }
}

/// Two worker slots, each its own session owner; an activity of a session
/// the second owns is committed. The notification wakes the first (it
/// waited longest), which cannot take it and passes the wake-up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_for_a_session_wakes_the_slot_that_owns_it() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("handoff_session", 1, |pool, names, _| async move {
            let p = provider_on(&pool, &names[0], mode, true).await;
            subscribed(&p).await;
            // Slot b owns session s1 for two minutes.
            p.enqueue_for_worker(session_activity("owned", 2))
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let (_, token, _) = p
                .fetch_work_item(LOCK, Duration::ZERO, Some(&slot("b")), &TagFilter::Any)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"))
                .unwrap_or_else(|| panic!("{mode}: slot b takes the session"));
            p.ack_work_item(&token, Some(completion("owned", 2)))
                .await
                .unwrap_or_else(|e| panic!("ack: {e}"));

            let fetch = |owner: &'static str| {
                move |p: PostgresProvider| async move {
                    p.fetch_work_item(LOCK, LONG, Some(&slot(owner)), &TagFilter::Any)
                        .await
                        .map(|found| found.map(|(item, _, _)| item))
                }
            };
            let a = waiter(&p, fetch("a")).await;
            let b = waiter(&p, fetch("b")).await;
            let other_pool = tagged_pool("handoff_session_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            let commit = async {
                enqueuer
                    .enqueue_for_worker(session_activity("owned", 3))
                    .await
                    .unwrap_or_else(|e| panic!("enqueue: {e}"));
            };
            assert_handed_on(&format!("{mode}"), &p, a, b, commit).await;
            other_pool.close().await;
        })
        .await;
    }
}

fn only(version: semver::Version) -> DispatcherCapabilityFilter {
    DispatcherCapabilityFilter {
        supported_duroxide_versions: vec![SemverRange::new(version.clone(), version)],
    }
}

/// Two orchestration dispatchers with disjoint capability filters; a message
/// for an instance pinned to the second's version is committed. The first
/// is woken (it waited longest), cannot take it and passes the wake-up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_pinned_instance_wakes_the_dispatcher_that_can_run_it() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("handoff_filter", 1, |pool, names, _| async move {
            let p = provider_on(&pool, &names[0], mode, true).await;
            subscribed(&p).await;
            // The instance runs pinned to 2.0.0.
            p.enqueue_for_orchestrator(start("pinned"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            let (_, token, _) = p
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("fetch: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the start is fetched"));
            let pinned = duroxide::providers::ExecutionMetadata {
                pinned_duroxide_version: Some(semver::Version::new(2, 0, 0)),
                ..metadata()
            };
            p.ack_orchestration_item(
                &token,
                1,
                vec![event("pinned", 1)],
                vec![],
                vec![],
                pinned,
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("ack: {e}"));

            let fetch = |major: u64| {
                move |p: PostgresProvider| async move {
                    let filter = only(semver::Version::new(major, 0, 0));
                    p.fetch_orchestration_item(LOCK, LONG, Some(&filter))
                        .await
                        .map(|found| found.map(|(item, _, _)| item.instance))
                }
            };
            let v1 = waiter(&p, fetch(1)).await;
            let v2 = waiter(&p, fetch(2)).await;
            let other_pool = tagged_pool("handoff_filter_other").await;
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            let commit = async {
                let raised = WorkItem::ExternalRaised {
                    instance: "pinned".to_string(),
                    name: "go".to_string(),
                    data: "{}".to_string(),
                };
                enqueuer
                    .enqueue_for_orchestrator(raised, None)
                    .await
                    .unwrap_or_else(|e| panic!("enqueue: {e}"));
            };
            assert_handed_on(&format!("{mode}"), &p, v1, v2, commit).await;
            other_pool.close().await;
        })
        .await;
    }
}
