//! A schema of another provider. `duroxide-pg` keeps its migrations in a
//! table of the same name, `_duroxide_migrations` (version, name,
//! applied_at), so a database shared by both providers, or a schema moved
//! from one to the other, holds bookkeeping this build did not write. It is
//! no tenant: a provider or a migration refuses it with a clear error, the
//! operator's commands neither list it nor act on it, and nothing in it
//! changes.

use duroxide_postgres::{
    MigrationMode, PostgresOptions, PostgresProvider, PostgresProviderError, SqlMode, migrate,
    tenants,
};

use super::name;
use crate::support::{TestSchema, with_schema};

/// The other provider's bookkeeping, as its release 0.1.38 creates it, with
/// 21 migrations recorded, and one of its tables holding a row.
pub(super) const OTHER_PROVIDER: [&str; 5] = [
    "CREATE SCHEMA {{schema}}",
    "CREATE TABLE {{schema}}._duroxide_migrations (version BIGINT PRIMARY KEY, \
     name TEXT NOT NULL, applied_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP)",
    "INSERT INTO {{schema}}._duroxide_migrations (version, name) \
     SELECT g, 'migration_' || g FROM generate_series(1, 21) g",
    "CREATE TABLE {{schema}}.instances (instance_id TEXT PRIMARY KEY, orchestration_name TEXT)",
    "INSERT INTO {{schema}}.instances VALUES ('theirs', 'TheirOrchestration')",
];

/// Every table and column of the schema, with the rows of its two tables.
async fn contents(schema: &TestSchema) -> (Vec<String>, i64, i64) {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name || ' ' || data_type \
           FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&schema.pool)
    .await
    .expect("columns");
    let migrations: i64 = sqlx::query_scalar(
        schema.statement("SELECT count(*) FROM {{schema}}._duroxide_migrations"),
    )
    .fetch_one(&schema.pool)
    .await
    .expect("their migrations");
    let instances: i64 =
        sqlx::query_scalar(schema.statement("SELECT count(*) FROM {{schema}}.instances"))
            .fetch_one(&schema.pool)
            .await
            .expect("their instances");
    (columns, migrations, instances)
}

fn is_refused_as_another_providers(err: &PostgresProviderError, schema: &str) -> bool {
    matches!(err, PostgresProviderError::ForeignBookkeeping { schema: s } if s == schema)
        && err.to_string().contains("_duroxide_migrations")
        && !err.is_retryable()
}

#[tokio::test]
async fn another_providers_schema_is_refused_and_left_as_it_was() {
    with_schema("ten_other", |schema| async move {
        schema.run_all(&OTHER_PROVIDER).await;
        let before = contents(&schema).await;
        let tenant = name(&schema);

        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            for migrations in [MigrationMode::Apply, MigrationMode::Verify] {
                let refused = PostgresProvider::from_pool_with(
                    schema.pool.clone(),
                    PostgresOptions::default()
                        .schema(&schema.name)
                        .sql_mode(mode)
                        .migration_mode(migrations),
                )
                .await
                .err()
                .unwrap_or_else(|| panic!("{mode} {migrations:?}: started"));
                assert!(
                    is_refused_as_another_providers(&refused, &schema.name),
                    "{mode} {migrations:?}: {refused:?}"
                );
            }
            let refused = migrate::migrate(&schema.pool, &tenant, mode)
                .await
                .expect_err("migrated");
            assert!(
                is_refused_as_another_providers(&refused, &schema.name),
                "{refused:?}"
            );
        }
        let inspected = migrate::inspect(&schema.pool, &tenant)
            .await
            .expect_err("inspected");
        assert!(
            is_refused_as_another_providers(&inspected, &schema.name),
            "{inspected:?}"
        );

        // No tenant to the operator's commands.
        let listed = tenants::list(&schema.pool).await.expect("list");
        assert!(!listed.contains(&tenant), "{listed:?}");
        let dropped = tenants::drop_tenant(&schema.pool, &tenant, true)
            .await
            .expect_err("dropped");
        assert_eq!(dropped.sqlstate().as_deref(), Some("DX003"), "{dropped}");
        let granted =
            tenants::grant_runtime_role(&schema.pool, &tenant, "postgres", SqlMode::InlineSql)
                .await
                .expect_err("granted");
        assert_eq!(granted.sqlstate().as_deref(), Some("DX003"), "{granted}");
        let unreadable = tenants::unreadable(&schema.pool, &tenant)
            .await
            .expect_err("read");
        assert_eq!(
            unreadable.sqlstate().as_deref(),
            Some("DX003"),
            "{unreadable}"
        );

        assert_eq!(contents(&schema).await, before);
    })
    .await;
}
