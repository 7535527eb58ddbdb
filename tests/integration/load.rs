//! A real runtime at 4:4 dispatchers on its own database: every orchestration
//! completes and the server records no deadlock, even though the listening
//! connection is killed halfway. Guards the orchestration claim (see
//! docs/architecture.md): row locks left on skipped candidates once
//! deadlocked dispatchers against each other under exactly this load; and
//! long polling's recovery: nothing is lost while the listener reconnects.

use std::sync::Arc;
use std::time::Duration;

use duroxide::Client;
use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide_postgres::PostgresProvider;

use crate::fixtures::{fan_outs_complete, start_fan_outs};
use crate::support::{Kind, ScratchDatabase, Slot, pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_by_four_dispatchers_complete_everything_without_deadlocks_or_a_listener() {
    let _slot = Slot::acquire(Kind::Runtime);
    let scratch = ScratchDatabase::create(&format!("dx_load_{}", std::process::id()), 12).await;
    let db = scratch.name.clone();
    let db_pool = scratch.pool.clone();
    let admin = pool(2).await;
    let provider = Arc::new(
        PostgresProvider::from_pool(db_pool.clone(), "public")
            .await
            .expect("provider"),
    );
    let runtime = Runtime::start_with_options(
        provider.clone(),
        create_default_activities(0),
        create_default_orchestrations(),
        RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(10),
            orchestration_concurrency: 4,
            worker_concurrency: 4,
            ..Default::default()
        },
    )
    .await;
    let client = Client::new(provider.clone());
    let count = 40;
    start_fan_outs(&client, 0..count / 2).await;
    // Halfway: kill the listening backend while work is in flight. Found
    // by its statements, once it has run one (on a loaded machine the
    // listener may still be connecting when the first starts are in).
    let find = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
               AND (query LIKE 'LISTEN %' OR query LIKE '-- duroxide-postgres: LISTEN connection%')",
        )
        .bind(&db)
        .fetch_optional(&admin)
        .await
        .expect("find listener")
    };
    crate::support::eventually("the listener connected", || async {
        find().await.is_some()
    })
    .await;
    let pid = find().await;
    let mut killed = false;
    if let Some(pid) = pid {
        killed = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&admin)
            .await
            .expect("terminate listener");
    }
    start_fan_outs(&client, count / 2..count).await;
    fan_outs_complete(&client, 0..count, Duration::from_secs(60), "4:4").await;
    assert!(killed, "the listener was found and terminated");
    let stats = provider.notification_stats().expect("notifications on");
    assert!(
        stats.connections >= 2,
        "the listener reconnected: {stats:?}"
    );
    runtime.shutdown(None).await;
    drop(db_pool);
    let deadlocks = scratch.finish().await;
    assert_eq!(deadlocks, 0, "the server saw deadlocks under 4:4 load");
}
