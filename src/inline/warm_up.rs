//! Inline mode's warm-up: what `procedures/warm_up.sql` does in procedure
//! mode, step for step, with inline mode's statements.
//!
//! A connection's first executions of a tenant's statements parse, plan and
//! prepare them and load the tenant's tables' catalog entries; in inline
//! mode the statements are the connection's prepared statements, so they
//! stay warm for the connection's life. Run once on the tenant's home
//! connection when its provider is built ([`crate::warm_up`]), the calls
//! of one orchestration (a start; a turn that completes the instance,
//! schedules an activity and writes what a turn can write; the activity's
//! claim and completion, and the claim after it; the client's status reads)
//! pay those costs before the tenant's first orchestration does.
//!
//! Everything runs in one transaction that is rolled back. The instance's
//! id is unique to the call and its start message visible from the epoch
//! on, so the fetch meets it before any real message; its activity is
//! tagged with that id and looked for from the warm-up's own clock on (the
//! claim after it, with the default tag filter the runtime's workers use
//! unless told otherwise, from a day ahead), so no real message or
//! activity is claimed, nor read beyond what a fetch's scan reads anyway.
//! What is woken is ignored (nothing committed). The orchestrator queue's
//! scan floor may move back to the warm-up message's
//! visibility: a floor is a lower bound, and the next fetch sets it again.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::{orchestration, turn_ack, worker};
use crate::error::Result;
use crate::notify::Polled;
use crate::orchestration_queue::{AckParams, FetchParams};
use crate::store::Store;
use crate::worker_queue;

/// The transaction's first statement: its lock timeout and the clock
/// (rendered once per provider, [`super::InlineSql::warm_up_begin`]).
pub(super) const BEGIN: &str = include_str!("../../inline/warm_up_begin.sql");

/// The lease the warm-up's claims ask for (never outlived: rolled back).
const LEASE: Duration = Duration::from_secs(30);

/// How far ahead of the warm-up's clock the default-filter claim looks:
/// no item is visible from there up to the clock.
const DAY_MS: i64 = 86_400_000;

/// History and KV read per claim, as a runtime's default.
const HISTORY_BYTES: i64 = 1 << 20;

/// Runs the sequence on `conn` and rolls it back; whether all of it ran
/// (false: the fetch met another instance first, or a step found nothing;
/// what ran stays warm). A failure (a lock not granted within a second
/// included) is returned after the rollback; a dropped call leaves the
/// rollback to sqlx, which sends it before the connection's next use.
pub(crate) async fn run(s: &Store, conn: &mut PgConnection) -> Result<bool> {
    let mut tx = conn.begin_with(crate::pooler::READ_COMMITTED).await?;
    let ran = steps(s, &mut tx).await;
    tx.rollback().await?;
    ran
}

async fn steps(s: &Store, c: &mut PgConnection) -> Result<bool> {
    let (_, now): (String, i64) = sqlx::query_as(&s.sql.inline.warm_up_begin)
        .fetch_one(&mut *c)
        .await?;
    let instance = format!("duroxide-postgres warm-up {}", uuid::Uuid::new_v4());

    // The client's start, visible since the epoch.
    let _: Vec<String> = sqlx::query_scalar(&s.sql.orchestration.enqueue)
        .bind(&instance)
        .bind("StartOrchestration")
        .bind("{}")
        .bind(-now)
        .fetch_one(&mut *c)
        .await?;

    // A runtime's turn.
    let fetch = FetchParams {
        lock_timeout: LEASE,
        has_filter: false,
        bounds: [None; 6],
        next_due: true,
        settle_ms: 50,
        orphan_retention_ms: 60_000,
        max_history_bytes: HISTORY_BYTES,
        max_batch_bytes: HISTORY_BYTES,
    };
    let Some(turn) = orchestration::fetch_on(s, c, &fetch).await? else {
        return Ok(false);
    };
    if turn.instance_id != instance {
        return Ok(false);
    }
    let exec = turn.execution_id;
    let ack = AckParams {
        lock_token: turn.lock_token,
        execution_id: exec,
        event_ids: vec![1],
        event_types: vec!["OrchestrationStarted".to_string()],
        event_data: vec!["{}".to_string()],
        name: Some("warm-up".to_string()),
        version: Some("0".to_string()),
        parent_instance: None,
        status: Some("Completed".to_string()),
        output: Some(String::new()),
        pinned: [Some(0); 3],
        custom_status_set: true,
        custom_status: Some(String::new()),
        kv_ops: vec!["set"],
        kv_keys: vec!["k".to_string()],
        kv_values: vec![Some("v".to_string())],
        kv_updated_ms: vec![now],
        worker_items: vec!["{}".to_string()],
        worker_instances: vec![instance.clone()],
        worker_executions: vec![exec],
        worker_activities: vec![1],
        worker_sessions: vec![None],
        worker_tags: vec![Some(instance.clone())],
        orch_instances: vec![instance.clone()],
        orch_kinds: vec!["QueueMessage"],
        orch_items: vec!["{}".to_string()],
        orch_visible_ms: vec![Some(now)],
        cancel_instances: vec![instance.clone()],
        cancel_executions: vec![exec],
        cancel_activities: vec![2],
    };
    turn_ack::ack_in(s, c, &ack).await?;

    // The activity: its claim, its completion, and the claim after it (in
    // inline mode the ack and then the fetch's statements, with the default
    // tag filter's candidate).
    let work = worker_queue::FetchParams {
        lock_timeout: LEASE,
        tag_mode: "tags",
        tags: vec![instance.clone()],
        owner: None,
        session_lock: Some(LEASE),
        next_due: true,
        history_bytes: Some(HISTORY_BYTES),
    };
    let clock = crate::codec::AttemptClock::start();
    let token = uuid::Uuid::new_v4().to_string();
    let Polled::Found { item, .. } =
        worker::fetch_in(s, c, &work, clock, Some(now), &token).await?
    else {
        return Ok(false);
    };
    let (acked, _): (bool, Vec<String>) = sqlx::query_as(&s.sql.worker.ack)
        .bind(&item.0)
        .bind(&instance)
        .bind("ActivityCompleted")
        .bind("{}")
        .fetch_one(&mut *c)
        .await?;
    if !acked {
        return Ok(false);
    }
    // The claim after it with duroxide's default tag filter (untagged
    // only: a statement of its own), from a floor a day ahead, so that it
    // reads no item.
    let default_filter = worker_queue::FetchParams {
        tag_mode: "default",
        tags: Vec::new(),
        ..work
    };
    let token = uuid::Uuid::new_v4().to_string();
    worker::fetch_in(s, c, &default_filter, clock, Some(now + DAY_MS), &token).await?;

    // The client's status reads.
    let _: Vec<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(&s.sql.history.read)
        .bind(&instance)
        .bind(None::<i64>)
        .bind(true)
        .fetch_all(&mut *c)
        .await?;
    let _: Option<(Option<String>, i64)> = sqlx::query_as(&s.sql.history.custom_status)
        .bind(&instance)
        .bind(0_i64)
        .fetch_optional(&mut *c)
        .await?;
    Ok(true)
}
