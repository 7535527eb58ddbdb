//! The lease a fetch hands out: one slowed inside the server (a lock wait,
//! a large history read) still hands out a lease the runtime can renew and
//! ack under, not one that ran out while the fetch waited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{OrchestrationItem, Provider};
use duroxide_postgres::{PostgresProvider, SqlMode};

use crate::fixtures::{claim_and_ack_turn, completion, event, metadata, start};
use crate::support::{
    TestSchema, hold_table, in_both_modes, release_table, until_a_backend_waits_for,
    until_no_backend_holds_a_lock_in, with_schema,
};

/// The lease the slowed fetch asks for: its wait, one and a half of it,
/// stays under the second a fetch waits for a lock before it gives up.
const LEASE: Duration = Duration::from_millis(500);

/// Gives `instance` its first turn and queues its second, then fetches that
/// turn asking for `lease` while another session holds `history`, until
/// `held` after the fetch was asked for: the claimed turn, its lock token,
/// and when the fetch was asked for.
async fn second_turn_behind_held_history(
    schema: &TestSchema,
    p: &Arc<PostgresProvider>,
    instance: &'static str,
    lease: Duration,
    held: Duration,
) -> (OrchestrationItem, String, Instant) {
    p.enqueue_for_orchestrator(start(instance), None)
        .await
        .expect("start");
    claim_and_ack_turn(&**p, Duration::from_secs(30)).await;
    p.enqueue_for_orchestrator(completion(instance, 2), None)
        .await
        .expect("an event");

    let holder = hold_table(schema, "history", "ACCESS EXCLUSIVE").await;
    let asked = Instant::now();
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_orchestration_item(lease, Duration::ZERO, None)
                .await
        })
    };
    until_a_backend_waits_for(schema, "history", "the fetch").await;
    tokio::time::sleep_until((asked + held).into()).await;
    release_table(holder).await;
    let (item, token, _) = fetch
        .await
        .expect("fetch task")
        .unwrap_or_else(|e| panic!("fetch: {e}"))
        .expect("the second turn is claimed");
    assert_eq!(item.instance, instance);
    (item, token, asked)
}

in_both_modes!(a_fetch_slowed_by_a_lock_wait_hands_out_a_live_lease:
    a_fetch_slowed_by_a_lock_wait_hands_out_a_live_lease_procedures,
    a_fetch_slowed_by_a_lock_wait_hands_out_a_live_lease_inline);

/// A fetch of an instance's second turn waits for its history (another
/// session holds the table) for longer than the lease it asked for; once it
/// returns, the lease is renewed and the turn acked, as the runtime would.
async fn a_fetch_slowed_by_a_lock_wait_hands_out_a_live_lease(mode: SqlMode) {
    with_schema("slow_fetch_lease", |schema| async move {
        let p = Arc::new(schema.provider_in(mode).await);
        // The fetch waits: hold the table past the whole lease it asked for.
        let (item, token, asked) =
            second_turn_behind_held_history(&schema, &p, "slow", LEASE, LEASE * 3 / 2).await;
        assert!(asked.elapsed() > LEASE, "the fetch did not wait");
        assert!(item.history_error.is_none(), "{:?}", item.history_error);
        assert_eq!(item.history.len(), 1);

        p.renew_orchestration_item_lock(&token, LEASE)
            .await
            .unwrap_or_else(|e| panic!("{mode}: renewing the lease a slow fetch handed out: {e}"));
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("slow", 2)],
            vec![],
            vec![],
            metadata(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: acking the turn a slow fetch handed out: {e}"));
    })
    .await;
}

in_both_modes!(a_fetch_slowed_a_little_keeps_the_lease_it_was_asked_for:
    a_fetch_slowed_a_little_keeps_the_lease_it_was_asked_for_procedures,
    a_fetch_slowed_a_little_keeps_the_lease_it_was_asked_for_inline);

/// A fetch slowed for a moment (here 200 ms on a lock on `history`, as a
/// busy server can stall one) hands out the lease it was asked for,
/// counted from its start: duroxide's contract, which its conformance
/// suite checks with a fetch `lock_timeout + 100 ms` after one it lets
/// lapse. Only a claim that spent a good part of its lease has it run from
/// its end. The lease row shows which: its end less its claim time is the
/// lease asked for at most, unless it was run from the claim's end.
async fn a_fetch_slowed_a_little_keeps_the_lease_it_was_asked_for(mode: SqlMode) {
    const ASKED: Duration = Duration::from_secs(4);
    const HELD: Duration = Duration::from_millis(200);
    with_schema("short_stall_lease", |schema| async move {
        let p = Arc::new(schema.provider_in(mode).await);
        let (_, _, asked) =
            second_turn_behind_held_history(&schema, &p, "stalled", ASKED, HELD).await;
        assert!(asked.elapsed() >= HELD, "the fetch did not wait");

        let (until_ms, at_ms): (i64, i64) = sqlx::query_as(schema.statement(
            "SELECT locked_until_ms, locked_at_ms FROM {{schema}}.instance_locks \
              WHERE instance_id = 'stalled'",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("the lease row");
        let asked_ms = i64::try_from(ASKED.as_millis()).expect("ms");
        assert!(
            until_ms - at_ms <= asked_ms,
            "{mode}: a fetch stalled {HELD:?} leased {} ms from its claim, asked for {asked_ms}",
            until_ms - at_ms
        );
    })
    .await;
}

in_both_modes!(a_fetch_that_waits_a_second_for_a_lock_gives_up_and_counts_no_attempt:
    a_fetch_that_waits_a_second_for_a_lock_gives_up_and_counts_no_attempt_procedures,
    a_fetch_that_waits_a_second_for_a_lock_gives_up_and_counts_no_attempt_inline);

/// A fetch whose instance's history is locked for longer than a second
/// (an operator's `VACUUM FULL`, a migration) gives up with a retryable
/// error (`lock_timeout`, SQLSTATE 55P03), so it does not hold its
/// connection, and its fetch slot, for as long as the lock lasts; and its
/// claim rolls back: once the lock is gone the turn is claimed at its
/// first attempt, with its history, not handed out as unreadable.
async fn a_fetch_that_waits_a_second_for_a_lock_gives_up_and_counts_no_attempt(mode: SqlMode) {
    with_schema("lock_gives_up", |schema| async move {
        let p = schema.provider_in(mode).await;
        p.enqueue_for_orchestrator(start("held"), None)
            .await
            .expect("start");
        claim_and_ack_turn(&p, Duration::from_secs(30)).await;
        p.enqueue_for_orchestrator(completion("held", 2), None)
            .await
            .expect("an event");

        let holder = hold_table(&schema, "history", "ACCESS EXCLUSIVE").await;
        let asked = Instant::now();
        let fetched = tokio::time::timeout(
            Duration::from_secs(20),
            p.fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None),
        )
        .await
        .expect("the fetch gave up");
        let waited = asked.elapsed();
        release_table(holder).await;
        match fetched {
            Err(e) => assert!(e.is_retryable(), "{mode}: {e:?}"),
            Ok(other) => panic!("{mode}: a fetch blocked on a lock returned {other:?}"),
        }
        assert!(
            waited >= Duration::from_secs(1),
            "{mode}: gave up after {waited:?}"
        );
        // Its claim is rolled back once its transaction has ended, which
        // on a loaded server can be a moment after the error arrived.
        until_no_backend_holds_a_lock_in(&schema, "the fetch that gave up to end").await;

        let (item, token, attempts) = p
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"))
            .expect("the second turn");
        assert_eq!(
            attempts, 1,
            "{mode}: the fetch that gave up counted an attempt"
        );
        assert!(
            item.history_error.is_none(),
            "{mode}: {:?}",
            item.history_error
        );
        assert_eq!(item.history.len(), 1);
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("held", 2)],
            vec![],
            vec![],
            metadata(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: ack: {e}"));
    })
    .await;
}
