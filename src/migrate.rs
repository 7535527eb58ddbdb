//! Embedded, versioned, checksummed migrations and idempotent installation of
//! the stored procedures, serialized across processes per schema.
//!
//! * `migrations/NNNN_name.sql` hold table DDL. Each runs once, in a
//!   transaction, and is recorded with its SHA-256 in `_duroxide_migrations`.
//!   A schema whose recorded checksum differs from the embedded file, or that
//!   has a version this build does not know, is refused.
//! * `procedures/NAME.sql` hold the *current* definition of one function.
//!   After the migrations, every procedure whose checksum differs from the one
//!   recorded in `_duroxide_procedures` is (re)installed: its old overloads are
//!   dropped and the file is executed.
//! * Each procedure's record names the crate version that installed it. A
//!   build never replaces or drops procedures a newer version installed
//!   (rolling upgrades: old and new processes share the schema); a provider
//!   of an older build then runs inline SQL, unless the installed set is
//!   the very one it embeds (see [`SchemaStatus::procedures_version`]).
//! * One run is one transaction: pending migrations and stale procedures go
//!   to the server as one batch (the simple-query protocol), after a batch
//!   that creates the bookkeeping and takes the schema's DDL lock, a table
//!   lock on its `_duroxide_migrations` (`migrate/lock.sql`). Only a role with rights
//!   on the schema can take or hold it, so processes starting together on a
//!   fresh schema apply everything exactly once, tenants never wait for each
//!   other, and no outsider can block a tenant's start-up.
//!   (A `&str` executed without arguments goes as one simple query: several
//!   statements, one round trip, nothing prepared.)
//! * Every batch starts by pinning `search_path` to `pg_catalog, pg_temp`
//!   (`migrate/pin.sql`), so nothing this module sends resolves a function or
//!   operator outside `pg_catalog` and the schema it names.
//! * Procedures are `SECURITY DEFINER`; installing one revokes `EXECUTE`
//!   from `PUBLIC` and grants it to the roles that held it on the
//!   procedure's previous version, or, for a procedure new to the schema,
//!   on every procedure recorded before (`migrate/save_grants.sql`,
//!   `migrate/grant_installed.sql`), so a runtime role with `EXECUTE` only
//!   survives reinstallation and a role granted some procedures gains no
//!   other. Such a role reads the bookkeeping through
//!   `schema_state()` ([`verify`], [`inspect`]); [`migrate`] refuses it
//!   with [`PostgresProviderError::InsufficientPrivilege`].

use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::config::SqlMode;
use crate::error::{PostgresProviderError, Result};
use crate::schema::{SUFFIX_MARKER, SchemaName};

mod catalog;
mod many;
pub(crate) mod relations;
mod state;

#[cfg(test)]
pub(crate) use catalog::procedure_checksum;
pub use catalog::{CRATE_VERSION, Migration, Procedure, latest_version, migrations, procedures};
use catalog::{hex, version_triple};
pub(crate) use catalog::{is_newer, tables_created_by};
pub(crate) use many::{BATCH, inspect_many, tagged_union};
use state::{Access, State, read_state, read_state_as};

/// What a schema looks like compared with this build, from [`inspect`] or
/// [`crate::PostgresProvider::schema_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Functions still holding a procedure's plain name, as builds before
    /// names unique per schema ([`SchemaName::procedure_suffix`]) installed
    /// them. [`migrate`] leaves them, so that processes of such a build keep
    /// working through a rolling upgrade; once none runs, drop them with
    /// [`crate::tenants::drop_legacy_procedures`] (`duroxide-postgres
    /// migrate --drop-legacy`). Harmless otherwise, but every one is
    /// another entry in the lookup of its name on every tenant's first call.
    pub legacy_procedures: usize,
    /// The newest crate version recorded for the installed procedures
    /// (`None`: none installed, or installed before versions were recorded).
    /// When it is newer than this build ([`SchemaStatus::procedures_are_newer`]),
    /// [`migrate`] leaves the procedures alone, and a provider of this build
    /// asking for stored procedures uses them only if they are the very set
    /// it embeds, and runs inline SQL otherwise.
    pub procedures_version: Option<String>,
}

impl SchemaStatus {
    /// A schema without bookkeeping: everything pending.
    fn unmigrated() -> Self {
        SchemaStatus {
            applied_version: None,
            pending_migrations: migrations().len(),
            stale_procedures: procedures().len(),
            retired_procedures: 0,
            legacy_procedures: 0,
            procedures_version: None,
        }
    }

    /// True when nothing needs to be applied or reinstalled.
    pub fn is_current(&self) -> bool {
        self.pending_migrations == 0 && self.stale_procedures == 0
    }

    /// True when a newer build of this crate installed the procedures.
    pub fn procedures_are_newer(&self) -> bool {
        self.procedures_version.as_deref().is_some_and(is_newer)
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

/// The bookkeeping tables every migrated schema holds (and the schema
/// itself, created when missing and refused when its owner lacks some
/// right of the connecting role: `migrate/create_schema.sql`).
pub(crate) const BOOKKEEPING: &str = concat!(
    "\n",
    include_str!("../migrate/create_schema.sql"),
    r#"CREATE TABLE IF NOT EXISTS {{schema}}._duroxide_migrations (
    version       bigint PRIMARY KEY,
    name          text NOT NULL,
    checksum      bytea NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    execution_ms  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {{schema}}._duroxide_procedures (
    name          text PRIMARY KEY,
    checksum      bytea NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    crate_version text
);
"#
);

/// Brings older bookkeeping up to [`BOOKKEEPING`]'s columns; sent after
/// [`LOCK`], and changes a table only where a column is missing.
pub(crate) const BOOKKEEPING_UPGRADE: &str = include_str!("../migrate/bookkeeping_upgrade.sql");

/// Pins `search_path` and waits for locks as long as they last, for the
/// rest of the transaction; starts every batch (and the tenants' queue reads).
pub(crate) const PIN: &str = include_str!("../migrate/pin.sql");
/// The schema's DDL lock (a table lock on `_duroxide_migrations`).
pub(crate) const LOCK: &str = include_str!("../migrate/lock.sql");
const EXISTS: &str = include_str!("../migrate/exists.sql");
const STATE: &str = include_str!("../migrate/state.sql");
const STATE_FUNCTION: &str = include_str!("../migrate/state_function.sql");
const STATE_FUNCTION_LEGACY: &str = include_str!("../migrate/state_function_legacy.sql");
const MIGRATION_START: &str = include_str!("../migrate/migration_start.sql");
const RECORD_MIGRATION: &str = include_str!("../migrate/record_migration.sql");
pub(crate) const DROP_FUNCTIONS: &str = include_str!("../migrate/drop_functions.sql");
/// Saves who may execute the schema's procedures before a reinstall.
pub(crate) const SAVE_GRANTS: &str = include_str!("../migrate/save_grants.sql");
/// Revokes `PUBLIC` and restores the saved grants on reinstalled procedures.
pub(crate) const GRANT_INSTALLED: &str = include_str!("../migrate/grant_installed.sql");
const RECORD_PROCEDURES: &str = include_str!("../migrate/record_procedures.sql");
/// Revokes `PUBLIC` from a new tenant's procedures (no grants to restore).
const REVOKE_PUBLIC: &str = include_str!("../migrate/revoke_public.sql");
/// Extends the inline runtime roles' table rights to new tables.
const GRANT_NEW_TABLES: &str = include_str!("../migrate/grant_new_tables.sql");
/// Whether the connecting role may run inline SQL on a schema.
const INLINE_RIGHTS: &str = include_str!("../migrate/inline_rights.sql");
/// Settings for the rest of the transaction, ahead of the procedure files:
/// no check of function bodies, and lz4 for their stored source text.
pub(crate) const INSTALL_SETTINGS: &str = include_str!("../migrate/install_settings.sql");

/// How often a migration starts over after losing the race to create a
/// brand-new schema's bookkeeping (to another process doing the same), or
/// a deadlock (PostgreSQL aborted its transaction to break a cycle of lock
/// waits with another session: a process of another build running the
/// tenant's inline SQL, an operator's batched read of many tenants, a
/// script). Either way the transaction rolled back whole, and the next
/// attempt waits for the lock it lost.
const ATTEMPTS: usize = 5;

/// Brings `schema` up to date for `mode`: applies pending migrations and, for
/// stored procedures, (re)installs changed procedures and drops retired ones.
/// Inline SQL never installs procedures, so a rollback that dropped them
/// stays rolled back.
///
/// Everything happens in one transaction, in two round trips after its
/// `BEGIN`: one creates the bookkeeping if needed, takes the schema's DDL
/// lock (a table lock on `_duroxide_migrations`, which only a role with
/// rights on the schema can take or hold) and reads what is applied; one
/// sends every pending migration and stale procedure with their records.
/// Each batch pins `search_path` to `pg_catalog, pg_temp` first. A current
/// schema costs two reads and no lock.
///
/// # Errors
/// [`PostgresProviderError::SchemaTooNew`] or [`PostgresProviderError::MigrationChanged`]
/// when the schema does not belong to this build; database errors otherwise.
pub async fn migrate(pool: &PgPool, schema: &SchemaName, mode: SqlMode) -> Result<()> {
    migrate_status(pool, schema, mode).await.map(|_| ())
}

/// [`migrate`], returning the schema's status afterwards.
pub(crate) async fn migrate_status(
    pool: &PgPool,
    schema: &SchemaName,
    mode: SqlMode,
) -> Result<SchemaStatus> {
    let mut conn = pool.acquire().await?;
    let access = Access::probe(&mut conn, schema).await?;
    if access.migrated && !(access.can_read && access.can_lock) {
        return Err(access.cannot_migrate(schema));
    }
    access.owned_by_another(schema)?;
    // Fast path: most processes start against a current schema; check without the lock.
    if let Some(state) = read_state_as(&mut conn, schema, &access).await? {
        let status = state.status(schema)?;
        let procedures_done = mode == SqlMode::InlineSql
            || status.procedures_are_newer()
            || (status.stale_procedures == 0 && status.retired_procedures == 0);
        if status.pending_migrations == 0 && procedures_done {
            return Ok(status);
        }
    }
    let mut attempt = 1;
    loop {
        match migrate_locked(&mut conn, schema, mode).await {
            Err(e) if attempt < ATTEMPTS && lost_creation_race(&e) => {
                tracing::debug!(schema = %schema, attempt, "another process created the schema first; starting over");
                attempt += 1;
            }
            Err(e) if attempt < ATTEMPTS && e.is_deadlock() => {
                tracing::warn!(schema = %schema, attempt, "the migration lost a deadlock; starting over");
                attempt += 1;
            }
            outcome => return outcome.map_err(|e| access.refused(schema, e)),
        }
    }
}

/// Whether `e` is another transaction's creation of the same schema or
/// bookkeeping table winning over ours (`IF NOT EXISTS` does not wait for
/// an uncommitted one): the next attempt finds it and waits on the lock.
fn lost_creation_race(e: &PostgresProviderError) -> bool {
    matches!(
        e.sqlstate().as_deref(),
        Some("23505" | "42P06" | "42P07" | "42710")
    )
}

async fn migrate_locked(
    conn: &mut PgConnection,
    schema: &SchemaName,
    mode: SqlMode,
) -> Result<SchemaStatus> {
    let mut tx = conn.begin_with(crate::pooler::READ_COMMITTED).await?;
    let setup = schema.render(&format!(
        "{PIN}{BOOKKEEPING}\n{LOCK}{BOOKKEEPING_UPGRADE}{STATE}"
    ));
    let rows = tx.fetch_all(crate::sql::audited(&setup)).await?;
    let state = State::from_rows(&rows)?;
    let before = state.status(schema)?;
    // A newer build's procedures are never replaced nor dropped.
    let newer = before.procedures_are_newer();
    if newer && mode == SqlMode::StoredProcedures && !before.is_current() {
        tracing::warn!(
            schema = %schema,
            installed_by = before.procedures_version.as_deref().unwrap_or_default(),
            this_build = CRATE_VERSION,
            "stored procedures installed by a newer duroxide-postgres; leaving them in place"
        );
    }

    let pending: Vec<Migration> = migrations()
        .into_iter()
        .filter(|m| state.applied.iter().all(|(v, _, _)| *v != m.version))
        .collect();
    let (stale, retired) = match mode {
        SqlMode::StoredProcedures if !newer => (state.stale(), state.retired().len()),
        _ => (Vec::new(), 0),
    };
    let after = SchemaStatus {
        applied_version: migrations()
            .last()
            .map(|m| m.version)
            .or(before.applied_version),
        pending_migrations: 0,
        stale_procedures: before.stale_procedures - stale.len(),
        retired_procedures: before.retired_procedures - retired,
        // The retired procedures' plain-named functions go with them.
        legacy_procedures: if retired > 0 {
            let retired = state.retired();
            state
                .legacy
                .iter()
                .filter(|name| !retired.contains(&name.as_str()))
                .count()
        } else {
            before.legacy_procedures
        },
        procedures_version: if stale.is_empty() {
            before.procedures_version.clone()
        } else {
            Some(CRATE_VERSION.to_string())
        },
    };
    if pending.is_empty() && stale.is_empty() && retired == 0 {
        tx.commit().await?;
        return Ok(after);
    }
    let mut batch = String::from(PIN);
    for migration in &pending {
        batch.push_str(MIGRATION_START);
        push(&mut batch, migration.sql);
        batch.push_str(
            &RECORD_MIGRATION
                .replace("{{version}}", &migration.version.to_string())
                .replace("{{name}}", migration.name)
                .replace("{{checksum}}", &migration.checksum_hex()),
        );
    }
    // An upgrade that creates tables gives them to the roles that write the
    // schema's tables already (inline runtime roles); a new tenant has none.
    if let Some(grant) = grant_new_tables(&pending).filter(|_| !state.applied.is_empty()) {
        batch.push_str(&grant);
    }
    if !stale.is_empty() || retired > 0 {
        // `{{names}}`: the functions' names in the schema (suffixed);
        // `{{embedded}}`: the procedures' names as recorded.
        let names = |list: &[Procedure], suffix: &str| -> String {
            list.iter()
                .map(|p| format!("'{}{suffix}'", p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A schema that records no procedure has none of ours to drop and
        // no runtime role's grants on them to keep (uninstalling forgets
        // the records with the functions): a new tenant skips both steps.
        if !state.records_nothing() {
            batch.push_str(SAVE_GRANTS);
            batch.push_str(
                &DROP_FUNCTIONS
                    .replace("{{names}}", &names(&stale, SUFFIX_MARKER))
                    .replace("{{embedded}}", &names(&procedures(), "")),
            );
        }
        if !stale.is_empty() {
            batch.push_str(INSTALL_SETTINGS);
        }
        for procedure in &stale {
            push(&mut batch, procedure.sql);
        }
        if !stale.is_empty() {
            push(&mut batch, &record_procedures(&stale));
            // A new tenant has no saved grants to restore: one plain REVOKE
            // instead of grant_installed.sql's block (half the cost).
            let signatures: Option<Vec<String>> = state
                .records_nothing()
                .then(|| stale.iter().map(Procedure::signature).collect())
                .flatten();
            match signatures {
                Some(signatures) => {
                    batch.push_str(&REVOKE_PUBLIC.replace("{{signatures}}", &signatures.join(", ")))
                }
                None => batch
                    .push_str(&GRANT_INSTALLED.replace("{{names}}", &names(&stale, SUFFIX_MARKER))),
            }
        }
    }
    let batch = schema.render(&batch);
    tx.execute(crate::sql::audited(&batch)).await?;
    tx.commit().await?;
    for migration in &pending {
        tracing::info!(schema = %schema, version = migration.version, name = migration.name, "applied migration");
    }
    if !stale.is_empty() || retired > 0 {
        tracing::info!(
            schema = %schema,
            installed = stale.len(),
            retired,
            "installed stored procedures"
        );
    }
    Ok(after)
}

/// `migrate/grant_new_tables.sql` for the tables `applied` create (a
/// template: `{{schema}}` not yet substituted), `None` when they create
/// none. Sent after them when they upgrade a schema migrated before
/// ([`migrate`], and the install script after a version); a new tenant has
/// no runtime role to extend.
pub(crate) fn grant_new_tables(applied: &[Migration]) -> Option<String> {
    let tables: Vec<String> = applied
        .iter()
        .flat_map(Migration::created_tables)
        .map(|table| format!("{{{{schema}}}}.{table}"))
        .collect();
    (!tables.is_empty()).then(|| GRANT_NEW_TABLES.replace("{{tables}}", &tables.join(", ")))
}

/// One statement recording `installed` (each name with its checksum and
/// this build's version), replacing earlier records of the same names.
pub(crate) fn record_procedures(installed: &[Procedure]) -> String {
    let rows: Vec<String> = installed
        .iter()
        .map(|p| {
            format!(
                "('{}', pg_catalog.decode('{}', 'hex'), '{CRATE_VERSION}')",
                p.name,
                p.checksum_hex()
            )
        })
        .collect();
    RECORD_PROCEDURES.replace("{{rows}}", &rows.join(",\n       "))
}

/// Appends `sql` to a batch, ending it with a `;` and a newline if it has none.
fn push(batch: &mut String, sql: &str) {
    let sql = sql.trim_end();
    batch.push_str(sql);
    if !sql.ends_with(';') {
        batch.push(';');
    }
    batch.push('\n');
}

/// Compares `schema` with this build without changing anything.
///
/// # Errors
/// The same refusals as [`migrate`] for schemas that are newer or edited;
/// database errors otherwise.
pub async fn inspect(pool: &PgPool, schema: &SchemaName) -> Result<SchemaStatus> {
    let mut conn = pool.acquire().await?;
    inspect_on(&mut conn, schema).await
}

/// [`inspect`] on a connection the caller holds (inside its transaction).
pub(crate) async fn inspect_on(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<SchemaStatus> {
    match read_state(conn, schema).await? {
        Some(state) => state.status(schema),
        None => Ok(SchemaStatus::unmigrated()),
    }
}

/// The SQL mode a provider that asked for `requested` runs in, given the
/// schema's `status` after migrating or verifying it: inline SQL when it
/// asked for stored procedures but a newer build installed a set other than
/// the one this build embeds (with the reason, for the log and
/// [`crate::HealthReport::fallback`]); `requested` otherwise.
pub(crate) fn effective_mode(
    schema: &SchemaName,
    requested: SqlMode,
    status: &SchemaStatus,
) -> (SqlMode, Option<String>) {
    if requested == SqlMode::StoredProcedures
        && status.procedures_are_newer()
        && !status.is_current()
    {
        let reason = format!(
            "the stored procedures in schema \"{schema}\" were installed by duroxide-postgres {} and differ from this build's ({CRATE_VERSION}); running inline SQL instead",
            status.procedures_version.as_deref().unwrap_or_default()
        );
        tracing::warn!(schema = %schema, "{reason}");
        return (SqlMode::InlineSql, Some(reason));
    }
    (requested, None)
}

/// Whether the connecting role may run inline SQL on `schema` (the DML
/// rights `grant --inline` gives): a runtime role with `EXECUTE` only may
/// not, and so keeps calling a newer build's procedures rather than fall
/// back to inline SQL ([`effective_mode`]).
pub(crate) async fn can_run_inline(pool: &PgPool, schema: &SchemaName) -> Result<bool> {
    let sql = schema.render(&format!("{PIN}{INLINE_RIGHTS}"));
    let rows = pool.fetch_all(crate::sql::audited(&sql)).await?;
    Ok(rows
        .iter()
        .find_map(|row| sqlx::Row::try_get::<bool, _>(row, "inline_rights").ok())
        .unwrap_or(false))
}

/// Checks, for processes that must not run DDL, that `schema` is ready for `mode`.
///
/// # Errors
/// [`PostgresProviderError::SchemaNotReady`] when migrations or procedures are pending.
/// [`PostgresProviderError::SchemaNotReady`] too when a table or index the
/// migrations create is missing (dropped by hand) or an index is invalid,
/// naming them.
pub async fn verify(pool: &PgPool, schema: &SchemaName, mode: SqlMode) -> Result<SchemaStatus> {
    let mut conn = pool.acquire().await?;
    let status = ready_for(schema, inspect_on(&mut conn, schema).await?, mode)?;
    match relations::missing(&mut conn, &[schema])
        .await?
        .remove(schema.as_str())
    {
        Some(lacking) => Err(relations::lacks(schema, &lacking)),
        None => Ok(status),
    }
}

/// The tables and indexes a fully migrated schema holds (its TOAST tables
/// and identity sequences aside), as the embedded migrations create them:
/// named indexes, primary keys (`TABLE_pkey`) and `UNIQUE` columns'
/// constraints (`TABLE_COLUMN_key`). [`verify`] checks that each is there.
pub fn expected_relations() -> &'static [String] {
    relations::expected()
}

/// [`verify`]'s verdict on a status already read.
pub(crate) fn ready_for(
    schema: &SchemaName,
    status: SchemaStatus,
    mode: SqlMode,
) -> Result<SchemaStatus> {
    if !status.is_ready_for(mode) {
        return Err(PostgresProviderError::SchemaNotReady {
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
    fn every_procedure_has_a_signature_to_revoke_by() {
        for procedure in procedures() {
            let signature = procedure
                .signature()
                .unwrap_or_else(|| panic!("{}: no signature", procedure.name));
            let head = format!("{{{{schema}}}}.{}{SUFFIX_MARKER}(", procedure.name);
            assert!(signature.starts_with(&head), "{signature}");
            assert!(signature.ends_with(')'), "{signature}");
            assert!(!signature.contains('\n'), "{signature}");
        }
        let ack = procedures()
            .into_iter()
            .find(|p| p.name == "ack_work_item")
            .and_then(|p| p.signature());
        assert_eq!(
            ack.as_deref(),
            Some(
                "{{schema}}.ack_work_item{{suffix}}(p_lock_token text, p_instance_id text, \
                 p_item_kind text, p_work_item text)"
            )
        );
        // Comments and defaults are not part of a function's name.
        let fetch = procedures()
            .into_iter()
            .find(|p| p.name == "fetch_work_item")
            .and_then(|p| p.signature())
            .unwrap_or_default();
        assert!(
            fetch.ends_with("p_history_bytes bigint, p_claim_token text)"),
            "{fetch}"
        );
        assert!(
            !fetch.contains("DEFAULT") && !fetch.contains("--"),
            "{fetch}"
        );
    }

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
    const PLANNED_PER_CALL: [&str; 3] = [
        "delete_instance_bulk",
        "get_system_metrics",
        "prune_executions_bulk",
    ];

    #[test]
    fn every_procedure_file_defines_its_namesake_in_the_schema() {
        for p in procedures() {
            let header = format!(
                "CREATE OR REPLACE FUNCTION {{{{schema}}}}.{}{{{{suffix}}}}(",
                p.name
            );
            assert!(
                p.sql.contains(&header),
                "{}.sql must contain `{header}`",
                p.name
            );
            // plpgsql procedures pin search_path and their plan_cache_mode:
            // generic plans (planned once per connection; PostgreSQL's
            // default can plan them on every call), or, for the bulk admin
            // procedures whose optional filters need them, plans per call
            // (the caller's pool may force generic ones). The read-only
            // single-statement ones are plpgsql `RETURN QUERY` functions too:
            // a SECURITY DEFINER `LANGUAGE sql` function is never inlined and,
            // before PostgreSQL 18, plans its body on every call (measured
            // several times slower; docs/architecture.md, "Roles"). A
            // `LANGUAGE sql` procedure would have to be a STABLE
            // set-returning function.
            // Every procedure runs with its owner's rights (a runtime role
            // holds EXECUTE only), so every one pins search_path.
            assert!(
                p.sql.contains("\nSECURITY DEFINER\n")
                    && p.sql.contains("\nSET search_path = pg_catalog, pg_temp\n"),
                "{}.sql must be SECURITY DEFINER and pin search_path",
                p.name
            );
            if p.sql.contains("\nLANGUAGE plpgsql\n") {
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
                // A generic plan is kept for the connection's life, so it
                // must not read a table whole because the table was small
                // when planned (config.rs, PLAN_SETTINGS); plans per call
                // see the table as it is and may.
                let pins = if mode == "auto" {
                    "SET enable_seqscan = on\n"
                } else {
                    "SET enable_seqscan = off\nSET jit = off\n"
                };
                assert!(
                    p.sql
                        .contains(&format!("SET plan_cache_mode = {mode}\n{pins}")),
                    "{}.sql must pin {pins:?} after its plan_cache_mode",
                    p.name
                );
            } else {
                assert!(
                    p.sql.contains("\nLANGUAGE sql\nSTABLE\n")
                        && (p.sql.contains("RETURNS TABLE") || p.sql.contains("RETURNS SETOF")),
                    "{}.sql: a LANGUAGE sql procedure must be a STABLE set-returning function",
                    p.name
                );
            }
        }
    }
}
