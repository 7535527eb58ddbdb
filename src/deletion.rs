//! Deletion and pruning: atomic tree deletes, bulk deletes, execution pruning.
//! Each function checks and binds its parameters, lets the store's driver
//! run the procedure (one call, or in inline mode its statements, see
//! `crate::driver`) and decodes the counts.

use duroxide::providers::{DeleteInstanceResult, InstanceFilter, PruneOptions, PruneResult};

use crate::codec;
use crate::error::Result;
use crate::inline;
use crate::sql::statements;
use crate::store::Store;

/// Roots handled by one bulk call when the filter sets no limit.
const DEFAULT_BULK_LIMIT: u32 = 1000;

statements! {
    /// Statements of deletion and pruning.
    pub(crate) struct DeletionSql {
        /// Delete a set of instances atomically.
        delete = "SELECT * FROM {{schema}}.delete_instances{{suffix}}($1, $2)",
        /// Delete terminal root trees matching a filter.
        delete_bulk = "SELECT * FROM {{schema}}.delete_instance_bulk{{suffix}}($1, $2, $3)",
        /// Prune one instance's executions.
        prune = "SELECT * FROM {{schema}}.prune_executions{{suffix}}($1, $2, $3)",
        /// Prune executions of every instance matching a filter.
        prune_bulk = "SELECT * FROM {{schema}}.prune_executions_bulk{{suffix}}($1, $2, $3, $4, $5)",
    }
}

/// The row the delete procedures return.
#[derive(sqlx::FromRow)]
pub(crate) struct DeletedRow {
    instances_deleted: i64,
    executions_deleted: i64,
    events_deleted: i64,
    queue_messages_deleted: i64,
}

impl DeletedRow {
    /// The counts the inline driver returns, in the procedure's order.
    pub(crate) fn from_counts(
        [instances, executions, events, messages]: inline::deletion::DeleteCounts,
    ) -> Self {
        Self {
            instances_deleted: instances,
            executions_deleted: executions,
            events_deleted: events,
            queue_messages_deleted: messages,
        }
    }

    fn into_result(self) -> Result<DeleteInstanceResult> {
        Ok(DeleteInstanceResult {
            instances_deleted: codec::to_u64("instances_deleted", self.instances_deleted)?,
            executions_deleted: codec::to_u64("executions_deleted", self.executions_deleted)?,
            events_deleted: codec::to_u64("events_deleted", self.events_deleted)?,
            queue_messages_deleted: codec::to_u64(
                "queue_messages_deleted",
                self.queue_messages_deleted,
            )?,
        })
    }
}

/// The row the prune procedures return.
#[derive(sqlx::FromRow)]
pub(crate) struct PrunedRow {
    instances_processed: i64,
    executions_deleted: i64,
    events_deleted: i64,
}

impl PrunedRow {
    /// The counts the inline driver returns, in the procedure's order.
    pub(crate) fn from_counts(
        [instances, executions, events]: inline::deletion::PruneCounts,
    ) -> Self {
        Self {
            instances_processed: instances,
            executions_deleted: executions,
            events_deleted: events,
        }
    }

    fn into_result(self) -> Result<PruneResult> {
        Ok(PruneResult {
            instances_processed: codec::to_u64("instances_processed", self.instances_processed)?,
            executions_deleted: codec::to_u64("executions_deleted", self.executions_deleted)?,
            events_deleted: codec::to_u64("events_deleted", self.events_deleted)?,
        })
    }
}

fn checked_ids(ids: &[String]) -> Result<Vec<&str>> {
    ids.iter()
        .map(|id| codec::check_text("instance id", id))
        .collect()
}

/// An `InstanceFilter` as bound parameters: (ids, completed_before, limit).
pub(crate) type FilterParams<'a> = (Option<Vec<&'a str>>, Option<i64>, i64);

/// The filter as (ids, completed_before, limit) parameters.
fn filter_params(filter: &InstanceFilter) -> Result<FilterParams<'_>> {
    let ids = filter
        .instance_ids
        .as_deref()
        .map(checked_ids)
        .transpose()?;
    let before = filter
        .completed_before
        .map(|t| codec::to_i64("completed_before", t))
        .transpose()?;
    Ok((
        ids,
        before,
        i64::from(filter.limit.unwrap_or(DEFAULT_BULK_LIMIT)),
    ))
}

/// `PruneOptions` as bound parameters: (keep_last, completed_before).
pub(crate) type PruneParams = (Option<i64>, Option<i64>);

/// The options as (keep_last, completed_before) parameters.
fn prune_params(options: &PruneOptions) -> Result<PruneParams> {
    Ok((
        options.keep_last.map(i64::from),
        options
            .completed_before
            .map(|t| codec::to_i64("completed_before", t))
            .transpose()?,
    ))
}

/// Deletes `ids` and all they own, atomically (see `procedures/delete_instances.sql`).
pub(crate) async fn delete_instances_atomic(
    s: &Store,
    ids: &[String],
    force: bool,
) -> Result<DeleteInstanceResult> {
    let ids = checked_ids(ids)?;
    let outcome = s.driver.delete_instances(s, ids, force).await;
    s.prefetch.wrote_all();
    outcome?.into_result()
}

/// Deletes terminal root trees matching `filter`.
pub(crate) async fn delete_instance_bulk(
    s: &Store,
    filter: &InstanceFilter,
) -> Result<DeleteInstanceResult> {
    let filter = filter_params(filter)?;
    let outcome = s.driver.delete_instance_bulk(s, filter).await;
    s.prefetch.wrote_all();
    outcome?.into_result()
}

/// Prunes old executions of one instance.
pub(crate) async fn prune_executions(
    s: &Store,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<PruneResult> {
    let instance_id = codec::check_text("instance id", instance_id)?;
    let prune = prune_params(options)?;
    let outcome = s.driver.prune_executions(s, instance_id, prune).await;
    s.prefetch.wrote_all();
    outcome?.into_result()
}

/// Prunes old executions of every instance matching `filter`.
pub(crate) async fn prune_executions_bulk(
    s: &Store,
    filter: &InstanceFilter,
    options: &PruneOptions,
) -> Result<PruneResult> {
    let filter = filter_params(filter)?;
    let prune = prune_params(options)?;
    let outcome = s.driver.prune_executions_bulk(s, filter, prune).await;
    s.prefetch.wrote_all();
    outcome?.into_result()
}
