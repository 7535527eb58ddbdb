//! One error type for the crate, and the one place that decides whether a
//! failure is worth retrying.

use duroxide::providers::ProviderError;

/// SQLSTATE codes this crate reacts to, by name.
///
/// The `DX...` codes are raised by our own stored procedures (and by the
/// inline statements that mirror them) for domain failures; all are permanent.
pub mod sqlstate {
    /// `40001`: the transaction lost a serialization race; retry it.
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `40P01`: deadlock detected; the victim may retry.
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `55P03`: a `NOWAIT` lock was not available.
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    /// `57014`: statement cancelled (statement_timeout or pg_cancel_backend).
    pub const QUERY_CANCELED: &str = "57014";
    /// `57P01`: the server is shutting down (or the backend was terminated).
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `57P02`: the server crashed.
    pub const CRASH_SHUTDOWN: &str = "57P02";
    /// `57P03`: the server is starting up or in recovery.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// `53300`: too many connections.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `0A000`: raised as "cached plan must not change result type" after DDL.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `23505`: unique violation (for example a duplicate history event id).
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `23502`: not-null violation.
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// `22021`: a byte the server encoding cannot store (such as NUL).
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    /// `DX001`: the lock token is unknown (never issued, already acked, or stolen).
    pub const INVALID_LOCK_TOKEN: &str = "DX001";
    /// `DX002`: the lock token was valid but its lease has expired.
    pub const LOCK_EXPIRED: &str = "DX002";
    /// `DX003`: the instance or execution does not exist.
    pub const NOT_FOUND: &str = "DX003";
    /// `DX004`: the operation is refused in the instance's current state
    /// (deleting a running instance without `force`, a sub-orchestration, ...).
    pub const INVALID_STATE: &str = "DX004";
    /// `DX005`: the request itself is malformed.
    pub const INVALID_INPUT: &str = "DX005";

    /// Class prefixes whose every code means the connection is gone (`08`) or
    /// the server ran out of a resource for a while (`53`).
    pub(crate) const RETRYABLE_CLASSES: [&str; 2] = ["08", "53"];
}

/// Errors returned by `duroxide-postgres`.
///
/// Trait methods convert this into duroxide's [`ProviderError`]; the
/// retryable flag comes from [`PgProviderError::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgProviderError {
    /// The schema name is not an identifier we accept.
    #[error("invalid schema name \"{name}\": {reason}")]
    InvalidSchemaName {
        /// The rejected name (escaped for display).
        name: String,
        /// Which rule it broke.
        reason: String,
    },

    /// Input the database cannot store or the provider cannot accept.
    #[error("invalid input in {field}: {reason}")]
    InvalidInput {
        /// The parameter or field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value read from the database could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// The schema was migrated by a newer build of this crate.
    #[error(
        "schema \"{schema}\" is at migration version {found}, newer than this build knows ({known}); upgrade duroxide-postgres"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Highest version recorded in the schema.
        found: i64,
        /// Highest version embedded in this binary.
        known: i64,
    },

    /// An applied migration's text differs from the one embedded in this build.
    #[error(
        "schema \"{schema}\": applied migration {version} ({name}) has checksum {applied}, this build has {embedded}; migrations must never be edited once released"
    )]
    MigrationChanged {
        /// The schema.
        schema: String,
        /// The migration version.
        version: i64,
        /// The migration's file name.
        name: String,
        /// Checksum recorded in the database (hex).
        applied: String,
        /// Checksum of the embedded file (hex).
        embedded: String,
    },

    /// Migrations are disabled and the schema is not up to date.
    #[error("schema \"{schema}\" is not ready and migrations are disabled: {reason}")]
    SchemaNotReady {
        /// The schema.
        schema: String,
        /// What is missing or stale.
        reason: String,
    },

    /// A domain refusal decided in Rust by inline SQL, mirroring what the
    /// stored procedure raises with the same `DX...` SQLSTATE and message.
    #[error("{message}")]
    Rejected {
        /// The `DX...` code the procedure would raise (see [`sqlstate`]).
        sqlstate: &'static str,
        /// The message the procedure would raise.
        message: String,
    },

    /// An inline-SQL transaction's task ended without finishing (its runtime
    /// is shutting down); the server rolled the transaction back. Retryable.
    #[error("inline transaction interrupted: {reason}")]
    Interrupted {
        /// What stopped the task.
        reason: String,
    },

    /// Any database or driver error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Result alias used throughout the crate.
pub type Result<T, E = PgProviderError> = std::result::Result<T, E>;

impl PgProviderError {
    /// Shorthand for [`PgProviderError::InvalidInput`].
    pub(crate) fn invalid_input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`PgProviderError::Decode`].
    pub(crate) fn decode(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Shorthand for [`PgProviderError::Rejected`].
    pub(crate) fn rejected(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self::Rejected {
            sqlstate,
            message: message.into(),
        }
    }

    /// The SQLSTATE of the failure: the server's, or the `DX...` code of a
    /// refusal decided by inline SQL. Both SQL modes report the same codes.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            Self::Rejected { sqlstate, .. } => Some((*sqlstate).to_string()),
            _ => None,
        }
    }

    /// Whether retrying the same operation may succeed.
    ///
    /// Retryable: serialization failures, deadlocks, lost or refused
    /// connections, server shutdown or recovery, resource exhaustion,
    /// cancelled statements, pool time-outs, and plans invalidated by DDL.
    /// Everything else (constraint violations, invalid lock tokens, bad input,
    /// decode failures, schema problems) is permanent.
    pub fn is_retryable(&self) -> bool {
        use sqlstate::*;
        match self {
            Self::Database(err) => match err {
                sqlx::Error::Database(db) => {
                    let Some(code) = db.code() else { return false };
                    let code = code.as_ref();
                    matches!(
                        code,
                        SERIALIZATION_FAILURE
                            | DEADLOCK_DETECTED
                            | LOCK_NOT_AVAILABLE
                            | QUERY_CANCELED
                            | ADMIN_SHUTDOWN
                            | CRASH_SHUTDOWN
                            | CANNOT_CONNECT_NOW
                            | TOO_MANY_CONNECTIONS
                            | FEATURE_NOT_SUPPORTED
                    ) || RETRYABLE_CLASSES
                        .iter()
                        .any(|class| code.starts_with(class))
                }
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            Self::Interrupted { .. } => true,
            _ => false,
        }
    }

    /// Converts into duroxide's error for the named trait operation.
    pub(crate) fn into_provider_error(self, operation: &str) -> ProviderError {
        let message = match &self {
            Self::Database(sqlx::Error::Database(db)) => db.message().to_string(),
            other => other.to_string(),
        };
        if self.is_retryable() {
            ProviderError::retryable(operation, message)
        } else {
            ProviderError::permanent(operation, message)
        }
    }
}

impl From<PgProviderError> for ProviderError {
    fn from(err: PgProviderError) -> Self {
        err.into_provider_error("postgres")
    }
}
