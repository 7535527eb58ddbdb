//! Least-privilege roles, with real roles connecting: a runtime role with
//! `USAGE` on its schema and `EXECUTE` on its procedures runs everything in
//! procedure mode and starts with `MigrationMode::Verify`; it cannot touch a
//! table; a tenant's runtime role can neither call another tenant's
//! procedures, read its tables, nor take its migration lock; and `EXECUTE`
//! never reaches `PUBLIC`, reinstallation included.
//!
//! Roles are global to the server: each test creates its own, uniquely
//! named, and drops them (`DROP OWNED`, `DROP ROLE`) whatever happened.

mod grantees;
mod grants;
mod owners;
mod rolling;
mod script;
mod tables;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{
    MigrationMode, PostgresOptions, PostgresProvider, PostgresProviderError, SchemaName, SqlMode,
    tenants,
};
use futures::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use tables::{
    assert_only_the_inline_role_reaches, owner_installs_an_inline_and_a_procedures_role,
    table_rights, tables_of,
};

use crate::support::{
    Kind, Slot, TestSchema, connect_options, fresh_schema_name, in_both_modes, pool, with_schema,
    with_schemas,
};

/// Runs `body` with `n` new login roles (no rights), then drops them
/// whatever happened.
async fn with_roles<F, Fut>(n: usize, body: F)
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin = pool(2).await;
    let roles: Vec<String> = (0..n)
        .map(|i| fresh_schema_name(&format!("role{i}")))
        .collect();
    for role in &roles {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN")))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("create role {role}: {e}"));
    }
    let outcome = AssertUnwindSafe(body(roles.clone())).catch_unwind().await;
    for role in &roles {
        for ddl in [
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ),
            format!("DROP OWNED BY \"{role}\""),
            format!("DROP ROLE \"{role}\""),
        ] {
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(ddl.to_string()))
                .execute(&admin)
                .await
            {
                eprintln!("{ddl}: {e}");
            }
        }
    }
    admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A pool connecting as `role` (the test server trusts local connections).
async fn pool_as(role: &str, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect_options().username(role))
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

fn schema_name(schema: &TestSchema) -> SchemaName {
    SchemaName::new(&schema.name).unwrap_or_else(|e| panic!("{e}"))
}

/// Migrates `schema` as the owner (the test's superuser) in procedure mode
/// and grants `role` what a runtime in `mode` needs.
async fn owner_installs_and_grants(schema: &TestSchema, role: &str, mode: SqlMode) {
    schema.provider().await;
    let rights = tenants::grant_runtime_role(&schema.pool, &schema_name(schema), role, mode)
        .await
        .unwrap_or_else(|e| panic!("grant {role}: {e}"));
    assert!(rights.usage, "{rights:?}");
}

/// A provider on `schema` over `pool` in `mode` with `migrations`.
async fn provider(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    migrations: MigrationMode,
) -> Result<PostgresProvider, PostgresProviderError> {
    PostgresProvider::from_pool_with(
        pool.clone(),
        PostgresOptions::default()
            .schema(schema)
            .sql_mode(mode)
            .migration_mode(migrations),
    )
    .await
}

/// A provider started with `Verify` on `schema` in `mode` over `pool`,
/// which connects as a runtime role.
async fn verify_as(pool: &PgPool, schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    provider(pool, &schema.name, mode, MigrationMode::Verify)
        .await
        .unwrap_or_else(|e| panic!("Verify as the runtime role in {mode}: {e}"))
}

/// The SQLSTATE of running `sql` in a transaction on `pool` that is rolled
/// back, `None` when it succeeded.
async fn sqlstate_of(pool: &PgPool, sql: &str) -> Option<String> {
    let mut tx = pool.begin().await.expect("begin");
    let outcome = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await;
    drop(tx);
    match outcome {
        Ok(_) => None,
        Err(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Start, activities, a timer, a sub-orchestration, an external event, then
/// delete: the smoke path, through a real runtime and client on `store`.
async fn smoke_path(store: Arc<PostgresProvider>) {
    let _slot = Slot::acquire(Kind::Runtime);
    let activities = ActivityRegistry::builder()
        .register("Greet", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("hello {name}"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Greet", input).await
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, input: String| async move {
                let greeting = ctx.schedule_activity("Greet", input.clone()).await?;
                ctx.schedule_timer(Duration::from_millis(50)).await;
                let child = ctx.schedule_sub_orchestration("Child", "child").await?;
                ctx.set_custom_status("waiting");
                let event = ctx.schedule_wait("Go").await;
                Ok(format!("{greeting}/{child}/{event}"))
            },
        )
        .build();
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let runtime =
        Runtime::start_with_options(store.clone(), activities, orchestrations, options).await;
    let client = Client::new(store);
    client
        .start_orchestration("smoke", "Parent", "world")
        .await
        .expect("start");
    // The event is raised once the orchestration waits for it.
    let mut seen = 0;
    loop {
        match client
            .wait_for_status_change(
                "smoke",
                seen,
                Duration::from_millis(20),
                Duration::from_secs(60),
            )
            .await
            .expect("status")
        {
            OrchestrationStatus::Running {
                custom_status,
                custom_status_version,
            } => {
                seen = custom_status_version;
                if custom_status.as_deref() == Some("waiting") {
                    break;
                }
            }
            other => panic!("before the event: {other:?}"),
        }
    }
    client
        .raise_event("smoke", "Go", "go")
        .await
        .expect("raise");
    match client
        .wait_for_orchestration("smoke", Duration::from_secs(60))
        .await
        .expect("wait")
    {
        OrchestrationStatus::Completed { output, .. } => {
            assert_eq!(output, "hello world/hello child/go");
        }
        other => panic!("smoke: {other:?}"),
    }
    let instances = client.list_all_instances().await.expect("list");
    assert_eq!(instances.len(), 2, "{instances:?}");
    let deleted = client
        .delete_instance("smoke", false)
        .await
        .expect("delete");
    assert_eq!(deleted.instances_deleted, 2, "the parent and its child");
    assert!(matches!(
        client
            .get_orchestration_status("smoke")
            .await
            .expect("status"),
        OrchestrationStatus::NotFound
    ));
    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_only_role_runs_the_smoke_path_with_verify() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_smoke", |schema| async move {
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            let rights = tenants::runtime_rights(&schema.pool, &schema_name(&schema), &role)
                .await
                .expect("rights");
            assert_eq!(rights.readable_tables, 0, "{rights:?}");
            assert_eq!(rights.executable_functions, rights.functions, "{rights:?}");
            let runtime_pool = pool_as(&role, 8).await;

            // Apply is refused, naming the right it lacks; Verify starts.
            let refused = provider(
                &runtime_pool,
                &schema.name,
                SqlMode::StoredProcedures,
                MigrationMode::Apply,
            )
            .await
            .expect_err("Apply as the runtime role must fail");
            let message = refused.to_string();
            assert!(
                matches!(refused, PostgresProviderError::InsufficientPrivilege { .. })
                    && message.contains(&role)
                    && message.contains("_duroxide_migrations")
                    && message.contains("MigrationMode::Verify"),
                "{message}"
            );
            let store = verify_as(&runtime_pool, &schema, SqlMode::StoredProcedures).await;
            let health = store.health().await;
            assert!(health.is_ready(), "{health:?}");
            assert_eq!(
                store.schema_status().await.expect("status").applied_version,
                Some(duroxide_postgres::migrate::latest_version())
            );
            smoke_path(Arc::new(store)).await;
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn execute_only_role_cannot_touch_a_table() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_tables", |schema| async move {
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            let runtime_pool = pool_as(&role, 2).await;
            let tables = tables_of(&schema).await;
            assert!(tables.len() >= 11, "{tables:?}");
            for (table, column) in &tables {
                let t = format!("\"{}\".{table}", schema.name);
                for sql in [
                    format!("SELECT * FROM {t}"),
                    format!("INSERT INTO {t} DEFAULT VALUES"),
                    format!("UPDATE {t} SET {column} = {column}"),
                    format!("DELETE FROM {t}"),
                    format!("TRUNCATE {t}"),
                    format!("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE"),
                ] {
                    assert_eq!(
                        sqlstate_of(&runtime_pool, &sql).await.as_deref(),
                        Some("42501"),
                        "{sql}"
                    );
                }
            }
            // Its procedures work (the call above all ran as the owner).
            let depths: (i64, i64) = sqlx::query_as(
                schema.statement("SELECT * FROM {{schema}}.get_queue_depths{{suffix}}()"),
            )
            .fetch_one(&runtime_pool)
            .await
            .expect("a procedure call");
            assert_eq!(depths, (0, 0));
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}

/// Tenant A's runtime role (granted for `mode`) runs A and can do nothing
/// to tenant B: call its procedures, read its tables, take its migration
/// lock, or start a provider on it.
async fn tenant_role_is_confined_to_its_schema(mode: SqlMode) {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schemas("roles_confined", 2, |schemas| async move {
            let (a, b) = (&schemas[0], &schemas[1]);
            owner_installs_and_grants(a, &role, mode).await;
            b.provider().await;
            let runtime_pool = pool_as(&role, 4).await;

            // A works in `mode`, started with Verify.
            let store = provider(&runtime_pool, &a.name, mode, MigrationMode::Verify)
                .await
                .unwrap_or_else(|e| panic!("{mode} provider on A: {e}"));
            assert!(store.health().await.is_ready());
            smoke_path(Arc::new(store)).await;

            // B: nothing.
            for sql in [
                "SELECT * FROM {{schema}}.get_queue_depths{{suffix}}()",
                "SELECT {{schema}}.enqueue_work_item{{suffix}}('x', 1, 1, '{}', NULL, NULL)",
                "SELECT * FROM {{schema}}.schema_state{{suffix}}()",
                "SELECT * FROM {{schema}}.instances",
                "SELECT * FROM {{schema}}._duroxide_migrations",
                "LOCK TABLE {{schema}}._duroxide_migrations IN SHARE ROW EXCLUSIVE MODE",
            ] {
                let sql = b.sql(sql);
                assert_eq!(
                    sqlstate_of(&runtime_pool, &sql).await.as_deref(),
                    Some("42501"),
                    "{sql}"
                );
            }
            for migrations in [MigrationMode::Apply, MigrationMode::Verify] {
                let refused = provider(&runtime_pool, &b.name, mode, migrations)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{migrations:?} on B must fail"));
                assert!(
                    matches!(refused, PostgresProviderError::InsufficientPrivilege { .. })
                        || refused.sqlstate().as_deref() == Some("42501"),
                    "{migrations:?} on B: {refused}"
                );
            }
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}

in_both_modes!(tenant_role_is_confined_to_its_schema: confined_procedures, confined_inline);

/// The roles other than the owner that may execute a function of the
/// schema, `public` for PUBLIC, and how many functions each.
async fn executors(schema: &TestSchema) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT CASE WHEN a.grantee = 0 THEN 'public' ELSE a.grantee::regrole::text END, count(*) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, \
                aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a \
          WHERE n.nspname = $1 AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner \
          GROUP BY 1 ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&schema.pool)
    .await
    .expect("executors")
}

#[tokio::test]
async fn reinstallation_keeps_grants_and_never_reopens_public() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_reinstall", |schema| async move {
            schema.provider().await;
            let functions = duroxide_postgres::migrate::procedures().len() as i64;
            assert_eq!(
                executors(&schema).await,
                vec![],
                "no EXECUTE for PUBLIC after install"
            );
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            // (Test role names need no quoting.)
            let granted = vec![(role.clone(), functions)];
            assert_eq!(executors(&schema).await, granted);

            // Every procedure stale (a new build), and one missing (a
            // procedure the new build adds): all reinstalled by the owner.
            sqlx::query(
                schema.statement("UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00'"),
            )
            .execute(&schema.pool)
            .await
            .expect("stale");
            sqlx::raw_sql(schema.statement(
                "DELETE FROM {{schema}}._duroxide_procedures WHERE name = 'get_parent_id'; \
                 DROP FUNCTION {{schema}}.get_parent_id{{suffix}}(text)",
            ))
            .execute(&schema.pool)
            .await
            .expect("missing");
            schema.provider().await;
            assert_eq!(executors(&schema).await, granted, "after reinstalling");

            // The install script does the same.
            let script = tenants::install_script(
                &schema_name(&schema),
                SqlMode::StoredProcedures,
                Some(duroxide_postgres::migrate::latest_version()),
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_string()))
                .execute(&schema.pool)
                .await
                .expect("script");
            assert_eq!(executors(&schema).await, granted, "after the script");

            // Revoked: nothing left.
            let left = tenants::revoke_runtime_role(&schema.pool, &schema_name(&schema), &role)
                .await
                .expect("revoke");
            assert!(!left.usage && left.executable_functions == 0, "{left:?}");
            assert_eq!(executors(&schema).await, vec![]);
        })
        .await;
    })
    .await;
}

/// A schema that also holds a function of its own (an operator's helper):
/// the runtime role gets EXECUTE on every procedure of ours and not on it,
/// and PUBLIC keeps what it had on it.
#[tokio::test]
async fn a_function_of_the_schemas_own_stays_out_of_the_runtime_roles_reach() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_own_function", |schema| async move {
            schema.provider().await;
            sqlx::query(schema.statement(
                "CREATE FUNCTION {{schema}}.operators_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            ))
            .execute(&schema.pool)
            .await
            .expect("the schema's own function");
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            let functions = duroxide_postgres::migrate::procedures().len() as i64;
            assert_eq!(
                executors(&schema).await,
                vec![("public".to_string(), 1), (role.clone(), functions)],
                "the role executes every procedure and not the helper; PUBLIC keeps the helper"
            );
        })
        .await;
    })
    .await;
}

/// Revoking takes every right the role holds in the schema, on every kind
/// of object (a procedure, an aggregate, a view, a sequence, a table of the
/// operator's), including those granted by hand, and leaves other roles'
/// rights alone.
#[tokio::test]
async fn revoke_takes_every_right_on_every_kind_of_object() {
    with_roles(2, |roles| async move {
        let (role, other) = (roles[0].clone(), roles[1].clone());
        with_schema("roles_revoke_all", |schema| async move {
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            owner_installs_and_grants(&schema, &other, SqlMode::InlineSql).await;
            sqlx::raw_sql(schema.statement(&format!(
                "CREATE FUNCTION {{{{schema}}}}.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
                 CREATE PROCEDURE {{{{schema}}}}.chore() LANGUAGE sql AS 'SELECT 1'; \
                 CREATE AGGREGATE {{{{schema}}}}.total(int) (SFUNC = int4pl, STYPE = int); \
                 CREATE TABLE {{{{schema}}}}.notes (id int GENERATED ALWAYS AS IDENTITY, body text); \
                 CREATE SEQUENCE {{{{schema}}}}.ticket; \
                 CREATE VIEW {{{{schema}}}}.recent AS SELECT instance_id FROM {{{{schema}}}}.instances; \
                 GRANT EXECUTE ON ROUTINE {{{{schema}}}}.helper(), {{{{schema}}}}.chore(), \
                       {{{{schema}}}}.total(int) TO \"{role}\"; \
                 GRANT ALL ON {{{{schema}}}}.notes, {{{{schema}}}}.recent, {{{{schema}}}}.instances TO \"{role}\"; \
                 GRANT ALL ON SEQUENCE {{{{schema}}}}.ticket, {{{{schema}}}}.notes_id_seq TO \"{role}\""
            )))
            .execute(&schema.pool)
            .await
            .expect("objects of the operator's, granted by hand");
            let held = |who: String| {
                // Rights granted to the role itself, read from the ACLs.
                let sql = schema.sql(
                    "SELECT (SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a \
                              WHERE p.pronamespace = '{{schema}}'::regnamespace \
                                AND a.grantee = $1::regrole AND a.privilege_type = 'EXECUTE') \
                          + (SELECT count(DISTINCT c.oid) FROM pg_class c, aclexplode(c.relacl) a \
                              WHERE c.relnamespace = '{{schema}}'::regnamespace \
                                AND a.grantee = $1::regrole)",
                );
                let pool = schema.pool.clone();
                async move {
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
                        .bind(who)
                        .fetch_one(&pool)
                        .await
                        .expect("rights held")
                }
            };
            let functions = duroxide_postgres::migrate::procedures().len() as i64;
            let tables_of_ours = sqlx::query_scalar::<_, i64>(schema.statement(
                "SELECT count(*) FROM pg_class WHERE relnamespace = '{{schema}}'::regnamespace AND relkind = 'r'",
            ))
            .fetch_one(&schema.pool)
            .await
            .expect("tables")
                - 1; // notes
            assert_eq!(
                held(role.clone()).await,
                functions + 3 + 3 + 2,
                "the procedures, three routines, three relations and two sequences"
            );
            let others_before = held(other.clone()).await;
            assert_eq!(others_before, tables_of_ours, "the inline role's tables");

            let left = tenants::revoke_runtime_role(&schema.pool, &schema_name(&schema), &role)
                .await
                .expect("revoke");
            assert!(
                !left.usage && left.executable_functions == 0 && left.readable_tables == 0,
                "{left:?}"
            );
            assert_eq!(held(role.clone()).await, 0, "nothing left on any object");
            assert_eq!(held(other.clone()).await, others_before, "the other role keeps its rights");
            let usage: bool = sqlx::query_scalar(schema.statement(
                "SELECT has_schema_privilege($1, '{{schema}}'::regnamespace, 'USAGE')",
            ))
            .bind(&other)
            .fetch_one(&schema.pool)
            .await
            .expect("usage");
            assert!(usage, "the other role keeps USAGE");
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn grant_refuses_what_it_cannot_do() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_refusals", |schema| async move {
            let name = schema_name(&schema);
            // No tenant yet.
            let missing =
                tenants::grant_runtime_role(&schema.pool, &name, &role, SqlMode::StoredProcedures)
                    .await
                    .expect_err("no tenant");
            assert_eq!(missing.sqlstate().as_deref(), Some("DX003"), "{missing}");
            // Tables only: no procedures to grant.
            schema.provider_in(SqlMode::InlineSql).await;
            let no_procedures =
                tenants::grant_runtime_role(&schema.pool, &name, &role, SqlMode::StoredProcedures)
                    .await
                    .expect_err("no procedures");
            assert!(
                no_procedures.to_string().contains("no stored procedures"),
                "{no_procedures}"
            );
            // Unknown role.
            let unknown = tenants::grant_runtime_role(
                &schema.pool,
                &name,
                "no_such_role_x",
                SqlMode::InlineSql,
            )
            .await
            .expect_err("unknown role");
            assert_eq!(unknown.sqlstate().as_deref(), Some("42704"), "{unknown}");
            // A role that owns nothing cannot grant.
            let runtime_pool = pool_as(&role, 1).await;
            let denied =
                tenants::grant_runtime_role(&runtime_pool, &name, &role, SqlMode::InlineSql)
                    .await
                    .expect_err("not the owner");
            assert!(
                denied.sqlstate().as_deref() == Some("42501")
                    || matches!(denied, PostgresProviderError::InsufficientPrivilege { .. }),
                "{denied}"
            );
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}

/// A runtime role granted on a schema a build before names unique per
/// schema installed: the upgrade extends its `EXECUTE` to the new set (a
/// provider of this build started with `Verify` runs on it), keeps it on
/// the old names an older process still calls, and reopens nothing to
/// `PUBLIC`; before the upgrade, such a provider reads the schema's state
/// through the old `schema_state()` and finds the procedures stale.
#[tokio::test]
async fn an_upgrade_from_plain_names_keeps_the_runtime_roles_rights() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_upgrade", |schema| async move {
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            crate::upgrades::as_before_the_suffix(&schema).await;
            let runtime_pool = pool_as(&role, 4).await;
            let status = duroxide_postgres::migrate::verify(
                &runtime_pool,
                &schema_name(&schema),
                SqlMode::InlineSql,
            )
            .await
            .expect("the old schema_state() reads the state for the runtime role");
            assert_eq!(
                status.stale_procedures,
                duroxide_postgres::migrate::procedures().len(),
                "{status:?}"
            );

            schema.provider().await; // the owner upgrades
            let rights = tenants::runtime_rights(&schema.pool, &schema_name(&schema), &role)
                .await
                .expect("rights");
            let both = 2 * duroxide_postgres::migrate::procedures().len();
            assert_eq!(
                (
                    rights.functions,
                    rights.executable_functions,
                    rights.public_functions
                ),
                (both, both, 0),
                "{rights:?}"
            );
            let store = verify_as(&runtime_pool, &schema, SqlMode::StoredProcedures).await;
            assert_eq!(store.sql_mode(), SqlMode::StoredProcedures);
            smoke_path(Arc::new(store)).await;
            let old: (i64, i64) =
                sqlx::query_as(schema.statement("SELECT * FROM {{schema}}.get_queue_depths()"))
                    .fetch_one(&runtime_pool)
                    .await
                    .expect("an older process's call");
            assert_eq!(old.0, 0);

            tenants::drop_legacy_procedures(&schema.pool, &schema_name(&schema))
                .await
                .expect("drop legacy");
            let rights = tenants::runtime_rights(&schema.pool, &schema_name(&schema), &role)
                .await
                .expect("rights");
            let one = duroxide_postgres::migrate::procedures().len();
            assert_eq!(
                (
                    rights.functions,
                    rights.executable_functions,
                    rights.public_functions
                ),
                (one, one, 0),
                "{rights:?}"
            );
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}

/// An upgrade whose migration creates a table keeps an inline runtime
/// role working: the role granted with `grant --inline` before gets the
/// same rights on the new table (a procedure-mode role gets none, nor does
/// a role that only reads, nor PUBLIC), so its runtime, started with
/// `Verify`, runs as before.
/// The schema is put back to before `0003_instance_claims.sql`, the last
/// migration that created a table: an inline role granted by a build of
/// then lost the use of its tenant until someone ran `grant` again.
#[tokio::test]
async fn an_upgrade_that_creates_a_table_extends_the_inline_roles_rights_to_it() {
    with_roles(3, |roles| async move {
        let (inline, procedures, reader) = (roles[0].clone(), roles[1].clone(), roles[2].clone());
        with_schema("roles_new_table", |schema| async move {
            owner_installs_an_inline_and_a_procedures_role(&schema, &inline, &procedures).await;
            let read_only =
                format!("GRANT SELECT ON TABLE {{{{schema}}}}.instances TO \"{reader}\"");
            schema
                .run_all(&[
                    read_only.as_str(),
                    "DROP TABLE {{schema}}.instance_claims",
                    "DELETE FROM {{schema}}._duroxide_migrations WHERE version = 3",
                ])
                .await;

            schema.provider().await; // the owner upgrades
            assert_only_the_inline_role_reaches(&schema, "instance_claims", &inline, &procedures)
                .await;
            assert_eq!(
                table_rights(&schema, "instance_claims", &reader).await,
                (false, false, false, false),
                "a role that only reads the instances gets no table"
            );
            let runtime_pool = pool_as(&inline, 8).await;
            let store = verify_as(&runtime_pool, &schema, SqlMode::InlineSql).await;
            smoke_path(Arc::new(store)).await;
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}
