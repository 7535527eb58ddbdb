//! Observability: the `metrics` a provider records during a run (the crate's
//! tests build with the `metrics` feature), read through a test recorder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::SqlMode;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use crate::fixtures;
use crate::support::with_schema;

/// One metric's handle: a counter's total, or a histogram's sample count.
#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}

impl HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every metric registered, by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct TestRecorder {
    cells: Mutex<BTreeMap<String, Arc<Cell>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(name).or_default().clone()
    }

    /// The total of every metric whose name and labels contain all of `parts`.
    fn total(&self, parts: &[&str]) -> u64 {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .iter()
            .filter(|(name, _)| parts.iter().all(|p| name.contains(p)))
            .map(|(_, cell)| cell.0.load(Ordering::Relaxed))
            .sum()
    }

    fn names(&self) -> Vec<String> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.keys().cloned().collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

/// Enqueues, claims, acks, fetches an empty queue and acks a bogus token in
/// `mode`, with `recorder` installed for this (single-threaded) runtime.
async fn run(mode: SqlMode, recorder: &TestRecorder) {
    let prefix = format!("metrics_{mode}");
    with_schema(&prefix, |schema| async move {
        let provider = schema.provider_with(mode, false).await;
        let _local = metrics::set_default_local_recorder(recorder);
        provider
            .enqueue_for_worker(fixtures::activity("metrics-1", 1))
            .await
            .expect("enqueue");
        let lease = Duration::from_secs(30);
        let (_, token, _) = provider
            .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::default())
            .await
            .expect("fetch")
            .expect("the enqueued item");
        provider.ack_work_item(&token, None).await.expect("ack");
        let empty = provider
            .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::default())
            .await
            .expect("empty fetch");
        assert!(empty.is_none());
        let refused = provider.ack_work_item("no-such-token", None).await;
        assert!(refused.is_err_and(|e| !e.is_retryable()));
    })
    .await;
}

#[tokio::test]
async fn a_run_emits_operation_fetch_and_pool_metrics_in_both_modes() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        let recorder = TestRecorder::default();
        run(mode, &recorder).await;
        let names = recorder.names();
        let mode = format!("mode={mode}");
        let count = |parts: &[&str]| recorder.total(parts);
        assert_eq!(
            count(&[
                "duroxide_postgres_fetch_total",
                "queue=worker",
                "outcome=claimed"
            ]),
            1,
            "{names:#?}"
        );
        assert_eq!(
            count(&[
                "duroxide_postgres_fetch_total",
                "queue=worker",
                "outcome=empty"
            ]),
            1,
            "{names:#?}"
        );
        for operation in ["enqueue_for_worker", "fetch_work_item", "ack_work_item"] {
            let op = format!("operation={operation}");
            assert!(
                count(&[
                    "duroxide_postgres_operation_seconds",
                    &op,
                    &mode,
                    "outcome=ok"
                ]) >= 1,
                "{operation}: {names:#?}"
            );
        }
        assert_eq!(
            count(&[
                "duroxide_postgres_operation_seconds",
                "operation=ack_work_item",
                "outcome=permanent"
            ]),
            1,
            "{names:#?}"
        );
        // Both fetches waited for a pooled connection (recorded even when
        // the wait was nil).
        assert!(
            count(&["duroxide_postgres_pool_acquire_seconds", &mode]) >= 2,
            "{names:#?}"
        );
    }
}
