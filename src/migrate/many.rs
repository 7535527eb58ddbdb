//! [`inspect`](super::inspect) of many schemas in a few round trips: on a
//! server holding thousands of tenants, reading them one at a time costs
//! three round trips and a fresh statement each.
//!
//! A batch of schemas is read with two statements, each the single-schema
//! query once per schema, tagged with the schema's name (`tagged.sql`) and
//! joined with `UNION ALL` (`union_all.sql`): first what the role may do in
//! each (`exists.sql`), then the bookkeeping of those it may read
//! (`state.sql`). A schema dropped between the two makes the second fail;
//! the batch is then read one schema at a time, as is a schema the role
//! reads only through its `schema_state()` function.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Row};

use super::state::{Access, State, read_state_as};
use super::{EXISTS, PIN, STATE, SchemaStatus};
use crate::error::{PostgresProviderError, Result};
use crate::schema::SchemaName;

/// One schema's part of a many-schema statement.
const TAGGED: &str = include_str!("../../migrate/tagged.sql");
/// Joins two parts.
const UNION_ALL: &str = include_str!("../../migrate/union_all.sql");
/// Where a part's query goes in [`TAGGED`].
const PART_MARKER: &str = "{{part}}";

/// Schemas per statement. Planning a `UNION ALL` grows faster than its
/// branches: on a server of 2,000 tenants, 200 schemas' `state.sql` took
/// 266 ms in one statement and 126 ms in eight of 25 (115 ms in twenty of
/// 10), and each schema alone 184 ms (docs/benchmarks-history.md, "A
/// tenant on a crowded server").
pub(crate) const BATCH: usize = 25;

/// `part`, a single-schema query without its final semicolon, once for each
/// of `schemas`, each row tagged with the schema's name (a first column,
/// `schema`), as one statement.
pub(crate) fn tagged_union(part: &str, schemas: &[&SchemaName]) -> String {
    let tagged = TAGGED.replace(PART_MARKER, part);
    schemas
        .iter()
        .map(|schema| schema.render(&tagged))
        .collect::<Vec<_>>()
        .join(UNION_ALL)
}

/// [`inspect`](super::inspect) of each of `schemas`, in their order, on one
/// connection: two round trips per [`BATCH`] schemas. One schema's refusal
/// (too new, edited) is its own result and does not affect the others; a
/// batch in which a schema was dropped meanwhile is read one schema at a
/// time.
///
/// # Errors
/// Database errors of a batch other than a schema or table gone missing.
pub(crate) async fn inspect_many(
    conn: &mut PgConnection,
    schemas: &[SchemaName],
) -> Result<Vec<Result<SchemaStatus>>> {
    let mut statuses = Vec::with_capacity(schemas.len());
    for batch in schemas.chunks(BATCH) {
        match inspect_batch(conn, batch).await {
            Ok(batch_statuses) => statuses.extend(batch_statuses),
            Err(e) if e.met_ddl_on_a_schema() => {
                tracing::debug!(error = %e, "a schema of the batch was dropped or changed while read; reading them one at a time");
                for schema in batch {
                    let mut status = super::inspect_on(conn, schema).await;
                    // A read of one schema can meet the same DDL again.
                    if status.as_ref().is_err_and(|e| e.is_deadlock()) {
                        status = super::inspect_on(conn, schema).await;
                    }
                    statuses.push(status);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(statuses)
}

async fn inspect_batch(
    conn: &mut PgConnection,
    batch: &[SchemaName],
) -> Result<Vec<Result<SchemaStatus>>> {
    let all: Vec<&SchemaName> = batch.iter().collect();
    let exists = format!("{PIN}{}", tagged_union(EXISTS, &all));
    let mut access = HashMap::new();
    for row in conn.fetch_all(crate::sql::audited(&exists)).await? {
        let schema: String = row.try_get("schema")?;
        access.insert(schema, Access::from_row(&row)?);
    }
    let readable: Vec<&SchemaName> = batch
        .iter()
        .filter(|s| {
            access
                .get(s.as_str())
                .is_some_and(|a| a.migrated && a.can_read && a.ours(s).is_ok())
        })
        .collect();
    let mut rows: HashMap<String, Vec<PgRow>> = HashMap::new();
    if !readable.is_empty() {
        let state = format!("{PIN}{}", tagged_union(STATE, &readable));
        for row in conn.fetch_all(crate::sql::audited(&state)).await? {
            let schema: String = row.try_get("schema")?;
            rows.entry(schema).or_default().push(row);
        }
    }
    let mut statuses = Vec::with_capacity(batch.len());
    for schema in batch {
        let status = match access.get(schema.as_str()) {
            None => Err(PostgresProviderError::decode("schema access", "no row")),
            Some(a) => match a.ours(schema) {
                Err(foreign) => Err(foreign),
                Ok(()) if !a.migrated => Ok(SchemaStatus::unmigrated()),
                Ok(()) if a.can_read => {
                    let schema_rows = rows.get(schema.as_str()).map_or(&[][..], Vec::as_slice);
                    State::from_rows(schema_rows).and_then(|state| state.status(schema))
                }
                Ok(()) => match read_state_as(conn, schema, a).await {
                    Ok(Some(state)) => state.status(schema),
                    Ok(None) => Ok(SchemaStatus::unmigrated()),
                    Err(e) => Err(e),
                },
            },
        };
        statuses.push(status);
    }
    Ok(statuses)
}
