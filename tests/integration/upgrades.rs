//! Rolling upgrades: procedures record the crate version that installed
//! them; a build never replaces a newer build's procedure set, and runs
//! inline SQL beside it unless the set is its own; a newer build replaces
//! an older set. An upgrade from a build before names unique per schema
//! installs the suffixed set beside the plain-named one, which the older
//! build's processes still call, and drops the old names only on request.
//! The "other build" is simulated by editing the records (and procedures)
//! the way that build would have left them.

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresProvider, SchemaName, SqlMode, migrate, tenants};

use crate::fixtures;
use crate::support::{TestSchema, with_schema};

/// `ack_work_item`'s definition as installed.
async fn ack_definition(schema: &TestSchema) -> String {
    sqlx::query_scalar(
        "SELECT pg_catalog.pg_get_functiondef(p.oid) FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = $1 AND p.proname = $2",
    )
    .bind(&schema.name)
    .bind(schema.procedure("ack_work_item"))
    .fetch_one(&schema.pool)
    .await
    .expect("definition")
}

/// `ack_work_item`'s record: (crate version, checksum).
async fn ack_record(schema: &TestSchema) -> (Option<String>, Vec<u8>) {
    sqlx::query_as(schema.statement(
        "SELECT crate_version, checksum FROM {{schema}}._duroxide_procedures \
         WHERE name = 'ack_work_item'",
    ))
    .fetch_one(&schema.pool)
    .await
    .expect("record")
}

async fn execute(schema: &TestSchema, sql: &str) {
    sqlx::raw_sql(schema.statement(sql))
        .execute(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Work enqueued through `from` is claimed and acked through `to`.
async fn hand_over(from: &PostgresProvider, to: &PostgresProvider, id: u64) {
    from.enqueue_for_worker(fixtures::activity("upgrade", id))
        .await
        .expect("enqueue");
    claim_and_ack(to).await;
}

/// The work item waiting in the queue is claimed and acked through `to`.
async fn claim_and_ack(to: &PostgresProvider) {
    let (_, token, _) = to
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::default(),
        )
        .await
        .expect("fetch")
        .expect("the item waiting");
    to.ack_work_item(&token, None).await.expect("ack");
}

#[tokio::test]
async fn an_older_build_leaves_a_newer_procedure_set_alone_and_runs_inline_beside_it() {
    with_schema("upg_newer", |schema| async move {
        // The newer build: its provider calls the procedures it installed.
        let newer = schema.provider().await;
        let changed = ack_definition(&schema).await.replacen(
            "$function$",
            "$function$\n-- changed by a newer build\n",
            1,
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(changed.to_string()))
            .execute(&schema.pool)
            .await
            .expect("newer ack_work_item");
        execute(
            &schema,
            "UPDATE {{schema}}._duroxide_procedures SET crate_version = '999.0.0'; \
             UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x01' \
              WHERE name = 'ack_work_item'",
        )
        .await;

        // This build, asking for stored procedures, starts on inline SQL.
        let older = schema.provider().await;
        assert_eq!(older.sql_mode(), SqlMode::InlineSql);
        let health = older.health().await;
        assert!(health.is_ready(), "{health:?}");
        assert_eq!(health.sql_mode, SqlMode::InlineSql);
        let fallback = health.fallback.expect("the fallback is reported");
        assert!(fallback.contains("999.0.0"), "{fallback}");

        // Nothing of the newer set was replaced, dropped or re-recorded.
        assert!(
            ack_definition(&schema)
                .await
                .contains("changed by a newer build")
        );
        assert_eq!(
            ack_record(&schema).await,
            (Some("999.0.0".to_string()), vec![1u8])
        );
        let name = SchemaName::new(&schema.name).expect("name");
        let status = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert!(status.procedures_are_newer(), "{status:?}");
        assert_eq!(status.procedures_version.as_deref(), Some("999.0.0"));
        migrate::migrate(&schema.pool, &name, SqlMode::StoredProcedures)
            .await
            .expect("migrate leaves a newer set alone");
        assert_eq!(
            ack_record(&schema).await,
            (Some("999.0.0".to_string()), vec![1u8])
        );

        // Both builds serve the schema, each finishing the other's work.
        hand_over(&newer, &older, 1).await;
        hand_over(&older, &newer, 2).await;
    })
    .await;
}

#[tokio::test]
async fn a_newer_set_identical_to_this_builds_own_is_used() {
    with_schema("upg_same", |schema| async move {
        schema.provider().await;
        execute(
            &schema,
            "UPDATE {{schema}}._duroxide_procedures SET crate_version = '999.0.0'",
        )
        .await;
        let provider = schema.provider().await;
        assert_eq!(provider.sql_mode(), SqlMode::StoredProcedures);
        let health = provider.health().await;
        assert!(health.is_ready() && health.fallback.is_none(), "{health:?}");
        assert_eq!(ack_record(&schema).await.0.as_deref(), Some("999.0.0"));
        hand_over(&provider, &provider, 1).await;
    })
    .await;
}

#[tokio::test]
async fn this_build_replaces_an_older_or_unversioned_set_and_records_its_version() {
    with_schema("upg_older", |schema| async move {
        schema.provider().await;
        let (version, checksum) = ack_record(&schema).await;
        assert_eq!(version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        for (id, older) in [(1, "'0.0.1'"), (2, "NULL")] {
            execute(
                &schema,
                &format!(
                    "UPDATE {{{{schema}}}}._duroxide_procedures SET crate_version = {older}; \
                     UPDATE {{{{schema}}}}._duroxide_procedures SET checksum = '\\x01' \
                      WHERE name = 'ack_work_item'"
                ),
            )
            .await;
            let provider = schema.provider().await;
            assert_eq!(provider.sql_mode(), SqlMode::StoredProcedures);
            assert_eq!(
                ack_record(&schema).await,
                (
                    Some(env!("CARGO_PKG_VERSION").to_string()),
                    checksum.clone()
                ),
                "{older}"
            );
            hand_over(&provider, &provider, id).await;
        }
    })
    .await;
}

/// Leaves `schema`'s procedures as a build before names unique per schema
/// installed them: every function renamed to its procedure's plain name,
/// and the set recorded as an older build's.
pub async fn as_before_the_suffix(schema: &TestSchema) {
    execute(
        schema,
        "DO $rename$ DECLARE f record; BEGIN \
           FOR f IN SELECT p.oid::regprocedure AS signature, p.proname::text AS name \
                      FROM pg_catalog.pg_proc p \
                     WHERE p.pronamespace = '{{schema}}'::regnamespace LOOP \
             EXECUTE format('ALTER FUNCTION %s RENAME TO %I', f.signature, \
                            replace(f.name, '{{suffix}}', '')); \
           END LOOP; \
         END $rename$; \
         UPDATE {{schema}}._duroxide_procedures SET crate_version = '0.0.1'",
    )
    .await;
}

/// The queue depths as a process of a build before the suffix reads them.
async fn depths_by_plain_name(schema: &TestSchema) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(schema.statement("SELECT * FROM {{schema}}.get_queue_depths()"))
        .fetch_one(&schema.pool)
        .await
}

#[tokio::test]
async fn an_upgrade_from_plain_names_installs_the_schemas_own_beside_them_until_told() {
    with_schema("upg_suffix", |schema| async move {
        schema.provider().await;
        as_before_the_suffix(&schema).await;
        let name = schema.schema_name();
        let embedded = migrate::procedures().len();
        let before = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert_eq!(
            (before.stale_procedures, before.legacy_procedures),
            (embedded, embedded),
            "{before:?}"
        );
        assert_eq!(
            depths_by_plain_name(&schema).await.expect("old call"),
            (0, 0)
        );

        // This build installs its set beside the old one and runs on it.
        let provider = schema.provider().await;
        assert_eq!(provider.sql_mode(), SqlMode::StoredProcedures);
        let after = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert!(after.is_current(), "{after:?}");
        assert_eq!(after.legacy_procedures, embedded, "{after:?}");
        assert_eq!(
            ack_record(&schema).await.0.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );

        // A process of the older build still reads the same queues.
        provider
            .enqueue_for_worker(fixtures::activity("upgrade", 1))
            .await
            .expect("enqueue");
        assert_eq!(
            depths_by_plain_name(&schema).await.expect("old call"),
            (0, 1)
        );
        // Migrating again changes nothing.
        migrate::migrate(&schema.pool, &name, SqlMode::StoredProcedures)
            .await
            .expect("migrate");
        assert_eq!(
            migrate::inspect(&schema.pool, &name)
                .await
                .expect("inspect"),
            after
        );

        // Told that no older process runs, the old names go, and only they.
        let dropped = tenants::drop_legacy_procedures(&schema.pool, &name)
            .await
            .expect("drop legacy");
        assert_eq!(dropped, embedded);
        let gone = depths_by_plain_name(&schema)
            .await
            .expect_err("old name gone");
        assert_eq!(
            gone.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42883"),
            "{gone}"
        );
        let last = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert!(last.is_current() && last.legacy_procedures == 0, "{last:?}");
        claim_and_ack(&provider).await;
        assert_eq!(
            tenants::drop_legacy_procedures(&schema.pool, &name)
                .await
                .expect("again"),
            0
        );
    })
    .await;
}

/// A process of the build before `fetch_work_item`'s history argument and
/// `read_history`'s status columns, still running when this build installs
/// its procedures, keeps claiming activities and reading histories with
/// its own statements (eight arguments; the event column only).
#[tokio::test]
async fn an_earlier_builds_fetch_and_read_still_work_after_this_build_installs() {
    with_schema("upgrade_calls", |schema| async move {
        let provider = schema.provider().await;
        provider
            .enqueue_for_worker(fixtures::activity("upgrade", 2))
            .await
            .expect("enqueue");
        let (token, item): (Option<String>, Option<String>) = sqlx::query_as(schema.statement(
            "SELECT lock_token, work_item FROM {{schema}}.fetch_work_item{{suffix}}\
             ($1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(30_000_i64)
        .bind("any")
        .bind(Vec::<String>::new())
        .bind(None::<String>)
        .bind(None::<i64>)
        .bind(false)
        .bind(None::<i64>)
        .bind(None::<i64>)
        .fetch_one(&schema.pool)
        .await
        .expect("the earlier build's fetch");
        assert!(token.is_some(), "nothing claimed");
        assert_eq!(
            item.as_deref(),
            Some(fixtures::json(&fixtures::activity("upgrade", 2)).as_str())
        );
        let events: Vec<String> = sqlx::query_scalar(
            schema.statement("SELECT event_data FROM {{schema}}.read_history{{suffix}}($1, $2)"),
        )
        .bind("upgrade")
        .bind(None::<i64>)
        .fetch_all(&schema.pool)
        .await
        .expect("the earlier build's read");
        assert!(events.is_empty());
    })
    .await;
}

/// Processes of the previous build keep running during a rolling upgrade
/// and keep sending their calls (`tests/calls/previous.sql`, that build's
/// `tests/calls/current.sql`) after this build installed its procedures:
/// every one must still parse against them, with the same arguments and
/// the result columns it names. A procedure whose signature or result
/// changed without keeping the old call valid fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_previous_build_still_parses() {
    use sqlx::Executor;
    with_schema("upgrade_calls", |schema| async move {
        let _provider = schema.provider().await;
        let calls = include_str!("../calls/previous.sql");
        let mut checked = 0;
        let mut failed = Vec::new();
        for line in calls
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        {
            let (name, template) = line.split_once(" = ").expect("`name = template` lines");
            if let Err(e) = schema
                .pool
                .describe(sqlx::SqlSafeStr::into_sql_str(schema.statement(template)))
                .await
            {
                failed.push(format!("{name}: {e}"));
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} calls recorded");
        assert!(
            failed.is_empty(),
            "calls of the previous build that no longer parse:\n{}",
            failed.join("\n")
        );
    })
    .await;
}
