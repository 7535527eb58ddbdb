//! Differential property test: random sequences of provider operations applied
//! to two fresh schemas, one per SQL mode, must give the same observable
//! results and leave the same state behind. Lock tokens and timestamps may
//! differ; nothing else may. This module fetches as a short poll does;
//! `long_poll` compares what a long-polling fetch learns besides its item.

use std::fmt::Write as _;
use std::time::Duration;

use duroxide::Event;
use duroxide::providers::{ExecutionMetadata, Provider, ProviderAdmin, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use proptest::prelude::*;

use crate::fixtures::start;
use crate::support::{Kind, Slot, drop_schema, fresh_schema_name, pool};

mod long_poll;

const INSTANCES: [&str; 3] = ["alpha", "beta", "gamma"];
const LOCK: Duration = Duration::from_secs(30);

/// One provider operation; indexes pick an instance or a held lock token.
#[derive(Debug, Clone)]
enum Op {
    EnqueueStart(usize),
    EnqueueEvent(usize),
    EnqueueLater(usize),
    FetchOrchestration,
    AckOrchestration {
        token: usize,
        events: u8,
        activities: u8,
        complete: bool,
    },
    AbandonOrchestration {
        token: usize,
        delayed: bool,
        ignore_attempt: bool,
    },
    RenewOrchestration(usize),
    FetchWork,
    AckWork {
        token: usize,
        completion: bool,
    },
    AbandonWork {
        token: usize,
        delayed: bool,
        ignore_attempt: bool,
    },
    RenewWork(usize),
    DeleteInstance {
        instance: usize,
        force: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::EnqueueStart),
        (0..3usize).prop_map(Op::EnqueueEvent),
        (0..3usize).prop_map(Op::EnqueueLater),
        Just(Op::FetchOrchestration),
        Just(Op::FetchOrchestration),
        (0..3usize, 0..3u8, 0..3u8, any::<bool>()).prop_map(
            |(token, events, activities, complete)| Op::AckOrchestration {
                token,
                events,
                activities,
                complete
            }
        ),
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(token, delayed, ignore_attempt)| {
            Op::AbandonOrchestration {
                token,
                delayed,
                ignore_attempt,
            }
        }),
        (0..3usize).prop_map(Op::RenewOrchestration),
        Just(Op::FetchWork),
        (0..3usize, any::<bool>())
            .prop_map(|(token, completion)| Op::AckWork { token, completion }),
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(token, delayed, ignore_attempt)| {
            Op::AbandonWork {
                token,
                delayed,
                ignore_attempt,
            }
        }),
        (0..3usize).prop_map(Op::RenewWork),
        (0..3usize, any::<bool>())
            .prop_map(|(instance, force)| Op::DeleteInstance { instance, force }),
    ]
}

/// One side of the comparison: a provider and the tokens it holds.
struct Side {
    provider: PostgresProvider,
    orchestration_tokens: Vec<(String, String, usize)>,
    work_tokens: Vec<(String, WorkItem)>,
}

/// A history event with a fixed timestamp, so both modes store identical text.
fn history_event(instance: &str, id: u64) -> Event {
    let mut event = crate::fixtures::event(instance, id);
    event.timestamp_ms = 0;
    event
}

/// Applies `op` and describes what was observable (no tokens, no times).
async fn apply(side: &mut Side, op: &Op) -> String {
    let p = &side.provider;
    let shown = |r: Result<(), duroxide::providers::ProviderError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err(retryable={})", e.is_retryable()),
    };
    match op {
        Op::EnqueueStart(i) => shown(p.enqueue_for_orchestrator(start(INSTANCES[*i]), None).await),
        Op::EnqueueEvent(i) => shown(
            p.enqueue_for_orchestrator(
                WorkItem::ExternalRaised {
                    instance: INSTANCES[*i].to_string(),
                    name: "poke".to_string(),
                    data: "1".to_string(),
                },
                None,
            )
            .await,
        ),
        Op::EnqueueLater(i) => shown(
            p.enqueue_for_orchestrator(start(INSTANCES[*i]), Some(Duration::from_secs(3600)))
                .await,
        ),
        Op::FetchOrchestration => {
            match p.fetch_orchestration_item(LOCK, Duration::ZERO, None).await {
                Ok(Some((item, token, attempts))) => {
                    let described = format!(
                        "item({}, exec {}, {} msgs {:?}, {} events, attempts {attempts})",
                        item.instance,
                        item.execution_id,
                        item.messages.len(),
                        item.messages,
                        item.history.len()
                    );
                    side.orchestration_tokens
                        .push((token, item.instance, item.history.len()));
                    described
                }
                Ok(None) => "none".to_string(),
                Err(e) => format!("err(retryable={})", e.is_retryable()),
            }
        }
        Op::AckOrchestration {
            token,
            events,
            activities,
            complete,
        } => {
            let Some((token, instance, len)) = pick(&mut side.orchestration_tokens, *token) else {
                return "no token".to_string();
            };
            let first = len as u64 + 1;
            let history: Vec<Event> = (first..first + u64::from(*events))
                .map(|id| history_event(&instance, id))
                .collect();
            let work = activities_of(&instance, first, *activities);
            let metadata = ExecutionMetadata {
                orchestration_name: Some(crate::fixtures::ORCHESTRATION.to_string()),
                orchestration_version: Some("1.0.0".to_string()),
                status: complete.then(|| "Completed".to_string()),
                output: complete.then(|| "done".to_string()),
                ..Default::default()
            };
            shown(
                p.ack_orchestration_item(&token, 1, history, work, vec![], metadata, vec![])
                    .await,
            )
        }
        Op::AbandonOrchestration {
            token,
            delayed,
            ignore_attempt,
        } => {
            let Some((token, _, _)) = pick(&mut side.orchestration_tokens, *token) else {
                return "no token".to_string();
            };
            let delay = delayed.then_some(Duration::from_secs(3600));
            shown(
                p.abandon_orchestration_item(&token, delay, *ignore_attempt)
                    .await,
            )
        }
        Op::RenewOrchestration(t) => match side.orchestration_tokens.get(*t) {
            Some((token, _, _)) => shown(p.renew_orchestration_item_lock(token, LOCK).await),
            None => "no token".to_string(),
        },
        Op::FetchWork => match p
            .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
            .await
        {
            Ok(Some((item, token, attempts))) => {
                let described = format!("work({item:?}, attempts {attempts})");
                side.work_tokens.push((token, item));
                described
            }
            Ok(None) => "none".to_string(),
            Err(e) => format!("err(retryable={})", e.is_retryable()),
        },
        Op::AckWork { token, completion } => {
            let Some((token, item)) = pick(&mut side.work_tokens, *token) else {
                return "no token".to_string();
            };
            shown(
                p.ack_work_item(&token, completion_of(*completion, item))
                    .await,
            )
        }
        Op::AbandonWork {
            token,
            delayed,
            ignore_attempt,
        } => {
            let Some((token, _)) = pick(&mut side.work_tokens, *token) else {
                return "no token".to_string();
            };
            let delay = delayed.then_some(Duration::from_secs(3600));
            shown(p.abandon_work_item(&token, delay, *ignore_attempt).await)
        }
        Op::RenewWork(t) => match side.work_tokens.get(*t) {
            Some((token, _)) => shown(p.renew_work_item_lock(token, LOCK).await),
            None => "no token".to_string(),
        },
        Op::DeleteInstance { instance, force } => {
            match ProviderAdmin::delete_instance(p, INSTANCES[*instance], *force).await {
                Ok(result) => format!("deleted({result:?})"),
                Err(e) => format!("err(retryable={})", e.is_retryable()),
            }
        }
    }
}

fn pick<T>(held: &mut Vec<T>, index: usize) -> Option<T> {
    (index < held.len()).then(|| held.remove(index))
}

/// Everything a user could observe in a schema, minus tokens and times.
async fn snapshot(p: &PostgresProvider) -> String {
    let queries = [
        "SELECT instance_id, orchestration_name, orchestration_version, current_execution_id, parent_instance_id, \
         custom_status, custom_status_version FROM {{schema}}.instances ORDER BY 1",
        "SELECT instance_id, execution_id, status, output, pinned_major, pinned_minor, pinned_patch, \
         completed_at_ms IS NULL FROM {{schema}}.executions ORDER BY 1, 2",
        "SELECT instance_id, execution_id, event_id, event_type, event_data FROM {{schema}}.history ORDER BY 1, 2, 3",
        "SELECT instance_id, item_kind, work_item, lock_token IS NULL, attempt_count, \
         visible_at_ms > {{now_ms}} + 60000 FROM {{schema}}.orchestrator_queue ORDER BY id",
        "SELECT instance_id FROM {{schema}}.instance_locks ORDER BY 1",
        "SELECT instance_id FROM {{schema}}.instance_claims ORDER BY 1",
        "SELECT work_item, lock_token IS NULL, attempt_count, instance_id, execution_id, activity_id, session_id, tag, \
         visible_at_ms > {{now_ms}} + 60000 FROM {{schema}}.worker_queue ORDER BY id",
        "SELECT instance_id, key, value FROM {{schema}}.kv_store ORDER BY 1, 2",
        "SELECT instance_id, key, value FROM {{schema}}.kv_delta ORDER BY 1, 2",
    ];
    let mut out = String::new();
    for query in queries {
        let sql = query.replace("{{schema}}", p.schema().quoted()).replace(
            "{{now_ms}}",
            "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        );
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t"
        )))
        .fetch_one(p.pool())
        .await
        .map(|v: serde_json::Value| v.as_array().cloned().unwrap_or_default())
        .unwrap_or_else(|e| vec![serde_json::Value::String(format!("snapshot {query}: {e}"))]);
        let _ = writeln!(out, "{rows:?}");
    }
    out
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    // A case at a time counts as a suite test: the lock-timing tests wait
    // for the case running, and the next case waits for them.
    let _slot = Slot::acquire(Kind::Suite);
    let pool = pool(6).await;
    let names = [
        fresh_schema_name("diff_proc"),
        fresh_schema_name("diff_inline"),
    ];
    let mut sides = Vec::new();
    for (name, mode) in names
        .iter()
        .zip([SqlMode::StoredProcedures, SqlMode::InlineSql])
    {
        let options = PostgresOptions::default()
            .schema(name.clone())
            .sql_mode(mode);
        let provider = PostgresProvider::from_pool_with(pool.clone(), options)
            .await
            .unwrap_or_else(|e| panic!("provider {name}: {e}"));
        sides.push(Side {
            provider,
            orchestration_tokens: vec![],
            work_tokens: vec![],
        });
    }
    let mut outcome = Ok(());
    let mut trace = String::new();
    for (step, op) in ops.iter().enumerate() {
        let a = apply(&mut sides[0], op).await;
        let b = apply(&mut sides[1], op).await;
        let _ = writeln!(
            trace,
            "{step:>3}: {op:?}\n       procedures: {a}\n       inline:     {b}"
        );
        if a != b {
            outcome = Err(TestCaseError::fail(format!(
                "step {step} differs:\n{trace}"
            )));
            break;
        }
    }
    if outcome.is_ok() {
        let (a, b) = (
            snapshot(&sides[0].provider).await,
            snapshot(&sides[1].provider).await,
        );
        if a != b {
            outcome = Err(TestCaseError::fail(format!(
                "final state differs after:\n{trace}\nprocedures:\n{a}\ninline:\n{b}"
            )));
        }
    }
    for name in &names {
        drop_schema(&pool, name).await;
    }
    pool.close().await;
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, .. ProptestConfig::default() })]

    #[test]
    fn procedures_and_inline_sql_behave_identically(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(run_case(ops))?;
    }
}

/// The completion an `AckWork` op sends for `item`: an activity's result
/// when `complete` asks for one, otherwise none.
pub(super) fn completion_of(complete: bool, item: WorkItem) -> Option<WorkItem> {
    match (complete, item) {
        (
            true,
            WorkItem::ActivityExecute {
                instance,
                execution_id,
                id,
                ..
            },
        ) => Some(WorkItem::ActivityCompleted {
            instance,
            execution_id,
            id,
            result: "r".to_string(),
        }),
        _ => None,
    }
}

/// The activities an `AckOrchestration` op schedules: `count` of them, ids
/// from `first`.
pub(super) fn activities_of(instance: &str, first: u64, count: u8) -> Vec<WorkItem> {
    (0..u64::from(count))
        .map(|n| WorkItem::ActivityExecute {
            instance: instance.to_string(),
            execution_id: 1,
            id: first + n,
            name: "Work".to_string(),
            input: n.to_string(),
            session_id: None,
            tag: None,
        })
        .collect()
}
