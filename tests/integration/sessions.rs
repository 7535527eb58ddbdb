//! Worker sessions: a fetch takes an item's session without ever waiting for
//! the session's row (statements/fetch_work_item/claim_session.sql).

use std::time::Duration;

use duroxide::providers::{Provider, ProviderError, SessionFetchConfig, TagFilter, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::{Postgres, Transaction};

use crate::deletion_races::await_waiters;
use crate::support::{TestSchema, eventually, in_both_modes, with_schema};

const LEASE: Duration = Duration::from_secs(30);

/// An activity of instance `i1` with scheduling id `id`, in `session`.
fn in_session(id: u64, session: &str) -> WorkItem {
    crate::fixtures::session_activity("i1", id, session)
}

/// One fetch of an untagged activity by session owner `owner`, waiting up
/// to `poll` for one; `lease` is how long the item and its session are
/// held.
pub(crate) async fn fetch_in_session(
    provider: &PostgresProvider,
    owner: &str,
    lease: Duration,
    poll: Duration,
) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
    let config = SessionFetchConfig {
        owner_id: owner.into(),
        lock_timeout: lease,
    };
    provider
        .fetch_work_item(lease, poll, Some(&config), &TagFilter::DefaultOnly)
        .await
}

/// One fetch by session owner `owner` (no long poll): the claimed
/// activity's id, or the error's text.
async fn fetch_as(provider: PostgresProvider, owner: &'static str) -> Result<Option<u64>, String> {
    let fetched = fetch_in_session(&provider, owner, LEASE, Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    Ok(fetched.map(|(item, _, _)| match item {
        WorkItem::ActivityExecute { id, .. } => id,
        other => panic!("not an activity: {other:?}"),
    }))
}

/// A transaction on a connection of its own holding the row of session
/// `session` locked, as a fetch taking the session or a renewal does.
pub(crate) async fn hold_session_row<'a>(
    schema: &'a TestSchema,
    session: &str,
) -> Transaction<'a, Postgres> {
    let mut holder = schema.pool.begin().await.expect("begin");
    sqlx::query(
        schema.statement("SELECT 1 FROM {{schema}}.sessions WHERE session_id = $1 FOR UPDATE"),
    )
    .bind(session)
    .execute(&mut *holder)
    .await
    .unwrap_or_else(|e| panic!("hold the row of session {session}: {e}"));
    holder
}

/// Backends waiting for a lock in a statement of this schema.
async fn lock_waiters(schema: &TestSchema) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
          WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
    )
    .bind(&schema.name)
    .fetch_one(&schema.pool)
    .await
    .expect("pg_stat_activity")
}

/// A node died holding sessions s1 and s2; the survivors A and B race for
/// them. Queue order s1a, s2a, s1b, s2b. While another transaction (two
/// survivors' slots, committing) gives s1 to B and s2 to A, A's fetch meets
/// s1 (expired in its snapshot) and B's fetch s2. Waiting for those rows,
/// then passing over the sessions they could not take while keeping them
/// locked, each took the other's next item: A s2b, whose row B kept; B
/// s1b, whose row A kept: a deadlock (40P01, one fetch failed after
/// `deadlock_timeout`). A fetch now passes over a session whose row another
/// transaction holds, and each owner gets its own session's items.
async fn fetches_racing_for_expired_sessions_never_deadlock(mode: SqlMode) {
    with_schema(&format!("sess_race_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        for (id, session) in [(1, "s1"), (2, "s2"), (3, "s1"), (4, "s2")] {
            provider
                .enqueue_for_worker(in_session(id, session))
                .await
                .expect("enqueue");
        }
        schema
            .run_all(&["INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
                        VALUES ('s1', 'gone', 0, 0), ('s2', 'gone', 0, 0)"])
            .await;
        let mut holder = schema.pool.begin().await.expect("begin");
        sqlx::query(schema.statement(
            "UPDATE {{schema}}.sessions \
                SET owner_id = CASE session_id WHEN 's1' THEN 'B' ELSE 'A' END, \
                    locked_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 600000 \
              WHERE session_id IN ('s1', 's2')",
        ))
        .execute(&mut *holder)
        .await
        .expect("give s1 to B and s2 to A, uncommitted");

        let a = tokio::spawn(fetch_as(provider.clone(), "A"));
        await_waiters(&schema, 1, &[&a]).await;
        let a_waited = !a.is_finished();
        let b = tokio::spawn(fetch_as(provider.clone(), "B"));
        await_waiters(&schema, if a_waited { 2 } else { 1 }, &[&b]).await;
        let b_waited = !b.is_finished();
        holder.commit().await.expect("commit the sessions' new owners");

        let bound = Duration::from_secs(20);
        let a = tokio::time::timeout(bound, a).await.expect("A's fetch ends").expect("A");
        let b = tokio::time::timeout(bound, b).await.expect("B's fetch ends").expect("B");
        assert!(
            a.is_ok() && b.is_ok(),
            "{mode}: a fetch failed (40P01: the fetches deadlocked on the sessions' rows): A {a:?}, B {b:?}"
        );
        assert!(
            !a_waited && !b_waited,
            "{mode}: a fetch waited for a session row another transaction held (A {a_waited}, B {b_waited})"
        );

        // Then each owner gets its own session's items, and only those.
        let mut got = [Vec::new(), Vec::new()];
        for (slot, (owner, first)) in [("A", a), ("B", b)].into_iter().enumerate() {
            got[slot].extend(first.ok().flatten());
            while let Some(id) = fetch_as(provider.clone(), owner).await.expect("fetch") {
                got[slot].push(id);
            }
            got[slot].sort_unstable();
        }
        assert_eq!(got, [vec![2, 4], vec![1, 3]], "{mode}: A takes s2's items, B s1's");
    })
    .await;
}

in_both_modes!(fetches_racing_for_expired_sessions_never_deadlock: fetches_racing_for_expired_sessions_never_deadlock_procedures, fetches_racing_for_expired_sessions_never_deadlock_inline);

/// The owner's own session, its row held by another transaction (an ack or
/// a renewal in flight): a long-polling fetch passes over it instead of
/// waiting, and since that transaction notifies nobody when it ends, looks
/// again within milliseconds (the fetch's next due time) rather than at its
/// poll timeout; once the row is free it takes the item.
async fn a_held_session_row_is_passed_over_and_looked_at_again(mode: SqlMode) {
    with_schema(&format!("sess_held_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        // Quiet notes and due times are kept only while the listener is
        // subscribed; before, the fetch would poll anyway.
        eventually("the listener subscribed", || async {
            provider.notification_stats().is_some_and(|s| s.subscribed)
        })
        .await;
        provider
            .enqueue_for_worker(in_session(1, "s1"))
            .await
            .expect("enqueue");
        schema
            .run_all(&["INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
                        VALUES ('s1', 'A', (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 600000, 0)"])
            .await;
        let holder = hold_session_row(&schema, "s1").await;

        let queries = || provider.notification_stats().map_or(0, |s| s.queries);
        let before = queries();
        let p = provider.clone();
        let fetch = tokio::spawn(async move {
            fetch_in_session(&p, "A", LEASE, Duration::from_secs(60))
                .await
                .map(|f| f.map(|(_, token, _)| token))
        });
        eventually("the waiting fetch to look again", || async {
            assert_eq!(
                lock_waiters(&schema).await,
                0,
                "{mode}: the fetch waited for the session's row"
            );
            queries() >= before + 3
        })
        .await;
        assert!(!fetch.is_finished(), "{mode}: nothing to claim yet");
        holder.rollback().await.expect("let the row go");
        let claimed = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .expect("claimed soon after the row is free, not at the poll timeout")
            .expect("the fetch")
            .expect("fetch");
        assert!(claimed.is_some(), "{mode}: the session's item");
    })
    .await;
}

in_both_modes!(a_held_session_row_is_passed_over_and_looked_at_again: a_held_session_row_is_passed_over_and_looked_at_again_procedures, a_held_session_row_is_passed_over_and_looked_at_again_inline);

/// The sweep of orphaned sessions passes over a session row another
/// transaction holds (a fetch taking it, a renewal), as fetches do, and
/// takes it on a later sweep: it never waits for one, so it cannot join a
/// renewal in a deadlock over rows that expired between their clocks.
async fn the_sweep_passes_over_a_held_session_row(mode: SqlMode) {
    with_schema(&format!("sess_sweep_{mode}"), |schema| async move {
        let provider = schema.provider_in(mode).await;
        schema
            .run_all(&[
                "INSERT INTO {{schema}}.sessions (session_id, owner_id, locked_until_ms, last_activity_at_ms) \
                 VALUES ('held', 'gone', 0, 0), ('free', 'gone', 0, 0)",
            ])
            .await;
        let holder = hold_session_row(&schema, "held").await;
        let swept = tokio::time::timeout(
            Duration::from_secs(10),
            provider.cleanup_orphaned_sessions(Duration::from_secs(300)),
        )
        .await
        .map(|r| r.expect("sweep"));
        assert_eq!(swept, Ok(1), "{mode}: the free one, at once (Err: the sweep waited)");
        holder.rollback().await.expect("let go");
        let swept = provider
            .cleanup_orphaned_sessions(Duration::from_secs(300))
            .await
            .expect("sweep again");
        assert_eq!(swept, 1, "{mode}: the held one, once let go");
        let left: i64 = sqlx::query_scalar(schema.statement("SELECT count(*) FROM {{schema}}.sessions"))
            .fetch_one(&schema.pool)
            .await
            .expect("count");
        assert_eq!(left, 0, "{mode}");
    })
    .await;
}
in_both_modes!(the_sweep_passes_over_a_held_session_row: the_sweep_passes_over_a_held_session_row_procedures, the_sweep_passes_over_a_held_session_row_inline);
