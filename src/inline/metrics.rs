//! Inline driver of `get_system_metrics`: its two statements,
//! `statements/get_system_metrics/*.sql`, in one transaction, so the counts
//! are planned for the tables as they are, with sequential scans (the pool
//! keeps generic plans without them).

use super::{Tx, procedure_statements};
use crate::admin::MetricsRow;
use crate::error::Result;
use crate::pooler::answered_by;
use crate::store::Store;

procedure_statements! {
    /// Statements of `get_system_metrics`.
    pub(crate) struct MetricsSql from "get_system_metrics" {
        /// Plan this transaction's statements per call, sequential scans on.
        plan_per_call,
        /// The counts.
        counts,
    }
}

/// The counts, in a transaction of their own.
pub(crate) async fn system_metrics(p: &Store) -> Result<MetricsRow> {
    let sql = &p.sql.inline.metrics;
    let mut tx = Tx::begin_bounded(&p.pool).await?;
    let deadline = tx.deadline();
    let outcome = answered_by(deadline, async {
        let conn = tx.conn()?;
        sqlx::query(&sql.plan_per_call).execute(&mut *conn).await?;
        Ok(sqlx::query_as::<_, MetricsRow>(&sql.counts)
            .fetch_one(&mut *conn)
            .await?)
    })
    .await;
    tx.finish(outcome).await
}
