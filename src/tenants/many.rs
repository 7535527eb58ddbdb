//! Many tenants' status in a few round trips ([`super::status_all`],
//! [`super::inspect_all`]): the schemas' bookkeeping through
//! [`migrate::inspect_many`], then the queues of the migrated ones,
//! [`migrate::BATCH`] schemas per statement (`tenants/queue_stats.sql` once
//! per schema, tagged with its name), on one connection.

use std::collections::HashMap;

use sqlx::{Executor, PgConnection, Row};

use super::{
    QUEUE_STATS, QueueStats, READ_BOUND, TenantOutcome, TenantStatus, is_tenant, queue_stats,
};
use crate::error::Result;
use crate::migrate::{self, SchemaStatus};
use crate::schema::SchemaName;

/// The status of each of `schemas` (found by `list`), leaving out those
/// that failed because they are no longer tenants.
pub(super) async fn inspect_listed(
    conn: &mut PgConnection,
    schemas: &[SchemaName],
) -> Result<Vec<TenantOutcome<SchemaStatus>>> {
    let statuses = migrate::inspect_many(conn, schemas).await?;
    let mut outcomes = Vec::with_capacity(schemas.len());
    for (schema, result) in schemas.iter().zip(statuses) {
        if result.is_err() && !still_a_tenant(conn, schema).await {
            continue;
        }
        outcomes.push(TenantOutcome {
            schema: schema.clone(),
            result,
        });
    }
    Ok(outcomes)
}

/// [`inspect_listed`] with the queues of every fully migrated tenant.
pub(super) async fn status_of(
    conn: &mut PgConnection,
    schemas: &[SchemaName],
) -> Result<Vec<TenantOutcome<TenantStatus>>> {
    let inspected = inspect_listed(conn, schemas).await?;
    let migrated: Vec<&SchemaName> = inspected
        .iter()
        .filter(|o| {
            o.result
                .as_ref()
                .is_ok_and(|s| s.applied_version.is_some() && s.pending_migrations == 0)
        })
        .map(|o| &o.schema)
        .collect();
    let mut queues = HashMap::new();
    for batch in migrated.chunks(migrate::BATCH) {
        queue_batch(conn, batch, &mut queues).await?;
    }
    let mut missing = migrate::relations::missing(conn, &migrated).await?;
    let mut outcomes = Vec::with_capacity(inspected.len());
    for TenantOutcome { schema, result } in inspected {
        let result = match (result, queues.remove(schema.as_str())) {
            (Ok(status), Some(Ok(stats))) => Ok(TenantStatus {
                schema: schema.clone(),
                status,
                queues: Some(stats),
                missing_relations: missing.remove(schema.as_str()).unwrap_or_default(),
            }),
            (Ok(_), Some(Err(e))) => Err(e),
            (Ok(status), None) => Ok(TenantStatus {
                schema: schema.clone(),
                status,
                queues: None,
                missing_relations: Vec::new(),
            }),
            (Err(e), _) => Err(e),
        };
        if result.is_err() && !still_a_tenant(conn, &schema).await {
            continue;
        }
        outcomes.push(TenantOutcome { schema, result });
    }
    Ok(outcomes)
}

/// The queues of `batch` into `queues`, by schema name: one statement, or
/// one per schema when a schema of the batch was dropped meanwhile, a drop
/// or migration of one deadlocked with the read, or another session held
/// one's table past the read's lock bound (it then fails, at most, alone).
async fn queue_batch(
    conn: &mut PgConnection,
    batch: &[&SchemaName],
    queues: &mut HashMap<String, Result<QueueStats>>,
) -> Result<()> {
    // Pinned as migrate's reads are, but waiting for a lock 2 s at most: a
    // tenant held exclusively is then read alone, and fails alone.
    let statement = format!(
        "{}{READ_BOUND}{}",
        migrate::PIN,
        migrate::tagged_union(QUEUE_STATS, batch)
    );
    let read: Result<Vec<(String, Result<QueueStats>)>> = async {
        let rows = conn.fetch_all(crate::sql::audited(&statement)).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("schema")?, super::queue_stats_of(row))))
            .collect()
    }
    .await;
    match read {
        Ok(rows) => queues.extend(rows),
        Err(e) if e.met_ddl_on_a_schema() || e.is_lock_timeout() => {
            tracing::debug!(error = %e, "a tenant of the batch was dropped, changed or locked while read; reading them one at a time");
            for schema in batch {
                let mut stats = queue_stats(conn, schema).await;
                // A read of one tenant can meet the same DDL again.
                if stats.as_ref().is_err_and(|e| e.is_deadlock()) {
                    stats = queue_stats(conn, schema).await;
                }
                queues.insert(schema.as_str().to_string(), stats);
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Whether `schema` still holds a tenant; when that cannot be read, it is
/// taken to (its failure is then reported, not hidden).
async fn still_a_tenant(conn: &mut PgConnection, schema: &SchemaName) -> bool {
    is_tenant(conn, schema).await.unwrap_or(true)
}
