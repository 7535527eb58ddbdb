//! SQL modes as they stand: the mode in force is visible, and inline SQL,
//! not available yet, is refused clearly instead of silently using procedures.

use duroxide::providers::Provider;
use duroxide_postgres::{PgProviderError, PostgresOptions, PostgresProvider, SqlMode};

use crate::support::with_schema;

#[tokio::test]
async fn procedures_mode_shows_in_name_and_health() {
    with_schema("mode_visible", |schema| async move {
        let p = schema.provider().await;
        assert_eq!(p.sql_mode(), SqlMode::StoredProcedures);
        assert_eq!(p.name(), "duroxide-postgres[procedures]");
        let health = p.health().await;
        assert_eq!(health.sql_mode, SqlMode::StoredProcedures);
        assert!(health.is_ready(), "{health:?}");
    })
    .await;
}

#[tokio::test]
async fn inline_mode_is_refused_until_it_exists() {
    with_schema("mode_inline", |schema| async move {
        let err = PostgresProvider::from_pool_with(
            schema.pool.clone(),
            PostgresOptions::default()
                .schema(schema.name.clone())
                .sql_mode(SqlMode::InlineSql),
        )
        .await
        .expect_err("inline SQL must be refused");
        assert!(
            matches!(&err, PgProviderError::InvalidInput { field, .. } if field == "sql_mode"),
            "{err}"
        );
    })
    .await;
}
