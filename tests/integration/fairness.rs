//! Fetch admission on a shared pool: a tenant whose fetches are stuck holds
//! neither the connections that leased work needs nor every fetch slot.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::fixtures::{
    ack_first_turn, activity, claim_and_ack_turn, completion, event, metadata, start,
};
use crate::support::{
    TestSchema, affine_provider, database_url, eventually, hold_table, in_both_modes, pool,
    provider_with_options, release_table, until_a_backend_waits_for, with_schema, with_schemas,
};

const LEASE: Duration = Duration::from_secs(5);

async fn provider(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    provider_with(
        pool,
        schema,
        mode,
        PostgresOptions::default().connections_per_tenant,
    )
    .await
}

/// [`provider`] with `k` connections per tenant (0: no tenant affinity).
async fn provider_with(
    pool: &PgPool,
    schema: &TestSchema,
    mode: SqlMode,
    k: u32,
) -> PostgresProvider {
    affine_provider(pool, &schema.name, mode, k).await
}

/// Backends waiting for a lock on `schema`'s orchestrator queue.
async fn blocked_on_queue(pool: &PgPool, schema: &TestSchema) -> i64 {
    sqlx::query_scalar(schema.statement(
        "SELECT count(*) FROM pg_locks WHERE NOT granted \
           AND relation = '{{schema}}.orchestrator_queue'::regclass",
    ))
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}

in_both_modes!(a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections:
    a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections_procedures,
    a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections_inline; 4);

/// Tenant B's fetches all block on a lock (a stand-in for any slow fetch:
/// a huge history, a burst on a busy server). On a pool of five, tenant A
/// must still commit the turn it holds before its lease ends, and claim new
/// work: with tenant affinity (the default), and on a plain pool, where
/// only the fetch slots keep a connection free.
async fn a_stuck_tenant_leaves_leased_work_and_other_tenants_their_connections(mode: SqlMode) {
    stuck_neighbour(mode, PostgresOptions::default().connections_per_tenant).await;
    stuck_neighbour(mode, 0).await;
}

/// The stuck-tenant check with `k` connections per tenant.
async fn stuck_neighbour(mode: SqlMode, k: u32) {
    with_schema("fair_a", |a| async move {
        with_schema("fair_b", |b| async move {
            let shared = pool(5).await;
            let pa = provider_with(&shared, &a, mode, k).await;
            let pb = provider_with(&shared, &b, mode, k).await;
            for id in ["a1", "a2"] {
                pa.enqueue_for_orchestrator(start(id), None)
                    .await
                    .expect("enqueue");
            }
            let (_, token, _) = pa
                .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("a1 claimed");
            for i in 0..10 {
                pb.enqueue_for_orchestrator(start(&format!("b{i}")), None)
                    .await
                    .expect("enqueue");
            }

            let mut blocker = b.pool.begin().await.expect("begin");
            sqlx::query(
                b.statement("LOCK TABLE {{schema}}.orchestrator_queue IN ACCESS EXCLUSIVE MODE"),
            )
            .execute(&mut *blocker)
            .await
            .expect("lock");
            let stuck: Vec<_> = (0..10)
                .map(|_| {
                    let pb = pb.clone();
                    tokio::spawn(async move {
                        pb.fetch_orchestration_item(LEASE, Duration::ZERO, None)
                            .await
                    })
                })
                .collect();
            // B holds what it may of the fetch slots, its other fetches
            // waiting for a slot. On a plain pool each slot's fetch holds a
            // connection, stuck on the lock. With tenant affinity (four
            // shards of one connection, two tenants) B's share of the pool
            // is two connections, and its fetches hold at most two slots,
            // each a connection, stuck. A stuck fetch gives up a second
            // after it began to wait (its lock timeout), and the next takes
            // its place.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let blocked = blocked_on_queue(&a.pool, &b).await;
                let stats = pb.admission_stats();
                let done = stuck.iter().filter(|t| t.is_finished()).count();
                if blocked >= 1 && stats.held + stats.waiting + done == 10 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "k = {k}: B never settled: {blocked} blocked, {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            // A's turn commits within its lease, and A claims new work.
            let ack = tokio::time::timeout(LEASE, ack_first_turn(&pa, &token, "a1")).await;
            assert!(
                matches!(ack, Ok(Ok(()))),
                "{mode}: A's ack behind B's fetches: {ack:?}"
            );
            let next = tokio::time::timeout(
                LEASE,
                pa.fetch_orchestration_item(LEASE, Duration::ZERO, None),
            )
            .await;
            match next {
                Ok(Ok(Some((item, _, _)))) => assert_eq!(item.instance, "a2"),
                other => panic!("{mode}, k = {k}: A could not fetch beside stuck B: {other:?}"),
            }

            blocker.rollback().await.expect("unlock");
            // Each of B's fetches claimed, found nothing, or gave up on the
            // lock with an error the runtime retries.
            for task in stuck {
                if let Err(e) = task.await.expect("task") {
                    assert!(e.is_retryable(), "{mode}, k = {k}: B's fetch: {e:?}");
                }
            }
            assert_eq!(pb.admission_stats().held, 0);
            shared.close().await;
        })
        .await;
    })
    .await;
}

/// A pool built from `PostgresOptions::pool_options` with one connection,
/// which may serve `tenants` distinct schemas.
async fn recycling_pool(tenants: usize) -> PgPool {
    PostgresOptions::default()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .tenants_per_connection(tenants)
        .pool_options()
        .connect_with(crate::support::connect_options())
        .await
        .expect("recycling pool")
}

async fn backend_pid(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_backend_pid")
}

in_both_modes!(a_connection_that_served_its_share_of_tenants_is_replaced:
    a_connection_that_served_its_share_of_tenants_is_replaced_procedures,
    a_connection_that_served_its_share_of_tenants_is_replaced_inline);

/// On a one-connection pool that allows two tenants per connection, the
/// first two tenants share the connection; the third one's first operation
/// gets a new server backend, and the old one exits. Tenants keep working
/// across the switch.
async fn a_connection_that_served_its_share_of_tenants_is_replaced(mode: SqlMode) {
    with_schemas("recycle", 3, |schemas| async move {
        let shared = recycling_pool(2).await;
        let first = backend_pid(&shared).await;
        let pa = provider(&shared, &schemas[0], mode).await;
        let pb = provider(&shared, &schemas[1], mode).await;
        for (p, id) in [(&pa, "a1"), (&pb, "b1"), (&pa, "a2")] {
            p.enqueue_for_orchestrator(start(id), None)
                .await
                .expect("enqueue");
        }
        assert_eq!(
            backend_pid(&shared).await,
            first,
            "{mode}: two tenants, one backend"
        );
        assert_eq!(pa.admission_stats().connections_recycled, 0);

        let pc = provider(&shared, &schemas[2], mode).await;
        pc.enqueue_for_orchestrator(start("c1"), None)
            .await
            .expect("enqueue");
        let second = backend_pid(&shared).await;
        assert_ne!(second, first, "{mode}: a third tenant on a full connection");
        assert_eq!(pc.admission_stats().connections_recycled, 1);

        // The old backend is gone from the server.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let alive: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                    .bind(first)
                    .fetch_one(&shared)
                    .await
                    .expect("pg_stat_activity");
            if alive == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: backend {first} still alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Every tenant still works: c's and a's work on the new connection.
        claim_and_ack_turn(&pa, LEASE).await;
        assert!(
            pc.fetch_orchestration_item(LEASE, Duration::ZERO, None)
                .await
                .expect("fetch")
                .is_some()
        );
        assert_eq!(
            backend_pid(&shared).await,
            second,
            "{mode}: c and a share the new backend"
        );
        shared.close().await;
    })
    .await;
}

in_both_modes!(an_ack_after_the_lease_ran_out_is_counted:
    an_ack_after_the_lease_ran_out_is_counted_procedures,
    an_ack_after_the_lease_ran_out_is_counted_inline);

/// An ack whose lease expired fails, and the pool's stats count it; the
/// acquire of that ack is timed.
async fn an_ack_after_the_lease_ran_out_is_counted(mode: SqlMode) {
    with_schema("expiry", |s| async move {
        let shared = recycling_pool(0).await;
        let p = provider(&shared, &s, mode).await;
        p.enqueue_for_orchestrator(start("e1"), None)
            .await
            .expect("enqueue");
        let (_, token, _) = p
            .fetch_orchestration_item(Duration::from_millis(200), Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");
        assert_eq!(p.admission_stats().lease_expiries, 0);
        // Wait until the server's clock has passed the lease.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live: i64 = sqlx::query_scalar(s.statement(
                "SELECT count(*) FROM {{schema}}.instance_locks \
                 WHERE locked_until_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            ))
            .fetch_one(&shared)
            .await
            .expect("instance_locks");
            if live == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: the lease never ran out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ack = ack_first_turn(&p, &token, "e1").await;
        assert!(ack.is_err(), "{mode}: ack after expiry: {ack:?}");
        let stats = p.admission_stats();
        assert_eq!(stats.lease_expiries, 1, "{mode}: {stats:?}");
        assert!(
            stats.slowest_leased_acquire > Duration::ZERO,
            "{mode}: {stats:?}"
        );
        shared.close().await;
    })
    .await;
}

in_both_modes!(a_stuck_tenant_leaves_its_shard_mates_acks_and_the_pool_its_fetches:
    a_stuck_tenant_leaves_its_shard_mates_acks_and_the_pool_its_fetches_procedures,
    a_stuck_tenant_leaves_its_shard_mates_acks_and_the_pool_its_fetches_inline; 4);

/// Ten tenants on a pool of ten with the default options: nine shards of
/// one connection (and the one the shared pool keeps), so the first and
/// the last tenant share shard 0, and neither may borrow. The last one's
/// orchestrator queue is locked (an operator's `VACUUM FULL`, a long
/// migration of that tenant) while its fetches and the first tenant's
/// wait: the first tenant's ack of the turn it holds must still commit
/// well within its lease (before, it waited behind the stuck fetch for the
/// shard's one connection for as long as the lock lasted), and a third
/// tenant must claim its work (before, the stuck fetches and those waiting
/// behind them for shard 0 held every fetch slot of the pool). The stuck
/// fetches give up, retryably, a second after they began to wait.
async fn a_stuck_tenant_leaves_its_shard_mates_acks_and_the_pool_its_fetches(mode: SqlMode) {
    with_schemas("mates", 10, |schemas| async move {
        let shared = pool(PostgresOptions::default().max_connections).await;
        let mut providers = Vec::new();
        for s in &schemas {
            let options = PostgresOptions::default().notifications(false);
            providers.push(provider_with_options(&shared, &s.name, mode, options).await);
        }
        let (first, third, last) = (&providers[0], &providers[2], &providers[9]);
        for id in ["a1", "a2"] {
            first
                .enqueue_for_orchestrator(start(id), None)
                .await
                .expect("enqueue");
        }
        let (_, token, _) = first
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("a1 claimed");
        third
            .enqueue_for_orchestrator(start("c1"), None)
            .await
            .expect("enqueue");
        last.enqueue_for_orchestrator(start("z1"), None)
            .await
            .expect("enqueue");

        let holder = hold_table(&schemas[9], "orchestrator_queue", "ACCESS EXCLUSIVE").await;
        let cap = last.admission_stats().per_schema;
        let fetches = |p: &PostgresProvider, n: usize| {
            (0..n)
                .map(|_| {
                    let p = p.clone();
                    tokio::spawn(async move {
                        p.fetch_orchestration_item(LEASE, Duration::ZERO, None)
                            .await
                    })
                })
                .collect::<Vec<_>>()
        };
        // As many of the last tenant's fetches as it may hold slots, and
        // enough of the first's to take the rest.
        let stuck = fetches(last, cap);
        until_a_backend_waits_for(&schemas[9], "orchestrator_queue", "the last tenant's fetch")
            .await;
        let slots = last.admission_stats().slots;
        let mates = fetches(first, slots - cap);
        // Every fetch at the gate, holding a slot, or (given up) done.
        eventually("every fetch to reach the gate", || async {
            let stats = last.admission_stats();
            let done = stuck
                .iter()
                .chain(&mates)
                .filter(|t| t.is_finished())
                .count();
            stats.held + stats.waiting + done == slots
        })
        .await;

        let began = Instant::now();
        let ack = tokio::time::timeout(LEASE, ack_first_turn(first, &token, "a1")).await;
        let took = began.elapsed();
        assert!(
            matches!(ack, Ok(Ok(()))),
            "{mode}: the first tenant's ack behind its shard-mate's stuck fetch: {ack:?}"
        );
        assert!(
            took < LEASE / 2,
            "{mode}: the first tenant's ack took {took:?} of its {LEASE:?} lease"
        );
        let claimed = tokio::time::timeout(
            LEASE / 2,
            third.fetch_orchestration_item(LEASE, Duration::ZERO, None),
        )
        .await;
        match claimed {
            Ok(Ok(Some((item, _, _)))) => assert_eq!(item.instance, "c1"),
            other => {
                panic!("{mode}: a third tenant could not fetch beside the stuck one: {other:?}")
            }
        }

        release_table(holder).await;
        for task in stuck {
            match task.await.expect("task") {
                Ok(_) => {}
                Err(e) => assert!(
                    e.is_retryable(),
                    "{mode}: a stuck fetch failed for good: {e:?}"
                ),
            }
        }
        let mut a2 = 0;
        for task in mates {
            if let Some((item, _, _)) = task.await.expect("task").expect("the first tenant's fetch")
            {
                assert_eq!(item.instance, "a2");
                a2 += 1;
            }
        }
        assert!(a2 <= 1, "{mode}: a2 claimed twice");
        assert_eq!(last.admission_stats().held, 0);
        shared.close().await;
    })
    .await;
}

in_both_modes!(a_locked_tenants_acks_leave_its_shard_mate_the_connection:
    a_locked_tenants_acks_leave_its_shard_mate_the_connection_procedures,
    a_locked_tenants_acks_leave_its_shard_mate_the_connection_inline; 4);

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
        // Give A's turn ack time to reach the connection's line or the lock.
        tokio::time::sleep(Duration::from_millis(300)).await;

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
        // Give A's start time to reach the connection's line or the lock.
        tokio::time::sleep(Duration::from_millis(300)).await;

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
        // Give it time to reach the connection's line or the lock.
        tokio::time::sleep(Duration::from_millis(300)).await;
        b_within(mode, "info", lease, pb.get_instance_info("b1")).await;
        let a_delete = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.delete_instances_atomic(&["a3".to_string()], true).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
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
