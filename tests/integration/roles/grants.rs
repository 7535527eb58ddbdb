//! Reinstalling procedures keeps each one's `EXECUTE` for the roles that
//! held it on its previous version, and never widens it: a role granted
//! part of the procedures (a monitoring role with `schema_state()` only, a
//! runtime role an operator took one procedure from) gains none of the
//! others when a new build reinstalls them. A procedure new to the schema
//! goes to the roles that held every procedure before (what `grant` gives
//! a runtime role), and to nobody else.

use duroxide_postgres::{SqlMode, migrate, tenants};
use sqlx::PgPool;

use super::{owner_installs_and_grants, pool_as, schema_name, with_roles};
use crate::support::{TestSchema, with_schema};

/// Whether `role` may execute `procedure` of `schema` (its one function,
/// under the schema's suffixed name).
async fn can_execute(schema: &TestSchema, role: &str, procedure: &str) -> bool {
    let rows: Vec<bool> = sqlx::query_scalar(
        "SELECT has_function_privilege($1, p.oid, 'EXECUTE') \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
          WHERE n.nspname = $2 AND p.proname = $3",
    )
    .bind(role)
    .bind(&schema.name)
    .bind(schema.procedure(procedure))
    .fetch_all(&schema.pool)
    .await
    .expect("has_function_privilege");
    assert_eq!(rows.len(), 1, "one function {procedure}: {rows:?}");
    rows[0]
}

/// Marks `procedures` stale (as a new build that changed them would find
/// them), so the next provider started by the owner reinstalls them.
async fn make_stale(schema: &TestSchema, procedures: &[&str]) {
    let names: Vec<String> = procedures.iter().map(|p| p.to_string()).collect();
    sqlx::query(schema.statement(
        "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00' WHERE name = ANY ($1)",
    ))
    .bind(&names)
    .execute(&schema.pool)
    .await
    .expect("stale");
}

/// The procedures each role may execute, among `procedures`.
async fn executable(
    schema: &TestSchema,
    role: &str,
    procedures: &[&'static str],
) -> Vec<&'static str> {
    let mut out = Vec::new();
    for procedure in procedures {
        if can_execute(schema, role, procedure).await {
            out.push(*procedure);
        }
    }
    out
}

/// `Verify` as `pool`'s role finds the schema current (through
/// `schema_state()`, the one procedure a monitoring role needs).
async fn verifies(pool: &PgPool, schema: &TestSchema) {
    let status = migrate::verify(pool, &schema_name(schema), SqlMode::StoredProcedures)
        .await
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(status.is_current(), "{status:?}");
}

#[tokio::test]
async fn reinstallation_grants_each_procedure_to_its_previous_executors_only() {
    with_roles(3, |roles| async move {
        let (runtime, monitor, trimmed) = (roles[0].clone(), roles[1].clone(), roles[2].clone());
        with_schema("roles_grants_narrow", |schema| async move {
            owner_installs_and_grants(&schema, &runtime, SqlMode::StoredProcedures).await;
            // A runtime role an operator took delete_instances from.
            owner_installs_and_grants(&schema, &trimmed, SqlMode::StoredProcedures).await;
            // A monitoring role: what Verify and health() need, nothing more.
            schema
                .run_all(&[
                    &format!("GRANT USAGE ON SCHEMA {{{{schema}}}} TO \"{monitor}\""),
                    &format!(
                        "GRANT EXECUTE ON FUNCTION {{{{schema}}}}.schema_state{{{{suffix}}}}() TO \"{monitor}\""
                    ),
                    &format!(
                        "REVOKE EXECUTE ON FUNCTION {{{{schema}}}}.delete_instances{{{{suffix}}}}(text[], boolean) FROM \"{trimmed}\""
                    ),
                ])
                .await;
            let watched = ["schema_state", "delete_instances", "get_queue_depths", "get_parent_id"];
            assert_eq!(executable(&schema, &monitor, &watched).await, ["schema_state"]);
            assert_eq!(
                executable(&schema, &trimmed, &watched).await,
                ["schema_state", "get_queue_depths", "get_parent_id"]
            );

            // A new build changed delete_instances: the owner reinstalls it.
            make_stale(&schema, &["delete_instances"]).await;
            schema.provider().await;
            assert!(
                !can_execute(&schema, &monitor, "delete_instances").await,
                "the monitoring role gained delete_instances from its reinstallation"
            );
            assert!(
                !can_execute(&schema, &trimmed, "delete_instances").await,
                "a role that had lost delete_instances got it back from its reinstallation"
            );
            assert!(can_execute(&schema, &runtime, "delete_instances").await);
            assert_eq!(executable(&schema, &runtime, &watched).await, watched);
            assert_eq!(executable(&schema, &monitor, &watched).await, ["schema_state"]);

            // schema_state changed too, and get_parent_id is new to the
            // schema (the build before did not have it): schema_state keeps
            // its executors, get_parent_id goes to the full runtime role only.
            make_stale(&schema, &["schema_state"]).await;
            schema
                .run_all(&[
                    "DELETE FROM {{schema}}._duroxide_procedures WHERE name = 'get_parent_id'",
                    "DROP FUNCTION {{schema}}.get_parent_id{{suffix}}(text)",
                ])
                .await;
            schema.provider().await;
            assert_eq!(executable(&schema, &runtime, &watched).await, watched);
            assert_eq!(executable(&schema, &monitor, &watched).await, ["schema_state"]);
            assert_eq!(
                executable(&schema, &trimmed, &watched).await,
                ["schema_state", "get_queue_depths"],
                "a procedure new to the schema goes only to the roles that held every one"
            );
            let monitor_pool = pool_as(&monitor, 1).await;
            verifies(&monitor_pool, &schema).await;

            // The install script reinstalls everything, with the same rule.
            let script = tenants::install_script(
                &schema_name(&schema),
                SqlMode::StoredProcedures,
                Some(migrate::latest_version()),
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                .execute(&schema.pool)
                .await
                .expect("script");
            assert_eq!(executable(&schema, &runtime, &watched).await, watched);
            assert_eq!(executable(&schema, &monitor, &watched).await, ["schema_state"]);
            assert_eq!(
                executable(&schema, &trimmed, &watched).await,
                ["schema_state", "get_queue_depths"]
            );
            let rights = tenants::runtime_rights(&schema.pool, &schema_name(&schema), &runtime)
                .await
                .expect("rights");
            assert_eq!(
                (rights.executable_functions, rights.public_functions),
                (rights.functions, 0),
                "{rights:?}"
            );
            verifies(&monitor_pool, &schema).await;
            monitor_pool.close().await;
        })
        .await;
    })
    .await;
}
