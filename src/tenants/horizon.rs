//! What holds back the cleanup of dead rows in the database: the one
//! reading every tenant shares.
//!
//! Both queues delete each message they deliver. PostgreSQL can remove a
//! deleted row (in vacuum, or by marking its index entry dead during a scan)
//! only once no snapshot can still see it. A session holding an old
//! snapshot anywhere in the database (a transaction left open, a long
//! report, `pg_dump`), a forgotten prepared transaction, a replication slot
//! or a standby's feedback therefore leaves every delivered message of every
//! tenant in the queues' indexes, and each fetch walks over them: the longer
//! it is held, the slower every fetch (docs/operations.md, "Long
//! transactions"). [`cleanup_horizon`] names the holder.

use std::fmt;
use std::time::Duration;

use sqlx::{PgPool, Row};

use crate::error::{PostgresProviderError, Result};

const CLEANUP_HORIZON: &str = include_str!("../../tenants/cleanup_horizon.sql");

/// What holds a snapshot that keeps dead rows in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolderKind {
    /// A session (`pg_stat_activity`); the holder is its process id.
    Session,
    /// A prepared transaction (`pg_prepared_xacts`); the holder is its
    /// global id.
    PreparedTransaction,
    /// A physical replication slot (`pg_replication_slots`); the holder is
    /// its name.
    ReplicationSlot,
    /// A standby's `hot_standby_feedback` (`pg_stat_replication`); the
    /// holder is its WAL sender's process id.
    Standby,
}

impl fmt::Display for HolderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderKind::Session => "session",
            HolderKind::PreparedTransaction => "prepared transaction",
            HolderKind::ReplicationSlot => "replication slot",
            HolderKind::Standby => "standby",
        })
    }
}

/// The oldest snapshot in the database, other than the caller's own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupHolder {
    /// What holds it.
    pub kind: HolderKind,
    /// Which one: a process id, a prepared transaction's id or a slot name.
    pub holder: String,
    /// The role it runs as, where there is one.
    pub role: Option<String>,
    /// Its `application_name`, where there is one.
    pub application: Option<String>,
    /// Its state (`idle in transaction`, `active`, `prepared`, ...).
    pub state: Option<String>,
    /// Transactions begun in the cluster since its snapshot was taken.
    pub transactions_behind: u64,
    /// How long its transaction has been open, where the server records it
    /// (sessions and prepared transactions).
    pub held_for: Option<Duration>,
}

/// The session, prepared transaction, replication slot or standby holding
/// the oldest snapshot in the database `pool` connects to (the caller's own
/// connection left out), or `None` when nothing holds one. Any role sees
/// every session's snapshot, but of another role's session only a member
/// of that role, `pg_read_all_stats` or a superuser sees its state and how
/// long it has been open (`state` and `held_for` are `None` otherwise), as
/// in `pg_stat_activity`.
///
/// # Errors
/// Database errors.
pub async fn cleanup_horizon(pool: &PgPool) -> Result<Option<CleanupHolder>> {
    let Some(row) = sqlx::query(CLEANUP_HORIZON).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind")?;
    let kind = match kind.as_str() {
        "session" => HolderKind::Session,
        "prepared transaction" => HolderKind::PreparedTransaction,
        "replication slot" => HolderKind::ReplicationSlot,
        "standby" => HolderKind::Standby,
        other => {
            return Err(PostgresProviderError::decode(
                "kind",
                format!("unknown holder kind {other:?}"),
            ));
        }
    };
    let behind: i64 = row.try_get("transactions_behind")?;
    let held_ms: Option<i64> = row.try_get("held_ms")?;
    Ok(Some(CleanupHolder {
        kind,
        holder: row.try_get("holder")?,
        role: row.try_get("role")?,
        application: row
            .try_get::<Option<String>, _>("application")?
            .filter(|a| !a.is_empty()),
        state: row.try_get("state")?,
        transactions_behind: u64::try_from(behind).unwrap_or(0),
        held_for: held_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }))
}
