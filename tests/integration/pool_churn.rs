//! The pool the crate builds under acquire/release churn: its count of idle
//! connections stays within the connections it holds.
//!
//! sqlx 0.8 made a returned connection available before counting it idle,
//! so a caller could take it and uncount it first: the count wrapped below
//! zero to `usize::MAX` for a moment. Its idle reaper (on whenever
//! `idle_timeout` or `max_lifetime` is set, as on every pool this crate
//! builds) loops once per idle connection without yielding, so a reading
//! taken in that moment spun a core for good and, holding a runtime worker,
//! could stall the tasks queued behind it (sqlx issue 3645, fixed in 0.9.1).
//! A test run once hung that way. This test watches the count through the
//! churn a busy pool sees, many tasks taking and returning few connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duroxide_postgres::PostgresOptions;

use crate::support::connect_options;

/// How long the tasks churn the pool.
const CHURN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_idle_count_never_wraps_under_churn() {
    const CONNECTIONS: u32 = 2;
    let pool = PostgresOptions::default()
        .max_connections(CONNECTIONS)
        .idle_timeout(Some(Duration::from_secs(600)))
        .pool_options()
        .connect_with(connect_options())
        .await
        .unwrap_or_else(|e| panic!("pool: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (pool, stop, highest) = (pool.clone(), stop.clone(), highest.clone());
        tokio::spawn(async move {
            let mut readings = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                highest.fetch_max(pool.num_idle(), Ordering::Relaxed);
                readings += 1;
                if readings.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            readings
        })
    };
    let cycles = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..8)
        .map(|_| {
            let (pool, cycles) = (pool.clone(), cycles.clone());
            tokio::spawn(async move {
                let end = Instant::now() + CHURN;
                while Instant::now() < end {
                    let conn = pool
                        .acquire()
                        .await
                        .unwrap_or_else(|e| panic!("acquire: {e}"));
                    drop(conn);
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for churner in churners {
        churner.await.unwrap_or_else(|e| panic!("churner: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    let readings = watcher.await.unwrap_or_else(|e| panic!("watcher: {e}"));
    let highest = highest.load(Ordering::Relaxed);
    assert!(
        cycles.load(Ordering::Relaxed) > 1_000 && readings > 1_000,
        "the churn ran: {cycles:?} cycles, {readings} readings"
    );
    assert!(
        highest <= CONNECTIONS as usize,
        "the pool counted {highest} idle connections of {CONNECTIONS}"
    );
    tokio::time::timeout(Duration::from_secs(30), pool.close())
        .await
        .unwrap_or_else(|_| panic!("the pool closes"));
}
