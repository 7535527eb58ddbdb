//! The `duroxide-postgres` command, run as a process against the test
//! server: exit codes, stdout and stderr.

use std::time::Duration;

use duroxide::providers::Provider;
use duroxide_postgres::{MigrationMode, PostgresOptions, PostgresProvider, SqlMode, migrate};

use super::{leftovers, schema_exists};
use crate::fixtures::{claim_and_ack_turn, start};
use crate::support::{
    TestSchema, database_url, reading_every_tenant, url_with_database, with_schemas,
};

/// What a run of the command left.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the command with `args`, `DATABASE_URL` pointing at the test server
/// (unless `url` is `None`) and no SQL mode from the environment.
async fn run_with(url: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duroxide-postgres"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove(SqlMode::ENV_VAR)
        .kill_on_drop(true);
    if let Some(url) = url {
        command.env("DATABASE_URL", url);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("duroxide-postgres {args:?} did not finish"))
        .unwrap_or_else(|e| panic!("cannot run duroxide-postgres: {e}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run(args: &[&str]) -> Run {
    run_with(Some(database_url()), args).await
}

/// Runs the command and requires exit code `code`.
async fn expect(code: i32, args: &[&str]) -> Run {
    let run = run(args).await;
    assert_eq!(run.code, Some(code), "duroxide-postgres {args:?}: {run:#?}");
    run
}

/// A provider that runs no DDL and requires the schema ready for `mode`.
async fn verified_provider(schema: &TestSchema, mode: SqlMode) -> PostgresProvider {
    PostgresProvider::from_pool_with(
        schema.pool.clone(),
        PostgresOptions::default()
            .schema(schema.name.clone())
            .sql_mode(mode)
            .notifications(false)
            .migration_mode(MigrationMode::Verify),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider on {}: {e}", schema.name))
}

/// One orchestration turn, start to ack: the provider serves the schema.
async fn one_turn(provider: &PostgresProvider, instance: &str) {
    provider
        .enqueue_for_orchestrator(start(instance), None)
        .await
        .expect("enqueue");
    let claimed = claim_and_ack_turn(provider, Duration::from_secs(30)).await;
    assert_eq!(claimed, instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_verify_status_and_list() {
    with_schemas("cli_migrate", 3, |schemas| async move {
        let [a, b, never] = &schemas[..] else {
            unreachable!()
        };
        let migrated = expect(0, &["migrate", "--schema", &a.name, "--schema", &b.name]).await;
        assert!(
            migrated
                .stdout
                .contains(&format!("[2/2] {}: current for procedures", b.name)),
            "{migrated:#?}"
        );
        expect(0, &["verify", "--schema", &a.name, "--schema", &b.name]).await;
        let not_ready = expect(5, &["verify", "--schema", &never.name]).await;
        assert!(not_ready.stderr.contains(&never.name), "{not_ready:#?}");

        // An index dropped by hand: verify names it, and recovers once it is back.
        let index = "DROP INDEX {{schema}}.worker_queue_session_idx";
        sqlx::raw_sql(b.statement(index))
            .execute(&b.pool)
            .await
            .expect("drop an index");
        let drifted = expect(5, &["verify", "--schema", &b.name]).await;
        assert!(
            drifted.stderr.contains("worker_queue_session_idx"),
            "{drifted:#?}"
        );
        let status = expect(0, &["status", "--schema", &b.name]).await;
        for line in [
            "ready for           nothing: a table or index is missing\n",
            "tables and indexes  missing or invalid: worker_queue_session_idx ",
        ] {
            assert!(status.stdout.contains(line), "{line:?} in {status:#?}");
        }
        let recreate = "CREATE INDEX worker_queue_session_idx ON {{schema}}.worker_queue (session_id) \
                        WHERE session_id IS NOT NULL";
        sqlx::raw_sql(b.statement(recreate))
            .execute(&b.pool)
            .await
            .expect("recreate the index");
        expect(0, &["verify", "--schema", &b.name]).await;
        let status = expect(0, &["status", "--schema", &b.name]).await;
        let all = format!(
            "tables and indexes  all {} present\n",
            migrate::expected_relations().len()
        );
        assert!(status.stdout.contains(&all), "{all:?} in {status:#?}");

        one_turn(
            &verified_provider(a, SqlMode::StoredProcedures).await,
            "cli-status",
        )
        .await;
        a.provider()
            .await
            .enqueue_for_orchestrator(start("waiting"), None)
            .await
            .expect("enqueue");
        let status = expect(0, &["status", "--schema", &a.name]).await;
        let latest = migrate::latest_version();
        for line in [
            format!("tenant {}", a.name),
            format!("schema version      {latest} (this build: {latest})"),
            "pending migrations  0".to_string(),
            format!(
                "procedures          installed ({})",
                migrate::procedures().len()
            ),
            "ready for           procedures, inline".to_string(),
            "instances           1".to_string(),
            "orchestrator queue  1 message(s), 1 visible, 0 parked orphan(s)".to_string(),
            "live leases         0".to_string(),
            "expired leases      0".to_string(),
        ] {
            assert!(status.stdout.contains(&line), "{line:?} in {status:#?}");
        }
        let unmigrated = expect(0, &["status", "--schema", &never.name]).await;
        assert!(
            unmigrated.stdout.contains("not migrated"),
            "{unmigrated:#?}"
        );

        // Every tenant of the server is listed, other tests' too (some
        // deliberately broken, some being dropped): only ours are checked.
        let list = expect(0, &["tenants", "list"]).await;
        assert!(list.stdout.starts_with("SCHEMA"), "{list:#?}");
        for tenant in [a, b] {
            assert!(
                list.stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("{} ", tenant.name))
                        && l.contains("installed")),
                "{} in {list:#?}",
                tenant.name
            );
        }
        assert!(!list.stdout.contains(&never.name), "{list:#?}");
        let all = {
            let _every = reading_every_tenant().await;
            run(&["status", "--all"]).await
        };
        assert!(
            all.stdout.contains(&format!("tenant {}\n", b.name)),
            "{all:#?}"
        );
        for tenant in [a, b] {
            assert!(!all.stderr.contains(&tenant.name), "{all:#?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_sql_applied_by_hand_gives_a_schema_providers_accept() {
    with_schemas("cli_print", 2, |schemas| async move {
        let [by_hand, tables_only] = &schemas[..] else {
            unreachable!()
        };
        let pool = by_hand.pool.clone();
        let script = expect(0, &["print-sql", "--schema", &by_hand.name]).await;
        assert!(
            script
                .stdout
                .contains(&format!("\"{}\".instances", by_hand.name))
        );
        assert!(!script.stdout.contains("{{"), "every marker substituted");
        sqlx::raw_sql(sqlx::AssertSqlSafe(script.stdout.to_string()))
            .execute(&pool)
            .await
            .expect("the script runs as written");
        expect(0, &["verify", "--schema", &by_hand.name]).await;
        one_turn(
            &verified_provider(by_hand, SqlMode::StoredProcedures).await,
            "by-hand",
        )
        .await;

        let script = expect(
            0,
            &[
                "print-sql",
                "--schema",
                &tables_only.name,
                "--sql-mode",
                "inline",
            ],
        )
        .await;
        assert!(!script.stdout.contains("CREATE OR REPLACE FUNCTION"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(script.stdout.to_string()))
            .execute(&pool)
            .await
            .expect("the tables-only script runs");
        expect(
            0,
            &[
                "verify",
                "--schema",
                &tables_only.name,
                "--sql-mode",
                "inline",
            ],
        )
        .await;
        expect(5, &["verify", "--schema", &tables_only.name]).await;
        one_turn(
            &verified_provider(tables_only, SqlMode::InlineSql).await,
            "tables-only",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_procedures_then_inline_mode_still_works() {
    with_schemas("cli_uninstall", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = schema.pool.clone();
        expect(0, &["migrate", "--schema", &schema.name]).await;
        one_turn(
            &verified_provider(schema, SqlMode::StoredProcedures).await,
            "before",
        )
        .await;

        let uninstalled = expect(0, &["uninstall-procedures", "--schema", &schema.name]).await;
        assert!(
            uninstalled.stdout.contains(&format!(
                "uninstalled {} stored procedure(s)",
                migrate::procedures().len()
            )),
            "{uninstalled:#?}"
        );
        assert_eq!(
            leftovers(&pool, &schema.name).await.0,
            0,
            "no function left"
        );
        let status = expect(0, &["status", "--schema", &schema.name]).await;
        assert!(
            status.stdout.contains("ready for           inline\n"),
            "{status:#?}"
        );
        expect(5, &["verify", "--schema", &schema.name]).await;
        expect(
            0,
            &["verify", "--schema", &schema.name, "--sql-mode", "inline"],
        )
        .await;

        // The tenant runs on in inline SQL, history and all.
        let inline = verified_provider(schema, SqlMode::InlineSql).await;
        one_turn(&inline, "after").await;
        let history = inline.read("before").await.expect("history kept");
        assert_eq!(history.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_drop_refuses_live_leases_unless_forced() {
    with_schemas("cli_drop", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = schema.pool.clone();
        let provider = schema.provider().await;
        provider
            .enqueue_for_orchestrator(start("busy"), None)
            .await
            .expect("enqueue");
        provider
            .fetch_orchestration_item(Duration::from_secs(60), Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("an item");
        let status = expect(0, &["status", "--schema", &schema.name]).await;
        assert!(
            status
                .stdout
                .contains("live leases         1 (1 instance turn(s)"),
            "{status:#?}"
        );

        let refused = expect(7, &["tenants", "drop", "--schema", &schema.name]).await;
        assert!(refused.stderr.contains("live lease"), "{refused:#?}");
        assert!(schema_exists(&pool, &schema.name).await);

        let forced = expect(0, &["tenants", "drop", "--schema", &schema.name, "--force"]).await;
        assert!(forced.stdout.contains("dropped tenant"), "{forced:#?}");
        assert!(
            forced.stderr.contains("forced over 1 live lease"),
            "{forced:#?}"
        );
        drop(provider);
        assert!(!schema_exists(&pool, &schema.name).await);
        assert_eq!(leftovers(&pool, &schema.name).await, (0, 0));
        let again = expect(8, &["tenants", "drop", "--schema", &schema.name]).await;
        assert!(
            again.stderr.contains("no duroxide-postgres tenant"),
            "{again:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_input_gives_a_clear_message_and_its_own_exit_code() {
    let injection = "a\"; drop schema public cascade; --";
    for args in [
        vec!["status", "--schema", injection],
        vec!["migrate", "--schema", "ok_name", "--schema", "9lives"],
        vec!["tenants", "drop", "--schema", "pg_toast"],
        vec!["uninstall-procedures", "--schema", "has space"],
        vec!["print-sql", "--schema", ""],
    ] {
        let run = expect(3, &args).await;
        assert!(
            run.stderr
                .starts_with("duroxide-postgres: error: invalid schema name"),
            "{args:?}: {run:#?}"
        );
    }

    // PUBLIC (every role) or a predefined role is not a runtime role.
    for role in ["public", "pg_monitor"] {
        let refused = expect(3, &["grant", "--schema", "ok_name", "--role", role]).await;
        assert!(
            refused.stderr.contains(&format!("role \"{role}\"")),
            "{role}: {refused:#?}"
        );
    }

    let no_url = run_with(None, &["tenants", "list"]).await;
    assert_eq!(no_url.code, Some(2), "{no_url:#?}");
    assert!(no_url.stderr.contains("DATABASE_URL"), "{no_url:#?}");
    let unreachable = run_with(
        Some("postgres://nobody@127.0.0.1:1/none"),
        &["tenants", "list"],
    )
    .await;
    assert_eq!(unreachable.code, Some(4), "{unreachable:#?}");
    assert!(
        unreachable.stderr.contains("cannot connect"),
        "{unreachable:#?}"
    );
    let usage = run(&["migrate"]).await;
    assert_eq!(usage.code, Some(2), "no --schema nor --all: {usage:#?}");
    let mode = run(&["migrate", "--all", "--sql-mode", "inlined"]).await;
    assert_eq!(mode.code, Some(2), "{mode:#?}");
    let help = expect(0, &["--help"]).await;
    assert!(help.stdout.contains("Exit codes:"), "{help:#?}");
}

/// A session that holds a snapshot (a transaction left open) keeps every
/// tenant's delivered messages from being cleaned up: the library and
/// `status` name it, with its role, application, state and age, and report
/// nothing once it ends. In a database of its own, so no other test's
/// session is older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_session_that_holds_back_cleanup() {
    use futures::FutureExt;
    use sqlx::Connection;

    let scratch =
        crate::support::ScratchDatabase::create(&format!("dx_horizon_{}", std::process::id()), 2)
            .await;
    let pool = scratch.pool.clone();
    let url = url_with_database(database_url(), &scratch.name);
    let outcome = std::panic::AssertUnwindSafe(async move {
        assert_eq!(
            duroxide_postgres::tenants::cleanup_horizon(&pool)
                .await
                .expect("horizon"),
            None,
            "nothing holds a snapshot yet"
        );
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let mut holder =
            sqlx::PgConnection::connect_with(&options.application_name("forgotten-report"))
                .await
                .expect("holder");
        let (pid, role): (i32, String) =
            sqlx::query_as("SELECT pg_backend_pid(), current_user::text")
                .fetch_one(&mut holder)
                .await
                .expect("pid");
        sqlx::raw_sql(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_catalog.pg_class",
        )
        .execute(&mut holder)
        .await
        .expect("snapshot");
        for _ in 0..3 {
            sqlx::query("SELECT pg_catalog.txid_current()")
                .execute(&pool)
                .await
                .expect("a transaction after the snapshot");
        }
        let held = duroxide_postgres::tenants::cleanup_horizon(&pool)
            .await
            .expect("horizon")
            .expect("the open transaction holds the horizon");
        assert_eq!(held.kind, duroxide_postgres::tenants::HolderKind::Session);
        assert_eq!(held.holder, pid.to_string());
        assert_eq!(held.application.as_deref(), Some("forgotten-report"));
        assert_eq!(held.state.as_deref(), Some("idle in transaction"));
        assert!(held.transactions_behind >= 3, "{held:?}");
        assert!(held.held_for.is_some(), "{held:?}");

        let status = run_with(Some(&url), &["status", "--all"]).await;
        assert_eq!(status.code, Some(0), "{status:#?}");
        let line = format!(
            "cleanup held back by  session {pid} (role {role}, application forgotten-report, \
             idle in transaction) for "
        );
        assert!(status.stdout.contains(&line), "{line:?} in {status:#?}");

        sqlx::raw_sql("ROLLBACK")
            .execute(&mut holder)
            .await
            .expect("end the transaction");
        let status = run_with(Some(&url), &["status", "--all"]).await;
        assert!(
            status.stdout.contains("cleanup held back by  nothing"),
            "{status:#?}"
        );
        holder.close().await.expect("close");
    })
    .catch_unwind()
    .await;
    scratch.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `unreadable` lists, per tenant, the queued items this build cannot
/// decode, and exits 9 when it found any (0 when none; 8 for a schema that
/// holds no tenant), so a script can alert on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_lists_what_does_not_decode_and_exits_nine() {
    with_schemas("cli_unread", 2, |schemas| async move {
        let (clean, spoiled) = (&schemas[0], &schemas[1]);
        for schema in [clean, spoiled] {
            let provider = schema.provider().await;
            provider
                .enqueue_for_orchestrator(start("i1"), None)
                .await
                .expect("enqueue");
        }
        let none = expect(0, &["unreadable", "--schema", &clean.name]).await;
        assert!(
            none.stdout
                .contains(&format!("tenant {}: none", clean.name)),
            "{none:#?}"
        );

        let id: i64 = sqlx::query_scalar(spoiled.statement(
            "UPDATE {{schema}}.orchestrator_queue SET work_item = '{\"FromTheFuture\":{}}' \
             RETURNING id",
        ))
        .fetch_one(&spoiled.pool)
        .await
        .expect("spoil the message");
        let found = expect(
            9,
            &[
                "unreadable",
                "--schema",
                &clean.name,
                "--schema",
                &spoiled.name,
            ],
        )
        .await;
        assert!(
            found
                .stdout
                .contains(&format!("tenant {}: 1 unreadable item", spoiled.name)),
            "{found:#?}"
        );
        let line = found
            .stdout
            .lines()
            .find(|line| line.trim_start().starts_with("orchestrator"))
            .unwrap_or_else(|| panic!("no item line: {found:#?}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            ["orchestrator", &id.to_string(), "i1", "0"],
            "{line}"
        );
        assert!(line.contains("unknown variant `FromTheFuture`"), "{line}");

        let not_a_tenant = expect(8, &["unreadable", "--schema", "no_such_tenant_here"]).await;
        assert!(
            not_a_tenant
                .stderr
                .contains("holds no duroxide-postgres tenant"),
            "{not_a_tenant:#?}"
        );
    })
    .await;
}

/// A schema holding another provider's `_duroxide_migrations`: `migrate`
/// and `status` refuse it with exit code 6 and leave it as it is.
#[tokio::test]
async fn another_providers_schema_exits_six() {
    crate::support::with_schema("cli_other", |schema| async move {
        schema
            .run_all(&super::another_provider::OTHER_PROVIDER)
            .await;
        for command in ["migrate", "status", "verify"] {
            let run = expect(6, &[command, "--schema", &schema.name]).await;
            assert!(run.stderr.contains("did not create"), "{command}: {run:#?}");
        }
        let migrations: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}._duroxide_migrations"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("their migrations");
        assert_eq!(migrations, 21);
    })
    .await;
}
