//! A connection kept for its tenant's next operation
//! (`PostgresOptions::connection_reuse`): it never makes another tenant
//! wait, and it does not outlive the shared pool.

use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::start;
use crate::support::{
    TestSchema, connect_options, in_both_modes, provider_with_options, with_schemas,
};

/// Longer than any test here runs: only a hand-back, never the sweep,
/// can return a kept connection in time.
const KEPT: Duration = Duration::from_secs(120);

/// A shared pool of `connections`, its backends named `app`, that gives up
/// on a connection after `wait`.
async fn shared_pool(connections: u32, app: &str, wait: Duration) -> PgPool {
    PostgresOptions::default()
        .max_connections(connections)
        .acquire_timeout(wait)
        .pool_options()
        .connect_with(connect_options().application_name(app))
        .await
        .expect("shared pool")
}

/// A provider of `schema` on `pool`, one connection a tenant, connections
/// kept for [`KEPT`].
async fn keeping(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    let options = PostgresOptions::default()
        .notifications(false)
        .connections_per_tenant(1)
        .connection_reuse(KEPT);
    provider_with_options(pool, &schema.name, mode, options).await
}

/// How many backends named `app` the server has.
async fn backends(observer: &PgPool, app: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(app)
        .fetch_one(observer)
        .await
        .expect("pg_stat_activity")
}

in_both_modes!(a_kept_connection_goes_to_the_neighbour_that_needs_it:
    a_kept_connection_goes_to_the_neighbour_that_needs_it_procedures,
    a_kept_connection_goes_to_the_neighbour_that_needs_it_inline);

/// A pool of 3: the shared pool keeps one, and two shards of one
/// connection each. Tenants a, b and c get homes 0, 1 and 0. Each of a's
/// operations leaves its home's only connection kept for a; c's
/// operations, on the same shard, still get it, and a's again after c's,
/// within the pool's 5 s acquire timeout (the window is two minutes): a
/// kept connection goes back to the pool as soon as another tenant wants
/// its shard.
async fn a_kept_connection_goes_to_the_neighbour_that_needs_it(mode: SqlMode) {
    with_schemas("reuse", 3, |schemas| async move {
        let app = format!("reuse_{}", schemas[0].name);
        let shared = shared_pool(3, &app, Duration::from_secs(5)).await;
        let a = keeping(&shared, &schemas[0], mode).await;
        let _b = keeping(&shared, &schemas[1], mode).await;
        let c = keeping(&shared, &schemas[2], mode).await;
        for round in 0..3 {
            for (name, p) in [("a", &a), ("c", &c)] {
                p.enqueue_for_orchestrator(start(&format!("{name}-{round}")), None)
                    .await
                    .unwrap_or_else(|e| panic!("{name}'s enqueue, round {round}: {e}"));
            }
        }
        shared.close().await;
    })
    .await;
}

in_both_modes!(closing_the_shared_pool_closes_kept_connections:
    closing_the_shared_pool_closes_kept_connections_procedures,
    closing_the_shared_pool_closes_kept_connections_inline);

/// With a tenant's connection kept, closing the shared pool still closes
/// every backend of the pool, kept ones included, without waiting for the
/// window.
async fn closing_the_shared_pool_closes_kept_connections(mode: SqlMode) {
    with_schemas("reuse", 1, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("reuse_{}", schemas[0].name);
        let shared = shared_pool(3, &app, Duration::from_secs(5)).await;
        let p = keeping(&shared, &schemas[0], mode).await;
        p.enqueue_for_orchestrator(start("kept"), None)
            .await
            .expect("enqueue");
        assert!(backends(&observer, &app).await >= 1, "the pool's backends");
        tokio::time::timeout(Duration::from_secs(20), shared.close())
            .await
            .expect("the shared pool closes");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = backends(&observer, &app).await;
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{left} backends still open 20 s after the shared pool closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(p);
    })
    .await;
}

in_both_modes!(a_borrower_that_loses_a_kept_connection_is_not_left_waiting:
    a_borrower_that_loses_a_kept_connection_is_not_left_waiting_procedures,
    a_borrower_that_loses_a_kept_connection_is_not_left_waiting_inline);

/// One tenant alone on a pool of 3 (two shards of one connection): while
/// its home's connection is busy or still opening, its operations borrow
/// the other shard's, and each borrower leaves it kept for the tenant.
/// Several operations can pick that shard at once (it has room, or holds a
/// kept connection); those that do not get the connection wait in that
/// shard's pool and must get it when it is released, not have it kept for
/// the operations that come after them. Before the fix they waited until
/// the keep's window ended (here two minutes), so the pool's 5 s acquire
/// timeout failed them: every run of this test failed, in both modes.
/// Thirty rounds, each on a new pool, of sixteen tasks starting together
/// and reading histories; every read must succeed.
async fn a_borrower_that_loses_a_kept_connection_is_not_left_waiting(mode: SqlMode) {
    const ROUNDS: usize = 30;
    const TASKS: usize = 16;
    const READS: usize = 5;
    with_schemas("reuse", 1, |schemas| async move {
        let app = format!("reuse_{}", schemas[0].name);
        for round in 0..ROUNDS {
            let shared = shared_pool(3, &app, Duration::from_secs(5)).await;
            let p = std::sync::Arc::new(keeping(&shared, &schemas[0], mode).await);
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (p, start) = (p.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        for i in 0..READS {
                            p.read(&format!("nobody-{t}-{i}"))
                                .await
                                .unwrap_or_else(|e| {
                                    panic!("round {round}, task {t}, read {i}: {e}")
                                });
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("reader");
            }
            drop(p);
            shared.close().await;
        }
    })
    .await;
}
