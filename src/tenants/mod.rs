//! Tenant lifecycle: list the tenant schemas of a database with their state,
//! migrate or verify many at once, drop one, roll a schema back to inline
//! SQL by uninstalling its procedures, grant or revoke a least-privilege
//! runtime role, name what holds back the cleanup every tenant's queues
//! share ([`cleanup_horizon`]), and find the queued items this build cannot
//! decode ([`unreadable`]).
//!
//! A tenant is a schema holding this crate's `_duroxide_migrations`
//! bookkeeping table. Every function here takes a pool and works on any
//! tenant of it; none needs a [`PostgresProvider`](crate::PostgresProvider).
//!
//! ```no_run
//! use duroxide_postgres::{SqlMode, tenants};
//!
//! # async fn run(pool: sqlx::PgPool) -> duroxide_postgres::Result<()> {
//! let schemas = tenants::list(&pool).await?;
//! let outcomes = tenants::migrate_many(&pool, &schemas, SqlMode::StoredProcedures, |p| {
//!     eprintln!("{}/{} {}: {:?}", p.done, p.total, p.outcome.schema, p.outcome.result);
//! })
//! .await;
//! for tenant in tenants::status_all(&pool).await? {
//!     println!("{}: {:?}", tenant.schema, tenant.result.map(|t| t.queues));
//! }
//! # let _ = outcomes;
//! # Ok(())
//! # }
//! ```

mod horizon;
mod many;
mod roles;
mod script;
mod unreadable;

use std::time::Duration;

use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::config::SqlMode;
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::migrate::{self, SchemaStatus};
use crate::schema::SchemaName;

pub use horizon::{CleanupHolder, HolderKind, cleanup_horizon};
pub use roles::{RuntimeRights, grant_runtime_role, revoke_runtime_role, runtime_rights};
pub use script::install_script;
pub use unreadable::{QueueKind, UnreadableItem, unreadable};

const LIST: &str = include_str!("../../tenants/list.sql");
const QUEUE_STATS: &str = include_str!("../../tenants/queue_stats.sql");
const HAS_TABLE: &str = include_str!("../../tenants/has_table.sql");
const LOCK_TIMEOUT: &str = include_str!("../../tenants/lock_timeout.sql");
/// The bound on an operator's read of a tenant's queues, sent after
/// [`migrate::PIN`].
const READ_BOUND: &str = include_str!("../../tenants/read_bound.sql");
const FREEZE: &str = include_str!("../../tenants/freeze.sql");
const FOREIGN_OBJECTS: &str = include_str!("../../tenants/foreign_objects.sql");
const FUNCTIONS: &str = include_str!("../../tenants/functions.sql");
const RECORDED_PROCEDURES: &str = include_str!("../../tenants/recorded_procedures.sql");
const FORGET_PROCEDURES: &str = include_str!("../../tenants/forget_procedures.sql");
const DROP_SCHEMA: &str = include_str!("../../tenants/drop_schema.sql");

/// One tenant's queues and leases at one moment of the database clock.
///
/// A message is *visible* when it is due and not leased (never locked, or
/// its lease ran out); its age is how long it has been visible. A lease is
/// *live* while its `locked_until_ms` is in the future: an instance's turn
/// (`instance_locks`) or an activity (`worker_queue`). *Expired* leases are
/// those no dispatcher has taken over yet: a sign of a crashed or stalled
/// runtime when they pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Orchestration instances in the schema.
    pub instances: u64,
    /// Messages in the orchestrator queue, whatever their state.
    pub orchestrator_messages: u64,
    /// Of those, the visible ones.
    pub orchestrator_visible: u64,
    /// How long the oldest visible orchestrator message has been visible.
    pub orchestrator_oldest_visible: Option<Duration>,
    /// Orchestrator messages parked for an instance that has not started
    /// (see [`PostgresProvider::orphaned_instances`](crate::PostgresProvider::orphaned_instances)).
    pub parked_orphans: u64,
    /// Activities in the worker queue, whatever their state.
    pub worker_items: u64,
    /// Of those, the visible ones.
    pub worker_visible: u64,
    /// How long the oldest visible activity has been visible.
    pub worker_oldest_visible: Option<Duration>,
    /// Instances whose turn is leased to a dispatcher right now.
    pub live_instance_leases: u64,
    /// Activities leased to a worker right now.
    pub live_activity_leases: u64,
    /// Instance leases past their end, not yet taken over.
    pub expired_instance_leases: u64,
    /// Activity leases past their end, not yet taken over.
    pub expired_activity_leases: u64,
}

impl QueueStats {
    /// Live leases of both kinds: work a runtime is doing right now.
    pub fn live_leases(&self) -> u64 {
        self.live_instance_leases + self.live_activity_leases
    }

    /// Expired leases of both kinds.
    pub fn expired_leases(&self) -> u64 {
        self.expired_instance_leases + self.expired_activity_leases
    }

    /// The age of the oldest visible message of either queue.
    pub fn oldest_visible(&self) -> Option<Duration> {
        self.orchestrator_oldest_visible
            .max(self.worker_oldest_visible)
    }
}

/// What one tenant looks like: its schema against this build, and its
/// queues.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantStatus {
    /// The tenant's schema.
    pub schema: SchemaName,
    /// Applied version, pending migrations, missing or stale procedures:
    /// [`SchemaStatus::is_ready_for`] tells whether a provider in a given
    /// SQL mode can start on it.
    pub status: SchemaStatus,
    /// Queue depths and leases; `None` until every migration is applied.
    pub queues: Option<QueueStats>,
    /// The tables and indexes of the migrations
    /// ([`migrate::expected_relations`]) the schema lacks, or holds as
    /// invalid indexes (`"name (invalid)"`), as [`migrate::verify`] names
    /// them; empty when all are there, and until every migration is applied.
    pub missing_relations: Vec<String>,
}

/// The outcome of an operation on one schema of a many-schema call.
#[derive(Debug)]
#[non_exhaustive]
pub struct TenantOutcome<T> {
    /// The schema.
    pub schema: SchemaName,
    /// What happened to it.
    pub result: Result<T>,
}

/// Where a many-schema call is, handed to its progress callback after each
/// schema.
#[derive(Debug)]
#[non_exhaustive]
pub struct Progress<'a, T> {
    /// Schemas finished so far, this one included.
    pub done: usize,
    /// Schemas in the call.
    pub total: usize,
    /// The schema just finished.
    pub outcome: &'a TenantOutcome<T>,
}

/// What [`drop_tenant`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedTenant {
    /// The schema, now gone.
    pub schema: SchemaName,
    /// Its queues at the moment of the drop (`None` for a schema whose
    /// migrations were not all applied): with `force`, the leases and
    /// messages that were thrown away.
    pub queues: Option<QueueStats>,
}

/// The tenant schemas of the database `pool` connects to: those holding
/// this crate's `_duroxide_migrations` table, by name. A schema whose name
/// this crate would not accept (see [`SchemaName::new`]) is not one of ours
/// and is left out, as is one whose `_duroxide_migrations` another provider
/// keeps (duroxide-pg uses the name too).
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool) -> Result<Vec<SchemaName>> {
    let names: Vec<String> = sqlx::query_scalar(LIST)
        .bind(None::<&str>)
        .fetch_all(pool)
        .await?;
    Ok(names
        .iter()
        .filter_map(|name| match SchemaName::new(name) {
            Ok(schema) => Some(schema),
            Err(e) => {
                tracing::warn!(schema = %name, error = %e, "skipping a schema with an unusable name");
                None
            }
        })
        .collect())
}

/// The state of one schema: its migrations and procedures against this
/// build and, once migrated, its queues. A schema that does not exist
/// reports every migration pending.
///
/// Waits at most 2 s for a lock on the tenant's tables: one that another
/// session holds exclusively (a `VACUUM FULL`, a long migration, a `LOCK
/// TABLE`) fails the call with `55P03` instead of hanging it.
///
/// # Errors
/// Database errors, a schema this build must refuse (migrated by a newer
/// build, with an edited migration, or another provider's), or a table
/// held past the 2 s.
pub async fn status(pool: &PgPool, schema: &SchemaName) -> Result<TenantStatus> {
    let mut conn = pool.acquire().await?;
    let status = migrate::inspect_on(&mut conn, schema).await?;
    let (queues, missing_relations) =
        if status.applied_version.is_some() && status.pending_migrations == 0 {
            let missing = migrate::relations::missing(&mut conn, &[schema])
                .await?
                .remove(schema.as_str())
                .unwrap_or_default();
            (Some(queue_stats(&mut conn, schema).await?), missing)
        } else {
            (None, Vec::new())
        };
    Ok(TenantStatus {
        schema: schema.clone(),
        status,
        queues,
        missing_relations,
    })
}

/// [`status`] of every tenant [`list`] finds; one tenant's failure (say, a
/// schema a newer build migrated, or a table another session has held
/// locked for over 2 s) is reported in its outcome and does not stop the
/// others. A tenant dropped while the call runs is left out.
///
/// Reads the tenants in batches on one connection (three statements per
/// 25 tenants), so a server holding thousands of them answers in seconds.
///
/// # Errors
/// Database errors while listing.
pub async fn status_all(pool: &PgPool) -> Result<Vec<TenantOutcome<TenantStatus>>> {
    let schemas = list(pool).await?;
    let mut conn = pool.acquire().await?;
    many::status_of(&mut conn, &schemas).await
}

/// The [`SchemaStatus`] of every tenant [`list`] finds (what [`status_all`]
/// reports without the queues): one tenant's failure is reported in its
/// outcome and does not stop the others; a tenant dropped while the call
/// runs is left out. Reads the tenants in batches on one connection.
///
/// # Errors
/// Database errors while listing.
pub async fn inspect_all(pool: &PgPool) -> Result<Vec<TenantOutcome<SchemaStatus>>> {
    let schemas = list(pool).await?;
    let mut conn = pool.acquire().await?;
    many::inspect_listed(&mut conn, &schemas).await
}

/// Migrates each of `schemas` for `mode` (see [`migrate::migrate`]),
/// several at once ([`default_parallelism`] of the pool), calling `progress`
/// after each as it finishes. A schema that fails is reported in its
/// outcome; the others still run. Outcomes come back in the order of
/// `schemas`.
pub async fn migrate_many<F>(
    pool: &PgPool,
    schemas: &[SchemaName],
    mode: SqlMode,
    progress: F,
) -> Vec<TenantOutcome<()>>
where
    F: FnMut(Progress<'_, ()>),
{
    migrate_many_with(pool, schemas, mode, default_parallelism(pool), progress).await
}

/// How many schemas [`migrate_many`] migrates at once on `pool`: half its
/// connections, at least one and at most eight. Installing a tenant is bound
/// by the server's CPU, not its WAL flushes, and every installing backend
/// also processes the others' catalog invalidations: where creating files
/// is cheap, about the server's core count is fastest; more installers hide
/// a slow file system (see docs/benchmarks.md, "Provisioning").
pub fn default_parallelism(pool: &PgPool) -> usize {
    let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
    (connections / 2).clamp(1, 8)
}

/// [`migrate_many`] with `parallel` schemas at once (at least one). Each
/// migration holds one pool connection while it runs.
pub async fn migrate_many_with<F>(
    pool: &PgPool,
    schemas: &[SchemaName],
    mode: SqlMode,
    parallel: usize,
    mut progress: F,
) -> Vec<TenantOutcome<()>>
where
    F: FnMut(Progress<'_, ()>),
{
    let parallel = parallel.max(1);
    let mut results: Vec<Option<TenantOutcome<()>>> = schemas.iter().map(|_| None).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    let mut next = 0;
    let mut done = 0;
    loop {
        while running.len() < parallel && next < schemas.len() {
            let (pool, schema) = (pool.clone(), schemas[next].clone());
            let task = running.spawn(async move { migrate::migrate(&pool, &schema, mode).await });
            index_of.insert(task.id(), next);
            next += 1;
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(PostgresProviderError::Interrupted {
                    reason: format!("migration task: {e}"),
                }),
            ),
        };
        let Some(i) = index_of.remove(&id) else {
            continue;
        };
        done += 1;
        let outcome = TenantOutcome {
            schema: schemas[i].clone(),
            result,
        };
        progress(Progress {
            done,
            total: schemas.len(),
            outcome: &outcome,
        });
        results[i] = Some(outcome);
    }
    results.into_iter().flatten().collect()
}

/// Verifies each of `schemas` for `mode` (see [`migrate::verify`]) without
/// changing anything, calling `progress` after each. A schema that is not
/// ready has [`PostgresProviderError::SchemaNotReady`] in its outcome.
pub async fn verify_many<F>(
    pool: &PgPool,
    schemas: &[SchemaName],
    mode: SqlMode,
    progress: F,
) -> Vec<TenantOutcome<SchemaStatus>>
where
    F: FnMut(Progress<'_, SchemaStatus>),
{
    // In batches on one connection (see `status_all`), with one look for
    // missing tables and indexes for all of them; when that fails, one
    // schema at a time, each reporting its own failure.
    let (statuses, mut lacking) = match pool.acquire().await {
        Ok(mut conn) => {
            let statuses = migrate::inspect_many(&mut conn, schemas)
                .await
                .unwrap_or_default();
            let all: Vec<&SchemaName> = schemas.iter().collect();
            match migrate::relations::missing(&mut conn, &all).await {
                Ok(lacking) => (statuses, lacking),
                Err(_) => (Vec::new(), Default::default()),
            }
        }
        Err(_) => (Vec::new(), Default::default()),
    };
    let mut statuses = statuses.into_iter();
    for_each(schemas, progress, |schema| {
        let status = statuses.next();
        let lacks = lacking.remove(schema.as_str());
        async move {
            match (status, lacks) {
                (Some(status), lacks) => {
                    let status = migrate::ready_for(schema, status?, mode)?;
                    match lacks {
                        Some(relations) => Err(migrate::relations::lacks(schema, &relations)),
                        None => Ok(status),
                    }
                }
                (None, _) => migrate::verify(pool, schema, mode).await,
            }
        }
    })
    .await
}

async fn for_each<'s, T, F, Op, Fut>(
    schemas: &'s [SchemaName],
    mut progress: F,
    mut op: Op,
) -> Vec<TenantOutcome<T>>
where
    F: FnMut(Progress<'_, T>),
    Op: FnMut(&'s SchemaName) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut outcomes = Vec::with_capacity(schemas.len());
    for schema in schemas {
        let outcome = TenantOutcome {
            schema: schema.clone(),
            result: op(schema).await,
        };
        progress(Progress {
            done: outcomes.len() + 1,
            total: schemas.len(),
            outcome: &outcome,
        });
        outcomes.push(outcome);
    }
    outcomes
}

/// Drops a tenant: its schema with every table, row and function in it
/// (`tenants/drop_schema.sql`: each dropped `RESTRICT`, then the schema).
/// The crate creates no roles, so none is left.
///
/// Refused, with [`sqlstate::INVALID_STATE`], while the tenant has live
/// leases (a runtime is working on one of its instances or activities)
/// unless `force` is set; also when the schema holds objects this crate did
/// not create (so a user's tables never go with it), when an object of
/// another schema depends on the tenant's (a view over its tables, a
/// foreign key to them, a function taking their row type: named in the
/// error, and kept, force or not), or, unless `force` is
/// set, when its leases cannot be checked because its migrations are not all
/// applied. A schema that is no tenant is refused with
/// [`sqlstate::NOT_FOUND`]. The check and the drop happen in one transaction
/// holding the schema's tables, so no lease can be taken in between; it
/// waits at most 10 s for operations in flight and for a migration of the
/// same schema.
///
/// Providers of the tenant still alive must be dropped by the caller: they
/// would fail every operation from now on, and the pool's `LISTEN`
/// connection stops listening to the tenant's channel only when the last of
/// them is dropped. A provider that starts on the schema again (in
/// [`MigrationMode::Apply`](crate::MigrationMode::Apply)) recreates it empty.
///
/// A deadlock with an inline-SQL transaction of the tenant (it holds one
/// queue table and wants another the drop holds) costs that transaction or
/// the drop; a drop that loses is tried again, up to three times in all.
///
/// # Errors
/// The refusals above ([`PostgresProviderError::Rejected`]), a schema this build
/// must refuse, or database errors (a lock wait over 10 s among them).
pub async fn drop_tenant(pool: &PgPool, schema: &SchemaName, force: bool) -> Result<DroppedTenant> {
    let mut attempt = 1;
    loop {
        match drop_once(pool, schema, force).await {
            Err(e)
                if attempt < 3 && e.sqlstate().as_deref() == Some(sqlstate::DEADLOCK_DETECTED) =>
            {
                tracing::warn!(schema = %schema, attempt, "tenant drop lost a deadlock; trying again");
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// The error of a drop that met objects of other schemas depending on the
/// tenant's: a refusal naming them (the server's detail), or `e` itself.
fn built_on(schema: &SchemaName, e: sqlx::Error) -> PostgresProviderError {
    let sqlx::Error::Database(db) = &e else {
        return e.into();
    };
    if db.code().as_deref() != Some(sqlstate::DEPENDENT_OBJECTS_STILL_EXIST) {
        return e.into();
    }
    let detail = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .unwrap_or_else(|| db.message())
        .replace('\n', "; ");
    PostgresProviderError::rejected(
        sqlstate::INVALID_STATE,
        format!(
            "schema \"{schema}\" has objects in other schemas built on it ({detail}); \
             nothing dropped: drop or change them first"
        ),
    )
}

async fn drop_once(pool: &PgPool, schema: &SchemaName, force: bool) -> Result<DroppedTenant> {
    let mut tx = pool.begin_with(crate::pooler::READ_COMMITTED).await?;
    lock_schema(&mut tx, schema).await?;
    if !is_tenant(&mut tx, schema).await? {
        return Err(not_a_tenant(schema, "nothing dropped"));
    }
    let foreign = foreign_objects(&mut tx, schema).await?;
    if !foreign.is_empty() {
        return Err(PostgresProviderError::rejected(
            sqlstate::INVALID_STATE,
            format!(
                "schema \"{schema}\" holds objects duroxide-postgres did not create ({}); \
                 nothing dropped: move or drop them first",
                foreign.join(", ")
            ),
        ));
    }
    let queues = match migrate::inspect_on(&mut tx, schema).await {
        Ok(status) if status.pending_migrations == 0 => {
            tx.execute(crate::sql::audited(&schema.render(FREEZE)))
                .await?;
            Some(queue_stats(&mut tx, schema).await?)
        }
        Ok(_) if force => None,
        Err(_) if force => None,
        Ok(status) => {
            return Err(PostgresProviderError::rejected(
                sqlstate::INVALID_STATE,
                format!(
                    "tenant \"{schema}\" has {} migration(s) pending, so its leases cannot be checked; \
                     nothing dropped: migrate it first, or force the drop",
                    status.pending_migrations
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    if let Some(q) = queues.filter(|q| q.live_leases() > 0 && !force) {
        return Err(PostgresProviderError::rejected(
            sqlstate::INVALID_STATE,
            format!(
                "tenant \"{schema}\" has {} live lease(s) ({} instance turn(s), {} activity(ies)): \
                 a runtime is working on it; nothing dropped: stop its runtimes, or force the drop",
                q.live_leases(),
                q.live_instance_leases,
                q.live_activity_leases
            ),
        ));
    }
    if let Err(e) = tx
        .execute(crate::sql::audited(&schema.render(DROP_SCHEMA)))
        .await
    {
        return Err(built_on(schema, e));
    }
    tx.commit().await?;
    tracing::info!(schema = %schema, force, "dropped tenant");
    Ok(DroppedTenant {
        schema: schema.clone(),
        queues,
    })
}

/// Drops every stored procedure of `schema` (this build's and any an earlier
/// build recorded) and forgets their records, returning how many functions
/// were dropped: the rollback to inline SQL.
///
/// Switch the tenant's processes to [`SqlMode::InlineSql`] (for example with
/// `DUROXIDE_POSTGRES_SQL_MODE=inline`) before, or after, but promptly:
/// a stored-procedure provider fails every operation while the procedures
/// are gone, and one that starts reinstalls them. Holds the schema's DDL lock
/// (waiting at most 10 s for a migration of the same schema).
///
/// # Errors
/// [`PostgresProviderError::Rejected`] with [`sqlstate::NOT_FOUND`] when the schema
/// has no procedure bookkeeping (it was never migrated); database errors.
pub async fn uninstall_procedures(pool: &PgPool, schema: &SchemaName) -> Result<usize> {
    let mut tx = locked_tenant(pool, schema, "nothing uninstalled").await?;
    let names = our_functions(&mut tx, schema).await?;
    let dropped = drop_functions(&mut tx, schema, &names).await?;
    tx.execute(crate::sql::audited(&schema.render(FORGET_PROCEDURES)))
        .await?;
    tx.commit().await?;
    tracing::info!(schema = %schema, dropped, "uninstalled stored procedures");
    Ok(dropped)
}

/// Drops the functions a build before names unique per schema
/// ([`SchemaName::procedure_suffix`]) left under the procedures' plain
/// names ([`SchemaStatus::legacy_procedures`](crate::SchemaStatus)), and
/// returns how many. Run it once no process of such a build runs: they call
/// those names. The schema's own procedures, their records and the runtime
/// roles' rights on them stay. Holds the schema's DDL lock (waiting at most
/// 10 s for a migration of the same schema).
///
/// # Errors
/// [`PostgresProviderError::Rejected`] with [`sqlstate::NOT_FOUND`] when the schema
/// has no procedure bookkeeping (it was never migrated); database errors.
pub async fn drop_legacy_procedures(pool: &PgPool, schema: &SchemaName) -> Result<usize> {
    let mut tx = locked_tenant(pool, schema, "nothing dropped").await?;
    let names = procedure_names(&mut tx, schema).await?;
    let dropped = drop_functions(&mut tx, schema, &names).await?;
    tx.commit().await?;
    tracing::info!(schema = %schema, dropped, "dropped legacy procedure names");
    Ok(dropped)
}

/// A transaction holding `schema`'s DDL lock, refused (ending with
/// `nothing`) when the schema has no procedure bookkeeping.
async fn locked_tenant(
    pool: &PgPool,
    schema: &SchemaName,
    nothing: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin_with(crate::pooler::READ_COMMITTED).await?;
    lock_schema(&mut tx, schema).await?;
    if !has_table(&mut tx, schema, "_duroxide_procedures").await? {
        return Err(not_a_tenant(schema, nothing));
    }
    Ok(tx)
}

/// Drops every overload in `schema` of the functions `names` names, in one
/// statement (a statement per function would resolve each name among every
/// function of that name afresh), and returns how many.
async fn drop_functions(
    conn: &mut PgConnection,
    schema: &SchemaName,
    names: &[String],
) -> Result<usize> {
    let signatures: Vec<String> = sqlx::query_scalar(FUNCTIONS)
        .bind(schema.as_str())
        .bind(names)
        .fetch_all(&mut *conn)
        .await?;
    if !signatures.is_empty() {
        let drop = format!("DROP FUNCTION {}", signatures.join(", "));
        conn.execute(crate::sql::audited(&drop)).await?;
    }
    Ok(signatures.len())
}

/// Bounds the transaction's lock waits and takes the schema's DDL lock.
async fn lock_schema(conn: &mut PgConnection, schema: &SchemaName) -> Result<()> {
    conn.execute(LOCK_TIMEOUT).await?;
    // A schema without bookkeeping has no migration to wait for; another
    // provider's bookkeeping is not ours to lock.
    if is_tenant(conn, schema).await? {
        conn.execute(crate::sql::audited(&schema.render(migrate::LOCK)))
            .await?;
    }
    Ok(())
}

/// The refusal of an operation on a schema that holds no tenant
/// (`DX003`, the command's exit code 8), ending with `what` was (not) done.
fn not_a_tenant(schema: &SchemaName, what: &str) -> PostgresProviderError {
    PostgresProviderError::rejected(
        sqlstate::NOT_FOUND,
        format!("schema \"{schema}\" holds no duroxide-postgres tenant; {what}"),
    )
}

/// Whether `schema` holds this crate's migration bookkeeping (not another
/// provider's table of the same name).
async fn is_tenant(conn: &mut PgConnection, schema: &SchemaName) -> Result<bool> {
    let found: Option<String> = sqlx::query_scalar(LIST)
        .bind(schema.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

async fn has_table(conn: &mut PgConnection, schema: &SchemaName, table: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(HAS_TABLE)
        .bind(schema.as_str())
        .bind(table)
        .fetch_one(&mut *conn)
        .await?)
}

/// The functions this crate may have put in `schema`: this build's
/// procedures and those recorded as installed, under the schema's suffixed
/// names and under the plain names builds before the suffix used.
async fn our_functions(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>> {
    Ok(procedure_names(conn, schema)
        .await?
        .into_iter()
        .flat_map(|name| [schema.procedure_name(&name), name])
        .collect())
}

/// This build's procedures and those recorded as installed, by file name.
async fn procedure_names(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>> {
    let mut names: Vec<String> = migrate::procedures()
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    if has_table(conn, schema, "_duroxide_procedures").await? {
        let recorded: Vec<String> =
            sqlx::query_scalar(crate::sql::audited(&schema.render(RECORDED_PROCEDURES)))
                .fetch_all(&mut *conn)
                .await?;
        for name in recorded {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// Up to ten objects of `schema` this crate did not create, as "kind name".
async fn foreign_objects(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>> {
    let functions = our_functions(conn, schema).await?;
    let rows = sqlx::query(FOREIGN_OBJECTS)
        .bind(schema.as_str())
        .bind(created_tables())
        .bind(functions)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            let name: String = r.try_get("name")?;
            Ok(format!("{kind} {name}"))
        })
        .collect()
}

/// The tables the bookkeeping and the embedded migrations create, read from
/// their `CREATE TABLE` statements so a new migration's tables count at once.
fn created_tables() -> Vec<String> {
    let mut tables = Vec::new();
    let templates = std::iter::once(migrate::BOOKKEEPING)
        .chain(migrate::migrations().into_iter().map(|m| m.template()));
    for template in templates {
        for name in migrate::tables_created_by(template) {
            if !tables.contains(&name) {
                tables.push(name);
            }
        }
    }
    tables
}

/// Queue depths and leases of a fully migrated `schema`.
async fn queue_stats(conn: &mut PgConnection, schema: &SchemaName) -> Result<QueueStats> {
    let statement = schema.render(&format!("{}{READ_BOUND}{QUEUE_STATS}", migrate::PIN));
    let row = conn
        .fetch_one(crate::sql::audited(&statement))
        .await
        .map_err(|e| locked_out(schema, e.into()))?;
    queue_stats_of(&row)
}

/// `e`, or when it is the lock wait [`READ_BOUND`] cut short, a refusal
/// that names the tenant and says what to do (`55P03`, as the server's).
fn locked_out(schema: &SchemaName, e: PostgresProviderError) -> PostgresProviderError {
    if !e.is_lock_timeout() {
        return e;
    }
    PostgresProviderError::rejected(
        sqlstate::LOCK_NOT_AVAILABLE,
        format!(
            "schema \"{schema}\": queues not read: another session has held a lock on one \
             of its tables for more than 2 s (a VACUUM FULL, a migration, a LOCK TABLE; \
             pg_locks names it); try again later"
        ),
    )
}

/// One row of `queue_stats.sql`.
fn queue_stats_of(row: &sqlx::postgres::PgRow) -> Result<QueueStats> {
    let count = |column: &str| -> Result<u64> {
        let n: i64 = row.try_get(column)?;
        crate::codec::to_u64(column, n)
    };
    let age = |column: &str| -> Result<Option<Duration>> {
        let ms: Option<i64> = row.try_get(column)?;
        Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    };
    Ok(QueueStats {
        instances: count("instances")?,
        orchestrator_messages: count("orchestrator_messages")?,
        orchestrator_visible: count("orchestrator_visible")?,
        orchestrator_oldest_visible: age("orchestrator_oldest_ms")?,
        parked_orphans: count("parked_orphans")?,
        worker_items: count("worker_items")?,
        worker_visible: count("worker_visible")?,
        worker_oldest_visible: age("worker_oldest_ms")?,
        live_instance_leases: count("live_instance_leases")?,
        live_activity_leases: count("live_activity_leases")?,
        expired_instance_leases: count("expired_instance_leases")?,
        expired_activity_leases: count("expired_activity_leases")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tables_come_from_the_migrations() {
        let tables = created_tables();
        for table in [
            "_duroxide_migrations",
            "_duroxide_procedures",
            "instances",
            "history",
            "orchestrator_queue",
            "instance_locks",
            "instance_claims",
            "worker_queue",
            "sessions",
            "kv_store",
            "kv_delta",
        ] {
            assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
        }
    }
}
