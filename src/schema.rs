//! Validated, always-quoted schema names: one schema per tenant.

use crate::error::{PostgresProviderError, Result};

/// The marker every SQL template uses where the tenant's schema goes.
///
/// Templates are plain SQL with `{{schema}}.table` in place of a qualified
/// name; [`SchemaName::render`] substitutes the quoted identifier once per
/// provider, never per call.
pub(crate) const SCHEMA_MARKER: &str = "{{schema}}";

/// The marker templates use for "now" in milliseconds since the Unix epoch,
/// from the database clock.
///
/// It renders to an expression, not a function call, so inline SQL needs no
/// helper function in the database and procedures pay no call overhead.
/// `clock_timestamp()`, not `now()`: a lease starts when the claim is made,
/// not when the surrounding transaction began.
pub(crate) const NOW_MS_MARKER: &str = "{{now_ms}}";

/// The marker templates use for the schema's name as the contents of a
/// string literal (`'{{schema_name}}'`), for a query over many schemas that
/// tags each row with its schema. Safe there: a validated identifier of at
/// most 63 bytes holds no quote.
pub(crate) const NAME_MARKER: &str = "{{schema_name}}";

/// What [`NOW_MS_MARKER`] renders to.
pub(crate) const NOW_MS_SQL: &str =
    "(extract(epoch FROM pg_catalog.clock_timestamp())::numeric * 1000::numeric)::bigint";

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1), in bytes.
pub const MAX_SCHEMA_NAME_BYTES: usize = 63;

/// A schema name that is safe to put in SQL: validated on construction and
/// always emitted quoted.
///
/// Accepted: 1 to 63 bytes of ASCII letters, digits and `_`, not starting with
/// a digit, and not starting with `pg_` (reserved by PostgreSQL). Case is
/// preserved: because the name is always quoted, `Tenant_A` and `tenant_a` are
/// different schemas.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName {
    name: String,
    quoted: String,
}

impl SchemaName {
    /// Validates `name` and returns it ready for use in SQL.
    ///
    /// # Errors
    /// [`PostgresProviderError::InvalidSchemaName`] naming the rule that failed.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason: &str| PostgresProviderError::InvalidSchemaName {
            name: name.escape_debug().to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.len() > MAX_SCHEMA_NAME_BYTES {
            return Err(invalid("must be at most 63 bytes"));
        }
        let mut chars = name.chars();
        if chars.next().is_some_and(|c| c.is_ascii_digit()) {
            return Err(invalid("must not start with a digit"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("may contain only ASCII letters, digits and '_'"));
        }
        if name.to_ascii_lowercase().starts_with("pg_") {
            return Err(invalid(
                "names starting with 'pg_' are reserved by PostgreSQL",
            ));
        }
        Ok(Self {
            name: name.to_string(),
            quoted: format!("\"{name}\""),
        })
    }

    /// The name as given (unquoted), e.g. for `information_schema` lookups.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The quoted identifier, e.g. `"tenant_a"`.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }

    /// Substitutes this schema (see [`SCHEMA_MARKER`]), its name (see
    /// [`NAME_MARKER`]) and the clock expression (see [`NOW_MS_MARKER`]) into
    /// a SQL template.
    pub(crate) fn render(&self, template: &str) -> String {
        template
            .replace(SCHEMA_MARKER, &self.quoted)
            .replace(NAME_MARKER, &self.name)
            .replace(NOW_MS_MARKER, NOW_MS_SQL)
    }
}

impl std::fmt::Display for SchemaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["public", "tenant_a", "_t1", "Tenant_B", &"a".repeat(63)] {
            let s = SchemaName::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(s.quoted(), format!("\"{ok}\""));
        }
    }

    #[test]
    fn rejects_injection_and_bad_shapes() {
        for bad in [
            "",
            "a\"; drop schema public cascade; --",
            "a b",
            "1abc",
            "pg_catalog",
            "a.b",
            "tenant\0",
            "schéma",
            &"a".repeat(64),
        ] {
            let err = SchemaName::new(bad).expect_err(bad);
            assert!(
                matches!(err, PostgresProviderError::InvalidSchemaName { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn render_replaces_every_marker() {
        let s = SchemaName::new("t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.render("SELECT {{schema}}.f(), {{schema}}.g()"),
            "SELECT \"t\".f(), \"t\".g()"
        );
    }
}
