//! `--spans`: how long each provider operation took, per schema, from the
//! provider's own `duroxide_postgres.op` spans (their `duration_ms` field:
//! from the call to its answer, pool waits and long-poll waits included).
//! The load scenario's schemas are named after the mode and concurrency
//! they ran (`load_procedures_1_1_true`), so each row is one configuration.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The span every provider operation runs in (`src/observe.rs`).
const OPERATION_SPAN: &str = "duroxide_postgres.op";

/// Operations called fewer times than this are left out of the table.
const MIN_CALLS: usize = 10;

/// Durations in ms by (schema, operation).
type Durations = BTreeMap<(String, String), Vec<f64>>;

fn durations() -> &'static Mutex<Durations> {
    static DURATIONS: OnceLock<Mutex<Durations>> = OnceLock::new();
    DURATIONS.get_or_init(Mutex::default)
}

/// One operation span's fields, as they are recorded.
#[derive(Default)]
struct Operation {
    schema: String,
    operation: String,
    duration_ms: Option<f64>,
}

impl Visit for Operation {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "operation" => self.operation = value.to_string(),
            "schema" => self.schema = value.to_string(),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "duration_ms" {
            self.duration_ms = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        // `schema = %name` arrives as a Display value.
        if field.name() == "schema" {
            self.schema = format!("{value:?}");
        }
    }
}

/// Collects the operation spans' durations.
struct Collector;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collector {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != OPERATION_SPAN {
            return;
        }
        let mut operation = Operation::default();
        attrs.record(&mut operation);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(operation);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(operation) = span.extensions_mut().get_mut::<Operation>()
        {
            values.record(operation);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(operation) = span.extensions_mut().remove::<Operation>() else {
            return;
        };
        if let Some(ms) = operation.duration_ms {
            durations()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((operation.schema, operation.operation))
                .or_default()
                .push(ms);
        }
    }
}

/// Starts collecting (the process's tracing subscriber: call once, before
/// any provider is built).
pub fn install() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let only_operations = Targets::new().with_target("duroxide_postgres", Level::DEBUG);
    tracing_subscriber::registry()
        .with(Collector.with_filter(only_operations))
        .try_init()?;
    Ok(())
}

/// The `q` quantile of sorted `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    let last = values.len().saturating_sub(1);
    values
        .get(((values.len() as f64 * q) as usize).min(last))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Prints what was collected, one row per schema and operation.
pub fn print() {
    let mut all = std::mem::take(&mut *durations().lock().unwrap_or_else(PoisonError::into_inner));
    println!();
    println!("| schema | operation | calls | p50 ms | p90 ms | p99 ms | mean ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for ((schema, operation), values) in &mut all {
        if values.len() < MIN_CALLS {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        println!(
            "| {schema} | {operation} | {} | {:.3} | {:.3} | {:.3} | {mean:.3} |",
            values.len(),
            quantile(values, 0.5),
            quantile(values, 0.9),
            quantile(values, 0.99),
        );
    }
}
