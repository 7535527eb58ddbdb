//! A role with no rights on a tenant's schema cannot block or starve that
//! tenant's instances: it takes every lock it can reach — every
//! advisory key it could compute from the schema and instance ids (the
//! claim keys used before migration 0003, halves swapped, and 64-bit keys),
//! and tries the tenant's tables directly, which it may not — while the
//! tenant's runtime runs orchestrations with activities to completion.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::SqlMode;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::support::{Kind, Slot, TestSchema, database_url, in_both_modes, with_schema};

const INSTANCES: usize = 6;

in_both_modes!(an_outsider_cannot_block_a_tenants_instances:
    an_outsider_cannot_block_a_tenants_instances_procedures,
    an_outsider_cannot_block_a_tenants_instances_inline; 4);

/// The instance ids the outsider targets (predictable, as ids often are;
/// unique per test, as advisory keys not scoped by schema are server-wide).
fn ids(schema: &TestSchema) -> Vec<String> {
    (0..INSTANCES)
        .map(|i| format!("victim-{}-{i}", schema.name))
        .collect()
}

/// A session of `role`, holding every advisory key it can compute from the
/// tenant's schema name and instance ids, exclusively, until it is closed.
/// Returns the connection and how many keys it holds.
async fn hoard_keys(schema: &TestSchema, role: &str) -> (PgConnection, i64) {
    let options: PgConnectOptions = database_url().parse().expect("url");
    let mut outsider = PgConnection::connect_with(&options.username(role))
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
    let quoted = format!("\"{}\"", schema.name);
    // The schema-scoped two-key form (the claim, arrival and delete keys
    // before migration 0003) and its halves swapped, and 64-bit keys of the id and of the
    // schema, for the schema name quoted and bare.
    for id in ids(schema) {
        for schema_name in [quoted.as_str(), schema.name.as_str()] {
            for statement in [
                "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($1), pg_catalog.hashtext($2))",
                "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($2), pg_catalog.hashtext($1))",
                "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($1 || '.' || $2, 0))",
                "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($2, 0)) WHERE $1::text IS NOT NULL",
                "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($2)::bigint), $1::text",
            ] {
                sqlx::query(statement)
                    .bind(schema_name)
                    .bind(&id)
                    .execute(&mut outsider)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
    }
    for schema_name in [quoted.as_str(), schema.name.as_str()] {
        sqlx::query("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($1, 0))")
            .bind(schema_name)
            .execute(&mut outsider)
            .await
            .expect("schema key");
    }
    let keys = held_keys(&mut outsider).await;
    assert!(keys >= 3 * INSTANCES as i64, "{keys} keys held");
    (outsider, keys)
}

/// The outsider tries the tenant's tables themselves, in a transaction it
/// leaves open: every attempt must be refused for want of privileges
/// (SQLSTATE 42501), so it holds no lock on them.
/// How many advisory locks this session holds.
async fn held_keys(session: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_locks \
          WHERE locktype = 'advisory' AND granted AND pid = pg_catalog.pg_backend_pid()",
    )
    .fetch_one(session)
    .await
    .expect("the session's locks")
}

async fn try_the_tables(outsider: &mut PgConnection, schema: &TestSchema) {
    sqlx::query("BEGIN")
        .execute(&mut *outsider)
        .await
        .expect("begin");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
    )
    .bind(&schema.name)
    .fetch_all(&mut *outsider)
    .await
    .expect("the catalog is readable");
    assert!(tables.len() >= 8, "{tables:?}");
    for table in &tables {
        for statement in [
            format!(
                "LOCK TABLE \"{}\".\"{table}\" IN ACCESS EXCLUSIVE MODE NOWAIT",
                schema.name
            ),
            format!("SELECT 1 FROM \"{}\".\"{table}\" FOR UPDATE", schema.name),
        ] {
            sqlx::query("SAVEPOINT s")
                .execute(&mut *outsider)
                .await
                .expect("savepoint");
            match sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut *outsider)
                .await
            {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
                other => panic!("{statement}: expected a refusal, got {other:?}"),
            }
            sqlx::query("ROLLBACK TO SAVEPOINT s")
                .execute(&mut *outsider)
                .await
                .expect("rollback to savepoint");
        }
    }
}

async fn an_outsider_cannot_block_a_tenants_instances(mode: SqlMode) {
    with_schema("outsider", |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = Arc::new(schema.provider_in(mode).await);
        let role = format!("{}_role", schema.name);
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN")))
            .execute(&schema.pool)
            .await
            .expect("create role");
        let outcome = AssertUnwindSafe(async {
            let (mut outsider, keys) = hoard_keys(&schema, &role).await;
            try_the_tables(&mut outsider, &schema).await;

            let activities = crate::fixtures::echo_activities();
            let orchestrations = OrchestrationRegistry::builder()
                .register(
                    "Two",
                    |ctx: OrchestrationContext, input: String| async move {
                        let first = ctx.schedule_activity("Echo", input).await?;
                        ctx.schedule_activity("Echo", first).await
                    },
                )
                .build();
            let options = RuntimeOptions {
                dispatcher_min_poll_interval: Duration::from_millis(10),
                ..Default::default()
            };
            let rt =
                Runtime::start_with_options(p.clone(), activities, orchestrations, options).await;
            let client = Client::new(p.clone());
            let run = async {
                for id in ids(&schema) {
                    client
                        .start_orchestration(&id, "Two", &id)
                        .await
                        .unwrap_or_else(|e| panic!("start {id}: {e}"));
                }
                for id in ids(&schema) {
                    let status = client
                        .wait_for_orchestration(&id, Duration::from_secs(60))
                        .await;
                    match status {
                        Ok(duroxide::OrchestrationStatus::Completed { output, .. }) => {
                            assert_eq!(output, id)
                        }
                        other => panic!("{id}: {other:?}"),
                    }
                }
            };
            let finished = tokio::time::timeout(Duration::from_secs(90), run).await;
            // The outsider held every key throughout: nothing it held mattered.
            assert_eq!(held_keys(&mut outsider).await, keys, "{mode}: the outsider's keys");
            outsider.close().await.expect("close");
            rt.shutdown(None).await;
            assert!(
                finished.is_ok(),
                "{mode}: the tenant's orchestrations were blocked by a role without rights on its schema"
            );
        })
        .catch_unwind()
        .await;
        // The outsider's session is gone (closed above, or dropped by the
        // panic); a role with no objects drops at once.
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(crate::support::connect_options())
            .await
            .expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
            .execute(&admin)
            .await
            .expect("drop role");
        admin.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}
