//! One error type for the crate, and the one place that decides whether a
//! failure is worth retrying.

use duroxide::providers::ProviderError;

/// SQLSTATE codes this crate reacts to, by name.
///
/// The `DX...` codes are raised by our own stored procedures (and by the
/// inline statements that mirror them) for domain failures, all permanent;
/// and `DX006`, a call at too strict an isolation level, which is retried.
pub mod sqlstate {
    /// `40001`: the transaction lost a serialization race; retry it.
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `40P01`: deadlock detected; the victim may retry.
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `55P03`: a lock was not available: a `NOWAIT` lock, or a wait longer
    /// than `lock_timeout` (a second for every call the provider makes).
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
    /// `57P05`: the server ended a session idle longer than
    /// `idle_session_timeout`; the next use of its pooled connection fails.
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    /// `25P03`: the server ended a session idle inside a transaction longer
    /// than `idle_in_transaction_session_timeout`.
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    /// `25006`: a write in a read-only transaction: the server is a standby
    /// (as right after a failover, before the new primary is reached) or
    /// `default_transaction_read_only` is on for a while.
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    /// `0A000`: a feature the server does not support. Permanent, except
    /// when raised by [`CACHED_PLAN_CHANGED_ROUTINE`] after DDL.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// The English message of the one [`FEATURE_NOT_SUPPORTED`] error that
    /// heals: a prepared statement whose result type DDL changed (sqlx
    /// drops the statement, so the next execution prepares it afresh).
    /// The server translates it under another `lc_messages`; the routine
    /// that raises it ([`CACHED_PLAN_CHANGED_ROUTINE`]) is what tells it
    /// apart.
    pub const CACHED_PLAN_CHANGED: &str = "cached plan must not change result type";
    /// The server function that raises [`CACHED_PLAN_CHANGED`] (the
    /// error's routine field, never translated), as sqlx recognises it too.
    pub const CACHED_PLAN_CHANGED_ROUTINE: &str = "RevalidateCachedQuery";
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
    /// `DX006`: a procedure with more than one statement was called in a
    /// transaction stricter than READ COMMITTED (the connection's
    /// `default_transaction_isolation`), before it did anything. Retryable:
    /// the provider runs the call again in a READ COMMITTED transaction
    /// ([`crate::PostgresProviderError::is_isolation_refused`]).
    pub const WRONG_ISOLATION: &str = "DX006";
    /// `DX007`: a migration found the schema owned by a role that lacks
    /// some right of the connecting role, and created or changed nothing in it
    /// (`migrate/create_schema.sql`;
    /// [`crate::PostgresProviderError::SchemaOwnedByAnother`]).
    pub const SCHEMA_OWNED_BY_ANOTHER: &str = "DX007";
    /// `insufficient_privilege`: the role lacks a right on an object.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// `undefined_table`: a statement named a table that does not exist.
    pub(crate) const UNDEFINED_TABLE: &str = "42P01";
    /// `invalid_schema_name`: a statement named a schema that does not exist.
    pub(crate) const INVALID_SCHEMA_NAME: &str = "3F000";
    /// `dependent_objects_still_exist`: a `RESTRICT` drop met an object
    /// that depends on what it drops.
    pub(crate) const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";

    /// Class prefixes whose every code means the connection is gone (`08`) or
    /// the server ran out of a resource for a while (`53`).
    pub(crate) const RETRYABLE_CLASSES: [&str; 2] = ["08", "53"];
}

/// Errors returned by `duroxide-postgres`.
///
/// Trait methods convert this into duroxide's [`ProviderError`]; the
/// retryable flag comes from [`PostgresProviderError::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresProviderError {
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

    /// The connecting role lacks a privilege the operation needs (a runtime
    /// role with EXECUTE only starting with `MigrationMode::Apply`, say).
    /// Permanent: an operator must grant the right or change the mode.
    #[error("role \"{role}\" may not {action} schema \"{schema}\": {missing}")]
    InsufficientPrivilege {
        /// The schema.
        schema: String,
        /// The connecting role (`current_user`).
        role: String,
        /// What the role tried, e.g. `migrate`.
        action: String,
        /// The right it lacks, and what to do about it.
        missing: String,
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

    /// The schema holds a `_duroxide_migrations` table this crate did not
    /// write: another provider's (duroxide-pg keeps one of that name).
    /// Permanent: found when a provider starts or a schema is migrated or
    /// inspected, before anything is written; the schema is left as it is.
    #[error(
        "schema \"{schema}\" holds a _duroxide_migrations table duroxide-postgres did not create (another provider's, such as duroxide-pg's); it is left as it is: give duroxide-postgres a schema of its own"
    )]
    ForeignBookkeeping {
        /// The schema.
        schema: String,
    },

    /// A migration found the schema owned by a role that lacks some right
    /// of the connecting role (the owner is neither that role, nor a
    /// superuser, nor a role holding that role's rights through
    /// membership): another tenant's role may have created it first under
    /// this tenant's name, or a more privileged role (a superuser, an admin
    /// that is a member of the owner) is migrating a schema a lesser role
    /// owns, which would let that owner replace what the procedures (run
    /// with their installer's rights) read. Permanent: nothing was created
    /// or changed in the schema. Migrate it as its owner; drop it if nobody
    /// should have created it.
    #[error(
        "schema \"{schema}\" is owned by role \"{owner}\", which lacks rights of role \"{role}\" that a migration would put in its hands; nothing was created or changed in it: migrate it as its owner, or drop the schema if nobody should have created it"
    )]
    SchemaOwnedByAnother {
        /// The schema.
        schema: String,
        /// The role that owns it.
        owner: String,
        /// The connecting role (`current_user`).
        role: String,
    },

    /// The history of a claimed turn could not be read for a reason that
    /// may heal (out of memory, a statement cancelled or timed out, a
    /// serialization failure or deadlock: the SQLSTATEs
    /// [`is_retryable`](Self::is_retryable) accepts). The turn was set
    /// aside for a second, its attempt not counted, so the instance is not
    /// poisoned by a passing server condition. Retryable. (Any other
    /// failure reading it comes back as the turn's `history_error`, which
    /// the runtime counts toward poisoning the instance.)
    #[error(
        "instance \"{instance}\": {message}; its turn is set aside for a second, the attempt not counted"
    )]
    HistoryUnavailable {
        /// The instance whose turn was set aside.
        instance: String,
        /// The server's SQLSTATE.
        sqlstate: String,
        /// What the fetch met: the server's message, with its SQLSTATE.
        message: String,
    },

    /// The database cannot hold what the provider stores (an encoding other
    /// than UTF8 or SQL_ASCII). Permanent: found when a provider starts or
    /// a schema is migrated or inspected, before anything is written.
    #[error("the database is not supported: {reason}")]
    UnsupportedDatabase {
        /// What it lacks, and what to do about it.
        reason: String,
    },

    /// A throwaway server (feature `throwaway`) could not be installed or
    /// started. Permanent.
    #[error("throwaway PostgreSQL server: {reason}")]
    Throwaway {
        /// What failed, with the script's output.
        reason: String,
    },

    /// Any database or driver error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Result alias used throughout the crate.
pub type Result<T, E = PostgresProviderError> = std::result::Result<T, E>;

impl PostgresProviderError {
    /// Shorthand for [`PostgresProviderError::InvalidInput`].
    pub(crate) fn invalid_input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`PostgresProviderError::Decode`].
    pub(crate) fn decode(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Shorthand for [`PostgresProviderError::Rejected`].
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
            Self::HistoryUnavailable { sqlstate, .. } => Some(sqlstate.clone()),
            Self::SchemaOwnedByAnother { .. } => {
                Some(sqlstate::SCHEMA_OWNED_BY_ANOTHER.to_string())
            }
            _ => None,
        }
    }

    /// Whether the statement named a schema or table that does not exist:
    /// for a read of many schemas at once, one of them was dropped (or
    /// half-created) while it ran.
    pub(crate) fn names_a_missing_object(&self) -> bool {
        matches!(
            self.sqlstate().as_deref(),
            Some(sqlstate::UNDEFINED_TABLE | sqlstate::INVALID_SCHEMA_NAME)
        )
    }

    /// Whether a read of many schemas at once met DDL on one of them: a
    /// schema dropped while it ran ([`Self::names_a_missing_object`]), or a
    /// deadlock with a drop or a migration that locks the tables it reads
    /// in another order. Read one schema at a time, it then fails, at
    /// most, for that schema alone.
    pub(crate) fn met_ddl_on_a_schema(&self) -> bool {
        self.names_a_missing_object() || self.is_deadlock()
    }

    /// Whether the server broke a deadlock by failing this statement: its
    /// locks are gone, so the same read once more waits for the other
    /// transaction instead.
    pub(crate) fn is_deadlock(&self) -> bool {
        self.sqlstate().as_deref() == Some(sqlstate::DEADLOCK_DETECTED)
    }

    /// Whether retrying the same operation may succeed.
    ///
    /// Retryable: serialization failures, deadlocks, lost or refused
    /// connections (including sessions the server ended as idle), server
    /// shutdown or recovery, a read-only server (a standby after a
    /// failover), resource exhaustion, cancelled statements, pool
    /// time-outs, and plans invalidated by DDL. Everything else (constraint
    /// violations, invalid lock tokens, bad input, decode failures, schema
    /// problems, unsupported features, a closed pool) is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(err) => match err {
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    let routine = db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(sqlx::postgres::PgDatabaseError::routine);
                    retryable_sqlstate(&code, db.message(), routine)
                }),
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed => true,
                // `PoolClosed` means the pool was closed: the provider is
                // shutting down, and no retry can succeed.
                _ => false,
            },
            Self::Interrupted { .. } | Self::HistoryUnavailable { .. } => true,
            _ => false,
        }
    }

    /// Whether a server failure with SQLSTATE `code` and `message`, met by
    /// a statement the provider caught on the server (a procedure's
    /// exception block) or in a transaction it rolled back, may heal:
    /// [`is_retryable`](Self::is_retryable)'s rule, for a code with no
    /// error value around it.
    pub(crate) fn heals(code: &str, message: &str) -> bool {
        retryable_sqlstate(code, message, None)
    }

    /// Whether the connection or the server went away: the connection
    /// broke (an I/O error: a closed socket, a broken pipe, a server whose
    /// Unix socket is gone while it restarts), the server ended the session
    /// (shutdown, crash, idle time-out, SQLSTATE class 08) or is not
    /// accepting connections yet. Such an operation may succeed on another
    /// connection once the server is back; acks, abandons and lock renewals
    /// wait for that (up to the pool's acquire timeout). A subset of
    /// [`is_retryable`](Self::is_retryable).
    pub fn is_connection_lost(&self) -> bool {
        use sqlstate::*;
        match self {
            Self::Database(sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed) => true,
            Self::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || matches!(
                        code.as_ref(),
                        ADMIN_SHUTDOWN
                            | CRASH_SHUTDOWN
                            | CANNOT_CONNECT_NOW
                            | IDLE_SESSION_TIMEOUT
                            | IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                    )
            }),
            _ => false,
        }
    }

    /// Whether the server refused a write because it is read-only
    /// (SQLSTATE `25006`): a standby, as right after a failover before the
    /// new primary is reached, or a database with
    /// `default_transaction_read_only` on for a while. Acks, abandons and
    /// lock renewals wait it out as they wait out a lost connection (up to
    /// the pool's acquire timeout). A subset of
    /// [`is_retryable`](Self::is_retryable).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Self::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some(sqlstate::READ_ONLY_SQL_TRANSACTION)
        )
    }

    /// Whether the statement gave up waiting for a lock (SQLSTATE `55P03`,
    /// `lock_timeout`): the provider's calls wait at most a second for one,
    /// so that a lock on their tenant's table does not keep a connection
    /// other tenants need. Its transaction rolled back; the provider tries
    /// acks, abandons, renewals, enqueues, reads and admin calls again for
    /// as long as the lock lasts (docs/architecture.md, "Fetch admission on
    /// a shared pool"); fetches are retried by duroxide. A subset of
    /// [`is_retryable`](Self::is_retryable).
    pub fn is_lock_timeout(&self) -> bool {
        self.sqlstate().as_deref() == Some(sqlstate::LOCK_NOT_AVAILABLE)
    }

    /// Whether the call ran at an isolation level stricter than READ
    /// COMMITTED, which every provider transaction is written for, and
    /// wrote nothing: a procedure refused it (SQLSTATE `DX006`), or a
    /// statement lost a serialization race (`40001`, which READ COMMITTED
    /// never raises for the provider's statements). The connection's
    /// `default_transaction_isolation` is stricter; the provider then runs
    /// its calls in READ COMMITTED transactions of their own and retries
    /// this one at once (docs/architecture.md, "Isolation"). A subset of
    /// [`is_retryable`](Self::is_retryable).
    pub fn is_isolation_refused(&self) -> bool {
        matches!(
            self.sqlstate().as_deref(),
            Some(sqlstate::WRONG_ISOLATION | sqlstate::SERIALIZATION_FAILURE)
        )
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

/// Whether a server error with SQLSTATE `code`, `message` and the
/// server `routine` that raised it (when known) may heal.
fn retryable_sqlstate(code: &str, message: &str, routine: Option<&str>) -> bool {
    use sqlstate::*;
    match code {
        SERIALIZATION_FAILURE
        | WRONG_ISOLATION
        | DEADLOCK_DETECTED
        | LOCK_NOT_AVAILABLE
        | QUERY_CANCELED
        | ADMIN_SHUTDOWN
        | CRASH_SHUTDOWN
        | CANNOT_CONNECT_NOW
        | IDLE_SESSION_TIMEOUT
        | IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        | READ_ONLY_SQL_TRANSACTION
        | TOO_MANY_CONNECTIONS => true,
        // The routine whatever the server's language; the English message
        // where the routine is not known.
        FEATURE_NOT_SUPPORTED => {
            routine == Some(CACHED_PLAN_CHANGED_ROUTINE) || message.contains(CACHED_PLAN_CHANGED)
        }
        _ => RETRYABLE_CLASSES
            .iter()
            .any(|class| code.starts_with(class)),
    }
}

impl From<PostgresProviderError> for ProviderError {
    fn from(err: PostgresProviderError) -> Self {
        err.into_provider_error("postgres")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;

    use super::sqlstate::*;
    use super::*;

    /// A server error as sqlx reports it, with any code and message.
    #[derive(Debug)]
    struct ServerError {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A server error with SQLSTATE `code` and `message`, as sqlx reports it.
    pub(crate) fn server(code: &'static str, message: &'static str) -> PostgresProviderError {
        PostgresProviderError::Database(sqlx::Error::Database(Box::new(ServerError {
            code,
            message,
        })))
    }

    /// Retryable as duroxide sees it, after the conversion every trait method makes.
    fn retryable(err: PostgresProviderError) -> bool {
        err.into_provider_error("test").is_retryable()
    }

    #[test]
    fn sessions_the_server_ended_as_idle_are_retryable() {
        let idle = "terminating connection due to idle-session timeout";
        assert!(retryable(server(IDLE_SESSION_TIMEOUT, idle)));
        let in_tx = "terminating connection due to idle-in-transaction timeout";
        assert!(retryable(server(
            IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            in_tx
        )));
    }

    #[test]
    fn a_read_only_server_is_retryable() {
        let message = "cannot execute INSERT in a read-only transaction";
        assert!(retryable(server(READ_ONLY_SQL_TRANSACTION, message)));
        // Leased work waits it out; it is not a lost connection.
        assert!(server(READ_ONLY_SQL_TRANSACTION, message).is_read_only());
        assert!(!server(READ_ONLY_SQL_TRANSACTION, message).is_connection_lost());
        assert!(!server(SERIALIZATION_FAILURE, "could not serialize access").is_read_only());
    }

    #[test]
    fn a_lock_wait_given_up_is_retryable_and_told_apart() {
        let message = "canceling statement due to lock timeout";
        assert!(retryable(server(LOCK_NOT_AVAILABLE, message)));
        // Leased work waits it out, with no deadline; it is not an outage.
        let e = server(LOCK_NOT_AVAILABLE, message);
        assert!(e.is_lock_timeout());
        assert!(!e.is_connection_lost() && !e.is_read_only());
        for code in [SERIALIZATION_FAILURE, DEADLOCK_DETECTED, QUERY_CANCELED] {
            assert!(!server(code, "other").is_lock_timeout(), "{code}");
        }
    }

    #[test]
    fn a_stricter_isolation_is_retryable_and_told_apart() {
        let refused = "duroxide-postgres runs at READ COMMITTED, this transaction is serializable";
        assert!(retryable(server(WRONG_ISOLATION, refused)));
        assert!(server(WRONG_ISOLATION, refused).is_isolation_refused());
        let race = "could not serialize access due to concurrent update";
        assert!(server(SERIALIZATION_FAILURE, race).is_isolation_refused());
        for code in [DEADLOCK_DETECTED, LOCK_NOT_AVAILABLE, INVALID_LOCK_TOKEN] {
            assert!(!server(code, "other").is_isolation_refused(), "{code}");
        }
    }

    #[test]
    fn a_changed_cached_plan_is_told_by_its_routine_in_any_language() {
        let german = "gecachter Plan darf den Ergebnistyp nicht ändern";
        assert!(retryable_sqlstate(
            FEATURE_NOT_SUPPORTED,
            german,
            Some(CACHED_PLAN_CHANGED_ROUTINE)
        ));
        assert!(!retryable_sqlstate(FEATURE_NOT_SUPPORTED, german, None));
        assert!(!retryable_sqlstate(
            FEATURE_NOT_SUPPORTED,
            "LISTEN wird nicht unterstützt",
            Some("standard_ProcessUtility")
        ));
    }

    #[test]
    fn only_a_changed_cached_plan_of_class_0a000_is_retryable() {
        let plan = "cached plan must not change result type";
        assert!(retryable(server(FEATURE_NOT_SUPPORTED, plan)));
        for message in [
            "cannot use a deferrable unique constraint for ON CONFLICT",
            "LISTEN is not supported",
        ] {
            assert!(
                !retryable(server(FEATURE_NOT_SUPPORTED, message)),
                "{message}"
            );
        }
    }

    #[test]
    fn a_lost_connection_or_server_is_told_apart_from_other_retryable_errors() {
        use std::io::{Error, ErrorKind};
        let io = |kind| PostgresProviderError::Database(sqlx::Error::Io(Error::from(kind)));
        // A restarting server's Unix socket is gone (NotFound); a pooled
        // connection it closed breaks on the next write (BrokenPipe).
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
        ] {
            let err = io(kind);
            assert!(err.is_connection_lost(), "{kind:?}");
            assert!(retryable(io(kind)), "{kind:?}");
        }
        for code in [
            sqlstate::ADMIN_SHUTDOWN,
            sqlstate::CRASH_SHUTDOWN,
            sqlstate::CANNOT_CONNECT_NOW,
            sqlstate::IDLE_SESSION_TIMEOUT,
            "08006",
        ] {
            assert!(server(code, "gone").is_connection_lost(), "{code}");
        }
        // Retryable on the same connection's server, but not a lost one.
        for code in [
            sqlstate::SERIALIZATION_FAILURE,
            sqlstate::DEADLOCK_DETECTED,
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            sqlstate::TOO_MANY_CONNECTIONS,
            sqlstate::LOCK_EXPIRED,
        ] {
            assert!(!server(code, "other").is_connection_lost(), "{code}");
        }
        assert!(!PostgresProviderError::Database(sqlx::Error::PoolTimedOut).is_connection_lost());
        assert!(!PostgresProviderError::Database(sqlx::Error::PoolClosed).is_connection_lost());
    }

    #[test]
    fn a_closed_pool_is_permanent() {
        assert!(!retryable(PostgresProviderError::Database(
            sqlx::Error::PoolClosed
        )));
        assert!(retryable(PostgresProviderError::Database(
            sqlx::Error::PoolTimedOut
        )));
    }

    #[test]
    fn transient_codes_stay_retryable_and_domain_codes_permanent() {
        for code in [
            SERIALIZATION_FAILURE,
            DEADLOCK_DETECTED,
            LOCK_NOT_AVAILABLE,
            QUERY_CANCELED,
            ADMIN_SHUTDOWN,
            CRASH_SHUTDOWN,
            CANNOT_CONNECT_NOW,
            TOO_MANY_CONNECTIONS,
            "08006",
            "53100",
        ] {
            assert!(retryable(server(code, "transient")), "{code}");
        }
        for code in [
            UNIQUE_VIOLATION,
            NOT_NULL_VIOLATION,
            CHARACTER_NOT_IN_REPERTOIRE,
            INVALID_LOCK_TOKEN,
            LOCK_EXPIRED,
            NOT_FOUND,
            INVALID_STATE,
            INVALID_INPUT,
        ] {
            assert!(!retryable(server(code, "permanent")), "{code}");
        }
    }
}
