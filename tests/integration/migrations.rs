//! Migrations: applied once under concurrency, refused when the schema is
//! newer or edited, verified (not applied) when DDL is off; procedures
//! reinstalled when changed and dropped when retired; health reporting.

use duroxide_postgres::{
    MigrationMode, PgProviderError, PostgresOptions, PostgresProvider, SchemaName, SqlMode, migrate,
};

use crate::support::with_schema;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_providers_starting_together_migrate_once() {
    with_schema("mig_concurrent", |schema| async move {
        let starts = (0..8).map(|_| {
            let pool = schema.pool.clone();
            let name = schema.name.clone();
            tokio::spawn(async move { PostgresProvider::from_pool(pool, &name).await })
        });
        for outcome in futures::future::join_all(starts).await {
            let provider = outcome.expect("task").expect("every provider starts");
            assert!(provider.health().await.is_ready());
        }
        let applied: i64 =
            sqlx::query_scalar(&schema.sql("SELECT count(*) FROM {{schema}}._duroxide_migrations"))
                .fetch_one(&schema.pool)
                .await
                .expect("count migrations");
        assert_eq!(applied, migrate::migrations().len() as i64);
        let installed: i64 =
            sqlx::query_scalar(&schema.sql("SELECT count(*) FROM {{schema}}._duroxide_procedures"))
                .fetch_one(&schema.pool)
                .await
                .expect("count procedures");
        assert_eq!(installed, migrate::procedures().len() as i64);
    })
    .await;
}

#[tokio::test]
async fn schema_newer_than_the_binary_is_refused() {
    with_schema("mig_newer", |schema| async move {
        let provider = schema.provider().await;
        sqlx::query(&schema.sql(
            "INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms) \
             VALUES (999999, '999999_future', '\\x00', 0)",
        ))
        .execute(&schema.pool)
        .await
        .expect("record a future migration");
        let err = PostgresProvider::from_pool(schema.pool.clone(), &schema.name)
            .await
            .expect_err("a newer schema must be refused");
        assert!(
            matches!(err, PgProviderError::SchemaTooNew { found: 999999, .. }),
            "{err}"
        );
        assert!(!err.is_retryable());
        let health = provider.health().await;
        assert!(!health.is_ready());
        assert!(
            health.error.as_deref().is_some_and(|e| e.contains("newer")),
            "{health:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn edited_migration_is_refused() {
    with_schema("mig_edited", |schema| async move {
        schema.provider().await;
        sqlx::query(&schema.sql(
            "UPDATE {{schema}}._duroxide_migrations SET checksum = '\\xdeadbeef' WHERE version = 1",
        ))
        .execute(&schema.pool)
        .await
        .expect("tamper with checksum");
        let err = PostgresProvider::from_pool(schema.pool.clone(), &schema.name)
            .await
            .expect_err("an edited migration must be refused");
        assert!(
            matches!(err, PgProviderError::MigrationChanged { version: 1, .. }),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn verify_mode_runs_no_ddl_and_refuses_an_unmigrated_schema() {
    with_schema("mig_verify", |schema| async move {
        let options = PostgresOptions::default()
            .schema(schema.name.clone())
            .migration_mode(MigrationMode::Verify);
        let err = PostgresProvider::from_pool_with(schema.pool.clone(), options.clone())
            .await
            .expect_err("verify mode on an empty schema must fail");
        assert!(
            matches!(err, PgProviderError::SchemaNotReady { .. }),
            "{err}"
        );
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema.name)
                .fetch_one(&schema.pool)
                .await
                .expect("query namespace");
        assert!(!exists, "verify mode must not create the schema");

        schema.provider().await;
        let verified = PostgresProvider::from_pool_with(schema.pool.clone(), options)
            .await
            .expect("verify mode accepts a current schema");
        assert!(verified.health().await.is_ready());
    })
    .await;
}

#[tokio::test]
async fn changed_or_dropped_procedures_are_reinstalled() {
    with_schema("mig_reinstall", |schema| async move {
        let provider = schema.provider().await;
        let health = provider.health().await;
        assert!(health.is_ready(), "{health:?}");
        assert_eq!(health.schema_version, Some(migrate::latest_version()));

        // A procedure whose recorded checksum differs (as after an upgrade) ...
        sqlx::query(&schema.sql(
            "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00' WHERE name = 'get_custom_status'",
        ))
        .execute(&schema.pool)
        .await
        .expect("stale checksum");
        // ... and one dropped by hand.
        sqlx::query(&schema.sql("DROP FUNCTION {{schema}}.get_kv_value(text, text)"))
            .execute(&schema.pool)
            .await
            .expect("drop function");
        let health = provider.health().await;
        assert!(health.migrations_pending, "{health:?}");

        let again = schema.provider().await;
        assert!(again.health().await.is_ready());
        let rows: i64 = sqlx::query_scalar(&schema.sql(
            "SELECT count(*) FROM {{schema}}.get_kv_value('nobody', 'k')",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("reinstalled function answers");
        assert_eq!(rows, 0);
    })
    .await;
}

#[tokio::test]
async fn procedures_a_newer_build_retired_are_dropped() {
    with_schema("mig_retire", |schema| async move {
        schema.provider().await;
        // As an earlier build would have left it: a recorded procedure this
        // build no longer embeds.
        sqlx::query(&schema.sql(
            "CREATE FUNCTION {{schema}}.next_orchestration_due() RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'",
        ))
        .execute(&schema.pool)
        .await
        .expect("old procedure");
        sqlx::query(&schema.sql(
            "INSERT INTO {{schema}}._duroxide_procedures (name, checksum) VALUES ('next_orchestration_due', '\\x00')",
        ))
        .execute(&schema.pool)
        .await
        .expect("recorded");
        let name = SchemaName::new(&schema.name).expect("valid name");
        let mut conn = schema.pool.acquire().await.expect("connection");
        let status = migrate::inspect(&mut conn, &name)
            .await
            .expect("inspect");
        assert_eq!(status.retired_procedures, 1);
        // Harmless while it stays: a stored-procedure provider is ready.
        assert!(status.is_ready_for(SqlMode::StoredProcedures), "{status:?}");

        schema.provider().await;
        let functions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = 'next_orchestration_due'",
        )
        .bind(schema.name.as_str())
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(functions, 0, "retired procedure dropped");
        let status = migrate::inspect(&mut conn, &name)
            .await
            .expect("inspect");
        assert_eq!(status.retired_procedures, 0);
        assert!(status.is_current());
    })
    .await;
}
