//! A tenant's drop never takes objects in other schemas with it: a view, a
//! foreign key or a function another schema built on the tenant's tables
//! makes the drop fail, naming it, and everything stays.

use duroxide_postgres::{sqlstate, tenants};

use super::{name, rejection, schema_exists};
use crate::support::{counting_own_table_reads, with_schemas};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_leaves_what_other_schemas_built_on_the_tenant() {
    with_schemas("ten_outside", 2, |schemas| async move {
        let [tenant, other] = &schemas[..] else {
            unreachable!()
        };
        let pool = tenant.pool.clone();
        // Dropping the table with the foreign key locks the tenant's
        // `instances` exclusively (its referential triggers go), which a
        // whole-database tenant read of another test (`status_all`) holding
        // it for a moment would time out.
        let _alone = counting_own_table_reads().await;
        tenant.provider().await;
        other
            .run_all(&[
                "CREATE SCHEMA {{schema}}",
                "CREATE TABLE {{schema}}.kept (id int)",
            ])
            .await;
        let on = |template: &str| {
            other
                .sql(template)
                .replace("{{tenant}}", &format!("\"{}\"", tenant.name))
        };
        let outside = [
            (
                "view",
                on("CREATE VIEW {{schema}}.all_instances AS SELECT instance_id FROM {{tenant}}.instances"),
                on("DROP VIEW {{schema}}.all_instances"),
                "all_instances",
            ),
            (
                "foreign key",
                on("CREATE TABLE {{schema}}.refs (instance_id text REFERENCES {{tenant}}.instances (instance_id))"),
                on("DROP TABLE {{schema}}.refs"),
                "refs",
            ),
            (
                "function over a row type",
                on("CREATE FUNCTION {{schema}}.describe(i {{tenant}}.instances) RETURNS text \
                    LANGUAGE sql AS 'SELECT i.instance_id'"),
                on("DROP FUNCTION {{schema}}.describe"),
                "describe",
            ),
        ];
        for (what, create, remove, named) in outside {
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{what}: create: {e}"));
            let err = tenants::drop_tenant(&pool, &name(tenant), true)
                .await
                .expect_err("another schema's object is never dropped with a tenant");
            assert_eq!(
                rejection(&err).as_deref(),
                Some(sqlstate::INVALID_STATE),
                "{what}: {err}"
            );
            assert!(err.to_string().contains(named), "{what}: named: {err}");
            assert!(schema_exists(&pool, &tenant.name).await, "{what}: kept");
            sqlx::query(sqlx::AssertSqlSafe(remove))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{what}: the {what} was dropped with the tenant: {e}"));
        }
        tenants::drop_tenant(&pool, &name(tenant), true)
            .await
            .expect("nothing outside depends on it now");
        assert!(!schema_exists(&pool, &tenant.name).await);
        let kept: i64 = sqlx::query_scalar(other.statement("SELECT count(*) FROM {{schema}}.kept"))
            .fetch_one(&pool)
            .await
            .expect("the other schema is untouched");
        assert_eq!(kept, 0);
    })
    .await;
}
