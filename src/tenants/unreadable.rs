//! The queued items of a tenant that this build cannot decode: what
//! `AdmissionStats::unreadable_set_aside` counts, found for an operator.
//!
//! A fetch that claims such an item sets it aside for a second, its attempt
//! not counted, so that a dispatcher that can read it (a newer release's,
//! during a rolling upgrade) runs it. An item that no release can read (a
//! row written by hand) stays queued for good, its instance waiting; this
//! read finds it, to be mended or deleted (docs/operations.md, "Rolling
//! upgrades").

use std::fmt;

use futures_util::TryStreamExt;
use sqlx::{Executor, PgPool, Row};

use super::{READ_BOUND, has_table, is_tenant, locked_out, not_a_tenant};
use crate::error::Result;
use crate::migrate;
use crate::schema::SchemaName;

const QUEUED_ITEMS: &str = include_str!("../../tenants/queued_items.sql");

/// The queue an item waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum QueueKind {
    /// `orchestrator_queue`: an instance's messages (starts, events,
    /// completions), taken by its turns.
    Orchestrator,
    /// `worker_queue`: activities.
    Worker,
}

impl QueueKind {
    /// The queue's table in the tenant's schema.
    pub fn table(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator_queue",
            Self::Worker => "worker_queue",
        }
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Orchestrator => "orchestrator",
            Self::Worker => "worker",
        })
    }
}

/// A queued item this build cannot decode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableItem {
    /// Its queue.
    pub queue: QueueKind,
    /// Its row's `id` in the queue's table ([`QueueKind::table`]).
    pub id: i64,
    /// The instance it belongs to (an activity written without one has
    /// none).
    pub instance_id: Option<String>,
    /// Attempts counted so far (a set-aside counts none).
    pub attempt_count: u32,
    /// When it is (or was) due, in milliseconds since the Unix epoch: a
    /// set-aside moves it a second past the fetch that met it.
    pub visible_at_ms: i64,
    /// Whether a live lease holds it now (a fetch is between its claim and
    /// setting it aside).
    pub leased: bool,
    /// Why it does not decode, as the decoder says.
    pub error: String,
}

/// Every item of `schema`'s two queues that this build cannot decode, by
/// queue and id. Reads both queues whole, decoding each item in this
/// process, and changes nothing: an operator's call, not a runtime's.
///
/// Waits at most 2 s for a lock on the queues, as [`super::status`] does.
///
/// # Errors
/// The schema holds no tenant (`DX003`); a queue another session has held
/// locked for over 2 s (`55P03`); database errors.
pub async fn unreadable(pool: &PgPool, schema: &SchemaName) -> Result<Vec<UnreadableItem>> {
    let mut tx = pool.begin_with(crate::pooler::READ_COMMITTED).await?;
    if !is_tenant(&mut tx, schema).await? {
        return Err(not_a_tenant(schema, "no queue to read"));
    }
    for table in [QueueKind::Orchestrator, QueueKind::Worker].map(QueueKind::table) {
        if !has_table(&mut tx, schema, table).await? {
            return Err(not_a_tenant(schema, "no queue to read"));
        }
    }
    let pin = format!("{}{READ_BOUND}", migrate::PIN);
    tx.execute(crate::sql::audited(&pin)).await?;
    let statement = crate::sql::audited(&schema.render(QUEUED_ITEMS));
    let mut found = Vec::new();
    {
        let mut rows = sqlx::query(statement).fetch(&mut *tx);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| locked_out(schema, e.into()))?
        {
            let text: &str = row.try_get("work_item")?;
            let Err(e) = crate::codec::decode_work_item(text) else {
                continue;
            };
            let queue: &str = row.try_get("queue")?;
            let attempts: i32 = row.try_get("attempt_count")?;
            found.push(UnreadableItem {
                queue: if queue == "worker" {
                    QueueKind::Worker
                } else {
                    QueueKind::Orchestrator
                },
                id: row.try_get("id")?,
                instance_id: row.try_get("instance_id")?,
                // The column is checked non-negative.
                attempt_count: u32::try_from(attempts).unwrap_or_default(),
                visible_at_ms: row.try_get("visible_at_ms")?,
                leased: row.try_get("leased")?,
                error: e.to_string(),
            });
        }
    }
    tx.rollback().await?;
    found.sort_by_key(|item| (item.queue, item.id));
    Ok(found)
}
