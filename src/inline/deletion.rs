//! Inline drivers of `delete_instances`, `delete_instance_bulk`,
//! `prune_executions` and `prune_executions_bulk`: the procedures' checks and
//! loops in Rust, their statements the procedures' own, `statements/NAME/*.sql`.

use sqlx::{PgConnection, Row};

use super::{Tx, detached, procedure_statements};
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::store::Store;

procedure_statements! {
    /// Statements of `delete_instances`.
    pub(crate) struct DeleteSql from "delete_instances" {
        /// Wait for fetches that claimed a listed instance.
        claim,
        /// Lock the listed instances' leases.
        lock_leases,
        /// Lock their queued messages.
        lock_messages,
        /// Lock the listed instance rows.
        lock,
        /// A listed instance still running.
        running,
        /// A child left out of the list.
        orphan,
        /// Delete everything the instances own.
        purge,
        /// Delete completions queued while the purge waited.
        sweep,
    }
}

procedure_statements! {
    /// Statements of `delete_instance_bulk`.
    pub(crate) struct DeleteBulkSql from "delete_instance_bulk" {
        /// Plan this transaction's statements per call.
        plan_per_call,
        /// Terminal roots matching the filter.
        roots,
        /// A root's whole tree.
        tree,
    }
}

procedure_statements! {
    /// Statements of `prune_executions`.
    pub(crate) struct PruneSql from "prune_executions" {
        /// The instance's current execution, locked.
        lock_instance,
        /// Delete old executions and their history.
        prune,
    }
}

procedure_statements! {
    /// Statements of `prune_executions_bulk`.
    pub(crate) struct PruneBulkSql from "prune_executions_bulk" {
        /// Plan this transaction's statements per call.
        plan_per_call,
        /// Instances matching the filter with something to prune.
        targets,
        /// Lock the targets' instance rows, in id order.
        lock_targets,
    }
}

/// Every deletion statement of one provider.
#[derive(Debug, Clone)]
pub(crate) struct DeletionSql {
    pub delete: DeleteSql,
    pub delete_bulk: DeleteBulkSql,
    pub prune: PruneSql,
    pub prune_bulk: PruneBulkSql,
}

impl DeletionSql {
    /// Renders every statement for `schema`.
    pub(crate) fn render(schema: &crate::schema::SchemaName) -> Self {
        Self {
            delete: DeleteSql::render(schema),
            delete_bulk: DeleteBulkSql::render(schema),
            prune: PruneSql::render(schema),
            prune_bulk: PruneBulkSql::render(schema),
        }
    }

    /// `(procedure, statement)` of every statement, for the unit tests.
    #[cfg(test)]
    pub(crate) const STATEMENTS: &'static [&'static [(&'static str, &'static str)]] = &[
        DeleteSql::STATEMENTS,
        DeleteBulkSql::STATEMENTS,
        PruneSql::STATEMENTS,
        PruneBulkSql::STATEMENTS,
    ];
}

/// Counts in the order the delete procedures return them: instances,
/// executions, events, queue messages.
pub(crate) type DeleteCounts = [i64; 4];

/// Counts in the order the prune procedures return them: instances,
/// executions, events.
pub(crate) type PruneCounts = [i64; 3];

/// `delete_instances` in its own (detached) transaction.
pub(crate) async fn delete_instances(
    p: &Store,
    ids: Vec<String>,
    force: bool,
) -> Result<DeleteCounts> {
    let p = p.clone();
    detached(async move {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut tx = Tx::begin_bounded(&p.pool.long_running()).await?;
        let outcome = delete_in(&p, tx.conn()?, &ids, force).await;
        tx.finish(outcome).await
    })
    .await
}

/// `delete_instances` inside a caller's transaction.
async fn delete_in(
    p: &Store,
    conn: &mut PgConnection,
    ids: &[&str],
    force: bool,
) -> Result<DeleteCounts> {
    let sql = &p.sql.inline.deletion.delete;
    if ids.is_empty() {
        return Ok([0; 4]);
    }
    // A running instance is refused before any lock and again under the
    // locks, as the procedure does.
    for locked in [false, true] {
        if locked {
            // The procedure's locks, in its order, one statement each.
            for lock in [&sql.claim, &sql.lock_leases, &sql.lock_messages, &sql.lock] {
                sqlx::query(lock).bind(ids).execute(&mut *conn).await?;
            }
        }
        if !force {
            let running: Option<String> = sqlx::query_scalar(&sql.running)
                .bind(ids)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(id) = running {
                return Err(PostgresProviderError::rejected(
                    sqlstate::INVALID_STATE,
                    format!(
                        "Instance {id} is still running. Use force=true to delete anyway, or cancel first."
                    ),
                ));
            }
        }
    }
    let orphan: Option<(String, String)> = sqlx::query_as(&sql.orphan)
        .bind(ids)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((child, parent)) = orphan {
        return Err(PostgresProviderError::rejected(
            sqlstate::INVALID_STATE,
            format!(
                "Cannot delete: instance {parent} has child {child} that was created after tree traversal (it would be orphaned). Re-fetch the tree and retry."
            ),
        ));
    }
    let row = sqlx::query(&sql.purge)
        .bind(ids)
        .fetch_one(&mut *conn)
        .await?;
    let late: i64 = sqlx::query_scalar(&sql.sweep)
        .bind(ids)
        .fetch_one(&mut *conn)
        .await?;
    Ok([
        i64::try_from(ids.len()).unwrap_or(i64::MAX),
        row.try_get("executions_deleted")?,
        row.try_get("events_deleted")?,
        row.try_get::<i64, _>("queue_messages_deleted")? + late,
    ])
}

/// `delete_instance_bulk`: every matching root's tree, force-deleted.
pub(crate) async fn delete_instance_bulk(
    p: &Store,
    ids: Option<Vec<String>>,
    completed_before: Option<i64>,
    limit: i64,
) -> Result<DeleteCounts> {
    let p = p.clone();
    detached(async move {
        let ids: Option<Vec<&str>> = ids
            .as_ref()
            .map(|ids| ids.iter().map(String::as_str).collect());
        let mut tx = Tx::begin_bounded(&p.pool.long_running()).await?;
        let outcome = delete_bulk_in(&p, tx.conn()?, ids.as_deref(), completed_before, limit).await;
        tx.finish(outcome).await
    })
    .await
}

async fn delete_bulk_in(
    p: &Store,
    conn: &mut PgConnection,
    ids: Option<&[&str]>,
    completed_before: Option<i64>,
    limit: i64,
) -> Result<DeleteCounts> {
    let sql = &p.sql.inline.deletion.delete_bulk;
    sqlx::query(&sql.plan_per_call).execute(&mut *conn).await?;
    let roots: Vec<String> = sqlx::query_scalar(&sql.roots)
        .bind(ids)
        .bind(completed_before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    let mut all: Vec<String> = Vec::new();
    for root in &roots {
        let tree: Vec<String> = sqlx::query_scalar::<_, Option<Vec<String>>>(&sql.tree)
            .bind(root)
            .fetch_one(&mut *conn)
            .await?
            .unwrap_or_default();
        all.extend(tree);
    }
    // One delete of every tree: its locks in the one order over all of them.
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    delete_in(p, conn, &all, true).await
}

/// `prune_executions` in its own (detached) transaction.
pub(crate) async fn prune_executions(
    p: &Store,
    instance: String,
    keep_last: Option<i64>,
    completed_before: Option<i64>,
) -> Result<PruneCounts> {
    let p = p.clone();
    detached(async move {
        let mut tx = Tx::begin_bounded(&p.pool.long_running()).await?;
        let outcome = prune_in(&p, tx.conn()?, &instance, keep_last, completed_before).await;
        tx.finish(outcome).await
    })
    .await
}

/// `prune_executions` inside a caller's transaction.
async fn prune_in(
    p: &Store,
    conn: &mut PgConnection,
    instance: &str,
    keep_last: Option<i64>,
    completed_before: Option<i64>,
) -> Result<PruneCounts> {
    let sql = &p.sql.inline.deletion.prune;
    let current: Option<i64> = sqlx::query_scalar(&sql.lock_instance)
        .bind(instance)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(current) = current else {
        return Err(PostgresProviderError::rejected(
            sqlstate::NOT_FOUND,
            format!("Instance {instance} not found"),
        ));
    };
    let row = sqlx::query(&sql.prune)
        .bind(instance)
        .bind(current)
        .bind(keep_last)
        .bind(completed_before)
        .fetch_one(&mut *conn)
        .await?;
    Ok([
        1,
        row.try_get("executions_deleted")?,
        row.try_get("events_deleted")?,
    ])
}

/// `prune_executions_bulk`: every matching instance pruned, counts summed.
pub(crate) async fn prune_executions_bulk(
    p: &Store,
    ids: Option<Vec<String>>,
    completed_before: Option<i64>,
    limit: i64,
    keep_last: Option<i64>,
    prune_completed_before: Option<i64>,
) -> Result<PruneCounts> {
    let p = p.clone();
    detached(async move {
        let mut tx = Tx::begin_bounded(&p.pool.long_running()).await?;
        let outcome = prune_bulk_in(
            &p,
            tx.conn()?,
            ids,
            completed_before,
            limit,
            keep_last,
            prune_completed_before,
        )
        .await;
        tx.finish(outcome).await
    })
    .await
}

async fn prune_bulk_in(
    p: &Store,
    conn: &mut PgConnection,
    ids: Option<Vec<String>>,
    completed_before: Option<i64>,
    limit: i64,
    keep_last: Option<i64>,
    prune_completed_before: Option<i64>,
) -> Result<PruneCounts> {
    {
        let sql = &p.sql.inline.deletion.prune_bulk;
        sqlx::query(&sql.plan_per_call).execute(&mut *conn).await?;
        let targets: Vec<String> = sqlx::query_scalar(&sql.targets)
            .bind(ids)
            .bind(completed_before)
            .bind(limit)
            .bind(keep_last)
            .bind(prune_completed_before)
            .fetch_one(&mut *conn)
            .await?;
        let locked: Vec<String> = sqlx::query_scalar(&sql.lock_targets)
            .bind(&targets)
            .fetch_one(&mut *conn)
            .await?;
        let mut total = [0i64; 3];
        for id in &locked {
            let counts = prune_in(p, &mut *conn, id, keep_last, prune_completed_before).await?;
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        Ok(total)
    }
}
