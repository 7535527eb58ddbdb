//! Who may be a runtime role. `GRANT ... TO public` names `PUBLIC`, every
//! role of the server, even when the name is quoted; and a predefined role
//! (`pg_monitor`, `pg_signal_backend`, ...) passes what it is granted to
//! every member it has. Neither is a runtime role: a grant to one would
//! open a tenant to every neighbour's role. `grant` refuses both, in both
//! modes, before it grants anything; `revoke` still takes such a grant
//! back.

use duroxide_postgres::{SqlMode, tenants};

use super::schema_name;
use crate::support::{TestSchema, with_schema};

/// Whether `PUBLIC` holds `USAGE` on the schema or any right on one of its
/// tables.
async fn public_holds_anything(schema: &TestSchema) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a \
                         WHERE n.nspname = $1 AND a.grantee = 0) \
             OR EXISTS (SELECT 1 FROM pg_class c \
                          JOIN pg_namespace n ON n.oid = c.relnamespace, \
                               aclexplode(c.relacl) a \
                         WHERE n.nspname = $1 AND a.grantee = 0)",
    )
    .bind(&schema.name)
    .fetch_one(&schema.pool)
    .await
    .expect("PUBLIC's rights")
}

/// Whether `role` holds `USAGE` on the schema.
async fn holds_usage(schema: &TestSchema, role: &str) -> bool {
    sqlx::query_scalar("SELECT has_schema_privilege($1, $2, 'USAGE')")
        .bind(role)
        .bind(&schema.name)
        .fetch_one(&schema.pool)
        .await
        .expect("has_schema_privilege")
}

#[tokio::test]
async fn grant_to_public_or_a_predefined_role_is_refused_and_grants_nothing() {
    with_schema("roles_grantees", |schema| async move {
        schema.provider().await;
        let name = schema_name(&schema);
        for mode in [SqlMode::InlineSql, SqlMode::StoredProcedures] {
            for role in ["public", "pg_monitor", "pg_signal_backend"] {
                let refused = tenants::grant_runtime_role(&schema.pool, &name, role, mode)
                    .await
                    .expect_err("not a runtime role");
                assert_eq!(
                    refused.sqlstate().as_deref(),
                    Some("DX005"),
                    "{role} in {mode}: {refused}"
                );
                assert!(
                    refused.to_string().contains(role),
                    "the error names the role: {refused}"
                );
                if role != "public" {
                    assert!(!holds_usage(&schema, role).await, "{role} in {mode}");
                }
            }
            assert!(!public_holds_anything(&schema).await, "{mode}");
        }
        // Revoking from PUBLIC stays possible, to take back such a grant made
        // by hand or by an earlier build.
        sqlx::query(schema.statement("GRANT USAGE ON SCHEMA {{schema}} TO public"))
            .execute(&schema.pool)
            .await
            .expect("grant by hand");
        assert!(public_holds_anything(&schema).await);
        let left = tenants::revoke_runtime_role(&schema.pool, &name, "public")
            .await
            .expect("revoke from PUBLIC");
        assert!(!left.usage, "{left:?}");
        assert!(!public_holds_anything(&schema).await);
    })
    .await;
}
