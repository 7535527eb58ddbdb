//! Inline driver of `fetch_work_item`: the procedure's loop in Rust, its
//! statements the procedure's own, `statements/fetch_work_item/*.sql`.

use sqlx::{PgConnection, Row};

use super::{Tx, detached, procedure_statements};
use crate::codec::AttemptClock;
use crate::error::Result;
use crate::notify::Polled;
use crate::pooler::{Conn, answered_by};
use crate::store::Store;
use crate::worker_queue::{FetchParams, FetchedItem, WorkAck};

/// Candidates tried per fetch, as in the procedure.
const MAX_CANDIDATES: usize = 8;

procedure_statements! {
    /// Statements of `fetch_work_item`.
    pub(crate) struct FetchSql from "fetch_work_item" {
        /// Next eligible item, row-locked.
        candidate,
        /// The same for the default tag filter (untagged items only).
        candidate_untagged,
        /// The same for `TagFilter::Any`.
        candidate_any,
        /// Take the item's session.
        claim_session,
        /// Lock the item.
        claim,
    }
}

/// Claims the next item this worker may run: (token, work item, attempts,
/// the instance's history when asked for).
pub(crate) async fn fetch(
    p: &Store,
    params: FetchParams,
    clock: AttemptClock,
    token: &str,
    conn: Conn,
) -> Result<Polled<FetchedItem>> {
    let p = p.clone();
    let token = token.to_string();
    detached(async move {
        let mut tx = Tx::begin_on(&p.pool, conn).await?;
        let outcome = answered_by(
            tx.deadline(),
            fetch_in(&p, tx.conn()?, &params, clock, None, &token),
        )
        .await;
        tx.finish(outcome).await
    })
    .await
}

/// Completes an activity and claims the task's next one in one
/// transaction, as `ack_work_item_and_claim` does: opened with the lock
/// timeout, the ack's statement, then the fetch's loop (when the ack found
/// its item), then the commit, so the claim costs the ack one round trip,
/// not a transaction of its own, and commits durably, as the ack alone
/// (`inline/durable_commit.sql`). As in procedure mode, a claim that fails
/// fails the ack with it: nothing is committed, and the caller retries or
/// gives the item back. (acked, what to wake, the claim when acked).
pub(crate) async fn ack_and_fetch(
    p: &Store,
    ack: &WorkAck<'_>,
    params: FetchParams,
    clock: AttemptClock,
    claim_token: &str,
    conn: Conn,
) -> Result<(bool, Vec<String>, Option<Polled<FetchedItem>>)> {
    let p = p.clone();
    let token = ack.token.to_string();
    let claim_token = claim_token.to_string();
    let instance = ack.instance.map(str::to_string);
    let kind = ack.kind;
    let json = ack.json.map(str::to_string);
    detached(async move {
        let ack = WorkAck {
            token: &token,
            instance: instance.as_deref(),
            kind,
            json: json.as_deref(),
        };
        let mut tx = Tx::begin_on(&p.pool, conn).await?;
        let deadline = tx.deadline();
        let outcome = answered_by(deadline, async {
            let (acked, wake) = ack.run_on(&p, tx.conn()?).await?;
            let claim = match acked {
                true => Some(fetch_in(&p, tx.conn()?, &params, clock, None, &claim_token).await?),
                false => None,
            };
            Ok((acked, wake, claim))
        })
        .await;
        tx.finish_durably(outcome).await
    })
    .await
}

/// The fetch's loop on `conn`, in the caller's transaction. The scan starts
/// at the queue's floor ([`crate::scan_floor`]), which the first candidate
/// moves; or, with `from`, at `from`, leaving the floor alone (the warm-up's
/// look for its own activity, `super::warm_up`).
pub(super) async fn fetch_in(
    p: &Store,
    conn: &mut PgConnection,
    params: &FetchParams,
    clock: AttemptClock,
    from: Option<i64>,
    token: &str,
) -> Result<Polled<FetchedItem>> {
    let sql = &p.sql.inline.fetch_work;
    let mut skip: Vec<String> = Vec::new();
    // Set once a session was passed over because another transaction held
    // its row: how soon to look again (claim_session.sql).
    let mut retry: Option<i64> = None;
    let scan = p.floors.worker.start();
    let mut floor = from.or(scan.floor);
    let mut first = from.is_none();
    for _ in 0..MAX_CANDIDATES {
        // The leases count from the attempt's start; `now` is the candidate's.
        let lease_ms = clock.lease_ms(params.lock_timeout);
        let session_lease_ms = params.session_lock.map(|d| clock.lease_ms(d));
        // The default tag filter and `Any` have statements of their own,
        // as in the procedure.
        let candidate = match params.tag_mode {
            "default" => &sql.candidate_untagged,
            "any" => &sql.candidate_any,
            _ => &sql.candidate,
        };
        let row = sqlx::query(candidate)
            .bind(params.tag_mode)
            .bind(&params.tags)
            .bind(&params.owner)
            .bind(&skip)
            .bind(params.next_due)
            .bind(None::<i64>) // the own lock counts from the candidate's clock
            .bind(lease_ms)
            .bind(floor)
            .bind(scan.next_floor_margin_ms())
            .fetch_one(&mut *conn)
            .await?;
        if first {
            // The next floor; after a full scan it serves the later
            // candidates too.
            first = false;
            let next = row.try_get("scan_floor_ms")?;
            p.floors.worker.set(scan, next);
            floor = floor.or(next);
        }
        let Some(id) = row.try_get::<Option<i64>, _>("id")? else {
            let due: Option<i64> = row.try_get("next_due_ms")?;
            return Ok(Polled::Empty {
                next_due_ms: if params.next_due {
                    least(due, retry)
                } else {
                    None
                },
            });
        };
        let more: bool = row.try_get("more")?;
        let next_due_ms: Option<i64> = row.try_get("next_due_ms")?;
        let session: Option<String> = row.try_get("session_id")?;
        let now: i64 = row.try_get("now_ms")?;
        if let Some(session) = session {
            let claimed = sqlx::query(&sql.claim_session)
                .bind(&session)
                .bind(&params.owner)
                .bind(now)
                .bind(session_lease_ms)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
            if !claimed.try_get::<bool, _>("taken")? {
                // Another owner holds the session, or another transaction
                // its row: passed over, never waited for; when its row was
                // held, the session may be free in a moment.
                skip.push(session);
                retry = least(retry, claimed.try_get("retry_ms")?);
                continue;
            }
        }
        let claimed: FetchedItem = sqlx::query_as(&sql.claim)
            .bind(id)
            .bind(token)
            .bind(now)
            .bind(lease_ms)
            .bind(params.history_bytes)
            .fetch_one(&mut *conn)
            .await?;
        return Ok(Polled::Found {
            item: claimed,
            // A session passed over while its row was held may be free
            // now: another waiter looks.
            more: more || retry.is_some(),
            next_due_ms,
        });
    }
    // Every candidate's session was taken by others meanwhile (or its row
    // held: look again soon).
    Ok(Polled::Empty {
        next_due_ms: retry.filter(|_| params.next_due),
    })
}

/// SQL's `least`: the smaller of two, `None` ignored.
fn least(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
