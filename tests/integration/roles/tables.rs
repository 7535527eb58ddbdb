//! The tables of a schema as its runtime roles reach them: which there are,
//! what rights a role holds on one, and the pair of roles (inline and
//! procedure mode) whose rights an upgrade that creates a table must set
//! apart.

use duroxide_postgres::{SqlMode, tenants};

use super::{owner_installs_and_grants, schema_name};
use crate::support::TestSchema;

/// The tables of `schema`, each with a column that is no identity.
pub(super) async fn tables_of(schema: &TestSchema) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, (SELECT a.attname::text FROM pg_attribute a \
                                  WHERE a.attrelid = c.oid AND a.attnum > 0 \
                                    AND a.attidentity = '' ORDER BY a.attnum LIMIT 1) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&schema.pool)
    .await
    .expect("tables")
}

/// The table rights `role` holds on `table` of `schema`, as
/// `(select, insert, update, delete)`.
pub(super) async fn table_rights(
    schema: &TestSchema,
    table: &str,
    role: &str,
) -> (bool, bool, bool, bool) {
    let target = format!("\"{}\".{table}", schema.name);
    sqlx::query_as(
        "SELECT has_table_privilege($1, $2, 'SELECT'), has_table_privilege($1, $2, 'INSERT'), \
                has_table_privilege($1, $2, 'UPDATE'), has_table_privilege($1, $2, 'DELETE')",
    )
    .bind(role)
    .bind(&target)
    .fetch_one(&schema.pool)
    .await
    .unwrap_or_else(|e| panic!("rights of {role} on {target}: {e}"))
}

/// Asserts what an upgrade that created `table` left: the four rights on
/// it for the `inline` role, none for the `procedures` role nor PUBLIC.
pub(super) async fn assert_only_the_inline_role_reaches(
    schema: &TestSchema,
    table: &str,
    inline: &str,
    procedures: &str,
) {
    assert_eq!(
        table_rights(schema, table, inline).await,
        (true, true, true, true),
        "the inline role's rights reach the new table"
    );
    assert_eq!(
        table_rights(schema, table, procedures).await,
        (false, false, false, false),
        "a procedure-mode role gets no table"
    );
    assert_eq!(
        table_rights(schema, table, "public").await,
        (false, false, false, false),
        "PUBLIC gets nothing"
    );
}

/// Migrates `schema` as the owner with `inline` granted for inline SQL and
/// `procedures` for stored procedures: the two runtime roles an upgrade
/// that creates a table must treat apart.
pub(super) async fn owner_installs_an_inline_and_a_procedures_role(
    schema: &TestSchema,
    inline: &str,
    procedures: &str,
) {
    owner_installs_and_grants(schema, inline, SqlMode::InlineSql).await;
    tenants::grant_runtime_role(
        &schema.pool,
        &schema_name(schema),
        procedures,
        SqlMode::StoredProcedures,
    )
    .await
    .unwrap_or_else(|e| panic!("grant {procedures}: {e}"));
}
