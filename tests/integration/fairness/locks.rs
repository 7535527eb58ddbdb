//! A tenant whose tables another session holds locked (an operator's
//! `LOCK TABLE` or `VACUUM FULL`, a long migration): its acks, clients'
//! calls and management calls wait the lock out off the connection, so the
//! tenant sharing its home connection keeps it.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin, TagFilter};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{LEASE, provider};
use crate::fixtures::{ack_first_turn, activity, completion, event, metadata, start};
use crate::support::{
    TestSchema, database_url, eventually, hold_table, in_both_modes, pool, release_table,
    until_a_backend_waits_for, with_schema, with_schemas,
};

in_both_modes!(a_locked_tenants_acks_leave_its_shard_mate_the_connection:
    a_locked_tenants_acks_leave_its_shard_mate_the_connection_procedures,
    a_locked_tenants_acks_leave_its_shard_mate_the_connection_inline; 4);

/// Returns once `n` calls of `p`'s pool wait for a connection of their
/// tenant's shard or out a lock off the connection (`who`: the one just
/// started). A tenant's first call to meet the lock waits on its
/// connection, which neither gauge counts, for its first second; every
/// later call of the tenant waits in one of the two, each counted once.
async fn until_in_line(p: &PostgresProvider, n: usize, who: &str) {
    eventually(who, || async {
        let stats = p.admission_stats();
        stats.waiting_for_connections + stats.waiting_out_locks >= n
    })
    .await;
}

/// Rows of `table` of `schema` for `instance`.
async fn rows_of(schema: &TestSchema, table: &str, instance: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {{{{schema}}}}.{table} WHERE instance_id = $1");
    sqlx::query_scalar(schema.statement(&sql))
        .bind(instance)
        .fetch_one(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
}

/// Three tenants on a pool of three with the default options: two shards
/// of one connection (and the one the shared pool keeps), the first home
/// to tenants A and B, neither of which may borrow the other. Tenant A's
/// worker queue is locked (an operator's `VACUUM FULL` or `LOCK TABLE`, a
/// long migration of A while old processes of A still run) while A acks an
/// activity and a turn that schedules one: both wait for the lock. B's acks
/// of the activity and the turn it holds must still commit well within
/// B's lease (before, each of A's acks waited for the lock holding the
/// shard's one connection, and B's waited behind them for as long as the
/// lock lasted). Once the lock is gone, A's acks commit: nothing lost,
/// nothing twice, the activity not delivered again.
async fn a_locked_tenants_acks_leave_its_shard_mate_the_connection(mode: SqlMode) {
    with_schemas("locked", 3, |schemas| async move {
        let (a, b) = (&schemas[0], &schemas[2]);
        let shared = pool(3).await;
        let pa = provider(&shared, a, mode).await;
        // The other shard's tenant: B's home is A's.
        let _px = provider(&shared, &schemas[1], mode).await;
        let pb = provider(&shared, b, mode).await;
        // A's leases outlast the lock; B's is the one at stake.
        let long = Duration::from_secs(60);
        let any = TagFilter::Any;
        let claim = |p: &PostgresProvider, lease: Duration| {
            let p = p.clone();
            async move {
                let (_, token, _) = p
                    .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::Any)
                    .await
                    .expect("fetch work")
                    .expect("an activity to claim");
                let (_, turn, _) = p
                    .fetch_orchestration_item(lease, Duration::ZERO, None)
                    .await
                    .expect("fetch")
                    .expect("a turn to claim");
                (token, turn)
            }
        };
        for (p, id) in [(&pa, "a"), (&pb, "b")] {
            p.enqueue_for_worker(activity(&format!("{id}0"), 1))
                .await
                .expect("enqueue work");
            p.enqueue_for_orchestrator(start(&format!("{id}1")), None)
                .await
                .expect("enqueue");
        }
        let (a_activity, a_turn) = claim(&pa, long).await;
        let (b_activity, b_turn) = claim(&pb, LEASE).await;
        // The turn schedules activity 2 of its instance: its ack writes
        // the worker queue too.
        let ack_turn = |p: &PostgresProvider, token: String, instance: &'static str| {
            let p = p.clone();
            async move {
                p.ack_orchestration_item(
                    &token,
                    1,
                    vec![event(instance, 1), event(instance, 2)],
                    vec![activity(instance, 2)],
                    vec![],
                    metadata(),
                    vec![],
                )
                .await
            }
        };

        let holder = hold_table(a, "worker_queue", "ACCESS EXCLUSIVE").await;
        let a_acks = {
            let pa = pa.clone();
            tokio::spawn(async move {
                pa.ack_work_item(&a_activity, Some(completion("a0", 1)))
                    .await
            })
        };
        until_a_backend_waits_for(a, "worker_queue", "A's activity ack").await;
        let a_turn_ack = tokio::spawn(ack_turn(&pa, a_turn, "a1"));
        // Behind the activity ack, which holds A's connection.
        until_in_line(&pa, 1, "A's turn ack to wait").await;

        let began = Instant::now();
        let acked = tokio::time::timeout(
            LEASE,
            pb.ack_work_item(&b_activity, Some(completion("b0", 1))),
        )
        .await;
        let took = began.elapsed();
        assert!(
            matches!(acked, Ok(Ok(()))),
            "{mode}: B's activity ack behind A's acks on A's locked table: {acked:?} after {took:?}"
        );
        assert!(
            took < LEASE / 2,
            "{mode}: B's activity ack took {took:?} of its {LEASE:?} lease"
        );
        let began = Instant::now();
        let acked = tokio::time::timeout(LEASE, ack_turn(&pb, b_turn, "b1")).await;
        let took = began.elapsed();
        assert!(
            matches!(acked, Ok(Ok(()))),
            "{mode}: B's turn ack behind A's acks on A's locked table: {acked:?} after {took:?}"
        );
        assert!(
            took < LEASE / 2,
            "{mode}: B's turn ack took {took:?} of its {LEASE:?} lease"
        );
        assert!(
            !a_acks.is_finished() && !a_turn_ack.is_finished(),
            "{mode}: A's acks ended while A's table was locked"
        );

        release_table(holder).await;
        for (what, task) in [("activity", a_acks), ("turn", a_turn_ack)] {
            let outcome = tokio::time::timeout(Duration::from_secs(20), task).await;
            assert!(
                matches!(outcome, Ok(Ok(Ok(())))),
                "{mode}: A's {what} ack once the lock was gone: {outcome:?}"
            );
        }
        // A's activity is gone, its completion queued once; the turn's
        // activity is the only one left to deliver.
        assert_eq!(rows_of(a, "worker_queue", "a0").await, 0, "{mode}");
        assert_eq!(rows_of(a, "orchestrator_queue", "a0").await, 1, "{mode}");
        assert_eq!(rows_of(a, "worker_queue", "a1").await, 1, "{mode}");
        assert_eq!(rows_of(a, "history", "a1").await, 2, "{mode}");
        let next = pa
            .fetch_work_item(LEASE, Duration::ZERO, None, &any)
            .await
            .expect("fetch work");
        match next {
            Some((item, _, attempts)) => {
                assert_eq!((item, attempts), (activity("a1", 2), 1), "{mode}");
            }
            None => panic!("{mode}: the turn's activity was not queued"),
        }
        let again = pa
            .fetch_work_item(LEASE, Duration::ZERO, None, &any)
            .await
            .expect("fetch work");
        assert!(again.is_none(), "{mode}: delivered again: {again:?}");
        for (s, instance) in [(b, "b0"), (b, "b1")] {
            let table = if instance == "b0" {
                "orchestrator_queue"
            } else {
                "worker_queue"
            };
            assert_eq!(rows_of(s, table, instance).await, 1, "{mode}: {instance}");
        }
        shared.close().await;
    })
    .await;
}

in_both_modes!(a_locked_tenants_client_calls_leave_its_shard_mate_the_connection:
    a_locked_tenants_client_calls_leave_its_shard_mate_the_connection_procedures,
    a_locked_tenants_client_calls_leave_its_shard_mate_the_connection_inline; 4);

/// The shard of [`a_locked_tenants_acks_leave_its_shard_mate_the_connection`],
/// with the calls a client makes instead of acks: tenant A's history and
/// orchestrator queue are locked while A's client reads a status and starts
/// an instance, both waiting for the lock. Tenant B, whose home is A's
/// one-connection shard, must still start an instance, read a status and
/// ack the turn it holds, each well within B's lease, and read an
/// instance's info and the queue depths while A's management client reads
/// A's history and deletes an instance (before, A's calls
/// waited for the lock holding the shard's connection, and B's waited
/// behind them for as long as the lock lasted). Once the lock is gone, A's
/// calls return: the reads see A's history, the start is queued once, the
/// instance deleted.
///
/// On a pool built from `PostgresOptions::connect_options`, whose
/// connections carry the lock timeout, and on one built from the URL alone,
/// where inline mode sets it per statement.
async fn a_locked_tenants_client_calls_leave_its_shard_mate_the_connection(mode: SqlMode) {
    locked_client_calls(mode, pool(3).await).await;
    let plain: PgConnectOptions = database_url().parse().expect("url");
    let plain = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(plain)
        .await
        .expect("a pool from the URL alone");
    locked_client_calls(mode, plain).await;
}

/// Runs tenant B's `call`, which must succeed well within B's `lease`
/// (in two fifths of it) beside tenant A's locked tables.
async fn b_within<T: std::fmt::Debug>(
    mode: SqlMode,
    what: &str,
    lease: Duration,
    call: impl std::future::Future<Output = Result<T, duroxide::providers::ProviderError>>,
) {
    let began = Instant::now();
    let outcome = tokio::time::timeout(lease, call).await;
    let took = began.elapsed();
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "{mode}: B's {what}: {outcome:?} after {took:?}"
    );
    assert!(
        took < lease * 2 / 5,
        "{mode}: B's {what} took {took:?} beside A's locked tables"
    );
}

/// The check of [`a_locked_tenants_client_calls_leave_its_shard_mate_the_connection`]
/// on `shared`, a pool of three.
async fn locked_client_calls(mode: SqlMode, shared: PgPool) {
    with_schemas("clients", 3, |schemas| async move {
        let (a, b) = (&schemas[0], &schemas[2]);
        let pa = provider(&shared, a, mode).await;
        // The other shard's tenant: B's home is A's.
        let _px = provider(&shared, &schemas[1], mode).await;
        let pb = provider(&shared, b, mode).await;
        let lease = Duration::from_secs(10);
        for (p, id) in [(&pa, "a1"), (&pb, "b1"), (&pa, "a3")] {
            p.enqueue_for_orchestrator(start(id), None)
                .await
                .expect("enqueue");
        }
        for id in ["a1", "a3"] {
            let (item, a_turn, _) = pa
                .fetch_orchestration_item(lease, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("a turn of A's to claim");
            assert_eq!(item.instance, id);
            ack_first_turn(&pa, &a_turn, id).await.expect("A's turn");
        }
        let (_, b_turn, _) = pb
            .fetch_orchestration_item(lease, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("b1 claimed");

        let history = hold_table(a, "history", "ACCESS EXCLUSIVE").await;
        let queue = hold_table(a, "orchestrator_queue", "ACCESS EXCLUSIVE").await;
        let a_read = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.read("a1").await })
        };
        until_a_backend_waits_for(a, "history", "A's status read").await;
        let a_start = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.enqueue_for_orchestrator(start("a2"), None).await })
        };
        // Behind the read, which holds A's connection.
        until_in_line(&pa, 1, "A's start to wait").await;

        b_within(
            mode,
            "start",
            lease,
            pb.enqueue_for_orchestrator(start("b2"), None),
        )
        .await;
        b_within(mode, "read", lease, pb.read("b1")).await;
        b_within(mode, "ack", lease, ack_first_turn(&pb, &b_turn, "b1")).await;
        // A's management client reads A's history, then deletes a3,
        // meanwhile; B's management client reads an instance's info and
        // the queue depths.
        let a_admin = {
            let pa = pa.clone();
            tokio::spawn(async move { ProviderAdmin::read_history(&pa, "a1").await })
        };
        // All three of A's calls, once the read's first second is over.
        until_in_line(&pa, 3, "A's history read to wait").await;
        b_within(mode, "info", lease, pb.get_instance_info("b1")).await;
        let a_delete = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.delete_instances_atomic(&["a3".to_string()], true).await })
        };
        until_in_line(&pa, 4, "A's delete to wait").await;
        b_within(mode, "depths", lease, pb.get_queue_depths()).await;
        assert!(
            !a_read.is_finished()
                && !a_start.is_finished()
                && !a_admin.is_finished()
                && !a_delete.is_finished(),
            "{mode}: A's calls ended while A's tables were locked"
        );

        release_table(history).await;
        release_table(queue).await;
        let read = tokio::time::timeout(Duration::from_secs(20), a_read).await;
        match read {
            Ok(Ok(Ok(events))) => assert_eq!(events.len(), 1, "{mode}: A's history"),
            other => panic!("{mode}: A's read once the lock was gone: {other:?}"),
        }
        let listed = tokio::time::timeout(Duration::from_secs(20), a_admin).await;
        match listed {
            Ok(Ok(Ok(events))) => assert_eq!(events.len(), 1, "{mode}: A's listed history"),
            other => panic!("{mode}: A's admin read once the lock was gone: {other:?}"),
        }
        let deleted = tokio::time::timeout(Duration::from_secs(20), a_delete).await;
        match deleted {
            Ok(Ok(Ok(result))) => assert_eq!(result.instances_deleted, 1, "{mode}: A's delete"),
            other => panic!("{mode}: A's delete once the lock was gone: {other:?}"),
        }
        assert_eq!(rows_of(a, "history", "a3").await, 0, "{mode}");
        let started = tokio::time::timeout(Duration::from_secs(20), a_start).await;
        assert!(
            matches!(started, Ok(Ok(Ok(())))),
            "{mode}: A's start once the lock was gone: {started:?}"
        );
        assert_eq!(rows_of(a, "orchestrator_queue", "a2").await, 1, "{mode}");
        assert_eq!(rows_of(b, "orchestrator_queue", "b2").await, 1, "{mode}");
        shared.close().await;
    })
    .await;
}

in_both_modes!(a_locked_tenants_later_calls_wait_in_line_before_their_first_attempt:
    a_locked_tenants_later_calls_wait_in_line_before_their_first_attempt_procedures,
    a_locked_tenants_later_calls_wait_in_line_before_their_first_attempt_inline; 4);

/// How many of tenant A's status reads start while A's history is locked
/// and one of A's calls already waits the lock out.
const LATER_CALLS: usize = 4;

/// The shard of [`a_locked_tenants_client_calls_leave_its_shard_mate_the_connection`]
/// with a burst: once one of tenant A's calls has given up on the lock
/// (A's history, locked by another session) and waits it out, A's client
/// starts four more status reads. Each used to make a first attempt of its
/// own on the shard's one connection, a second each, and tenant B's read
/// queued behind all of them; now they wait in line behind the call already
/// waiting, as its retries do, so B's read waits for at most one of A's
/// attempts. The pool counts A's five reads as waiting out a lock
/// (`AdmissionStats::waiting_out_locks`) until the lock is gone and all of
/// them return.
async fn a_locked_tenants_later_calls_wait_in_line_before_their_first_attempt(mode: SqlMode) {
    with_schemas("burst", 3, |schemas| async move {
        let (a, b) = (&schemas[0], &schemas[2]);
        let shared = pool(3).await;
        let pa = provider(&shared, a, mode).await;
        // The other shard's tenant: B's home is A's.
        let _px = provider(&shared, &schemas[1], mode).await;
        let pb = provider(&shared, b, mode).await;
        for (p, id) in [(&pa, "a1"), (&pb, "b1")] {
            p.enqueue_for_orchestrator(start(id), None)
                .await
                .expect("enqueue");
        }
        // B's read, warm, so that its time below is the wait alone.
        pb.read("b1").await.expect("B's first read");
        let gave_up = || pa.admission_stats().lock_timeouts;
        let before = gave_up();

        let history = hold_table(a, "history", "ACCESS EXCLUSIVE").await;
        let first = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.read("a1").await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while gave_up() == before {
            assert!(Instant::now() < deadline, "{mode}: A's read never gave up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let later: Vec<_> = (0..LATER_CALLS)
            .map(|_| {
                let pa = pa.clone();
                tokio::spawn(async move { pa.read("a1").await })
            })
            .collect();
        // A's later reads wait their turn in A's line, counted on the pool
        // with the read that waits out the lock.
        eventually("A's later reads joined A's line", || async {
            pa.admission_stats().waiting_out_locks == 1 + LATER_CALLS
        })
        .await;

        let began = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(20), pb.read("b1")).await;
        let took = began.elapsed();
        assert!(matches!(read, Ok(Ok(_))), "{mode}: B's read: {read:?}");
        // One of A's attempts (a second) and the slack of a loaded machine;
        // before, one second per later read as well.
        assert!(
            took < Duration::from_millis(2500),
            "{mode}: B's read took {took:?} behind A's {LATER_CALLS} later reads"
        );
        assert!(
            !first.is_finished() && later.iter().all(|t| !t.is_finished()),
            "{mode}: A's reads returned while A's history was locked"
        );

        release_table(history).await;
        for task in std::iter::once(first).chain(later) {
            let read = tokio::time::timeout(Duration::from_secs(20), task).await;
            assert!(
                matches!(read, Ok(Ok(Ok(ref events))) if events.is_empty()),
                "{mode}: A's read once the lock was gone: {read:?}"
            );
        }
        assert_eq!(
            pa.admission_stats().waiting_out_locks,
            0,
            "{mode}: every read returned"
        );
        shared.close().await;
    })
    .await;
}

in_both_modes!(an_ack_that_waits_out_a_lock_is_not_timed_as_a_wait_for_a_connection:
    an_ack_that_waits_out_a_lock_is_not_timed_as_a_wait_for_a_connection_procedures,
    an_ack_that_waits_out_a_lock_is_not_timed_as_a_wait_for_a_connection_inline);

/// `slowest_leased_acquire` is the longest leased work waited for a pool
/// connection, for sizing the pool. An activity ack of a tenant alone on
/// its pool waits out a lock on its worker queue through two give-ups or
/// more; each attempt got the pool's idle connection at once, so the
/// slowest acquire stays well under a second (before, each acquire was
/// timed from the ack's start, and read the whole wait for the lock).
async fn an_ack_that_waits_out_a_lock_is_not_timed_as_a_wait_for_a_connection(mode: SqlMode) {
    with_schema("lock_acquire", |s| async move {
        let shared = super::recycling_pool(0).await;
        let p = provider(&shared, &s, mode).await;
        p.enqueue_for_worker(activity("w0", 1))
            .await
            .expect("enqueue work");
        let (_, token, _) = p
            .fetch_work_item(
                Duration::from_secs(60),
                Duration::ZERO,
                None,
                &TagFilter::Any,
            )
            .await
            .expect("fetch work")
            .expect("the activity");
        let gave_up = || p.admission_stats().lock_timeouts;
        let before = gave_up();

        let holder = hold_table(&s, "worker_queue", "ACCESS EXCLUSIVE").await;
        let ack = {
            let p = p.clone();
            tokio::spawn(async move { p.ack_work_item(&token, Some(completion("w0", 1))).await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while gave_up() < before + 2 {
            assert!(
                Instant::now() < deadline,
                "{mode}: the ack never gave up twice"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release_table(holder).await;
        let acked = tokio::time::timeout(Duration::from_secs(20), ack).await;
        assert!(
            matches!(acked, Ok(Ok(Ok(())))),
            "{mode}: the ack once the lock was gone: {acked:?}"
        );
        let slowest = p.admission_stats().slowest_leased_acquire;
        assert!(
            slowest < Duration::from_millis(900),
            "{mode}: slowest leased acquire {slowest:?} after waiting out a lock"
        );
        shared.close().await;
    })
    .await;
}
