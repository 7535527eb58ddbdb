//! The procedures' own settings and the pool's: who a procedure runs as,
//! the `search_path` and plan-cache mode it pins, and generic plans planned
//! once per connection.

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::postgres::PgPoolOptions;

use super::LOCK;
use crate::fixtures;
use crate::support::{TestSchema, database_url, in_both_modes, with_schema};

/// One function installed in a test schema.
#[derive(Debug, sqlx::FromRow)]
struct Function {
    name: String,
    /// Argument types, in order.
    types: Vec<String>,
    /// The settings it pins (`name=value`).
    config: Vec<String>,
}

/// The functions of `schema` written in `language`, by name.
async fn functions_in(schema: &TestSchema, language: &str) -> Vec<Function> {
    sqlx::query_as(
        "SELECT p.proname::text AS name, \
                ARRAY(SELECT format_type(a.t, NULL) \
                        FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n) \
                       ORDER BY a.n) AS types, \
                coalesce(p.proconfig::text[], '{}') AS config \
           FROM pg_proc p \
           JOIN pg_namespace n ON n.oid = p.pronamespace \
           JOIN pg_language l ON l.oid = p.prolang \
          WHERE n.nspname = $1 AND l.lanname = $2 \
          ORDER BY p.proname",
    )
    .bind(&schema.name)
    .bind(language)
    .fetch_all(&schema.pool)
    .await
    .unwrap_or_else(|e| panic!("{language} functions: {e}"))
}

/// Every procedure runs with its owner's rights (a runtime role holds
/// EXECUTE only) and pins `search_path`, so no caller's `search_path`
/// reaches its body. The read-only ones are plpgsql `RETURN QUERY`
/// functions: a SECURITY DEFINER `LANGUAGE sql` function is not inlined and
/// plans its body on every call (docs/architecture.md, "Roles";
/// scripts/definer-bench.sh), so none is left.
#[tokio::test]
async fn procedures_run_as_their_owner_with_a_pinned_search_path() {
    with_schema("plan_definer", |schema| async move {
        schema.provider_in(SqlMode::StoredProcedures).await;
        assert_eq!(functions_in(&schema, "sql").await.len(), 0);
        let functions = functions_in(&schema, "plpgsql").await;
        assert!(functions.len() >= 33, "{functions:?}");
        let unpinned: Vec<String> = sqlx::query_scalar(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
              WHERE n.nspname = $1 \
                AND NOT (p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))",
        )
        .bind(&schema.name)
        .fetch_all(&schema.pool)
        .await
        .expect("procedures");
        assert_eq!(unpinned, Vec::<String>::new());
        // Each can be planned as a call with arguments of its own types.
        for Function { name, types, .. } in functions {
            let args = types
                .iter()
                .map(|t| format!("NULL::{t}"))
                .collect::<Vec<_>>()
                .join(", ");
            let explain = schema.sql(&format!(
                "EXPLAIN SELECT * FROM {{{{schema}}}}.{name}({args})"
            ));
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain.to_string()))
                .fetch_all(&schema.pool)
                .await
                .unwrap_or_else(|e| panic!("{explain}: {e}"));
            assert!(
                plan.join("\n").contains("Function Scan"),
                "{name}: {plan:?}"
            );
        }
    })
    .await;
}

/// A provider's statements run generic plans, planned once per connection.
/// PostgreSQL's default (`plan_cache_mode = auto`) plans a prepared statement
/// afresh on every execution when its first five custom plans looked cheaper
/// than a generic one, as they do on a tenant schema not yet analyzed (this
/// one); measured on the fetches, that planning cost three to four times
/// their execution. The provider's own pool runs with
/// `plan_cache_mode = force_generic_plan`: after a dozen turns on one
/// connection, every prepared statement of it (procedure calls in one mode,
/// the statements themselves in the other) shows generic plans only.
async fn statements_are_planned_once_per_connection(mode: SqlMode) {
    with_schema(&format!("generic_plans_{mode}"), |schema| async move {
        schema.provider_with(mode, false).await; // migrate
        let options = PostgresOptions::default()
            .schema(&schema.name)
            .sql_mode(mode)
            .notifications(false)
            .max_connections(1);
        let provider = PostgresProvider::connect_with(database_url(), options)
            .await
            .expect("provider");
        for n in 0..12 {
            let instance = format!("plan-{n}");
            provider
                .enqueue_for_orchestrator(fixtures::start(&instance), None)
                .await
                .expect("enqueue");
            let (_, token, _) = provider
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("the instance");
            provider
                .abandon_orchestration_item(&token, None, true)
                .await
                .expect("abandon");
            provider
                .enqueue_for_worker(fixtures::activity(&instance, 2))
                .await
                .expect("enqueue work");
            let (_, token, _) = provider
                .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
                .await
                .expect("fetch work")
                .expect("the activity");
            provider
                .ack_work_item(&token, Some(fixtures::completion(&instance, 2)))
                .await
                .expect("ack");
        }
        // The pool's only connection: the one every call above ran on.
        let plans: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
              WHERE cardinality(parameter_types) > 0",
        )
        .fetch_all(provider.pool())
        .await
        .expect("prepared statements");
        assert!(
            plans.iter().any(|(_, generic, _)| *generic >= 12),
            "expected the fetches' statements to have run a dozen times: {plans:?}"
        );
        let custom: Vec<_> = plans.iter().filter(|(_, _, c)| *c > 0).collect();
        assert!(custom.is_empty(), "custom plans were made: {custom:?}");
    })
    .await;
}

in_both_modes!(
    statements_are_planned_once_per_connection:
    procedures_statements_are_planned_once_per_connection,
    inline_statements_are_planned_once_per_connection
);

/// The procedures plan their own statements as their files say whatever the
/// connection's setting (a pool the caller built, or `generic_plans(false)`):
/// every installed plpgsql procedure carries a `plan_cache_mode` and the
/// planner settings that go with it, as it carries `search_path` (which
/// mode each file pins is checked on the files, in `migrate`'s unit
/// tests), and the pin does not leak into the session.
/// Their inner statements are not visible in `pg_prepared_statements`, so the
/// check reads the setting the server applies to each call.
#[tokio::test]
async fn plpgsql_procedures_pin_their_plan_cache_mode() {
    with_schema("plan_pinned", |schema| async move {
        schema.provider_in(SqlMode::StoredProcedures).await;
        let procedures = functions_in(&schema, "plpgsql").await;
        assert!(
            procedures.len() >= 15,
            "expected the writing procedures in plpgsql, found {procedures:?}"
        );
        for Function { name, config, .. } in procedures {
            assert!(
                config.iter().any(|c| c.starts_with("plan_cache_mode=")),
                "{name} does not pin plan_cache_mode: {config:?}"
            );
            // Plans kept per connection use indexes at any table size; plans
            // made per call may read a table whole.
            let generic = config.iter().any(|c| c == "plan_cache_mode=force_generic_plan");
            let pins: &[&str] = if generic {
                &["enable_seqscan=off", "jit=off"]
            } else {
                &["enable_seqscan=on"]
            };
            for pin in pins {
                assert!(
                    config.iter().any(|c| c == pin),
                    "{name} does not pin {pin}: {config:?}"
                );
            }
        }
        // The pin applies for the call only: a session of a pool the caller
        // built keeps its own setting.
        let mut connection = schema.pool.acquire().await.expect("connection");
        sqlx::query("SET plan_cache_mode = auto")
            .execute(&mut *connection)
            .await
            .expect("set");
        sqlx::query(
            schema.statement(
                "SELECT * FROM {{schema}}.fetch_work_item{{suffix}}(1000, 'any', '{}', NULL, 1000, false, NULL, 10000)",
            ),
        )
        .execute(&mut *connection)
        .await
        .expect("fetch");
        let after: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&mut *connection)
            .await
            .expect("setting");
        assert_eq!(after, "auto", "a procedure's pin leaked into the session");
        sqlx::query("RESET plan_cache_mode")
            .execute(&mut *connection)
            .await
            .expect("reset");
    })
    .await;
}

/// `generic_plans(false)` leaves the server's setting alone, for poolers that
/// refuse startup options; the default sets it, alongside a statement
/// timeout when one is configured.
#[tokio::test]
async fn generic_plans_are_the_default_and_can_be_turned_off() {
    for (on, expected) in [(true, "force_generic_plan"), (false, "auto")] {
        let connect = PostgresOptions::default()
            .generic_plans(on)
            .statement_timeout(Some(Duration::from_millis(4321)))
            .connect_options(database_url())
            .expect("options");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .expect("pool");
        let setting: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&pool)
            .await
            .expect("setting");
        assert_eq!(setting, expected, "generic_plans({on})");
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&pool)
            .await
            .expect("timeout");
        assert_eq!(timeout, "4321ms", "generic_plans({on})");
        pool.close().await;
    }
}
