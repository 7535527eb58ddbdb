//! History reads and appends, KV store reads, custom status, instance stats.
//!
//! Each function is one call of one procedure (`procedures/*.sql`).

use std::collections::HashMap;

use duroxide::{Event, EventKind, SystemStats};

use crate::codec;
use crate::error::Result;
use crate::sql::statements;
use crate::store::Store;

statements! {
    /// Statements for history, KV, custom status and stats.
    pub(crate) struct HistorySql {
        /// Events of one execution (or the latest with NULL).
        read = "SELECT event_data, custom_status, custom_status_version \
                FROM {{schema}}.read_history{{suffix}}($1, $2, $3)",
        /// Append events to one execution.
        append = "SELECT {{schema}}.append_history{{suffix}}($1, $2, $3, $4, $5)",
        /// Custom status newer than a version.
        custom_status = "SELECT custom_status, custom_status_version FROM {{schema}}.get_custom_status{{suffix}}($1, $2)",
        /// One KV value.
        kv_value = "SELECT value FROM {{schema}}.get_kv_value{{suffix}}($1, $2)",
        /// All KV values.
        kv_all = "SELECT key, value FROM {{schema}}.get_kv_all_values{{suffix}}($1)",
        /// Instance statistics.
        stats = "SELECT * FROM {{schema}}.get_instance_stats{{suffix}}($1)",
    }
}

/// A history read's rows: each event, with the instance's custom status
/// and its version (`None`: no instance row) as of the same snapshot; with
/// no event, one row without one.
type ReadRow = (Option<String>, Option<String>, Option<i64>);

/// Reads the events of `execution_id` (the latest with `None`), and the
/// instance's custom status as of the same snapshot.
async fn read_rows(
    s: &Store,
    instance: &str,
    execution_id: Option<u64>,
) -> Result<(Vec<String>, Option<(Option<String>, Option<i64>)>)> {
    let execution_id = execution_id
        .map(|id| codec::to_i64("execution_id", id))
        .transpose()?;
    let rows: Vec<ReadRow> = sqlx::query_as(&s.sql.history.read)
        .bind(codec::check_text("instance", instance)?)
        .bind(execution_id)
        .bind(true) // with no event, a row with the status
        .fetch_all(s.bounded())
        .await?;
    let status = rows
        .first()
        .map(|(_, status, version)| (status.clone(), *version));
    Ok((
        rows.into_iter().filter_map(|(event, _, _)| event).collect(),
        status,
    ))
}

/// Reads and decodes the events of `execution_id` (the latest with `None`).
pub(crate) async fn read_events(
    s: &Store,
    instance: &str,
    execution_id: Option<u64>,
) -> Result<Vec<Event>> {
    codec::decode_events(&read_rows(s, instance, execution_id).await?.0)
}

/// Events of the instance's latest execution: what this task's worker
/// fetch read for it, when that qualifies ([`crate::prefetch`]), or else
/// from the server, keeping the custom status read with them for this
/// task's next [`get_custom_status`] of the instance.
pub(crate) async fn read(s: &Store, instance: &str) -> Result<Vec<Event>> {
    if let Some(events) = s.prefetch.take_history(instance) {
        return codec::decode_events(&events);
    }
    let began = s.prefetch.now();
    let (events, status) = read_rows(s, instance, None).await?;
    if let Some((status, version)) = status {
        s.prefetch.keep_status(instance, status, version, began);
    }
    codec::decode_events(&events)
}

/// Events of one execution.
pub(crate) async fn read_with_execution(
    s: &Store,
    instance: &str,
    execution_id: u64,
) -> Result<Vec<Event>> {
    read_events(s, instance, Some(execution_id)).await
}

/// Appends events; duplicates are rejected, never overwritten.
pub(crate) async fn append_with_execution(
    s: &Store,
    instance: &str,
    execution_id: u64,
    events: &[Event],
) -> Result<()> {
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    for event in events {
        ids.push(codec::to_i64("event_id", event.event_id())?);
        types.push(codec::event_type(event));
        let encoded = codec::encode_event(event)?;
        s.limits.check_event(event, &encoded)?;
        data.push(encoded);
    }
    sqlx::query(&s.sql.history.append)
        .bind(codec::check_id("instance_id", instance)?)
        .bind(codec::to_i64("execution_id", execution_id)?)
        .bind(ids)
        .bind(types)
        .bind(data)
        .execute(s.bounded())
        .await?;
    s.prefetch.wrote(instance);
    Ok(())
}

/// The custom status, when its version is newer than `last_seen_version`.
pub(crate) async fn get_custom_status(
    s: &Store,
    instance: &str,
    last_seen_version: u64,
) -> Result<Option<(Option<String>, u64)>> {
    let last_seen = i64::try_from(last_seen_version).unwrap_or(i64::MAX);
    if let Some((status, version)) = s.prefetch.take_status(instance) {
        // As the procedure answers: a row only for a newer version.
        return version
            .filter(|v| *v > last_seen)
            .map(|v| Ok((status, codec::to_u64("custom_status_version", v)?)))
            .transpose();
    }
    let row: Option<(Option<String>, i64)> = sqlx::query_as(&s.sql.history.custom_status)
        .bind(codec::check_text("instance", instance)?)
        .bind(last_seen)
        .fetch_optional(s.bounded())
        .await?;
    row.map(|(status, version)| Ok((status, codec::to_u64("custom_status_version", version)?)))
        .transpose()
}

/// One KV value as the orchestration sees it.
pub(crate) async fn get_kv_value(s: &Store, instance: &str, key: &str) -> Result<Option<String>> {
    let value: Option<Option<String>> = sqlx::query_scalar(&s.sql.history.kv_value)
        .bind(codec::check_text("instance", instance)?)
        .bind(codec::check_text("key", key)?)
        .fetch_optional(s.bounded())
        .await?;
    Ok(value.flatten())
}

/// All live KV values.
pub(crate) async fn get_kv_all_values(
    s: &Store,
    instance: &str,
) -> Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(&s.sql.history.kv_all)
        .bind(codec::check_text("instance", instance)?)
        .fetch_all(s.bounded())
        .await?;
    Ok(rows.into_iter().collect())
}

/// The row `get_instance_stats` returns.
#[derive(sqlx::FromRow)]
struct StatsRow {
    history_event_count: i64,
    history_size_bytes: i64,
    kv_user_key_count: i64,
    kv_total_value_bytes: i64,
    first_event: Option<String>,
}

/// Size statistics of the instance's current execution; `None` if it does not exist.
pub(crate) async fn get_instance_stats(s: &Store, instance: &str) -> Result<Option<SystemStats>> {
    let Some(row) = sqlx::query_as::<_, StatsRow>(&s.sql.history.stats)
        .bind(codec::check_text("instance", instance)?)
        .fetch_optional(s.bounded())
        .await?
    else {
        return Ok(None);
    };
    let queue_pending_count = match row
        .first_event
        .as_deref()
        .map(codec::decode_event)
        .transpose()?
    {
        Some(Event {
            kind:
                EventKind::OrchestrationStarted {
                    carry_forward_events: Some(events),
                    ..
                },
            ..
        }) => events.len() as u64,
        _ => 0,
    };
    Ok(Some(SystemStats {
        history_event_count: codec::to_u64("history_event_count", row.history_event_count)?,
        history_size_bytes: codec::to_u64("history_size_bytes", row.history_size_bytes)?,
        queue_pending_count,
        kv_user_key_count: codec::to_u64("kv_user_key_count", row.kv_user_key_count)?,
        kv_total_value_bytes: codec::to_u64("kv_total_value_bytes", row.kv_total_value_bytes)?,
    }))
}
