//! The fault suite: duroxide runtimes on a PostgreSQL server this
//! module starts itself, so that it can restart it, while the test breaks the
//! database under them:
//!
//! - every application backend terminated, the server restarted with fast
//!   shutdown, the listening backends killed, all while work is in flight;
//! - `idle_session_timeout = 1s`, with timers that leave every connection
//!   idle for longer than that;
//! - `default_transaction_read_only` switched on for two seconds and off
//!   again.
//!
//! [`outage`] stops the server under held leases and acks them while it is
//! down.
//!
//! Afterwards every orchestration completed with its correct output, every
//! execution's history is event ids 1..n with each scheduled activity, timer
//! and sub-orchestration completed exactly once, and the server recorded no
//! deadlock. Activity re-executions are counted and printed (`eprintln!`, so
//! `--nocapture` shows them): a re-run is legal after a lost ack, a lost
//! completion is not.
//!
//! Each test runs in both SQL modes, with notifications on, in a database of
//! its own on the fault server. The tests take turns (one fault server, which
//! they restart) and hold a [`Kind::Runtime`] slot like every other test that
//! drives runtimes.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode, ThrowawayPostgres};
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use tokio::time::Instant;

use crate::support::{Kind, Slot, eventually, in_both_modes};

mod outage;

/// The fault tests take turns: each restarts the one fault server.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `application_name` of the test's own connection into a fault database,
/// the one backend "terminate every application backend" spares.
const OBSERVER: &str = "duroxide-fault-observer";

/// Runtimes and their dispatchers: two nodes of two orchestration and two
/// worker dispatchers each.
const NODES: usize = 2;

/// How long every orchestration of a run has to complete, faults included.
const DEADLINE: Duration = Duration::from_secs(60);

/// The module's own server, started on first use and restarted by tests.
fn fault_server() -> &'static ThrowawayPostgres {
    static SERVER: OnceLock<ThrowawayPostgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        // A start can fail for reasons of the machine, not of the code under
        // test (a port taken between the script's check and the server's
        // bind by another process starting a server): try up to three times.
        let start = || {
            let mut failures = Vec::new();
            for _ in 0..3 {
                match ThrowawayPostgres::start_with_args(&[]) {
                    Ok(server) => return server,
                    Err(e) => {
                        eprintln!("faults: the fault server did not start: {e}");
                        failures.push(e.to_string());
                    }
                }
            }
            panic!("no fault server could start: {failures:?}")
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(start),
            _ => start(),
        }
    })
}

/// The fault server's URL for `database`.
fn url_of(database: &str) -> String {
    crate::support::url_with_database(fault_server().url(), database)
}

/// Restarts the fault server with fast shutdown, on the same socket or port
/// (`pg_ctl` reuses the options of the previous start).
async fn restart_server() {
    crate::support::pg_ctl(fault_server().dir(), &["-m", "fast", "restart"]).await;
}

/// Stops the fault server with fast shutdown; [`start_server`] brings it back.
async fn stop_server() {
    crate::support::pg_ctl(fault_server().dir(), &["-m", "fast", "stop"]).await;
}

/// Starts the stopped fault server with the options of its last start
/// (`pg_ctl restart` on a stopped server starts it from `postmaster.opts`).
async fn start_server() {
    crate::support::pg_ctl(fault_server().dir(), &["restart"]).await;
}

/// A database of its own on the fault server, for one test.
#[derive(Clone)]
struct FaultDb {
    name: String,
    /// One connection to the server's `postgres` database.
    admin: PgPool,
    /// One connection into `name`, tagged [`OBSERVER`].
    observer: PgPool,
}

impl FaultDb {
    async fn create(tag: &str) -> Self {
        let name = format!("dxf_{tag}_{}", std::process::id());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url_of("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connect to the fault server: {e}"));
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let options: PgConnectOptions = url_of(&name)
            .parse::<PgConnectOptions>()
            .unwrap_or_else(|e| panic!("{e}"))
            .application_name(OBSERVER);
        // sqlx pings a pooled connection before handing it out, so the
        // observer gets a new one after a restart.
        let observer = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
        Self {
            name,
            admin,
            observer,
        }
    }

    /// Runs `sql` (with `{{db}}` the quoted database name) on the server.
    async fn admin(&self, sql: &str) {
        let sql = sql.replace("{{db}}", &format!("\"{}\"", self.name));
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Terminates every client backend of the database but the observer's;
    /// returns how many.
    async fn terminate_backends(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&self.observer)
        .await
        .unwrap_or_else(|e| panic!("terminate backends: {e}"))
    }

    /// The listening backends in the database: those whose last statement
    /// was a `LISTEN` (or a listener's keepalive, which names itself so).
    async fn listeners(&self) -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
             AND pid <> pg_backend_pid() AND query ILIKE '%listen%'",
        )
        .bind(&self.name)
        .fetch_all(&self.observer)
        .await
        .unwrap_or_else(|e| panic!("find listeners: {e}"))
    }

    /// Waits (bounded) until an instance lease or an activity lock is held:
    /// a fault injected then hits work in flight.
    async fn work_in_flight(&self) {
        eventually("work in flight", || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM public.instance_locks) \
                      + (SELECT count(*) FROM public.worker_queue WHERE lock_token IS NOT NULL)",
            )
            .fetch_one(&self.observer)
            .await
            .is_ok_and(|n| n > 0)
        })
        .await;
    }

    /// Deadlocks the server recorded in this database, once every backend
    /// in it is gone (a backend flushes its statistics before it leaves
    /// `pg_stat_activity`).
    ///
    /// Backends still there once every pool is closed are terminated:
    /// sqlx's `PgPool::close` can return with a connection idle in the pool,
    /// when that connection was being returned (and pinged) as the close
    /// began; the pool closes it only when it is dropped.
    async fn deadlocks(&self) -> i64 {
        self.observer.close().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left: Vec<(i32, Option<String>, Option<String>, bool)> = sqlx::query_as(
                "WITH left_over AS MATERIALIZED ( \
                     SELECT pid, application_name, state FROM pg_stat_activity \
                     WHERE datname = $1) \
                 SELECT pid, application_name, state, pg_terminate_backend(pid) FROM left_over",
            )
            .bind(&self.name)
            .fetch_all(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("pg_stat_activity: {e}"));
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "backends still in {} after every pool closed: {left:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut conn = self.admin.acquire().await.expect("admin connection");
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .expect("clear snapshot");
        sqlx::query_scalar(
            "SELECT pg_stat_get_db_deadlocks(oid) FROM pg_database WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("deadlock counter: {e}"))
    }

    async fn drop_database(&self) {
        self.observer.close().await;
        self.admin("DROP DATABASE IF EXISTS {{db}} WITH (FORCE)")
            .await;
        // Roles a test created for this database are named after it.
        let roles: Vec<String> =
            sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
                .bind(format!("{}_", self.name))
                .fetch_all(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("roles of {}: {e}", self.name));
        for role in roles {
            self.admin(&format!("DROP ROLE \"{role}\"")).await;
        }
        self.admin.close().await;
    }
}

/// Runs `body` on a fresh fault database in its turn, then drops the
/// database whatever happened.
async fn with_fault_db<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(FaultDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _turn = TURN.lock().await;
    let _slot = Slot::acquire(Kind::Runtime);
    let db = FaultDb::create(tag).await;
    let outcome = AssertUnwindSafe(body(db.clone())).catch_unwind().await;
    db.drop_database().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// What each orchestration waits for between its fan-out and its
/// sub-orchestration.
#[derive(Clone, Copy)]
struct Shape {
    timers: usize,
    timer: Duration,
    /// Added to `timer` once per `i % 4`, so that instances wake at
    /// different times.
    stagger: Duration,
}

/// `FaultParent(i)`: squares `10i+1..=10i+3` in parallel, waits on
/// `shape.timers` timers of `timer + (i % 4) * stagger`, then runs `FaultChild(10i+9)` (one activity), and
/// returns the sum of the four squares.
fn expected_output(i: u64) -> String {
    let square = |n: u64| n * n;
    ((1..=3).map(|k| square(10 * i + k)).sum::<u64>() + square(10 * i + 9)).to_string()
}

/// Activity runs per (instance, input).
type Runs = Arc<Mutex<HashMap<String, usize>>>;

fn activities(runs: &Runs) -> ActivityRegistry {
    let runs = runs.clone();
    ActivityRegistry::builder()
        .register("Square", move |ctx: ActivityContext, input: String| {
            let runs = runs.clone();
            async move {
                let key = format!("{}/{input}", ctx.instance_id());
                *runs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default() += 1;
                let n: u64 = input.parse().map_err(|e| format!("{input}: {e}"))?;
                Ok((n * n).to_string())
            }
        })
        .build()
}

fn orchestrations(shape: Shape) -> OrchestrationRegistry {
    let number = |text: &str| text.parse::<u64>().map_err(|e| format!("{text}: {e}"));
    OrchestrationRegistry::builder()
        .register(
            "FaultParent",
            move |ctx: OrchestrationContext, input: String| async move {
                let i = number(&input)?;
                let squares = (1..=3)
                    .map(|k| ctx.schedule_activity("Square", (10 * i + k).to_string()))
                    .collect();
                let mut total = 0;
                for square in ctx.join(squares).await {
                    total += number(&square?)?;
                }
                let lag = u32::try_from(i % 4).unwrap_or_default();
                for _ in 0..shape.timers {
                    ctx.schedule_timer(shape.timer + shape.stagger * lag).await;
                }
                let child = ctx
                    .schedule_sub_orchestration("FaultChild", (10 * i + 9).to_string())
                    .await?;
                Ok((total + number(&child)?).to_string())
            },
        )
        .register(
            "FaultChild",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Square", input).await
            },
        )
        .build()
}

/// [`NODES`] runtimes, each with a provider and pool of its own, on a fault
/// database.
struct Fleet {
    mode: SqlMode,
    providers: Vec<PostgresProvider>,
    runtimes: Vec<Arc<Runtime>>,
    client: Client,
    runs: Runs,
    /// Instances started, with their expected outputs.
    started: BTreeMap<String, String>,
}

impl Fleet {
    async fn start(db: &FaultDb, mode: SqlMode, shape: Shape) -> Self {
        let runs: Runs = Arc::default();
        let mut providers = Vec::new();
        let mut runtimes = Vec::new();
        for _ in 0..NODES {
            let provider = PostgresProvider::connect_with(
                &url_of(&db.name),
                PostgresOptions::default().sql_mode(mode),
            )
            .await
            .unwrap_or_else(|e| panic!("{mode} provider on {}: {e}", db.name));
            let options = RuntimeOptions {
                dispatcher_min_poll_interval: Duration::from_millis(10),
                orchestration_concurrency: 2,
                worker_concurrency: 2,
                // A lost activity ack is retried after this, not after 30 s.
                worker_lock_timeout: Duration::from_secs(5),
                ..Default::default()
            };
            runtimes.push(
                Runtime::start_with_options(
                    Arc::new(provider.clone()),
                    activities(&runs),
                    orchestrations(shape),
                    options,
                )
                .await,
            );
            providers.push(provider);
        }
        let client = Client::new(Arc::new(providers[0].clone()));
        Self {
            mode,
            providers,
            runtimes,
            client,
            runs,
            started: BTreeMap::new(),
        }
    }

    /// Starts `FaultParent(i)` for each `i` in `range`. A start that fails
    /// (a connection the fault killed) is tried again, as a client would.
    async fn start_batch(&mut self, range: std::ops::Range<u64>) {
        for i in range {
            let instance = format!("fault-{i}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Err(e) = self
                .client
                .start_orchestration(&instance, "FaultParent", i.to_string())
                .await
            {
                eprintln!("{}: start {instance} failed, trying again: {e}", self.mode);
                assert!(Instant::now() < deadline, "cannot start {instance}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.started.insert(instance, expected_output(i));
        }
    }

    /// Waits until every started orchestration ended (or the deadline), then
    /// asserts each completed with its expected output.
    async fn assert_all_completed(&self, scenario: &str) {
        let deadline = Instant::now() + DEADLINE;
        let mut pending: Vec<&String> = self.started.keys().collect();
        let mut failures = Vec::new();
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for instance in pending {
                match self.client.get_orchestration_status(instance).await {
                    Ok(OrchestrationStatus::Completed { output, .. }) => {
                        if output != self.started[instance] {
                            failures.push(format!(
                                "{instance}: output {output}, expected {}",
                                self.started[instance]
                            ));
                        }
                    }
                    Ok(OrchestrationStatus::Failed { details, .. }) => {
                        failures.push(format!("{instance}: failed: {}", details.display_message()));
                    }
                    // Still running, or a status read hit a fault: look again.
                    Ok(_) | Err(_) => still.push(instance),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        failures.extend(
            pending
                .iter()
                .map(|i| format!("{i}: not done after {DEADLINE:?}")),
        );
        assert!(
            failures.is_empty(),
            "{scenario} ({}): {} of {} orchestrations did not complete correctly:\n{}",
            self.mode,
            failures.len(),
            self.started.len(),
            failures.join("\n")
        );
    }

    /// Every execution's history is event ids 1..n, and each scheduled
    /// activity, timer and sub-orchestration has exactly one completion.
    async fn assert_histories_sound(&self, db: &FaultDb) {
        let gaps: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT instance_id, execution_id, count(*), max(event_id) FROM public.history \
             GROUP BY instance_id, execution_id \
             HAVING min(event_id) <> 1 OR max(event_id) <> count(*)",
        )
        .fetch_all(&db.observer)
        .await
        .unwrap_or_else(|e| panic!("history ids: {e}"));
        assert!(
            gaps.is_empty(),
            "{}: executions whose event ids are not 1..n (instance, execution, events, max id): {gaps:?}",
            self.mode
        );
        let executions: Vec<(String, i64)> =
            sqlx::query_as("SELECT instance_id, execution_id FROM public.executions ORDER BY 1, 2")
                .fetch_all(&db.observer)
                .await
                .unwrap_or_else(|e| panic!("executions: {e}"));
        // Parents and their children.
        assert_eq!(
            executions.len(),
            2 * self.started.len(),
            "{}: one execution per parent and child",
            self.mode
        );
        for (instance, execution) in executions {
            let execution = u64::try_from(execution).unwrap_or_default();
            // The faults may have ended the pooled connection this read
            // gets (idle_session_timeout): a retryable error, which the
            // runtime would try again, and so does the check (a few times).
            let mut attempt = 1;
            let events = loop {
                match self.providers[0]
                    .read_with_execution(&instance, execution)
                    .await
                {
                    Ok(events) => break events,
                    Err(e) if e.is_retryable() && attempt < 5 => attempt += 1,
                    Err(e) => panic!("read {instance}/{execution}: {e}"),
                }
            };
            let mut scheduled: BTreeMap<u64, (&str, usize)> = BTreeMap::new();
            let mut stray = Vec::new();
            for event in &events {
                let (kind, completion) = match &event.kind {
                    EventKind::ActivityScheduled { .. } => ("activity", false),
                    EventKind::TimerCreated { .. } => ("timer", false),
                    EventKind::SubOrchestrationScheduled { .. } => ("sub-orchestration", false),
                    EventKind::ActivityCompleted { .. } | EventKind::ActivityFailed { .. } => {
                        ("activity", true)
                    }
                    EventKind::TimerFired { .. } => ("timer", true),
                    EventKind::SubOrchestrationCompleted { .. }
                    | EventKind::SubOrchestrationFailed { .. } => ("sub-orchestration", true),
                    _ => continue,
                };
                if !completion {
                    scheduled.insert(event.event_id, (kind, 0));
                    continue;
                }
                match event
                    .source_event_id
                    .and_then(|source| scheduled.get_mut(&source))
                {
                    Some((scheduled_kind, count)) if *scheduled_kind == kind => *count += 1,
                    _ => stray.push(event.event_id),
                }
            }
            let unpaired: Vec<_> = scheduled
                .iter()
                .filter(|(_, (_, count))| *count != 1)
                .collect();
            assert!(
                unpaired.is_empty() && stray.is_empty(),
                "{instance}/{execution} ({}): scheduled events not completed exactly once \
                 (id, kind, completions): {unpaired:?}; completions of nothing scheduled: {stray:?}",
                self.mode
            );
        }
    }

    /// Prints the activity re-executions; asserts every activity ran.
    fn report_runs(&self, scenario: &str) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            runs.len(),
            4 * self.started.len(),
            "{scenario} ({}): every activity ran at least once",
            self.mode
        );
        let mut again: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        again.sort();
        let extra: usize = again.iter().map(|(_, n)| *n - 1).sum();
        eprintln!(
            "faults: {scenario} ({}): {extra} activity re-executions over {} activities {again:?}",
            self.mode,
            runs.len()
        );
        extra
    }

    /// Checks everything a run must leave behind, shuts the fleet down and
    /// asserts the server recorded no deadlock.
    async fn finish(self, db: &FaultDb, scenario: &str, began: Instant) {
        self.assert_all_completed(scenario).await;
        self.assert_histories_sound(db).await;
        self.report_runs(scenario);
        for runtime in &self.runtimes {
            runtime.clone().shutdown(None).await;
        }
        for provider in &self.providers {
            provider.pool().close().await;
        }
        let deadlocks = db.deadlocks().await;
        eprintln!(
            "faults: {scenario} ({}): {} orchestrations in {:?}, {deadlocks} deadlocks",
            self.mode,
            self.started.len(),
            began.elapsed()
        );
        assert_eq!(
            deadlocks, 0,
            "{scenario} ({}): deadlocks recorded",
            self.mode
        );
    }

    /// How many times each provider's listener connected.
    fn listener_connections(&self) -> Vec<u64> {
        self.providers
            .iter()
            .map(|p| p.notification_stats().map_or(0, |s| s.connections))
            .collect()
    }
}

// One test per SQL mode for each scenario.
in_both_modes!(backends_killed_and_server_restarted:
    runtimes_survive_killed_backends_a_restart_and_a_killed_listener_procedures,
    runtimes_survive_killed_backends_a_restart_and_a_killed_listener_inline; 4);

in_both_modes!(idle_session_timeout:
    runtimes_survive_idle_session_timeout_procedures,
    runtimes_survive_idle_session_timeout_inline; 4);

in_both_modes!(read_only_for_a_while:
    runtimes_survive_a_read_only_database_procedures,
    runtimes_survive_a_read_only_database_inline; 4);

/// 40 orchestrations, started in four batches; after each of the first
/// three, while work is in flight: (a) every application backend is
/// terminated, (b) the server restarts (fast shutdown), (c) the listening
/// backends are killed.
async fn backends_killed_and_server_restarted(mode: SqlMode) {
    let scenario = "killed backends, restart, killed listener";
    with_fault_db(&format!("kill_{mode}"), |db| async move {
        let began = Instant::now();
        let shape = Shape {
            timers: 1,
            timer: Duration::from_millis(300),
            stagger: Duration::ZERO,
        };
        let mut fleet = Fleet::start(&db, mode, shape).await;

        fleet.start_batch(0..10).await;
        db.work_in_flight().await;
        let terminated = db.terminate_backends().await;
        eprintln!("faults: {mode}: (a) terminated {terminated} backends");
        assert!(terminated > 0, "backends to terminate");

        fleet.start_batch(10..20).await;
        db.work_in_flight().await;
        restart_server().await;
        eprintln!("faults: {mode}: (b) server restarted");

        // The listeners are back before the next batch starts, so that (c)
        // finds both and the batch's work is still in flight when it does.
        eventually("every node listening again", || async {
            db.listeners().await.len() == NODES
        })
        .await;
        fleet.start_batch(20..30).await;
        let before = fleet.listener_connections();
        db.work_in_flight().await;
        let mut killed = 0;
        for pid in db.listeners().await {
            let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&db.observer)
                .await
                .unwrap_or_else(|e| panic!("terminate listener {pid}: {e}"));
            killed += usize::from(done);
        }
        eprintln!("faults: {mode}: (c) killed {killed} listeners");
        assert_eq!(killed, NODES, "every node's listener killed");

        fleet.start_batch(30..40).await;
        eventually("every node's listener reconnected after (c)", || async {
            let after = fleet.listener_connections();
            before.iter().zip(&after).all(|(b, a)| a > b)
        })
        .await;
        fleet.finish(&db, scenario, began).await;
    })
    .await;
}

/// The server ends sessions idle for 1 s; every orchestration waits on two
/// timers of 1.5 to 2.25 s, so pooled connections (and the listener, if it
/// only listens) sit idle past that, and instances wake at different times
/// onto a pool holding some live connections and some the server has ended.
async fn idle_session_timeout(mode: SqlMode) {
    let scenario = "idle_session_timeout = 1s";
    with_fault_db(&format!("idle_{mode}"), |db| async move {
        let began = Instant::now();
        db.admin("ALTER DATABASE {{db}} SET idle_session_timeout = '1s'")
            .await;
        let shape = Shape {
            timers: 2,
            timer: Duration::from_millis(1500),
            stagger: Duration::from_millis(250),
        };
        let mut fleet = Fleet::start(&db, mode, shape).await;
        fleet.start_batch(0..16).await;
        fleet.assert_all_completed(scenario).await;
        let connections = fleet.listener_connections();
        eprintln!("faults: {mode}: listener connections per node: {connections:?}");
        fleet.finish(&db, scenario, began).await;
        // After the outputs (the worse failure) have been checked: the
        // listening connection must not be one of the sessions that end.
        assert!(
            connections.iter().all(|&n| n == 1),
            "{scenario} ({mode}): the listener reconnected (connections per node {connections:?})"
        );
    })
    .await;
}

/// `default_transaction_read_only` on for two seconds (as after a failover
/// to a standby) while orchestrations run, then off again. Sessions pick a
/// database setting up when they start, so the backends are terminated at
/// both switches.
async fn read_only_for_a_while(mode: SqlMode) {
    let scenario = "read-only for two seconds";
    with_fault_db(&format!("ro_{mode}"), |db| async move {
        let began = Instant::now();
        let shape = Shape {
            timers: 1,
            timer: Duration::from_millis(300),
            stagger: Duration::ZERO,
        };
        let mut fleet = Fleet::start(&db, mode, shape).await;
        fleet.start_batch(0..20).await;
        db.work_in_flight().await;

        db.admin("ALTER DATABASE {{db}} SET default_transaction_read_only = on")
            .await;
        db.terminate_backends().await;
        let mut probe = sqlx::PgConnection::connect(&url_of(&db.name))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
            .fetch_one(&mut probe)
            .await
            .unwrap_or_else(|e| panic!("show: {e}"));
        assert_eq!(read_only, "on", "new sessions are read-only");
        probe.close().await.ok();
        eprintln!("faults: {mode}: database read-only");
        // The outage: how long it lasts, not a synchronization.
        tokio::time::sleep(Duration::from_secs(2)).await;
        db.admin("ALTER DATABASE {{db}} RESET default_transaction_read_only")
            .await;
        db.terminate_backends().await;
        eprintln!("faults: {mode}: database writable again");

        fleet.start_batch(20..40).await;
        fleet.finish(&db, scenario, began).await;
    })
    .await;
}
