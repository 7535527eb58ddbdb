//! Inline driver of `fetch_orchestration_item`: the procedure's control
//! flow in Rust, its statements the procedure's own,
//! `statements/fetch_orchestration_item/*.sql` (the ack of a turn is
//! [`super::turn_ack`]).

use std::time::{Duration, Instant};

use sqlx::{PgConnection, Row};

use super::{Tx, detached, procedure_statements};
use crate::codec::{self, AttemptClock};
use crate::error::{PostgresProviderError, Result};
use crate::notify::Polled;
use crate::orchestration_queue::{FetchParams, FetchedRow};
use crate::pooler::{Conn, answered_by};
use crate::store::Store;

/// Candidates tried per fetch, as in the procedure.
const MAX_CANDIDATES: usize = 16;

procedure_statements! {
    /// Statements of `fetch_orchestration_item`.
    pub(crate) struct FetchSql from "fetch_orchestration_item" {
        /// Next candidate instance and its claim (its claim row, skip-locked).
        candidate,
        /// Take or take over the lease.
        lease,
        /// Stamp the instance's visible messages.
        batch,
        /// Give the lease back (batch already consumed).
        release_lease,
        /// The instance row.
        instance,
        /// Latest execution of an instance without a row, and whether a
        /// start is queued for it.
        unknown_instance,
        /// Drop queued events of a never-started instance.
        drop_batch,
        /// Park the batch of a never-started instance.
        park,
        /// Make the parked messages of a runnable instance ordinary again.
        unpark,
        /// History and KV snapshot.
        snapshot,
        /// Run the lease from now after a slow claim.
        extend_lease,
        /// Create the claim row of a candidate that has none.
        create_claim,
        /// Claim a known instance again after a failed snapshot, or a
        /// candidate whose claim row was just created.
        reclaim,
    }
}

/// How a fetch transaction ended.
enum Fetched {
    /// Claimed, or nothing to claim.
    Done(Box<Polled<FetchedRow>>),
    /// The claimed instance's history could not be read: the transaction
    /// rolled back, and the instance is claimed again without it. `more`
    /// and `next_due_ms` are what the candidate statement saw, as the
    /// procedure returns them with such a claim.
    Unreadable {
        instance: String,
        reason: String,
        sqlstate: String,
        more: bool,
        next_due_ms: Option<i64>,
    },
}

fn done(polled: Polled<FetchedRow>) -> Fetched {
    Fetched::Done(Box::new(polled))
}

/// A failure the server reported for one statement, the session intact
/// (anything but a lost connection or a server going away), as the
/// procedure's exception block words it: the server's message and SQLSTATE,
/// and the SQLSTATE alone. Not a lock wait given up (`lock_timeout`), which
/// the procedure re-raises: the fetch fails, retryable, and its claim rolls
/// back.
fn failed_on_server(e: &PostgresProviderError) -> Option<(String, String)> {
    match e {
        PostgresProviderError::Database(sqlx::Error::Database(db)) => db
            .code()
            .filter(|code| {
                !code.starts_with("08")
                    && !code.starts_with("57P")
                    && code != crate::error::sqlstate::LOCK_NOT_AVAILABLE
            })
            .map(|code| {
                let reason = format!("{} (SQLSTATE {code})", db.message());
                (reason, code.into_owned())
            }),
        _ => None,
    }
}

procedure_statements! {
    /// Statements of `ack_orchestration_item`.
    pub(crate) struct AckSql from "ack_orchestration_item" {
        /// Lock and read the lease.
        lease,
        /// Delete the consumed messages.
        consume,
        /// Create or rename the instance.
        upsert_instance,
        /// Create the execution.
        insert_execution,
        /// Record the pinned duroxide version.
        pin_version,
        /// Advance the current execution.
        advance_execution,
        /// Move the runtime's poison failure after the history's last event.
        poison_after_last,
        /// Append the history delta.
        append_history,
        /// Record status and output.
        set_status,
        /// Record the custom status.
        set_custom_status,
        /// KV: set one key in the delta.
        kv_set,
        /// KV: clear one key in the delta.
        kv_clear,
        /// KV: clear every key in the delta ...
        kv_clear_all_delta,
        /// ... and tombstone every stored key.
        kv_clear_all_store,
        /// KV: merge the delta into the store at the end of an execution ...
        kv_merge_upsert,
        /// ... drop tombstoned keys ...
        kv_merge_delete,
        /// ... and empty the delta.
        kv_merge_clear,
        /// Enqueue worker items.
        enqueue_workers,
        /// Delete cancelled activities.
        cancel_activities,
        /// Enqueue orchestrator items.
        enqueue_orchestrator,
        /// Release the lease.
        release,
    }
}

/// The procedure's loop: try up to [`MAX_CANDIDATES`] instances, claim the
/// first that can run, return its batch, history and KV snapshot.
pub(crate) async fn fetch(
    p: &Store,
    params: FetchParams,
    clock: AttemptClock,
    token: &str,
    conn: Conn,
) -> Result<Polled<FetchedRow>> {
    if params.has_filter && params.bounds[0].is_none() {
        // A filter with no version range matches nothing.
        return Ok(Polled::Empty { next_due_ms: None });
    }
    let p = p.clone();
    let token = token.to_string();
    detached(async move {
        let mut tx = Tx::begin_on(&p.pool, conn).await?;
        let outcome = answered_by(
            tx.deadline(),
            fetch_in(&p, tx.conn()?, &params, clock, &token),
        )
        .await;
        match tx.finish(outcome).await? {
            Fetched::Done(polled) => Ok(*polled),
            Fetched::Unreadable {
                instance,
                reason,
                sqlstate,
                more,
                next_due_ms,
            } => {
                let mut tx = Tx::begin_bounded(&p.pool).await?;
                let seen = Seen {
                    instance,
                    reason,
                    sqlstate,
                    more,
                    next_due_ms,
                };
                let outcome = answered_by(
                    tx.deadline(),
                    reclaim(&p, tx.conn()?, &params, clock, seen, &token),
                )
                .await;
                tx.finish(outcome).await
            }
        }
    })
    .await
}

/// Claims `instance` again, counting the attempt, and hands it over with
/// `reason` as its history error and no history: the procedure's exception
/// block, as a second transaction (the first rolled back). A fetch that fails
/// on one instance's history thus still counts toward its poisoning.
async fn reclaim(
    p: &Store,
    conn: &mut PgConnection,
    params: &FetchParams,
    clock: AttemptClock,
    seen: Seen,
    token: &str,
) -> Result<Polled<FetchedRow>> {
    let Seen {
        instance,
        reason,
        sqlstate,
        more,
        next_due_ms,
    } = seen;
    let sql = &p.sql.inline.fetch_orchestration;
    let taken_meanwhile = Polled::Empty {
        next_due_ms: look_again(params),
    };
    let (claimed, claimed_at): (Option<bool>, i64) = sqlx::query_as(&sql.reclaim)
        .bind(&instance)
        .fetch_one(&mut *conn)
        .await?;
    if claimed != Some(true) {
        return Ok(taken_meanwhile);
    }
    let lease_ms = clock.lease_ms(params.lock_timeout);
    let Some((now, batch)) = lease_and_batch(
        sql,
        conn,
        &instance,
        token,
        lease_ms,
        claimed_at,
        params.max_batch_bytes,
    )
    .await?
    else {
        return Ok(taken_meanwhile);
    };
    let found = instance_of(sql, conn, &instance).await?;
    if batch.has_parked {
        unpark(sql, conn, now, &instance).await?;
    }
    Ok(Polled::Found {
        item: FetchedRow {
            lock_token: token.to_string(),
            instance_id: instance,
            orchestration_name: found.name,
            orchestration_version: found.version,
            execution_id: found.execution_id,
            instance_known: found.known,
            attempt_count: batch.attempts,
            messages: batch.messages,
            history: None,
            history_error: Some(format!("history could not be read: {reason}")),
            history_sqlstate: Some(sqlstate),
            kv_keys: Vec::new(),
            kv_values: Vec::new(),
            kv_updated_ms: Vec::new(),
        },
        more,
        next_due_ms,
    })
}

/// What the first, rolled-back transaction of a fetch saw of the instance
/// whose history it could not read.
struct Seen {
    instance: String,
    reason: String,
    sqlstate: String,
    more: bool,
    next_due_ms: Option<i64>,
}

/// What a claim needs to know of its instance.
struct InstanceOf {
    known: bool,
    name: Option<String>,
    version: Option<String>,
    /// The current execution (the latest in history for an instance without a row).
    execution_id: i64,
    /// An instance without a row whose latest execution has started.
    started: bool,
    /// An instance without a row with a start queued at any visibility.
    start_queued: bool,
}

/// The instance row of `instance`, or for one without a row its latest
/// execution in history and whether that execution started.
async fn instance_of(
    sql: &FetchSql,
    conn: &mut PgConnection,
    instance: &str,
) -> Result<InstanceOf> {
    // The version column allows NULL (a row written by another tool): the
    // runtime then gets "unknown", as from the procedure.
    let known: Option<(String, Option<String>, i64)> = sqlx::query_as(&sql.instance)
        .bind(instance)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((name, version, execution_id)) = known {
        return Ok(InstanceOf {
            known: true,
            name: Some(name),
            version,
            execution_id,
            started: true,
            start_queued: false,
        });
    }
    let (execution_id, started, start_queued): (i64, bool, bool) =
        sqlx::query_as(&sql.unknown_instance)
            .bind(instance)
            .fetch_one(&mut *conn)
            .await?;
    Ok(InstanceOf {
        known: false,
        name: None,
        version: None,
        execution_id,
        started,
        start_queued,
    })
}

/// Makes the claimed instance's parked messages ordinary again.
async fn unpark(sql: &FetchSql, conn: &mut PgConnection, now: i64, instance: &str) -> Result<()> {
    sqlx::query(&sql.unpark)
        .bind(now)
        .bind(instance)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The messages a claim stamped.
struct Batch {
    messages: Vec<String>,
    attempts: i32,
    all_queue: bool,
    has_start: bool,
    has_parked: bool,
}

/// Takes the lease of `instance` from `claimed_at` and stamps its batch (at
/// most `max_batch_bytes` of its messages, see the statement):
/// the claim time and the batch, or `None` when another dispatcher holds a
/// live lease or the batch was consumed since the candidate was read (the
/// lease is given back then).
async fn lease_and_batch(
    sql: &FetchSql,
    conn: &mut PgConnection,
    instance: &str,
    token: &str,
    lease_ms: i64,
    claimed_at: i64,
    max_batch_bytes: i64,
) -> Result<Option<(i64, Batch)>> {
    let leased: Option<i64> = sqlx::query_scalar(&sql.lease)
        .bind(instance)
        .bind(token)
        .bind(claimed_at)
        .bind(lease_ms)
        .bind(claimed_at)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(now) = leased else {
        return Ok(None);
    };
    let row = sqlx::query(&sql.batch)
        .bind(instance)
        .bind(token)
        .bind(now)
        .bind(lease_ms)
        .bind(now)
        .bind(max_batch_bytes)
        .fetch_one(&mut *conn)
        .await?;
    let Some(messages) = row.try_get::<Option<Vec<String>>, _>("messages")? else {
        sqlx::query(&sql.release_lease)
            .bind(token)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    };
    let flag =
        |name: &str| -> Result<bool> { Ok(row.try_get::<Option<bool>, _>(name)?.unwrap_or(false)) };
    Ok(Some((
        now,
        Batch {
            messages,
            attempts: row.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0),
            all_queue: flag("all_queue")?,
            has_start: flag("has_start")?,
            has_parked: flag("has_parked")?,
        },
    )))
}

/// The claim of the oldest message's instance on `conn`, in the caller's
/// transaction (the warm-up's fetch, `super::warm_up`): the claimed row, or
/// `None` when nothing was claimed or its history could not be read.
pub(super) async fn fetch_on(
    p: &Store,
    conn: &mut PgConnection,
    params: &FetchParams,
) -> Result<Option<FetchedRow>> {
    Ok(
        match fetch_in(
            p,
            conn,
            params,
            AttemptClock::start(),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await?
        {
            Fetched::Done(polled) => match *polled {
                Polled::Found { item, .. } => Some(item),
                Polled::Empty { .. } => None,
            },
            Fetched::Unreadable { .. } => None,
        },
    )
}

async fn fetch_in(
    p: &Store,
    conn: &mut PgConnection,
    params: &FetchParams,
    clock: AttemptClock,
    token: &str,
) -> Result<Fetched> {
    let sql = &p.sql.inline.fetch_orchestration;
    let mut skip: Vec<String> = Vec::new();
    // An orphan's batch was parked or dropped: "look again now" if nothing is claimed.
    let mut parked = false;
    let scan = p.floors.orchestrator.start();
    let mut floor = scan.floor;
    let mut first = true;
    // The procedure's `v_start` and `p_lock_timeout_ms`: when the
    // transaction had its connection, and the lease left at that point.
    let started = Instant::now();
    let call_lease_ms = clock.lease_ms(params.lock_timeout);
    for _ in 0..MAX_CANDIDATES {
        // The lease counts from the attempt's start; `claimed_at` is the candidate's.
        let lease_ms = clock.lease_ms(params.lock_timeout);
        let mut candidate = sqlx::query(&sql.candidate)
            .bind(&skip)
            .bind(params.has_filter);
        for bound in params.bounds {
            candidate = candidate.bind(bound);
        }
        let row = candidate
            .bind(params.next_due)
            .bind(params.settle_ms)
            .bind(None::<i64>) // the own lease counts from the candidate's clock
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
            p.floors.orchestrator.set(scan, next);
            floor = floor.or(next);
        }
        let Some(instance) = row.try_get::<Option<String>, _>("instance_id")? else {
            return Ok(done(Polled::Empty {
                next_due_ms: if parked {
                    look_again(params)
                } else {
                    row.try_get("next_due_ms")?
                },
            }));
        };
        let mut claimed: bool = row.try_get("claimed")?;
        if !claimed && !row.try_get::<bool, _>("has_claim_row")? {
            // Messages without a claim row (an older build's, or written
            // behind the provider's back): create it, then claim it.
            sqlx::query(&sql.create_claim)
                .bind(&instance)
                .execute(&mut *conn)
                .await?;
            let (reclaimed, _): (Option<bool>, i64) = sqlx::query_as(&sql.reclaim)
                .bind(&instance)
                .fetch_one(&mut *conn)
                .await?;
            claimed = reclaimed.unwrap_or(false);
        }
        if !claimed {
            skip.push(instance);
            continue;
        }
        let more: bool = row.try_get("more")?;
        let next_due_ms: Option<i64> = row.try_get("next_due_ms")?;
        let claimed_at: i64 = row.try_get("now_ms")?;
        let Some((now, batch)) = lease_and_batch(
            sql,
            conn,
            &instance,
            token,
            lease_ms,
            claimed_at,
            params.max_batch_bytes,
        )
        .await?
        else {
            skip.push(instance); // another dispatcher holds it, or nothing is left
            continue;
        };
        let Batch {
            messages,
            attempts,
            all_queue,
            has_start,
            has_parked,
        } = batch;

        let found = instance_of(sql, conn, &instance).await?;
        if !found.known && !has_start && !found.started {
            // Events queued for an instance that never started, and will
            // not (no start is queued), are dropped.
            // Then, as after parking, the next instance is tried.
            if all_queue && !found.start_queued {
                sqlx::query(&sql.drop_batch)
                    .bind(token)
                    .bind(&instance)
                    .execute(&mut *conn)
                    .await?;
            } else {
                sqlx::query(&sql.park)
                    .bind(token)
                    .bind(now)
                    .bind(params.orphan_retention_ms)
                    .bind(&instance)
                    .execute(&mut *conn)
                    .await?;
            }
            skip.push(instance);
            parked = true;
            continue;
        }
        if has_parked {
            unpark(sql, conn, now, &instance).await?;
        }

        let snapshot = match sqlx::query(&sql.snapshot)
            .bind(&instance)
            .bind(found.execution_id)
            .bind(params.max_history_bytes)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let e = PostgresProviderError::from(e);
                if let Some((reason, sqlstate)) = failed_on_server(&e) {
                    return Ok(Fetched::Unreadable {
                        instance,
                        reason,
                        sqlstate,
                        more,
                        next_due_ms,
                    });
                }
                return Err(e);
            }
        };
        // The lease counts from the attempt's start: a claim slowed by a
        // lock wait, a lost candidate or a large history read would hand it
        // out (nearly) spent, so past a quarter of it (a second at most) it
        // runs from now instead, as in the procedure.
        if lease_worn(started.elapsed(), call_lease_ms) {
            sqlx::query(&sql.extend_lease)
                .bind(&instance)
                .bind(token)
                .bind(call_lease_ms)
                .execute(&mut *conn)
                .await?;
        }
        let row = FetchedRow {
            lock_token: token.to_string(),
            instance_id: instance,
            orchestration_name: found.name,
            orchestration_version: found.version,
            execution_id: found.execution_id,
            instance_known: found.known,
            attempt_count: attempts,
            messages,
            history: snapshot.try_get("history")?,
            history_error: snapshot.try_get("history_error")?,
            history_sqlstate: None,
            kv_keys: snapshot.try_get("kv_keys")?,
            kv_values: snapshot.try_get("kv_values")?,
            kv_updated_ms: snapshot.try_get("kv_updated_ms")?,
        };
        return Ok(done(Polled::Found {
            item: row,
            more,
            next_due_ms,
        }));
    }
    // Every candidate was leased by others meanwhile (their acks notify) or
    // parked (look again now).
    Ok(done(Polled::Empty {
        next_due_ms: if parked { look_again(params) } else { None },
    }))
}

/// Whether a claim spent more of its `lease_ms` lease between the lease's
/// start and the handing over than a quarter of it, or a second: the
/// procedure's test before `extend_lease`. Below that the runtime's renewal
/// (at half the lease, or 2 s before its end by default) still finds the
/// lease live, so the claim keeps the lease it was asked for, counted from
/// the call as duroxide's contract has it, and skips the write.
fn lease_worn(elapsed: Duration, lease_ms: i64) -> bool {
    codec::millis(elapsed) > (lease_ms / 4).min(1000)
}

/// "Look again now" (a next due time of 0), for a fetch that asked for its
/// next due time; nothing for one that did not, as the procedure returns
/// then.
fn look_again(params: &FetchParams) -> Option<i64> {
    params.next_due.then_some(0)
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn only_a_slow_claim_extends_its_lease() {
        let ms = Duration::from_millis;
        assert!(!lease_worn(ms(5), 30_000));
        assert!(!lease_worn(ms(1000), 30_000));
        assert!(lease_worn(ms(1001), 30_000));
        assert!(!lease_worn(ms(250), 1_000));
        assert!(lease_worn(ms(251), 1_000));
        assert!(!lease_worn(ms(500), 2_000));
        assert!(lease_worn(ms(51), 200));
    }
}
