//! The `ProviderAdmin` half of the facade: one-line delegations to the
//! management queries (`admin`), history reads (`history`) and deletion and
//! pruning (`deletion`), each run through the store's `observe` (span,
//! metrics, error mapping), plus [`PostgresProvider::orphaned_instances`].
//! Each waits out a lock on its tenant's tables off the connection
//! (`Store::waiting_out_locks`).

use duroxide::Event;
use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};

use crate::admin::{self, OrphanedInstance};
use crate::error::Result;
use crate::provider::PostgresProvider;
use crate::{deletion, history};

impl PostgresProvider {
    /// Instances that messages are parked for, oldest first, at most `limit`:
    /// events, cancellations or completions sent to an instance id that has
    /// not started (never started, or deleted). They are delivered with the
    /// instance's first turn if it starts within
    /// [`PostgresOptions::orphan_retention`](crate::PostgresOptions::orphan_retention),
    /// and dropped after it. They also count in `get_queue_depths`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn orphaned_instances(&self, limit: u32) -> Result<Vec<OrphanedInstance>> {
        let s = &self.store;
        s.waiting_out_locks(|| admin::orphaned_instances(s, limit))
            .await
    }
}

#[async_trait::async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        let s = &self.store;
        s.observe(
            "list_instances",
            s.waiting_out_locks(|| admin::list_instances(s)),
        )
        .await
    }

    async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ProviderError> {
        let s = &self.store;
        s.observe(
            "list_instances_by_status",
            s.waiting_out_locks(|| admin::list_by_status(s, status)),
        )
        .await
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        let s = &self.store;
        s.observe(
            "list_executions",
            s.waiting_out_locks(|| admin::execution_ids(s, instance)),
        )
        .await
    }

    async fn read_history_with_execution_id(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        let s = &self.store;
        s.observe(
            "read_history_with_execution_id",
            s.waiting_out_locks(|| history::read_events(s, instance, Some(execution_id))),
        )
        .await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        let s = &self.store;
        s.observe(
            "read_history",
            s.waiting_out_locks(|| history::read_events(s, instance, None)),
        )
        .await
    }

    async fn latest_execution_id(&self, instance: &str) -> Result<u64, ProviderError> {
        let s = &self.store;
        s.observe(
            "latest_execution_id",
            s.waiting_out_locks(|| admin::latest_execution(s, instance)),
        )
        .await
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        let s = &self.store;
        s.observe(
            "get_instance_info",
            s.waiting_out_locks(|| admin::instance_info(s, instance)),
        )
        .await
    }

    async fn get_execution_info(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        let s = &self.store;
        s.observe(
            "get_execution_info",
            s.waiting_out_locks(|| admin::execution_info(s, instance, execution_id)),
        )
        .await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        let s = &self.store;
        s.observe(
            "get_system_metrics",
            s.waiting_out_locks(|| admin::metrics(s)),
        )
        .await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        let s = &self.store;
        s.observe(
            "get_queue_depths",
            s.waiting_out_locks(|| admin::queue_depths(s)),
        )
        .await
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        let s = &self.store;
        s.observe(
            "list_children",
            s.waiting_out_locks(|| admin::children(s, instance_id)),
        )
        .await
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        let s = &self.store;
        s.observe(
            "get_parent_id",
            s.waiting_out_locks(|| admin::parent(s, instance_id)),
        )
        .await
    }

    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        let s = &self.store;
        s.observe(
            "delete_instances_atomic",
            s.waiting_out_locks(|| deletion::delete_instances_atomic(s, ids, force)),
        )
        .await
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        let s = &self.store;
        s.observe(
            "delete_instance_bulk",
            s.waiting_out_locks(|| deletion::delete_instance_bulk(s, &filter)),
        )
        .await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let s = &self.store;
        s.observe(
            "prune_executions",
            s.waiting_out_locks(|| deletion::prune_executions(s, instance_id, &options)),
        )
        .await
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let s = &self.store;
        s.observe(
            "prune_executions_bulk",
            s.waiting_out_locks(|| deletion::prune_executions_bulk(s, &filter, &options)),
        )
        .await
    }
}
