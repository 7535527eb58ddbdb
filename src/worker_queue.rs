//! Worker queue and sessions: enqueue, fetch with tag and session routing,
//! ack with completion, abandon, renew; session renewal and cleanup.
//!
//! Each function is one call of one procedure (`procedures/*.sql`).

use std::time::Duration;

use duroxide::providers::{SessionFetchConfig, TagFilter, WorkItem};

use crate::codec::{self, OrchestratorRow, WorkerRow};
use crate::error::Result;
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the worker queue and sessions.
    pub(crate) struct WorkerSql {
        /// Add an activity.
        enqueue = "SELECT {{schema}}.enqueue_work_item($1, $2, $3, $4, $5, $6)",
        /// Claim an activity.
        fetch = "SELECT lock_token, work_item, attempt_count FROM {{schema}}.fetch_work_item($1, $2, $3, $4, $5)",
        /// Complete an activity.
        ack = "SELECT {{schema}}.ack_work_item($1, $2, $3, $4)",
        /// Extend an activity lock.
        renew = "SELECT {{schema}}.renew_work_item_lock($1, $2)",
        /// Release an activity lock.
        abandon = "SELECT {{schema}}.abandon_work_item($1, $2, $3)",
        /// Heartbeat sessions.
        renew_sessions = "SELECT {{schema}}.renew_session_locks($1, $2, $3)",
        /// Sweep orphaned sessions.
        cleanup_sessions = "SELECT {{schema}}.cleanup_orphaned_sessions()",
    }
}

/// Enqueues an `ActivityExecute` item.
pub(crate) async fn enqueue(p: &PostgresProvider, item: &WorkItem) -> Result<()> {
    let row = WorkerRow::new(item)?;
    sqlx::query(&p.sql.worker.enqueue)
        .bind(&row.json)
        .bind(&row.instance)
        .bind(row.execution_id)
        .bind(row.activity_id)
        .bind(&row.session_id)
        .bind(&row.tag)
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// The tag filter as (mode, tags) parameters; `None` for `TagFilter::None`.
fn tag_params(filter: &TagFilter) -> Result<Option<(&'static str, Vec<&str>)>> {
    fn tags(set: &std::collections::HashSet<String>) -> Result<Vec<&str>> {
        set.iter().map(|t| codec::check_text("tag", t)).collect()
    }
    Ok(match filter {
        TagFilter::None => None,
        TagFilter::Any => Some(("any", Vec::new())),
        TagFilter::DefaultOnly => Some(("default", Vec::new())),
        TagFilter::Tags(set) => Some(("tags", tags(set)?)),
        TagFilter::DefaultAnd(set) => Some(("default_and", tags(set)?)),
    })
}

/// Claims the next activity this worker may run.
pub(crate) async fn fetch(
    p: &PostgresProvider,
    lock_timeout: Duration,
    _poll_timeout: Duration,
    session: Option<&SessionFetchConfig>,
    tag_filter: &TagFilter,
) -> Result<Option<(WorkItem, String, u32)>> {
    let Some((mode, tags)) = tag_params(tag_filter)? else {
        return Ok(None);
    };
    let owner = session
        .map(|s| codec::check_text("owner_id", &s.owner_id))
        .transpose()?;
    let row: Option<(String, String, i32)> = sqlx::query_as(&p.sql.worker.fetch)
        .bind(codec::millis(lock_timeout))
        .bind(mode)
        .bind(tags)
        .bind(owner)
        .bind(session.map(|s| codec::millis(s.lock_timeout)))
        .fetch_optional(&p.pool)
        .await?;
    row.map(|(token, json, attempts)| {
        Ok((
            codec::decode_work_item(&json)?,
            token,
            u32::try_from(attempts).unwrap_or_default(),
        ))
    })
    .transpose()
}

/// Completes an activity, enqueueing its completion in the same transaction.
pub(crate) async fn ack(
    p: &PostgresProvider,
    token: &str,
    completion: Option<&WorkItem>,
) -> Result<()> {
    let row = completion.map(OrchestratorRow::new).transpose()?;
    sqlx::query(&p.sql.worker.ack)
        .bind(codec::check_text("lock_token", token)?)
        .bind(row.as_ref().map(|r| r.instance.as_str()))
        .bind(row.as_ref().map(|r| r.kind))
        .bind(row.as_ref().map(|r| r.json.as_str()))
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Extends a live activity lock.
pub(crate) async fn renew(p: &PostgresProvider, token: &str, extend_for: Duration) -> Result<()> {
    sqlx::query(&p.sql.worker.renew)
        .bind(codec::check_text("lock_token", token)?)
        .bind(codec::millis(extend_for))
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Releases an activity lock.
pub(crate) async fn abandon(
    p: &PostgresProvider,
    token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<()> {
    sqlx::query(&p.sql.worker.abandon)
        .bind(codec::check_text("lock_token", token)?)
        .bind(delay.map(codec::millis))
        .bind(ignore_attempt)
        .execute(&p.pool)
        .await?;
    Ok(())
}

/// Heartbeats the non-idle sessions of these owners; returns how many.
pub(crate) async fn renew_sessions(
    p: &PostgresProvider,
    owner_ids: &[&str],
    extend_for: Duration,
    idle_timeout: Duration,
) -> Result<usize> {
    if owner_ids.is_empty() {
        return Ok(0);
    }
    let owners = owner_ids
        .iter()
        .map(|o| codec::check_text("owner_id", o))
        .collect::<Result<Vec<_>>>()?;
    let renewed: i64 = sqlx::query_scalar(&p.sql.worker.renew_sessions)
        .bind(owners)
        .bind(codec::millis(extend_for))
        .bind(codec::millis(idle_timeout))
        .fetch_one(&p.pool)
        .await?;
    Ok(usize::try_from(renewed).unwrap_or_default())
}

/// Deletes expired sessions no queued activity refers to; returns how many.
pub(crate) async fn cleanup_orphaned_sessions(
    p: &PostgresProvider,
    _idle_timeout: Duration,
) -> Result<usize> {
    let removed: i64 = sqlx::query_scalar(&p.sql.worker.cleanup_sessions)
        .fetch_one(&p.pool)
        .await?;
    Ok(usize::try_from(removed).unwrap_or_default())
}
