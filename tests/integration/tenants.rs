//! Tenant lifecycle: listing tenants with their state, migrating and
//! verifying many at once, dropping one (refused while a lease is live,
//! forced otherwise, leaving nothing behind). The operator command is tested
//! end to end in `tenants/cli.rs`.

mod another_provider;
#[cfg(feature = "cli")]
mod cli;
mod locked;
mod outside;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, TagFilter};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::migrate;
use duroxide_postgres::tenants::{self, TenantOutcome};
use duroxide_postgres::{PostgresProviderError, SchemaName, SqlMode, sqlstate};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::fixtures::{activity, start};
use crate::support::{
    Kind, Slot, TestSchema, connect_options, in_both_modes, reading_every_tenant, with_schemas,
};

/// Long enough that no lease taken in a test runs out during it.
const LEASE: Duration = Duration::from_secs(60);

fn name(schema: &TestSchema) -> SchemaName {
    SchemaName::new(&schema.name).unwrap_or_else(|e| panic!("{}: {e}", schema.name))
}

/// Functions and tables left in a schema (by name: the schema may be gone).
pub async fn leftovers(pool: &PgPool, schema: &str) -> (i64, i64) {
    let functions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .expect("count functions");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = $1")
        .bind(schema)
        .fetch_one(pool)
        .await
        .expect("count tables");
    (functions, tables)
}

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .expect("query namespace")
}

fn rejection(err: &PostgresProviderError) -> Option<String> {
    err.sqlstate()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_status_show_each_tenant_with_its_version_readiness_and_queues() {
    with_schemas("ten_list", 3, |schemas| async move {
        let [procs, inline, never] = &schemas[..] else {
            unreachable!()
        };
        let pool = &procs.pool;
        let p = procs.provider_in(SqlMode::StoredProcedures).await;
        inline.provider_in(SqlMode::InlineSql).await;
        p.enqueue_for_orchestrator(start("listed"), None)
            .await
            .expect("enqueue");

        let listed = tenants::list(pool).await.expect("list");
        assert!(listed.contains(&name(procs)), "{listed:?}");
        assert!(listed.contains(&name(inline)), "{listed:?}");
        assert!(
            !listed.contains(&name(never)),
            "never migrated: not a tenant"
        );

        let latest = migrate::latest_version();
        let all = migrate::procedures().len();
        let status = tenants::status(pool, &name(procs)).await.expect("status");
        assert_eq!(status.status.applied_version, Some(latest));
        assert_eq!(status.status.pending_migrations, 0);
        assert_eq!(status.status.stale_procedures, 0);
        assert!(status.status.is_ready_for(SqlMode::StoredProcedures));
        let queues = status.queues.expect("a migrated schema has queues");
        assert_eq!(queues.orchestrator_messages, 1);
        assert_eq!(queues.orchestrator_visible, 1);
        assert!(queues.orchestrator_oldest_visible.is_some());
        assert_eq!(queues.worker_items, 0);
        assert_eq!(queues.worker_oldest_visible, None);
        assert_eq!((queues.live_leases(), queues.expired_leases()), (0, 0));

        let status = tenants::status(pool, &name(inline)).await.expect("status");
        assert_eq!(status.status.applied_version, Some(latest));
        assert_eq!(status.status.stale_procedures, all, "inline installs none");
        assert!(status.status.is_ready_for(SqlMode::InlineSql));
        assert!(!status.status.is_ready_for(SqlMode::StoredProcedures));
        assert_eq!(status.queues.map(|q| q.orchestrator_messages), Some(0));

        let status = tenants::status(pool, &name(never)).await.expect("status");
        assert_eq!(status.status.applied_version, None);
        assert_eq!(status.queues, None);

        let everything = {
            let _every = reading_every_tenant().await;
            tenants::status_all(pool).await.expect("status of all")
        };
        let mine: Vec<&TenantOutcome<_>> = everything
            .iter()
            .filter(|o| o.schema == name(procs) || o.schema == name(inline))
            .collect();
        assert_eq!(mine.len(), 2);
        assert!(mine.iter().all(|o| o.result.is_ok()), "{mine:?}");
    })
    .await;
}

/// `tenant` with the ages of its oldest visible messages reduced to whether
/// there is one: they grow between two reads.
fn without_ages(tenant: &tenants::TenantStatus) -> tenants::TenantStatus {
    let mut tenant = tenant.clone();
    if let Some(q) = tenant.queues.as_mut() {
        q.orchestrator_oldest_visible = q.orchestrator_oldest_visible.map(|_| Duration::ZERO);
        q.worker_oldest_visible = q.worker_oldest_visible.map(|_| Duration::ZERO);
    }
    tenant
}

/// The error `outcomes` report for `schema`.
fn error_of<'a, T>(
    outcomes: &'a [TenantOutcome<T>],
    schema: &TestSchema,
) -> Option<&'a PostgresProviderError> {
    outcomes
        .iter()
        .find(|o| o.schema == name(schema))
        .and_then(|o| o.result.as_ref().err())
}

/// `status_all` and `inspect_all` read tenants in batches; what they report
/// of each tenant is what `status` reports of it alone: queues, stale
/// procedures, a refusal for a schema a newer build migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_all_tenants_at_once_matches_each_tenant_alone() {
    with_schemas("ten_batch", 4, |schemas| async move {
        let [procs, inline, stale, too_new] = &schemas[..] else {
            unreachable!()
        };
        let pool = &procs.pool;
        let p = procs.provider_in(SqlMode::StoredProcedures).await;
        inline.provider_in(SqlMode::InlineSql).await;
        stale.provider_in(SqlMode::StoredProcedures).await;
        too_new.provider_in(SqlMode::InlineSql).await;
        p.enqueue_for_orchestrator(start("batched"), None)
            .await
            .expect("enqueue");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP FUNCTION \"{}\".{}",
            stale.name,
            stale.procedure("get_queue_depths")
        )))
        .execute(pool)
        .await
        .expect("drop one procedure");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{}\"._duroxide_migrations (version, name, checksum, execution_ms) \
             VALUES (999999, 'from_the_future', '\\x00', 0)",
            too_new.name
        )))
        .execute(pool)
        .await
        .expect("record a future migration");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX \"{}\".instances_created_idx",
            inline.name
        )))
        .execute(pool)
        .await
        .expect("drop one index");

        let _every = reading_every_tenant().await;
        let everything = tenants::status_all(pool).await.expect("status of all");
        let inspected = tenants::inspect_all(pool).await.expect("inspect all");
        for schema in [procs, inline, stale] {
            let alone = tenants::status(pool, &name(schema)).await.expect("status");
            let lacking: &[&str] = if schema.name == inline.name {
                &["instances_created_idx"]
            } else {
                &[]
            };
            assert_eq!(alone.missing_relations, lacking, "{}", schema.name);
            let batched = everything
                .iter()
                .find(|o| o.schema == name(schema))
                .expect("listed");
            assert_eq!(
                batched.result.as_ref().ok().map(without_ages),
                Some(without_ages(&alone)),
                "{}",
                schema.name
            );
            let batched = inspected
                .iter()
                .find(|o| o.schema == name(schema))
                .expect("listed");
            assert_eq!(
                batched.result.as_ref().ok(),
                Some(&alone.status),
                "{}",
                schema.name
            );
        }
        let stale_status = tenants::status(pool, &name(stale)).await.expect("status");
        assert_eq!(stale_status.status.stale_procedures, 1);
        let queues = everything
            .iter()
            .find(|o| o.schema == name(procs))
            .and_then(|o| o.result.as_ref().ok())
            .and_then(|t| t.queues);
        assert_eq!(queues.map(|q| q.orchestrator_messages), Some(1));
        for refusal in [
            error_of(&everything, too_new),
            error_of(&inspected, too_new),
        ] {
            assert!(
                matches!(
                    refusal,
                    Some(PostgresProviderError::SchemaTooNew { found: 999_999, .. })
                ),
                "{refusal:?}"
            );
        }
    })
    .await;
}

in_both_modes!(migrate_and_verify_many: migrate_many_in_procedure_mode, migrate_many_in_inline_mode);

async fn migrate_and_verify_many(mode: SqlMode) {
    with_schemas("ten_many", 4, |schemas| async move {
        let pool = schemas[0].pool.clone();
        // One schema this build must refuse: the others still migrate.
        let newer = &schemas[3];
        newer.provider_in(mode).await;
        sqlx::query(newer.statement(
            "INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms) \
             VALUES (999999, '999999_future', '\\x00', 0)",
        ))
        .execute(&pool)
        .await
        .expect("record a future migration");
        let names: Vec<SchemaName> = schemas.iter().map(name).collect();

        let mut seen = Vec::new();
        let outcomes = tenants::migrate_many(&pool, &names, mode, |p| {
            seen.push((
                p.done,
                p.total,
                p.outcome.schema.clone(),
                p.outcome.result.is_ok(),
            ));
        })
        .await;
        assert_eq!(outcomes.len(), 4);
        // Progress counts up as schemas finish, in whatever order they
        // finish (several run at once); outcomes keep the input's order.
        assert_eq!(
            seen.iter()
                .map(|(done, total, ..)| (*done, *total))
                .collect::<Vec<_>>(),
            (1..=4).map(|d| (d, 4)).collect::<Vec<_>>()
        );
        let mut finished: Vec<_> = seen.into_iter().map(|(_, _, n, ok)| (n, ok)).collect();
        finished.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut expected: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i < 3))
            .collect();
        expected.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(finished, expected);
        assert_eq!(
            outcomes
                .iter()
                .map(|o| o.schema.clone())
                .collect::<Vec<_>>(),
            names
        );
        assert!(
            matches!(
                outcomes[3].result,
                Err(PostgresProviderError::SchemaTooNew { .. })
            ),
            "{:?}",
            outcomes[3].result
        );

        let mut done = 0;
        let verified = tenants::verify_many(&pool, &names[..3], mode, |p| done = p.done).await;
        assert_eq!(done, 3);
        for outcome in &verified {
            let status = outcome.result.as_ref().expect("migrated schemas verify");
            assert!(status.is_ready_for(mode), "{status:?}");
            assert_eq!(status.applied_version, Some(migrate::latest_version()));
            let procedures_expected = mode == SqlMode::StoredProcedures;
            assert_eq!(
                status.stale_procedures == 0,
                procedures_expected,
                "{status:?}"
            );
        }
        let unmigrated =
            SchemaName::new(&crate::support::fresh_schema_name("ten_none")).expect("valid name");
        let refused = tenants::verify_many(&pool, &[unmigrated], mode, |_| {}).await;
        assert!(
            matches!(
                refused[0].result,
                Err(PostgresProviderError::SchemaNotReady { .. })
            ),
            "{:?}",
            refused[0].result
        );
    })
    .await;
}

in_both_modes!(drop_with_an_instance_lease: drop_refused_on_a_live_turn_in_procedure_mode, drop_refused_on_a_live_turn_in_inline_mode);

async fn drop_with_an_instance_lease(mode: SqlMode) {
    with_schemas("ten_drop", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = schema.pool.clone();
        let p = schema.provider_in(mode).await;
        p.enqueue_for_orchestrator(start("leased"), None)
            .await
            .expect("enqueue");
        let (_, _token, _) = p
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("an item");

        let err = tenants::drop_tenant(&pool, &name(schema), false)
            .await
            .expect_err("a live lease refuses the drop");
        assert_eq!(
            rejection(&err).as_deref(),
            Some(sqlstate::INVALID_STATE),
            "{err}"
        );
        assert!(err.to_string().contains("live lease"), "{err}");
        assert!(schema_exists(&pool, &schema.name).await, "nothing dropped");
        assert!(
            tenants::list(&pool)
                .await
                .expect("list")
                .contains(&name(schema))
        );

        let dropped = tenants::drop_tenant(&pool, &name(schema), true)
            .await
            .expect("forced drop");
        let queues = dropped.queues.expect("a migrated schema has queues");
        assert_eq!(queues.live_instance_leases, 1);
        assert_eq!(queues.orchestrator_messages, 1);
        assert!(!schema_exists(&pool, &schema.name).await);
        assert_eq!(leftovers(&pool, &schema.name).await, (0, 0));
        assert!(
            !tenants::list(&pool)
                .await
                .expect("list")
                .contains(&name(schema))
        );
        // The caller's provider is now useless, and says so.
        assert!(
            p.enqueue_for_orchestrator(start("late"), None)
                .await
                .is_err()
        );
    })
    .await;
}

in_both_modes!(drop_after_an_activity_lease: drop_waits_for_an_activity_lease_in_procedure_mode, drop_waits_for_an_activity_lease_in_inline_mode);

async fn drop_after_an_activity_lease(mode: SqlMode) {
    with_schemas("ten_drop_act", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = schema.pool.clone();
        let p = schema.provider_in(mode).await;
        p.enqueue_for_worker(activity("busy", 1))
            .await
            .expect("enqueue");
        let (_, token, _) = p
            .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::default())
            .await
            .expect("fetch")
            .expect("an activity");
        let status = tenants::status(&pool, &name(schema)).await.expect("status");
        assert_eq!(status.queues.map(|q| q.live_activity_leases), Some(1));

        let err = tenants::drop_tenant(&pool, &name(schema), false)
            .await
            .expect_err("a leased activity refuses the drop");
        assert_eq!(
            rejection(&err).as_deref(),
            Some(sqlstate::INVALID_STATE),
            "{err}"
        );

        // Once the work is handed back, no force is needed.
        p.abandon_work_item(&token, None, false)
            .await
            .expect("abandon");
        let dropped = tenants::drop_tenant(&pool, &name(schema), false)
            .await
            .expect("drop without leases");
        assert_eq!(dropped.queues.map(|q| q.worker_items), Some(1));
        assert_eq!(leftovers(&pool, &schema.name).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn drop_refuses_what_is_not_a_tenant_or_not_only_ours() {
    with_schemas("ten_foreign", 2, |schemas| async move {
        let [mixed, plain] = &schemas[..] else {
            unreachable!()
        };
        let pool = mixed.pool.clone();
        mixed.provider().await;
        sqlx::query(mixed.statement("CREATE TABLE {{schema}}.users (id int)"))
            .execute(&pool)
            .await
            .expect("a user's table");
        let err = tenants::drop_tenant(&pool, &name(mixed), true)
            .await
            .expect_err("a user's table is never dropped with a tenant");
        assert_eq!(
            rejection(&err).as_deref(),
            Some(sqlstate::INVALID_STATE),
            "{err}"
        );
        assert!(err.to_string().contains("table users"), "{err}");
        assert!(schema_exists(&pool, &mixed.name).await);

        sqlx::query(plain.statement("CREATE SCHEMA {{schema}}"))
            .execute(&pool)
            .await
            .expect("a plain schema");
        let err = tenants::drop_tenant(&pool, &name(plain), true)
            .await
            .expect_err("not a tenant");
        assert_eq!(
            rejection(&err).as_deref(),
            Some(sqlstate::NOT_FOUND),
            "{err}"
        );
        assert!(schema_exists(&pool, &plain.name).await);
    })
    .await;
}

in_both_modes!(uninstall_then_inline: uninstall_procedures_under_a_procedure_provider, uninstall_procedures_under_an_inline_provider);

/// The rollback: procedures gone, records cleared; a provider already
/// running in `mode` fails if it needed them and keeps serving if not, and
/// inline SQL serves the schema.
async fn uninstall_then_inline(mode: SqlMode) {
    with_schemas("ten_uninstall", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = schema.pool.clone();
        schema.provider_in(SqlMode::StoredProcedures).await;
        let running = schema.provider_in(mode).await;
        let dropped = tenants::uninstall_procedures(&pool, &name(schema))
            .await
            .expect("uninstall");
        assert_eq!(dropped, migrate::procedures().len());
        assert_eq!(
            leftovers(&pool, &schema.name).await.0,
            0,
            "no function left"
        );
        let recorded: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}._duroxide_procedures"),
        )
        .fetch_one(&pool)
        .await
        .expect("count records");
        assert_eq!(recorded, 0);
        let status = tenants::status(&pool, &name(schema)).await.expect("status");
        assert!(status.status.is_ready_for(SqlMode::InlineSql));
        assert!(!status.status.is_ready_for(SqlMode::StoredProcedures));

        let still_running = running
            .enqueue_for_orchestrator(start("running"), None)
            .await;
        assert_eq!(
            still_running.is_ok(),
            mode == SqlMode::InlineSql,
            "{still_running:?}"
        );

        let inline = schema.provider_in(SqlMode::InlineSql).await;
        inline
            .enqueue_for_orchestrator(start("after-rollback"), None)
            .await
            .expect("enqueue inline");
        let fetched = inline
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch inline");
        assert!(fetched.is_some());
        assert_eq!(
            leftovers(&pool, &schema.name).await.0,
            0,
            "inline installs none"
        );
    })
    .await;
}

in_both_modes!(forced_drop_of_a_busy_tenant: a_busy_tenant_is_dropped_beside_another_in_procedure_mode, a_busy_tenant_is_dropped_beside_another_in_inline_mode);

/// Two tenants on one pool, each with a runtime at work: forcing the drop
/// of one while its activities are leased completes promptly, and the other
/// finishes all its orchestrations.
async fn forced_drop_of_a_busy_tenant(mode: SqlMode) {
    with_schemas("ten_busy", 2, |schemas| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let [doomed, survivor] = &schemas[..] else {
            unreachable!()
        };
        let pool = doomed.pool.clone();
        let mut runtimes = Vec::new();
        let mut clients = Vec::new();
        for schema in [doomed, survivor] {
            let provider = Arc::new(schema.provider_in(mode).await);
            let activities = ActivityRegistry::builder()
                .register("Nap", |_ctx: ActivityContext, input: String| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(input)
                })
                .build();
            let orchestrations = OrchestrationRegistry::builder()
                .register(
                    "Naps",
                    |ctx: OrchestrationContext, _input: String| async move {
                        let naps = (0..4).map(|i| ctx.schedule_activity("Nap", i.to_string()));
                        ctx.join(naps.collect()).await;
                        Ok("rested".to_string())
                    },
                )
                .build();
            let options = RuntimeOptions {
                dispatcher_min_poll_interval: Duration::from_millis(10),
                ..Default::default()
            };
            runtimes.push(
                Runtime::start_with_options(provider.clone(), activities, orchestrations, options)
                    .await,
            );
            let client = Client::new(provider);
            for i in 0..5 {
                client
                    .start_orchestration(format!("naps-{i}"), "Naps", "")
                    .await
                    .expect("start");
            }
            clients.push(client);
        }

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = tenants::status(&pool, &name(doomed)).await.expect("status");
            if status.queues.is_some_and(|q| q.live_activity_leases > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "no activity was ever leased");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dropped = tokio::time::timeout(
            Duration::from_secs(30),
            tenants::drop_tenant(&pool, &name(doomed), true),
        )
        .await
        .expect("the drop does not hang")
        .expect("forced drop");
        // Whether a lease is still live at the drop's own moment depends on
        // scheduling (a loaded CI run caught all 16 activities between
        // leases); a live one was seen above, while the runtime runs.
        let _ = dropped;
        assert!(!schema_exists(&pool, &doomed.name).await);
        assert_eq!(leftovers(&pool, &doomed.name).await, (0, 0));

        for i in 0..5 {
            match clients[1]
                .wait_for_orchestration(&format!("naps-{i}"), Duration::from_secs(60))
                .await
                .expect("wait")
            {
                OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "rested"),
                other => panic!("naps-{i}: {other:?}"),
            }
        }
        for runtime in runtimes {
            tokio::time::timeout(Duration::from_secs(30), runtime.shutdown(None))
                .await
                .expect("runtimes shut down");
        }
    })
    .await;
}

/// A drop or migration of one tenant can lock its tables in another order
/// than `status_all` reads them (the orchestrator queue, then the worker
/// queue) and deadlock with the batched read. `status_all` then reads that
/// batch one tenant at a time and reports every tenant, rather than fail
/// as a whole (it did: a CI run's `status_all` failed with 40P01 beside
/// another test's DDL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_all_reads_on_past_a_deadlock_with_ddl_on_one_tenant() {
    with_schemas("ten_deadlock", 1, |schemas| async move {
        let schema = &schemas[0];
        let pool = &schema.pool;
        schema.provider_in(SqlMode::InlineSql).await;
        let table = |t: &str| format!("\"{}\".{t}", schema.name);
        let lock = |t: &str| format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", table(t));

        // The DDL's transaction takes the worker queue first. Of the two,
        // the server aborts the first whose deadlock check (once, its
        // deadlock_timeout after it began to wait) finds the cycle. The
        // read waits first; its connections check after 1 s and the DDL's
        // after a minute, so the read is the one aborted however long the
        // DDL takes to join (with the server's 1 s for both, a DDL that
        // joined over a second late on a loaded machine was aborted
        // instead, twice). A DDL that joins later than that is past the
        // read's one check, and the read's lock bound (2 s) aborts it
        // instead: the read goes on one tenant at a time either way.
        // Before the DDL takes its first lock: another test's read of every
        // tenant holding the guard would wait for that lock as long as it
        // lasts, and this test for the guard.
        let _every = reading_every_tenant().await;
        let mut ddl = pool.begin().await.expect("begin");
        // An operator's session, which waits for its locks as long as
        // they last (the test pool's connections give up after a second).
        sqlx::query("SET LOCAL lock_timeout = 0")
            .execute(&mut *ddl)
            .await
            .expect("the DDL's lock_timeout");
        sqlx::query("SET LOCAL deadlock_timeout = '60s'")
            .execute(&mut *ddl)
            .await
            .expect("the DDL's deadlock_timeout");
        sqlx::query(sqlx::AssertSqlSafe(lock("worker_queue").to_string()))
            .execute(&mut *ddl)
            .await
            .expect("lock the worker queue");
        let reader = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(connect_options().options([("deadlock_timeout", "1s")]))
            .await
            .expect("the read's pool");
        let status = tokio::spawn({
            let reader = reader.clone();
            async move { tenants::status_all(&reader).await }
        });
        // The read holds the orchestrator queue once it waits for the
        // worker queue.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks \
                 WHERE NOT granted AND relation = $1::regclass)",
            )
            .bind(table("worker_queue"))
            .fetch_one(&mut *ddl)
            .await
            .expect("read pg_locks");
            if waiting {
                break;
            }
            assert!(Instant::now() < deadline, "the read never waited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The DDL now asks for the orchestrator queue: a deadlock, which the
        // server breaks by failing the read (it waited first).
        sqlx::query(sqlx::AssertSqlSafe(lock("orchestrator_queue").to_string()))
            .execute(&mut *ddl)
            .await
            .expect("lock the orchestrator queue");
        ddl.commit().await.expect("commit");

        let everything = status
            .await
            .expect("status task")
            .expect("status of all past the deadlock");
        let ours = everything
            .iter()
            .find(|o| o.schema == name(schema))
            .expect("listed");
        let status = ours.result.as_ref().expect("our tenant's status");
        assert!(status.queues.is_some(), "{status:?}");
        reader.close().await;
    })
    .await;
}
