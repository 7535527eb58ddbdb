//! The install script as the upgrade path of a schema with an inline
//! runtime role: applied by hand (`print-sql --after-version N`), it must
//! leave the role what `migrate` would, the rights on the tables its
//! migrations create included.

use duroxide::providers::ProviderAdmin;
use duroxide_postgres::{SqlMode, tenants};

use super::tables::{
    assert_only_the_inline_role_reaches, owner_installs_an_inline_and_a_procedures_role,
};
use super::{pool_as, schema_name, verify_as, with_roles};
use crate::support::with_schema;

/// A schema put back to before `0006_event_counts.sql` (which creates
/// `events_without_execution`; and so before 0007 too) and upgraded by running the install script
/// after version 5, as a DBA would: the inline role granted before gets the
/// four rights on the new table, a procedure-mode role gets none, and a
/// `Verify` provider of the inline role reads the metrics a runtime reads
/// at every start (before the fix: permission denied on the new table).
#[tokio::test]
async fn the_upgrade_script_extends_the_inline_roles_rights_to_the_tables_it_creates() {
    with_roles(2, |roles| async move {
        let (inline, procedures) = (roles[0].clone(), roles[1].clone());
        with_schema("roles_script_new_table", |schema| async move {
            owner_installs_an_inline_and_a_procedures_role(&schema, &inline, &procedures).await;
            schema
                .run_all(&[
                    "DROP INDEX {{schema}}.worker_queue_tag_idx",
                    "DROP TABLE {{schema}}.events_without_execution",
                    "ALTER TABLE {{schema}}.executions DROP COLUMN event_count",
                    "DELETE FROM {{schema}}._duroxide_migrations WHERE version >= 6",
                ])
                .await;

            let script =
                tenants::install_script(&schema_name(&schema), SqlMode::InlineSql, Some(5));
            assert!(
                script.contains("-- migration 0006_event_counts"),
                "{script}"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                .execute(&schema.pool)
                .await
                .unwrap_or_else(|e| panic!("the upgrade script: {e}"));
            assert_only_the_inline_role_reaches(
                &schema,
                "events_without_execution",
                &inline,
                &procedures,
            )
            .await;

            let runtime_pool = pool_as(&inline, 4).await;
            let store = verify_as(&runtime_pool, &schema, SqlMode::InlineSql).await;
            store
                .get_system_metrics()
                .await
                .unwrap_or_else(|e| panic!("metrics as the inline role: {e}"));
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}
