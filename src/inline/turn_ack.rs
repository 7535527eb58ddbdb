//! Inline driver of `ack_orchestration_item`: the procedure's control flow
//! in Rust, its statements the procedure's own,
//! `statements/ack_orchestration_item/*.sql`.

use sqlx::PgConnection;

use super::{Tx, detached};
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::orchestration_queue::AckParams;
use crate::pooler::answered_by;
use crate::store::Store;

/// The procedure's steps in order, skipping those whose input is empty,
/// each lock waited for a second at most; what to wake once committed.
pub(crate) async fn ack(p: &Store, a: AckParams) -> Result<Vec<String>> {
    let p = p.clone();
    detached(async move {
        let mut tx = Tx::begin_bounded(&p.pool).await?;
        let outcome = answered_by(tx.deadline(), ack_in(&p, tx.conn()?, &a)).await;
        tx.finish(outcome).await
    })
    .await
}

pub(super) async fn ack_in(p: &Store, c: &mut PgConnection, a: &AckParams) -> Result<Vec<String>> {
    let sql = &p.sql.inline.ack_orchestration;

    let lease: Option<(String, i64, i64, bool)> = sqlx::query_as(&sql.lease)
        .bind(&a.lock_token)
        .bind(&a.orch_instances)
        .fetch_optional(&mut *c)
        .await?;
    let Some((instance, until, now, quiet)) = lease else {
        return Err(PostgresProviderError::rejected(
            sqlstate::INVALID_LOCK_TOKEN,
            "Invalid lock token",
        ));
    };
    if until <= now {
        return Err(PostgresProviderError::rejected(
            sqlstate::LOCK_EXPIRED,
            "Instance lock expired",
        ));
    }
    sqlx::query(&sql.consume)
        .bind(&a.lock_token)
        .bind(&instance)
        .execute(&mut *c)
        .await?;
    if let (Some(name), Some(version)) = (&a.name, &a.version) {
        sqlx::query(&sql.upsert_instance)
            .bind(&instance)
            .bind(name)
            .bind(version)
            .bind(a.execution_id)
            .bind(&a.parent_instance)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    sqlx::query(&sql.insert_execution)
        .bind(&instance)
        .bind(a.execution_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    if a.pinned[0].is_some() {
        sqlx::query(&sql.pin_version)
            .bind(&instance)
            .bind(a.execution_id)
            .bind(a.pinned[0])
            .bind(a.pinned[1])
            .bind(a.pinned[2])
            .execute(&mut *c)
            .await?;
    }
    sqlx::query(&sql.advance_execution)
        .bind(&instance)
        .bind(a.execution_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    let moved: Option<(Vec<i64>, Vec<String>)> = if a.is_poison_failure() {
        Some(
            sqlx::query_as(&sql.poison_after_last)
                .bind(&instance)
                .bind(a.execution_id)
                .bind(&a.event_ids)
                .bind(&a.event_data)
                .fetch_one(&mut *c)
                .await?,
        )
    } else {
        None
    };
    let (event_ids, event_data) = match &moved {
        Some((ids, data)) => (ids, data),
        None => (&a.event_ids, &a.event_data),
    };
    if !event_ids.is_empty() {
        sqlx::query(&sql.append_history)
            .bind(&instance)
            .bind(a.execution_id)
            .bind(event_ids)
            .bind(&a.event_types)
            .bind(event_data)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    if a.status.is_some() {
        sqlx::query(&sql.set_status)
            .bind(&instance)
            .bind(a.execution_id)
            .bind(&a.status)
            .bind(&a.output)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    if a.custom_status_set {
        sqlx::query(&sql.set_custom_status)
            .bind(&instance)
            .bind(&a.custom_status)
            .execute(&mut *c)
            .await?;
    }
    for i in 0..a.kv_ops.len() {
        match a.kv_ops[i] {
            "set" => {
                sqlx::query(&sql.kv_set)
                    .bind(&instance)
                    .bind(&a.kv_keys[i])
                    .bind(&a.kv_values[i])
                    .bind(a.kv_updated_ms[i])
                    .execute(&mut *c)
                    .await?;
            }
            "clear" => {
                sqlx::query(&sql.kv_clear)
                    .bind(&instance)
                    .bind(&a.kv_keys[i])
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
            }
            _ => {
                for statement in [&sql.kv_clear_all_delta, &sql.kv_clear_all_store] {
                    sqlx::query(statement)
                        .bind(&instance)
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                }
            }
        }
    }
    if matches!(
        a.status.as_deref(),
        Some("Completed" | "Failed" | "ContinuedAsNew")
    ) {
        for statement in [
            &sql.kv_merge_upsert,
            &sql.kv_merge_delete,
            &sql.kv_merge_clear,
        ] {
            sqlx::query(statement)
                .bind(&instance)
                .execute(&mut *c)
                .await?;
        }
    }
    if !a.worker_items.is_empty() {
        sqlx::query(&sql.enqueue_workers)
            .bind(&a.worker_items)
            .bind(&a.worker_instances)
            .bind(&a.worker_executions)
            .bind(&a.worker_activities)
            .bind(&a.worker_sessions)
            .bind(&a.worker_tags)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    if !a.cancel_instances.is_empty() {
        sqlx::query(&sql.cancel_activities)
            .bind(&a.cancel_instances)
            .bind(&a.cancel_executions)
            .bind(&a.cancel_activities)
            .execute(&mut *c)
            .await?;
    }
    if !a.orch_instances.is_empty() {
        sqlx::query(&sql.enqueue_orchestrator)
            .bind(&a.orch_instances)
            .bind(&a.orch_kinds)
            .bind(&a.orch_items)
            .bind(&a.orch_visible_ms)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    let wake: Vec<String> = sqlx::query_scalar(&sql.release)
        .bind(&a.lock_token)
        .bind(&instance)
        .bind(!a.orch_instances.is_empty() || !quiet)
        .bind(!a.worker_items.is_empty())
        .fetch_one(&mut *c)
        .await?;
    Ok(wake)
}
