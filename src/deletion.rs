//! Deletion and pruning: atomic tree deletes, bulk deletes, execution pruning.
//! Each function is one procedure call, or in inline mode the procedure's
//! statements (`crate::inline::deletion`).

use duroxide::providers::{DeleteInstanceResult, InstanceFilter, PruneOptions, PruneResult};

use crate::codec;
use crate::config::SqlMode;
use crate::error::Result;
use crate::inline;
use crate::provider::PostgresProvider;
use crate::sql::statements;

/// Roots handled by one bulk call when the filter sets no limit.
const DEFAULT_BULK_LIMIT: u32 = 1000;

statements! {
    /// Statements of deletion and pruning.
    pub(crate) struct DeletionSql {
        /// Delete a set of instances atomically.
        delete = "SELECT * FROM {{schema}}.delete_instances($1, $2)",
        /// Delete terminal root trees matching a filter.
        delete_bulk = "SELECT * FROM {{schema}}.delete_instance_bulk($1, $2, $3)",
        /// Prune one instance's executions.
        prune = "SELECT * FROM {{schema}}.prune_executions($1, $2, $3)",
        /// Prune executions of every instance matching a filter.
        prune_bulk = "SELECT * FROM {{schema}}.prune_executions_bulk($1, $2, $3, $4, $5)",
    }
}

/// The row the delete procedures return.
#[derive(sqlx::FromRow)]
struct DeletedRow {
    instances_deleted: i64,
    executions_deleted: i64,
    events_deleted: i64,
    queue_messages_deleted: i64,
}

impl DeletedRow {
    fn from_counts(
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
struct PrunedRow {
    instances_processed: i64,
    executions_deleted: i64,
    events_deleted: i64,
}

impl PrunedRow {
    fn from_counts([instances, executions, events]: inline::deletion::PruneCounts) -> Self {
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

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_string()).collect()
}

fn checked_ids(ids: &[String]) -> Result<Vec<&str>> {
    ids.iter()
        .map(|id| codec::check_text("instance id", id))
        .collect()
}

/// An `InstanceFilter` as bound parameters: (ids, completed_before, limit).
type FilterParams<'a> = (Option<Vec<&'a str>>, Option<i64>, i64);

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
fn prune_params(options: &PruneOptions) -> Result<(Option<i64>, Option<i64>)> {
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
    p: &PostgresProvider,
    ids: &[String],
    force: bool,
) -> Result<DeleteInstanceResult> {
    let ids = checked_ids(ids)?;
    match p.mode {
        SqlMode::StoredProcedures => sqlx::query_as::<_, DeletedRow>(&p.sql.deletion.delete)
            .bind(ids)
            .bind(force)
            .fetch_one(&p.pool)
            .await?
            .into_result(),
        SqlMode::InlineSql => DeletedRow::from_counts(
            inline::deletion::delete_instances(p, owned(&ids), force).await?,
        )
        .into_result(),
    }
}

/// Deletes terminal root trees matching `filter`.
pub(crate) async fn delete_instance_bulk(
    p: &PostgresProvider,
    filter: &InstanceFilter,
) -> Result<DeleteInstanceResult> {
    let (ids, before, limit) = filter_params(filter)?;
    match p.mode {
        SqlMode::StoredProcedures => sqlx::query_as::<_, DeletedRow>(&p.sql.deletion.delete_bulk)
            .bind(ids)
            .bind(before)
            .bind(limit)
            .fetch_one(&p.pool)
            .await?
            .into_result(),
        SqlMode::InlineSql => DeletedRow::from_counts(
            inline::deletion::delete_instance_bulk(p, ids.as_deref().map(owned), before, limit)
                .await?,
        )
        .into_result(),
    }
}

/// Prunes old executions of one instance.
pub(crate) async fn prune_executions(
    p: &PostgresProvider,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<PruneResult> {
    let instance_id = codec::check_text("instance id", instance_id)?;
    let (keep_last, completed_before) = prune_params(options)?;
    match p.mode {
        SqlMode::StoredProcedures => sqlx::query_as::<_, PrunedRow>(&p.sql.deletion.prune)
            .bind(instance_id)
            .bind(keep_last)
            .bind(completed_before)
            .fetch_one(&p.pool)
            .await?
            .into_result(),
        SqlMode::InlineSql => PrunedRow::from_counts(
            inline::deletion::prune_executions(
                p,
                instance_id.to_string(),
                keep_last,
                completed_before,
            )
            .await?,
        )
        .into_result(),
    }
}

/// Prunes old executions of every instance matching `filter`.
pub(crate) async fn prune_executions_bulk(
    p: &PostgresProvider,
    filter: &InstanceFilter,
    options: &PruneOptions,
) -> Result<PruneResult> {
    let (ids, before, limit) = filter_params(filter)?;
    let (keep_last, prune_before) = prune_params(options)?;
    match p.mode {
        SqlMode::StoredProcedures => sqlx::query_as::<_, PrunedRow>(&p.sql.deletion.prune_bulk)
            .bind(ids)
            .bind(before)
            .bind(limit)
            .bind(keep_last)
            .bind(prune_before)
            .fetch_one(&p.pool)
            .await?
            .into_result(),
        SqlMode::InlineSql => PrunedRow::from_counts(
            inline::deletion::prune_executions_bulk(
                p,
                ids.as_deref().map(owned),
                before,
                limit,
                keep_last,
                prune_before,
            )
            .await?,
        )
        .into_result(),
    }
}
