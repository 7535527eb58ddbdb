//! Worker queue and sessions: enqueue, fetch with tag and session routing,
//! ack with completion, abandon, renew; session renewal and cleanup.
//!
//! Each function is one call of one procedure (`procedures/*.sql`) or, in
//! inline mode, the same statement inline; only `fetch` differs between the
//! modes, and the store's driver runs it (`crate::driver`).

use std::time::Duration;

use duroxide::providers::{SessionFetchConfig, TagFilter, WorkItem};

use crate::codec::{self, AttemptClock, OrchestratorRow, WorkerRow};
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::notify::{Polled, Queue};
use crate::sql::statements;
use crate::store::Store;

statements! {
    /// Statements of the worker queue and sessions.
    pub(crate) struct WorkerSql {
        /// Add an activity.
        enqueue = "SELECT {{schema}}.enqueue_work_item{{suffix}}($1, $2, $3, $4, $5, $6)",
        /// Claim an activity.
        fetch = "SELECT lock_token, work_item, attempt_count, more, next_due_ms, scan_floor_ms, \
                 prefetched_history FROM {{schema}}.fetch_work_item{{suffix}}($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        /// Complete an activity.
        ack = "SELECT acked, wake FROM {{schema}}.ack_work_item{{suffix}}($1, $2, $3, $4)",
        /// Extend an activity lock.
        renew = "SELECT {{schema}}.renew_work_item_lock{{suffix}}($1, $2)",
        /// Release an activity lock.
        abandon = "SELECT acked, wake FROM {{schema}}.abandon_work_item{{suffix}}($1, $2, $3)",
        /// Heartbeat sessions.
        renew_sessions = "SELECT {{schema}}.renew_session_locks{{suffix}}($1, $2, $3)",
        /// Sweep orphaned sessions.
        cleanup_sessions = "SELECT {{schema}}.cleanup_orphaned_sessions{{suffix}}()",
    }
}

/// Enqueues an `ActivityExecute` item.
pub(crate) async fn enqueue(s: &Store, item: &WorkItem) -> Result<()> {
    let row = WorkerRow::new(item)?;
    s.limits.check_payload("activity work item", &row.json)?;
    let wake: Vec<String> = sqlx::query_scalar(&s.sql.worker.enqueue)
        .bind(&row.json)
        .bind(&row.instance)
        .bind(row.execution_id)
        .bind(row.activity_id)
        .bind(&row.session_id)
        .bind(&row.tag)
        .fetch_one(&s.pool)
        .await?;
    s.woke(&wake);
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

/// The parameters of a worker fetch, in both SQL modes.
#[derive(Clone)]
pub(crate) struct FetchParams {
    /// The lease asked for, counted from the start of each attempt.
    pub lock_timeout: Duration,
    /// `any`, `default`, `tags` or `default_and`.
    pub tag_mode: &'static str,
    pub tags: Vec<String>,
    /// The session owner; `None` fetches only items without a session.
    pub owner: Option<String>,
    /// The session lease asked for, counted like `lock_timeout`.
    pub session_lock: Option<Duration>,
    /// Report the next due time when nothing is claimed (long polling).
    pub next_due: bool,
    /// Return the claimed item's instance history up to this many bytes
    /// (`None`: not at all; [`crate::prefetch`]).
    pub history_bytes: Option<i64>,
}

/// Turns the boolean a lock-token procedure returns into DX001 when false.
fn found(found: bool, message: &'static str) -> Result<()> {
    found
        .then_some(())
        .ok_or_else(|| PostgresProviderError::rejected(sqlstate::INVALID_LOCK_TOKEN, message))
}

/// Claims the next activity this worker may run.
///
/// With a non-zero `poll_timeout` and notifications on, an empty queue is
/// waited on (see [`crate::notify`]).
pub(crate) async fn fetch(
    s: &Store,
    lock_timeout: Duration,
    poll_timeout: Duration,
    session: Option<&SessionFetchConfig>,
    tag_filter: &TagFilter,
) -> Result<Option<(WorkItem, String, u32)>> {
    let Some((mode, mut tags)) = tag_params(tag_filter)? else {
        return Ok(None);
    };
    // A set's iteration order varies: sorted, equal filters fingerprint alike.
    tags.sort_unstable();
    let owner = session
        .map(|s| codec::check_text("owner_id", &s.owner_id))
        .transpose()?;
    let params = FetchParams {
        lock_timeout,
        tag_mode: mode,
        tags: tags.into_iter().map(str::to_string).collect(),
        owner: owner.map(str::to_string),
        session_lock: session.map(|s| s.lock_timeout),
        next_due: false,
        history_bytes: s.prefetch.enabled().then_some(HISTORY_PREFETCH_MAX_BYTES),
    };
    // A write that ends after this makes what the fetch reads unusable.
    let began = s.prefetch.now();
    let claimed = match &s.long_poll {
        Some(long_poll) if !poll_timeout.is_zero() => {
            let params = FetchParams {
                next_due: true,
                ..params
            };
            let key = codec::fetch_key(&(
                params.tag_mode,
                &params.tags,
                &params.owner,
                params.session_lock.is_some(),
            ));
            long_poll
                .fetch(Queue::Worker, key, poll_timeout, || fetch_once(s, &params))
                .await?
        }
        _ => fetch_once(s, &params).await?.into_item(),
    };
    Ok(claimed.map(|c| {
        if let (Some(history), WorkItem::ActivityExecute { instance, .. }) = (c.history, &c.item) {
            // Kept for this task's read of the instance, which follows.
            s.prefetch.keep_history(instance, history, began);
        }
        (c.item, c.token, c.attempts)
    }))
}

/// A claimed item as the procedure and the inline driver return it:
/// (lock token, work item JSON, attempts, the instance's history when
/// [`FetchParams::history_bytes`] asked for it and it fit).
pub(crate) type FetchedItem = (String, String, i32, Option<Vec<String>>);

/// [`crate::PostgresOptions::HISTORY_PREFETCH_MAX_BYTES`] as the fetch's parameter.
const HISTORY_PREFETCH_MAX_BYTES: i64 = crate::PostgresOptions::HISTORY_PREFETCH_MAX_BYTES as i64;

/// A claimed activity: the item, its lock token, its attempt count and the
/// history the fetch read for the runtime's next read ([`crate::prefetch`]).
pub(crate) struct Claimed {
    pub item: WorkItem,
    pub token: String,
    pub attempts: u32,
    pub history: Option<Vec<String>>,
}

/// One claim attempt (also the test hook's, `crate::probe`).
pub(crate) async fn fetch_once(s: &Store, params: &FetchParams) -> Result<Polled<Claimed>> {
    let clock = AttemptClock::start();
    let _slot = s.gate.enter(&s.name).await;
    let polled = s.driver.fetch_work(s, params, clock).await?;
    polled.map(|(token, json, attempts, history): FetchedItem| {
        Ok(Claimed {
            item: codec::decode_work_item(&json)?,
            token,
            attempts: u32::try_from(attempts).unwrap_or_default(),
            history,
        })
    })
}

/// Completes an activity, enqueueing its completion in the same transaction.
pub(crate) async fn ack(s: &Store, token: &str, completion: Option<&WorkItem>) -> Result<()> {
    let row = completion.map(OrchestratorRow::new).transpose()?;
    if let Some(row) = &row {
        s.limits.check_payload("activity completion", &row.json)?;
    }
    let (acked, wake): (bool, Vec<String>) = sqlx::query_as(&s.sql.worker.ack)
        .bind(codec::check_text("lock_token", token)?)
        .bind(row.as_ref().map(|r| r.instance.as_str()))
        .bind(row.as_ref().map(|r| r.kind))
        .bind(row.as_ref().map(|r| r.json.as_str()))
        .fetch_one(&s.pool)
        .await?;
    s.woke(&wake);
    found(
        acked,
        "Invalid lock token: work item not found (cancelled, stolen, or lock expired)",
    )
}

/// Extends a live activity lock.
pub(crate) async fn renew(s: &Store, token: &str, extend_for: Duration) -> Result<()> {
    let renewed: bool = sqlx::query_scalar(&s.sql.worker.renew)
        .bind(codec::check_text("lock_token", token)?)
        .bind(codec::millis(extend_for))
        .fetch_one(&s.pool)
        .await?;
    found(
        renewed,
        "Invalid lock token: lock token invalid, expired, or entry removed",
    )
}

/// Releases an activity lock.
pub(crate) async fn abandon(
    s: &Store,
    token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<()> {
    let (released, wake): (bool, Vec<String>) = sqlx::query_as(&s.sql.worker.abandon)
        .bind(codec::check_text("lock_token", token)?)
        .bind(delay.map(codec::millis))
        .bind(ignore_attempt)
        .fetch_one(&s.pool)
        .await?;
    s.woke(&wake);
    found(released, "Invalid lock token or already acked")
}

/// Heartbeats the non-idle sessions of these owners; returns how many.
pub(crate) async fn renew_sessions(
    s: &Store,
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
    let renewed: i64 = sqlx::query_scalar(&s.sql.worker.renew_sessions)
        .bind(owners)
        .bind(codec::millis(extend_for))
        .bind(codec::millis(idle_timeout))
        .fetch_one(&s.pool)
        .await?;
    Ok(usize::try_from(renewed).unwrap_or_default())
}

/// Deletes expired sessions no queued activity refers to; returns how many.
pub(crate) async fn cleanup_orphaned_sessions(s: &Store, _idle_timeout: Duration) -> Result<usize> {
    let removed: i64 = sqlx::query_scalar(&s.sql.worker.cleanup_sessions)
        .fetch_one(&s.pool)
        .await?;
    Ok(usize::try_from(removed).unwrap_or_default())
}
