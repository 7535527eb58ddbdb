//! Orchestrator queue: claim an instance with its messages and history,
//! commit a turn atomically, abandon, renew, enqueue.
//!
//! Each function is one call of one procedure (`procedures/*.sql`); this
//! module builds the parameters and decodes the result.

use std::collections::HashMap;
use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, KvEntry, OrchestrationItem,
    ScheduledActivityIdentifier, WorkItem,
};
use duroxide::{Event, EventKind};

use crate::codec::{self, OrchestratorRow, WorkerRow};
use crate::error::Result;
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the orchestrator queue.
    pub(crate) struct OrchestrationSql {
        /// Claim the next ready instance.
        fetch = "SELECT * FROM {{schema}}.fetch_orchestration_item($1, $2, $3, $4, $5, $6, $7, $8)",
        /// Commit a turn.
        ack = "SELECT {{schema}}.ack_orchestration_item($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
               $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
        /// Release a lease.
        abandon = "SELECT {{schema}}.abandon_orchestration_item($1, $2, $3)",
        /// Extend a lease.
        renew = "SELECT {{schema}}.renew_orchestration_item_lock($1, $2)",
        /// Enqueue one message.
        enqueue = "SELECT {{schema}}.enqueue_orchestrator_item($1, $2, $3, $4)",
    }
}

/// The row `fetch_orchestration_item` returns.
#[derive(sqlx::FromRow)]
struct FetchedRow {
    lock_token: String,
    instance_id: String,
    orchestration_name: Option<String>,
    orchestration_version: Option<String>,
    execution_id: i64,
    instance_known: bool,
    attempt_count: i32,
    messages: Vec<String>,
    history: Vec<String>,
    kv_keys: Vec<String>,
    kv_values: Vec<String>,
    kv_updated_ms: Vec<i64>,
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
pub(crate) async fn fetch(
    p: &PostgresProvider,
    lock_timeout: Duration,
    _poll_timeout: Duration,
    filter: Option<&DispatcherCapabilityFilter>,
) -> Result<Option<(OrchestrationItem, String, u32)>> {
    let (has_filter, bounds) = filter_params(filter)?;
    let mut query = sqlx::query_as::<_, FetchedRow>(&p.sql.orchestration.fetch)
        .bind(codec::millis(lock_timeout))
        .bind(has_filter);
    for bound in bounds {
        query = query.bind(bound);
    }
    let Some(row) = query.fetch_optional(&p.pool).await? else {
        return Ok(None);
    };

    // Messages that no longer parse are skipped; the rest of the turn proceeds.
    let messages: Vec<WorkItem> = row
        .messages
        .iter()
        .filter_map(|text| codec::decode_work_item(text).ok())
        .collect();
    let (history, history_error) = match codec::decode_events(&row.history) {
        Ok(history) => (history, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
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
    Ok(Some((item, row.lock_token, attempts)))
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
        codec::check_text("kv key", &key)?;
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
    p: &PostgresProvider,
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
        event_data.push(codec::encode_event(event)?);
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

    let workers = worker_items
        .iter()
        .map(WorkerRow::new)
        .collect::<Result<Vec<_>>>()?;
    let orchestrator = orchestrator_items
        .iter()
        .map(OrchestratorRow::new)
        .collect::<Result<Vec<_>>>()?;

    for (field, value) in [
        ("orchestration_name", &metadata.orchestration_name),
        ("orchestration_version", &metadata.orchestration_version),
        ("parent_instance_id", &metadata.parent_instance_id),
        ("status", &metadata.status),
        ("output", &metadata.output),
    ] {
        if let Some(v) = value {
            codec::check_text(field, v)?;
        }
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

    sqlx::query(&p.sql.orchestration.ack)
        .bind(lock_token)
        .bind(execution_id)
        .bind(event_ids)
        .bind(event_types)
        .bind(event_data)
        .bind(&metadata.orchestration_name)
        .bind(&metadata.orchestration_version)
        .bind(&metadata.parent_instance_id)
        .bind(&metadata.status)
        .bind(&metadata.output)
        .bind(pinned[0])
        .bind(pinned[1])
        .bind(pinned[2])
        .bind(custom_status.is_some())
        .bind(custom_status.flatten())
        .bind(kv_op)
        .bind(kv_key)
        .bind(kv_value)
        .bind(kv_ms)
        .bind(workers.iter().map(|w| w.json.as_str()).collect::<Vec<_>>())
        .bind(
            workers
                .iter()
                .map(|w| w.instance.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(workers.iter().map(|w| w.execution_id).collect::<Vec<_>>())
        .bind(workers.iter().map(|w| w.activity_id).collect::<Vec<_>>())
        .bind(
            workers
                .iter()
                .map(|w| w.session_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(workers.iter().map(|w| w.tag.as_deref()).collect::<Vec<_>>())
        .bind(
            orchestrator
                .iter()
                .map(|o| o.instance.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(orchestrator.iter().map(|o| o.kind).collect::<Vec<_>>())
        .bind(
            orchestrator
                .iter()
                .map(|o| o.json.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            orchestrator
                .iter()
                .map(|o| o.fire_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(cancel_instances)
        .bind(cancel_executions)
        .bind(cancel_activities)
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Releases a lease (see `procedures/abandon_orchestration_item.sql`).
pub(crate) async fn abandon(
    p: &PostgresProvider,
    lock_token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<()> {
    sqlx::query(&p.sql.orchestration.abandon)
        .bind(codec::check_text("lock_token", lock_token)?)
        .bind(delay.map(codec::millis))
        .bind(ignore_attempt)
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Extends a live lease.
pub(crate) async fn renew(
    p: &PostgresProvider,
    lock_token: &str,
    extend_for: Duration,
) -> Result<()> {
    sqlx::query(&p.sql.orchestration.renew)
        .bind(codec::check_text("lock_token", lock_token)?)
        .bind(codec::millis(extend_for))
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Enqueues one orchestrator message, visible after `delay`.
pub(crate) async fn enqueue(
    p: &PostgresProvider,
    item: &WorkItem,
    delay: Option<Duration>,
) -> Result<()> {
    let row = OrchestratorRow::new(item)?;
    sqlx::query(&p.sql.orchestration.enqueue)
        .bind(&row.instance)
        .bind(row.kind)
        .bind(&row.json)
        .bind(codec::delay_millis(delay))
        .execute(&p.pool)
        .await?;
    Ok(())
}
