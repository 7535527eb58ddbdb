//! Worker queue and sessions: enqueue, fetch with tag and session routing,
//! ack with completion, abandon, renew; session renewal and cleanup.
//!
//! Each function is one call of one procedure (`procedures/*.sql`) or, in
//! inline mode, the same statement inline; only `fetch` differs between the
//! modes, and the store's driver runs it (`crate::driver`).

use std::time::Duration;

use duroxide::providers::{SessionFetchConfig, TagFilter, WorkItem};

use crate::claim_ahead::Kept;
use crate::codec::{self, AttemptClock, OrchestratorRow, WorkerRow};
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::lost_replies::{self, Claiming};
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
                 prefetched_history FROM {{schema}}.fetch_work_item{{suffix}}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        /// Complete an activity.
        ack = "SELECT acked, wake FROM {{schema}}.ack_work_item{{suffix}}($1, $2, $3, $4)",
        /// Complete an activity and claim the next ([`crate::claim_ahead`]).
        ack_and_claim = "SELECT acked, wake, lock_token, work_item, attempt_count, more, next_due_ms, \
                         scan_floor_ms, prefetched_history \
                         FROM {{schema}}.ack_work_item_and_claim{{suffix}}($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         $10, $11, $12, $13, $14)",
        /// Extend an activity lock.
        renew = "SELECT {{schema}}.renew_work_item_lock{{suffix}}($1, $2)",
        /// Release an activity lock.
        abandon = "SELECT acked, wake FROM {{schema}}.abandon_work_item{{suffix}}($1, $2, $3)",
        /// Heartbeat sessions.
        renew_sessions = "SELECT {{schema}}.renew_session_locks{{suffix}}($1, $2, $3)",
        /// Sweep orphaned sessions.
        cleanup_sessions = "SELECT {{schema}}.cleanup_orphaned_sessions{{suffix}}()",
        /// Whether an activity left the queue ([`crate::lost_replies`]).
        activity_settled = "SELECT * FROM {{schema}}.activity_settled{{suffix}}($1, $2, $3)",
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
        .fetch_one(s.bounded())
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

impl FetchParams {
    /// These parameters without a session owner, for the claim an ack makes
    /// ahead ([`crate::claim_ahead`]): that claim takes only items without
    /// a session, so it never waits for a session's row, nor takes a
    /// session it might then give back unused, nor fails (and with it the
    /// ack) on such a wait.
    fn without_sessions(&self) -> Self {
        Self {
            owner: None,
            session_lock: None,
            ..self.clone()
        }
    }
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
    let long_poll = s.long_poll.as_ref().filter(|_| !poll_timeout.is_zero());
    let params = FetchParams {
        lock_timeout,
        tag_mode: mode,
        tags: tags.into_iter().map(str::to_string).collect(),
        owner: owner.map(str::to_string),
        session_lock: session.map(|s| s.lock_timeout),
        // Long polling waits until the next due time when nothing is claimed.
        next_due: long_poll.is_some(),
        history_bytes: s.prefetch.enabled().then_some(HISTORY_PREFETCH_MAX_BYTES),
    };
    // What this task's ack claimed for this fetch, if anything.
    match s.ahead.take(&params) {
        Some(Kept::Item(claimed, began)) => return Ok(Some(deliver(s, &params, *claimed, began))),
        Some(Kept::GiveBack(token)) => give_back(s, &token).await,
        None => {}
    }
    // A write that ends after this makes what the fetch reads unusable.
    let began = s.prefetch.now();
    let claimed = match long_poll {
        Some(long_poll) => {
            long_poll
                .fetch(Queue::Worker, poll_key(&params), poll_timeout, || {
                    fetch_once(s, &params)
                })
                .await?
        }
        None => fetch_once(s, &params).await?.into_item(),
    };
    Ok(claimed.map(|c| deliver(s, &params, c, began)))
}

/// The long poll's key of a fetch's parameters: fetches with equal keys
/// may claim the same items.
fn poll_key(params: &FetchParams) -> u64 {
    codec::fetch_key(&(
        params.tag_mode,
        &params.tags,
        &params.owner,
        params.session_lock.is_some(),
    ))
}

/// Hands a claimed item to the caller: its history is kept for the read
/// that follows ([`crate::prefetch`]), its token for the ack that may claim
/// the next ([`crate::claim_ahead`]). `began`: when the call that claimed
/// it began, on the prefetch clock.
fn deliver(s: &Store, params: &FetchParams, c: Claimed, began: u64) -> (WorkItem, String, u32) {
    let session = matches!(
        &c.item,
        WorkItem::ActivityExecute {
            session_id: Some(_),
            ..
        }
    );
    if let (Some(history), WorkItem::ActivityExecute { instance, .. }) = (c.history, &c.item) {
        s.prefetch.keep_history(instance, history, began);
    }
    s.ahead.fetched(&c.token, params, session);
    (c.item, c.token, c.attempts)
}

/// Gives back an item claimed ahead that its task did not take: visible
/// again at once, its attempt not counted. A failure leaves it to its
/// lease's end.
async fn give_back(s: &Store, token: &str) {
    if let Err(e) = abandon(s, token, None, true).await {
        tracing::debug!(target: "duroxide_postgres", error = %e, "giving back an item claimed ahead failed");
    }
}

/// Gives back an item this build cannot decode (a newer duroxide's item
/// during a rolling upgrade, or one written by hand): its attempt not
/// counted, as duroxide's SQLite provider rolls such a claim back, out of
/// sight for [`codec::UNREADABLE_SET_ASIDE`], then claimable by any worker (one
/// that can read it runs it). The abandon rides out outages and lock waits
/// as the runtime's does ([`Store::acking`]): given up on too soon it would
/// leave the attempt counted and the item leased to its end, which is
/// still what a failure after that leaves (logged at WARN).
async fn set_aside(s: &Store, token: &str, error: &PostgresProviderError) {
    crate::observe::unreadable_set_aside(s, Queue::Worker, None, error);
    let released = crate::lost_replies::Landed::Released("abandon_work_item");
    let outcome = s
        .acking(token, Some(released), || {
            abandon(s, token, Some(codec::UNREADABLE_SET_ASIDE), true)
        })
        .await;
    if let Err(e) = outcome {
        tracing::warn!(target: "duroxide_postgres", schema = %s.name, error = %e, "setting aside an item that does not decode failed; it comes back when its lease ends, its attempt counted");
    }
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
    let _slot = s.gate.enter(&s.name, s.pool.fetch_share()).await;
    // Given back if the call's reply never comes (crate::lost_replies).
    let claiming = Claiming::new(s, Queue::Worker, params.lock_timeout);
    let polled = s
        .read_committed(|| s.driver.fetch_work(s, params, clock, &claiming))
        .await;
    claiming.settle(&polled);
    match polled? {
        Polled::Found {
            item: (token, json, attempts, history),
            more,
            next_due_ms,
        } => match codec::decode_work_item(&json) {
            Ok(item) => Ok(Polled::Found {
                item: Claimed {
                    item,
                    token,
                    attempts: u32::try_from(attempts).unwrap_or_default(),
                    history,
                },
                more,
                next_due_ms,
            }),
            Err(e) => {
                set_aside(s, &token, &e).await;
                Err(e)
            }
        },
        Polled::Empty { next_due_ms } => Ok(Polled::Empty { next_due_ms }),
    }
}

/// An activity's ack: its lock token and, when given, its completion for
/// the orchestration.
pub(crate) struct WorkAck<'a> {
    pub token: &'a str,
    pub instance: Option<&'a str>,
    pub kind: Option<&'static str>,
    pub json: Option<&'a str>,
}

impl WorkAck<'_> {
    /// The ack's statement: `(token, instance, kind, json)` bound.
    fn query<'q>(
        &'q self,
        sql: &'q crate::sql::Sql,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, (bool, Vec<String>), sqlx::postgres::PgArguments>
    {
        sqlx::query_as(sql)
            .bind(self.token)
            .bind(self.instance)
            .bind(self.kind)
            .bind(self.json)
    }

    /// The ack alone: (acked, what to wake).
    pub(crate) async fn run(&self, s: &Store) -> Result<(bool, Vec<String>)> {
        Ok(self.query(&s.sql.worker.ack).fetch_one(s.bounded()).await?)
    }

    /// The ack on `conn`, in the caller's transaction.
    pub(crate) async fn run_on(
        &self,
        s: &Store,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(bool, Vec<String>)> {
        Ok(self.query(&s.sql.worker.ack).fetch_one(conn).await?)
    }
}

const ACK_NOT_FOUND: &str =
    "Invalid lock token: work item not found (cancelled, stolen, or lock expired)";

/// Completes an activity, enqueueing its completion in the same
/// transaction; when the current task fetched it, also claims the task's
/// next activity ([`crate::claim_ahead`]).
pub(crate) async fn ack(s: &Store, token: &str, completion: Option<&WorkItem>) -> Result<()> {
    let row = completion.map(OrchestratorRow::new).transpose()?;
    if let Some(row) = &row {
        s.limits
            .check_message("activity completion", row.kind, &row.json)?;
    }
    let ack = WorkAck {
        token: codec::check_text("lock_token", token)?,
        instance: row.as_ref().map(|r| r.instance.as_str()),
        kind: row.as_ref().map(|r| r.kind),
        json: row.as_ref().map(|r| r.json.as_str()),
    };
    let Some(params) = s.ahead.params_for_ack(token) else {
        let (acked, wake) = ack.run(s).await?;
        s.woke(&wake);
        return found(acked, ACK_NOT_FOUND);
    };
    // As a fetch of its own would: what it reads is as of now, and its
    // outcome tells the long poll about the queue.
    let began = s.prefetch.now();
    let mark = s
        .long_poll
        .as_ref()
        .filter(|_| params.next_due)
        .map(|lp| (lp, lp.mark(Queue::Worker)));
    let clock = AttemptClock::start();
    let claim_params = params.without_sessions();
    // The claim is given back if the call's reply never comes; the ack's
    // retry asks whether it landed (crate::lost_replies).
    let claiming = Claiming::new(s, Queue::Worker, claim_params.lock_timeout);
    let outcome = s
        .driver
        .ack_work_and_claim(s, ack, &claim_params, clock, &claiming)
        .await;
    claiming.settle(&outcome);
    let (acked, wake, claim) = outcome?;
    s.woke(&wake);
    if let Some(polled) = claim {
        if let Some((long_poll, mark)) = mark {
            // A claim that left sessions out cannot vouch for the queue as
            // the task's fetch sees it; work it saw beyond its claim still
            // wakes a waiter.
            let vouches = params.owner.is_none();
            long_poll.fetched_elsewhere(Queue::Worker, poll_key(&params), mark, &polled, vouches);
        }
        if let Polled::Found {
            item: (token, json, attempts, history),
            ..
        } = polled
        {
            hold(s, token, &json, attempts, history, params, began).await;
        }
    }
    found(acked, ACK_NOT_FOUND)
}

/// Keeps an item an ack claimed for its task's next fetch, giving it back
/// when the window ends untaken (or at once if it cannot be kept).
async fn hold(
    s: &Store,
    token: String,
    json: &str,
    attempts: i32,
    history: Option<Vec<String>>,
    params: FetchParams,
    began: u64,
) {
    // An item that does not decode is set aside, as a fetch's is; the fetch
    // that claims it after that reports the error.
    let item = match codec::decode_work_item(json) {
        Ok(item) => item,
        Err(e) => {
            set_aside(s, &token, &e).await;
            return;
        }
    };
    let Some(task) = tokio::task::try_id() else {
        give_back(s, &token).await;
        return;
    };
    let claimed = Claimed {
        item,
        token: token.clone(),
        attempts: u32::try_from(attempts).unwrap_or_default(),
        history,
    };
    if !s.ahead.keep(claimed, params, began) {
        give_back(s, &token).await;
        return;
    }
    let mut pending = Pending {
        held: Some((s.clone(), task, token)),
    };
    tokio::spawn(async move {
        let window = pending.held.as_ref().map(|(s, ..)| s.ahead.window());
        tokio::time::sleep(window.unwrap_or_default()).await;
        if let Some((s, task, token)) = pending.held.take()
            && s.ahead.expired(task, &token)
        {
            give_back(&s, &token).await;
        }
    });
}

/// The give-back timer's hold on an item claimed ahead. Dropped before the
/// timer ran (the tokio runtime shut down right after the ack: a runtime's
/// graceful shutdown, then the process's end), it gives the item back at
/// once if its task has not taken it, rather than leave it to its lease.
struct Pending {
    held: Option<(Store, tokio::task::Id, String)>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((s, task, token)) = self.held.take()
            && s.ahead.expired(task, &token)
        {
            let stray = lost_replies::Stray {
                queue: Queue::Worker,
                token,
                after: None,
            };
            lost_replies::give_back_blocking(&s, stray);
        }
    }
}

/// Extends a live activity lock.
pub(crate) async fn renew(s: &Store, token: &str, extend_for: Duration) -> Result<()> {
    let renewed: bool = sqlx::query_scalar(&s.sql.worker.renew)
        .bind(codec::check_text("lock_token", token)?)
        .bind(codec::millis(extend_for))
        .fetch_one(s.bounded())
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
        .fetch_one(s.bounded())
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
        .fetch_one(s.bounded())
        .await?;
    if renewed > 0 {
        let until = std::time::Instant::now() + extend_for;
        for owner in owner_ids {
            s.ahead.holds_session(owner, until);
        }
    }
    Ok(usize::try_from(renewed).unwrap_or_default())
}

/// Deletes expired sessions no queued activity refers to; returns how many.
pub(crate) async fn cleanup_orphaned_sessions(s: &Store, _idle_timeout: Duration) -> Result<usize> {
    let removed: i64 = sqlx::query_scalar(&s.sql.worker.cleanup_sessions)
        .fetch_one(s.bounded())
        .await?;
    Ok(usize::try_from(removed).unwrap_or_default())
}
