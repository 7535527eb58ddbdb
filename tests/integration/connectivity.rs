//! Connectivity: the `application_name` a provider's own pool reports, and a
//! health check that answers within its bound when no connection is free.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::postgres::PgPoolOptions;

use crate::support::{ScratchDatabase, database_url, with_schema};

/// `url` with `application_name=name` added to its query string.
fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// The `application_name` the provider's own connections report.
async fn application_name(provider: &PostgresProvider) -> String {
    sqlx::query_scalar("SELECT pg_catalog.current_setting('application_name')")
        .fetch_one(provider.pool())
        .await
        .expect("application_name")
}

#[tokio::test]
async fn the_default_application_name_names_the_schema() {
    with_schema("appname_default", |schema| async move {
        let options = PostgresOptions::default()
            .schema(schema.name.clone())
            .max_connections(2)
            .notifications(false);
        let provider = PostgresProvider::connect_with(database_url(), options)
            .await
            .expect("provider");
        assert_eq!(
            application_name(&provider).await,
            format!("duroxide-postgres/{}", schema.name)
        );
        provider.pool().close().await;
    })
    .await;
}

#[tokio::test]
async fn an_application_name_in_the_url_is_kept() {
    with_schema("appname_url", |schema| async move {
        let options = PostgresOptions::default()
            .schema(schema.name.clone())
            .max_connections(2)
            .notifications(false);
        let url = with_application_name(database_url(), "billing-worker");
        let provider = PostgresProvider::connect_with(&url, options)
            .await
            .expect("provider");
        assert_eq!(application_name(&provider).await, "billing-worker");
        provider.pool().close().await;
    })
    .await;
}

#[tokio::test]
async fn health_answers_within_its_bound_when_the_pool_has_no_free_connection() {
    with_schema("health_bound", |schema| async move {
        // One connection, a long acquire timeout, and the connection held.
        // The health timeout sits far below the pool's 60 s acquire timeout
        // but far above what a ready answer needs on a loaded machine: at
        // 300 ms, the first probe timed out once under CI's 24 test threads.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect(database_url())
            .await
            .expect("pool");
        let provider = PostgresProvider::from_pool_with(
            pool.clone(),
            PostgresOptions::default()
                .schema(schema.name.clone())
                .notifications(false)
                .health_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("provider");
        assert!(provider.health().await.is_ready());

        let held = pool.acquire().await.expect("the only connection");
        let start = Instant::now();
        let health = provider.health().await;
        let waited = start.elapsed();
        assert!(!health.reachable, "{health:?}");
        assert!(!health.is_ready());
        let error = health.error.as_deref().unwrap_or_default();
        assert!(error.contains("health_timeout"), "{error}");
        // Bounded by the health timeout, not the pool's 60 s acquire timeout.
        assert!(waited >= Duration::from_secs(5), "health took {waited:?}");
        assert!(waited < Duration::from_secs(30), "health took {waited:?}");

        drop(held);
        assert!(provider.health().await.is_ready());
        pool.close().await;
    })
    .await;
}

/// Runs `body` on a database of its own created with `options`, dropping
/// it afterwards even when `body` panics.
async fn in_database<F, Fut>(tag: &str, options: &str, body: F)
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let database =
        ScratchDatabase::create_with(&format!("dx_{tag}_{}", std::process::id()), 2, options).await;
    let outcome = std::panic::AssertUnwindSafe(body(database.pool.clone()))
        .catch_unwind()
        .await;
    database.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A database whose encoding cannot hold every character (LATIN1) is
/// refused when a provider starts, naming the encoding, before anything is
/// written: on it every payload with a character outside LATIN1 would fail
/// its write with SQLSTATE 22P05, permanently, one item at a time.
#[tokio::test]
async fn a_database_that_cannot_store_every_character_is_refused_at_start() {
    in_database(
        "latin1",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        |pool| async move {
            for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
                let err = PostgresProvider::from_pool_with(
                    pool.clone(),
                    PostgresOptions::default()
                        .schema("tenant")
                        .sql_mode(mode)
                        .notifications(false),
                )
                .await
                .expect_err("a LATIN1 database is refused");
                assert!(!err.is_retryable(), "{err}");
                let text = err.to_string();
                assert!(text.contains("LATIN1") && text.contains("UTF8"), "{text}");
                let created: bool =
                    sqlx::query_scalar("SELECT to_regnamespace('tenant') IS NOT NULL")
                        .fetch_one(&pool)
                        .await
                        .expect("schema check");
                assert!(!created, "nothing is written to a refused database");
            }
        },
    )
    .await;
}

/// A `SQL_ASCII` database stores the bytes it is sent, unchecked: the
/// provider accepts it, and text outside ASCII comes back as it went in.
#[tokio::test]
async fn a_sql_ascii_database_keeps_text_as_it_was_sent() {
    in_database(
        "sqlascii",
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        |pool| async move {
            let provider = PostgresProvider::from_pool_with(
                pool.clone(),
                PostgresOptions::default()
                    .schema("tenant")
                    .notifications(false),
            )
            .await
            .expect("a SQL_ASCII database is accepted");
            let data = "Grüße, 世界 🎉".to_string();
            provider
                .enqueue_for_orchestrator(
                    WorkItem::ExternalRaised {
                        instance: "i".to_string(),
                        name: "Go".to_string(),
                        data: data.clone(),
                    },
                    None,
                )
                .await
                .expect("enqueue");
            provider
                .enqueue_for_orchestrator(crate::fixtures::start("i"), None)
                .await
                .expect("enqueue start");
            let (item, _, _) = provider
                .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("claimed");
            assert!(
                item.messages
                    .iter()
                    .any(|m| matches!(m, WorkItem::ExternalRaised { data: d, .. } if *d == data)),
                "{:?}",
                item.messages
            );
        },
    )
    .await;
}
