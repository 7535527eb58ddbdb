//! `ProviderAdmin`: listing, inspection, metrics, deletion and pruning.
//!
//! STUB: being implemented.

use duroxide::Event;
use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};

use crate::deletion;
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the management API.
    pub(crate) struct AdminSql {
    }
}

fn todo(op: &str) -> ProviderError {
    ProviderError::permanent(op, "not implemented yet")
}

#[async_trait::async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        Err(todo("list_instances"))
    }
    async fn list_instances_by_status(&self, _status: &str) -> Result<Vec<String>, ProviderError> {
        Err(todo("list_instances_by_status"))
    }
    async fn list_executions(&self, _instance: &str) -> Result<Vec<u64>, ProviderError> {
        Err(todo("list_executions"))
    }
    async fn read_history_with_execution_id(
        &self,
        _instance: &str,
        _execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        Err(todo("read_history_with_execution_id"))
    }
    async fn read_history(&self, _instance: &str) -> Result<Vec<Event>, ProviderError> {
        Err(todo("read_history"))
    }
    async fn latest_execution_id(&self, _instance: &str) -> Result<u64, ProviderError> {
        Err(todo("latest_execution_id"))
    }
    async fn get_instance_info(&self, _instance: &str) -> Result<InstanceInfo, ProviderError> {
        Err(todo("get_instance_info"))
    }
    async fn get_execution_info(
        &self,
        _instance: &str,
        _execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        Err(todo("get_execution_info"))
    }
    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        Err(todo("get_system_metrics"))
    }
    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        Err(todo("get_queue_depths"))
    }
    async fn list_children(&self, _instance_id: &str) -> Result<Vec<String>, ProviderError> {
        Err(todo("list_children"))
    }
    async fn get_parent_id(&self, _instance_id: &str) -> Result<Option<String>, ProviderError> {
        Err(todo("get_parent_id"))
    }
    // Deletion and pruning live in `deletion`; these are one-line delegations.
    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        deletion::delete_instances_atomic(self, ids, force)
            .await
            .map_err(|e| e.into_provider_error("delete_instances_atomic"))
    }
    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        deletion::delete_instance_bulk(self, &filter)
            .await
            .map_err(|e| e.into_provider_error("delete_instance_bulk"))
    }
    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        deletion::prune_executions(self, instance_id, &options)
            .await
            .map_err(|e| e.into_provider_error("prune_executions"))
    }
    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        deletion::prune_executions_bulk(self, &filter, &options)
            .await
            .map_err(|e| e.into_provider_error("prune_executions_bulk"))
    }
}
