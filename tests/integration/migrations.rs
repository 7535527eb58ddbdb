//! Migrations: applied once under concurrency, refused when the schema is
//! newer or edited, verified (not applied) when DDL is off; procedures
//! reinstalled when changed and dropped when retired; health reporting.
//! Migrations that wait (for locks, past timeouts, behind deadlocks) are in
//! `migrations/waits.rs`.

use duroxide_postgres::{
    MigrationMode, PostgresOptions, PostgresProvider, PostgresProviderError, SchemaName, SqlMode,
    migrate, tenants,
};

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::support::{
    self, connect_options, drop_schema, fresh_schema_name, with_schema, with_schemas,
};

mod waits;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_providers_starting_together_migrate_once() {
    with_schema("mig_concurrent", |schema| async move {
        let starts = (0..8).map(|_| {
            let pool = schema.pool.clone();
            let name = schema.name.clone();
            tokio::spawn(async move { PostgresProvider::from_pool(pool, &name).await })
        });
        for outcome in futures::future::join_all(starts).await {
            let provider = outcome.expect("task").expect("every provider starts");
            assert!(provider.health().await.is_ready());
        }
        let applied: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}._duroxide_migrations"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count migrations");
        assert_eq!(applied, migrate::migrations().len() as i64);
        let installed: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}._duroxide_procedures"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count procedures");
        assert_eq!(installed, migrate::procedures().len() as i64);
    })
    .await;
}

#[tokio::test]
async fn schema_newer_than_the_binary_is_refused() {
    with_schema("mig_newer", |schema| async move {
        let provider = schema.provider().await;
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms) \
             VALUES (999999, '999999_future', '\\x00', 0)",
        ))
        .execute(&schema.pool)
        .await
        .expect("record a future migration");
        let err = PostgresProvider::from_pool(schema.pool.clone(), &schema.name)
            .await
            .expect_err("a newer schema must be refused");
        assert!(
            matches!(
                err,
                PostgresProviderError::SchemaTooNew { found: 999999, .. }
            ),
            "{err}"
        );
        assert!(!err.is_retryable());
        let health = provider.health().await;
        assert!(!health.is_ready());
        assert!(
            health.error.as_deref().is_some_and(|e| e.contains("newer")),
            "{health:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn edited_migration_is_refused() {
    with_schema("mig_edited", |schema| async move {
        schema.provider().await;
        sqlx::query(schema.statement(
            "UPDATE {{schema}}._duroxide_migrations SET checksum = '\\xdeadbeef' WHERE version = 1",
        ))
        .execute(&schema.pool)
        .await
        .expect("tamper with checksum");
        let err = PostgresProvider::from_pool(schema.pool.clone(), &schema.name)
            .await
            .expect_err("an edited migration must be refused");
        assert!(
            matches!(
                err,
                PostgresProviderError::MigrationChanged { version: 1, .. }
            ),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn verify_mode_runs_no_ddl_and_refuses_an_unmigrated_schema() {
    with_schema("mig_verify", |schema| async move {
        let options = PostgresOptions::default()
            .schema(schema.name.clone())
            .migration_mode(MigrationMode::Verify);
        let err = PostgresProvider::from_pool_with(schema.pool.clone(), options.clone())
            .await
            .expect_err("verify mode on an empty schema must fail");
        assert!(
            matches!(err, PostgresProviderError::SchemaNotReady { .. }),
            "{err}"
        );
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema.name)
                .fetch_one(&schema.pool)
                .await
                .expect("query namespace");
        assert!(!exists, "verify mode must not create the schema");

        schema.provider().await;
        let verified = PostgresProvider::from_pool_with(schema.pool.clone(), options)
            .await
            .expect("verify mode accepts a current schema");
        assert!(verified.health().await.is_ready());
    })
    .await;
}

/// `migrate::expected_relations`, read from the migrations' text, names
/// exactly the tables and indexes a migrated schema holds (TOAST tables
/// and identity sequences aside): `verify` checks neither more nor less.
#[tokio::test]
async fn the_expected_relations_are_exactly_a_migrated_schemas() {
    with_schema("mig_relations", |schema| async move {
        schema.provider().await;
        let mut held: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'i')",
        )
        .bind(&schema.name)
        .fetch_all(&schema.pool)
        .await
        .expect("the schema's relations");
        held.sort();
        let mut expected = migrate::expected_relations().to_vec();
        expected.sort();
        assert_eq!(expected, held);
    })
    .await;
}

/// An index or a table dropped by hand (or an index left invalid) fails
/// `verify` in both SQL modes, and `tenants::verify_many`, naming it,
/// while a neighbour schema stays verified. Before, both schemas passed:
/// the bookkeeping still recorded every migration.
#[tokio::test]
async fn verify_names_a_table_or_index_dropped_by_hand() {
    with_schemas("mig_drift", 2, |schemas| async move {
        let [drifted, intact] = &schemas[..] else {
            unreachable!()
        };
        drifted.provider().await;
        intact.provider().await;
        let (name, neighbour) = (drifted.schema_name(), intact.schema_name());
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            migrate::verify(&drifted.pool, &name, mode)
                .await
                .unwrap_or_else(|e| panic!("{mode}: a migrated schema verifies: {e}"));
        }

        sqlx::raw_sql(drifted.statement(
            "DROP INDEX {{schema}}.orchestrator_queue_visible_idx; \
             DROP TABLE {{schema}}.kv_delta; \
             UPDATE pg_index SET indisvalid = false \
              WHERE indexrelid = '{{schema}}.worker_queue_visible_idx'::regclass",
        ))
        .execute(&drifted.pool)
        .await
        .expect("drift");
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            let err = migrate::verify(&drifted.pool, &name, mode)
                .await
                .expect_err("verify must refuse a schema missing a table and an index");
            let PostgresProviderError::SchemaNotReady { reason, .. } = &err else {
                panic!("{mode}: {err}");
            };
            for lacking in [
                "orchestrator_queue_visible_idx",
                "kv_delta,",
                "kv_delta_pkey",
                "worker_queue_visible_idx (invalid)",
            ] {
                assert!(reason.contains(lacking), "{mode}: {lacking} in {reason}");
            }
            migrate::verify(&intact.pool, &neighbour, mode)
                .await
                .unwrap_or_else(|e| panic!("{mode}: the neighbour still verifies: {e}"));

            let outcomes = tenants::verify_many(
                &drifted.pool,
                &[name.clone(), neighbour.clone()],
                mode,
                |_| {},
            )
            .await;
            let [drift, intact] = &outcomes[..] else {
                panic!("{mode}: two outcomes");
            };
            match &drift.result {
                Err(PostgresProviderError::SchemaNotReady { reason, .. }) => {
                    assert!(
                        reason.contains("orchestrator_queue_visible_idx"),
                        "{reason}"
                    );
                }
                other => panic!("{mode}: verify_many on the drifted schema: {other:?}"),
            }
            assert!(intact.result.is_ok(), "{mode}: {:?}", intact.result);
        }
    })
    .await;
}

#[tokio::test]
async fn changed_or_dropped_procedures_are_reinstalled() {
    with_schema("mig_reinstall", |schema| async move {
        let provider = schema.provider().await;
        let health = provider.health().await;
        assert!(health.is_ready(), "{health:?}");
        assert_eq!(health.schema_version, Some(migrate::latest_version()));

        // A procedure whose recorded checksum differs (as after an upgrade) ...
        sqlx::query(schema.statement(
            "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00' WHERE name = 'get_custom_status'",
        ))
        .execute(&schema.pool)
        .await
        .expect("stale checksum");
        // ... and one dropped by hand.
        sqlx::query(schema.statement("DROP FUNCTION {{schema}}.get_kv_value{{suffix}}(text, text)"))
            .execute(&schema.pool)
            .await
            .expect("drop function");
        let health = provider.health().await;
        assert!(health.migrations_pending, "{health:?}");

        let again = schema.provider().await;
        assert!(again.health().await.is_ready());
        let rows: i64 = sqlx::query_scalar(schema.statement(
            "SELECT count(*) FROM {{schema}}.get_kv_value{{suffix}}('nobody', 'k')",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("reinstalled function answers");
        assert_eq!(rows, 0);
    })
    .await;
}

#[tokio::test]
async fn procedures_a_newer_build_retired_are_dropped() {
    with_schema("mig_retire", |schema| async move {
        schema.provider().await;
        // As an earlier build would have left it: a recorded procedure this
        // build no longer embeds.
        sqlx::query(schema.statement(
            "CREATE FUNCTION {{schema}}.next_orchestration_due() RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'",
        ))
        .execute(&schema.pool)
        .await
        .expect("old procedure");
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}._duroxide_procedures (name, checksum) VALUES ('next_orchestration_due', '\\x00')",
        ))
        .execute(&schema.pool)
        .await
        .expect("recorded");
        let name = SchemaName::new(&schema.name).expect("valid name");
        let status = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert_eq!(status.retired_procedures, 1);
        // Harmless while it stays: a stored-procedure provider is ready.
        assert!(status.is_ready_for(SqlMode::StoredProcedures), "{status:?}");

        schema.provider().await;
        let functions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = 'next_orchestration_due'",
        )
        .bind(schema.name.as_str())
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(functions, 0, "retired procedure dropped");
        let status = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert_eq!(status.retired_procedures, 0);
        assert!(status.is_current());
    })
    .await;
}

/// Functions and an operator that exactly match built-ins migrations could
/// call through implicit casts (`format(text, VARIADIC "any")`,
/// `hashtextextended(text, bigint)` called with an integer, `numeric *
/// numeric` called with an integer), each recording its call in `calls`.
const HOSTILE: &str = r#"
CREATE SCHEMA {{hostile}};
CREATE TABLE {{hostile}}.calls (fn text NOT NULL);
CREATE FUNCTION {{hostile}}.format(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {{hostile}}.calls VALUES ('format(text, text)'); RETURN pg_catalog.format(a, b); END $$;
CREATE FUNCTION {{hostile}}.format(a text, b text, c text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {{hostile}}.calls VALUES ('format(text, text, text)'); RETURN pg_catalog.format(a, b, c); END $$;
CREATE FUNCTION {{hostile}}.hashtextextended(a text, b integer) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {{hostile}}.calls VALUES ('hashtextextended(text, integer)');
      RETURN pg_catalog.hashtextextended(a, b::bigint); END $$;
CREATE FUNCTION {{hostile}}.times(a numeric, b integer) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {{hostile}}.calls VALUES ('numeric * integer');
      RETURN a OPERATOR(pg_catalog.*) b::numeric; END $$;
CREATE OPERATOR {{hostile}}.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = {{hostile}}.times);
"#;

#[tokio::test]
async fn migrations_never_call_functions_planted_on_the_search_path() {
    with_schema("mig_hostile", |schema| async move {
        let hostile = fresh_schema_name("hostile");
        sqlx::raw_sql(sqlx::AssertSqlSafe(HOSTILE.replace("{{hostile}}", &format!("\"{hostile}\""))))
            .execute(&schema.pool)
            .await
            .expect("plant hostile functions");
        // The provider's connections put the hostile schema first.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(connect_options().options([("search_path", format!("{hostile},public"))]))
            .await
            .expect("pool with a hostile search_path");
        let planted: i64 = sqlx::query_scalar("SELECT count(*) FROM calls")
            .fetch_one(&pool)
            .await
            .expect("the hostile schema is on the path");
        assert_eq!(planted, 0);
        let calls = || async {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SELECT fn FROM \"{hostile}\".calls")))
                .fetch_all(&schema.pool)
                .await
                .expect("read calls")
        };
        let name = SchemaName::new(&schema.name).expect("valid name");
        for mode in [SqlMode::InlineSql, SqlMode::StoredProcedures] {
            migrate::verify(&pool, &name, mode)
                .await
                .expect_err("nothing to verify yet");
            migrate::migrate(&pool, &name, mode).await.expect("migrate");
            migrate::verify(&pool, &name, mode).await.expect("verify");
            assert_eq!(calls().await, Vec::<String>::new(), "{mode}");
        }
        // A stale and a retired procedure: the reinstall path too.
        sqlx::raw_sql(schema.statement(
            "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00' WHERE name = 'get_custom_status';
             CREATE FUNCTION {{schema}}.next_orchestration_due() RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint';
             INSERT INTO {{schema}}._duroxide_procedures (name, checksum) VALUES ('next_orchestration_due', '\\x00');",
        ))
        .execute(&schema.pool)
        .await
        .expect("stale and retired procedures");
        migrate::migrate(&pool, &name, SqlMode::StoredProcedures)
            .await
            .expect("reinstall");
        let status = migrate::inspect(&pool, &name).await.expect("inspect");
        assert!(status.is_current() && status.retired_procedures == 0, "{status:?}");
        assert_eq!(calls().await, Vec::<String>::new());
        pool.close().await;
        drop_schema(&schema.pool, &hostile).await;
    })
    .await;
}

#[tokio::test]
async fn a_session_holding_the_old_advisory_key_does_not_block_start_up() {
    with_schema("mig_advisory", |schema| async move {
        let mut holder = PgConnection::connect_with(&connect_options())
            .await
            .expect("holder connection");
        // The key migrations serialized on before: any role could take it.
        sqlx::query("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($1, 0))")
            .bind(format!("duroxide-postgres:migrate:{}", schema.name))
            .execute(&mut holder)
            .await
            .expect("hold the old key");
        let name = SchemaName::new(&schema.name).expect("valid name");
        for mode in [SqlMode::InlineSql, SqlMode::StoredProcedures] {
            tokio::time::timeout(
                Duration::from_secs(20),
                migrate::migrate(&schema.pool, &name, mode),
            )
            .await
            .unwrap_or_else(|_| panic!("{mode}: migration blocked by the advisory key"))
            .expect("migrate");
        }
        assert!(schema.provider().await.health().await.is_ready());
        holder.close().await.expect("release the key");
    })
    .await;
}

/// Bookkeeping from before the procedure records had a `crate_version`
/// column gets it (after the DDL lock, the only case that alters the
/// table), and a reinstalled procedure's record carries this build's
/// version.
#[tokio::test]
async fn bookkeeping_without_the_version_column_is_upgraded() {
    with_schema("mig_bookkeeping", |schema| async move {
        assert!(schema.provider().await.health().await.is_ready());
        schema
            .run_all(&[
                "ALTER TABLE {{schema}}._duroxide_procedures DROP COLUMN crate_version",
                "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x00' WHERE name = 'get_custom_status'",
            ])
            .await;
        assert!(schema.provider().await.health().await.is_ready());
        let version: Option<String> = sqlx::query_scalar(schema.statement(
            "SELECT crate_version FROM {{schema}}._duroxide_procedures WHERE name = 'get_custom_status'",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("the reinstalled procedure's record");
        assert_eq!(version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    })
    .await;
}

/// Each tenant's procedures have names of their own: PostgreSQL resolves a
/// function name by reading every function of that name in the database,
/// so names shared by a thousand tenants made every backend's first call of
/// each procedure read a thousand entries (docs/benchmarks.md, "A crowded
/// server").
#[tokio::test]
async fn no_two_tenants_share_a_procedure_name() {
    with_schemas("mig_unique_names", 2, |schemas| async move {
        let mut names = Vec::new();
        for schema in &schemas {
            schema.provider().await;
            let mine: Vec<String> = sqlx::query_scalar(
                "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                  WHERE n.nspname = $1 ORDER BY 1",
            )
            .bind(&schema.name)
            .fetch_all(&schema.pool)
            .await
            .expect("functions");
            let expected: Vec<String> = migrate::procedures()
                .iter()
                .map(|p| schema.procedure(p.name))
                .collect();
            assert_eq!(mine, expected);
            names.push(mine);
        }
        assert!(
            names[0].iter().all(|n| !names[1].contains(n)),
            "{names:?}"
        );
    })
    .await;
}

/// Procedures are installed without PostgreSQL's body check
/// (`check_function_bodies = off`, as `pg_dump` restores): every procedure
/// a provider installed still passes its language's validator, and the
/// validator call does reject a body that does not parse.
#[tokio::test]
async fn every_installed_procedure_passes_its_languages_validator() {
    with_schema("mig_validated", |schema| async move {
        schema.provider().await;
        let installed: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT p.proname::text, p.oid::int8, l.lanvalidator::regproc::text \
               FROM pg_proc p \
               JOIN pg_namespace n ON n.oid = p.pronamespace \
               JOIN pg_language l ON l.oid = p.prolang \
              WHERE n.nspname = $1 ORDER BY 1",
        )
        .bind(&schema.name)
        .fetch_all(&schema.pool)
        .await
        .expect("installed procedures");
        assert_eq!(installed.len(), migrate::procedures().len());
        let mut conn = schema.pool.acquire().await.expect("connection");
        for (name, oid, validator) in &installed {
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {validator}($1::oid)")))
                .bind(oid)
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{name} fails {validator}: {e}"));
        }

        let broken = schema.sql(
            "SET check_function_bodies = off; \
             CREATE FUNCTION {{schema}}.broken() RETURNS int LANGUAGE plpgsql \
             AS $$ BEGIN RETURN SELEC 1; END $$; \
             RESET check_function_bodies",
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(broken.to_string()))
            .execute(&mut *conn)
            .await
            .expect("a broken body installs unchecked");
        let oid: i64 =
            sqlx::query_scalar(schema.statement("SELECT '{{schema}}.broken'::regproc::oid::int8"))
                .fetch_one(&mut *conn)
                .await
                .expect("oid");
        let refused = sqlx::query("SELECT plpgsql_validator($1::oid)")
            .bind(oid)
            .execute(&mut *conn)
            .await;
        assert!(refused.is_err(), "the validator accepted a broken body");
    })
    .await;
}

/// A table access method that is heap under another name, for
/// [`tables_are_heap_whatever_the_default_access_method`] (whose
/// statements spell it out).
const OTHER_TABLE_AM: &str = "dx_test_heap_by_another_name";

/// A database or role whose `default_table_access_method` names another
/// table access method (a columnar one, say, which cannot lock a row or
/// update it in place) must not get the provider's tables: the queues are
/// built on heap tables. The access method here is heap under another
/// name, so only the catalog tells them apart.
#[tokio::test]
async fn tables_are_heap_whatever_the_default_access_method() {
    let admin = support::pool(1).await;
    sqlx::query(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'dx_test_heap_by_another_name') THEN \
             CREATE ACCESS METHOD dx_test_heap_by_another_name TYPE TABLE HANDLER heap_tableam_handler; \
           END IF; \
         END $$",
    )
    .execute(&admin)
    .await
    .expect("create an access method (the tests run as a superuser)");
    with_schema("mig_heap", |schema| async move {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(
                connect_options().options([("default_table_access_method", OTHER_TABLE_AM)]),
            )
            .await
            .expect("pool with another default table access method");
        migrate::migrate(&pool, &schema.schema_name(), SqlMode::StoredProcedures)
            .await
            .expect("migrate");
        let not_heap: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
              WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = $1) \
                AND c.relkind = 'r' AND a.amname <> 'heap' \
              ORDER BY 1",
        )
        .bind(&schema.name)
        .fetch_all(&schema.pool)
        .await
        .expect("read the tables' access methods");
        assert!(not_heap.is_empty(), "tables not on heap: {not_heap:?}");
        pool.close().await;
    })
    .await;
    // With the schema gone, nothing uses it.
    sqlx::query("DROP ACCESS METHOD IF EXISTS dx_test_heap_by_another_name")
        .execute(&admin)
        .await
        .expect("drop the access method");
}
