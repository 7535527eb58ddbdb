//! The `burst` half of the `tenants` scenario: one fan-out
//! orchestration, with the same instance id, started at once in each of
//! `--tenants` tenants, each tenant with its own runtime (1 orchestration and
//! 1 worker dispatcher) on one shared pool of 20; then, in the same run, the
//! same number of orchestrations in ONE tenant with 4 orchestration and 4
//! worker dispatchers on a pool of 20. The burst runs twice on the same
//! runtimes (cold, then warm; see [`rounds`]).
//!
//! Times are the database's: from just before the starts to the last
//! execution's `completed_at_ms`, so the client's status polling adds
//! nothing. Also reported, from the pool's `AdmissionStats`: leases found
//! gone by acks and renewals, the slowest pool acquire of leased work, and
//! connections recycled; and from `/proc` (when the server is local), the
//! private memory (`RssAnon`: heap, not the shared buffers) of the pool's
//! backends when the burst ends: the largest and the sum.

use std::sync::Arc;
use std::time::Duration;

use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::providers::Provider;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationStatus};
use duroxide_postgres::{
    AdmissionStats, PostgresOptions, PostgresProvider, SchemaName, SqlMode, tenants,
};
use sqlx::PgPool;

use super::BoxError;

#[path = "burst_probe.rs"]
mod probe;
use probe::Probe;

/// Rounds of the burst on the same runtimes and pool
/// (`DUROXIDE_LOAD_BURST_ROUNDS`, default 2): the first finds every
/// backend cold for its tenants (each tenant's procedures compiled, its
/// statements planned and its tables' catalog entries loaded on its
/// connection), the second and later ones find them warm. The table shows
/// the first and the second.
fn rounds() -> usize {
    std::env::var("DUROXIDE_LOAD_BURST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize)
        .max(1)
}

/// The shared pool's size, as in the issue.
const POOL: u32 = 20;
/// Each pool's `application_name`, to find its backends.
const APP: &str = "duroxide_burst";

/// The burst's tenants and how they share the pool.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Tenants, one orchestration each.
    pub tenants: usize,
    /// `PostgresOptions::tenants_per_connection`.
    pub tenants_per_connection: usize,
    /// `PostgresOptions::connections_per_tenant` of the burst's tenants.
    pub connections_per_tenant: u32,
    /// `PostgresOptions::connection_reuse` of the burst's tenants.
    pub connection_reuse: std::time::Duration,
    /// `PostgresOptions::prefetch_window` of every tenant, the
    /// one-tenant run's included.
    pub prefetch: std::time::Duration,
    /// `PostgresOptions::claim_ahead` of every tenant, the one-tenant run's
    /// too.
    pub claim_ahead: bool,
    /// `PostgresOptions::warm_up` of every provider, clients' and the
    /// one-tenant run's included.
    pub warm_up: bool,
    /// `PostgresOptions::completion_settle` of every tenant, the one-tenant
    /// run's included; `None` keeps the default.
    pub settle: Option<Duration>,
}

/// One burst row: the spread burst against the one-tenant run.
pub struct Row {
    mode: SqlMode,
    tenants: usize,
    tenants_per_connection: usize,
    connections_per_tenant: u32,
    burst_s: f64,
    /// The second round on the same runtimes and pool, if run.
    warm_s: Option<f64>,
    single_s: f64,
    failed: usize,
    stats: AdmissionStats,
    /// (largest, sum) of the pool backends' private memory, MiB.
    memory_mib: Option<(f64, f64)>,
    single_memory_mib: Option<(f64, f64)>,
}

fn options(mode: SqlMode, schema: &str, tenants_per_connection: usize) -> PostgresOptions {
    PostgresOptions::default()
        .schema(schema.to_string())
        .sql_mode(mode)
        .max_connections(POOL)
        .tenants_per_connection(tenants_per_connection)
}

/// A runtime tenant's options: [`options`] and the burst's shape.
fn tenant_options(mode: SqlMode, schema: &str, shape: &Shape) -> PostgresOptions {
    let options = options(mode, schema, shape.tenants_per_connection)
        .connections_per_tenant(shape.connections_per_tenant)
        .connection_reuse(shape.connection_reuse)
        .prefetch_window(shape.prefetch)
        .claim_ahead(shape.claim_ahead)
        .warm_up(shape.warm_up);
    match shape.settle {
        Some(settle) => options.completion_settle(settle),
        None => options,
    }
}

async fn shared_pool(url: &str, mode: SqlMode, per_connection: usize) -> Result<PgPool, BoxError> {
    let o = options(mode, "public", per_connection);
    let connect = o.connect_options(url)?.application_name(APP);
    Ok(o.pool_options().connect_with(connect).await?)
}

/// Private memory (`RssAnon`) of every backend of the pools named [`APP`],
/// MiB: (largest, sum). `None` when `/proc` does not show them.
async fn backend_memory(admin: &PgPool) -> Option<(f64, f64)> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(APP)
    .fetch_all(admin)
    .await
    .ok()?;
    let mut sizes = Vec::new();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue; // exited meanwhile
        };
        let kib = status.lines().find_map(|l| {
            l.strip_prefix("RssAnon:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })?;
        sizes.push(kib / 1024.0);
    }
    if sizes.is_empty() {
        return None;
    }
    Some((
        sizes.iter().copied().fold(0.0, f64::max),
        sizes.iter().sum(),
    ))
}

/// The database clock, ms.
async fn now_ms(admin: &PgPool) -> Result<f64, BoxError> {
    Ok(
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8")
            .fetch_one(admin)
            .await?,
    )
}

/// What [`drive`] measured.
struct Driven {
    /// From `t0` to the last completion, s.
    seconds: f64,
    /// Orchestrations that did not complete.
    failed: usize,
    /// Each orchestration's first turn (its first history event's commit)
    /// and completion, ms after `t0`, sorted.
    first_turn: Vec<f64>,
    done: Vec<f64>,
}

impl Driven {
    /// The timeline, one line: when the first turns and the completions
    /// came, ms after the starts began.
    fn timeline(&self) -> String {
        let at = |v: &[f64], q: f64| {
            v.get(((v.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map_or("n/a".to_string(), |t| format!("{t:.0}"))
        };
        format!(
            "first turn p10 {} p50 {} max {} ms; done p10 {} p50 {} max {} ms",
            at(&self.first_turn, 0.1),
            at(&self.first_turn, 0.5),
            at(&self.first_turn, 1.0),
            at(&self.done, 0.1),
            at(&self.done, 0.5),
            at(&self.done, 1.0),
        )
    }
}

/// Starts `ids` on each client at once, waits for all, and returns the
/// database time from `t0` to the last completion, how many failed, and
/// each orchestration's first turn and completion (from the commit times
/// the provider records).
///
/// It waits by polling the executions tables itself, one statement for all
/// the orchestrations every 100 ms, then reads each one's status once:
/// duroxide's `Client::wait_for_orchestration` polls every orchestration's
/// status up to ten times a second (two procedure calls each), which with
/// 200 waiters is thousands of calls a second on the server under test,
/// more the longer the run takes.
async fn drive(
    admin: &PgPool,
    work: &[(Client, String, String)],
    t0: f64,
) -> Result<Driven, BoxError> {
    let input = serde_json::json!({ "task_count": 5 }).to_string();
    let starts = work.iter().map(|(client, _, id)| {
        client.start_orchestration(id.clone(), "FanoutOrchestration", input.clone())
    });
    for started in futures::future::join_all(starts).await {
        started?;
    }
    // Names and ids are the tool's own (validated schema names, fixed ids).
    let branches: Vec<String> = work
        .iter()
        .map(|(_, schema, id)| {
            format!(
                "SELECT completed_at_ms FROM \"{schema}\".executions \
                 WHERE instance_id = '{id}' AND completed_at_ms IS NOT NULL"
            )
        })
        .collect();
    let done_sql = format!(
        "SELECT count(*)::int8, max(completed_at_ms)::int8 FROM ({}) done",
        branches.join(" UNION ALL ")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let last = loop {
        let (done, last): (i64, Option<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(done_sql.to_string()))
                .fetch_one(admin)
                .await?;
        if done as usize >= work.len() {
            break last.map_or(t0, |d| d as f64);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{done} of {} done after 600 s", work.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut failed = 0;
    for (client, _, id) in work {
        let status = client.get_orchestration_status(id).await;
        if !matches!(status, Ok(OrchestrationStatus::Completed { .. })) {
            failed += 1;
        }
    }
    let times_sql = work
        .iter()
        .map(|(_, schema, id)| {
            format!(
                "SELECT (SELECT min(h.created_at_ms) FROM \"{schema}\".history h \
                          WHERE h.instance_id = '{id}')::float8 - {t0}, \
                        (SELECT max(e.completed_at_ms) FROM \"{schema}\".executions e \
                          WHERE e.instance_id = '{id}')::float8 - {t0}"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let times: Vec<(Option<f64>, Option<f64>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(times_sql.to_string()))
            .fetch_all(admin)
            .await?;
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    Ok(Driven {
        seconds: (last - t0) / 1000.0,
        failed,
        first_turn: sorted(times.iter().filter_map(|t| t.0).collect()),
        done: sorted(times.iter().filter_map(|t| t.1).collect()),
    })
}

async fn drop_all(admin: &PgPool, names: &[String]) -> Result<(), BoxError> {
    for name in names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(admin)
        .await?;
    }
    Ok(())
}

/// Runs the burst for one mode.
pub async fn run(url: &str, admin: &PgPool, mode: SqlMode, shape: Shape) -> Result<Row, BoxError> {
    let (tenants, per_connection) = (shape.tenants, shape.tenants_per_connection);
    let names: Vec<String> = (0..tenants)
        .map(|i| format!("burst_{}_{i}", mode.as_str()))
        .collect();
    let single = format!("burst_{}_single", mode.as_str());
    let mut all = names.clone();
    all.push(single.clone());
    drop_all(admin, &all).await?;

    // Provisioned before the clock starts.
    let provision = PostgresOptions::default()
        .max_connections(16)
        .pool_options()
        .connect_with(PostgresOptions::default().connect_options(url)?)
        .await?;
    let schemas = all
        .iter()
        .map(|n| SchemaName::new(n))
        .collect::<Result<Vec<_>, _>>()?;
    for outcome in tenants::migrate_many_with(&provision, &schemas, mode, 8, |_| {}).await {
        outcome.result?;
    }
    provision.close().await;
    let clients_pool = PostgresOptions::default()
        .max_connections(8)
        .connect_options(url)
        .map(|c| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect_with(c)
        })?
        .await?;
    let client = |schema: &str| {
        let options = options(mode, schema, 0)
            .notifications(false)
            .warm_up(shape.warm_up);
        let pool = clients_pool.clone();
        async move {
            Ok::<_, BoxError>(Client::new(Arc::new(
                PostgresProvider::from_pool_with(pool, options).await?,
            )))
        }
    };

    // The burst: a runtime per tenant on one shared pool.
    let pool = shared_pool(url, mode, per_connection).await?;
    let mut runtimes = Vec::new();
    let mut work = Vec::new();
    let mut first = None;
    for name in &names {
        let provider =
            PostgresProvider::from_pool_with(pool.clone(), tenant_options(mode, name, &shape))
                .await?;
        if provider.sql_mode() != mode {
            return Err(format!("{name} runs {} instead of {mode}", provider.sql_mode()).into());
        }
        first.get_or_insert_with(|| provider.clone());
        runtimes.push(start_runtime(Arc::new(provider), 1).await);
        work.push((client(name).await?, name.clone(), "burst".to_string()));
    }
    let first = first.ok_or("no tenants")?;
    let before = Probe::now(admin).await?;
    let t0 = now_ms(admin).await?;
    let driven = drive(admin, &work, t0).await?;
    let (burst_s, mut failed_burst) = (driven.seconds, driven.failed);
    let memory_mib = backend_memory(admin).await;
    let after = first.admission_stats();
    let used = before.until(&Probe::now(admin).await?);
    eprintln!("[burst {mode} x{tenants}] {burst_s:.1} s, {failed_burst} failed, {after:?}");
    eprintln!("[burst {mode} x{tenants}] {}", driven.timeline());
    eprintln!("[burst {mode} x{tenants}] {}", used.describe(tenants));
    let mut warm_s = None;
    for round in 2..=rounds() {
        for (_, _, id) in &mut work {
            *id = format!("burst-{round}");
        }
        let before = Probe::now(admin).await?;
        let t0 = now_ms(admin).await?;
        let driven = drive(admin, &work, t0).await?;
        failed_burst += driven.failed;
        warm_s.get_or_insert(driven.seconds);
        let used = before.until(&Probe::now(admin).await?);
        eprintln!(
            "[burst {mode} x{tenants} round {round}] {:.1} s, {} failed, {:?}",
            driven.seconds,
            driven.failed,
            first.admission_stats()
        );
        eprintln!(
            "[burst {mode} x{tenants} round {round}] {}",
            driven.timeline()
        );
        eprintln!(
            "[burst {mode} x{tenants} round {round}] {}",
            used.describe(tenants)
        );
    }
    for rt in runtimes {
        rt.shutdown(None).await;
    }
    pool.close().await;

    // The same orchestrations in one tenant, 4 + 4 dispatchers, pool of 20,
    // with the same tenant affinity (a lone tenant's share is the pool).
    let pool = shared_pool(url, mode, per_connection).await?;
    let provider =
        PostgresProvider::from_pool_with(pool.clone(), tenant_options(mode, &single, &shape))
            .await?;
    let rt = start_runtime(Arc::new(provider), 4).await;
    let c = client(&single).await?;
    let work: Vec<_> = (0..tenants)
        .map(|i| (c.clone(), single.clone(), format!("burst-{i}")))
        .collect();
    let before = Probe::now(admin).await?;
    let t0 = now_ms(admin).await?;
    let driven = drive(admin, &work, t0).await?;
    let (single_s, failed_single) = (driven.seconds, driven.failed);
    let single_memory_mib = backend_memory(admin).await;
    let used = before.until(&Probe::now(admin).await?);
    eprintln!("[burst {mode} one tenant] {single_s:.1} s, {failed_single} failed");
    eprintln!("[burst {mode} one tenant] {}", driven.timeline());
    eprintln!("[burst {mode} one tenant] {}", used.describe(tenants));
    rt.shutdown(None).await;
    pool.close().await;
    clients_pool.close().await;
    drop_all(admin, &all).await?;
    Ok(Row {
        mode,
        tenants,
        tenants_per_connection: per_connection,
        connections_per_tenant: shape.connections_per_tenant,
        burst_s,
        warm_s,
        single_s,
        failed: failed_burst + failed_single,
        stats: after,
        memory_mib,
        single_memory_mib,
    })
}

async fn start_runtime(provider: Arc<dyn Provider>, dispatchers: usize) -> Arc<Runtime> {
    Runtime::start_with_options(
        provider,
        create_default_activities(0),
        create_default_orchestrations(),
        RuntimeOptions {
            orchestration_concurrency: dispatchers,
            worker_concurrency: dispatchers,
            ..Default::default()
        },
    )
    .await
}

/// Prints the burst table.
pub fn print(rows: &[Row]) {
    println!();
    println!(
        "| mode | tenants | tenants/connection | connections/tenant | burst s | warm burst s | one tenant 4:4 s | ratio | warm ratio | lease expiries | slowest leased acquire ms | connections recycled | backend private MiB max / sum (burst) | (one tenant) | failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mem = |m: Option<(f64, f64)>| {
        m.map_or("n/a".to_string(), |(max, sum)| {
            format!("{max:.0} / {sum:.0}")
        })
    };
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {:.2}x | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.mode,
            r.tenants,
            r.tenants_per_connection,
            r.connections_per_tenant,
            r.burst_s,
            r.warm_s.map_or("n/a".to_string(), |w| format!("{w:.1}")),
            r.single_s,
            r.burst_s / r.single_s,
            r.warm_s
                .map_or("n/a".to_string(), |w| format!("{:.2}x", w / r.single_s)),
            r.stats.lease_expiries,
            r.stats.slowest_leased_acquire.as_secs_f64() * 1000.0,
            r.stats.connections_recycled,
            mem(r.memory_mib),
            mem(r.single_memory_mib),
            r.failed
        );
    }
}
