//! Claims whose reply was lost: a fetch (or the claim an activity's ack
//! makes ahead) commits its lease, and its caller never hears of it. The
//! connection dropped, the provider gave up on it after `call_timeout`, or
//! the caller dropped the call midway, as duroxide's dispatchers do with a
//! fetch under way when the runtime shuts down. Nobody holds what was
//! claimed, so it must be claimable again at once, not at the end of its
//! lease, and the attempt must not count toward poisoning.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{DispatcherCapabilityFilter, Provider, SemverRange, TagFilter, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};

use super::{commit_of, lose, through_proxy};
use crate::fixtures::{activity, completion, start, tagged_activity};
use crate::stalls::{Loss, Proxy, all_idle, bounded, options};
use crate::support::{eventually, in_both_modes, with_schema};

/// The lost claim's lease: far longer than [`crate::stalls::HUNG`], so a
/// claim made again within the test was released, not expired.
const LONG: Duration = Duration::from_secs(120);

/// The lease of the claims the test makes itself.
const SHORT: Duration = Duration::from_secs(30);

/// A version no build has: the top of the capability filter's range, bound
/// as an eight-byte integer that reads "LOSTCLAI" on the wire, so the proxy
/// can tell the fetch's call from every other. The range still matches the
/// instance, whose version is not pinned yet.
const MARKER_MAJOR: u64 = u64::from_be_bytes(*b"LOSTCLAI");

/// A tag only the test's activity has, which the worker's fetch binds.
const MARKER_TAG: &str = "lost-claim-marker";

/// What marks the request that commits a fetch: in procedure mode the call
/// (its filter or tag parameter, `marker`); inline, the transaction's
/// `COMMIT`.
fn fetch_commit(mode: SqlMode, marker: &[u8]) -> Vec<Vec<u8>> {
    match mode {
        SqlMode::StoredProcedures => vec![marker.to_vec()],
        _ => vec![b"COMMIT\0".to_vec()],
    }
}

/// A capability filter that matches every version and carries the marker.
fn marked_filter() -> DispatcherCapabilityFilter {
    DispatcherCapabilityFilter {
        supported_duroxide_versions: vec![SemverRange::new(
            semver::Version::new(0, 0, 0),
            semver::Version::new(MARKER_MAJOR, 0, 0),
        )],
    }
}

/// The marker's tag filter.
fn marked_tags() -> TagFilter {
    TagFilter::Tags(HashSet::from([MARKER_TAG.to_string()]))
}

/// Starts a fetch of a turn (marked, leased for [`LONG`]) on a task of its
/// own, holds its reply back once its commit has gone to the server, and
/// drops it there, as a runtime's shutdown drops a dispatcher's fetch.
async fn drop_fetch_midway(proxy: &Proxy, p: &Arc<PostgresProvider>, mode: SqlMode) {
    let fetch = fetch_held_midway(proxy, p, mode).await;
    dropped(fetch, mode).await;
}

/// A fetch of a turn (marked, leased for [`LONG`]) on a task of its own,
/// once its commit has gone to the server, its reply held back.
async fn fetch_held_midway(
    proxy: &Proxy,
    p: &Arc<PostgresProvider>,
    mode: SqlMode,
) -> tokio::task::JoinHandle<Result<bool, duroxide::providers::ProviderError>> {
    lose(proxy, &fetch_commit(mode, b"LOSTCLAI"), Loss::Reply);
    let fetch = tokio::spawn({
        let p = Arc::clone(p);
        async move {
            let filter = marked_filter();
            p.fetch_orchestration_item(LONG, Duration::ZERO, Some(&filter))
                .await
                .map(|fetched| fetched.is_some())
        }
    });
    eventually("the fetch's commit sent", || async { proxy.lost() }).await;
    fetch
}

/// Drops `fetch`, which must still be under way.
async fn dropped(
    fetch: tokio::task::JoinHandle<Result<bool, duroxide::providers::ProviderError>>,
    mode: SqlMode,
) {
    fetch.abort();
    assert!(
        fetch.await.is_err_and(|e| e.is_cancelled()),
        "{mode}: the fetch was still under way when dropped"
    );
}

/// Claims `instance`'s turn again, trying until a fetch claims it: its
/// attempt count.
async fn turn_claimed_again(p: &PostgresProvider, mode: SqlMode, instance: &str) -> u32 {
    bounded("the turn claimed again", async {
        loop {
            let fetched = p
                .fetch_orchestration_item(SHORT, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"));
            if let Some((item, _, attempts)) = fetched {
                assert_eq!(item.instance, instance, "{mode}");
                break attempts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Claims an activity again (any tag), trying until a fetch claims one:
/// the item and its attempt count.
async fn activity_claimed_again(p: &PostgresProvider, mode: SqlMode) -> (WorkItem, u32) {
    bounded("the activity claimed again", async {
        loop {
            let fetched = p
                .fetch_work_item(SHORT, Duration::ZERO, None, &TagFilter::Any)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"));
            if let Some((item, _, attempts)) = fetched {
                break (item, attempts);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

in_both_modes!(a_turn_whose_fetch_reply_was_lost_is_claimable_again_at_once:
    a_turn_whose_fetch_reply_was_lost_is_claimable_again_at_once_procedures,
    a_turn_whose_fetch_reply_was_lost_is_claimable_again_at_once_inline);

/// A fetch claims a turn, commits, and its reply is lost: the call fails
/// (retryable), and the turn is claimed again by the next fetch, with its
/// first attempt's count, long before the lost lease would have ended.
async fn a_turn_whose_fetch_reply_was_lost_is_claimable_again_at_once(mode: SqlMode) {
    with_schema("lost_fetch", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options(), 2).await;
        p.enqueue_for_orchestrator(start("lost"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        all_idle(&pool).await;

        lose(&proxy, &fetch_commit(mode, b"LOSTCLAI"), Loss::Reply);
        let filter = marked_filter();
        let fetched = bounded(
            "the fetch",
            p.fetch_orchestration_item(LONG, Duration::ZERO, Some(&filter)),
        )
        .await;
        assert!(proxy.lost(), "{mode}: the fetch's reply was not lost");
        let e = fetched.expect_err("a fetch whose reply was lost");
        assert!(e.is_retryable(), "{mode}: a lost reply is retryable: {e:?}");

        let attempts = turn_claimed_again(&p, mode, "lost").await;
        assert_eq!(attempts, 1, "{mode}: the lost claim's attempt not counted");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_activity_whose_fetch_reply_was_lost_is_claimable_again_at_once:
    an_activity_whose_fetch_reply_was_lost_is_claimable_again_at_once_procedures,
    an_activity_whose_fetch_reply_was_lost_is_claimable_again_at_once_inline);

/// The same for an activity: the worker's fetch claims it and its reply
/// is lost; the next fetch claims it again, first attempt.
async fn an_activity_whose_fetch_reply_was_lost_is_claimable_again_at_once(mode: SqlMode) {
    with_schema("lost_work_fetch", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options(), 2).await;
        p.enqueue_for_worker(tagged_activity("lost", 1, MARKER_TAG))
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        all_idle(&pool).await;

        lose(
            &proxy,
            &fetch_commit(mode, MARKER_TAG.as_bytes()),
            Loss::Reply,
        );
        let fetched = bounded(
            "the fetch",
            p.fetch_work_item(LONG, Duration::ZERO, None, &marked_tags()),
        )
        .await;
        assert!(proxy.lost(), "{mode}: the fetch's reply was not lost");
        let e = fetched.expect_err("a fetch whose reply was lost");
        assert!(e.is_retryable(), "{mode}: a lost reply is retryable: {e:?}");

        let (item, attempts) = activity_claimed_again(&p, mode).await;
        assert_eq!(item, tagged_activity("lost", 1, MARKER_TAG), "{mode}");
        assert_eq!(attempts, 1, "{mode}: the lost claim's attempt not counted");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_activity_claimed_ahead_by_an_ack_whose_reply_was_lost_is_claimable_again_at_once:
    an_activity_claimed_ahead_by_an_ack_whose_reply_was_lost_is_claimable_again_at_once_procedures,
    an_activity_claimed_ahead_by_an_ack_whose_reply_was_lost_is_claimable_again_at_once_inline);

/// A worker's ack, sent from the task that fetched the activity, also
/// claims the next activity, and its reply is lost. The ack's retry
/// reports success (tests in the parent module), and the activity it
/// claimed for a task that never heard of it is claimable again at once.
async fn an_activity_claimed_ahead_by_an_ack_whose_reply_was_lost_is_claimable_again_at_once(
    mode: SqlMode,
) {
    with_schema("lost_claim_ahead", |schema| async move {
        let (proxy, pool, p) = through_proxy(&schema, mode, options(), 2).await;
        for id in [1, 2] {
            p.enqueue_for_worker(activity("lost", id))
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        }
        let worker = {
            let (p, pool, proxy) = (Arc::clone(&p), pool.clone(), Arc::clone(&proxy));
            async move {
                let (item, token, _) = p
                    .fetch_work_item(LONG, Duration::ZERO, None, &TagFilter::Any)
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
                    .unwrap_or_else(|| panic!("{mode}: an activity to claim"));
                assert_eq!(item, activity("lost", 1), "{mode}: the oldest first");
                all_idle(&pool).await;
                lose(&proxy, &commit_of(mode, &token), Loss::Reply);
                bounded(
                    "the ack",
                    p.ack_work_item(&token, Some(completion("lost", 1))),
                )
                .await
            }
        };
        tokio::spawn(worker)
            .await
            .unwrap_or_else(|e| panic!("{mode}: the worker's task: {e}"))
            .unwrap_or_else(|e| panic!("{mode}: an ack whose commit landed failed: {e:?}"));
        assert!(proxy.lost(), "{mode}: the ack's reply was not lost");

        let (item, attempts) = activity_claimed_again(&p, mode).await;
        assert_eq!(
            item,
            activity("lost", 2),
            "{mode}: the activity claimed ahead"
        );
        assert_eq!(attempts, 1, "{mode}: the lost claim's attempt not counted");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(a_fetch_dropped_midway_leaves_nothing_leased:
    a_fetch_dropped_midway_leaves_nothing_leased_procedures,
    a_fetch_dropped_midway_leaves_nothing_leased_inline);

/// duroxide's dispatchers race each fetch against the runtime's shutdown
/// and drop the losing future. A fetch dropped after its request reached
/// the server (its reply held back here, so the drop surely comes first)
/// claimed a turn that nobody will run: the turn is claimable again at
/// once, its attempt not counted.
async fn a_fetch_dropped_midway_leaves_nothing_leased(mode: SqlMode) {
    with_schema("dropped_fetch", |schema| async move {
        let options = options().call_timeout(Some(Duration::from_secs(10)));
        let (proxy, pool, p) = through_proxy(&schema, mode, options, 3).await;
        p.enqueue_for_orchestrator(start("dropped"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        all_idle(&pool).await;

        drop_fetch_midway(&proxy, &p, mode).await;

        let attempts = turn_claimed_again(&p, mode, "dropped").await;
        assert_eq!(
            attempts, 1,
            "{mode}: the dropped claim's attempt not counted"
        );
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(a_fetch_dropped_as_its_runtime_ends_leaves_nothing_leased:
    a_fetch_dropped_as_its_runtime_ends_leaves_nothing_leased_procedures,
    a_fetch_dropped_as_its_runtime_ends_leaves_nothing_leased_inline);

/// A process that shuts its runtime down and ends drops the fetches under
/// way with the tokio runtime itself, and with them any task that would
/// give their claims back. The claim is given back all the same (on a
/// connection of its own, as the runtime ends), so the turn is claimable
/// at once by another process, its attempt not counted.
async fn a_fetch_dropped_as_its_runtime_ends_leaves_nothing_leased(mode: SqlMode) {
    with_schema("ended_fetch", |schema| async move {
        let proxy = Arc::new(Proxy::start("ended").await);
        let here = schema.provider_in(mode).await;
        here.enqueue_for_orchestrator(start("ended"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));

        // The other process: a tokio runtime of its own, ended (dropped)
        // right after the fetch it runs is dropped.
        let ended = std::thread::spawn({
            let (proxy, schema_name) = (Arc::clone(&proxy), schema.name.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("a runtime: {e}"));
                runtime.block_on(async move {
                    let options = options()
                        .call_timeout(Some(Duration::from_secs(10)))
                        .schema(&schema_name)
                        .sql_mode(mode);
                    let pool = crate::stalls::pool_through(&proxy, &options, 2).await;
                    let p = Arc::new(
                        PostgresProvider::from_pool_with(pool.clone(), options)
                            .await
                            .unwrap_or_else(|e| panic!("{mode} provider: {e}")),
                    );
                    all_idle(&pool).await;
                    drop_fetch_midway(&proxy, &p, mode).await;
                });
                drop(runtime);
            }
        });
        tokio::task::spawn_blocking(move || ended.join())
            .await
            .unwrap_or_else(|e| panic!("{mode}: joining the other process: {e}"))
            .unwrap_or_else(|_| panic!("{mode}: the other process panicked"));

        let attempts = turn_claimed_again(&here, mode, "ended").await;
        assert_eq!(
            attempts, 1,
            "{mode}: the dropped claim's attempt not counted"
        );
    })
    .await;
}

in_both_modes!(a_fetch_dropped_as_its_pool_closes_leaves_nothing_leased:
    a_fetch_dropped_as_its_pool_closes_leaves_nothing_leased_procedures,
    a_fetch_dropped_as_its_pool_closes_leaves_nothing_leased_inline);

/// An application that closes its pool as its runtime stops (the runtime's
/// tasks, and the give-back's, still running) leaves the give-back no
/// connection of the pool's: it gives the claim back on one of its own, so
/// the turn is claimable at once by another provider, its attempt not
/// counted.
async fn a_fetch_dropped_as_its_pool_closes_leaves_nothing_leased(mode: SqlMode) {
    with_schema("closed_fetch", |schema| async move {
        let options = options().call_timeout(Some(Duration::from_secs(10)));
        let (proxy, pool, p) = through_proxy(&schema, mode, options, 3).await;
        p.enqueue_for_orchestrator(start("closed"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        all_idle(&pool).await;

        let fetch = fetch_held_midway(&proxy, &p, mode).await;
        let closing = tokio::spawn({
            let pool = pool.clone();
            async move { pool.close().await }
        });
        eventually("the pool closed", || async { pool.is_closed() }).await;
        dropped(fetch, mode).await;

        let here = schema.provider_in(mode).await;
        let attempts = turn_claimed_again(&here, mode, "closed").await;
        assert_eq!(
            attempts, 1,
            "{mode}: the dropped claim's attempt not counted"
        );
        bounded("closing the pool", closing)
            .await
            .unwrap_or_else(|e| panic!("{mode}: closing the pool: {e}"));
    })
    .await;
}

in_both_modes!(a_fetch_dropped_while_it_waits_for_a_connection_claims_nothing:
    a_fetch_dropped_while_it_waits_for_a_connection_claims_nothing_procedures,
    a_fetch_dropped_while_it_waits_for_a_connection_claims_nothing_inline);

/// A fetch dropped while it still waits for a connection (every one of the
/// pool busy, and its runtime shutting down) has sent nothing, and must
/// claim nothing later. Inline mode ran the whole transaction on a task of
/// its own, the wait for a connection included, so it claimed the turn
/// once a connection came free, for nobody: a give-back that had stopped
/// looking by then left it leased to its end, its attempt counted.
async fn a_fetch_dropped_while_it_waits_for_a_connection_claims_nothing(mode: SqlMode) {
    with_schema("waiting_fetch", |schema| async move {
        let pool = options()
            .pool_options()
            .max_connections(2)
            .connect_with(crate::support::connect_options())
            .await
            .unwrap_or_else(|e| panic!("{mode}: pool: {e}"));
        // No tenant affinity: the provider's calls take the pool's own
        // connections, which the test can hold.
        let p = crate::stalls::provider(&pool, &schema, mode, options().connections_per_tenant(0))
            .await;
        p.enqueue_for_orchestrator(start("waiting"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e:?}"));
        // Every claim of an instance, as it is made.
        schema
            .run_all(&[
                "CREATE TABLE {{schema}}.claims_seen (token text)",
                "CREATE FUNCTION {{schema}}.seen() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN INSERT INTO {{schema}}.claims_seen VALUES (NEW.lock_token); \
                 RETURN NEW; END $$",
                "CREATE TRIGGER seen AFTER INSERT OR UPDATE ON {{schema}}.instance_locks \
                 FOR EACH ROW EXECUTE FUNCTION {{schema}}.seen()",
            ])
            .await;
        all_idle(&pool).await;
        let first = pool.acquire().await.expect("hold a connection");
        let second = pool.acquire().await.expect("hold a connection");

        let fetch = tokio::time::timeout(
            Duration::from_secs(1),
            p.fetch_orchestration_item(LONG, Duration::ZERO, None),
        )
        .await;
        assert!(fetch.is_err(), "{mode}: the fetch ran without a connection");
        // A connection comes free; the first in the pool's queue gets it.
        drop(first);
        let seen = || async {
            let n: i64 =
                sqlx::query_scalar(schema.statement("SELECT count(*) FROM {{schema}}.claims_seen"))
                    .fetch_one(&schema.pool)
                    .await
                    .expect("claims seen");
            n
        };
        // What must not happen is awaited for a bounded time: a dropped
        // fetch still waiting claims within milliseconds of its connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while seen().await == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            seen().await,
            0,
            "{mode}: the dropped fetch claimed the turn"
        );
        drop(second);

        let attempts = turn_claimed_again(&p, mode, "waiting").await;
        assert_eq!(attempts, 1, "{mode}: the dropped fetch's attempt counted");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}
