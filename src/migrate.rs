//! Embedded, versioned, checksummed migrations and idempotent installation of
//! the stored procedures, serialized across processes per schema.
//!
//! * `migrations/NNNN_name.sql` hold table DDL. Each runs once, in its own
//!   transaction, and is recorded with its SHA-256 in `_duroxide_migrations`.
//!   A schema whose recorded checksum differs from the embedded file, or that
//!   has a version this build does not know, is refused.
//! * `procedures/NAME.sql` hold the *current* definition of one function.
//!   After the migrations, every procedure whose checksum differs from the one
//!   recorded in `_duroxide_procedures` is (re)installed: its old overloads are
//!   dropped and the file is executed, in one transaction.
//! * The whole run holds a session advisory lock whose key is derived from the
//!   schema name, so processes starting together on a fresh schema apply
//!   everything exactly once and tenants never wait for each other.

use std::time::Instant;

use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};

use crate::config::SqlMode;
use crate::error::{PgProviderError, Result};
use crate::schema::SchemaName;

use crate::embedded::{MIGRATION_FILES, PROCEDURE_FILES};

/// One embedded migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Version parsed from the file name's numeric prefix.
    pub version: i64,
    /// The file name without extension, e.g. `0001_initial`.
    pub name: &'static str,
    sql: &'static str,
    checksum: [u8; 32],
}

/// One embedded stored-procedure file.
#[derive(Debug, Clone)]
pub struct Procedure {
    /// The function's name, which is also the file name.
    pub name: &'static str,
    sql: &'static str,
    checksum: [u8; 32],
}

impl Migration {
    /// The file's SQL template (`{{schema}}` not yet substituted).
    pub(crate) fn template(&self) -> &'static str {
        self.sql
    }

    /// SHA-256 of the template, in hex, as `_duroxide_migrations` records it.
    pub(crate) fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }
}

impl Procedure {
    /// The file's SQL template (`{{schema}}` not yet substituted).
    pub(crate) fn template(&self) -> &'static str {
        self.sql
    }

    /// SHA-256 of the template, in hex, as `_duroxide_procedures` records it.
    pub(crate) fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The migrations embedded in this build, in version order.
pub fn migrations() -> Vec<Migration> {
    MIGRATION_FILES
        .iter()
        .map(|(name, sql)| {
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            Migration {
                // build.rs only embeds files; a malformed name fails the unit test below.
                version: digits.parse().unwrap_or(0),
                name,
                sql,
                checksum: sha256(sql),
            }
        })
        .collect()
}

/// The stored procedures embedded in this build, in name order.
pub fn procedures() -> Vec<Procedure> {
    PROCEDURE_FILES
        .iter()
        .map(|(name, sql)| Procedure {
            name,
            sql,
            checksum: sha256(sql),
        })
        .collect()
}

/// Highest migration version embedded in this build.
pub fn latest_version() -> i64 {
    migrations().last().map_or(0, |m| m.version)
}

/// What a schema looks like compared with this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest applied migration version, `None` if the schema was never migrated.
    pub applied_version: Option<i64>,
    /// Migrations embedded here but not yet applied.
    pub pending_migrations: usize,
    /// Procedures missing or out of date.
    pub stale_procedures: usize,
    /// Procedures an earlier build installed that this one no longer has:
    /// harmless, dropped by the next [`migrate`] in stored-procedure mode.
    pub retired_procedures: usize,
}

impl SchemaStatus {
    /// True when nothing needs to be applied or reinstalled.
    pub fn is_current(&self) -> bool {
        self.pending_migrations == 0 && self.stale_procedures == 0
    }

    /// True when a provider in `mode` can run: inline SQL needs the tables
    /// only, stored procedures need the procedures too.
    pub fn is_ready_for(&self, mode: SqlMode) -> bool {
        match mode {
            SqlMode::StoredProcedures => self.is_current(),
            SqlMode::InlineSql => self.pending_migrations == 0,
        }
    }
}

/// The key of the advisory lock that serializes DDL on `schema` (migrations,
/// procedure (un)installation, a tenant's drop).
pub(crate) fn lock_key(schema: &SchemaName) -> String {
    format!("duroxide-postgres:migrate:{}", schema.as_str())
}

/// The bookkeeping tables every migrated schema holds (and the schema itself).
pub(crate) const BOOKKEEPING: &str = r#"
CREATE SCHEMA IF NOT EXISTS {{schema}};
CREATE TABLE IF NOT EXISTS {{schema}}._duroxide_migrations (
    version       bigint PRIMARY KEY,
    name          text NOT NULL,
    checksum      bytea NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    execution_ms  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {{schema}}._duroxide_procedures (
    name          text PRIMARY KEY,
    checksum      bytea NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT now()
);
"#;

/// Brings `schema` up to date for `mode`: applies pending migrations and, for
/// stored procedures, (re)installs changed procedures, holding the schema's
/// advisory lock throughout. Inline SQL never installs procedures, so a
/// rollback that dropped them stays rolled back.
///
/// # Errors
/// [`PgProviderError::SchemaTooNew`] or [`PgProviderError::MigrationChanged`]
/// when the schema does not belong to this build; database errors otherwise.
pub async fn migrate(pool: &PgPool, schema: &SchemaName, mode: SqlMode) -> Result<()> {
    let mut conn = pool.acquire().await?;
    // Fast path: most processes start against a current schema; check without the lock.
    if schema_exists(&mut conn, schema).await? {
        let status = inspect(&mut conn, schema).await?;
        if status.is_ready_for(mode)
            && (mode == SqlMode::InlineSql || status.retired_procedures == 0)
        {
            return Ok(());
        }
    }
    // Session-level advisory lock keyed by the schema: other tenants never wait.
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_key(schema))
        .execute(&mut *conn)
        .await?;
    let result = migrate_locked(&mut conn, schema, mode).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(lock_key(schema))
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // Never return a connection that might still hold the lock to the pool.
        conn.detach();
    }
    result
}

async fn migrate_locked(conn: &mut PgConnection, schema: &SchemaName, mode: SqlMode) -> Result<()> {
    conn.execute(schema.render(BOOKKEEPING).as_str()).await?;
    let applied = applied_migrations(conn, schema).await?;
    check_applied(schema, &applied)?;

    for migration in migrations() {
        if applied.iter().any(|(v, _, _)| *v == migration.version) {
            continue;
        }
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        tx.execute(schema.render(migration.sql).as_str()).await?;
        sqlx::query(&schema.render(
            "INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms) VALUES ($1, $2, $3, $4)",
        ))
        .bind(migration.version)
        .bind(migration.name)
        .bind(&migration.checksum[..])
        .bind(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(schema = %schema, version = migration.version, name = migration.name, "applied migration");
    }

    if mode == SqlMode::InlineSql {
        return Ok(());
    }
    let installed = installed_procedures(conn, schema).await?;
    let stale: Vec<Procedure> = procedures()
        .into_iter()
        .filter(|p| {
            installed
                .iter()
                .all(|(name, sum)| name != p.name || sum[..] != p.checksum[..])
        })
        .collect();
    let retired = retired_procedures(conn, schema).await?;
    if stale.is_empty() && retired.is_empty() {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    for name in &retired {
        drop_function(&mut tx, schema, name).await?;
        sqlx::query(&schema.render("DELETE FROM {{schema}}._duroxide_procedures WHERE name = $1"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    for procedure in &stale {
        // Dropped first: a changed signature or result type cannot be replaced in place.
        drop_function(&mut tx, schema, procedure.name).await?;
        tx.execute(schema.render(procedure.sql).as_str()).await?;
        sqlx::query(&schema.render(
            "INSERT INTO {{schema}}._duroxide_procedures (name, checksum) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, installed_at = now()",
        ))
        .bind(procedure.name)
        .bind(&procedure.checksum[..])
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        schema = %schema,
        installed = stale.len(),
        retired = retired.len(),
        "installed stored procedures"
    );
    Ok(())
}

/// Drops every overload of `name` in `schema`.
async fn drop_function(conn: &mut PgConnection, schema: &SchemaName, name: &str) -> Result<()> {
    let drops: Vec<String> = sqlx::query_scalar(
        "SELECT format('DROP FUNCTION %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
    )
    .bind(schema.as_str())
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for drop in drops {
        conn.execute(drop.as_str()).await?;
    }
    Ok(())
}

/// Procedures recorded as installed that this build no longer embeds.
async fn retired_procedures(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>> {
    let recorded: Vec<String> =
        sqlx::query_scalar(&schema.render("SELECT name FROM {{schema}}._duroxide_procedures"))
            .fetch_all(&mut *conn)
            .await?;
    let embedded = procedures();
    Ok(recorded
        .into_iter()
        .filter(|name| embedded.iter().all(|p| p.name != name))
        .collect())
}

/// Refuses a schema this build must not touch.
fn check_applied(schema: &SchemaName, applied: &[(i64, String, Vec<u8>)]) -> Result<()> {
    let embedded = migrations();
    let known = latest_version();
    for (version, name, checksum) in applied {
        match embedded.iter().find(|m| m.version == *version) {
            None if *version > known => {
                return Err(PgProviderError::SchemaTooNew {
                    schema: schema.to_string(),
                    found: *version,
                    known,
                });
            }
            None => {
                return Err(PgProviderError::SchemaNotReady {
                    schema: schema.to_string(),
                    reason: format!(
                        "applied migration {version} ({name}) is unknown to this build"
                    ),
                });
            }
            Some(m) if m.checksum[..] != checksum[..] => {
                return Err(PgProviderError::MigrationChanged {
                    schema: schema.to_string(),
                    version: *version,
                    name: name.clone(),
                    applied: hex(checksum),
                    embedded: hex(&m.checksum),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn schema_exists(conn: &mut PgConnection, schema: &SchemaName) -> Result<bool> {
    let exists: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I._duroxide_procedures', $1::text)) IS NOT NULL \
         AND to_regclass(format('%I._duroxide_migrations', $1::text)) IS NOT NULL",
    )
    .bind(schema.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(exists)
}

async fn applied_migrations(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Vec<(i64, String, Vec<u8>)>> {
    let rows = sqlx::query(&schema.render(
        "SELECT version, name, checksum FROM {{schema}}._duroxide_migrations ORDER BY version",
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("version")?,
                r.try_get("name")?,
                r.try_get("checksum")?,
            ))
        })
        .collect()
}

async fn installed_procedures(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Vec<(String, Vec<u8>)>> {
    // A recorded procedure only counts if the function still exists: dropping the
    // functions by hand (say, to force inline SQL) makes the next start reinstall them.
    let rows = sqlx::query(&schema.render(
        "SELECT d.name, d.checksum FROM {{schema}}._duroxide_procedures d \
         WHERE EXISTS (SELECT 1 FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace \
                       WHERE n.nspname = $1 AND f.proname = d.name)",
    ))
    .bind(schema.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("checksum")?)))
        .collect()
}

/// Compares `schema` with this build without changing anything.
///
/// # Errors
/// The same refusals as [`migrate`] for schemas that are newer or edited.
pub async fn inspect(conn: &mut PgConnection, schema: &SchemaName) -> Result<SchemaStatus> {
    if !schema_exists(conn, schema).await? {
        return Ok(SchemaStatus {
            applied_version: None,
            pending_migrations: migrations().len(),
            stale_procedures: procedures().len(),
            retired_procedures: 0,
        });
    }
    let applied = applied_migrations(conn, schema).await?;
    check_applied(schema, &applied)?;
    let installed = installed_procedures(conn, schema).await?;
    Ok(SchemaStatus {
        applied_version: applied.iter().map(|(v, _, _)| *v).max(),
        pending_migrations: migrations()
            .iter()
            .filter(|m| applied.iter().all(|(v, _, _)| *v != m.version))
            .count(),
        stale_procedures: procedures()
            .iter()
            .filter(|p| {
                installed
                    .iter()
                    .all(|(name, sum)| name != p.name || sum[..] != p.checksum[..])
            })
            .count(),
        retired_procedures: retired_procedures(conn, schema).await?.len(),
    })
}

/// Checks, for processes that must not run DDL, that `schema` is ready for `mode`.
///
/// # Errors
/// [`PgProviderError::SchemaNotReady`] when migrations or procedures are pending.
pub async fn verify(pool: &PgPool, schema: &SchemaName, mode: SqlMode) -> Result<SchemaStatus> {
    let mut conn = pool.acquire().await?;
    let status = inspect(&mut conn, schema).await?;
    if !status.is_ready_for(mode) {
        return Err(PgProviderError::SchemaNotReady {
            schema: schema.to_string(),
            reason: format!(
                "{} migration(s) pending, {} procedure(s) missing or stale",
                status.pending_migrations, status.stale_procedures
            ),
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_are_numbered_and_unique() {
        let all = migrations();
        assert!(!all.is_empty());
        for (i, m) in all.iter().enumerate() {
            assert!(m.version > 0, "{} has no numeric prefix", m.name);
            if i > 0 {
                assert!(
                    m.version > all[i - 1].version,
                    "duplicate version {}",
                    m.version
                );
            }
        }
    }

    /// The plpgsql procedures that plan per call rather than generically.
    const PLANNED_PER_CALL: [&str; 2] = ["delete_instance_bulk", "prune_executions_bulk"];

    #[test]
    fn every_procedure_file_defines_its_namesake_in_the_schema() {
        for p in procedures() {
            let header = format!("CREATE OR REPLACE FUNCTION {{{{schema}}}}.{}(", p.name);
            assert!(
                p.sql.contains(&header),
                "{}.sql must contain `{header}`",
                p.name
            );
            // plpgsql procedures pin search_path and their plan_cache_mode:
            // generic plans (planned once per connection; PostgreSQL's
            // default can plan them on every call), or, for the bulk admin
            // procedures whose optional filters need them, plans per call
            // (the caller's pool may force generic ones). Read-only single-statement
            // queries are `LANGUAGE sql STABLE` set-returning functions with no
            // SET clause, the form the planner inlines into the calling
            // statement (a SET clause, plpgsql or VOLATILE would prevent it);
            // their bodies name only schema-qualified tables and built-ins.
            if p.sql.contains("\nLANGUAGE plpgsql\n") {
                assert!(
                    p.sql.contains("SET search_path = pg_catalog, pg_temp"),
                    "{}.sql must pin search_path",
                    p.name
                );
                let mode = if PLANNED_PER_CALL.contains(&p.name) {
                    "auto"
                } else {
                    "force_generic_plan"
                };
                assert!(
                    p.sql.contains(&format!("SET plan_cache_mode = {mode}\n")),
                    "{}.sql must pin plan_cache_mode = {mode}",
                    p.name
                );
            } else {
                assert!(
                    p.sql.contains("\nLANGUAGE sql\nSTABLE\nAS $$")
                        && (p.sql.contains("RETURNS TABLE") || p.sql.contains("RETURNS SETOF")),
                    "{}.sql: a LANGUAGE sql procedure must be an inlinable STABLE set-returning function",
                    p.name
                );
            }
        }
    }
}
