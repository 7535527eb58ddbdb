//! Per-operation latency of the provider on a local PostgreSQL.
//!
//! ```text
//! cargo bench --bench provider_ops
//! ```
//!
//! Uses `DATABASE_URL` or starts a throwaway server. Each benchmark works in
//! its own schema. Every provider operation is one round trip, so an
//! "orchestration turn" (fetch + ack) and a "worker cycle" (fetch + ack) are
//! two round trips each; the rest are one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use duroxide::Event;
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{PostgresProvider, ThrowawayPostgres};
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

async fn provider(url: &str, schema: &str) -> Arc<PostgresProvider> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(
        PostgresProvider::from_pool(pool, schema)
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
    let p = rt.block_on(provider(&url, "bench_ops"));
    let mut group = c.benchmark_group("procedures");
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("enqueue_for_orchestrator", |b| {
        b.to_async(&rt).iter(|| {
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
        sqlx::query("TRUNCATE bench_ops.orchestrator_queue")
            .execute(p.pool())
            .await
            .ok();
    });

    group.bench_function("orchestration_turn", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let p = p.clone();
            async move {
                for _ in 0..iters {
                    p.enqueue_for_orchestrator(start(&unique("turn")), None)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let begin = Instant::now();
                for _ in 0..iters {
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
                begin.elapsed()
            }
        })
    });

    group.bench_function("worker_cycle", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let p = p.clone();
            async move {
                for _ in 0..iters {
                    p.enqueue_for_worker(activity(&unique("work"), 2))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let begin = Instant::now();
                for _ in 0..iters {
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
                begin.elapsed()
            }
        })
    });
    rt.block_on(async {
        sqlx::query("TRUNCATE bench_ops.orchestrator_queue")
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
                b.to_async(&rt).iter(|| {
                    let p = p.clone();
                    let instance = instance.clone();
                    async move { p.read(&instance).await.unwrap_or_else(|e| panic!("{e}")) }
                })
            },
        );
    }

    group.bench_function("abandon_orchestration_item", |b| {
        b.to_async(&rt).iter_custom(|iters| {
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
    let token = rt.block_on(async {
        p.enqueue_for_orchestrator(start(&unique("renew")), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no item"));
        token
    });
    group.bench_function("renew_orchestration_item_lock", |b| {
        b.to_async(&rt).iter(|| {
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
}

criterion_group!(provider_ops, benches);
criterion_main!(provider_ops);
