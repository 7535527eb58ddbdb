//! Least-privilege roles: what a tenant's runtime role may do, granted and
//! revoked in one call (see docs/operations.md, "Roles and least privilege").
//!
//! In procedure mode a runtime role needs `USAGE` on its schema and
//! `EXECUTE` on the schema's procedures, nothing else: every procedure is
//! `SECURITY DEFINER` (it runs with its owner's rights, with a pinned
//! `search_path`), and `schema_state()` lets `MigrationMode::Verify` and
//! `health()` read the schema's version without reading its tables.
//! Inline SQL runs as the connecting role, so an inline runtime role needs
//! DML on the tables instead.

use sqlx::{Executor, PgConnection, PgPool, Row};

use super::{created_tables, is_tenant, lock_schema, not_a_tenant, our_functions};
use crate::config::SqlMode;
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::schema::SchemaName;

const GRANT_RUNTIME: &str = include_str!("../../tenants/grant_runtime.sql");
const REVOKE_RUNTIME: &str = include_str!("../../tenants/revoke_runtime.sql");
const RUNTIME_RIGHTS: &str = include_str!("../../tenants/runtime_rights.sql");

/// The bookkeeping tables, which an inline runtime role may only read.
const BOOKKEEPING_TABLES: [&str; 2] = ["_duroxide_migrations", "_duroxide_procedures"];

/// What a role holds on a tenant schema after [`grant_runtime_role`] or
/// [`revoke_runtime_role`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeRights {
    /// The tenant schema.
    pub schema: SchemaName,
    /// The role.
    pub role: String,
    /// `USAGE` on the schema.
    pub usage: bool,
    /// Functions of this crate in the schema the role may execute.
    pub executable_functions: usize,
    /// Functions of this crate in the schema.
    pub functions: usize,
    /// Functions of this crate in the schema that `PUBLIC` may execute.
    pub public_functions: usize,
    /// Tables of this crate in the schema the role may read.
    pub readable_tables: usize,
    /// Tables of this crate in the schema the role may insert into.
    pub writable_tables: usize,
}

/// Gives `role` exactly what a runtime provider in `mode` needs on
/// `schema`, and nothing more:
///
/// * [`SqlMode::StoredProcedures`]: `USAGE` on the schema and `EXECUTE` on
///   each of the crate's functions in it (revoking `EXECUTE` from `PUBLIC`
///   on them, as every installation does). The role then runs every
///   operation, starts with [`MigrationMode::Verify`](crate::MigrationMode::Verify)
///   and reads `health()`, without any right on a table.
/// * [`SqlMode::InlineSql`]: `USAGE` on the schema, `SELECT`, `INSERT`,
///   `UPDATE` and `DELETE` on the tables the migrations create, and `SELECT`
///   on the bookkeeping tables (for `Verify`).
///
/// Idempotent: run it again after a migration, or switch a role's mode by
/// running it for the other mode (rights of the first mode stay until
/// [`revoke_runtime_role`]). A reinstallation of the procedures keeps the
/// runtime roles' `EXECUTE` and extends it to procedures a new build adds,
/// so a re-run is needed only for inline roles after a migration adds a
/// table. Runs as the schema's owner (or a superuser), in one transaction
/// holding the schema's DDL lock, and checks the result.
///
/// # Errors
/// [`PostgresProviderError::Rejected`] with [`sqlstate::INVALID_INPUT`] when
/// `role` is `public` (to PostgreSQL, `PUBLIC`: every role of the server,
/// quoted or not) or a predefined role (`pg_...`, whose members would all
/// gain the rights), before anything is granted; with [`sqlstate::NOT_FOUND`]
/// when the schema holds no tenant, or, in procedure mode, no procedures;
/// [`PostgresProviderError::InsufficientPrivilege`] when the grants did not take
/// effect (the connecting role does not own the schema's objects); database
/// errors (an unknown role among them).
pub async fn grant_runtime_role(
    pool: &PgPool,
    schema: &SchemaName,
    role: &str,
    mode: SqlMode,
) -> Result<RuntimeRights> {
    refuse_shared_grantee(role)?;
    let mut tx = pool.begin_with(crate::pooler::READ_COMMITTED).await?;
    lock_schema(&mut tx, schema).await?;
    if !is_tenant(&mut tx, schema).await? {
        return Err(not_a_tenant(schema, "nothing granted"));
    }
    let functions = our_functions(&mut tx, schema).await?;
    let tables: Vec<String> = created_tables()
        .into_iter()
        .filter(|t| !BOOKKEEPING_TABLES.contains(&t.as_str()))
        .collect();
    let statements: Vec<String> = sqlx::query_scalar(GRANT_RUNTIME)
        .bind(schema.as_str())
        .bind(role)
        .bind(mode_name(mode))
        .bind(&functions)
        .bind(&tables)
        .bind(BOOKKEEPING_TABLES)
        .fetch_all(&mut *tx)
        .await?;
    for statement in &statements {
        tx.execute(crate::sql::audited(statement)).await?;
    }
    let (grantor, rights) = rights(&mut tx, schema, role).await?;
    if mode == SqlMode::StoredProcedures && rights.functions == 0 {
        return Err(PostgresProviderError::rejected(
            sqlstate::NOT_FOUND,
            format!(
                "schema \"{schema}\" has no stored procedures; nothing granted: \
                 migrate it in procedure mode first"
            ),
        ));
    }
    let complete = rights.usage
        && match mode {
            SqlMode::StoredProcedures => {
                rights.executable_functions == rights.functions && rights.public_functions == 0
            }
            SqlMode::InlineSql => {
                rights.readable_tables == created_tables().len()
                    && rights.writable_tables >= tables.len()
            }
        };
    if !complete {
        return Err(PostgresProviderError::InsufficientPrivilege {
            schema: schema.to_string(),
            role: grantor,
            action: "grant rights on".to_string(),
            missing: format!(
                "the grants to \"{role}\" did not take effect ({rights:?}): run them as \
                 the owner of the schema's objects"
            ),
        });
    }
    tx.commit().await?;
    tracing::info!(schema = %schema, role, sql_mode = %mode, "granted runtime role");
    Ok(rights)
}

/// Refuses a grantee that is not one role: `public`, which a `GRANT` reads
/// as `PUBLIC` (every role) even quoted, and the predefined `pg_` roles
/// (PostgreSQL reserves the prefix), whose rights reach all their members.
fn refuse_shared_grantee(role: &str) -> Result<()> {
    let what = if role == "public" {
        "is PUBLIC to PostgreSQL: every role of the server"
    } else if role.starts_with("pg_") {
        "is a predefined role: every role that is a member of it"
    } else {
        return Ok(());
    };
    Err(PostgresProviderError::rejected(
        sqlstate::INVALID_INPUT,
        format!(
            "role \"{role}\" {what} would hold the tenant's rights; nothing granted: \
             name a role of the runtime's own"
        ),
    ))
}

/// Takes from `role` every right it holds on `schema` and on the objects in
/// it (functions, tables, sequences, the schema's `USAGE`), whoever granted
/// them through this crate or by hand. Rights the role holds through
/// `PUBLIC` or another role it belongs to stay; the result shows what is
/// left. Idempotent; runs in one transaction holding the schema's DDL lock.
///
/// # Errors
/// [`PostgresProviderError::Rejected`] with [`sqlstate::NOT_FOUND`] when the
/// schema holds no tenant; database errors.
pub async fn revoke_runtime_role(
    pool: &PgPool,
    schema: &SchemaName,
    role: &str,
) -> Result<RuntimeRights> {
    let mut tx = pool.begin_with(crate::pooler::READ_COMMITTED).await?;
    lock_schema(&mut tx, schema).await?;
    if !is_tenant(&mut tx, schema).await? {
        return Err(not_a_tenant(schema, "nothing revoked"));
    }
    let statements: Vec<String> = sqlx::query_scalar(REVOKE_RUNTIME)
        .bind(schema.as_str())
        .bind(role)
        .fetch_all(&mut *tx)
        .await?;
    for statement in &statements {
        tx.execute(crate::sql::audited(statement)).await?;
    }
    let (_, rights) = rights(&mut tx, schema, role).await?;
    tx.commit().await?;
    tracing::info!(schema = %schema, role, "revoked runtime role");
    Ok(rights)
}

/// What `role` holds on `schema` (read-only; any role may ask).
///
/// # Errors
/// Database errors (an unknown role among them).
pub async fn runtime_rights(
    pool: &PgPool,
    schema: &SchemaName,
    role: &str,
) -> Result<RuntimeRights> {
    let mut conn = pool.acquire().await?;
    Ok(rights(&mut conn, schema, role).await?.1)
}

/// The connecting role's name and what `role` holds on `schema`.
async fn rights(
    conn: &mut PgConnection,
    schema: &SchemaName,
    role: &str,
) -> Result<(String, RuntimeRights)> {
    let functions = our_functions(conn, schema).await?;
    let row = sqlx::query(RUNTIME_RIGHTS)
        .bind(schema.as_str())
        .bind(role)
        .bind(&functions)
        .bind(created_tables())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| not_a_tenant(schema, "no such schema"))?;
    let count = |column: &str| -> Result<usize> {
        let n: i64 = row.try_get(column)?;
        usize::try_from(n).map_err(|e| PostgresProviderError::decode(column, e))
    };
    let rights = RuntimeRights {
        schema: schema.clone(),
        role: role.to_string(),
        usage: row.try_get("usage")?,
        executable_functions: count("executable")?,
        functions: count("functions")?,
        public_functions: count("public_executable")?,
        readable_tables: count("readable_tables")?,
        writable_tables: count("writable_tables")?,
    };
    Ok((row.try_get("grantor")?, rights))
}

fn mode_name(mode: SqlMode) -> &'static str {
    match mode {
        SqlMode::StoredProcedures => "procedures",
        SqlMode::InlineSql => "inline",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables named in a documented `GRANT ... ON TABLE` list of
    /// `text`, starting at the line that holds `grant`, up to its `TO`.
    fn documented_tables(text: &str, grant: &str) -> Vec<String> {
        let Some(at) = text.find(grant) else {
            panic!("no `{grant}` in the document");
        };
        let block = &text[at + grant.len()..];
        let block = &block[..block.find(" TO ").unwrap_or(block.len())];
        let mut tables: Vec<String> = block
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|word| word.strip_prefix("tenant_a."))
            .map(str::to_owned)
            .collect();
        tables.sort();
        tables
    }

    /// An operator who grants an inline runtime role by hand, as
    /// docs/operations.md shows, grants what `grant --inline` grants: every
    /// table the migrations create, and only the bookkeeping to read.
    #[test]
    fn the_documented_inline_grants_name_the_tables_grant_names() {
        let doc = include_str!("../../docs/operations.md");
        let mut runtime: Vec<String> = created_tables()
            .into_iter()
            .filter(|t| !BOOKKEEPING_TABLES.contains(&t.as_str()))
            .collect();
        runtime.sort();
        assert_eq!(
            documented_tables(doc, "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE"),
            runtime,
            "docs/operations.md, \"Inline mode\": the tables an inline role writes"
        );
        let mut bookkeeping: Vec<String> =
            BOOKKEEPING_TABLES.iter().map(|t| (*t).to_owned()).collect();
        bookkeeping.sort();
        assert_eq!(
            documented_tables(doc, "GRANT SELECT ON TABLE"),
            bookkeeping,
            "docs/operations.md, \"Inline mode\": the tables an inline role reads"
        );
    }
}
