//! The management queries behind `ProviderAdmin`: listing, inspection,
//! metrics and orphans (deletion and pruning are in `deletion`; the trait's
//! facade is `provider_admin`). Each function is one procedure call, the
//! same statement text in both SQL modes.

use std::sync::atomic::{AtomicBool, Ordering};

use duroxide::providers::{ExecutionInfo, InstanceInfo, QueueDepths, SystemMetrics};

use crate::codec;
use crate::error::{PostgresProviderError, Result};
use crate::schema::SchemaName;
use crate::sql::{Sql, statements};
use crate::store::Store;

statements! {
    /// Statements of the management API.
    pub(crate) struct AdminSql {
        /// Warm the tenant's connection ([`crate::warm_up`]).
        warm_up = "SELECT {{schema}}.warm_up{{suffix}}()",
        /// All instance ids.
        list_instances = "SELECT instance_id FROM {{schema}}.list_instances{{suffix}}()",
        /// Instance ids by current status.
        list_by_status = "SELECT instance_id FROM {{schema}}.list_instances_by_status{{suffix}}($1)",
        /// Execution ids of an instance.
        list_executions = "SELECT execution_id FROM {{schema}}.list_executions{{suffix}}($1)",
        /// Highest execution id.
        latest_execution = "SELECT * FROM {{schema}}.latest_execution_id{{suffix}}($1)",
        /// Instance metadata.
        instance_info = "SELECT * FROM {{schema}}.get_instance_info{{suffix}}($1)",
        /// Execution metadata.
        execution_info = "SELECT * FROM {{schema}}.get_execution_info{{suffix}}($1, $2)",
        /// System-wide counts.
        metrics = "SELECT * FROM {{schema}}.get_system_metrics{{suffix}}()",
        /// Queue depths.
        queue_depths = "SELECT * FROM {{schema}}.get_queue_depths{{suffix}}()",
        /// Direct children.
        children = "SELECT instance_id FROM {{schema}}.list_children{{suffix}}($1)",
        /// Parent of an instance.
        parent = "SELECT parent_instance_id FROM {{schema}}.get_parent_id{{suffix}}($1)",
        /// Instances with parked messages.
        orphans = "SELECT * FROM {{schema}}.list_orphaned_instances{{suffix}}($1)",
    }
}

/// An instance id that messages were sent to but that has not started (see
/// [`crate::PostgresProvider::orphaned_instances`]).
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
pub(crate) struct MetricsRow {
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

/// Instances messages are parked for, oldest first, at most `limit`.
pub(crate) async fn orphaned_instances(s: &Store, limit: u32) -> Result<Vec<OrphanedInstance>> {
    Ok(sqlx::query_as(&s.sql.admin.orphans)
        .bind(i64::from(limit))
        .fetch_all(s.bounded())
        .await?)
}

/// The ids a listing statement returns, with its instance argument if any.
async fn ids(s: &Store, sql: &Sql, arg: Option<&str>) -> Result<Vec<String>> {
    let mut query = sqlx::query_scalar(sql);
    if let Some(arg) = arg {
        query = query.bind(codec::check_text("instance", arg)?);
    }
    Ok(query.fetch_all(s.bounded()).await?)
}

/// Every instance id.
pub(crate) async fn list_instances(s: &Store) -> Result<Vec<String>> {
    ids(s, &s.sql.admin.list_instances, None).await
}

/// The ids of the instances whose current status is `status`.
pub(crate) async fn list_by_status(s: &Store, status: &str) -> Result<Vec<String>> {
    ids(s, &s.sql.admin.list_by_status, Some(status)).await
}

/// The direct children of an instance.
pub(crate) async fn children(s: &Store, instance: &str) -> Result<Vec<String>> {
    ids(s, &s.sql.admin.children, Some(instance)).await
}

/// One instance's metadata; `NOT_FOUND` if it does not exist.
pub(crate) async fn instance_info(s: &Store, instance: &str) -> Result<InstanceInfo> {
    let row = sqlx::query_as::<_, InstanceRow>(&s.sql.admin.instance_info)
        .bind(codec::check_text("instance", instance)?)
        .fetch_optional(s.bounded())
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

/// One execution's metadata; `NOT_FOUND` if it does not exist.
pub(crate) async fn execution_info(
    s: &Store,
    instance: &str,
    execution_id: u64,
) -> Result<ExecutionInfo> {
    let row = sqlx::query_as::<_, ExecutionRow>(&s.sql.admin.execution_info)
        .bind(codec::check_text("instance", instance)?)
        .bind(codec::to_i64("execution_id", execution_id)?)
        .fetch_optional(s.bounded())
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

/// System-wide counts.
pub(crate) async fn metrics(s: &Store) -> Result<SystemMetrics> {
    let row = s.driver.system_metrics(s).await?;
    Ok(SystemMetrics {
        total_instances: count("total_instances", row.total_instances)?,
        total_executions: count("total_executions", row.total_executions)?,
        running_instances: count("running_instances", row.running_instances)?,
        completed_instances: count("completed_instances", row.completed_instances)?,
        failed_instances: count("failed_instances", row.failed_instances)?,
        total_events: event_total(&s.schema, row.total_events),
    })
}

/// The event total, never below 0. It reads below 0 only when history that
/// was appended without being counted (by an earlier build's statements,
/// see docs/operations.md, "Upgrading to migration 0006") has been deleted
/// since: the deletes take off every event they delete, counted or not.
/// The metrics still answer, with 0, and the provider warns once per
/// process, naming the recount that puts the counts right.
fn event_total(schema: &SchemaName, total: i64) -> u64 {
    static WARNED: AtomicBool = AtomicBool::new(false);
    u64::try_from(total).unwrap_or_else(|_| {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                schema = %schema,
                total,
                "the event total reads below 0 (history written without being counted, \
                 by an earlier build, was deleted since); get_system_metrics reports 0 \
                 until the tenant's events are recounted as docs/operations.md shows \
                 (\"Upgrading to migration 0006\", \"recount tenant_a's events\")"
            );
        }
        0
    })
}

/// Visible messages per queue.
pub(crate) async fn queue_depths(s: &Store) -> Result<QueueDepths> {
    let (orchestrator, worker): (i64, i64) = sqlx::query_as(&s.sql.admin.queue_depths)
        .fetch_one(s.bounded())
        .await?;
    Ok(QueueDepths {
        orchestrator_queue: usize::try_from(orchestrator).unwrap_or_default(),
        worker_queue: usize::try_from(worker).unwrap_or_default(),
        timer_queue: 0,
    })
}

/// The execution ids of an instance.
pub(crate) async fn execution_ids(s: &Store, instance: &str) -> Result<Vec<u64>> {
    let ids: Vec<i64> = sqlx::query_scalar(&s.sql.admin.list_executions)
        .bind(codec::check_text("instance", instance)?)
        .fetch_all(s.bounded())
        .await?;
    ids.into_iter()
        .map(|id| count("execution_id", id))
        .collect()
}

/// The highest execution id of an instance.
pub(crate) async fn latest_execution(s: &Store, instance: &str) -> Result<u64> {
    let id: i64 = sqlx::query_scalar(&s.sql.admin.latest_execution)
        .bind(codec::check_text("instance", instance)?)
        .fetch_one(s.bounded())
        .await?;
    count("execution_id", id)
}

/// The parent of an instance (`None` for a root); `NOT_FOUND` if it does not exist.
pub(crate) async fn parent(s: &Store, instance: &str) -> Result<Option<String>> {
    let parent: Option<Option<String>> = sqlx::query_scalar(&s.sql.admin.parent)
        .bind(codec::check_text("instance", instance)?)
        .fetch_optional(s.bounded())
        .await?;
    parent.ok_or_else(|| not_found(format!("Instance {instance} not found")))
}
