//! A migration that waits: for a lock the queues' traffic holds, past the
//! connection's statement or transaction timeout, behind a deadlock it
//! loses; and an inspection that does not wait for it.

use std::time::Duration;

use duroxide_postgres::{PostgresOptions, PostgresProviderError, SqlMode, migrate};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::support::{self, TestSchema, connect_options, in_both_modes, with_schema};

/// Puts `schema` (migrated) back to before migration 0004: its index is
/// there again and 0004 is not recorded, so the next migration drops the
/// index, which needs an `ACCESS EXCLUSIVE` lock on the orchestrator queue.
async fn with_0004_pending(schema: &TestSchema) {
    schema
        .run_all(&[
            "CREATE INDEX orchestrator_queue_lock_idx ON {{schema}}.orchestrator_queue (lock_token)",
            "DELETE FROM {{schema}}._duroxide_migrations WHERE version = 4",
        ])
        .await;
}

/// A connection of its own holding `ACCESS SHARE` on the orchestrator queue
/// in an open transaction, as any transaction that read the queue does.
async fn hold_the_queue(schema: &TestSchema) -> PgConnection {
    support::hold_table(schema, "orchestrator_queue", "ACCESS SHARE").await
}

/// Starts migrating `schema` and returns once the migration waits for the
/// orchestrator queue (it holds its own locks by then).
async fn migration_waiting_for_the_queue(
    schema: &TestSchema,
    mode: SqlMode,
) -> tokio::task::JoinHandle<Result<(), PostgresProviderError>> {
    let name = schema.schema_name();
    let pool = schema.pool.clone();
    let migration = tokio::spawn(async move { migrate::migrate(&pool, &name, mode).await });
    support::until_a_backend_waits_for(schema, "orchestrator_queue", "the migration").await;
    migration
}

/// A `schema` migrated in `mode` with 0004 pending, a session holding its
/// orchestrator queue, and a migration in `mode` started and waiting for
/// that session (holding its own locks by then).
async fn migration_held_by_the_queue(
    schema: &TestSchema,
    mode: SqlMode,
) -> (
    PgConnection,
    tokio::task::JoinHandle<Result<(), PostgresProviderError>>,
) {
    assert!(schema.provider_in(mode).await.health().await.is_ready());
    with_0004_pending(schema).await;
    let holder = hold_the_queue(schema).await;
    (holder, migration_waiting_for_the_queue(schema, mode).await)
}

in_both_modes!(a_migration_outlasts_the_connections_statement_timeout:
    a_migration_outlasts_the_connections_statement_timeout_procedures,
    a_migration_outlasts_the_connections_statement_timeout_inline);

/// A migration runs to its end whatever statement timeout its connection
/// carries (`PostgresOptions::statement_timeout`, or a role's or
/// database's): one cut off rolls back, and every start after it is cut off
/// at the same point, so a migration longer than the timeout (a backfill on
/// a large tenant) would never finish.
async fn a_migration_outlasts_the_connections_statement_timeout(mode: SqlMode) {
    let connect = PostgresOptions::default()
        .statement_timeout(Some(CUT_OFF))
        .connect_options(support::database_url())
        .expect("connect options");
    a_migration_outlasts(mode, "statement_timeout", connect).await;
}

in_both_modes!(a_migration_outlasts_the_connections_transaction_timeout:
    a_migration_outlasts_the_connections_transaction_timeout_procedures,
    a_migration_outlasts_the_connections_transaction_timeout_inline);

/// The same for PostgreSQL 17's `transaction_timeout` (a role's or
/// database's, as a hardened server sets it), which ends the whole session
/// when a transaction outlasts it. Servers before 17 do not know the
/// setting: there the test only says it did not run.
async fn a_migration_outlasts_the_connections_transaction_timeout(mode: SqlMode) {
    let mut conn = PgConnection::connect_with(&connect_options())
        .await
        .expect("connect");
    let known: bool =
        sqlx::query_scalar("SELECT current_setting('transaction_timeout', true) IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .expect("look for transaction_timeout");
    let _ = conn.close().await;
    if !known {
        eprintln!(
            "note: {mode}: a_migration_outlasts_the_connections_transaction_timeout did not run: \
             the server predates transaction_timeout (PostgreSQL 17)"
        );
        return;
    }
    let connect = PostgresOptions::default()
        .connect_options(support::database_url())
        .expect("connect options")
        .options([("transaction_timeout", format!("{}ms", CUT_OFF.as_millis()))]);
    a_migration_outlasts(mode, "transaction_timeout", connect).await;
}

/// How long the connections of [`a_migration_outlasts`] allow.
const CUT_OFF: Duration = Duration::from_millis(200);

/// A migration in `mode` on connections made with `connect` (which cut off
/// what outlasts [`CUT_OFF`] by `setting`) waits three times that for a
/// session holding the orchestrator queue, and still applies.
async fn a_migration_outlasts(
    mode: SqlMode,
    setting: &'static str,
    connect: sqlx::postgres::PgConnectOptions,
) {
    with_schema(&format!("mig_timeout_{mode}"), |schema| async move {
        assert!(schema.provider_in(mode).await.health().await.is_ready());
        with_0004_pending(&schema).await;
        let holder = hold_the_queue(&schema).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| panic!("pool with a {setting}: {e}"));
        let name = schema.schema_name();
        let migrating = pool.clone();
        let migration =
            tokio::spawn(async move { migrate::migrate(&migrating, &name, mode).await });
        support::until_a_backend_waits_for(&schema, "orchestrator_queue", "the migration").await;
        // Held past the timeout: what is being shown, not a wait for an event.
        tokio::time::sleep(CUT_OFF * 3).await;
        support::release_table(holder).await;
        migration
            .await
            .expect("migration task")
            .unwrap_or_else(|e| panic!("{mode}: the migration was cut off by {setting}: {e}"));
        let applied: i64 =
            sqlx::query_scalar(schema.statement(
                "SELECT count(*) FROM {{schema}}._duroxide_migrations WHERE version = 4",
            ))
            .fetch_one(&schema.pool)
            .await
            .expect("0004 recorded");
        assert_eq!(applied, 1);
        pool.close().await;
    })
    .await;
}

in_both_modes!(an_inspection_does_not_wait_for_a_migration_in_progress:
    an_inspection_does_not_wait_for_a_migration_in_progress_procedures,
    an_inspection_does_not_wait_for_a_migration_in_progress_inline);

/// Inspecting a schema never waits for its migration: the DDL lock
/// conflicts only with other DDL, and the migration takes no other lock on
/// the bookkeeping that inspections read. A migration held up by the
/// queue (as a long one would be by its own work) used to hold an `ACCESS
/// EXCLUSIVE` lock on the procedure records from its first statement (an
/// `ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, run every time), so
/// `inspect` (and `verify`, `status`, `health`, a starting provider's check)
/// waited for the whole migration.
async fn an_inspection_does_not_wait_for_a_migration_in_progress(mode: SqlMode) {
    with_schema(&format!("mig_inspect_{mode}"), |schema| async move {
        let (holder, migration) = migration_held_by_the_queue(&schema, mode).await;

        let name = schema.schema_name();
        let status = tokio::time::timeout(
            Duration::from_secs(20),
            migrate::inspect(&schema.pool, &name),
        )
        .await
        .expect("the inspection answers while the migration is in progress")
        .expect("inspect");
        assert_eq!(status.pending_migrations, 1, "{status:?}");

        support::release_table(holder).await;
        migration
            .await
            .expect("migration task")
            .expect("the migration completes");
        let status = migrate::inspect(&schema.pool, &name)
            .await
            .expect("inspect");
        assert_eq!(status.pending_migrations, 0, "{status:?}");
    })
    .await;
}

/// A migration that loses a deadlock starts over instead of failing the
/// provider's start. A session holds a table the migration needs (the
/// orchestrator queue, as any transaction that read it does), the
/// migration takes its DDL lock and waits for that session, which then asks
/// for the DDL lock: the migration, waiting first, is the one PostgreSQL's
/// deadlock check aborts (after `deadlock_timeout`, 1 s by default). It used
/// to fail with `40P01`; now it is tried again, waits for the session to
/// end, and completes.
async fn a_migration_that_loses_a_deadlock_starts_over(mode: SqlMode) {
    with_schema(&format!("mig_deadlock_{mode}"), |schema| async move {
        let (mut holder, migration) = migration_held_by_the_queue(&schema, mode).await;
        // The session checks for a deadlock only long after the migration
        // does, so the migration is the one aborted even when a busy
        // machine runs the two checks late (once, in a full suite run, the
        // session's ran first and it was the one aborted). And it waits
        // for the lock as long as it takes, as an operator's session does:
        // the test's connections carry the provider's one-second lock
        // timeout, which raced the migration's one-second deadlock check
        // and, on a slow machine, once won.
        sqlx::raw_sql("SET deadlock_timeout = '30s'; SET lock_timeout = 0")
            .execute(&mut holder)
            .await
            .expect("the session's deadlock_timeout and lock_timeout");
        // Granted once the deadlock check has aborted the migration's first try.
        sqlx::query(
            schema.statement(
                "LOCK TABLE {{schema}}._duroxide_migrations IN SHARE ROW EXCLUSIVE MODE",
            ),
        )
        .execute(&mut holder)
        .await
        .expect("the session gets the DDL lock once the migration gave way");
        support::release_table(holder).await;

        tokio::time::timeout(Duration::from_secs(30), migration)
            .await
            .expect("the migration ends")
            .expect("migration task")
            .expect("the migration starts over after losing the deadlock");
        let health = schema.provider_in(mode).await.health().await;
        assert!(health.is_ready(), "{health:?}");
    })
    .await;
}

in_both_modes!(a_migration_that_loses_a_deadlock_starts_over:
    a_migration_that_loses_a_deadlock_starts_over_procedures,
    a_migration_that_loses_a_deadlock_starts_over_inline);
