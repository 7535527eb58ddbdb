//! Orchestrator queue: claim an instance with its messages and history,
//! commit a turn atomically, abandon, renew, enqueue.
//!
//! STUB: being implemented.

use std::time::Duration;

use duroxide::Event;
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, ScheduledActivityIdentifier,
    WorkItem,
};

use crate::error::{PgProviderError, Result};
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the orchestrator queue.
    pub(crate) struct OrchestrationSql {
    }
}

fn todo() -> PgProviderError {
    PgProviderError::invalid_input("orchestration_queue", "not implemented yet")
}

pub(crate) async fn fetch(
    _p: &PostgresProvider,
    _lock_timeout: Duration,
    _poll_timeout: Duration,
    _filter: Option<&DispatcherCapabilityFilter>,
) -> Result<Option<(OrchestrationItem, String, u32)>> {
    Err(todo())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn ack(
    _p: &PostgresProvider,
    _lock_token: &str,
    _execution_id: u64,
    _history_delta: &[Event],
    _worker_items: &[WorkItem],
    _orchestrator_items: &[WorkItem],
    _metadata: &ExecutionMetadata,
    _cancelled_activities: &[ScheduledActivityIdentifier],
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn abandon(
    _p: &PostgresProvider,
    _lock_token: &str,
    _delay: Option<Duration>,
    _ignore_attempt: bool,
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn renew(
    _p: &PostgresProvider,
    _lock_token: &str,
    _extend_for: Duration,
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn enqueue(
    _p: &PostgresProvider,
    _item: &WorkItem,
    _delay: Option<Duration>,
) -> Result<()> {
    Err(todo())
}
