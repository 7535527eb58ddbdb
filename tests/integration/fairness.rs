//! Fetch admission on a shared pool: a tenant whose fetches are stuck holds
//! neither the connections that leased work needs nor every fetch slot.

use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::{ack_first_turn, claim_and_ack_turn, start};
use crate::support::{
    TestSchema, affine_provider, eventually, hold_table, in_both_modes, pool,
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
pub(super) async fn recycling_pool(tenants: usize) -> PgPool {
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

mod locks;
