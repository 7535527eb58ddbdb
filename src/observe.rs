//! Observability in one place: the `tracing` span every provider operation
//! runs in, and the `metrics` (feature `metrics`) it and the fetch paths
//! record. The `Provider` and `ProviderAdmin` facades call
//! [`Store::observe`] for every trait method; nothing else in the crate
//! opens an operation span.
//!
//! Metric names (labels in brackets; see docs/operations.md "Monitoring"):
//!
//! * `duroxide_postgres_operation_seconds` histogram
//!   `[operation, mode, outcome]`, `outcome` = `ok`, `retryable` or
//!   `permanent`;
//! * `duroxide_postgres_fetch_total` counter `[queue, outcome]`,
//!   `outcome` = `claimed` or `empty`;
//! * `duroxide_postgres_fetch_wakeups_total` counter `[queue]`: a waiting
//!   fetch woken by a notification (or handed a wake-up);
//! * `duroxide_postgres_lease_expired_total` counter `[operation]`: an ack,
//!   renewal or abandon that found its lease gone (expired, `DX002`, or
//!   taken over, `DX001`), as `AdmissionStats::lease_expiries` counts it;
//! * `duroxide_postgres_lock_timeouts_total` counter `[operation]`: a
//!   statement that gave up waiting a second for a lock, whether the call
//!   waited it out and tried again or returned the error, as
//!   `AdmissionStats::lock_timeouts` counts it;
//! * `duroxide_postgres_retryable_errors_total` counter
//!   `[operation, sqlstate]`: failures the runtime will retry, by SQLSTATE
//!   (`none` for driver errors such as a pool timeout);
//! * `duroxide_postgres_pool_acquire_seconds` histogram `[mode]`: the wait
//!   for a pooled connection by fetches and inline-SQL transactions;
//! * `duroxide_postgres_unreadable_set_aside_total` counter `[queue]`: a
//!   claim set aside because this build could not decode what it carried,
//!   as `AdmissionStats::unreadable_set_aside` counts it.
//!
//! No label carries the schema: a database may hold thousands of tenants.
//! The span has it.

use std::future::Future;
use std::time::{Duration, Instant};

use duroxide::providers::ProviderError;
use futures_util::FutureExt;
use tracing::Instrument;
use tracing::field::Empty;

use crate::config::SqlMode;
use crate::error::{PostgresProviderError, Result};
use crate::store::Store;

/// What a successful operation returned, as the span's `rows` field counts it.
pub(crate) trait Rows {
    /// Items returned or affected, when that means something.
    fn rows(&self) -> Option<u64>;
}

impl Rows for () {
    fn rows(&self) -> Option<u64> {
        None
    }
}

impl<T> Rows for Option<T> {
    fn rows(&self) -> Option<u64> {
        Some(u64::from(self.is_some()))
    }
}

impl<T> Rows for Vec<T> {
    fn rows(&self) -> Option<u64> {
        u64::try_from(self.len()).ok()
    }
}

impl<K, V, S> Rows for std::collections::HashMap<K, V, S> {
    fn rows(&self) -> Option<u64> {
        u64::try_from(self.len()).ok()
    }
}

impl Rows for usize {
    fn rows(&self) -> Option<u64> {
        u64::try_from(*self).ok()
    }
}

/// Results whose count is not a row count (ids, records): no `rows` field.
macro_rules! no_rows {
    ($($t:ty),*) => {$(
        impl Rows for $t {
            fn rows(&self) -> Option<u64> {
                None
            }
        }
    )*};
}
no_rows!(
    u64,
    duroxide::providers::InstanceInfo,
    duroxide::providers::ExecutionInfo,
    duroxide::providers::SystemMetrics,
    duroxide::providers::QueueDepths,
    duroxide::providers::DeleteInstanceResult,
    duroxide::providers::PruneResult
);

/// Which queue a fetch operation reads, for the fetch-outcome counter.
fn fetch_queue(operation: &str) -> Option<&'static str> {
    match operation {
        "fetch_orchestration_item" => Some("orchestrator"),
        "fetch_work_item" => Some("worker"),
        _ => None,
    }
}

/// Trait methods that work on a lease already taken: their waits for a
/// connection and their lease-gone errors feed the pool's counters.
const LEASED: [&str; 6] = [
    "ack_orchestration_item",
    "abandon_orchestration_item",
    "renew_orchestration_item_lock",
    "ack_work_item",
    "abandon_work_item",
    "renew_work_item_lock",
];

impl Store {
    /// Runs one provider operation inside its span (`duroxide_postgres.op`,
    /// level DEBUG: operation, schema, mode, then duration, rows and, on
    /// failure, retryable and the error), records its metrics, and converts
    /// its error into duroxide's, retryable or permanent as
    /// [`PostgresProviderError::is_retryable`] decides.
    ///
    /// A plain function returning the future, not an `async fn`: the future
    /// holds `work` once, inside its scope and span, rather than also as
    /// the argument it came as (each such copy doubled every operation's
    /// future, which the runtime's boxing then copied whole; tested by
    /// `footprint::every_operations_future_is_small_in_both_modes`).
    pub(crate) fn observe<'a, T: Rows + 'a>(
        &'a self,
        operation: &'static str,
        work: impl Future<Output = Result<T>> + 'a,
    ) -> impl Future<Output = Result<T, ProviderError>> + 'a {
        let span = tracing::debug_span!(
            "duroxide_postgres.op",
            operation,
            schema = %self.schema,
            mode = %self.mode(),
            duration_ms = Empty,
            rows = Empty,
            retryable = Empty,
            error = Empty,
        );
        let leased = LEASED.contains(&operation);
        let start = Instant::now();
        // In the pool's scope: its hooks see the tenant (`crate::recycle`).
        let scope = crate::recycle::Scope {
            gate: self.gate.clone(),
            tenant: self.name.clone(),
            started: start,
            leased,
            operation,
        };
        // A combinator rather than an `async move` block awaiting `run`:
        // awaiting a captured future moves it into a second slot.
        scope
            .run(work.instrument(span.clone()))
            .map(move |result| self.observed(operation, leased, start, &span, result))
    }

    /// Records the outcome of an operation [`Store::observe`] ran.
    fn observed<T: Rows>(
        &self,
        operation: &'static str,
        leased: bool,
        start: Instant,
        span: &tracing::Span,
        result: Result<T>,
    ) -> Result<T, ProviderError> {
        let elapsed = start.elapsed();
        span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        match &result {
            Ok(value) => {
                if let Some(rows) = value.rows() {
                    span.record("rows", rows);
                }
                if let Some(queue) = fetch_queue(operation) {
                    let claimed = value.rows().is_some_and(|n| n > 0);
                    record_fetch(queue, claimed);
                }
                record_operation(operation, self.mode(), "ok", elapsed);
            }
            Err(e) => {
                // Leased work that found its lease gone: expired (DX002) or
                // taken over by another dispatcher (DX001). One definition
                // for the pool's counter and the metric.
                let lease_gone = leased
                    && e.sqlstate().is_some_and(|code| {
                        code == crate::sqlstate::LOCK_EXPIRED
                            || code == crate::sqlstate::INVALID_LOCK_TOKEN
                    });
                if lease_gone {
                    self.gate.note_lease_expired();
                }
                if e.is_read_only() {
                    self.gate.note_read_only();
                }
                if e.is_lock_timeout() {
                    lock_timed_out(&self.gate, operation);
                }
                let retryable = e.is_retryable();
                span.record("retryable", retryable);
                span.record("error", tracing::field::display(e));
                let _entered = span.enter();
                tracing::debug!(retryable, sqlstate = e.sqlstate(), "operation failed: {e}");
                let outcome = if retryable { "retryable" } else { "permanent" };
                record_operation(operation, self.mode(), outcome, elapsed);
                record_error(operation, e, retryable, lease_gone);
            }
        }
        result.map_err(|e| e.into_provider_error(operation))
    }
}

/// A pooled connection, its wait recorded as `pool_acquire_seconds`.
pub(crate) async fn acquire(
    pool: &crate::pooler::Db,
    mode: SqlMode,
) -> Result<crate::pooler::Conn> {
    let start = Instant::now();
    let conn = pool.acquire().await;
    record_acquire(mode, start.elapsed());
    Ok(conn?)
}

/// A statement of `operation` gave up waiting for a lock: counted on the
/// pool (`AdmissionStats::lock_timeouts`) and as `lock_timeouts_total`.
pub(crate) fn lock_timed_out(gate: &crate::admission::Gate, operation: &'static str) {
    gate.note_lock_timeout();
    #[cfg(feature = "metrics")]
    metrics::counter!("duroxide_postgres_lock_timeouts_total", "operation" => operation)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = operation;
}

/// An ack or abandon whose reply was lost had landed ([`crate::lost_replies`]):
/// counted as `landed_after_lost_reply_total`.
pub(crate) fn landed_after_lost_reply(operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "duroxide_postgres_landed_after_lost_reply_total",
        "operation" => operation
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = operation;
}

/// An item claimed by a call whose reply was lost was given back
/// ([`crate::lost_replies::Claiming`]): counted as
/// `given_back_after_lost_reply_total`, by queue.
pub(crate) fn given_back_after_lost_reply(queue: crate::notify::Queue) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "duroxide_postgres_given_back_after_lost_reply_total",
        "queue" => queue.name()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}

/// A claim on `queue` of `s`'s schema was set aside because this build
/// could not decode what it carried (`error`; for a turn, of `instance`): logged
/// at WARN with the tenant, which the runtime's own report of the failed
/// fetch does not name, counted on the pool
/// (`AdmissionStats::unreadable_set_aside`) and as
/// `unreadable_set_aside_total`.
pub(crate) fn unreadable_set_aside(
    s: &Store,
    queue: crate::notify::Queue,
    instance: Option<&str>,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        target: "duroxide_postgres",
        schema = %s.name,
        queue = queue.name(),
        instance,
        "set aside for a second a claim this build cannot decode: {error}"
    );
    s.gate.note_unreadable_set_aside();
    #[cfg(feature = "metrics")]
    metrics::counter!("duroxide_postgres_unreadable_set_aside_total", "queue" => queue.name())
        .increment(1);
}

/// A waiting fetch on `queue` was woken.
pub(crate) fn fetch_woken(queue: crate::notify::Queue) {
    #[cfg(feature = "metrics")]
    metrics::counter!("duroxide_postgres_fetch_wakeups_total", "queue" => queue.name())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}

#[cfg(feature = "metrics")]
fn record_operation(
    operation: &'static str,
    mode: SqlMode,
    outcome: &'static str,
    elapsed: Duration,
) {
    metrics::histogram!(
        "duroxide_postgres_operation_seconds",
        "operation" => operation,
        "mode" => mode.as_str(),
        "outcome" => outcome,
    )
    .record(elapsed.as_secs_f64());
}

#[cfg(feature = "metrics")]
fn record_fetch(queue: &'static str, claimed: bool) {
    let outcome = if claimed { "claimed" } else { "empty" };
    metrics::counter!("duroxide_postgres_fetch_total", "queue" => queue, "outcome" => outcome)
        .increment(1);
}

#[cfg(feature = "metrics")]
fn record_error(
    operation: &'static str,
    e: &PostgresProviderError,
    retryable: bool,
    lease_gone: bool,
) {
    let code = e.sqlstate();
    if lease_gone {
        metrics::counter!("duroxide_postgres_lease_expired_total", "operation" => operation)
            .increment(1);
    }
    if retryable {
        let code = code.unwrap_or_else(|| "none".to_string());
        metrics::counter!(
            "duroxide_postgres_retryable_errors_total",
            "operation" => operation,
            "sqlstate" => code,
        )
        .increment(1);
    }
}

#[cfg(feature = "metrics")]
fn record_acquire(mode: SqlMode, waited: Duration) {
    metrics::histogram!("duroxide_postgres_pool_acquire_seconds", "mode" => mode.as_str())
        .record(waited.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
fn record_operation(_: &'static str, _: SqlMode, _: &'static str, _: Duration) {}

#[cfg(not(feature = "metrics"))]
fn record_fetch(_: &'static str, _: bool) {}

#[cfg(not(feature = "metrics"))]
fn record_error(_: &'static str, _: &PostgresProviderError, _: bool, _: bool) {}

#[cfg(not(feature = "metrics"))]
fn record_acquire(_: SqlMode, _: Duration) {}
