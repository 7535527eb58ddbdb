//! A pool shared by many tenants. Tenant affinity
//! (`PostgresOptions::connections_per_tenant`): each tenant's operations
//! stay on its own few server backends, and closing the shared pool closes
//! them. The statement cache (`PostgresOptions::statement_cache_capacity`):
//! a connection keeps the prepared statements of many tenants. A
//! neighbour's long call: [`long_calls`].

mod long_calls;

use std::collections::HashSet;

use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::{Connection, PgConnection, PgPool};

use crate::fixtures::{claim_and_ack_turn, start};
use crate::support::{
    TestSchema, affine_provider, connect_options, in_both_modes, provider_with_options,
    with_schemas,
};

const LEASE: Duration = Duration::from_secs(30);

/// A shared pool of `connections` from `PostgresOptions::pool_options`,
/// its backends named `app`.
async fn shared_pool(connections: u32, app: &str) -> PgPool {
    PostgresOptions::default()
        .max_connections(connections)
        .pool_options()
        .connect_with(connect_options().application_name(app))
        .await
        .expect("shared pool")
}

async fn provider(pool: &PgPool, schema: &TestSchema, mode: SqlMode, k: u32) -> PostgresProvider {
    affine_provider(pool, &schema.name, mode, k).await
}

/// The server backends named `app` now.
async fn backends(observer: &PgPool, app: &str) -> HashSet<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(app)
        .fetch_all(observer)
        .await
        .expect("pg_stat_activity")
        .into_iter()
        .collect()
}

/// `n` operations of `p` at once: enqueues of distinct instances.
async fn burst(p: &PostgresProvider, prefix: &str, n: usize) {
    let all = (0..n).map(|i| p.enqueue_for_orchestrator(start(&format!("{prefix}{i}")), None));
    for outcome in futures::future::join_all(all).await {
        outcome.expect("enqueue");
    }
}

in_both_modes!(the_shares_together_stay_within_the_pool:
    the_shares_together_stay_within_the_pool_procedures,
    the_shares_together_stay_within_the_pool_inline; 4);

/// Four tenants on a pool of 9 with 2 connections each (four shards of two,
/// and the one connection the shared pool keeps), all four busy at once:
/// the pool opens its nine backends and no more, borrowing included, and a
/// tenant's turn runs on its share. Closing the shared pool closes every
/// backend.
async fn the_shares_together_stay_within_the_pool(mode: SqlMode) {
    with_schemas("affinity", 4, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("affinity_{}", schemas[0].name);
        let shared = shared_pool(9, &app).await;
        let mut providers = Vec::new();
        for s in &schemas {
            providers.push(provider(&shared, s, mode, 2).await);
        }

        let all = providers
            .iter()
            .enumerate()
            .map(|(i, p)| async move { burst(p, &format!("t{i}-"), 40).await });
        futures::future::join_all(all).await;
        let opened = backends(&observer, &app).await;
        assert!(
            opened.len() <= 9,
            "{mode}: four busy tenants opened {} backends on a pool of 9",
            opened.len()
        );

        // A whole turn on the first tenant's share.
        let p = &providers[0];
        claim_and_ack_turn(p, LEASE).await;

        shared.close().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !backends(&observer, &app).await.is_empty() {
            if Instant::now() >= deadline {
                let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&app)
                .fetch_all(&observer)
                .await
                .expect("pg_stat_activity");
                panic!("{mode}: the shards' backends outlived the shared pool: {rows:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed = p.enqueue_for_orchestrator(start("late"), None).await;
        assert!(closed.is_err(), "{mode}: a shard served after the close");
    })
    .await;
}

/// `tenants` tenants on a pool of 9 with 2 connections each (four shards
/// of two, and the one connection the shared pool keeps): how many
/// backends the first tenant's forty operations at once open beyond those
/// open before (its home's first, opened when its provider was built).
async fn opened_by_the_first_of(mode: SqlMode, tenants: usize) -> usize {
    with_schemas("affinity", tenants, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("affinity_{}", schemas[0].name);
        let shared = shared_pool(9, &app).await;
        let mut providers = Vec::new();
        for s in &schemas {
            // Without the warm-up, whose connection can be the home
            // shard's second one (opened while the migration check's is
            // still on its way back to the pool): here the home opens one
            // backend in the build, the burst the rest.
            let options = PostgresOptions::default()
                .notifications(false)
                .connections_per_tenant(2)
                .warm_up(false);
            providers.push(provider_with_options(&shared, &s.name, mode, options).await);
        }
        let before = backends(&observer, &app).await;
        burst(&providers[0], "first-", 40).await;
        let after = backends(&observer, &app).await;
        shared.close().await;
        after.difference(&before).count()
    })
    .await
}

in_both_modes!(a_lone_tenant_borrows_the_idle_shares:
    a_lone_tenant_borrows_the_idle_shares_procedures,
    a_lone_tenant_borrows_the_idle_shares_inline; 4);

/// A tenant alone on the pool: while its own shard is busy it borrows the
/// others, so forty operations at once open more than its two backends.
/// Affinity does not confine a lone tenant.
async fn a_lone_tenant_borrows_the_idle_shares(mode: SqlMode) {
    let opened = opened_by_the_first_of(mode, 1).await;
    assert!(
        opened > 2,
        "{mode}: a lone tenant kept to its two connections ({opened} opened)"
    );
}

in_both_modes!(two_tenants_split_the_idle_shards:
    two_tenants_split_the_idle_shards_procedures,
    two_tenants_split_the_idle_shards_inline; 4);

/// Two tenants: each one's share is two shards, its home and a shard
/// nobody calls home. One tenant's forty operations borrow the second
/// shard, and open no backend beyond the share's four (one of which was
/// open before).
async fn two_tenants_split_the_idle_shards(mode: SqlMode) {
    let opened = opened_by_the_first_of(mode, 2).await;
    assert!(
        (2..=3).contains(&opened),
        "{mode}: one of two tenants opened {opened} backends"
    );
}

/// The app's backends now: (busy, of which waiting on a lock).
async fn blocked(observer: &PgPool, app: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state <> 'idle'), \
                count(*) FILTER (WHERE wait_event_type = 'Lock') \
         FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(app)
    .fetch_one(observer)
    .await
    .expect("pg_stat_activity")
}

/// Waits until exactly `n` of the app's backends are busy, all of them
/// waiting on a lock (0: all of them idle, returned to their pools).
async fn until_blocked(observer: &PgPool, app: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (busy, waiting) = blocked(observer, app).await;
        if busy == n && waiting == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} busy backends, {waiting} waiting on the lock, never {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many of a busy tenant's operations finish before its neighbour's
/// one: on a pool of three (with affinity, `k` = 1: two shards of one, a
/// tenant's each, and the one connection the shared pool keeps; `k` = 0,
/// the control: three for anyone), tenant A's twenty enqueues wait on a
/// lock of A's queue table, holding `held` backends (with affinity, its
/// own shard's; the control, all three), and the neighbour B enqueues one.
/// With affinity B's shard is B's alone, and B's enqueue must finish while
/// the lock still holds A's backlog; the control releases the lock first,
/// B's enqueue being behind A's in the pool's queue.
async fn ahead_of_the_neighbour(mode: SqlMode, k: u32, held: i64) -> usize {
    with_schemas("affinity", 2, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("affinity_{}_{k}", schemas[0].name);
        let shared = shared_pool(3, &app).await;
        let a = std::sync::Arc::new(provider(&shared, &schemas[0], mode, k).await);
        let b = std::sync::Arc::new(provider(&shared, &schemas[1], mode, k).await);
        until_blocked(&observer, &app, 0).await;

        let mut lock = observer.begin().await.expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE \"{}\".orchestrator_queue IN EXCLUSIVE MODE",
            schemas[0].name
        )))
        .execute(&mut *lock)
        .await
        .expect("lock A's queue");

        let a_done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backlog = tokio::spawn({
            let (a, a_done) = (a.clone(), a_done.clone());
            async move {
                futures::future::join_all((0..20).map(|i| {
                    let (a, a_done) = (&a, &a_done);
                    async move {
                        a.enqueue_for_orchestrator(start(&format!("a{i}")), None)
                            .await
                            .expect("A's enqueue");
                        a_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }))
                .await;
            }
        });
        until_blocked(&observer, &app, held).await;

        let neighbour = tokio::spawn({
            let (b, a_done) = (b.clone(), a_done.clone());
            async move {
                b.enqueue_for_orchestrator(start("b"), None)
                    .await
                    .expect("B's enqueue");
                a_done.load(std::sync::atomic::Ordering::SeqCst)
            }
        });
        let before_b = if k > 0 {
            let before_b = tokio::time::timeout(Duration::from_secs(20), neighbour)
                .await
                .expect("B's enqueue waited for A's backlog")
                .expect("B's task");
            lock.commit().await.expect("release the lock");
            before_b
        } else {
            lock.commit().await.expect("release the lock");
            neighbour.await.expect("B's task")
        };
        backlog.await.expect("A's task");
        shared.close().await;
        before_b
    })
    .await
}

in_both_modes!(a_busy_tenant_leaves_its_neighbours_share_to_it:
    a_busy_tenant_leaves_its_neighbours_share_to_it_procedures,
    a_busy_tenant_leaves_its_neighbours_share_to_it_inline; 4);

/// A tenant with a backlog has its share of the pool and no more: its
/// neighbour's operation runs on the neighbour's own share while the
/// backlog waits. Without affinity the neighbour queues behind the backlog
/// (the control).
async fn a_busy_tenant_leaves_its_neighbours_share_to_it(mode: SqlMode) {
    let with_affinity = ahead_of_the_neighbour(mode, 1, 1).await;
    assert_eq!(
        with_affinity, 0,
        "{mode}: the neighbour waited for the busy tenant's backlog"
    );
    let without = ahead_of_the_neighbour(mode, 0, 3).await;
    assert!(
        without >= 10,
        "{mode}: the control's neighbour waited for only {without} operations"
    );
}

/// `statements` distinct statements on one connection made with
/// `connect`, then how many it still has prepared.
async fn prepared_after(connect: sqlx::postgres::PgConnectOptions, statements: i32) -> i64 {
    let mut conn = PgConnection::connect_with(&connect)
        .await
        .expect("connection");
    for i in 0..statements {
        // Distinct texts, as each tenant's statements are.
        let _: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT $1::int4 + {i}")))
            .bind(1)
            .fetch_one(&mut conn)
            .await
            .expect("statement");
    }
    let kept = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .fetch_one(&mut conn)
        .await
        .expect("pg_prepared_statements");
    conn.close().await.expect("close");
    kept
}

/// A connection from `PostgresOptions::connect_options` keeps 300 distinct
/// statements prepared (the statements of a few inline tenants); sqlx's
/// default keeps 100 and prepares the rest again on every use.
#[tokio::test]
async fn a_connection_keeps_many_tenants_statements() {
    let options = PostgresOptions::default();
    let kept = prepared_after(
        options
            .connect_options(crate::support::database_url())
            .expect("url"),
        300,
    )
    .await;
    assert!(kept >= 300, "kept {kept} of 300");
    let small = options
        .statement_cache_capacity(100)
        .connect_options(crate::support::database_url())
        .expect("url");
    let kept = prepared_after(small, 300).await;
    assert!(kept <= 101, "a capacity of 100 kept {kept}");
}

/// A long-lived pool whose tenants come and go: one tenant stays while
/// twenty others are built and dropped, then a new one is built. The
/// departed twenty no longer count, so the new tenant's share is half the
/// shards (its home and one nobody calls home, two connections each): its
/// forty enqueues, held on a lock of its queue, occupy more than its home's
/// two backends. Before, the shards were cut by every tenant ever built
/// (22 on 4 shards: its home alone), and they occupied two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn departed_tenants_leave_their_homes_to_the_live_ones() {
    with_schemas("churn", 22, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("churn_{}", schemas[0].name);
        let shared = shared_pool(9, &app).await;
        // With notifications on: without, a dropped provider's wake-ups
        // are flushed by a task of its own, which holds its home a moment
        // longer.
        let options = PostgresOptions::default()
            .connections_per_tenant(2)
            .warm_up(false);
        let mode = SqlMode::StoredProcedures;
        let stays = provider_with_options(&shared, &schemas[0].name, mode, options.clone()).await;
        for s in &schemas[1..21] {
            let gone = provider_with_options(&shared, &s.name, mode, options.clone()).await;
            drop(gone);
        }
        let new = std::sync::Arc::new(
            provider_with_options(&shared, &schemas[21].name, mode, options).await,
        );
        until_blocked(&observer, &app, 0).await;

        let mut lock = observer.begin().await.expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE \"{}\".orchestrator_queue IN EXCLUSIVE MODE",
            schemas[21].name
        )))
        .execute(&mut *lock)
        .await
        .expect("lock the new tenant's queue");
        let backlog = tokio::spawn({
            let new = new.clone();
            async move { burst(&new, "new-", 40).await }
        });
        // A departed tenant's home that nobody calls home now is lent: more
        // than the home's two backends wait on the lock.
        crate::support::eventually("the new tenant to borrow", || async {
            blocked(&observer, &app).await.1 > 2
        })
        .await;
        lock.commit().await.expect("release the lock");
        backlog.await.expect("the new tenant's enqueues");
        drop(stays);
        shared.close().await;
    })
    .await;
}
