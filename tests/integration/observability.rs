//! Observability: the `metrics` a provider records during a run (the crate's
//! tests build with the `metrics` feature), read through `metrics-util`'s
//! debugging recorder, and the `duroxide_postgres.op` span each operation
//! runs in, read through a capturing `tracing` layer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::SqlMode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::fixtures;
use crate::support::{eventually, hold_table, release_table, with_schema};

/// Every metric a run recorded, by `name{label=value,...}` (labels sorted):
/// a counter's total, or a histogram's sample count.
struct Totals(BTreeMap<String, u64>);

impl Totals {
    /// Reads (and, for histograms, drains) what `snapshotter` holds.
    fn of(snapshotter: &Snapshotter) -> Self {
        let mut totals = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            *totals.entry(name).or_default() += n;
        }
        Self(totals)
    }

    /// The total of every metric whose name and labels contain all of `parts`.
    fn total(&self, parts: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(name, _)| parts.iter().all(|p| name.contains(p)))
            .map(|(_, n)| n)
            .sum()
    }

    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// Enqueues, claims, acks, fetches an empty queue and acks a bogus token in
/// `mode`, with `recorder` installed for this (single-threaded) runtime.
async fn run(mode: SqlMode, recorder: &DebuggingRecorder) {
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
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        run(mode, &recorder).await;
        let totals = Totals::of(&snapshotter);
        let names = totals.names();
        let mode = format!("mode={mode}");
        let count = |parts: &[&str]| totals.total(parts);
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

/// The fields of every closed `duroxide_postgres.op` span, as text.
#[derive(Clone, Default)]
struct SpanCapture {
    closed: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

/// A span's fields so far (stored in the span's extensions).
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "duroxide_postgres.op" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(fields) = span.extensions_mut().remove::<Fields>()
        {
            let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
            closed.push(fields.0);
        }
    }
}

#[tokio::test]
async fn every_operation_runs_in_one_span_with_its_fields_in_both_modes() {
    use tracing_subscriber::layer::SubscriberExt;

    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        let capture = SpanCapture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let _default = tracing::subscriber::set_default(subscriber);
        let prefix = format!("spans_{mode}");
        let schema_name = Arc::new(Mutex::new(String::new()));
        let seen = schema_name.clone();
        with_schema(&prefix, |schema| async move {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = schema.name.clone();
            let provider = schema.provider_with(mode, false).await;
            // A span callsite first reached by another test's thread while
            // this test installed its subscriber can keep the interest it
            // computed without it (a registration race in tracing-core);
            // recompute every callsite's interest now that both are done.
            tracing::callsite::rebuild_interest_cache();
            provider
                .enqueue_for_worker(fixtures::activity("spans-1", 1))
                .await
                .expect("enqueue");
            let lease = Duration::from_secs(30);
            provider
                .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::default())
                .await
                .expect("fetch")
                .expect("the enqueued item");
            let refused = provider.ack_work_item("no-such-token", None).await;
            assert!(refused.is_err());
        })
        .await;
        let schema = schema_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let closed = capture.closed.lock().unwrap_or_else(|e| e.into_inner());
        let span = |operation: &str| {
            closed
                .iter()
                .find(|f| f.get("operation").map(String::as_str) == Some(operation))
                .unwrap_or_else(|| panic!("no {operation} span in {closed:#?}"))
                .clone()
        };
        let fetch = span("fetch_work_item");
        assert_eq!(fetch.get("schema"), Some(&schema), "{fetch:?}");
        assert_eq!(fetch.get("mode").map(String::as_str), Some(mode.as_str()));
        assert_eq!(
            fetch.get("rows").map(String::as_str),
            Some("1"),
            "{fetch:?}"
        );
        assert!(fetch.contains_key("duration_ms"), "{fetch:?}");
        assert!(!fetch.contains_key("error"), "{fetch:?}");
        let ack = span("ack_work_item");
        assert_eq!(
            ack.get("retryable").map(String::as_str),
            Some("false"),
            "{ack:?}"
        );
        assert!(
            ack.contains_key("error") && ack.contains_key("duration_ms"),
            "{ack:?}"
        );
        assert!(span("enqueue_for_worker").contains_key("duration_ms"));
    }
}

/// A client's status read on a tenant whose history another session holds
/// (an operator's `LOCK TABLE`) gives up on the lock each second and waits
/// it out off the connection; a fetch gives up and returns the error. Both
/// count on the pool (`AdmissionStats::lock_timeouts`) and as
/// `duroxide_postgres_lock_timeouts_total` by operation, so an operator sees
/// a tenant waiting out a lock without debug logs, and the read counts in
/// `AdmissionStats::waiting_out_locks` while it waits; it returns once the
/// lock is gone, and the gauge is back at zero.
#[tokio::test]
async fn lock_timeouts_are_counted_on_the_pool_and_by_operation_in_both_modes() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        with_schema(&format!("lock_counts_{mode}"), |schema| {
            let recorder = &recorder;
            async move {
                let p = Arc::new(schema.provider_with(mode, false).await);
                let _local = metrics::set_default_local_recorder(recorder);
                p.enqueue_for_orchestrator(fixtures::start("held"), None)
                    .await
                    .expect("start");
                let counted = || p.admission_stats().lock_timeouts;
                let before = counted();
                let holder = hold_table(&schema, "history", "ACCESS EXCLUSIVE").await;
                let fetched = p
                    .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                    .await;
                assert!(
                    fetched.as_ref().is_err_and(|e| e.is_retryable()),
                    "{mode}: a fetch on a locked history: {fetched:?}"
                );
                assert!(counted() > before, "{mode}: the fetch's lock timeout");
                let after_fetch = counted();
                let read = {
                    let p = p.clone();
                    tokio::spawn(async move { p.read("held").await })
                };
                eventually("the read gave up on the lock once", || async {
                    counted() > after_fetch
                })
                .await;
                assert!(
                    !read.is_finished(),
                    "{mode}: the read returned under the lock"
                );
                assert_eq!(
                    p.admission_stats().waiting_out_locks,
                    1,
                    "{mode}: the read waits the lock out"
                );
                release_table(holder).await;
                let events = read
                    .await
                    .expect("read task")
                    .unwrap_or_else(|e| panic!("{mode}: read once the lock was gone: {e}"));
                assert!(events.is_empty(), "{mode}: no history yet: {events:?}");
                assert_eq!(
                    p.admission_stats().waiting_out_locks,
                    0,
                    "{mode}: nothing waits once the read returned"
                );
            }
        })
        .await;
        let totals = Totals::of(&snapshotter);
        for operation in ["fetch_orchestration_item", "read"] {
            assert!(
                totals.total(&[
                    "duroxide_postgres_lock_timeouts_total",
                    &format!("operation={operation}}}"),
                ]) >= 1,
                "{mode}: {operation}: {:?}",
                totals.names()
            );
        }
    }
}
