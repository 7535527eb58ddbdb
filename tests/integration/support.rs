//! Shared test plumbing: one PostgreSQL server per test process, one fresh
//! schema per test, dropped afterwards even when the test panics.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use duroxide::provider_validation::ProviderFactory;
use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode, ThrowawayPostgres};
use futures::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

mod slots;

pub use slots::{Kind, Slot};

/// Installs the test binary's log subscriber, once: warnings (or what
/// `RUST_LOG` asks for) go to the running test's captured output, shown when
/// it fails or with `--nocapture`. Without it, the first duroxide runtime a
/// test starts installs its own on stdout, and every later test's warnings
/// (sqlx's slow-statement lines, which quote whole migration scripts) land
/// in a passing run's log, past the capture, burying the harness's notes.
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// `DATABASE_URL`, or the URL of a throwaway server started on first use.
/// Every test that reaches the server comes here first, before any runtime
/// starts, so it also installs the binary's log subscriber
/// ([`capture_logs`]).
pub fn database_url() -> &'static str {
    capture_logs();
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => match ThrowawayPostgres::start() {
            Ok(server) => server.url().to_string(),
            Err(e) => panic!("DATABASE_URL is unset and no throwaway server could start: {e}"),
        },
    })
}

/// `url` with its database replaced by `database`, whatever else it carries
/// (a query string such as the throwaway server's `?host=DIR`), or added
/// when it names none.
pub fn url_with_database(url: &str, database: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let path = url[start..].find('/').map_or(url.len(), |i| start + i);
    let end = url[path..].find('?').map_or(url.len(), |i| path + i);
    format!("{}/{database}{}", &url[..path], &url[end..])
}

/// Runs `pg_ctl ACTION` on the throwaway cluster in `dir` as its owner (the
/// `postgres` user when the tests run as root: the server refuses root);
/// `restart` reuses the options of the previous start.
pub async fn pg_ctl(dir: &str, action: &[&str]) {
    let script = r#"dir="$1"; shift
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
cmd=("$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@")
if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "${cmd[@]}"; else "${cmd[@]}"; fi"#;
    let output = tokio::process::Command::new("bash")
        .args(["-c", script, "pg_ctl", dir])
        .args(action)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
    assert!(
        output.status.success(),
        "pg_ctl {action:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The connection settings of the provider's own pool, on the test server.
pub fn connect_options() -> PgConnectOptions {
    PostgresOptions::default()
        .connect_options(database_url())
        .unwrap_or_else(|e| panic!("{}: {e}", database_url()))
}

/// A new pool on the test server (pools are per test: each test has its own
/// runtime), with the connection settings of the provider's own pool.
pub async fn pool(max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect_options())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", database_url()))
}

/// A provider in `mode` on `schema` over `pool` (migrating the schema on
/// first use), with `LISTEN`/`NOTIFY` long polling on or off.
pub async fn provider_on(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    notifications: bool,
) -> PostgresProvider {
    let options = PostgresOptions::default().notifications(notifications);
    provider_with_options(pool, schema, mode, options).await
}

/// One fetch of each queue, each finding nothing: sets the queues' scan
/// floors, and caches the fetch statements' plans on the connection that
/// ran them.
pub async fn fetch_both_queues_empty(provider: &PostgresProvider) {
    let lease = Duration::from_secs(30);
    let turn = provider
        .fetch_orchestration_item(lease, Duration::ZERO, None)
        .await
        .expect("fetch");
    assert!(turn.is_none(), "nothing is queued");
    let activity = provider
        .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::Any)
        .await
        .expect("fetch work");
    assert!(activity.is_none(), "nothing is queued");
}

/// A provider in `mode` on `schema` over a shared `pool`, without long
/// polling, with `k` connections per tenant (tenant affinity; 0: none).
pub async fn affine_provider(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    k: u32,
) -> PostgresProvider {
    let options = PostgresOptions::default()
        .notifications(false)
        .connections_per_tenant(k);
    provider_with_options(pool, schema, mode, options).await
}

/// A long-polling provider in `mode` on `schema` over `pool`, with `settle`
/// as its `completion_settle`.
pub async fn settling_provider(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    settle: Duration,
) -> PostgresProvider {
    let options = PostgresOptions::default().completion_settle(settle);
    provider_with_options(pool, schema, mode, options).await
}

/// A provider in `mode` on `schema` over `pool`, with `options` otherwise.
pub async fn provider_with_options(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    options: PostgresOptions,
) -> PostgresProvider {
    PostgresProvider::from_pool_with(pool.clone(), options.schema(schema).sql_mode(mode))
        .await
        .unwrap_or_else(|e| panic!("{mode} provider on {schema}: {e}"))
}

/// A schema name no other test (in this or a concurrent process) uses.
pub fn fresh_schema_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = format!("t{}_{}_{nanos:x}_{prefix}", std::process::id(), n);
    name.truncate(63);
    name
}

/// Drops `schema` and everything in it; a test's last act.
pub async fn drop_schema(pool: &PgPool, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    for _ in 0..3 {
        match sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(pool)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                eprintln!("drop schema {schema} failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A fresh schema on its own pool.
#[derive(Clone)]
pub struct TestSchema {
    /// The pool every provider of this test shares.
    pub pool: PgPool,
    /// The schema's (unquoted) name.
    pub name: String,
}

impl TestSchema {
    /// A stored-procedure provider on this schema (migrating it on first use).
    pub async fn provider(&self) -> PostgresProvider {
        self.provider_in(SqlMode::StoredProcedures).await
    }

    /// A provider in `mode` on this schema (migrating it on first use; inline
    /// mode creates the tables only, so no procedure exists to fall back on).
    pub async fn provider_in(&self, mode: SqlMode) -> PostgresProvider {
        self.provider_with(mode, true).await
    }

    /// A provider in `mode`, with `LISTEN`/`NOTIFY` long polling on or off.
    pub async fn provider_with(&self, mode: SqlMode, notifications: bool) -> PostgresProvider {
        provider_on(&self.pool, &self.name, mode, notifications).await
    }

    /// The schema as the library names it.
    pub fn schema_name(&self) -> duroxide_postgres::SchemaName {
        duroxide_postgres::SchemaName::new(&self.name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The name stored procedure `procedure` has in this schema (unquoted).
    pub fn procedure(&self, procedure: &str) -> String {
        self.schema_name().procedure_name(procedure)
    }

    /// `{{schema}}` in `template` replaced by the quoted schema, and
    /// `{{suffix}}` by its procedure suffix.
    pub fn sql(&self, template: &str) -> String {
        template
            .replace("{{schema}}", &format!("\"{}\"", self.name))
            .replace("{{suffix}}", self.schema_name().procedure_suffix())
            .replace(
                "{{now_ms}}",
                "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            )
    }

    /// [`TestSchema::sql`] of `template`, as sqlx's query functions take
    /// text that is not a literal: the tests' own SQL, with the schema's
    /// quoted name as its only dynamic part.
    pub fn statement(&self, template: &str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(self.sql(template))
    }

    /// Runs each of `templates` ([`TestSchema::statement`]) on the
    /// schema's pool, in order; panics naming the one that fails.
    pub async fn run_all(&self, templates: &[&str]) {
        for template in templates {
            sqlx::query(self.statement(template))
                .execute(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("{template}: {e}"));
        }
    }
}

/// A connection of its own holding a `mode` lock (`ACCESS SHARE`, `ACCESS
/// EXCLUSIVE`, ...) on `table` of `schema` in an open transaction, until
/// [`release_table`]. Taking it waits up to 30 s, not the second the test
/// connections allow: another test's read of every tenant on the database
/// (`tenants::status_all`) may hold the table for a moment.
pub async fn hold_table(schema: &TestSchema, table: &str, mode: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect_with(&connect_options())
        .await
        .expect("holder connection");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SET LOCAL lock_timeout = '30s'")
        .execute(&mut holder)
        .await
        .expect("the holder's lock timeout");
    sqlx::query(schema.statement(&format!("LOCK TABLE {{{{schema}}}}.{table} IN {mode} MODE")))
        .execute(&mut holder)
        .await
        .unwrap_or_else(|e| panic!("lock {table}: {e}"));
    holder
}

/// Ends the transaction of a [`hold_table`] holder and closes it.
pub async fn release_table(mut holder: sqlx::PgConnection) {
    use sqlx::Connection;
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("rollback");
    holder.close().await.expect("close holder");
}

/// Returns once some backend waits for a lock on `table` of `schema`;
/// panics, naming `who`, after 20 s.
pub async fn until_a_backend_waits_for(schema: &TestSchema, table: &str, who: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
               JOIN pg_catalog.pg_class c ON c.oid = l.relation \
              WHERE NOT l.granted AND c.relname = $2 \
                AND c.relnamespace = $1::regnamespace)",
        )
        .bind(&schema.name)
        .bind(table)
        .fetch_one(&schema.pool)
        .await
        .expect("pg_locks");
        if waiting {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who} never waited for {table}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns once no other backend holds a lock on a relation of `schema`:
/// a statement that failed has ended its transaction. The server sends the
/// error before it aborts the transaction (PostgresMain reports, then
/// aborts), so a caller that acts on the error at once, on another
/// connection, can still meet the failed statement's row locks (a claim's
/// `FOR UPDATE SKIP LOCKED` skips them). Panics, naming `who`, after 20 s.
pub async fn until_no_backend_holds_a_lock_in(schema: &TestSchema, who: &str) {
    eventually(who, || async {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_catalog.pg_locks l \
               JOIN pg_catalog.pg_class c ON c.oid = l.relation \
              WHERE l.pid <> pg_catalog.pg_backend_pid() \
                AND c.relnamespace = $1::regnamespace",
        )
        .bind(&schema.name)
        .fetch_one(&schema.pool)
        .await
        .expect("pg_locks");
        held == 0
    })
    .await;
}

/// Runs `body` with a fresh schema, then drops the schema whatever happened.
pub async fn with_schema<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(TestSchema) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = TestSchema {
        pool: pool(16).await,
        name: fresh_schema_name(prefix),
    };
    let pool = schema.pool.clone();
    let name = schema.name.clone();
    let outcome = AssertUnwindSafe(body(schema)).catch_unwind().await;
    drop_schema(&pool, &name).await;
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `body` with `n` fresh schema names on one pool (none created yet),
/// then drops every one of them whatever happened; returns what `body`
/// returned.
pub async fn with_schemas<F, Fut, T>(prefix: &str, n: usize, body: F) -> T
where
    F: FnOnce(Vec<TestSchema>) -> Fut,
    Fut: Future<Output = T>,
{
    let pool = pool(16).await;
    let schemas: Vec<TestSchema> = (0..n)
        .map(|_| TestSchema {
            pool: pool.clone(),
            name: fresh_schema_name(prefix),
        })
        .collect();
    let names: Vec<String> = schemas.iter().map(|s| s.name.clone()).collect();
    let outcome = AssertUnwindSafe(body(schemas)).catch_unwind().await;
    for name in &names {
        drop_schema(&pool, name).await;
    }
    pool.close().await;
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// duroxide's `ProviderFactory` for one suite test.
///
/// The suite expects `create_provider` to return an isolated provider each
/// time (it loops over scenarios calling it once per scenario, and one test
/// creates a second provider "to avoid interference"), so the first call uses
/// the test's schema and every later call a new schema on the same pool. All
/// of them are dropped when the test ends.
pub struct PgFactory {
    /// The test's schema (pool and first schema name).
    pub schema: TestSchema,
    /// The SQL mode of every provider this factory creates.
    pub mode: SqlMode,
    /// Whether those providers long-poll with `LISTEN`/`NOTIFY`.
    pub notifications: bool,
    /// Every schema handed out so far, the latest last.
    handed_out: Arc<std::sync::Mutex<Vec<String>>>,
}

impl PgFactory {
    /// The schema of the provider created last (where the suite's hooks act).
    fn current(&self) -> TestSchema {
        let name = self
            .handed_out
            .lock()
            .ok()
            .and_then(|names| names.last().cloned())
            .unwrap_or_else(|| self.schema.name.clone());
        TestSchema {
            pool: self.schema.pool.clone(),
            name,
        }
    }
}

/// Lock timeout for the conformance suite: short enough for quick expiry tests,
/// long enough for a loaded 2-core machine.
pub const SUITE_LOCK_TIMEOUT: Duration = Duration::from_millis(2000);

#[async_trait::async_trait]
impl ProviderFactory for PgFactory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        let name = {
            let mut names = self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
            let name = if names.is_empty() {
                self.schema.name.clone()
            } else {
                fresh_schema_name("more")
            };
            names.push(name.clone());
            name
        };
        let schema = TestSchema {
            pool: self.schema.pool.clone(),
            name,
        };
        Arc::new(schema.provider_with(self.mode, self.notifications).await)
    }

    fn lock_timeout(&self) -> Duration {
        SUITE_LOCK_TIMEOUT
    }

    fn short_poll_threshold(&self) -> Duration {
        Duration::from_millis(500)
    }

    async fn corrupt_instance_history(&self, instance: &str) {
        let schema = self.current();
        sqlx::query(schema.statement(
            "UPDATE {{schema}}.history SET event_data = 'NOT_VALID_JSON{{{' WHERE instance_id = $1",
        ))
        .bind(instance)
        .execute(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("corrupt history of {instance}: {e}"));
    }

    async fn get_max_attempt_count(&self, instance: &str) -> u32 {
        let schema = self.current();
        let max: Option<i32> = sqlx::query_scalar(schema.statement(
            "SELECT max(attempt_count) FROM {{schema}}.orchestrator_queue WHERE instance_id = $1",
        ))
        .bind(instance)
        .fetch_one(&schema.pool)
        .await
        .unwrap_or_else(|e| panic!("max attempt_count of {instance}: {e}"));
        u32::try_from(max.unwrap_or(0)).unwrap_or(0)
    }
}

/// Runs one conformance-suite test of `kind` in a fresh schema (plus any
/// extra schemas the factory hands out), all dropped afterwards. The schema
/// is migrated before the test waits for its [`Slot`], so the burst of DDL
/// stays out of the lock-timing tests' windows.
///
/// A [`Kind::LockTiming`] test that fails is run once more, from scratch in
/// a new schema, and passes only if that second run passes. Those tests
/// assert that one statement follows another within 100-400 ms, which a
/// stall on two busy cores can break however the harness spaces them (a
/// fresh-clone CI run failed `test_multi_threaded_lock_expiration_recovery`
/// with lock-timing tests already kept apart: its second fetch, due 200 ms
/// after the first, ran first). A provider that broke a lock would fail
/// both runs. The retry is written to the test process's stderr, past the
/// test harness's capture, so a log shows every one.
pub async fn run_suite_test<F, Fut>(
    name: &str,
    mode: SqlMode,
    notifications: bool,
    kind: Kind,
    test: F,
) where
    F: Fn(PgFactory) -> Fut,
    Fut: Future<Output = ()>,
{
    let attempt =
        || AssertUnwindSafe(suite_attempt(name, mode, notifications, kind, &test)).catch_unwind();
    let Err(first) = attempt().await else {
        return;
    };
    if kind != Kind::LockTiming {
        std::panic::resume_unwind(first);
    }
    let reason = panic_message(first.as_ref());
    let line = format!(
        "note: lock-timing test {name} ({mode:?}, notifications {notifications}) \
         failed once and runs again: {reason}\n"
    );
    // Past libtest's capture of `eprintln!`: a retry must show in a passing log.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    if let Err(second) = attempt().await {
        std::panic::resume_unwind(second);
    }
}

/// The message of a caught panic, or a placeholder for a non-string payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}

/// One run of [`run_suite_test`]'s test in a schema of its own.
async fn suite_attempt<F, Fut>(name: &str, mode: SqlMode, notifications: bool, kind: Kind, test: &F)
where
    F: Fn(PgFactory) -> Fut,
    Fut: Future<Output = ()>,
{
    with_schema(name, |schema| async move {
        drop(schema.provider_with(mode, false).await);
        let _slot = Slot::acquire(kind);
        let pool = schema.pool.clone();
        let handed_out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let factory = PgFactory {
            schema,
            mode,
            notifications,
            handed_out: handed_out.clone(),
        };
        let outcome = AssertUnwindSafe(test(factory)).catch_unwind().await;
        let names = handed_out.lock().map(|n| n.clone()).unwrap_or_default();
        for name in names.iter().skip(1) {
            drop_schema(&pool, name).await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

/// Generates two tests from `check(mode)`: `$procedures` in stored-procedure
/// mode and `$inline` in inline mode, each on a multi-threaded runtime of
/// two workers (or `$threads`).
macro_rules! in_both_modes {
    ($check:ident: $procedures:ident, $inline:ident) => {
        $crate::support::in_both_modes!($check: $procedures, $inline; 2);
    };
    ($check:ident: $procedures:ident, $inline:ident; $threads:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $procedures() {
            $check(duroxide_postgres::SqlMode::StoredProcedures).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $inline() {
            $check(duroxide_postgres::SqlMode::InlineSql).await;
        }
    };
}
pub(crate) use in_both_modes;

/// A pool of `max_connections` on database `name` of the test server.
pub async fn pool_on_database(name: &str, max_connections: u32) -> PgPool {
    let options: PgConnectOptions = database_url().parse().expect("url");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options.database(name))
        .await
        .unwrap_or_else(|e| panic!("connect to {name}: {e}"))
}

/// A database of its own on the test server, for a test that reads the
/// server's per-database counters: created empty, dropped by
/// [`ScratchDatabase::finish`].
pub struct ScratchDatabase {
    admin: PgPool,
    /// The database's name.
    pub name: String,
    /// A pool on it.
    pub pool: PgPool,
}

impl ScratchDatabase {
    /// Creates database `name` (dropping a leftover of that name) and a
    /// pool of `max_connections` on it.
    pub async fn create(name: &str, max_connections: u32) -> Self {
        Self::create_with(name, max_connections, "").await
    }

    /// [`ScratchDatabase::create`] with `options` after `CREATE DATABASE
    /// name` (an encoding, say).
    pub async fn create_with(name: &str, max_connections: u32, options: &str) -> Self {
        let admin = pool(2).await;
        for ddl in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\" {options}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(ddl.to_string()))
                .execute(&admin)
                .await
                .unwrap_or_else(|e| panic!("{ddl}: {e}"));
        }
        let pool = pool_on_database(name, max_connections).await;
        ScratchDatabase {
            admin,
            name: name.to_string(),
            pool,
        }
    }

    /// Closes the pool, ends any backend still on the database (a closed
    /// sqlx pool can keep a connection it was returning), reads the
    /// deadlocks the server recorded there, and drops the database.
    pub async fn finish(self) -> i64 {
        self.pool.close().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                  WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&self.name)
            .fetch_one(&self.admin)
            .await
            .expect("end backends");
            if left == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "backends stay on {}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A backend reports its counters as it exits, before it leaves
        // pg_stat_activity.
        let mut conn = self.admin.acquire().await.expect("admin connection");
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .expect("clear snapshot");
        let deadlocks: i64 =
            sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
                .bind(&self.name)
                .fetch_one(&mut *conn)
                .await
                .expect("deadlock counter");
        drop(conn);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop db");
        self.admin.close().await;
        deadlocks
    }
}

/// Whole-database tenant reads against tests that count reads of their
/// own tables. `tenants::status_all` (and the CLI's `status --all`) reads
/// every tenant's queues on the database, other tests' schemas included, and
/// PostgreSQL counts those reads in the same per-table counters
/// (`pg_stat_user_tables`) that `plans` and `held_snapshot` read to prove
/// the provider's fetches read a few rows: a `status_all` of another test
/// between two readings made a 20,000-row backlog look read whole.
fn tenant_reads() -> &'static tokio::sync::RwLock<()> {
    static READS: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    READS.get_or_init(Default::default)
}

/// Held by a test for as long as it reads its own tables' counters: no
/// whole-database tenant read runs meanwhile. Shared among such tests.
pub async fn counting_own_table_reads() -> tokio::sync::RwLockReadGuard<'static, ()> {
    tenant_reads().read().await
}

/// Held around a read of every tenant on the test database: waits for the
/// tests counting their own table reads, and keeps new ones waiting.
pub async fn reading_every_tenant() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    tenant_reads().write().await
}

/// Waits (bounded: 20 s) until `condition` holds; `what` names it in the
/// failure.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether this process runs as root (and may install what a test needs).
pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs Debian package `package` (`apt-get update`, then `install`, as
/// root); panics naming the step that failed.
pub fn apt_install(package: &str) {
    use std::process::{Command, Stdio};
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", package][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "apt-get {}: {status:?}",
            args.join(" ")
        );
    }
}

/// The test's gate key for `schema`, held by the connection returned (taken
/// out of the pool, so a test that fails drops it and the server lets every
/// held commit go).
pub async fn close_gate(schema: &TestSchema) -> (sqlx::PgConnection, i64) {
    let mut holder = schema.pool.acquire().await.expect("holder").detach();
    let gate: i64 = sqlx::query_scalar("SELECT hashtext($1)::bigint")
        .bind(&schema.name)
        .fetch_one(&mut holder)
        .await
        .expect("gate key");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(gate)
        .execute(&mut holder)
        .await
        .expect("hold gate");
    (holder, gate)
}

/// Whether some backend waits for a lock of this database's advisory `key`
/// (`pg_locks` spells a bigint key as its two halves).
pub async fn someone_waits_on(pool: &PgPool, key: i64) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
           AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}
