//! `--metrics`: `metrics-util`'s debugging recorder keeps every counter and
//! every histogram sample; after the run each counter's total and each
//! histogram's count and mean are printed (the crate records them with its
//! `metrics` feature; see docs/operations.md).

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Installs the recorder as the process's global one; `None` (with a
/// message) when one was installed already.
pub fn install() -> Option<Snapshotter> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => Some(snapshotter),
        Err(_) => {
            eprintln!("a metrics recorder was already installed");
            None
        }
    }
}

/// Prints every metric recorded (the runtime's `duroxide_*` and the
/// provider's `duroxide_postgres_*`), sorted by name: counters with their
/// totals, histograms with their count and mean (in ms for `_seconds` ones).
pub fn print(snapshotter: &Snapshotter) {
    let mut lines: Vec<(String, String)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let shown = match value {
                DebugValue::Counter(total) => total.to_string(),
                DebugValue::Histogram(samples) => {
                    let count = samples.len();
                    let mean =
                        samples.iter().map(|s| s.into_inner()).sum::<f64>() / count.max(1) as f64;
                    if key.name().ends_with("_seconds") {
                        format!("{count} samples, mean {:.2} ms", mean * 1e3)
                    } else {
                        format!("{count} samples, mean {mean:.2}")
                    }
                }
                DebugValue::Gauge(_) => return None,
            };
            Some((name, shown))
        })
        .collect();
    lines.sort();
    println!("metrics recorded ({}):", lines.len());
    for (name, shown) in lines {
        println!("  {name}: {shown}");
    }
}
