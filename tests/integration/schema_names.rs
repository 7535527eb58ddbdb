//! Schema names: validated before anything touches the database, quoted
//! always, and tenants on one pool kept apart.

use duroxide_postgres::{PostgresProvider, PostgresProviderError, SchemaName};

use crate::support::pool;

#[tokio::test]
async fn injection_attempts_are_rejected_before_any_sql_runs() {
    let pool = pool(2).await;
    for bad in [
        "a\"; drop schema public cascade; --",
        "x; DROP TABLE y",
        "",
        "has space",
        "pg_toast",
        "9lives",
        "ünïcode",
        &"n".repeat(64),
    ] {
        let err = PostgresProvider::from_pool(pool.clone(), bad)
            .await
            .expect_err("invalid schema name must be refused");
        assert!(
            matches!(err, PostgresProviderError::InvalidSchemaName { .. }),
            "{bad:?}: {err}"
        );
        assert!(!err.is_retryable());
    }
    let public_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')")
            .fetch_one(&pool)
            .await
            .expect("query");
    assert!(public_exists);
}

#[test]
fn names_are_quoted_and_case_preserved() {
    let name = SchemaName::new("Tenant_A").expect("valid");
    assert_eq!(name.quoted(), "\"Tenant_A\"");
    assert_eq!(name.as_str(), "Tenant_A");
    assert!(SchemaName::new(&"a".repeat(63)).is_ok());
}
