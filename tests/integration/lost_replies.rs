//! Acks whose reply was lost: the request reached the server and committed,
//! and then the connection dropped, or the provider gave up on it after
//! `PostgresOptions::call_timeout` (a server stalled on a slow disk answers
//! after the client stopped listening). The ack is tried again, by the
//! provider within `acquire_timeout` or by duroxide's runtime after that,
//! and that attempt finds its lock token gone: released by the commit it
//! cannot see. Such an ack must report success, as its work is done,
//! without writing it twice; an ack that did not land must still fail once
//! its lease has moved on.
//!
//! The tests reach the server through [`Proxy`], which loses one request or
//! one reply on purpose ([`Proxy::lose`]). Claims whose reply was lost are
//! in [`claims`].

mod claims;

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, ProviderError, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::{ack_first_turn, activity, completion, start};
use crate::stalls::{HUNG, Loss, Proxy, all_idle, bounded, options, pool_through, provider};
use crate::support::{TestSchema, in_both_modes, with_schema};

/// A lease long enough for the test.
const LEASE: Duration = Duration::from_secs(30);

/// What marks the request that commits an ack of lease `token`: the call
/// itself in procedure mode (it binds the token); the transaction's
/// `COMMIT` inline (a simple query, ending in a NUL; after a newline when
/// it is `inline/durable_commit.sql`), whose earlier statements must come
/// back answered for it to be sent at all.
fn commit_of(mode: SqlMode, token: &str) -> Vec<Vec<u8>> {
    match mode {
        SqlMode::StoredProcedures => vec![token.as_bytes().to_vec()],
        _ => vec![b"COMMIT\0".to_vec(), b"COMMIT\n\0".to_vec()],
    }
}

/// [`Proxy::lose`] with the patterns of [`commit_of`].
fn lose(proxy: &Proxy, patterns: &[Vec<u8>], loss: Loss) {
    let patterns: Vec<&[u8]> = patterns.iter().map(Vec::as_slice).collect();
    proxy.lose(&patterns, loss);
}

/// A proxy (shared, for tasks of the test's own), a pool of `size` through
/// it and a provider in `mode` with `options` on `schema` over that pool.
async fn through_proxy(
    schema: &TestSchema,
    mode: SqlMode,
    options: PostgresOptions,
    size: u32,
) -> (Arc<Proxy>, PgPool, Arc<PostgresProvider>) {
    let proxy = Arc::new(Proxy::start("lost").await);
    let pool = pool_through(&proxy, &options, size).await;
    let p = provider(&pool, schema, mode, options).await;
    (proxy, pool, p)
}

/// Claims `instance`'s first turn, leased for `lease`.
async fn claim_turn(p: &PostgresProvider, instance: &str, lease: Duration) -> String {
    let (item, token, _) = p
        .fetch_orchestration_item(lease, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e:?}"))
        .unwrap_or_else(|| panic!("a turn of {instance} to claim"));
    assert_eq!(item.instance, instance);
    token
}

/// The orchestrator and worker queues' depths.
async fn depths(p: &PostgresProvider) -> (usize, usize) {
    let d = p
        .get_queue_depths()
        .await
        .unwrap_or_else(|e| panic!("queue depths: {e:?}"));
    (d.orchestrator_queue, d.worker_queue)
}

/// Claims the next activity, leased for `lease`; its token.
async fn claim_activity(p: &PostgresProvider, mode: SqlMode, lease: Duration) -> String {
    let (_, token, _) = p
        .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::Any)
        .await
        .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
        .unwrap_or_else(|| panic!("{mode}: an activity to claim"));
    token
}

/// The token of the first claim `claim` makes, trying until it makes one.
async fn claimed_again<F, Fut>(what: &str, mut claim: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    bounded(what, async {
        loop {
            if let Some(token) = claim().await {
                break token;
            }
        }
    })
    .await
}

/// Asserts that `ack`, an ack that never landed and whose lease moved on,
/// failed with the token unknown, permanently.
async fn refused(mode: SqlMode, ack: tokio::task::JoinHandle<Result<(), ProviderError>>) {
    let outcome = tokio::time::timeout(HUNG, ack)
        .await
        .unwrap_or_else(|_| panic!("{mode}: the lost ack still waits"))
        .unwrap_or_else(|e| panic!("{mode}: the ack's task: {e}"));
    let e = outcome.expect_err("an ack that never landed, its lease taken");
    assert!(
        !e.is_retryable() && e.message.starts_with("Invalid lock token"),
        "{mode}: the token unknown, permanently: {e:?}"
    );
}

/// Asserts that instance `lost`'s first turn was acked once: its one
/// event, nothing left queued.
async fn acked_once(p: &PostgresProvider, mode: SqlMode) {
    let history = p
        .read("lost")
        .await
        .unwrap_or_else(|e| panic!("{mode}: read: {e:?}"));
    assert_eq!(history.len(), 1, "{mode}: the turn's history once");
    assert_eq!(depths(p).await, (0, 0), "{mode}: nothing left queued");
}

in_both_modes!(a_turn_whose_reply_was_lost_counts_as_acked:
    a_turn_whose_reply_was_lost_counts_as_acked_procedures,
    a_turn_whose_reply_was_lost_counts_as_acked_inline);

/// The turn's ack commits and its reply is lost; the provider's own retry
/// (on a fresh connection, within `acquire_timeout`) finds the token gone,
/// sees the turn's history in place, and reports success. The history
/// holds the turn once, and nothing is left to claim.
async fn a_turn_whose_reply_was_lost_counts_as_acked(mode: SqlMode) {
    turn_reply_lost(mode, options(), false).await;
}

in_both_modes!(a_retried_ack_whose_first_reply_was_lost_counts_as_acked:
    a_retried_ack_whose_first_reply_was_lost_counts_as_acked_procedures,
    a_retried_ack_whose_first_reply_was_lost_counts_as_acked_inline);

/// With `acquire_timeout` shorter than `call_timeout` (as with the
/// defaults, both 30 s), the provider gives up on the ack whose reply was
/// lost and returns a retryable error; duroxide's runtime then calls the
/// ack again, which finds the token gone and must report success rather
/// than the permanent error that makes the runtime try to fail the
/// instance.
async fn a_retried_ack_whose_first_reply_was_lost_counts_as_acked(mode: SqlMode) {
    let options = options().acquire_timeout(Duration::from_millis(500));
    turn_reply_lost(mode, options, true).await;
}

/// A turn claimed and acked with `options`, the ack's reply lost; with
/// `gives_up`, the first call fails (retryable) and a second one, as the
/// runtime makes, follows.
async fn turn_reply_lost(mode: SqlMode, options: PostgresOptions, gives_up: bool) {
    with_schema("lost_turn", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options, 2).await;
        p.enqueue_for_orchestrator(start("lost"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        let token = claim_turn(&p, "lost", LEASE).await;
        all_idle(&pool).await;

        lose(&proxy, &commit_of(mode, &token), Loss::Reply);
        let mut acked = bounded("the ack", ack_first_turn(&*p, &token, "lost")).await;
        assert!(proxy.lost(), "{mode}: the ack's reply was not lost");
        if gives_up {
            let e = acked.expect_err("the first call outlasted acquire_timeout");
            assert!(e.is_retryable(), "{mode}: a lost reply is retryable: {e:?}");
            acked = bounded("the runtime's retry", ack_first_turn(&*p, &token, "lost")).await;
        }
        acked.unwrap_or_else(|e| panic!("{mode}: an ack whose commit landed failed: {e:?}"));
        acked_once(&p, mode).await;
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_activity_whose_reply_was_lost_counts_as_acked:
    an_activity_whose_reply_was_lost_counts_as_acked_procedures,
    an_activity_whose_reply_was_lost_counts_as_acked_inline);

/// An activity's ack, sent as a runtime's worker sends it (from the task
/// that fetched the activity, so it also claims the worker's next one),
/// commits and its reply is lost: the retry finds the token gone and the
/// activity no longer queued, and reports success. Its completion is
/// queued once.
async fn an_activity_whose_reply_was_lost_counts_as_acked(mode: SqlMode) {
    activity_reply_lost(mode, true).await;
}

in_both_modes!(an_activity_ack_alone_whose_reply_was_lost_counts_as_acked:
    an_activity_ack_alone_whose_reply_was_lost_counts_as_acked_procedures,
    an_activity_ack_alone_whose_reply_was_lost_counts_as_acked_inline);

/// The same for an ack sent from elsewhere than the fetching task, which
/// claims nothing (one statement in both modes).
async fn an_activity_ack_alone_whose_reply_was_lost_counts_as_acked(mode: SqlMode) {
    activity_reply_lost(mode, false).await;
}

/// An activity fetched and acked (on a task of its own when `in_task`, as a
/// runtime's worker does), the ack's reply lost.
async fn activity_reply_lost(mode: SqlMode, in_task: bool) {
    with_schema("lost_activity", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options(), 2).await;
        p.enqueue_for_worker(activity("lost", 1))
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        let worker = {
            let (p, pool, proxy) = (Arc::clone(&p), pool.clone(), Arc::clone(&proxy));
            async move {
                let token = claim_activity(&p, mode, LEASE).await;
                all_idle(&pool).await;
                // The ack claims the next activity in a transaction of its
                // own inline; alone, it is one statement in both modes.
                let commit = if in_task {
                    commit_of(mode, &token)
                } else {
                    vec![token.as_bytes().to_vec()]
                };
                lose(&proxy, &commit, Loss::Reply);
                bounded(
                    "the ack",
                    p.ack_work_item(&token, Some(completion("lost", 1))),
                )
                .await
            }
        };
        let acked = if in_task {
            tokio::spawn(worker)
                .await
                .unwrap_or_else(|e| panic!("{mode}: the worker's task: {e}"))
        } else {
            worker.await
        };
        acked.unwrap_or_else(|e| panic!("{mode}: an ack whose commit landed failed: {e:?}"));
        assert!(proxy.lost(), "{mode}: the ack's reply was not lost");
        assert_eq!(
            depths(&p).await,
            (1, 0),
            "{mode}: the completion queued once, the activity gone"
        );
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_ack_that_never_landed_still_fails_once_its_lease_moved_on:
    an_ack_that_never_landed_still_fails_once_its_lease_moved_on_procedures,
    an_ack_that_never_landed_still_fails_once_its_lease_moved_on_inline);

/// The request of a turn's ack is lost (it never reaches the server), its
/// lease runs out meanwhile and another fetch claims the turn: the retry
/// finds the token gone, and as the turn's history is not there, the ack
/// fails as before. The turn's new holder acks it.
async fn an_ack_that_never_landed_still_fails_once_its_lease_moved_on(mode: SqlMode) {
    with_schema("lost_request", |schema| async move {
        // Long enough for the lease to run out and move on while the first
        // attempt waits, short enough for the test.
        let options = options().call_timeout(Some(Duration::from_secs(3)));
        let (proxy, pool, p) = through_proxy(&schema, mode, options, 3).await;
        p.enqueue_for_orchestrator(start("moved"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        let first = claim_turn(&p, "moved", Duration::from_millis(200)).await;
        all_idle(&pool).await;

        // The token is bound by the ack's first statement in both modes.
        proxy.lose(&[first.as_bytes()], Loss::Request);
        let ack = tokio::spawn({
            let p = Arc::clone(&p);
            let first = first.clone();
            async move { ack_first_turn(&*p, &first, "moved").await }
        });
        let second = claimed_again("the turn claimed again", || async {
            p.fetch_orchestration_item(LEASE, Duration::from_millis(100), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
                .map(|(_, token, _)| token)
        })
        .await;
        assert!(proxy.lost(), "{mode}: the ack's request was not lost");
        refused(mode, ack).await;
        let history = p
            .read("moved")
            .await
            .unwrap_or_else(|e| panic!("{mode}: read: {e:?}"));
        assert!(history.is_empty(), "{mode}: nothing of the lost ack landed");

        ack_first_turn(&*p, &second, "moved")
            .await
            .unwrap_or_else(|e| panic!("{mode}: the new holder's ack: {e:?}"));
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_activity_ack_that_never_landed_still_fails_once_its_lease_moved_on:
    an_activity_ack_that_never_landed_still_fails_once_its_lease_moved_on_procedures,
    an_activity_ack_that_never_landed_still_fails_once_its_lease_moved_on_inline);

/// An activity's ack whose request was lost, its lease run out and the
/// activity claimed again: the retry finds the token gone and the activity
/// still queued (under its new holder), and fails as before; nothing is
/// completed twice.
async fn an_activity_ack_that_never_landed_still_fails_once_its_lease_moved_on(mode: SqlMode) {
    with_schema("lost_activity_request", |schema| async move {
        let options = options().call_timeout(Some(Duration::from_secs(3)));
        let (proxy, pool, p) = through_proxy(&schema, mode, options, 3).await;
        p.enqueue_for_worker(activity("moved", 1))
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        let first = claim_activity(&p, mode, Duration::from_millis(200)).await;
        all_idle(&pool).await;

        proxy.lose(&[first.as_bytes()], Loss::Request);
        let ack = tokio::spawn({
            let p = Arc::clone(&p);
            let first = first.clone();
            async move { p.ack_work_item(&first, Some(completion("moved", 1))).await }
        });
        let second = claimed_again("the activity claimed again", || async {
            p.fetch_work_item(LEASE, Duration::from_millis(100), None, &TagFilter::Any)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
                .map(|(_, token, _)| token)
        })
        .await;
        assert!(proxy.lost(), "{mode}: the ack's request was not lost");
        refused(mode, ack).await;
        assert_eq!(depths(&p).await.0, 0, "{mode}: no completion queued");

        p.ack_work_item(&second, Some(completion("moved", 1)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: the new holder's ack: {e:?}"));
        assert_eq!(depths(&p).await, (1, 0), "{mode}: completed once");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_abandon_whose_reply_was_lost_counts_as_done:
    an_abandon_whose_reply_was_lost_counts_as_done_procedures,
    an_abandon_whose_reply_was_lost_counts_as_done_inline);

/// Abandons of a turn and of an activity commit and their replies are
/// lost: the retries find the tokens gone, which is what an abandon asks
/// for, and report success; the turn and the activity are claimable again
/// at once.
async fn an_abandon_whose_reply_was_lost_counts_as_done(mode: SqlMode) {
    with_schema("lost_abandon", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options(), 2).await;
        p.enqueue_for_orchestrator(start("lost"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        p.enqueue_for_worker(activity("lost", 1))
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        let turn = claim_turn(&p, "lost", LEASE).await;
        let work = claim_activity(&p, mode, LEASE).await;
        all_idle(&pool).await;

        // One statement binding the token, in both modes.
        proxy.lose(&[turn.as_bytes()], Loss::Reply);
        bounded(
            "the turn's abandon",
            p.abandon_orchestration_item(&turn, None, false),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: an abandon that landed failed: {e:?}"));
        assert!(proxy.lost(), "{mode}: the abandon's reply was not lost");
        all_idle(&pool).await;
        proxy.lose(&[work.as_bytes()], Loss::Reply);
        bounded(
            "the activity's abandon",
            p.abandon_work_item(&work, None, false),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: an abandon that landed failed: {e:?}"));
        assert!(proxy.lost(), "{mode}: the abandon's reply was not lost");

        claim_turn(&p, "lost", LEASE).await;
        claim_activity(&p, mode, LEASE).await;
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}
