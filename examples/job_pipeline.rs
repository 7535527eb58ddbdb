//! A Job → Stage → Task pipeline running durably on PostgreSQL.
//!
//! * The `Job` orchestration runs three stages in order, each as a `Stage`
//!   sub-orchestration, and publishes its progress as custom status.
//! * Stage 1 fans out 20 `Task` activities in parallel; stage 2 fans out one
//!   task over each of stage 1's results; stage 3 aggregates stage 2's results
//!   with a single `Aggregate` task.
//! * The job completes only when the last task of the last stage has reported.
//!
//! ```text
//! cargo run --example job_pipeline              # add -- --metrics to print the provider's metrics
//! ```
//!
//! With `DATABASE_URL` unset it starts a throwaway PostgreSQL (installing it
//! from Debian packages if needed). Exits non-zero if the job fails or its
//! result is wrong.

#[path = "job_pipeline/metrics_summary.rs"]
mod metrics_summary;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::runtime::Runtime;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, ThrowawayPostgres};
use serde::{Deserialize, Serialize};

/// Tasks in stage 1.
const FAN_OUT: u64 = 20;

/// Input of a `Stage` sub-orchestration.
#[derive(Serialize, Deserialize)]
struct StageInput {
    stage: u32,
    /// One `Aggregate` task over all inputs instead of one `Task` per input.
    aggregate: bool,
    inputs: Vec<u64>,
}

/// Input of one `Task` activity.
#[derive(Serialize, Deserialize)]
struct TaskInput {
    stage: u32,
    value: u64,
}

fn json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("bad JSON {text:?}: {e}"))
}

/// Stage 1 squares, stage 2 adds one.
async fn task(_ctx: ActivityContext, input: String) -> Result<String, String> {
    let TaskInput { stage, value } = parse(&input)?;
    let out = if stage == 1 { value * value } else { value + 1 };
    Ok(out.to_string())
}

/// Sums the values it is given.
async fn aggregate(_ctx: ActivityContext, input: String) -> Result<String, String> {
    let values: Vec<u64> = parse(&input)?;
    Ok(values.iter().sum::<u64>().to_string())
}

/// Fans out one activity per input and returns the results in input order.
async fn stage(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let spec: StageInput = parse(&input)?;
    if spec.aggregate {
        let total: u64 = parse(
            &ctx.schedule_activity("Aggregate", json(&spec.inputs)?)
                .await?,
        )?;
        return json(&vec![total]);
    }
    let tasks = spec
        .inputs
        .iter()
        .map(|value| {
            json(&TaskInput {
                stage: spec.stage,
                value: *value,
            })
            .map(|payload| ctx.schedule_activity("Task", payload))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(tasks.len());
    for outcome in ctx.join(tasks).await {
        results.push(parse::<u64>(&outcome?)?);
    }
    json(&results)
}

/// Runs the three stages and reports progress after each.
async fn job(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let fan_out: u64 = parse(&input)?;
    let stage1 = StageInput {
        stage: 1,
        aggregate: false,
        inputs: (1..=fan_out).collect(),
    };
    let squares: Vec<u64> = parse(
        &ctx.schedule_sub_orchestration("Stage", json(&stage1)?)
            .await?,
    )?;
    ctx.set_custom_status(format!("stage 1/3 done: {} tasks reported", squares.len()));

    let stage2 = StageInput {
        stage: 2,
        aggregate: false,
        inputs: squares,
    };
    let incremented: Vec<u64> = parse(
        &ctx.schedule_sub_orchestration("Stage", json(&stage2)?)
            .await?,
    )?;
    ctx.set_custom_status(format!(
        "stage 2/3 done: {} tasks reported",
        incremented.len()
    ));

    let stage3 = StageInput {
        stage: 3,
        aggregate: true,
        inputs: incremented,
    };
    let total: Vec<u64> = parse(
        &ctx.schedule_sub_orchestration("Stage", json(&stage3)?)
            .await?,
    )?;
    ctx.set_custom_status("stage 3/3 done: aggregate reported".to_string());
    json(&total.first().copied().unwrap_or_default())
}

async fn run(database_url: &str) -> Result<u64, String> {
    let provider = PostgresProvider::connect_with(
        database_url,
        PostgresOptions::default().schema("job_pipeline"),
    )
    .await
    .map_err(|e| format!("cannot open provider: {e}"))?;
    let store = Arc::new(provider);

    let activities = ActivityRegistry::builder()
        .register("Task", task)
        .register("Aggregate", aggregate)
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Job", job)
        .register("Stage", stage)
        .build();
    let runtime = Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store);

    let instance = format!(
        "job-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let started = Instant::now();
    client
        .start_orchestration(&instance, "Job", FAN_OUT.to_string())
        .await
        .map_err(|e| format!("start: {e}"))?;
    println!("job {instance}: started, {FAN_OUT} tasks in stage 1");

    let deadline = started + Duration::from_secs(120);
    let mut seen = 0;
    let outcome = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break Err("timed out after 120 s".to_string());
        }
        let status = client
            .wait_for_status_change(&instance, seen, Duration::from_millis(20), remaining)
            .await
            .map_err(|e| format!("status: {e}"))?;
        match status {
            OrchestrationStatus::Running {
                custom_status: progress,
                custom_status_version: version,
            } => {
                report(&instance, progress, version, seen, started);
                seen = version;
            }
            OrchestrationStatus::Completed {
                output,
                custom_status: progress,
                custom_status_version: version,
            } => {
                report(&instance, progress, version, seen, started);
                break parse::<u64>(&output);
            }
            OrchestrationStatus::Failed { details, .. } => break Err(details.display_message()),
            OrchestrationStatus::NotFound => continue,
        }
    };
    runtime.shutdown(None).await;
    outcome
}

/// Prints the job's progress as last set, noting the updates that came and
/// went between two polls (a stage can finish within one): the status holds
/// only the latest, and its version counts every update.
fn report(instance: &str, progress: Option<String>, version: u64, seen: u64, started: Instant) {
    let Some(progress) = progress else {
        return;
    };
    let missed = version.saturating_sub(seen).saturating_sub(1);
    let note = match missed {
        0 => String::new(),
        1 => "; 1 earlier update came and went between polls".to_string(),
        n => format!("; {n} earlier updates came and went between polls"),
    };
    println!(
        "job {instance}: {progress} ({} ms{note})",
        started.elapsed().as_millis()
    );
}

fn main() -> ExitCode {
    // `--metrics`: record the provider's metrics and print them at the end.
    let summary = std::env::args()
        .any(|a| a == "--metrics")
        .then(metrics_summary::install)
        .flatten();
    let database_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => match ThrowawayPostgres::start() {
            Ok(server) => {
                println!("started a throwaway PostgreSQL at {}", server.url());
                server.url().to_string()
            }
            Err(e) => {
                eprintln!("DATABASE_URL is unset and no throwaway server could start: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let expected: u64 = (1..=FAN_OUT).map(|i| i * i + 1).sum();
    match runtime.block_on(run(&database_url)) {
        Ok(total) if total == expected => {
            println!("job completed: sum over {FAN_OUT} tasks of (i^2 + 1) = {total}");
            if let Some(summary) = &summary {
                metrics_summary::print(summary);
            }
            ExitCode::SUCCESS
        }
        Ok(total) => {
            eprintln!("job completed with a wrong result: {total}, expected {expected}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("job failed: {e}");
            ExitCode::FAILURE
        }
    }
}
