//! `--metrics`: a `metrics` recorder that keeps every counter's total and
//! every histogram's count and sum, and prints them after the run (the crate
//! records them with its `metrics` feature; see docs/operations.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One metric: a counter's total, or a histogram's sample count and sum
/// (in millionths of the recorded unit, as an integer).
#[derive(Default)]
struct Cell {
    count: AtomicU64,
    sum_micros: AtomicU64,
    histogram: std::sync::atomic::AtomicBool,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.histogram.store(true, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Whole millionths; a negative or absurd value is clamped.
        let micros = (value * 1e6).clamp(0.0, 1e15) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// The recorder `--metrics` installs; cloning shares the metrics.
#[derive(Clone, Default)]
pub struct Summary {
    cells: Arc<Mutex<BTreeMap<String, Arc<Cell>>>>,
}

impl Summary {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(name).or_default().clone()
    }

    /// Prints every metric recorded (the runtime's `duroxide_*` and the
    /// provider's `duroxide_postgres_*`): counters with their totals,
    /// histograms with their count and mean (in ms for `_seconds` ones).
    pub fn print(&self) {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        println!("metrics recorded ({}):", cells.len());
        for (name, cell) in cells.iter() {
            let count = cell.count.load(Ordering::Relaxed);
            if cell.histogram.load(Ordering::Relaxed) {
                let sum = cell.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                let mean = sum / count.max(1) as f64;
                if name.contains("_seconds{") {
                    println!("  {name}: {count} samples, mean {:.2} ms", mean * 1e3);
                } else {
                    println!("  {name}: {count} samples, mean {mean:.2}");
                }
            } else {
                println!("  {name}: {count}");
            }
        }
    }
}

impl Recorder for Summary {
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
