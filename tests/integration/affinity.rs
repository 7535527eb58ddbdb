//! A pool shared by many tenants. Tenant affinity
//! (`PostgresOptions::connections_per_tenant`): each tenant's operations
//! stay on its own few server backends, and closing the shared pool closes
//! them. The statement cache (`PostgresOptions::statement_cache_capacity`):
//! a connection keeps the prepared statements of many tenants.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::{Connection, PgConnection, PgPool};

use crate::fixtures::{claim_and_ack_turn, start};
use crate::support::{TestSchema, connect_options, in_both_modes, with_schemas};

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
    PostgresProvider::from_pool_with(
        pool.clone(),
        PostgresOptions::default()
            .schema(schema.name.clone())
            .sql_mode(mode)
            .notifications(false)
            .connections_per_tenant(k),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider on {}: {e}", schema.name))
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

in_both_modes!(a_tenant_stays_on_its_share_of_the_pool:
    a_tenant_stays_on_its_share_of_the_pool_procedures,
    a_tenant_stays_on_its_share_of_the_pool_inline; 4);

/// Four tenants on a pool of 8 with 2 connections each: forty operations of
/// one tenant at once open at most two backends (without affinity they
/// spread over the pool: see the control), the next tenant's forty open two
/// others, and a tenant's turn runs on its share. Closing the shared pool
/// closes every backend.
async fn a_tenant_stays_on_its_share_of_the_pool(mode: SqlMode) {
    with_schemas("affinity", 5, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("affinity_{}", schemas[0].name);
        let shared = shared_pool(8, &app).await;
        let mut providers = Vec::new();
        for s in &schemas[..4] {
            providers.push(provider(&shared, s, mode, 2).await);
        }

        let mut seen = backends(&observer, &app).await;
        for (i, p) in providers.iter().take(2).enumerate() {
            burst(p, &format!("t{i}-"), 40).await;
            let now = backends(&observer, &app).await;
            let new: HashSet<i32> = now.difference(&seen).copied().collect();
            assert!(
                !new.is_empty() && new.len() <= 2,
                "{mode}: tenant {i}'s 40 operations opened {} backends",
                new.len()
            );
            seen.extend(new);
        }

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

        // The control: without affinity one tenant's operations spread.
        let control_app = format!("{app}_control");
        let plain = shared_pool(8, &control_app).await;
        let p = provider(&plain, &schemas[4], mode, 0).await;
        let before = backends(&observer, &control_app).await;
        burst(&p, "c-", 40).await;
        let after = backends(&observer, &control_app).await;
        assert!(
            after.difference(&before).count() > 2,
            "{mode}: the control did not spread ({before:?} -> {after:?})"
        );
        plain.close().await;
    })
    .await;
}

/// `statements` distinct statements on one connection made with
/// `connect`, then how many it still has prepared.
async fn prepared_after(connect: sqlx::postgres::PgConnectOptions, statements: i32) -> i64 {
    let mut conn = PgConnection::connect_with(&connect)
        .await
        .expect("connection");
    for i in 0..statements {
        // Distinct texts, as each tenant's statements are.
        let _: i32 = sqlx::query_scalar(&format!("SELECT $1::int4 + {i}"))
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
