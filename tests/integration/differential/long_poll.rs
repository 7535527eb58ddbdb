//! The long-poll half of the differential test: random sequences over both
//! SQL modes, comparing what a long-polling fetch learns besides its item.
//!
//! - **Next due times.** Every plain fetch is made through the provider's
//!   test hook (`probe_fetch_*`), as long polling makes it: next due time
//!   asked for, completions settling for [`SETTLE`]. The hook returns the
//!   claimed item, whether the statement saw more claimable work, and the
//!   milliseconds until a delayed item or an expiring lease (of an
//!   instance, an activity or a session) may make work
//!   claimable: the inputs of the waiting fetch's sleep and of the quiet
//!   note it leaves (a note is a pure function of these and of the
//!   notifications). Both modes must report the same item, the same `more`
//!   and due times within [`TOLERANCE_MS`] (the two sides run a few
//!   milliseconds apart; every time in the test is a whole number of
//!   minutes, so distinct due times differ by at least a minute).
//! - **Settling.** Activities completing while siblings are queued are
//!   passed over for [`SETTLE`] (at most five times that), and their due
//!   time reported.
//! - **Notifications.** A `LISTEN` on both schemas' channels records every
//!   notification each operation sends (`orchestrator`, `orchestrator
//!   settle`, `worker`); both modes must send the same ones. A missing one
//!   would leave a quiet note standing over claimable work.
//! - **Waiting fetches.** Fetches through the `Provider` trait with a
//!   non-zero poll timeout, on providers with notifications on or off (per
//!   case): both must return the same thing. With notifications on, every
//!   notification an operation sent has reached the provider's listener
//!   before the next operation starts, so a quiet note is only ever taken
//!   and trusted with the notifications the modes sent.
//!
//! Time is controlled: delays are minutes or an hour, far beyond a case's
//! duration, and an `Advance` operation moves both schemas' clocks forward by
//! shifting every stored time back (then notifies both queues, since a note
//! counts wall-clock time and cannot see the jump).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide::Event;
use duroxide::providers::{ExecutionMetadata, Provider, SessionFetchConfig, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use proptest::prelude::*;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{INSTANCES, activities_of, completion_of, history_event, snapshot};
use crate::fixtures::start;
use crate::support::{Kind, Slot, drop_schema, fresh_schema_name, pool};

/// Leases: ten minutes, so only an `Advance` expires one.
const LOCK: Duration = Duration::from_secs(600);
/// Session leases: five minutes.
const SESSION_LOCK: Duration = Duration::from_secs(300);
/// Sessions activities run in, and the owners that fetch them.
const SESSIONS: [&str; 2] = ["s0", "s1"];
const OWNERS: [&str; 2] = ["w0", "w1"];
/// The providers' `completion_settle`, and the hook's.
const SETTLE: Duration = Duration::from_secs(120);
/// The poll timeout of a waiting fetch.
const POLL: Duration = Duration::from_millis(100);
/// How far two modes' due times may differ: the skew between the sides.
const TOLERANCE_MS: i64 = 20_000;
/// Bound on waiting for a notification to arrive (a failure, not a timing).
const DELIVERY: Duration = Duration::from_secs(30);
const MINUTE_MS: u64 = 60_000;
/// Delays (abandons, delayed enqueues, timers) and clock jumps, in minutes:
/// equal values meet (an item due exactly when the clock jumps to it).
const DELAYS: [u64; 3] = [1, 3, 60];
const JUMPS: [u64; 4] = [1, 2, 10, 60];

/// One operation; indexes pick an instance, a held token or a duration.
#[derive(Debug, Clone)]
enum Op {
    EnqueueStart(usize),
    EnqueueEvent(usize),
    EnqueueLater {
        instance: usize,
        delay: usize,
    },
    /// An activity, as a runtime's ack would schedule it, in session
    /// `SESSIONS[n]` or none.
    EnqueueWork {
        instance: usize,
        id: u64,
        session: Option<usize>,
    },
    /// One fetch attempt through the hook.
    ProbeOrchestration,
    /// A waiting fetch through the trait.
    WaitOrchestration,
    AckOrchestration {
        token: usize,
        events: u8,
        activities: u8,
        timer: Option<usize>,
        complete: bool,
    },
    AbandonOrchestration {
        token: usize,
        delay: Option<usize>,
        ignore_attempt: bool,
    },
    /// A fetch through the hook, as session owner `OWNERS[n]` or none.
    ProbeWork(Option<usize>),
    WaitWork(Option<usize>),
    AckWork {
        token: usize,
        completion: bool,
    },
    AbandonWork {
        token: usize,
        delay: Option<usize>,
        ignore_attempt: bool,
    },
    /// Move both clocks forward by `JUMPS[n]` minutes.
    Advance(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let delay = || proptest::option::of(0..DELAYS.len());
    prop_oneof![
        3 => (0..3usize).prop_map(Op::EnqueueStart),
        1 => (0..3usize).prop_map(Op::EnqueueEvent),
        2 => (0..3usize, 0..DELAYS.len())
            .prop_map(|(instance, delay)| Op::EnqueueLater { instance, delay }),
        3 => (0..3usize, 0..4u64, proptest::option::of(0..SESSIONS.len()))
            .prop_map(|(instance, id, session)| Op::EnqueueWork { instance, id, session }),
        4 => Just(Op::ProbeOrchestration),
        2 => Just(Op::WaitOrchestration),
        3 => (0..3usize, 0..3u8, 0..4u8, delay(), any::<bool>()).prop_map(
            |(token, events, activities, timer, complete)| Op::AckOrchestration {
                token,
                events,
                activities,
                timer,
                complete,
            }
        ),
        1 => (0..3usize, delay(), any::<bool>()).prop_map(|(token, delay, ignore_attempt)| {
            Op::AbandonOrchestration {
                token,
                delay,
                ignore_attempt,
            }
        }),
        4 => proptest::option::of(0..OWNERS.len()).prop_map(Op::ProbeWork),
        1 => proptest::option::of(0..OWNERS.len()).prop_map(Op::WaitWork),
        4 => (0..3usize, proptest::bool::weighted(0.8))
            .prop_map(|(token, completion)| Op::AckWork { token, completion }),
        1 => (0..3usize, delay(), any::<bool>()).prop_map(|(token, delay, ignore_attempt)| {
            Op::AbandonWork {
                token,
                delay,
                ignore_attempt,
            }
        }),
        2 => (0..JUMPS.len()).prop_map(Op::Advance),
    ]
}

fn minutes(n: u64) -> Duration {
    Duration::from_millis(n * MINUTE_MS)
}

/// What one side showed for one operation: text that must match exactly,
/// and due times that must match within [`TOLERANCE_MS`].
#[derive(Debug, Default)]
struct Seen {
    text: String,
    due: Option<i64>,
}

impl Seen {
    fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            due: None,
        }
    }

    /// What a probe saw: the item described, `more`, and the due time.
    fn probed(item: &str, more: bool, due: Option<i64>) -> Self {
        Self {
            text: format!("{item}, more {more}, due {}", due_kind(due)),
            due,
        }
    }

    fn agrees_with(&self, other: &Seen) -> bool {
        self.text == other.text
            && match (self.due, other.due) {
                (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE_MS,
                (a, b) => a == b,
            }
    }
}

/// A due time's kind, compared exactly: none, now (look again at once), or
/// later (the value itself compared within the tolerance).
fn due_kind(due: Option<i64>) -> &'static str {
    match due {
        None => "none",
        Some(0) => "now",
        Some(ms) if ms > 0 => "later",
        Some(_) => "in the past",
    }
}

/// One side: its pool (its own, so its own notification hub), provider and
/// held tokens, and the notifications its listener has received so far.
struct Side {
    pool: PgPool,
    schema: String,
    provider: PostgresProvider,
    orchestration_tokens: Vec<(String, String, usize)>,
    work_tokens: Vec<(String, WorkItem)>,
    notified: u64,
}

fn shown(r: Result<(), duroxide::providers::ProviderError>) -> Seen {
    Seen::text(match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err(retryable={})", e.is_retryable()),
    })
}

/// The held token at `index`, counted round the ones held, so most
/// operations on tokens find one.
fn take<T>(held: &mut Vec<T>, index: usize) -> Option<T> {
    (!held.is_empty()).then(|| held.remove(index % held.len()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn describe_orchestration(item: &duroxide::providers::OrchestrationItem, attempts: u32) -> String {
    format!(
        "item({}, exec {}, {} msgs {:?}, {} events, attempts {attempts})",
        item.instance,
        item.execution_id,
        item.messages.len(),
        item.messages,
        item.history.len()
    )
}

/// Applies `op` to one side and describes what was observable. `now_ms`
/// is the step's wall-clock time, the same for both sides, so a timer's
/// payload is too.
async fn apply(side: &mut Side, op: &Op, now_ms: u64) -> Seen {
    let p = &side.provider;
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
        Op::EnqueueLater { instance, delay } => shown(
            p.enqueue_for_orchestrator(start(INSTANCES[*instance]), Some(minutes(DELAYS[*delay])))
                .await,
        ),
        Op::EnqueueWork {
            instance,
            id,
            session,
        } => shown(
            p.enqueue_for_worker(WorkItem::ActivityExecute {
                instance: INSTANCES[*instance].to_string(),
                execution_id: 1,
                id: 50 + id,
                name: "Work".to_string(),
                input: id.to_string(),
                session_id: session.map(|n| SESSIONS[n].to_string()),
                tag: None,
            })
            .await,
        ),
        Op::ProbeOrchestration => match p.probe_fetch_orchestration_item(LOCK, SETTLE).await {
            Ok(probe) => {
                let item = match probe.item {
                    Some((item, token, attempts)) => {
                        let described = describe_orchestration(&item, attempts);
                        side.orchestration_tokens
                            .push((token, item.instance, item.history.len()));
                        described
                    }
                    None => "none".to_string(),
                };
                Seen::probed(&item, probe.more, probe.next_due_ms)
            }
            Err(e) => Seen::text(format!("err({e})")),
        },
        Op::WaitOrchestration => match p.fetch_orchestration_item(LOCK, POLL, None).await {
            Ok(Some((item, token, attempts))) => {
                let described = describe_orchestration(&item, attempts);
                side.orchestration_tokens
                    .push((token, item.instance, item.history.len()));
                Seen::text(described)
            }
            Ok(None) => Seen::text("none"),
            Err(e) => Seen::text(format!("err(retryable={})", e.is_retryable())),
        },
        Op::AckOrchestration {
            token,
            events,
            activities,
            timer,
            complete,
        } => {
            let Some((token, instance, len)) = take(&mut side.orchestration_tokens, *token) else {
                return Seen::text("no token");
            };
            let first = len as u64 + 1;
            let history: Vec<Event> = (first..first + u64::from(*events))
                .map(|id| history_event(&instance, id))
                .collect();
            let work = activities_of(&instance, first, *activities);
            let timers: Vec<WorkItem> = timer
                .iter()
                .map(|delay| WorkItem::TimerFired {
                    instance: instance.clone(),
                    execution_id: 1,
                    id: first + 100,
                    fire_at_ms: now_ms + DELAYS[*delay] * MINUTE_MS,
                })
                .collect();
            let metadata = ExecutionMetadata {
                orchestration_name: Some(crate::fixtures::ORCHESTRATION.to_string()),
                orchestration_version: Some("1.0.0".to_string()),
                status: complete.then(|| "Completed".to_string()),
                output: complete.then(|| "done".to_string()),
                ..Default::default()
            };
            shown(
                p.ack_orchestration_item(&token, 1, history, work, timers, metadata, vec![])
                    .await,
            )
        }
        Op::AbandonOrchestration {
            token,
            delay,
            ignore_attempt,
        } => {
            let Some((token, _, _)) = take(&mut side.orchestration_tokens, *token) else {
                return Seen::text("no token");
            };
            let delay = delay.map(|d| minutes(DELAYS[d]));
            shown(
                p.abandon_orchestration_item(&token, delay, *ignore_attempt)
                    .await,
            )
        }
        Op::ProbeWork(owner) => match p
            .probe_fetch_work_item(LOCK, owner.map(|n| (OWNERS[n], SESSION_LOCK)))
            .await
        {
            Ok(probe) => {
                let item = match probe.item {
                    Some((item, token, attempts)) => {
                        let described = format!("work({item:?}, attempts {attempts})");
                        side.work_tokens.push((token, item));
                        described
                    }
                    None => "none".to_string(),
                };
                Seen::probed(&item, probe.more, probe.next_due_ms)
            }
            Err(e) => Seen::text(format!("err({e})")),
        },
        Op::WaitWork(owner) => match p
            .fetch_work_item(
                LOCK,
                POLL,
                owner
                    .map(|n| SessionFetchConfig {
                        owner_id: OWNERS[n].to_string(),
                        lock_timeout: SESSION_LOCK,
                    })
                    .as_ref(),
                &TagFilter::DefaultOnly,
            )
            .await
        {
            Ok(Some((item, token, attempts))) => {
                let described = format!("work({item:?}, attempts {attempts})");
                side.work_tokens.push((token, item));
                Seen::text(described)
            }
            Ok(None) => Seen::text("none"),
            Err(e) => Seen::text(format!("err(retryable={})", e.is_retryable())),
        },
        Op::AckWork { token, completion } => {
            let Some((token, item)) = take(&mut side.work_tokens, *token) else {
                return Seen::text("no token");
            };
            shown(
                p.ack_work_item(&token, completion_of(*completion, item))
                    .await,
            )
        }
        Op::AbandonWork {
            token,
            delay,
            ignore_attempt,
        } => {
            let Some((token, _)) = take(&mut side.work_tokens, *token) else {
                return Seen::text("no token");
            };
            let delay = delay.map(|d| minutes(DELAYS[d]));
            shown(p.abandon_work_item(&token, delay, *ignore_attempt).await)
        }
        Op::Advance(n) => {
            let ms = JUMPS[*n] * MINUTE_MS;
            let sql = format!(
                "UPDATE \"{s}\".orchestrator_queue SET visible_at_ms = visible_at_ms - {ms}, \
                   locked_until_ms = locked_until_ms - {ms}, created_at_ms = created_at_ms - {ms}, \
                   orphan_since_ms = orphan_since_ms - {ms};
                 UPDATE \"{s}\".worker_queue SET visible_at_ms = visible_at_ms - {ms}, \
                   locked_until_ms = locked_until_ms - {ms}, created_at_ms = created_at_ms - {ms};
                 UPDATE \"{s}\".instance_locks SET locked_until_ms = locked_until_ms - {ms}, \
                   locked_at_ms = locked_at_ms - {ms};
                 UPDATE \"{s}\".sessions SET locked_until_ms = locked_until_ms - {ms}, \
                   last_activity_at_ms = last_activity_at_ms - {ms};
                 SELECT pg_catalog.pg_notify('{s}', 'orchestrator'), pg_catalog.pg_notify('{s}', 'worker');",
                s = side.schema
            );
            // Times moved back lie below the fetches' scan floors.
            p.probe_forget_scan_floors();
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&side.pool)
                .await
            {
                Ok(_) => Seen::text("advanced"),
                Err(e) => Seen::text(format!("advance failed: {e}")),
            }
        }
    }
}

/// Waits for the notifications both sides' operation sent: reads the
/// listener up to the marker `step` sent after both have sent theirs
/// (notifications arrive in commit order), returning each side's payloads,
/// sorted.
async fn notifications(
    listener: &mut PgListener,
    control: &PgPool,
    marker: &str,
    step: usize,
    channels: [&str; 2],
) -> Result<[Vec<String>; 2], String> {
    sqlx::query("SELECT pg_catalog.pg_notify($1, $2)")
        .bind(marker)
        .bind(step.to_string())
        .execute(control)
        .await
        .map_err(|e| format!("marker: {e}"))?;
    let mut seen: [Vec<String>; 2] = Default::default();
    loop {
        let n = tokio::time::timeout(DELIVERY, listener.recv())
            .await
            .map_err(|_| format!("no marker {step} within {DELIVERY:?}"))?
            .map_err(|e| format!("listener: {e}"))?;
        if n.channel() == marker && n.payload() == step.to_string() {
            break;
        }
        // A side's listener announcing itself (its first waiting fetch)
        // says `hello`: not a wake-up of any operation.
        if n.payload() == "hello" {
            continue;
        }
        if let Some(i) = channels.iter().position(|c| *c == n.channel()) {
            seen[i].push(n.payload().to_string());
        }
    }
    for payloads in &mut seen {
        payloads.sort();
    }
    Ok(seen)
}

/// Waits until a provider has sent every notification its commits posted
/// (they go out after the commit, from its pool's outbox), so a marker sent
/// afterwards arrives after them.
async fn sent(provider: &PostgresProvider) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while provider.probe_unsent_notifications() > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{} still has {} notifications unsent",
                provider.schema(),
                provider.probe_unsent_notifications()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Waits until a long-polling provider's listener has received `count`
/// notifications (so a fetch that follows decides with all of them).
async fn delivered(provider: &PostgresProvider, count: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        match provider.notification_stats() {
            None => return Ok(()),
            Some(stats) if stats.subscribed && stats.received >= count => return Ok(()),
            Some(stats) if tokio::time::Instant::now() > deadline => {
                return Err(format!(
                    "the listener of {} has {stats:?}, {count} notifications expected",
                    provider.schema()
                ));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

async fn run_ops(
    sides: &mut [Side; 2],
    ops: &[Op],
    control: &PgPool,
    marker: &str,
    trace: &mut String,
) -> Result<(), String> {
    let mut listener = PgListener::connect_with(control)
        .await
        .map_err(|e| format!("listener: {e}"))?;
    let channels = [sides[0].schema.clone(), sides[1].schema.clone()];
    for channel in channels.iter().map(String::as_str).chain([marker]) {
        listener
            .listen(channel)
            .await
            .map_err(|e| format!("listen {channel}: {e}"))?;
    }
    for side in sides.iter() {
        delivered(&side.provider, 0).await?;
    }
    for (step, op) in ops.iter().enumerate() {
        let now = now_ms();
        let a = apply(&mut sides[0], op, now).await;
        let b = apply(&mut sides[1], op, now).await;
        for side in sides.iter() {
            sent(&side.provider).await?;
        }
        let [na, nb] = notifications(
            &mut listener,
            control,
            marker,
            step,
            [&channels[0], &channels[1]],
        )
        .await?;
        let _ = writeln!(
            trace,
            "{step:>3}: {op:?}\n       procedures: {} (due {:?}) notified {na:?}\n       inline:     {} (due {:?}) notified {nb:?}",
            a.text, a.due, b.text, b.due
        );
        if !a.agrees_with(&b) || na != nb {
            return Err(format!("step {step} differs"));
        }
        for (side, sent) in sides.iter_mut().zip([na.len(), nb.len()]) {
            side.notified += sent as u64;
            delivered(&side.provider, side.notified).await?;
        }
    }
    let (a, b) = (
        snapshot(&sides[0].provider).await,
        snapshot(&sides[1].provider).await,
    );
    if a != b {
        return Err(format!(
            "final state differs:\nprocedures:\n{a}\ninline:\n{b}"
        ));
    }
    Ok(())
}

async fn run_case(notifications_on: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let _slot = Slot::acquire(Kind::Suite);
    let control = pool(2).await;
    let marker = fresh_schema_name("diff_marker");
    let names = [
        fresh_schema_name("diffpoll_proc"),
        fresh_schema_name("diffpoll_inline"),
    ];
    let mut made = Vec::new();
    for (name, mode) in names
        .iter()
        .zip([SqlMode::StoredProcedures, SqlMode::InlineSql])
    {
        // Each side on a pool of its own: its own notification hub.
        let pool = pool(4).await;
        let options = PostgresOptions::default()
            .schema(name.clone())
            .sql_mode(mode)
            .notifications(notifications_on)
            .completion_settle(SETTLE);
        let provider = PostgresProvider::from_pool_with(pool.clone(), options)
            .await
            .unwrap_or_else(|e| panic!("provider {name}: {e}"));
        made.push(Side {
            pool,
            schema: name.clone(),
            provider,
            orchestration_tokens: vec![],
            work_tokens: vec![],
            notified: 0,
        });
    }
    let mut sides: [Side; 2] = match made.try_into() {
        Ok(sides) => sides,
        Err(_) => panic!("two sides"),
    };
    let mut trace = format!("notifications {notifications_on}\n");
    let outcome = run_ops(&mut sides, &ops, &control, &marker, &mut trace).await;
    let pools: Vec<PgPool> = sides.iter().map(|s| s.pool.clone()).collect();
    drop(sides);
    for name in &names {
        drop_schema(&control, name).await;
    }
    for pool in pools {
        pool.close().await;
    }
    control.close().await;
    outcome.map_err(|why| TestCaseError::fail(format!("{why} after:\n{trace}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 100, .. ProptestConfig::default() })]

    #[test]
    fn long_poll_paths_behave_identically(
        notifications_on in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(run_case(notifications_on, ops))?;
    }
}
