//! The load scenario's tables: every run, the medians of repeated
//! configurations, and the ratios of procedure mode to the other targets.

use duroxide_postgres::SqlMode;

use super::Outcome;

/// Prints every run, then (with repeated configurations) their medians,
/// then the ratios of procedure mode to each other target.
pub fn print_table(outcomes: &[Outcome]) {
    println!();
    println!(
        "| mode | notify | orch:worker | orchestrations/s | activities/s | p50 ms | p99 ms | turns/orch | statements/orch | server ms/orch | backend CPU ms/orch | process CPU ms/orch | empty fetches/notification | skipped fetches/orch | followed fetches/orch | completed | failed |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let (stmts, ms) = o
            .per_orch()
            .map_or(("n/a".to_string(), "n/a".to_string()), |(s, m)| {
                (format!("{s:.1}"), format!("{m:.2}"))
            });
        let empty = o.wakes.filter(|(received, ..)| *received > 0).map_or(
            "n/a".to_string(),
            |(received, empty, ..)| {
                format!("{:.2} ({empty}/{received})", empty as f64 / received as f64)
            },
        );
        let skipped = o
            .wakes
            .filter(|_| o.completed > 0)
            .map_or("n/a".to_string(), |(_, _, skips, _)| {
                format!("{:.2}", skips as f64 / o.completed as f64)
            });
        let followed = o
            .wakes
            .filter(|_| o.completed > 0)
            .map_or("n/a".to_string(), |(.., followed)| {
                format!("{:.2}", followed as f64 / o.completed as f64)
            });
        println!(
            "| {} | {} | {}:{} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {stmts} | {ms} | {} | {} | {empty} | {skipped} | {followed} | {} | {} |",
            o.mode,
            o.notify_label(),
            o.orch,
            o.worker,
            o.per_sec(),
            o.per_sec() * o.tasks as f64,
            o.percentile(0.5),
            o.percentile(0.99),
            o.turns_per_orch(),
            o.cpu_per_orch(),
            o.process_cpu_per_orch(),
            o.completed,
            o.failed
        );
    }
    let pairs = outcomes
        .iter()
        .map(|o| (o.orch, o.worker))
        .collect::<std::collections::BTreeSet<_>>();
    // A configuration; other providers' runs are recorded with notifications on.
    let config = |o: &Outcome| (o.orch, o.worker, o.mode, o.notifications);
    let runs = |wanted: (usize, usize, &str, bool)| {
        outcomes
            .iter()
            .filter(|o| config(o) == wanted)
            .collect::<Vec<_>>()
    };
    let configs = outcomes.iter().map(config).collect::<Vec<_>>();
    let distinct = configs.iter().collect::<std::collections::BTreeSet<_>>();
    if distinct.len() < outcomes.len() {
        // Rounds run the configurations in turn, so a slow spell of the
        // machine hits every mode alike; medians are what the ratios use.
        println!();
        println!(
            "| mode | notify | orch:worker | runs | orchestrations/s median (min-max) | p50 ms median | backend CPU ms/orch median | process CPU ms/orch median |"
        );
        println!("|---|---|---|---:|---:|---:|---:|---:|");
        let mut seen = std::collections::BTreeSet::new();
        for o in outcomes {
            if !seen.insert(config(o)) {
                continue;
            }
            let group = runs(config(o));
            let rates = group.iter().map(|o| o.per_sec()).collect::<Vec<_>>();
            let (min, max) = rates
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            let summary = Summary::of(&group);
            println!(
                "| {} | {} | {}:{} | {} | {:.1} ({min:.1}-{max:.1}) | {:.1} | {} | {} |",
                o.mode,
                o.notify_label(),
                o.orch,
                o.worker,
                group.len(),
                summary.per_sec,
                summary.p50,
                summary.cpu.map_or("n/a".to_string(), |c| format!("{c:.2}")),
                summary
                    .process_cpu
                    .map_or("n/a".to_string(), |c| format!("{c:.2}")),
            );
        }
    }
    for &(orch, worker) in &pairs {
        let summary = |mode: &str| {
            let group = runs((orch, worker, mode, true));
            (!group.is_empty()).then(|| Summary::of(&group))
        };
        let procedures = summary(SqlMode::StoredProcedures.as_str());
        let others = outcomes
            .iter()
            .map(|o| o.mode)
            .filter(|m| m.parse::<SqlMode>().is_err())
            .collect::<std::collections::BTreeSet<_>>();
        for other in others {
            if let (Some(p), Some(o)) = (&procedures, summary(other)) {
                println!(
                    "ratio procedures/{other} at {orch}:{worker}: throughput {:.2}x, p50 latency {:.2}x",
                    p.per_sec / o.per_sec,
                    p.p50 / o.p50
                );
            }
        }
        if let (Some(p), Some(i)) = (&procedures, summary(SqlMode::InlineSql.as_str())) {
            let cpu_ratio = p.cpu.zip(i.cpu).map_or(String::new(), |(p, i)| {
                format!(", backend CPU/orch {:.2}x", p / i)
            });
            println!(
                "ratio procedures/inline at {orch}:{worker}: throughput {:.2}x, p50 latency {:.2}x{cpu_ratio}",
                p.per_sec / i.per_sec,
                p.p50 / i.p50
            );
        }
    }
}

/// Medians over the runs of one configuration (one run: its own figures).
struct Summary {
    per_sec: f64,
    p50: f64,
    /// Backend CPU ms per orchestration, where measured.
    cpu: Option<f64>,
    /// This process's CPU ms per orchestration, where measured.
    process_cpu: Option<f64>,
}

impl Summary {
    fn of(runs: &[&Outcome]) -> Self {
        fn median(mut values: Vec<f64>) -> f64 {
            values.sort_by(f64::total_cmp);
            match values.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => values[n / 2],
                n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
            }
        }
        let cpu = runs
            .iter()
            .map(|o| o.backend_cpu_ms.map(|ms| ms / o.completed.max(1) as f64))
            .collect::<Option<Vec<_>>>();
        let process_cpu = runs
            .iter()
            .map(|o| o.process_cpu_ms.map(|ms| ms / o.completed.max(1) as f64))
            .collect::<Option<Vec<_>>>();
        Self {
            per_sec: median(runs.iter().map(|o| o.per_sec()).collect()),
            p50: median(runs.iter().map(|o| o.percentile(0.5)).collect()),
            cpu: cpu.map(median),
            process_cpu: process_cpu.map(median),
        }
    }
}
