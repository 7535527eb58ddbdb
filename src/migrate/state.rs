//! What a schema records (its applied migrations and installed procedures),
//! what the connecting role may do with it, and reading both.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Row};

use super::{
    EXISTS, PIN, Procedure, STATE, STATE_FUNCTION, STATE_FUNCTION_LEGACY, SchemaStatus, hex,
    latest_version, migrations, procedures, version_triple,
};
use crate::error::{PostgresProviderError, Result};
use crate::schema::SchemaName;

/// What a migrated schema records: its applied migrations and installed
/// procedures.
pub(super) struct State {
    /// (version, name, checksum) of every applied migration.
    pub(super) applied: Vec<(i64, String, Vec<u8>)>,
    /// (name, checksum) of every recorded procedure whose function exists.
    installed: Vec<(String, Vec<u8>)>,
    /// Every recorded procedure's name, present or not.
    recorded: Vec<String>,
    /// The crate versions recorded for present procedures.
    versions: Vec<String>,
    /// Recorded procedures whose plain name (without the schema's suffix)
    /// a function still holds: a build before the suffix installed it.
    pub(super) legacy: Vec<String>,
}

impl State {
    pub(super) fn from_rows(rows: &[PgRow]) -> Result<Self> {
        let mut state = State {
            applied: Vec::new(),
            installed: Vec::new(),
            recorded: Vec::new(),
            versions: Vec::new(),
            legacy: Vec::new(),
        };
        for row in rows {
            let kind: String = row.try_get("kind")?;
            let name: String = row.try_get("name")?;
            if kind == "legacy" {
                state.legacy.push(name);
                continue;
            }
            let checksum: Vec<u8> = row.try_get("checksum")?;
            if kind == "migration" {
                state
                    .applied
                    .push((row.try_get("version")?, name, checksum));
            } else {
                if row.try_get("present")? {
                    state.installed.push((name.clone(), checksum));
                    if let Some(version) = row.try_get::<Option<String>, _>("crate_version")? {
                        state.versions.push(version);
                    }
                }
                state.recorded.push(name);
            }
        }
        Ok(state)
    }

    /// True when the schema records no procedure (new, inline-only, or
    /// uninstalled): none of ours is installed.
    pub(super) fn records_nothing(&self) -> bool {
        self.recorded.is_empty()
    }

    /// Refuses a schema this build must not touch.
    fn check(&self, schema: &SchemaName) -> Result<()> {
        check_applied(schema, &self.applied)
    }

    /// Embedded procedures missing or recorded with another checksum.
    pub(super) fn stale(&self) -> Vec<Procedure> {
        procedures()
            .into_iter()
            .filter(|p| {
                self.installed
                    .iter()
                    .all(|(name, sum)| name != p.name || sum[..] != p.checksum[..])
            })
            .collect()
    }

    /// Recorded procedures this build no longer embeds.
    pub(super) fn retired(&self) -> Vec<&str> {
        let embedded = procedures();
        self.recorded
            .iter()
            .filter(|name| embedded.iter().all(|p| p.name != name.as_str()))
            .map(String::as_str)
            .collect()
    }

    pub(super) fn status(&self, schema: &SchemaName) -> Result<SchemaStatus> {
        self.check(schema)?;
        Ok(SchemaStatus {
            applied_version: self.applied.iter().map(|(v, _, _)| *v).max(),
            pending_migrations: migrations()
                .iter()
                .filter(|m| self.applied.iter().all(|(v, _, _)| *v != m.version))
                .count(),
            stale_procedures: self.stale().len(),
            retired_procedures: self.retired().len(),
            legacy_procedures: self.legacy.len(),
            procedures_version: self.newest_version(),
        })
    }

    /// The newest crate version recorded for a present procedure (one this
    /// build cannot read wins: it counts as newer).
    fn newest_version(&self) -> Option<String> {
        self.versions
            .iter()
            .max_by_key(|v| (version_triple(v).is_none(), version_triple(v)))
            .cloned()
    }
}

/// Refuses a schema this build must not touch.
fn check_applied(schema: &SchemaName, applied: &[(i64, String, Vec<u8>)]) -> Result<()> {
    let embedded = migrations();
    let known = latest_version();
    for (version, name, checksum) in applied {
        match embedded.iter().find(|m| m.version == *version) {
            None if *version > known => {
                return Err(PostgresProviderError::SchemaTooNew {
                    schema: schema.to_string(),
                    found: *version,
                    known,
                });
            }
            None => {
                return Err(PostgresProviderError::SchemaNotReady {
                    schema: schema.to_string(),
                    reason: format!(
                        "applied migration {version} ({name}) is unknown to this build"
                    ),
                });
            }
            Some(m) if m.checksum[..] != checksum[..] => {
                return Err(PostgresProviderError::MigrationChanged {
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

/// How a refused migration ends its message.
const MIGRATE_HINT: &str = "; run migrations as the schema's owner, and start runtime roles \
     with MigrationMode::Verify";

/// What the connecting role finds in a schema (`migrate/exists.sql`).
pub(super) struct Access {
    /// Both bookkeeping tables exist.
    pub(super) migrated: bool,
    /// `_duroxide_migrations` is another provider's.
    foreign_bookkeeping: bool,
    /// The connecting role (`current_user`).
    role: String,
    /// SELECT on both bookkeeping tables.
    pub(super) can_read: bool,
    /// UPDATE on `_duroxide_migrations`, which its DDL lock needs.
    pub(super) can_lock: bool,
    /// EXECUTE on the schema's `schema_state()`.
    can_call_state: bool,
    /// EXECUTE on the `schema_state()` of a build before the per-schema
    /// procedure suffix, the schema's only one.
    can_call_legacy_state: bool,
    /// The schema's owner (`None`: no such schema).
    schema_owner: Option<String>,
    /// The owner holds every right of the connecting role
    /// (`migrate/owner_trusted.sql`; `None`: no such schema).
    owner_trusted: Option<bool>,
}

/// Database encodings that store any text the provider is sent: UTF8, and
/// SQL_ASCII, which stores the bytes unchecked. Any other (LATIN1, say)
/// refuses, with SQLSTATE 22P05, every payload holding a character it
/// lacks: a permanent failure of that one item, found only when it comes.
const ENCODINGS: [&str; 2] = ["UTF8", "SQL_ASCII"];

impl Access {
    /// One read, in a batch that pins `search_path` first (for the rest of
    /// the caller's transaction, when there is one).
    pub(super) async fn probe(conn: &mut PgConnection, schema: &SchemaName) -> Result<Self> {
        let exists = schema.render(&format!("{PIN}{EXISTS}"));
        let rows = conn.fetch_all(crate::sql::audited(&exists)).await?;
        let Some(row) = rows.first() else {
            return Err(PostgresProviderError::decode("schema access", "no row"));
        };
        let encoding: String = row.try_get("encoding")?;
        if !ENCODINGS.contains(&encoding.as_str()) {
            return Err(PostgresProviderError::UnsupportedDatabase {
                reason: format!(
                    "its encoding is {encoding}, which cannot store every character a payload \
                     may hold; the provider needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')"
                ),
            });
        }
        let access = Self::from_row(row)?;
        access.ours(schema)?;
        Ok(access)
    }

    /// Refuses a schema whose `_duroxide_migrations` another provider
    /// keeps: nothing of this crate may read or change it.
    pub(super) fn ours(&self, schema: &SchemaName) -> Result<()> {
        if self.foreign_bookkeeping {
            return Err(PostgresProviderError::ForeignBookkeeping {
                schema: schema.to_string(),
            });
        }
        Ok(())
    }

    /// One row of `exists.sql`.
    pub(super) fn from_row(row: &PgRow) -> Result<Self> {
        Ok(Self {
            migrated: row.try_get("migrated")?,
            foreign_bookkeeping: row.try_get("foreign_bookkeeping")?,
            role: row.try_get("role")?,
            can_read: row.try_get("can_read")?,
            can_lock: row.try_get("can_lock")?,
            can_call_state: row.try_get("can_call_state")?,
            can_call_legacy_state: row.try_get("can_call_legacy_state")?,
            schema_owner: row.try_get("schema_owner")?,
            owner_trusted: row.try_get("owner_trusted")?,
        })
    }

    /// Refuses a migrated schema the connecting role could migrate (it may
    /// take the DDL lock) whose owner lacks some of its rights: its
    /// bookkeeping may have been planted by whoever created the schema
    /// first, and a migration would build on it ([`PostgresProviderError::SchemaOwnedByAnother`];
    /// `migrate/create_schema.sql` refuses it where the bookkeeping is
    /// created). A runtime role, which may not take the lock, is not asked.
    pub(super) fn owned_by_another(&self, schema: &SchemaName) -> Result<()> {
        match (&self.schema_owner, self.owner_trusted) {
            (Some(owner), Some(false)) if self.migrated && self.can_lock => {
                Err(PostgresProviderError::SchemaOwnedByAnother {
                    schema: schema.to_string(),
                    owner: owner.clone(),
                    role: self.role.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The refusal of a migration by a role without the rights it needs.
    pub(super) fn cannot_migrate(&self, schema: &SchemaName) -> PostgresProviderError {
        let mut missing = Vec::new();
        if !self.can_read {
            missing.push(format!(
                "SELECT on {schema}._duroxide_migrations and {schema}._duroxide_procedures"
            ));
        }
        if !self.can_lock {
            missing.push(format!(
                "UPDATE on {schema}._duroxide_migrations (the schema's DDL lock)"
            ));
        }
        self.insufficient(
            schema,
            "migrate",
            format!("it lacks {}{MIGRATE_HINT}", missing.join(" and ")),
        )
    }

    /// `e`, or the clear refusal it means when the server denied a right.
    pub(super) fn refused(
        &self,
        schema: &SchemaName,
        e: PostgresProviderError,
    ) -> PostgresProviderError {
        match e {
            PostgresProviderError::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some(crate::error::sqlstate::INSUFFICIENT_PRIVILEGE) =>
            {
                self.insufficient(schema, "migrate", format!("{}{MIGRATE_HINT}", db.message()))
            }
            PostgresProviderError::Database(sqlx::Error::Database(db))
                if db.code().as_deref()
                    == Some(crate::error::sqlstate::SCHEMA_OWNED_BY_ANOTHER) =>
            {
                PostgresProviderError::SchemaOwnedByAnother {
                    schema: schema.to_string(),
                    owner: db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(sqlx::postgres::PgDatabaseError::detail)
                        .unwrap_or_default()
                        .to_string(),
                    role: self.role.clone(),
                }
            }
            other => other,
        }
    }

    fn insufficient(
        &self,
        schema: &SchemaName,
        action: &str,
        missing: String,
    ) -> PostgresProviderError {
        PostgresProviderError::InsufficientPrivilege {
            schema: schema.to_string(),
            role: self.role.clone(),
            action: action.to_string(),
            missing,
        }
    }
}

/// The schema's bookkeeping, `None` when it has none: two reads, each a
/// batch that pins `search_path` first (for the rest of the caller's
/// transaction, when there is one).
pub(super) async fn read_state(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Option<State>> {
    let access = Access::probe(conn, schema).await?;
    read_state_as(conn, schema, &access).await
}

/// The schema's bookkeeping as `access` allows reading it: from the tables,
/// or, for a role with EXECUTE only, through `schema_state()`.
pub(super) async fn read_state_as(
    conn: &mut PgConnection,
    schema: &SchemaName,
    access: &Access,
) -> Result<Option<State>> {
    if !access.migrated {
        return Ok(None);
    }
    let query = if access.can_read {
        STATE
    } else if access.can_call_state {
        STATE_FUNCTION
    } else if access.can_call_legacy_state {
        STATE_FUNCTION_LEGACY
    } else {
        return Err(access.insufficient(
            schema,
            "read the migration state of",
            format!(
                "it lacks SELECT on {schema}._duroxide_migrations and \
                 {schema}._duroxide_procedures, or EXECUTE on {schema}.{}() \
                 (duroxide-postgres grant)",
                schema.procedure_name("schema_state")
            ),
        ));
    };
    let state = schema.render(&format!("{PIN}{query}"));
    let rows = conn.fetch_all(crate::sql::audited(&state)).await?;
    Ok(Some(State::from_rows(&rows)?))
}
