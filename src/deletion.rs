//! Deletion and pruning: atomic tree deletes, bulk deletes, execution pruning.
//!
//! STUB: being implemented.

use duroxide::providers::{DeleteInstanceResult, InstanceFilter, PruneOptions, PruneResult};

use crate::error::{PgProviderError, Result};
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of deletion and pruning.
    pub(crate) struct DeletionSql {
    }
}

fn todo() -> PgProviderError {
    PgProviderError::invalid_input("deletion", "not implemented yet")
}

pub(crate) async fn delete_instances_atomic(
    _p: &PostgresProvider,
    _ids: &[String],
    _force: bool,
) -> Result<DeleteInstanceResult> {
    Err(todo())
}

pub(crate) async fn delete_instance_bulk(
    _p: &PostgresProvider,
    _filter: &InstanceFilter,
) -> Result<DeleteInstanceResult> {
    Err(todo())
}

pub(crate) async fn prune_executions(
    _p: &PostgresProvider,
    _instance_id: &str,
    _options: &PruneOptions,
) -> Result<PruneResult> {
    Err(todo())
}

pub(crate) async fn prune_executions_bulk(
    _p: &PostgresProvider,
    _filter: &InstanceFilter,
    _options: &PruneOptions,
) -> Result<PruneResult> {
    Err(todo())
}
