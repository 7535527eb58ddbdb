//! `ProviderAdmin`: listing, inspection, metrics (here) and deletion and
//! pruning (delegated to `deletion`). Each method is one procedure call.

use duroxide::Event;
use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};

use crate::codec;
use crate::deletion;
use crate::error::{PostgresProviderError, Result};
use crate::history;
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements of the management API.
    pub(crate) struct AdminSql {
        /// All instance ids.
        list_instances = "SELECT instance_id FROM {{schema}}.list_instances()",
        /// Instance ids by current status.
        list_by_status = "SELECT instance_id FROM {{schema}}.list_instances_by_status($1)",
        /// Execution ids of an instance.
        list_executions = "SELECT execution_id FROM {{schema}}.list_executions($1)",
        /// Highest execution id.
        latest_execution = "SELECT * FROM {{schema}}.latest_execution_id($1)",
        /// Instance metadata.
        instance_info = "SELECT * FROM {{schema}}.get_instance_info($1)",
        /// Execution metadata.
        execution_info = "SELECT * FROM {{schema}}.get_execution_info($1, $2)",
        /// System-wide counts.
        metrics = "SELECT * FROM {{schema}}.get_system_metrics()",
        /// Queue depths.
        queue_depths = "SELECT * FROM {{schema}}.get_queue_depths()",
        /// Direct children.
        children = "SELECT instance_id FROM {{schema}}.list_children($1)",
        /// Parent of an instance.
        parent = "SELECT parent_instance_id FROM {{schema}}.get_parent_id($1)",
        /// Instances with parked messages.
        orphans = "SELECT * FROM {{schema}}.list_orphaned_instances($1)",
    }
}

/// An instance id that messages were sent to but that has not started (see
/// [`PostgresProvider::orphaned_instances`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
#[non_exhaustive]
pub struct OrphanedInstance {
    /// The instance id the messages name.
    pub instance_id: String,
    /// How many messages are parked for it.
    pub messages: i64,
    /// When the first of them was found without a started instance
    /// (milliseconds since the Unix epoch, database clock).
    pub orphan_since_ms: i64,
    /// When the last of them will be dropped unless the instance starts first.
    pub drop_at_ms: i64,
}

/// The row `get_instance_info` returns.
#[derive(sqlx::FromRow)]
struct InstanceRow {
    instance_id: String,
    orchestration_name: String,
    orchestration_version: Option<String>,
    current_execution_id: i64,
    status: String,
    output: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    parent_instance_id: Option<String>,
}

/// The row `get_execution_info` returns.
#[derive(sqlx::FromRow)]
struct ExecutionRow {
    execution_id: i64,
    status: String,
    output: Option<String>,
    started_at_ms: i64,
    completed_at_ms: Option<i64>,
    event_count: i64,
}

/// The row `get_system_metrics` returns.
#[derive(sqlx::FromRow)]
struct MetricsRow {
    total_instances: i64,
    total_executions: i64,
    running_instances: i64,
    completed_instances: i64,
    failed_instances: i64,
    total_events: i64,
}

fn count(field: &str, n: i64) -> Result<u64> {
    codec::to_u64(field, n)
}

fn not_found(what: String) -> PostgresProviderError {
    PostgresProviderError::rejected(crate::sqlstate::NOT_FOUND, what)
}

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
        Ok(sqlx::query_as(&self.sql.admin.orphans)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn ids(&self, sql: &str, arg: Option<&str>) -> Result<Vec<String>> {
        let mut query = sqlx::query_scalar(sql);
        if let Some(arg) = arg {
            query = query.bind(codec::check_text("instance", arg)?);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn instance_info(&self, instance: &str) -> Result<InstanceInfo> {
        let row = sqlx::query_as::<_, InstanceRow>(&self.sql.admin.instance_info)
            .bind(codec::check_text("instance", instance)?)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found(format!("Instance {instance} not found")))?;
        Ok(InstanceInfo {
            instance_id: row.instance_id,
            orchestration_name: row.orchestration_name,
            orchestration_version: row
                .orchestration_version
                .unwrap_or_else(|| "unknown".to_string()),
            current_execution_id: count("current_execution_id", row.current_execution_id)?,
            status: row.status,
            output: row.output,
            created_at: count("created_at", row.created_at_ms)?,
            updated_at: count("updated_at", row.updated_at_ms)?,
            parent_instance_id: row.parent_instance_id,
        })
    }

    async fn execution_info(&self, instance: &str, execution_id: u64) -> Result<ExecutionInfo> {
        let row = sqlx::query_as::<_, ExecutionRow>(&self.sql.admin.execution_info)
            .bind(codec::check_text("instance", instance)?)
            .bind(codec::to_i64("execution_id", execution_id)?)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                not_found(format!(
                    "Execution {execution_id} not found for instance {instance}"
                ))
            })?;
        Ok(ExecutionInfo {
            execution_id: count("execution_id", row.execution_id)?,
            status: row.status,
            output: row.output,
            started_at: count("started_at", row.started_at_ms)?,
            completed_at: row
                .completed_at_ms
                .map(|t| count("completed_at", t))
                .transpose()?,
            event_count: usize::try_from(row.event_count).unwrap_or_default(),
        })
    }

    async fn metrics(&self) -> Result<SystemMetrics> {
        let row = sqlx::query_as::<_, MetricsRow>(&self.sql.admin.metrics)
            .fetch_one(&self.pool)
            .await?;
        Ok(SystemMetrics {
            total_instances: count("total_instances", row.total_instances)?,
            total_executions: count("total_executions", row.total_executions)?,
            running_instances: count("running_instances", row.running_instances)?,
            completed_instances: count("completed_instances", row.completed_instances)?,
            failed_instances: count("failed_instances", row.failed_instances)?,
            total_events: count("total_events", row.total_events)?,
        })
    }

    async fn queue_depths(&self) -> Result<QueueDepths> {
        let (orchestrator, worker): (i64, i64) = sqlx::query_as(&self.sql.admin.queue_depths)
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueDepths {
            orchestrator_queue: usize::try_from(orchestrator).unwrap_or_default(),
            worker_queue: usize::try_from(worker).unwrap_or_default(),
            timer_queue: 0,
        })
    }

    async fn execution_ids(&self, instance: &str) -> Result<Vec<u64>> {
        let ids: Vec<i64> = sqlx::query_scalar(&self.sql.admin.list_executions)
            .bind(codec::check_text("instance", instance)?)
            .fetch_all(&self.pool)
            .await?;
        ids.into_iter()
            .map(|id| count("execution_id", id))
            .collect()
    }

    async fn latest_execution(&self, instance: &str) -> Result<u64> {
        let id: i64 = sqlx::query_scalar(&self.sql.admin.latest_execution)
            .bind(codec::check_text("instance", instance)?)
            .fetch_one(&self.pool)
            .await?;
        count("execution_id", id)
    }

    async fn parent(&self, instance: &str) -> Result<Option<String>> {
        let parent: Option<Option<String>> = sqlx::query_scalar(&self.sql.admin.parent)
            .bind(codec::check_text("instance", instance)?)
            .fetch_optional(&self.pool)
            .await?;
        parent.ok_or_else(|| not_found(format!("Instance {instance} not found")))
    }
}

#[async_trait::async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        self.observe(
            "list_instances",
            self.ids(&self.sql.admin.list_instances, None),
        )
        .await
    }

    async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ProviderError> {
        self.observe(
            "list_instances_by_status",
            self.ids(&self.sql.admin.list_by_status, Some(status)),
        )
        .await
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        self.observe("list_executions", self.execution_ids(instance))
            .await
    }

    async fn read_history_with_execution_id(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.observe(
            "read_history_with_execution_id",
            history::read_events(self, instance, Some(execution_id)),
        )
        .await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.observe("read_history", history::read_events(self, instance, None))
            .await
    }

    async fn latest_execution_id(&self, instance: &str) -> Result<u64, ProviderError> {
        self.observe("latest_execution_id", self.latest_execution(instance))
            .await
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        self.observe("get_instance_info", self.instance_info(instance))
            .await
    }

    async fn get_execution_info(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        self.observe(
            "get_execution_info",
            self.execution_info(instance, execution_id),
        )
        .await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        self.observe("get_system_metrics", self.metrics()).await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        self.observe("get_queue_depths", self.queue_depths()).await
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        self.observe(
            "list_children",
            self.ids(&self.sql.admin.children, Some(instance_id)),
        )
        .await
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        self.observe("get_parent_id", self.parent(instance_id))
            .await
    }

    // Deletion and pruning live in `deletion`; these are one-line delegations.
    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        self.observe(
            "delete_instances_atomic",
            deletion::delete_instances_atomic(self, ids, force),
        )
        .await
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        self.observe(
            "delete_instance_bulk",
            deletion::delete_instance_bulk(self, &filter),
        )
        .await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.observe(
            "prune_executions",
            deletion::prune_executions(self, instance_id, &options),
        )
        .await
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.observe(
            "prune_executions_bulk",
            deletion::prune_executions_bulk(self, &filter, &options),
        )
        .await
    }
}
