//! Whose schema a migration builds in. Any role with `CREATE` on the
//! database (a tenant's owner, as operations.md sets them up) can create a
//! schema under the name of a tenant not yet provisioned. Adopted, its
//! owner could drop or replace what the migration installs there and read
//! the tenant's data; and procedures installed by a more privileged role
//! (a superuser) into a schema a lesser role owns would run with the
//! installer's rights over tables that owner may replace. A migration
//! therefore builds only in a schema whose owner already holds every right
//! of the connecting role, and leaves any other as it found it.

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
            may_create_schemas(&schema.pool, &[squatter, rightful]).await;
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
                    assert_eq!(error.sqlstate().as_deref(), Some("DX007"));
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
            may_create_schemas(&schema.pool, &[squatter, rightful]).await;
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
/// by that owner; the superuser and an admin that is a member of the owner
/// are refused, as the owner could replace what their procedures would run
/// with their rights. A schema the superuser owns and opened to an app role
/// (as `public` is on PostgreSQL 14, or with `GRANT CREATE ON SCHEMA`) is
/// migrated by that role: its owner holds every right the role has.
#[tokio::test]
async fn a_migration_builds_where_the_owner_gains_no_right_by_it() {
    with_schemas("owned", 2, |schemas| async move {
        with_roles(3, |roles| async move {
            let (owner, admin, app) = (&roles[0], &roles[1], &roles[2]);
            let (tenant, shared) = (&schemas[0], &schemas[1]);
            run(
                &tenant.pool,
                &[
                    format!(
                        "CREATE SCHEMA \"{}\" AUTHORIZATION \"{owner}\"",
                        tenant.name
                    ),
                    format!("GRANT \"{owner}\" TO \"{admin}\""),
                    format!("CREATE SCHEMA \"{}\"", shared.name),
                    format!(
                        "GRANT USAGE, CREATE ON SCHEMA \"{}\" TO \"{app}\"",
                        shared.name
                    ),
                ],
            )
            .await;
            let name = schema_name(tenant);
            let as_admin = pool_as(admin, 1).await;
            for (who, pool) in [
                ("the superuser", &tenant.pool),
                ("a member of the owner", &as_admin),
            ] {
                match migrate::migrate(pool, &name, SqlMode::StoredProcedures).await {
                    Err(PostgresProviderError::SchemaOwnedByAnother { owner: found, .. }) => {
                        assert_eq!(&found, owner, "{who}");
                    }
                    other => panic!("{who}: {other:?}"),
                }
            }
            as_admin.close().await;
            assert!(relations(tenant).await.is_empty(), "nothing created");

            for (role, schema) in [(owner, tenant), (app, shared)] {
                let pool = pool_as(role, 1).await;
                let name = schema_name(schema);
                migrate::migrate(&pool, &name, SqlMode::StoredProcedures)
                    .await
                    .unwrap_or_else(|e| panic!("{role}: {e}"));
                let status = migrate::inspect(&pool, &name)
                    .await
                    .unwrap_or_else(|e| panic!("inspect: {e}"));
                assert!(status.is_current(), "{role}: {status:?}");
                pool.close().await;
            }
        })
        .await;
    })
    .await;
}

/// Gives `roles` `CREATE` on the test database (the right to create
/// schemas), as operations.md gives each tenant's owner.
async fn may_create_schemas(pool: &PgPool, roles: &[&String]) {
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .expect("current_database");
    let grantees: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    run(
        pool,
        &[format!(
            "GRANT CREATE ON DATABASE \"{database}\" TO {}",
            grantees.join(", ")
        )],
    )
    .await;
}
