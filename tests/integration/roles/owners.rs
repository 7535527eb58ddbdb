//! Whose schema a migration builds in. Any role with `CREATE` on the
//! database (a tenant's owner, as operations.md sets them up) can create a
//! schema under the name of a tenant not yet provisioned. Adopted, its
//! owner could drop or replace what the migration installs there and read
//! the tenant's data; and procedures installed by a more privileged role
//! (a superuser) into a schema a lesser role owns would run with the
//! installer's rights over tables that owner may replace. A migration
//! therefore builds only in a schema owned by the connecting role or a
//! role it is a member of, and leaves any other as it found it.

use duroxide_postgres::{PostgresProviderError, SqlMode, migrate};
use sqlx::PgPool;

use super::{pool_as, schema_name, with_roles};
use crate::support::{TestSchema, with_schema, with_schemas};

/// Runs each of `statements` on `pool`; panics naming the one that fails.
async fn run(pool: &PgPool, statements: &[String]) {
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The relations in the schema, by name.
async fn relations(schema: &TestSchema) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&schema.pool)
    .await
    .expect("relations")
}

/// A schema created first by another tenant's owner, open to everyone
/// (`GRANT ALL ... TO PUBLIC`) and holding a table of its own, is refused
/// by the rightful owner's migration and by a superuser's alike, in both
/// modes, naming its owner; nothing is created in it.
#[tokio::test]
async fn a_migration_refuses_a_schema_another_role_created_first() {
    with_schema("squatted", |schema| async move {
        with_roles(2, |roles| async move {
            let (squatter, rightful) = (&roles[0], &roles[1]);
            run(
                &schema.pool,
                &[format!(
                    "GRANT CREATE ON DATABASE \"{}\" TO \"{squatter}\", \"{rightful}\"",
                    database(&schema.pool).await
                )],
            )
            .await;
            let squatting = pool_as(squatter, 1).await;
            run(
                &squatting,
                &[
                    format!("CREATE SCHEMA \"{}\"", schema.name),
                    format!("GRANT ALL ON SCHEMA \"{}\" TO PUBLIC", schema.name),
                    format!("CREATE TABLE \"{}\".planted (a int)", schema.name),
                ],
            )
            .await;
            squatting.close().await;

            let owner = pool_as(rightful, 1).await;
            let name = schema_name(&schema);
            for (who, pool) in [(rightful.as_str(), &owner), ("the superuser", &schema.pool)] {
                for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
                    let refused = migrate::migrate(pool, &name, mode).await;
                    match refused {
                        Err(PostgresProviderError::SchemaOwnedByAnother {
                            ref owner,
                            ref role,
                            ..
                        }) => {
                            assert_eq!(owner, squatter, "{who}, {mode}");
                            assert_ne!(role, squatter, "{who}, {mode}");
                        }
                        other => panic!("{who}, {mode}: {other:?}"),
                    }
                    let error = refused.expect_err("refused");
                    assert!(!error.is_retryable(), "{who}, {mode}: {error}");
                    assert!(error.to_string().contains(squatter.as_str()), "{error}");
                }
            }
            owner.close().await;
            assert_eq!(relations(&schema).await, ["planted"], "nothing created");
        })
        .await;
    })
    .await;
}

/// The same schema, with the squatter's own migration in it (bookkeeping
/// that says the schema is current, tables and procedures it owns), open to
/// everyone: a migration by the rightful owner, or by a superuser, finds
/// nothing to do and would have taken it as it is; it is refused all the
/// same, in both modes.
#[tokio::test]
async fn a_migration_refuses_a_schema_another_role_migrated_first() {
    with_schema("squatted_migrated", |schema| async move {
        with_roles(2, |roles| async move {
            let (squatter, rightful) = (&roles[0], &roles[1]);
            let name = schema_name(&schema);
            run(
                &schema.pool,
                &[format!(
                    "GRANT CREATE ON DATABASE \"{}\" TO \"{squatter}\", \"{rightful}\"",
                    database(&schema.pool).await
                )],
            )
            .await;
            let squatting = pool_as(squatter, 1).await;
            migrate::migrate(&squatting, &name, SqlMode::StoredProcedures)
                .await
                .unwrap_or_else(|e| panic!("the squatter's own migration: {e}"));
            run(
                &squatting,
                &[
                    format!("GRANT ALL ON SCHEMA \"{}\" TO PUBLIC", schema.name),
                    format!(
                        "GRANT ALL ON ALL TABLES IN SCHEMA \"{}\" TO PUBLIC",
                        schema.name
                    ),
                ],
            )
            .await;
            squatting.close().await;
            let before = relations(&schema).await;

            let owner = pool_as(rightful, 1).await;
            for (who, pool) in [(rightful.as_str(), &owner), ("the superuser", &schema.pool)] {
                for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
                    match migrate::migrate(pool, &name, mode).await {
                        Err(PostgresProviderError::SchemaOwnedByAnother { owner, .. }) => {
                            assert_eq!(&owner, squatter, "{who}, {mode}");
                        }
                        other => panic!("{who}, {mode}: {other:?}"),
                    }
                }
            }
            owner.close().await;
            assert_eq!(relations(&schema).await, before, "nothing changed");
        })
        .await;
    })
    .await;
}

/// A schema an operator created for the tenant's owner role (`CREATE
/// SCHEMA ... AUTHORIZATION owner`, no right on the database) is migrated
/// by that owner, and another by a member of it; the superuser, a member of
/// no role it was not granted, is refused.
#[tokio::test]
async fn a_migration_builds_in_a_schema_of_its_role_or_one_it_belongs_to() {
    with_schemas("owned", 2, |schemas| async move {
        with_roles(2, |roles| async move {
            let (owner, member) = (&roles[0], &roles[1]);
            for schema in &schemas {
                run(
                    &schema.pool,
                    &[format!(
                        "CREATE SCHEMA \"{}\" AUTHORIZATION \"{owner}\"",
                        schema.name
                    )],
                )
                .await;
            }
            run(
                &schemas[0].pool,
                &[format!("GRANT \"{owner}\" TO \"{member}\"")],
            )
            .await;
            let names: Vec<_> = schemas.iter().map(schema_name).collect();
            let refused =
                migrate::migrate(&schemas[0].pool, &names[0], SqlMode::StoredProcedures).await;
            assert!(
                matches!(
                    refused,
                    Err(PostgresProviderError::SchemaOwnedByAnother { .. })
                ),
                "the superuser: {refused:?}"
            );
            assert!(relations(&schemas[0]).await.is_empty(), "nothing created");

            for ((role, schema), name) in [owner, member].into_iter().zip(&schemas).zip(&names) {
                let pool = pool_as(role, 1).await;
                migrate::migrate(&pool, name, SqlMode::StoredProcedures)
                    .await
                    .unwrap_or_else(|e| panic!("{role}: {e}"));
                let status = migrate::inspect(&pool, name)
                    .await
                    .unwrap_or_else(|e| panic!("inspect: {e}"));
                assert!(status.is_current(), "{role}: {status:?}");
                assert!(!relations(schema).await.is_empty());
                pool.close().await;
            }
        })
        .await;
    })
    .await;
}

/// The database the test pool is connected to.
async fn database(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .expect("current_database")
}
