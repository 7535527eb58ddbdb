//! Behind PgBouncer in transaction pooling mode: a real
//! `pgbouncer` (Debian's package) started per test, with a pool of three
//! server connections shared by every client, in front of the test server.
//! Providers set `transaction_pooler`; with notifications on, their `LISTEN`
//! connection goes straight to the server (`listen_url`) while every
//! operation goes through the pooler. Each test runs a conformance-style
//! smoke path (activities, a timer, a sub-orchestration, an external event,
//! deletion) and then a load of fan-out orchestrations from five tenants
//! sharing one pool, in both SQL modes, with notifications on and off.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::provider_validation::ProviderFactory;
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, PostgresProviderError, SqlMode};
use futures::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::fixtures::{fan_outs_complete, start_fan_outs};
use crate::support::{Kind, Slot, TestSchema, database_url, with_schemas};

/// Server connections PgBouncer keeps per (database, user): fewer than the
/// clients', so every server connection serves several clients in turn.
const SERVER_CONNECTIONS: usize = 3;

/// A `pgbouncer` child process in transaction pooling mode, in front of the
/// test server; killed, and its directory removed, when dropped (a failing
/// test included).
struct Bouncer {
    child: Child,
    dir: PathBuf,
    /// The URL of the test database through the pooler.
    url: String,
}

/// The name the host gives the owner of `path`, from `/etc/passwd`.
fn user_owning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&uid.as_str()))
        .and_then(|fields| fields.first().map(|name| (*name).to_string()))
}

impl Bouncer {
    async fn start() -> Self {
        let server: PgConnectOptions = database_url().parse().expect("DATABASE_URL");
        let user = server.get_username().to_string();
        let dir = std::env::temp_dir().join(format!(
            "duroxide-pgbouncer-{}-{}",
            std::process::id(),
            crate::support::fresh_schema_name("b")
        ));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        // The throwaway server trusts its owner on its socket; a server of
        // your own may want the password of the URL, passed on in the
        // connection string.
        let password = std::env::var("PGPASSWORD")
            .ok()
            .or_else(|| url_password(database_url()));
        let ini = format!(
            "[databases]\n\
             dx = host={host} port={server_port} dbname={db} user={user}{password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             pool_mode = transaction\n\
             default_pool_size = {SERVER_CONNECTIONS}\n\
             max_client_conn = 500\n",
            // A Unix socket's directory (the throwaway server's) or a host.
            host = server.get_socket().map_or_else(
                || server.get_host().to_string(),
                |dir| dir.display().to_string()
            ),
            server_port = server.get_port(),
            db = server.get_database().unwrap_or("postgres"),
            password = password
                .map(|p| format!(" password={p}"))
                .unwrap_or_default(),
            auth = dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).expect("auth file");
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("ini");
        let log = std::fs::File::create(dir.join("pgbouncer.log")).expect("log file");
        let mut command = Command::new(pgbouncer_binary());
        // PgBouncer refuses to run as root: drop to the server's user then,
        // who must read the files, and reach the server's socket directory
        // (the owner of that directory, whatever the host calls that user:
        // a server in another Debian release's tree, scripts/pg-chroot.sh,
        // runs as that tree's `postgres`, whose uid the host may give
        // another name).
        if crate::support::running_as_root() {
            use std::os::unix::fs::PermissionsExt;
            for file in ["", "users.txt", "pgbouncer.ini"] {
                let mode = if file.is_empty() { 0o755 } else { 0o644 };
                std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(mode))
                    .expect("permissions");
            }
            let owner = server
                .get_socket()
                .and_then(|dir| user_owning(dir))
                .unwrap_or_else(|| "postgres".to_string());
            command.args(["-u", &owner]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pgbouncer (apt-get install pgbouncer): {e}"));
        let bouncer = Bouncer {
            child,
            url: format!("postgres://{user}@127.0.0.1:{port}/dx"),
            dir,
        };
        bouncer.wait_until_accepting(port).await;
        bouncer
    }

    /// Waits until PgBouncer accepts connections on `port`.
    async fn wait_until_accepting(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {port}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// Options of a provider behind this pooler, listening directly when
    /// notifications are on.
    fn options(&self, mode: SqlMode, notifications: bool) -> PostgresOptions {
        let options = PostgresOptions::default()
            .sql_mode(mode)
            .transaction_pooler(true)
            .notifications(notifications);
        if notifications {
            options.listen_url(database_url())
        } else {
            options
        }
    }

    /// A pool of `size` client connections to the pooler, built from the
    /// provider's own connection settings for it.
    async fn pool(&self, size: u32) -> PgPool {
        let connect = PostgresOptions::default()
            .transaction_pooler(true)
            .connect_options(&self.url)
            .expect("pooler URL");
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| panic!("cannot connect through pgbouncer: {e}\n{}", self.log()))
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PgBouncer's binary. When it is missing and the tests run as root, it is
/// installed from Debian packages first (once per run), as
/// `scripts/pg-throwaway.sh` installs PostgreSQL, so that README's test
/// command works on a fresh machine; otherwise the tests say what to
/// install.
fn pgbouncer_binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(found) = find_pgbouncer() {
            return found;
        }
        if crate::support::running_as_root() {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"note: PgBouncer not found; installing it from Debian packages\n",
            );
            crate::support::apt_install("pgbouncer");
        }
        find_pgbouncer().unwrap_or_else(|| {
            panic!("PgBouncer not found: install it (Debian: apt-get install -y pgbouncer)")
        })
    })
}

fn find_pgbouncer() -> Option<String> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v pgbouncer"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty());
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_string)
        .or(on_path)
}

/// The password in a `postgres://user:password@...` URL, if any.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let credentials = rest.split_once('@')?.0;
    let password = credentials.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_string())
}

/// Runtime options for these tests: fast polling when notifications are off.
fn runtime_options(notifications: bool) -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(if notifications { 10 } else { 50 }),
        ..Default::default()
    }
}

fn smoke_activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register(
            "Double",
            |_ctx: ActivityContext, input: String| async move {
                let n: u64 = input.parse().map_err(|e| format!("{input}: {e}"))?;
                Ok((2 * n).to_string())
            },
        )
        .build()
}

/// Three activities in parallel, a timer, a sub-orchestration, then an
/// external event: the paths a provider serves for a typical workflow.
fn smoke_orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Smoke",
            |ctx: OrchestrationContext, _input: String| async move {
                let doubled = (1..=3)
                    .map(|n| ctx.schedule_activity("Double", n.to_string()))
                    .collect();
                let mut total = 0u64;
                for result in ctx.join(doubled).await {
                    total += result?.parse::<u64>().map_err(|e| e.to_string())?;
                }
                ctx.schedule_timer(Duration::from_millis(200)).await;
                let child = ctx
                    .schedule_sub_orchestration("SmokeChild", total.to_string())
                    .await?;
                ctx.set_custom_status("waiting");
                let event = ctx.schedule_wait("Go").await;
                Ok(format!("{child}:{event}"))
            },
        )
        .register(
            "SmokeChild",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Double", input).await
            },
        )
        .build()
}

/// The smoke path on `schema` through the pooler: start, activities, timer,
/// sub-orchestration, event, completion, deletion.
async fn smoke(bouncer: &Bouncer, schema: &TestSchema, mode: SqlMode, notifications: bool) {
    let provider = Arc::new(
        PostgresProvider::connect_with(
            &bouncer.url,
            bouncer
                .options(mode, notifications)
                .schema(&schema.name)
                .max_connections(6),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode} provider through pgbouncer: {e}\n{}", bouncer.log())),
    );
    assert!(provider.transaction_pooler());
    assert!(
        provider.health().await.is_ready(),
        "migrated through the pooler"
    );
    let runtime = Runtime::start_with_options(
        provider.clone(),
        smoke_activities(),
        smoke_orchestrations(),
        runtime_options(notifications),
    )
    .await;
    let client = Client::new(provider.clone());
    client
        .start_orchestration("smoke", "Smoke", "")
        .await
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut version = 0;
    loop {
        let status = client
            .wait_for_status_change(
                "smoke",
                version,
                Duration::from_millis(20),
                Duration::from_secs(60),
            )
            .await
            .expect("status");
        match status {
            OrchestrationStatus::Running {
                custom_status,
                custom_status_version,
            } => {
                if custom_status.as_deref() == Some("waiting") {
                    break;
                }
                version = custom_status_version;
            }
            other => panic!("smoke before its event: {other:?}"),
        }
        assert!(Instant::now() < deadline, "smoke never reached its event");
    }
    client
        .raise_event("smoke", "Go", "go")
        .await
        .expect("raise");
    let status = client
        .wait_for_orchestration("smoke", Duration::from_secs(60))
        .await
        .expect("wait");
    // 2 + 4 + 6 = 12, doubled by the child.
    match status {
        OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "24:go"),
        other => panic!("smoke: {other:?}"),
    }
    if notifications {
        // The work above woke the runtime through the direct listener.
        let stats = provider.notification_stats().expect("notifications on");
        assert!(stats.connected && stats.received > 0, "{stats:?}");
    }
    runtime.shutdown(None).await;
    let deleted = client
        .delete_instance("smoke", false)
        .await
        .expect("delete");
    assert!(
        deleted.instances_deleted >= 2,
        "parent and child: {deleted:?}"
    );
    assert!(matches!(
        client
            .get_orchestration_status("smoke")
            .await
            .expect("status"),
        OrchestrationStatus::NotFound
    ));
    provider.pool().close().await;
}

/// 50 fan-out-of-5 orchestrations from five tenants on one pool of eight
/// client connections, through three server connections.
async fn load(bouncer: &Bouncer, schemas: &[TestSchema], mode: SqlMode, notifications: bool) {
    let pool = bouncer.pool(8).await;
    let mut runtimes = Vec::new();
    let mut clients = Vec::new();
    for schema in schemas {
        let provider = Arc::new(
            PostgresProvider::from_pool_with(
                pool.clone(),
                bouncer.options(mode, notifications).schema(&schema.name),
            )
            .await
            .unwrap_or_else(|e| panic!("{mode} tenant {}: {e}\n{}", schema.name, bouncer.log())),
        );
        runtimes.push(
            Runtime::start_with_options(
                provider.clone(),
                create_default_activities(0),
                create_default_orchestrations(),
                runtime_options(notifications),
            )
            .await,
        );
        clients.push(Client::new(provider));
    }
    let per_tenant = 50 / schemas.len();
    for client in &clients {
        start_fan_outs(client, 0..per_tenant).await;
    }
    for (tenant, client) in clients.iter().enumerate() {
        let who = format!("tenant {tenant}");
        fan_outs_complete(client, 0..per_tenant, Duration::from_secs(120), &who).await;
    }
    for runtime in runtimes {
        runtime.shutdown(None).await;
    }
    pool.close().await;
}

/// The smoke path, then the load, behind a fresh PgBouncer.
async fn behind_pgbouncer(mode: SqlMode, notifications: bool) {
    with_schemas("pgb", 6, |schemas| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let bouncer = Bouncer::start().await;
        smoke(&bouncer, &schemas[0], mode, notifications).await;
        load(&bouncer, &schemas[1..], mode, notifications).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn procedures_listening_directly() {
    behind_pgbouncer(SqlMode::StoredProcedures, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn procedures_polling() {
    behind_pgbouncer(SqlMode::StoredProcedures, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_listening_directly() {
    behind_pgbouncer(SqlMode::InlineSql, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_polling() {
    behind_pgbouncer(SqlMode::InlineSql, false).await;
}

/// duroxide's provider factory for suite tests through the pooler: every
/// provider on one pool of client connections to PgBouncer, each in a schema
/// of its own, all dropped (through the direct pool) when the test ends.
struct BouncerFactory {
    pool: PgPool,
    options: PostgresOptions,
    handed_out: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl ProviderFactory for BouncerFactory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        let name = crate::support::fresh_schema_name("pgbs");
        self.handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        Arc::new(
            PostgresProvider::from_pool_with(self.pool.clone(), self.options.clone().schema(&name))
                .await
                .unwrap_or_else(|e| panic!("suite provider through pgbouncer: {e}")),
        )
    }

    fn lock_timeout(&self) -> Duration {
        crate::support::SUITE_LOCK_TIMEOUT
    }

    fn short_poll_threshold(&self) -> Duration {
        Duration::from_millis(500)
    }
}

/// Runs each named conformance-suite function in turn on `$factory`.
macro_rules! suite {
    ($factory:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $( duroxide::provider_validation::$module::$test($factory).await; )*
    };
}

/// A share of duroxide's conformance suite through PgBouncer: atomic acks,
/// queue semantics, instance creation, executions, custom status, deletion
/// and the management queries. The whole suite runs directly in `validation`.
async fn suite_behind_pgbouncer(mode: SqlMode, notifications: bool) {
    let _slot = Slot::acquire(Kind::Runtime);
    let bouncer = Bouncer::start().await;
    let direct = crate::support::pool(2).await;
    let factory = BouncerFactory {
        pool: bouncer.pool(8).await,
        options: bouncer.options(mode, notifications),
        handed_out: Arc::default(),
    };
    let handed_out = factory.handed_out.clone();
    let outcome = AssertUnwindSafe(async {
        let f = &factory;
        suite!(f;
            atomicity::test_atomicity_failure_rollback,
            atomicity::test_multi_operation_atomic_ack,
            atomicity::test_lock_released_only_on_successful_ack,
            atomicity::test_concurrent_ack_prevention,
            queue_semantics::test_worker_queue_fifo_ordering,
            queue_semantics::test_worker_peek_lock_semantics,
            queue_semantics::test_worker_ack_atomicity,
            queue_semantics::test_timer_delayed_visibility,
            queue_semantics::test_lost_lock_token_handling,
            queue_semantics::test_worker_item_immediate_visibility,
            queue_semantics::test_orphan_queue_messages_dropped,
            instance_creation::test_instance_creation_via_metadata,
            instance_creation::test_no_instance_creation_on_enqueue,
            instance_creation::test_sub_orchestration_instance_creation,
            multi_execution::test_execution_isolation,
            multi_execution::test_continue_as_new_creates_new_execution,
            custom_status::test_custom_status_set,
            custom_status::test_custom_status_version_increments,
            deletion::test_delete_terminal_instances,
            deletion::test_delete_running_rejected_force_succeeds,
            deletion::test_delete_cleans_queues_and_locks,
            deletion::test_cascade_delete_hierarchy,
            deletion::test_delete_instances_atomic,
            management::test_list_instances,
            management::test_get_instance_info,
            management::test_get_queue_depths,
            management::test_get_system_metrics,
        );
    })
    .catch_unwind()
    .await;
    factory.pool.close().await;
    let names = handed_out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for name in &names {
        crate::support::drop_schema(&direct, name).await;
    }
    direct.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_procedures_listening_directly() {
    suite_behind_pgbouncer(SqlMode::StoredProcedures, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_procedures_polling() {
    suite_behind_pgbouncer(SqlMode::StoredProcedures, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_inline_listening_directly() {
    suite_behind_pgbouncer(SqlMode::InlineSql, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_inline_polling() {
    suite_behind_pgbouncer(SqlMode::InlineSql, false).await;
}

/// Notifications cannot pass a transaction pooler: without a direct URL for
/// `LISTEN`, the provider refuses to start rather than never waking up.
#[tokio::test]
async fn notifications_through_the_pooler_need_a_direct_url() {
    let pool = PgPoolOptions::new().connect_lazy_with(
        PostgresOptions::default()
            .connect_options(database_url())
            .expect("url"),
    );
    let refused = PostgresProvider::from_pool_with(
        pool,
        PostgresOptions::default()
            .transaction_pooler(true)
            .schema("never_created"),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(refused, PostgresProviderError::InvalidInput { .. })
            && refused.to_string().contains("listen_url"),
        "{refused}"
    );
}
