//! The command's exit codes, and the failure that carries one.

use duroxide_postgres::{PostgresProviderError, sqlstate};

/// Everything worked.
pub const OK: u8 = 0;
/// The operation failed for another reason (a database error, say).
pub const FAILURE: u8 = 1;
/// The command line is wrong (clap's own code for usage errors).
pub const USAGE: u8 = 2;
/// A schema name, a role name or the database URL is not valid.
pub const INVALID: u8 = 3;
/// The database cannot be reached (connection refused, authentication, ...).
pub const CONNECT: u8 = 4;
/// `verify`: a schema has pending migrations or missing procedures.
pub const NOT_READY: u8 = 5;
/// A schema this build must not touch (migrated by a newer build, with an
/// edited migration, another provider's, or, for a migration, owned by a
/// role lacking rights of the connecting one), or a database it cannot
/// use (its encoding).
pub const INCOMPATIBLE: u8 = 6;
/// `tenants drop`: refused (live leases without `--force`, or objects in the
/// schema that duroxide-postgres did not create).
pub const REFUSED: u8 = 7;
/// The schema holds no duroxide-postgres tenant.
pub const NOT_FOUND: u8 = 8;
/// `unreadable`: a tenant has queued items this build cannot decode.
pub const UNREADABLE: u8 = 9;

/// The exit codes as `--help` shows them.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (database error)
  2  usage error (bad arguments, no database URL)
  3  invalid schema name, role or database URL (grant: PUBLIC or a pg_ role)
  4  cannot connect to the database
  5  verify: a schema is not ready (pending migrations, missing procedures)
  6  a schema this build must not touch (migrated by a newer build, edited migration,
     another provider's bookkeeping; migrate: owned by a role lacking rights of the
     connecting one),
     or a database it cannot use (an encoding other than UTF8 or SQL_ASCII)
  7  tenants drop refused (live leases without --force, or objects not ours in the schema)
  8  the schema holds no duroxide-postgres tenant
  9  unreadable: a tenant has queued items this build cannot decode
With --all or several --schema, every schema is attempted and the code is
that of the first one that failed. `tenants list` exits 0 whenever it could
list (a tenant it cannot read shows the error in its row).";

/// A failure to report on stderr, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What went wrong, for a human.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<PostgresProviderError> for Failure {
    fn from(err: PostgresProviderError) -> Self {
        Failure::new(code_of(&err), err.to_string())
    }
}

/// The exit code a library error maps to.
pub fn code_of(err: &PostgresProviderError) -> u8 {
    match err {
        PostgresProviderError::InvalidSchemaName { .. } => INVALID,
        PostgresProviderError::SchemaNotReady { .. } => NOT_READY,
        PostgresProviderError::SchemaTooNew { .. }
        | PostgresProviderError::MigrationChanged { .. }
        | PostgresProviderError::ForeignBookkeeping { .. }
        | PostgresProviderError::SchemaOwnedByAnother { .. }
        | PostgresProviderError::UnsupportedDatabase { .. } => INCOMPATIBLE,
        PostgresProviderError::Rejected { sqlstate, .. } if *sqlstate == sqlstate::NOT_FOUND => {
            NOT_FOUND
        }
        PostgresProviderError::Rejected { sqlstate, .. }
            if *sqlstate == sqlstate::INVALID_INPUT =>
        {
            INVALID
        }
        PostgresProviderError::Rejected { sqlstate, .. }
            if *sqlstate == sqlstate::INVALID_STATE =>
        {
            REFUSED
        }
        PostgresProviderError::Database(err) => connect_code(err).unwrap_or(FAILURE),
        _ => FAILURE,
    }
}

/// [`CONNECT`] or [`INVALID`] for a driver error that means the database
/// cannot be reached, or its URL is wrong; `None` otherwise.
pub fn connect_code(err: &sqlx::Error) -> Option<u8> {
    match err {
        sqlx::Error::Configuration(_) => Some(INVALID),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => Some(CONNECT),
        // 08: connection exception; 28: authorization; 3D000: no such database.
        sqlx::Error::Database(db) => db
            .code()
            .filter(|c| c.starts_with("08") || c.starts_with("28") || c.as_ref() == "3D000")
            .map(|_| CONNECT),
        _ => None,
    }
}
