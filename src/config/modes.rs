//! The two choices a provider makes at start: whether it may change the
//! schema, and how its operations reach the database.

/// Whether a provider may change the schema when it starts.
///
/// Parses from `apply` / `verify` ([`std::str::FromStr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MigrationMode {
    /// Apply pending migrations and reinstall changed procedures (default).
    #[default]
    Apply,
    /// Run no DDL; refuse to start unless the schema is already current.
    /// For processes whose role may not create tables or functions.
    Verify,
}

/// How provider operations reach the database.
///
/// Both modes use the same tables and behave identically; one schema can be
/// served by processes in either mode at once.
///
/// Parses from `procedures` / `inline` ([`std::str::FromStr`]):
///
/// ```
/// use duroxide_postgres::SqlMode;
/// assert_eq!("inline".parse::<SqlMode>().ok(), Some(SqlMode::InlineSql));
/// assert!("inlined".parse::<SqlMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqlMode {
    /// One call to a stored procedure in the tenant's schema per operation
    /// (default): one round trip, server-side logic.
    #[default]
    StoredProcedures,
    /// The same logic as statements sent from the client, needing no
    /// procedures in the database (for roles that may not create functions,
    /// or to roll back a procedure release without a rebuild). Single-statement
    /// procedures are sent as their own body; the others run as a short
    /// transaction of the procedure's own statements, `statements/NAME/*.sql`.
    InlineSql,
}

impl SqlMode {
    /// Environment variable that overrides the configured mode:
    /// `procedures` or `inline`.
    pub const ENV_VAR: &'static str = "DUROXIDE_POSTGRES_SQL_MODE";

    /// The mode's name as the environment variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlMode::StoredProcedures => "procedures",
            SqlMode::InlineSql => "inline",
        }
    }

    /// `configured`, unless [`SqlMode::ENV_VAR`] names a mode.
    ///
    /// # Errors
    /// [`crate::PostgresProviderError::InvalidInput`] when the variable is set to
    /// something else, so a typo in a rollback is loud rather than ignored.
    pub fn resolve(configured: SqlMode) -> crate::Result<SqlMode> {
        Self::resolve_with(std::env::var(Self::ENV_VAR).ok().as_deref(), configured)
    }

    /// [`SqlMode::resolve`] with the variable's value given.
    fn resolve_with(value: Option<&str>, configured: SqlMode) -> crate::Result<SqlMode> {
        match value {
            Some(value) if !value.trim().is_empty() => value.parse().map_err(|_| {
                crate::PostgresProviderError::invalid_input(
                    Self::ENV_VAR,
                    format!("{value:?} is not `procedures` or `inline`"),
                )
            }),
            _ => Ok(configured),
        }
    }
}

impl std::str::FromStr for SqlMode {
    type Err = crate::PostgresProviderError;

    /// Parses `procedures` / `inline` (case-insensitive, surrounding blanks
    /// ignored; `stored_procedures` and `inline_sql` are accepted too).
    fn from_str(text: &str) -> crate::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "procedures" | "stored_procedures" | "procedure" => Ok(SqlMode::StoredProcedures),
            "inline" | "inline_sql" => Ok(SqlMode::InlineSql),
            _ => Err(crate::PostgresProviderError::invalid_input(
                "sql mode",
                format!("{text:?} is not `procedures` or `inline`"),
            )),
        }
    }
}

impl std::fmt::Display for SqlMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MigrationMode {
    /// The mode's name as [`std::str::FromStr`] spells it: `apply` or `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationMode::Apply => "apply",
            MigrationMode::Verify => "verify",
        }
    }
}

impl std::str::FromStr for MigrationMode {
    type Err = crate::PostgresProviderError;

    /// Parses `apply` / `verify` (case-insensitive, surrounding blanks ignored).
    fn from_str(text: &str) -> crate::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "apply" => Ok(MigrationMode::Apply),
            "verify" => Ok(MigrationMode::Verify),
            _ => Err(crate::PostgresProviderError::invalid_input(
                "migration mode",
                format!("{text:?} is not `apply` or `verify`"),
            )),
        }
    }
}

impl std::fmt::Display for MigrationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_configured_mode() {
        use SqlMode::*;
        assert_eq!(
            SqlMode::resolve_with(None, StoredProcedures).ok(),
            Some(StoredProcedures)
        );
        assert_eq!(
            SqlMode::resolve_with(Some(""), InlineSql).ok(),
            Some(InlineSql)
        );
        assert_eq!(
            SqlMode::resolve_with(Some("inline"), StoredProcedures).ok(),
            Some(InlineSql)
        );
        assert_eq!(
            SqlMode::resolve_with(Some(" Procedures "), InlineSql).ok(),
            Some(StoredProcedures)
        );
        let err =
            SqlMode::resolve_with(Some("inlined"), StoredProcedures).expect_err("typo must fail");
        assert!(err.to_string().contains(SqlMode::ENV_VAR), "{err}");
    }
}
