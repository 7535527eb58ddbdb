//! End-to-end load tool: duroxide's parallel-orchestrations scenario (each
//! orchestration fans out N activities and waits for all) against each SQL
//! mode and dispatcher concurrency, on one server, side by side.
//!
//! ```text
//! cargo run --release --example load -- [--modes procedures,inline] [--concurrency 1:1,2:2,4:4]
//!                                        [--duration 10] [--in-flight 20] [--tasks 5]
//!                                        [--notifications on,off] [--repeat N] [--scenario load,latency,tenants,burst]
//!                                        [--tenants 200] [--tenants-per-connection 32]
//!                                        [--connections-per-tenant N]
//!                                        [--connection-reuse-ms MS] [--prefetch-ms MS]
//!                                        [--claim-ahead on|off] [--warm-up on|off]
//!                                        [--durable] [--client-superuser] [--spans]
//!                                        [--activity sleep|yield]
//! ```
//!
//! Three scenarios (the first two by default):
//! * `load`: parallel fan-out orchestrations for `--duration` per mode and
//!   concurrency (and notifications setting), with empty fetches per
//!   notification, fetches skipped on a quiet queue and fetches that followed
//!   another waiter's at one due time (see `src/notify/`)
//!   when long polling is on. `--repeat N` runs the whole matrix N times in
//!   turn, each round starting one target later than the one before, and
//!   adds a table of medians, which the ratios then use: on a shared, noisy
//!   machine a slow spell then hits every configuration alike.
//! * `latency`: on an idle runtime, p50/p90/p99 end-to-end latency of a
//!   3-activity sequential orchestration (start to `completed_at_ms` in the
//!   database, so the client's status polling adds nothing), and the
//!   statements per second an idle runtime sends over 10 s; for each
//!   `--notifications` setting (`--notifications on,off` for both).
//! * `tenants`: `--tenants` schemas join one pool one after another while
//!   the first has a fetch waiting: listening connections made, waiters
//!   woken by the joins, and how soon a commit for the last tenant reaches
//!   its waiter. Then the burst (`load/burst.rs`): one fan-out orchestration
//!   started at once in each of `--tenants` tenants, a runtime each on one
//!   shared pool of 20, against the same orchestrations in one tenant with
//!   4:4 dispatchers, with lease expiries, the slowest acquire of leased
//!   work, connections recycled (`--tenants-per-connection`) and the
//!   backends' private memory. `--scenario burst` runs the burst alone.
//!
//! Without `DATABASE_URL` it starts its own throwaway server (with
//! `--durable`: `fsync` and `synchronous_commit` on, as in production;
//! otherwise both off) with
//! `pg_stat_statements` preloaded, and measures, per orchestration, the
//! statements the runtime sent and the server time they took (the client
//! that starts and awaits orchestrations connects as a separate role so its
//! status polling is not counted), and the CPU time the runtime's backends
//! used (from `/proc`, when the server is local: unlike statement time, it
//! counts the same work in both SQL modes). Prints a progress line per
//! second and a table at the end, including the procedures/inline ratio.
//! It prints the server's `fsync` and `synchronous_commit` settings and the
//! SQL mode each provider actually runs in; it refuses to compare modes
//! while `DUROXIDE_POSTGRES_SQL_MODE` would force them all to one.
//!
//! `--activity yield` runs activities that yield to the scheduler once
//! instead of duroxide's stress activities, which sleep 0 ms: tokio rounds
//! that sleep up to its next 1 ms timer tick, so with one worker slot the
//! activity cycle is a whole number of ticks and the provider's speed shows
//! only where it moves a cycle across a tick.
//!
//! `--spans` adds a table of every provider operation's durations (p50, p90,
//! p99, mean) per schema, that is per configuration, from the provider's
//! own operation spans (`load/spans.rs`).
//!
//! The client connects as a role of its own, `duroxide_load_client`, created
//! as a superuser on the tool's own server. On a server you supply
//! (`DATABASE_URL`) it creates no role unless `--client-superuser` asks for
//! it (and says so); without it the client shares the runtime's role and its
//! statements count as the runtime's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::providers::Provider;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode, ThrowawayPostgres};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Mutex;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds another provider on (database URL, schema), for comparisons with
/// providers other than ours (`benches/peer`, which passes them to [`run`]).
/// Called twice per run: first for the runtime, then for the client.
pub type ProviderFactory = fn(String, String) -> ProviderFuture;

/// What a [`ProviderFactory`] returns.
pub type ProviderFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Provider>, BoxError>>>>;

/// Another provider the tool can drive, as the mode `name`.
#[derive(Clone, Copy)]
pub struct Extra {
    /// The mode's name in `--modes` and in the tables.
    pub name: &'static str,
    /// Builds the provider.
    pub factory: ProviderFactory,
}

/// What one load run drives.
#[derive(Clone, Copy)]
enum Target {
    /// This crate's provider in one SQL mode.
    Ours(SqlMode),
    /// Another provider.
    Extra(Extra),
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Ours(mode) => mode.as_str(),
            Target::Extra(extra) => extra.name,
        }
    }
}

#[path = "load/backend_cpu.rs"]
mod backend_cpu;
#[path = "load/burst.rs"]
mod burst;
#[path = "load/latency.rs"]
mod latency;
#[path = "load/spans.rs"]
mod spans;
#[path = "load/table.rs"]
mod table;
#[path = "load/tenants.rs"]
mod tenants;

/// Command-line settings.
struct Settings {
    modes: Vec<SqlMode>,
    /// The other providers among `--modes`.
    extras: Vec<Extra>,
    notifications: Vec<bool>,
    scenarios: Vec<String>,
    concurrency: Vec<(usize, usize)>,
    duration: Duration,
    in_flight: usize,
    tasks: usize,
    /// `PostgresOptions::completion_settle`; `None` keeps the default.
    settle: Option<Duration>,
    /// Rounds of the whole load matrix (`--repeat`), run in turn.
    repeat: usize,
    /// Schemas in the `tenants` scenario.
    tenants: usize,
    /// `PostgresOptions::tenants_per_connection` in the burst.
    tenants_per_connection: usize,
    /// `PostgresOptions::connections_per_tenant` of every provider of ours
    /// (the library's default unless given).
    connections_per_tenant: u32,
    /// `PostgresOptions::connection_reuse` of every provider of ours (the
    /// library's default unless given).
    connection_reuse: Duration,
    /// `PostgresOptions::prefetch_window` of every provider of ours
    /// (the library's default unless given).
    prefetch: Duration,
    /// `PostgresOptions::claim_ahead` of every provider of ours (the
    /// library's default unless given).
    claim_ahead: bool,
    /// `PostgresOptions::warm_up` of every provider of ours (the library's
    /// default unless given).
    warm_up: bool,
    /// Start the throwaway server durable (`--durable`).
    durable: bool,
    /// Create the client's superuser role on a server the user supplied.
    client_superuser: bool,
    /// Print each operation's durations per schema (`--spans`).
    spans: bool,
    /// Activities that yield once instead of sleeping 0 ms
    /// (`--activity yield`).
    yield_activities: bool,
}

fn parse_args(extras: &[Extra]) -> Result<Settings, BoxError> {
    let mut settings = Settings {
        modes: vec![SqlMode::StoredProcedures, SqlMode::InlineSql],
        extras: extras.to_vec(),
        notifications: vec![true],
        scenarios: vec!["load".into(), "latency".into()],
        concurrency: vec![(2, 2)],
        duration: Duration::from_secs(10),
        in_flight: 20,
        tasks: 5,
        settle: None,
        repeat: 1,
        tenants: 200,
        tenants_per_connection: PostgresOptions::DEFAULT_TENANTS_PER_CONNECTION,
        connections_per_tenant: PostgresOptions::default().connections_per_tenant,
        connection_reuse: PostgresOptions::DEFAULT_CONNECTION_REUSE,
        prefetch: PostgresOptions::DEFAULT_PREFETCH_WINDOW,
        claim_ahead: PostgresOptions::default().claim_ahead,
        warm_up: PostgresOptions::default().warm_up,
        durable: false,
        client_superuser: false,
        spans: false,
        yield_activities: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--modes" => {
                let modes = value()?;
                let extra = |m: &str| extras.iter().find(|e| e.name == m).copied();
                settings.extras = modes.split(',').filter_map(extra).collect();
                settings.modes = modes
                    .split(',')
                    .filter(|m| extra(m).is_none())
                    .map(|m| {
                        m.parse::<SqlMode>()
                            .map_err(|_| format!("unknown mode {m}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--concurrency" => {
                settings.concurrency = value()?
                    .split(',')
                    .map(|pair| -> Result<(usize, usize), BoxError> {
                        let (o, w) = pair.split_once(':').ok_or("concurrency is ORCH:WORKER")?;
                        Ok((o.parse()?, w.parse()?))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--notifications" => {
                settings.notifications = value()?
                    .split(',')
                    .map(|v| match v {
                        "on" => Ok(true),
                        "off" => Ok(false),
                        other => Err(format!("--notifications takes on/off, not {other}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--scenario" => {
                settings.scenarios = value()?.split(',').map(str::to_string).collect();
            }
            "--duration" => settings.duration = Duration::from_secs(value()?.parse()?),
            "--in-flight" => settings.in_flight = value()?.parse()?,
            "--repeat" => settings.repeat = value()?.parse::<usize>()?.max(1),
            "--tasks" => settings.tasks = value()?.parse()?,
            "--tenants" => settings.tenants = value()?.parse()?,
            "--tenants-per-connection" => settings.tenants_per_connection = value()?.parse()?,
            "--connections-per-tenant" => settings.connections_per_tenant = value()?.parse()?,
            "--connection-reuse-ms" => {
                settings.connection_reuse = Duration::from_millis(value()?.parse()?);
            }
            "--prefetch-ms" => {
                settings.prefetch = Duration::from_millis(value()?.parse()?);
            }
            "--claim-ahead" => {
                settings.claim_ahead = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--claim-ahead: on or off, not {other}").into()),
                };
            }
            "--warm-up" => {
                settings.warm_up = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--warm-up: on or off, not {other}").into()),
                };
            }
            "--durable" => settings.durable = true,
            "--client-superuser" => settings.client_superuser = true,
            "--spans" => settings.spans = true,
            "--activity" => {
                settings.yield_activities = match value()?.as_str() {
                    "sleep" => false,
                    "yield" => true,
                    other => return Err(format!("--activity: sleep or yield, not {other}").into()),
                };
            }
            "--settle-ms" => {
                settings.settle = Some(Duration::from_millis(value()?.parse()?));
            }
            "-h" | "--help" => {
                println!(
                    "usage: load [--modes procedures,inline{}] [--concurrency 1:1,2:2,4:4] [--duration SECS] [--in-flight N] [--tasks N] [--notifications on,off] [--settle-ms MS] [--repeat N] [--scenario load,latency,tenants,burst] [--tenants N] [--tenants-per-connection N] [--connections-per-tenant N] [--connection-reuse-ms MS] [--prefetch-ms MS] [--claim-ahead on|off] [--warm-up on|off] [--durable] [--client-superuser] [--spans] [--activity sleep|yield]",
                    extras
                        .iter()
                        .map(|e| format!(",{}", e.name))
                        .collect::<String>()
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(settings)
}

/// One run's measurements.
struct Outcome {
    /// `procedures`, `inline` or another provider's name.
    mode: &'static str,
    notifications: bool,
    /// Notifications received, empty wake-ups, quiet skips and followed
    /// fetches during the run.
    wakes: Option<(u64, u64, u64, u64)>,
    orch: usize,
    worker: usize,
    completed: u64,
    failed: u64,
    elapsed: Duration,
    tasks: usize,
    latencies_ms: Vec<f64>,
    /// (statements, server ms) sent by the runtime, if pg_stat_statements is available.
    server: Option<(f64, f64)>,
    /// CPU ms the runtime's backends used, if readable from `/proc`.
    backend_cpu_ms: Option<f64>,
    /// CPU ms this process (client, runtime, provider) used, if readable.
    process_cpu_ms: Option<f64>,
    /// Orchestration turns committed (history appends).
    turns: Option<i64>,
}

impl Outcome {
    /// The notify column: `on`/`off`, `-` for another provider (its own
    /// behaviour).
    fn notify_label(&self) -> &'static str {
        if self.mode.parse::<SqlMode>().is_err() {
            "-"
        } else if self.notifications {
            "on"
        } else {
            "off"
        }
    }
    fn per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        self.latencies_ms[idx]
    }
    fn turns_per_orch(&self) -> String {
        self.turns.map_or("n/a".to_string(), |t| {
            format!("{:.1}", t as f64 / self.completed.max(1) as f64)
        })
    }
    fn cpu_per_orch(&self) -> String {
        self.backend_cpu_ms.map_or("n/a".to_string(), |ms| {
            format!("{:.2}", ms / self.completed.max(1) as f64)
        })
    }
    fn process_cpu_per_orch(&self) -> String {
        self.process_cpu_ms.map_or("n/a".to_string(), |ms| {
            format!("{:.2}", ms / self.completed.max(1) as f64)
        })
    }
    fn per_orch(&self) -> Option<(f64, f64)> {
        let n = self.completed.max(1) as f64;
        self.server.map(|(calls, ms)| (calls / n, ms / n))
    }
}

/// Server-side statement counters for the runtime's role, if measurable:
/// (statements, planning + execution ms). Planning counts where it is
/// tracked (`pg_stat_statements.track_planning`, off on the throwaway
/// server): a prepared inline statement is
/// planned outside `total_exec_time`, while planning inside a procedure is
/// part of the call's execution time. Backend CPU is the comparable figure.
async fn stat_snapshot(admin: &PgPool, role: &str) -> Option<(f64, f64)> {
    sqlx::query_as::<_, (f64, f64)>(
        "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time + total_plan_time), 0)::float8 \
         FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE s.toplevel AND r.rolname = $1 AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(role)
    .fetch_one(admin)
    .await
    .ok()
}

/// Drops a run's schema. Another provider's background tasks may outlive
/// its runtime's shutdown for a moment and deadlock with the drop (seen with
/// the peer on a durable server): the drop is tried again a few times rather
/// than losing every figure of the run so far.
async fn drop_schema(admin: &PgPool, schema: &str) -> Result<(), BoxError> {
    let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let mut attempt = 1;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(admin)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 5 => {
                eprintln!("dropping {schema} failed ({e}); trying again");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn run_one(
    url: &str,
    client_url: &str,
    admin: &PgPool,
    target: Target,
    notifications: bool,
    (orch, worker): (usize, usize),
    settings: &Settings,
) -> Result<Outcome, BoxError> {
    let mode = target.label();
    let schema = format!("load_{mode}_{orch}_{worker}_{notifications}");
    drop_schema(admin, &schema).await?;
    // The runtime's provider, the client's, and ours again when it is ours
    // (notification counters, turns from our history table).
    let (provider, client_provider, ours): (Arc<dyn Provider>, Arc<dyn Provider>, _) = match target
    {
        Target::Ours(sql_mode) => {
            let mut options = PostgresOptions::default()
                .schema(schema.clone())
                .sql_mode(sql_mode)
                .notifications(notifications)
                .max_connections(u32::try_from(orch + worker + 4)?)
                .connections_per_tenant(settings.connections_per_tenant)
                .connection_reuse(settings.connection_reuse)
                .prefetch_window(settings.prefetch)
                .claim_ahead(settings.claim_ahead)
                .warm_up(settings.warm_up);
            if let Some(settle) = settings.settle {
                options = options.completion_settle(settle);
            }
            let provider = Arc::new(PostgresProvider::connect_with(url, options.clone()).await?);
            let client =
                PostgresProvider::connect_with(client_url, options.max_connections(8)).await?;
            (provider.clone(), Arc::new(client), Some(provider))
        }
        Target::Extra(extra) => (
            (extra.factory)(url.to_string(), schema.clone()).await?,
            (extra.factory)(client_url.to_string(), schema.clone()).await?,
            None,
        ),
    };
    // The mode in force, which the environment may have overridden.
    let mode = ours.as_ref().map_or(mode, |p| p.sql_mode().as_str());
    // The runtime connects as the admin pool's role (same URL).
    let runtime_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(admin)
        .await?;

    let rt = Runtime::start_with_options(
        provider.clone(),
        activities(settings.yield_activities),
        create_default_orchestrations(),
        RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(100),
            orchestration_concurrency: orch,
            worker_concurrency: worker,
            ..Default::default()
        },
    )
    .await;
    let client = Arc::new(Client::new(client_provider));
    let input = serde_json::json!({ "task_count": settings.tasks }).to_string();

    let before = stat_snapshot(admin, &runtime_role).await;
    let cpu_before = backend_cpu::snapshot(admin, &runtime_role).await;
    let own_before = backend_cpu::own_ms();
    let wakes_before = ours.as_ref().and_then(|p| p.notification_stats());
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + settings.duration;
    let next_id = Arc::new(AtomicU64::new(0));

    let pumps = (0..settings.in_flight).map(|_| {
        let (client, input, completed, failed, latencies, next_id) = (
            client.clone(),
            input.clone(),
            completed.clone(),
            failed.clone(),
            latencies.clone(),
            next_id.clone(),
        );
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let instance = format!("load-{}", next_id.fetch_add(1, Ordering::Relaxed));
                let t0 = Instant::now();
                let ok = match client
                    .start_orchestration(&instance, "FanoutOrchestration", input.clone())
                    .await
                {
                    Ok(()) => matches!(
                        client
                            .wait_for_orchestration(&instance, Duration::from_secs(60))
                            .await,
                        Ok(OrchestrationStatus::Completed { .. })
                    ),
                    Err(_) => false,
                };
                if ok {
                    completed.fetch_add(1, Ordering::Relaxed);
                    latencies
                        .lock()
                        .await
                        .push(t0.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    let pumps: Vec<_> = pumps.collect();

    let label = match target {
        Target::Extra(_) => format!("{mode} {orch}:{worker}"),
        Target::Ours(_) => format!(
            "{mode} {orch}:{worker} notify {}",
            if notifications { "on" } else { "off" }
        ),
    };
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = completed.load(Ordering::Relaxed);
        eprint!(
            "\r[{label}] {:>5.1}s  completed {done:>6}  ({:>7.1}/s)  failed {}   ",
            started.elapsed().as_secs_f64(),
            done as f64 / started.elapsed().as_secs_f64(),
            failed.load(Ordering::Relaxed)
        );
    }
    for pump in pumps {
        pump.await?;
    }
    let elapsed = started.elapsed();
    let after = stat_snapshot(admin, &runtime_role).await;
    let cpu_after = backend_cpu::snapshot(admin, &runtime_role).await;
    let own_after = backend_cpu::own_ms();
    let wakes = ours
        .as_ref()
        .and_then(|p| p.notification_stats())
        .zip(wakes_before)
        .map(|(a, b)| {
            (
                a.received - b.received,
                a.empty_wakeups - b.empty_wakeups,
                a.quiet_skips - b.quiet_skips,
                a.followed - b.followed,
            )
        });
    eprintln!();
    rt.shutdown(None).await;

    let mut latencies_ms = std::mem::take(&mut *latencies.lock().await);
    latencies_ms.sort_by(f64::total_cmp);
    // Every turn appends history in one transaction, stamped with one time:
    // distinct stamps per execution count the turns.
    let turns: Option<i64> = match ours {
        Some(_) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT (instance_id, execution_id, created_at_ms)) FROM \"{schema}\".history"
        )))
        .fetch_one(admin)
        .await
        .ok(),
        None => None,
    };
    drop_schema(admin, &schema).await?;
    Ok(Outcome {
        mode,
        notifications,
        wakes,
        orch,
        worker,
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        tasks: settings.tasks,
        latencies_ms,
        server: before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
        backend_cpu_ms: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| backend_cpu::used_ms(&b, &a)),
        process_cpu_ms: own_before.zip(own_after).map(|(b, a)| a - b),
        turns,
    })
}

/// The client connects as its own role so its polling is not counted as
/// runtime work: a superuser role the tool creates on its own server, or on
/// a server the user supplied only when `create_on_theirs` (and it says so).
async fn client_url(url: &str, admin: &PgPool, own_server: bool, create_on_theirs: bool) -> String {
    if !own_server && !create_on_theirs {
        eprintln!(
            "client: shares the runtime's role on your server (no role created; --client-superuser creates duroxide_load_client), so its statements count as the runtime's"
        );
        return url.to_string();
    }
    if !own_server {
        eprintln!(
            "client: creating SUPERUSER role duroxide_load_client on your server (--client-superuser)"
        );
    }
    let created = sqlx::query(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'duroxide_load_client') \
         THEN CREATE ROLE duroxide_load_client LOGIN SUPERUSER; END IF; END $$",
    )
    .execute(admin)
    .await;
    match (created, url.split_once("://"), url.split_once('@')) {
        (Ok(_), Some((scheme, _)), Some((_, host))) => {
            format!("{scheme}://duroxide_load_client@{host}")
        }
        _ => url.to_string(),
    }
}

/// Prints the server's durability settings.
async fn print_server_settings(admin: &PgPool, durable_asked: bool, own_server: bool) {
    let show = |name: &'static str| async move {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(admin)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    let (fsync, sync_commit) = (show("fsync").await, show("synchronous_commit").await);
    println!("server: fsync = {fsync}, synchronous_commit = {sync_commit}");
    if durable_asked && !own_server && (fsync != "on" || sync_commit != "on") {
        eprintln!("--durable asked for, but the server you supplied is not durable");
    }
}

/// Refuses a comparison of SQL modes that the environment would collapse
/// into one mode against itself.
fn check_mode_override(modes: &[SqlMode]) -> Result<(), BoxError> {
    let forced = std::env::var(SqlMode::ENV_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    if let Some(forced) = forced {
        if modes.len() > 1 {
            return Err(format!(
                "{}={forced} forces every provider into one SQL mode: unset it to compare {} (or pass --modes with one mode)",
                SqlMode::ENV_VAR,
                modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" and ")
            )
            .into());
        }
        eprintln!(
            "{}={forced} is set: the mode in force is what each table shows",
            SqlMode::ENV_VAR
        );
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    run(&[])
}

/// The activities the runtime runs: duroxide's stress activities (a 0 ms
/// sleep), or with `yield_once` the same activity yielding once instead.
fn activities(yield_once: bool) -> duroxide::runtime::registry::ActivityRegistry {
    if !yield_once {
        return create_default_activities(0);
    }
    duroxide::runtime::registry::ActivityRegistry::builder()
        .register(
            "ProcessTask",
            |_ctx: duroxide::ActivityContext, input: String| async move {
                tokio::task::yield_now().await;
                Ok(format!("processed: {input}"))
            },
        )
        .build()
}

/// The tool's body; `extras` adds modes served by other providers (see
/// `benches/peer`), all run by default.
pub fn run(extras: &[Extra]) -> Result<(), BoxError> {
    let settings = parse_args(extras)?;
    check_mode_override(&settings.modes)?;
    if settings.spans {
        spans::install()?;
    }
    let (url, own_server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, false),
        _ => {
            let server = if settings.durable {
                ThrowawayPostgres::start_with_args(&["--durable"])?
            } else {
                ThrowawayPostgres::start()?
            };
            eprintln!(
                "throwaway PostgreSQL at {} (pg_stat_statements on{})",
                server.url(),
                if settings.durable { ", durable" } else { "" }
            );
            (server.url().to_string(), true)
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?;
        if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&admin)
            .await
            .is_err()
        {
            eprintln!("pg_stat_statements unavailable: statement counts will read n/a");
        }
        print_server_settings(&admin, settings.durable, own_server).await;
        let client_url = client_url(&url, &admin, own_server, settings.client_superuser).await;
        if settings.scenarios.iter().any(|s| s == "load") {
            let mut outcomes = Vec::new();
            // Every target in the order given: other providers (with their
            // own notifications), then ours per notifications setting.
            let targets = settings
                .extras
                .iter()
                .map(|&extra| (Target::Extra(extra), true))
                .chain(settings.modes.iter().flat_map(|&mode| {
                    settings
                        .notifications
                        .iter()
                        .map(move |&notify| (Target::Ours(mode), notify))
                }))
                .collect::<Vec<_>>();
            for round in 0..settings.repeat {
                // Each round starts one target later, so no target always
                // runs first (on a cold cache) or right after a given one.
                let mut order = targets.clone();
                let shift = round % order.len().max(1);
                order.rotate_left(shift);
                for &pair in &settings.concurrency {
                    for &(target, notify) in &order {
                        outcomes.push(
                            run_one(&url, &client_url, &admin, target, notify, pair, &settings)
                                .await?,
                        );
                    }
                }
            }
            table::print_table(&outcomes);
        }
        if settings.scenarios.iter().any(|s| s == "latency") {
            let mut rows = Vec::new();
            for &mode in &settings.modes {
                for &notify in &settings.notifications {
                    rows.push(latency::run(&url, &client_url, &admin, mode, notify).await?);
                }
            }
            latency::print(&rows);
        }
        if settings.scenarios.iter().any(|s| s == "tenants") {
            let mut rows = Vec::new();
            for &mode in &settings.modes {
                rows.push(tenants::run(&url, &admin, mode, settings.tenants).await?);
            }
            tenants::print(&rows);
        }
        if settings
            .scenarios
            .iter()
            .any(|s| s == "tenants" || s == "burst")
        {
            let mut bursts = Vec::new();
            for &mode in &settings.modes {
                let shape = burst::Shape {
                    tenants: settings.tenants,
                    tenants_per_connection: settings.tenants_per_connection,
                    connections_per_tenant: settings.connections_per_tenant,
                    connection_reuse: settings.connection_reuse,
                    prefetch: settings.prefetch,
                    claim_ahead: settings.claim_ahead,
                    warm_up: settings.warm_up,
                    settle: settings.settle,
                };
                bursts.push(burst::run(&url, &admin, mode, shape).await?);
            }
            burst::print(&bursts);
        }
        if settings.spans {
            spans::print();
        }
        Ok(())
    })
}
