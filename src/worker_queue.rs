//! Worker queue and sessions: enqueue, fetch with tag and session routing,
//! ack with completion, abandon, renew; session renewal and cleanup.
//!
//! STUB: being implemented.

use std::time::Duration;

use duroxide::providers::{SessionFetchConfig, TagFilter, WorkItem};

use crate::error::{PgProviderError, Result};
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the worker queue and sessions.
    pub(crate) struct WorkerSql {
    }
}

fn todo() -> PgProviderError {
    PgProviderError::invalid_input("worker_queue", "not implemented yet")
}

pub(crate) async fn enqueue(_p: &PostgresProvider, _item: &WorkItem) -> Result<()> {
    Err(todo())
}

pub(crate) async fn fetch(
    _p: &PostgresProvider,
    _lock_timeout: Duration,
    _poll_timeout: Duration,
    _session: Option<&SessionFetchConfig>,
    _tag_filter: &TagFilter,
) -> Result<Option<(WorkItem, String, u32)>> {
    Err(todo())
}

pub(crate) async fn ack(
    _p: &PostgresProvider,
    _token: &str,
    _completion: Option<&WorkItem>,
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn renew(
    _p: &PostgresProvider,
    _token: &str,
    _extend_for: Duration,
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn abandon(
    _p: &PostgresProvider,
    _token: &str,
    _delay: Option<Duration>,
    _ignore_attempt: bool,
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn renew_sessions(
    _p: &PostgresProvider,
    _owner_ids: &[&str],
    _extend_for: Duration,
    _idle_timeout: Duration,
) -> Result<usize> {
    Err(todo())
}

pub(crate) async fn cleanup_orphaned_sessions(
    _p: &PostgresProvider,
    _idle_timeout: Duration,
) -> Result<usize> {
    Err(todo())
}
