//! Per-operation latency of the provider on a local PostgreSQL.
//!
//! ```text
//! cargo bench --bench provider_ops
//! ```
//!
//! Uses `DATABASE_URL` or starts a throwaway server. Every operation is
//! measured in both SQL modes (groups `procedures/...` and `inline/...`),
//! each in its own schema. After each group the round trips per operation
//! (statements the server ran, from `pg_stat_statements`) are printed:
//! in procedure mode every provider call is one, so a turn (fetch + ack) and
//! a worker cycle (fetch + ack) are two.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use duroxide::Event;
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode, ThrowawayPostgres};
use tokio::runtime::Runtime;

#[path = "../tests/integration/fixtures.rs"]
mod fixtures;
use fixtures::{activity, event, metadata, start};

const LOCK: Duration = Duration::from_secs(30);

/// Unique instance ids across all iterations.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => ThrowawayPostgres::start()
            .map(|s| s.url().to_string())
            .unwrap_or_else(|e| panic!("no DATABASE_URL and no throwaway server: {e}")),
    }
}

async fn provider(url: &str, schema: &str, mode: SqlMode) -> Arc<PostgresProvider> {
    // As the provider's own pool: its connection settings (generic plans),
    // no ping in front of every operation.
    let connect = PostgresOptions::default()
        .connect_options(url)
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .test_before_acquire(false)
        .connect_with(connect)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let options = PostgresOptions::default().schema(schema).sql_mode(mode);
    Arc::new(
        PostgresProvider::from_pool_with(pool, options)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// An instance with `events` history events and nothing queued.
async fn seeded_instance(p: &PostgresProvider, instance: &str, events: u64) {
    p.enqueue_for_orchestrator(start(instance), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no item"));
    let history: Vec<Event> = (1..=events).map(|id| event(instance, id)).collect();
    p.ack_orchestration_item(&token, 1, history, vec![], vec![], metadata(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn benches(c: &mut Criterion) {
    let url = database_url();
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        bench_mode(c, &rt, &url, mode);
    }
}

/// Fetch and ack one orchestration turn (1 history event, 1 worker item).
async fn turn(p: &PostgresProvider) {
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no item"));
    p.ack_orchestration_item(
        &token,
        1,
        vec![event(&item.instance, 1)],
        vec![activity(&item.instance, 2)],
        vec![],
        metadata(),
        vec![],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Fetch one activity and ack it with its completion.
async fn worker_cycle(p: &PostgresProvider) {
    let (item, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no work"));
    let WorkItem::ActivityExecute { instance, id, .. } = item else {
        panic!("not an activity")
    };
    let done = WorkItem::ActivityCompleted {
        instance,
        execution_id: 1,
        id,
        result: "ok".into(),
    };
    p.ack_work_item(&token, Some(done))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Enqueue a start for a new instance and lease it; returns the lock token.
async fn lease(p: &PostgresProvider, prefix: &str) -> String {
    p.enqueue_for_orchestrator(start(&unique(prefix)), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no item"));
    token
}

/// Top-level statements the server has finished in this database so far
/// (`pg_stat_statements`; `None` when the extension is not available).
async fn statements_so_far(p: &PostgresProvider) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT sum(calls)::bigint FROM pg_stat_statements \
         WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(p.pool())
    .await
    .ok()
    .flatten()
}

/// Round trips (statements sent) per operation, measured on the server over
/// `N` sequential runs; the counting query itself is subtracted.
async fn round_trips(p: &PostgresProvider, mode: SqlMode) {
    const N: i64 = 20;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(p.pool())
        .await
        .ok();
    if statements_so_far(p).await.is_none() {
        eprintln!("round trips: pg_stat_statements unavailable, skipped");
        return;
    }
    let mut report = Vec::new();
    macro_rules! count {
        ($name:expr, $prepare:expr, $op:expr) => {{
            let mut total = 0;
            for _ in 0..N {
                let prepared = $prepare;
                let before = statements_so_far(p).await.unwrap_or(0);
                $op(prepared).await;
                let after = statements_so_far(p).await.unwrap_or(0);
                total += after - before - 1;
            }
            report.push(($name, total as f64 / N as f64));
        }};
    }
    count!(
        "enqueue_for_orchestrator",
        unique("rt-enqueue"),
        |i: String| async move {
            p.enqueue_for_orchestrator(start(&i), None)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    );
    count!(
        "orchestration_turn",
        {
            p.enqueue_for_orchestrator(start(&unique("rt-turn")), None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        },
        |_: ()| turn(p)
    );
    count!("worker_cycle", (), |_: ()| worker_cycle(p));
    count!("read_history(100)", (), |_: ()| async {
        p.read("hist-100").await.unwrap_or_else(|e| panic!("{e}"));
    });
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "TRUNCATE \"bench_{mode}\".orchestrator_queue"
    )))
    .execute(p.pool())
    .await
    .ok();
    count!(
        "abandon_orchestration_item",
        { lease(p, "rt-abandon").await },
        |token: String| async move {
            p.abandon_orchestration_item(&token, Some(Duration::from_secs(3600)), false)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    );
    count!(
        "renew_orchestration_item_lock",
        { lease(p, "rt-renew").await },
        |token: String| async move {
            p.renew_orchestration_item_lock(&token, LOCK)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    );
    for (name, trips) in report {
        eprintln!("round trips/op  {mode:<10} {name:<32} {trips:.1}");
    }
}

fn bench_mode(c: &mut Criterion, rt: &Runtime, url: &str, mode: SqlMode) {
    let schema = format!("bench_{mode}");
    let p = rt.block_on(provider(url, &schema, mode));
    let mut group = c.benchmark_group(mode.as_str());
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("enqueue_for_orchestrator", |b| {
        b.to_async(rt).iter(|| {
            let p = p.clone();
            let instance = unique("enqueue");
            async move {
                p.enqueue_for_orchestrator(start(&instance), None)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        })
    });
    rt.block_on(async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "TRUNCATE \"{schema}\".orchestrator_queue"
        )))
        .execute(p.pool())
        .await
        .ok();
    });

    group.bench_function("orchestration_turn", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let p = p.clone();
            async move {
                for _ in 0..iters {
                    p.enqueue_for_orchestrator(start(&unique("turn")), None)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let begin = Instant::now();
                for _ in 0..iters {
                    turn(&p).await;
                }
                begin.elapsed()
            }
        })
    });

    group.bench_function("worker_cycle", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let p = p.clone();
            async move {
                for _ in 0..iters {
                    p.enqueue_for_worker(activity(&unique("work"), 2))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let begin = Instant::now();
                for _ in 0..iters {
                    worker_cycle(&p).await;
                }
                begin.elapsed()
            }
        })
    });
    rt.block_on(async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "TRUNCATE \"{schema}\".orchestrator_queue"
        )))
        .execute(p.pool())
        .await
        .ok();
    });

    for events in [10u64, 100, 1000] {
        let instance = format!("hist-{events}");
        rt.block_on(seeded_instance(&p, &instance, events));
        group.bench_with_input(
            BenchmarkId::new("read_history", events),
            &instance,
            |b, instance| {
                b.to_async(rt).iter(|| {
                    let p = p.clone();
                    let instance = instance.clone();
                    async move { p.read(&instance).await.unwrap_or_else(|e| panic!("{e}")) }
                })
            },
        );
    }

    group.bench_function("abandon_orchestration_item", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let p = p.clone();
            async move {
                p.enqueue_for_orchestrator(start("abandon-me"), None)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_, token, _) = p
                        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"))
                        .unwrap_or_else(|| panic!("no item"));
                    let begin = Instant::now();
                    p.abandon_orchestration_item(&token, None, true)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    total += begin.elapsed();
                }
                total
            }
        })
    });

    // Criterion may call a bench closure more than once: take the lease outside it.
    let token = rt.block_on(lease(&p, "renew"));
    group.bench_function("renew_orchestration_item_lock", |b| {
        b.to_async(rt).iter(|| {
            let p = p.clone();
            let token = token.clone();
            async move {
                p.renew_orchestration_item_lock(&token, LOCK)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        })
    });
    group.finish();
    rt.block_on(round_trips(&p, mode));
}

criterion_group!(provider_ops, benches);
criterion_main!(provider_ops);
