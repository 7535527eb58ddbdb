//! Transient server states surface as retryable errors, so duroxide retries
//! instead of failing the orchestration: a read-only server (a standby
//! after a failover, or `default_transaction_read_only` switched on), and a
//! pooled connection the server ended as idle (`idle_session_timeout`),
//! and a prepared statement whose result type DDL changed, whatever
//! language the server answers in.

mod history_reads;

use std::time::Duration;

use duroxide::providers::{Provider, ProviderError};
use duroxide_postgres::{MigrationMode, PostgresOptions, PostgresProvider, SqlMode};
use sqlx::postgres::PgPoolOptions;

use crate::fixtures::{event, metadata, start};
use crate::support::{connect_options, database_url, with_schema};

const LOCK: Duration = Duration::from_secs(30);
/// The acquire timeout of [`provider_with_setting`]'s pool: how long leased
/// work (an ack) waits out a lost connection or a read-only server there
/// before it returns the error; well within [`LOCK`].
const RIDE: Duration = Duration::from_secs(2);

/// A provider on `schema` whose own one-connection pool opens every
/// connection with `setting = value` (a server setting, as `-c` would).
async fn provider_with_setting(
    schema: &str,
    mode: SqlMode,
    setting: &str,
    value: &str,
) -> PostgresProvider {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(RIDE)
        .connect_with(connect_options().options([(setting, value)]))
        .await
        .unwrap_or_else(|e| panic!("pool with {setting} = {value}: {e}"));
    let options = PostgresOptions::default()
        .schema(schema)
        .sql_mode(mode)
        .notifications(false)
        .migration_mode(MigrationMode::Verify);
    PostgresProvider::from_pool_with(pool, options)
        .await
        .unwrap_or_else(|e| panic!("{mode} provider with {setting} = {value}: {e}"))
}

fn assert_retryable(what: &str, result: Result<(), ProviderError>) {
    let err = result.expect_err(what);
    assert!(err.is_retryable(), "{what}: permanent: {err:?}");
}

/// Writes refused by a read-only server (`25006`) are retryable, for an
/// enqueue and for an orchestration turn's ack, in both SQL modes. The ack,
/// on a lease already held, first waits the state out for the pool's
/// acquire timeout ([`RIDE`]); the lease is still held after, and the same
/// ack succeeds once the server takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_fails_writes_with_a_retryable_error() {
    with_schema("read_only", |schema| async move {
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            let writable = schema.provider_with(mode, false).await;
            let read_only =
                provider_with_setting(&schema.name, mode, "default_transaction_read_only", "on")
                    .await;
            let instance = format!("read-only-{mode}");
            assert_retryable(
                &format!("{mode}: enqueue on a read-only server"),
                read_only
                    .enqueue_for_orchestrator(start(&instance), None)
                    .await,
            );

            writable
                .enqueue_for_orchestrator(start(&instance), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue: {e}"));
            let (_, token, _) = writable
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the start is fetched"));
            let ack = |p: PostgresProvider| {
                let (token, instance) = (token.clone(), instance.clone());
                async move {
                    p.ack_orchestration_item(
                        &token,
                        1,
                        vec![event(&instance, 1)],
                        vec![],
                        vec![],
                        metadata(),
                        vec![],
                    )
                    .await
                }
            };
            let began = std::time::Instant::now();
            assert_retryable(
                &format!("{mode}: ack on a read-only server"),
                ack(read_only.clone()).await,
            );
            // It stops at most one back-off (500 ms) before the deadline.
            assert!(
                began.elapsed() >= RIDE / 2,
                "{mode}: the ack gave up after {:?}, without waiting the read-only server out",
                began.elapsed()
            );
            ack(writable.clone())
                .await
                .unwrap_or_else(|e| panic!("{mode}: the retried ack: {e}"));
            read_only.pool().close().await;
        }
    })
    .await;
}

/// A pooled connection the server ended for idling (`57P05`,
/// `idle_session_timeout`) fails the one operation that gets it, with a
/// retryable error; the retry gets a new connection and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ended_as_idle_costs_one_retryable_failure() {
    with_schema("idle_ended", |schema| async move {
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            drop(schema.provider_with(mode, false).await);
            let p = provider_with_setting(&schema.name, mode, "idle_session_timeout", "300").await;
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(p.pool())
                .await
                .unwrap_or_else(|e| panic!("backend pid: {e}"));
            // Wait until the server has ended the idle session.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let alive: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                )
                .bind(pid)
                .fetch_one(&schema.pool)
                .await
                .unwrap_or_else(|e| panic!("pg_stat_activity: {e}"));
                if !alive {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{mode}: the idle session was not ended ({})",
                    database_url()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let instance = format!("idle-ended-{mode}");
            if let Err(err) = p.enqueue_for_orchestrator(start(&instance), None).await {
                assert!(err.is_retryable(), "{mode}: permanent: {err:?}");
                p.enqueue_for_orchestrator(start(&instance), None)
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: the retry: {e}"));
            }
            let queued: i64 = sqlx::query_scalar(schema.statement(
                "SELECT count(*) FROM {{schema}}.orchestrator_queue WHERE instance_id = $1",
            ))
            .bind(&instance)
            .fetch_one(&schema.pool)
            .await
            .unwrap_or_else(|e| panic!("count: {e}"));
            assert_eq!(queued, 1, "{mode}: the start is queued once");
            p.pool().close().await;
        }
    })
    .await;
}

/// Languages other than English a server may answer in (`lc_messages`),
/// tried in order.
const OTHER_LANGUAGES: [&str; 3] = ["de_DE.UTF-8", "fr_FR.UTF-8", "es_ES.UTF-8"];

/// A connection of `pool`'s on which the server answers in a language
/// other than English, and that language. As root, generates
/// `de_DE.UTF-8` when the test server's host has none of
/// [`OTHER_LANGUAGES`] (outside the locale archive, which a running server
/// mapped at its start and would not read again; a backend that failed to
/// load a locale does not look again either, so a new connection tries).
async fn in_another_language(pool: &sqlx::PgPool) -> (sqlx::PgConnection, &'static str) {
    let mut refused = String::new();
    for attempt in 0..2 {
        let mut conn = pool.acquire().await.expect("connection").detach();
        for locale in OTHER_LANGUAGES {
            let set = format!("SET lc_messages = '{locale}'");
            match sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                .execute(&mut conn)
                .await
            {
                Ok(_) => return (conn, locale),
                Err(e) => refused = e.to_string(),
            }
        }
        if attempt == 0 && crate::support::running_as_root() {
            generate_german();
        }
    }
    panic!(
        "the test server answers only in English ({refused}): generate a locale on its host \
         (Debian: localedef -i de_DE -f UTF-8 de_DE.UTF-8), and connect as a superuser"
    )
}

/// Generates `de_DE.UTF-8` outside the locale archive, installing its
/// definition (Debian's `locales`) first when it is missing.
fn generate_german() {
    eprintln!("note: no locale other than English; generating de_DE.UTF-8 (localedef)");
    if !std::path::Path::new("/usr/share/i18n/locales/de_DE").exists() {
        eprintln!("note: installing Debian's locales package");
        crate::support::apt_install("locales");
    }
    let _ = std::process::Command::new("localedef")
        .args(["--no-archive", "-i", "de_DE", "-f", "UTF-8", "de_DE.UTF-8"])
        .status();
}

/// "cached plan must not change result type" (`0A000`, raised when DDL
/// changed a prepared statement's result type) heals: sqlx drops the
/// statement, so the next execution prepares it afresh. Inside a
/// transaction sqlx returns it, and it must then be retryable, in any
/// language: it was told apart by its English message alone.
#[tokio::test]
async fn a_changed_cached_plan_is_retryable_in_any_language() {
    use duroxide_postgres::PostgresProviderError;
    use duroxide_postgres::sqlstate::{CACHED_PLAN_CHANGED, FEATURE_NOT_SUPPORTED};
    use sqlx::Connection;

    with_schema("plan_language", |schema| async move {
        let (mut conn, locale) = in_another_language(&schema.pool).await;
        sqlx::raw_sql(schema.statement(
            "CREATE SCHEMA {{schema}}; CREATE TABLE {{schema}}.t (a int); \
             INSERT INTO {{schema}}.t VALUES (1)",
        ))
        .execute(&mut conn)
        .await
        .expect("table");
        let select = || sqlx::query(schema.statement("SELECT * FROM {{schema}}.t"));
        select()
            .fetch_all(&mut conn)
            .await
            .expect("prepared and cached");
        sqlx::raw_sql(schema.statement("ALTER TABLE {{schema}}.t ADD COLUMN b int"))
            .execute(&mut conn)
            .await
            .expect("alter");

        let mut tx = conn.begin().await.expect("begin");
        let err = select()
            .fetch_all(&mut *tx)
            .await
            .expect_err("the cached plan changed result type");
        drop(tx);
        let message = err.as_database_error().map(|db| db.message().to_string());
        let err = PostgresProviderError::from(err);
        assert_eq!(
            err.sqlstate().as_deref(),
            Some(FEATURE_NOT_SUPPORTED),
            "{err}"
        );
        assert!(
            message.is_some_and(|m| !m.contains(CACHED_PLAN_CHANGED)),
            "the server answers in {locale}: {err}"
        );
        assert!(err.is_retryable(), "in {locale}: {err}");
        // And it healed: the statement is prepared afresh.
        let rows = select().fetch_all(&mut conn).await.expect("again");
        assert_eq!(rows.len(), 1);
        conn.close().await.expect("close");
    })
    .await;
}
