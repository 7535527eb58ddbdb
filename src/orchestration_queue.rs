//! Orchestrator queue: claim an instance with its messages and history,
//! commit a turn atomically, abandon, renew, enqueue.
//!
//! Each function builds its parameters once, then makes one call of one
//! procedure (`procedures/*.sql`); fetch and ack let the store's driver make
//! it (`crate::driver`: in inline mode the procedure's statements run from
//! the client). Decoding the result is shared.

use std::collections::HashMap;
use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, KvEntry, OrchestrationItem,
    ScheduledActivityIdentifier, WorkItem,
};
use duroxide::{Event, EventKind};

use crate::codec::{self, AttemptClock, OrchestratorRow, WorkerRow};
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::lost_replies::Claiming;
use crate::notify::{Polled, Queue};
use crate::sql::statements;
use crate::store::Store;

statements! {
    /// Statements of the orchestrator queue.
    pub(crate) struct OrchestrationSql {
        /// Claim the next ready instance.
        fetch = "SELECT * FROM {{schema}}.fetch_orchestration_item{{suffix}}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        /// Commit a turn.
        ack = "SELECT {{schema}}.ack_orchestration_item{{suffix}}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
               $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
        /// Release a lease.
        abandon = "SELECT acked, wake FROM {{schema}}.abandon_orchestration_item{{suffix}}($1, $2, $3)",
        /// Extend a lease.
        renew = "SELECT {{schema}}.renew_orchestration_item_lock{{suffix}}($1, $2)",
        /// Enqueue one message.
        enqueue = "SELECT {{schema}}.enqueue_orchestrator_item{{suffix}}($1, $2, $3, $4)",
        /// Whether a turn's last event is in the history ([`crate::lost_replies`]).
        turn_landed = "SELECT * FROM {{schema}}.turn_landed{{suffix}}($1, $2, $3, $4)",
    }
}

/// The row `fetch_orchestration_item` returns for a claimed instance (built
/// field by field by the inline driver).
#[derive(sqlx::FromRow)]
pub(crate) struct FetchedRow {
    pub lock_token: String,
    pub instance_id: String,
    pub orchestration_name: Option<String>,
    pub orchestration_version: Option<String>,
    pub execution_id: i64,
    pub instance_known: bool,
    pub attempt_count: i32,
    pub messages: Vec<String>,
    /// `None` when the history could not be read (see `history_error`).
    pub history: Option<Vec<String>>,
    /// Why the history could not be read: too large, or a failure reading it.
    pub history_error: Option<String>,
    /// The SQLSTATE of a failure reading the history (`None`: read, or too
    /// large).
    pub history_sqlstate: Option<String>,
    pub kv_keys: Vec<String>,
    pub kv_values: Vec<String>,
    pub kv_updated_ms: Vec<i64>,
}

/// The parameters of a fetch, in both SQL modes.
#[derive(Clone, Copy)]
pub(crate) struct FetchParams {
    /// The lease asked for, counted from the start of each attempt.
    pub lock_timeout: Duration,
    pub has_filter: bool,
    /// min major/minor/patch, max major/minor/patch.
    pub bounds: [Option<i64>; 6],
    /// Report the next due time when nothing is claimed (long polling).
    pub next_due: bool,
    /// Pass over fresh completions of instances with activities in flight
    /// for this long (long polling; 0: off).
    pub settle_ms: i64,
    /// How long a parked orphan message is kept.
    pub orphan_retention_ms: i64,
    /// Largest history a fetch reads.
    pub max_history_bytes: i64,
    /// Most bytes of the instance's messages the batch takes.
    pub max_batch_bytes: i64,
}

/// Version bounds bound as eight parameters (see the procedure's header).
fn filter_params(filter: Option<&DispatcherCapabilityFilter>) -> Result<(bool, [Option<i64>; 6])> {
    let Some(filter) = filter else {
        return Ok((false, [None; 6]));
    };
    let Some(range) = filter.supported_duroxide_versions.first() else {
        return Ok((true, [None; 6]));
    };
    let v = |field: &str, n: u64| codec::to_i64(field, n).map(Some);
    Ok((
        true,
        [
            v("min.major", range.min.major)?,
            v("min.minor", range.min.minor)?,
            v("min.patch", range.min.patch)?,
            v("max.major", range.max.major)?,
            v("max.minor", range.max.minor)?,
            v("max.patch", range.max.patch)?,
        ],
    ))
}

/// Claims the next ready instance (see `procedures/fetch_orchestration_item.sql`).
/// With a non-zero `poll_timeout` and notifications on, an empty queue is
/// waited on (see [`crate::notify`]).
pub(crate) async fn fetch(
    s: &Store,
    lock_timeout: Duration,
    poll_timeout: Duration,
    filter: Option<&DispatcherCapabilityFilter>,
) -> Result<Option<(OrchestrationItem, String, u32)>> {
    let (has_filter, bounds) = filter_params(filter)?;
    let mut params = FetchParams {
        lock_timeout,
        has_filter,
        bounds,
        next_due: false,
        settle_ms: 0,
        orphan_retention_ms: s.limits.orphan_retention_ms,
        max_history_bytes: s.limits.max_history_bytes,
        max_batch_bytes: s.limits.max_batch_bytes,
    };
    match &s.long_poll {
        Some(long_poll) if !poll_timeout.is_zero() => {
            params.next_due = true;
            params.settle_ms = codec::millis(long_poll.settle());
            let key = codec::fetch_key(&(has_filter, bounds, params.settle_ms));
            long_poll
                .fetch(Queue::Orchestrator, key, poll_timeout, || {
                    fetch_once(s, params)
                })
                .await
        }
        _ => Ok(fetch_once(s, params).await?.into_item()),
    }
}

/// One claim attempt (also the test hook's, `crate::probe`).
pub(crate) async fn fetch_once(
    s: &Store,
    params: FetchParams,
) -> Result<Polled<(OrchestrationItem, String, u32)>> {
    let clock = AttemptClock::start();
    let _slot = s.gate.enter(&s.name, s.pool.fetch_share()).await;
    // Given back if the call's reply never comes (crate::lost_replies).
    let claiming = Claiming::new(s, Queue::Orchestrator, params.lock_timeout);
    let polled = s
        .read_committed(|| s.driver.fetch_orchestration(s, params, clock, &claiming))
        .await;
    claiming.settle(&polled);
    match polled? {
        Polled::Found { item: row, .. } if history_may_heal(&row) => {
            let e = PostgresProviderError::HistoryUnavailable {
                instance: row.instance_id.clone(),
                sqlstate: row.history_sqlstate.clone().unwrap_or_default(),
                message: row.history_error.clone().unwrap_or_default(),
            };
            set_aside_unread(s, &row, &e).await;
            Err(e)
        }
        Polled::Found {
            item: row,
            more,
            next_due_ms,
        } => match decode_messages(&row.messages) {
            Ok(messages) => Ok(Polled::Found {
                item: decode_fetched(row, messages)?,
                more,
                next_due_ms,
            }),
            Err(e) => {
                set_aside(s, &row, &e).await;
                Err(e)
            }
        },
        Polled::Empty { next_due_ms } => Ok(Polled::Empty { next_due_ms }),
    }
}

/// Gives back a turn with a message this build cannot decode: its attempt
/// not counted, out of sight for [`codec::UNREADABLE_SET_ASIDE`], then
/// claimable by any dispatcher (one that can read the message runs it).
async fn set_aside(s: &Store, row: &FetchedRow, error: &PostgresProviderError) {
    crate::observe::unreadable_set_aside(s, Queue::Orchestrator, Some(&row.instance_id), error);
    give_back_uncounted(s, &row.lock_token, "a turn that does not decode").await;
}

/// Abandons the turn `token` leases for [`codec::UNREADABLE_SET_ASIDE`],
/// its attempt not counted, as the runtime's abandon is made: riding out a
/// lost connection, a read-only server or a lock wait within the pool's
/// acquire timeout ([`Store::acking`]). The claim has committed with its
/// attempt counted, so an abandon given up on too soon would leave the
/// attempt counted, and the turn leased to its end. A failure after that
/// is logged at WARN: the turn comes back when its lease ends.
async fn give_back_uncounted(s: &Store, token: &str, what: &str) {
    let released = crate::lost_replies::Landed::Released("abandon_orchestration_item");
    let outcome = s
        .acking(token, Some(released), || {
            abandon(s, token, Some(codec::UNREADABLE_SET_ASIDE), true)
        })
        .await;
    if let Err(e) = outcome {
        tracing::warn!(target: "duroxide_postgres", schema = %s.name, error = %e, "setting aside {what} failed; it comes back when its lease ends, its attempt counted");
    }
}

/// Whether the claimed turn's history failed to read for a reason that may
/// heal (out of memory, a statement cancelled, ...: the rule of
/// [`PostgresProviderError::is_retryable`]). Such a turn is set aside
/// instead of handed to the runtime with a `history_error`, which would
/// count toward poisoning the instance: a passing server condition must not
/// fail it.
fn history_may_heal(row: &FetchedRow) -> bool {
    row.history_sqlstate.as_deref().is_some_and(|code| {
        PostgresProviderError::heals(code, row.history_error.as_deref().unwrap_or_default())
    })
}

/// Gives back a turn whose history could not be read for now, as
/// [`set_aside`] does one it cannot decode: its attempt not counted, out of
/// sight for [`codec::UNREADABLE_SET_ASIDE`] so that it is not claimed and
/// read again and again meanwhile.
async fn set_aside_unread(s: &Store, row: &FetchedRow, error: &PostgresProviderError) {
    tracing::warn!(
        target: "duroxide_postgres",
        schema = %s.name,
        instance = %row.instance_id,
        "set aside for a second a turn whose history could not be read: {error}"
    );
    give_back_uncounted(s, &row.lock_token, "a turn whose history could not be read").await;
}

/// The runtime's view of a claimed instance: (item, lock token, attempts).
fn decode_fetched(
    row: FetchedRow,
    messages: Vec<WorkItem>,
) -> Result<(OrchestrationItem, String, u32)> {
    // A history the fetch did not read, or that does not parse, is the
    // runtime's to handle (abandon, then poison), as in duroxide's SQLite provider.
    let (history, history_error) = match (&row.history, row.history_error) {
        (_, Some(error)) => (Vec::new(), Some(error)),
        (None, None) => (Vec::new(), Some("history could not be read".to_string())),
        (Some(history), None) => match codec::decode_events(history) {
            Ok(history) => (history, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
    };
    let (name, version) = if row.instance_known {
        (
            row.orchestration_name.unwrap_or_default(),
            row.orchestration_version,
        )
    } else {
        started_from(&history, &messages)
    };
    // A turn whose history cannot be read gets no KV snapshot either, as in duroxide's SQLite provider.
    let kv_snapshot: HashMap<String, KvEntry> = if history_error.is_some() {
        HashMap::new()
    } else {
        row.kv_keys
            .into_iter()
            .zip(row.kv_values)
            .zip(row.kv_updated_ms)
            .map(|((key, value), ms)| {
                let entry = KvEntry {
                    value,
                    last_updated_at_ms: u64::try_from(ms).unwrap_or_default(),
                };
                (key, entry)
            })
            .collect()
    };
    let item = OrchestrationItem {
        instance: row.instance_id,
        orchestration_name: name,
        execution_id: codec::to_u64("execution_id", row.execution_id)?,
        version: version.unwrap_or_else(|| "unknown".to_string()),
        history,
        messages,
        history_error,
        kv_snapshot,
    };
    let attempts = u32::try_from(row.attempt_count).unwrap_or_default();
    Ok((item, row.lock_token, attempts))
}

/// The batch's messages, or what is wrong with the first that does not
/// decode (a newer duroxide's message during a rolling upgrade, or a row
/// written by hand). Such a turn must not run: its ack would consume the
/// message unseen. Nor may it count toward poisoning the instance, as a
/// history that does not decode does: during a rolling upgrade most
/// dispatchers may be older ones. The fetch fails and sets it aside
/// ([`set_aside`]) until a dispatcher that reads the message takes it.
fn decode_messages(rows: &[String]) -> Result<Vec<WorkItem>> {
    rows.iter()
        .enumerate()
        .map(|(n, text)| {
            serde_json::from_str(text).map_err(|e| {
                let what = format!("message {} of {} of the turn", n + 1, rows.len());
                PostgresProviderError::decode(what, e)
            })
        })
        .collect()
}

/// Name and version of an instance that has no row yet: from its history's
/// `OrchestrationStarted`, else from a start message in the batch.
fn started_from(history: &[Event], messages: &[WorkItem]) -> (String, Option<String>) {
    if let Some((name, version)) = history.iter().find_map(|e| match &e.kind {
        EventKind::OrchestrationStarted { name, version, .. } => {
            Some((name.clone(), version.clone()))
        }
        _ => None,
    }) {
        return (name, Some(version));
    }
    messages
        .iter()
        .find_map(|m| match m {
            WorkItem::StartOrchestration {
                orchestration,
                version,
                ..
            }
            | WorkItem::ContinueAsNew {
                orchestration,
                version,
                ..
            } => Some((orchestration.clone(), version.clone())),
            _ => None,
        })
        .unwrap_or_default()
}

/// KV changes of a history delta, in order: (op, key, value, updated_ms).
type KvOps = (
    Vec<&'static str>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<i64>,
);

fn kv_ops(delta: &[Event]) -> Result<KvOps> {
    let mut ops: KvOps = Default::default();
    for event in delta {
        let (op, key, value, ms) = match &event.kind {
            EventKind::KeyValueSet {
                key,
                value,
                last_updated_at_ms,
            } => (
                "set",
                key.clone(),
                Some(value.clone()),
                codec::to_i64("last_updated_at_ms", *last_updated_at_ms)?,
            ),
            EventKind::KeyValueCleared { key } => ("clear", key.clone(), None, 0),
            EventKind::KeyValuesCleared => ("clear_all", String::new(), None, 0),
            _ => continue,
        };
        codec::check_id("kv key", &key)?;
        if let Some(v) = &value {
            codec::check_text("kv value", v)?;
        }
        ops.0.push(op);
        ops.1.push(key);
        ops.2.push(value);
        ops.3.push(ms);
    }
    Ok(ops)
}

/// Commits one turn (see `procedures/ack_orchestration_item.sql`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ack(
    s: &Store,
    lock_token: &str,
    execution_id: u64,
    history_delta: &[Event],
    worker_items: &[WorkItem],
    orchestrator_items: &[WorkItem],
    metadata: &ExecutionMetadata,
    cancelled_activities: &[ScheduledActivityIdentifier],
) -> Result<()> {
    codec::check_text("lock_token", lock_token)?;
    let execution_id = codec::to_i64("execution_id", execution_id)?;

    let mut event_ids = Vec::with_capacity(history_delta.len());
    let mut event_types = Vec::with_capacity(history_delta.len());
    let mut event_data = Vec::with_capacity(history_delta.len());
    for event in history_delta {
        event_ids.push(codec::to_i64("event_id", event.event_id())?);
        event_types.push(codec::event_type(event));
        let encoded = codec::encode_event(event)?;
        s.limits.check_event(event, &encoded)?;
        event_data.push(encoded);
    }

    // The last CustomStatusUpdated of the delta wins; `None` inside it clears.
    let custom_status = history_delta.iter().rev().find_map(|e| match &e.kind {
        EventKind::CustomStatusUpdated { status } => Some(status.clone()),
        _ => None,
    });
    if let Some(Some(status)) = &custom_status {
        codec::check_text("custom_status", status)?;
    }
    let (kv_op, kv_key, kv_value, kv_ms) = kv_ops(history_delta)?;
    for value in kv_value.iter().flatten() {
        s.limits.check_payload("kv value", value)?;
    }

    let workers = worker_items
        .iter()
        .map(WorkerRow::new)
        .collect::<Result<Vec<_>>>()?;
    let orchestrator = orchestrator_items
        .iter()
        .map(OrchestratorRow::new)
        .collect::<Result<Vec<_>>>()?;

    if let Some(parent) = &metadata.parent_instance_id {
        codec::check_id("parent_instance_id", parent)?;
    }
    let failed = metadata.status.as_deref() == Some("Failed");
    for (field, value) in [
        ("orchestration_name", &metadata.orchestration_name),
        ("orchestration_version", &metadata.orchestration_version),
        ("parent_instance_id", &metadata.parent_instance_id),
        ("status", &metadata.status),
        ("output", &metadata.output),
    ] {
        if let Some(v) = value {
            codec::check_text(field, v)?;
            if failed && field == "output" {
                // A failed execution's output is its failure.
                s.limits.check_failure(field, v)?;
            } else {
                s.limits.check_payload(field, v)?;
            }
        }
    }
    for w in &workers {
        s.limits.check_payload("activity work item", &w.json)?;
    }
    for o in &orchestrator {
        s.limits
            .check_message("orchestrator work item", o.kind, &o.json)?;
    }
    let pinned = match &metadata.pinned_duroxide_version {
        Some(v) => [
            Some(codec::to_i64("pinned.major", v.major)?),
            Some(codec::to_i64("pinned.minor", v.minor)?),
            Some(codec::to_i64("pinned.patch", v.patch)?),
        ],
        None => [None; 3],
    };
    let mut cancel_instances = Vec::with_capacity(cancelled_activities.len());
    let mut cancel_executions = Vec::with_capacity(cancelled_activities.len());
    let mut cancel_activities = Vec::with_capacity(cancelled_activities.len());
    for c in cancelled_activities {
        cancel_instances.push(codec::check_text("cancelled instance", &c.instance)?.to_string());
        cancel_executions.push(codec::to_i64("cancelled execution_id", c.execution_id)?);
        cancel_activities.push(codec::to_i64("cancelled activity_id", c.activity_id)?);
    }

    let params = AckParams {
        lock_token: lock_token.to_string(),
        execution_id,
        event_ids,
        event_types,
        event_data,
        name: metadata.orchestration_name.clone(),
        version: metadata.orchestration_version.clone(),
        parent_instance: metadata.parent_instance_id.clone(),
        status: metadata.status.clone(),
        output: metadata.output.clone(),
        pinned,
        custom_status_set: custom_status.is_some(),
        custom_status: custom_status.flatten(),
        kv_ops: kv_op,
        kv_keys: kv_key,
        kv_values: kv_value,
        kv_updated_ms: kv_ms,
        worker_executions: workers.iter().map(|w| w.execution_id).collect(),
        worker_activities: workers.iter().map(|w| w.activity_id).collect(),
        orch_kinds: orchestrator.iter().map(|o| o.kind).collect(),
        orch_visible_ms: orchestrator.iter().map(|o| o.fire_at_ms).collect(),
        worker_items: Vec::with_capacity(workers.len()),
        worker_instances: Vec::with_capacity(workers.len()),
        worker_sessions: Vec::with_capacity(workers.len()),
        worker_tags: Vec::with_capacity(workers.len()),
        orch_instances: Vec::with_capacity(orchestrator.len()),
        orch_items: Vec::with_capacity(orchestrator.len()),
        cancel_instances,
        cancel_executions,
        cancel_activities,
    };
    let mut params = params;
    for w in workers {
        params.worker_items.push(w.json);
        params.worker_instances.push(w.instance);
        params.worker_sessions.push(w.session_id);
        params.worker_tags.push(w.tag);
    }
    for o in orchestrator {
        params.orch_instances.push(o.instance);
        params.orch_items.push(o.json);
    }
    let acked = s.driver.ack_orchestration(s, params).await;
    // Whether or not it committed, the history may have changed: a read
    // answered from an earlier fetch would hide it (`crate::prefetch`).
    let mut marked: Option<&str> = None;
    for instance in history_delta.iter().map(|e| e.instance_id.as_str()) {
        if marked != Some(instance) {
            s.prefetch.wrote(instance);
            marked = Some(instance);
        }
    }
    s.woke(&acked?);
    Ok(())
}

/// Everything an ack binds, validated and encoded once for both SQL modes.
/// Owned, so an inline ack can run to completion on its own task.
pub(crate) struct AckParams {
    pub lock_token: String,
    pub execution_id: i64,
    pub event_ids: Vec<i64>,
    pub event_types: Vec<String>,
    pub event_data: Vec<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub parent_instance: Option<String>,
    pub status: Option<String>,
    pub output: Option<String>,
    pub pinned: [Option<i64>; 3],
    pub custom_status_set: bool,
    pub custom_status: Option<String>,
    pub kv_ops: Vec<&'static str>,
    pub kv_keys: Vec<String>,
    pub kv_values: Vec<Option<String>>,
    pub kv_updated_ms: Vec<i64>,
    pub worker_items: Vec<String>,
    pub worker_instances: Vec<String>,
    pub worker_executions: Vec<i64>,
    pub worker_activities: Vec<i64>,
    pub worker_sessions: Vec<Option<String>>,
    pub worker_tags: Vec<Option<String>>,
    pub orch_instances: Vec<String>,
    pub orch_kinds: Vec<&'static str>,
    pub orch_items: Vec<String>,
    pub orch_visible_ms: Vec<Option<i64>>,
    pub cancel_instances: Vec<String>,
    pub cancel_executions: Vec<i64>,
    pub cancel_activities: Vec<i64>,
}

/// The event id duroxide's runtime gives the `OrchestrationFailed` it acks
/// for an instance whose history it could not be given (`history_error`).
const POISON_EVENT_ID: i64 = 99_999;

impl AckParams {
    /// Whether this is the runtime's poison failure at its fixed event id,
    /// which the ack appends after the history's last event when the
    /// history already holds that id
    /// (`statements/ack_orchestration_item/poison_after_last.sql`; the
    /// procedure tests the same).
    pub(crate) fn is_poison_failure(&self) -> bool {
        self.status.as_deref() == Some("Failed")
            && self.event_ids == [POISON_EVENT_ID]
            && self.event_types == ["OrchestrationFailed"]
    }
}

/// Releases a lease (see `procedures/abandon_orchestration_item.sql`).
pub(crate) async fn abandon(
    s: &Store,
    lock_token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<()> {
    let (found, wake): (bool, Vec<String>) = sqlx::query_as(&s.sql.orchestration.abandon)
        .bind(codec::check_text("lock_token", lock_token)?)
        .bind(delay.map(codec::millis))
        .bind(ignore_attempt)
        .fetch_one(s.bounded())
        .await?;
    s.woke(&wake);
    found.then_some(()).ok_or_else(|| {
        PostgresProviderError::rejected(sqlstate::INVALID_LOCK_TOKEN, "Invalid lock token")
    })
}

/// Extends a live lease.
pub(crate) async fn renew(s: &Store, lock_token: &str, extend_for: Duration) -> Result<()> {
    let found: bool = sqlx::query_scalar(&s.sql.orchestration.renew)
        .bind(codec::check_text("lock_token", lock_token)?)
        .bind(codec::millis(extend_for))
        .fetch_one(s.bounded())
        .await?;
    found.then_some(()).ok_or_else(|| {
        PostgresProviderError::rejected(
            sqlstate::INVALID_LOCK_TOKEN,
            "Invalid lock token: lock token invalid, expired, or already acked",
        )
    })
}

/// Enqueues one orchestrator message, visible after `delay`.
pub(crate) async fn enqueue(s: &Store, item: &WorkItem, delay: Option<Duration>) -> Result<()> {
    let row = OrchestratorRow::new(item)?;
    s.limits
        .check_message("orchestrator work item", row.kind, &row.json)?;
    let wake: Vec<String> = sqlx::query_scalar(&s.sql.orchestration.enqueue)
        .bind(&row.instance)
        .bind(row.kind)
        .bind(&row.json)
        .bind(codec::delay_millis(delay))
        .fetch_one(s.bounded())
        .await?;
    s.woke(&wake);
    Ok(())
}
