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

/// The marker templates put after every stored procedure's name
/// (`{{schema}}.fetch_work_item{{suffix}}(`): it renders to the schema's
/// [`procedure suffix`](SchemaName::procedure_suffix).
///
/// PostgreSQL resolves a function name by reading every function of that
/// name in the database, whatever schema the call names; with the same
/// names in every tenant's schema, a backend's first call of a procedure
/// read one entry per tenant (about 9.5 ms with 2,000 tenants, and the
/// entries' catalog cache kept for good). A suffix per schema leaves one.
pub(crate) const SUFFIX_MARKER: &str = "{{suffix}}";

/// The marker for whether a schema's owner, `o.nspowner`, already holds
/// every right of the connecting role: a boolean expression the migration's
/// refusal of another role's schema and the access probe share
/// (`migrate/owner_trusted.sql`).
pub(crate) const OWNER_TRUSTED_MARKER: &str = "{{owner_trusted}}";

/// What [`OWNER_TRUSTED_MARKER`] renders to.
const OWNER_TRUSTED_SQL: &str = include_str!("../migrate/owner_trusted.sql");

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
    suffix: String,
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
            suffix: procedure_suffix(name),
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

    /// What every stored procedure's name in this schema ends with: `__`
    /// and the first eight hex digits of the SHA-256 of the schema's name,
    /// e.g. `fetch_work_item__1b4f0e98`. Names unique per schema keep a
    /// procedure's name lookup to one entry however many tenants the
    /// database holds (two schemas sharing a suffix share a lookup of two).
    pub fn procedure_suffix(&self) -> &str {
        &self.suffix
    }

    /// The name stored procedure `procedure` (its file name, such as
    /// `fetch_work_item`) has in this schema, unquoted: the name with
    /// [`procedure_suffix`](Self::procedure_suffix) appended.
    pub fn procedure_name(&self, procedure: &str) -> String {
        format!("{procedure}{}", self.suffix)
    }

    /// Substitutes this schema (see [`SCHEMA_MARKER`]), its name (see
    /// [`NAME_MARKER`]), its procedure suffix (see [`SUFFIX_MARKER`]), the
    /// clock expression (see [`NOW_MS_MARKER`]) and the owner test (see
    /// [`OWNER_TRUSTED_MARKER`]) into a SQL template.
    pub(crate) fn render(&self, template: &str) -> String {
        template
            .replace(OWNER_TRUSTED_MARKER, OWNER_TRUSTED_SQL)
            .replace(SCHEMA_MARKER, &self.quoted)
            .replace(NAME_MARKER, &self.name)
            .replace(SUFFIX_MARKER, &self.suffix)
            .replace(NOW_MS_MARKER, NOW_MS_SQL)
    }
}

/// `__` and eight lowercase hex digits of the SHA-256 of `name`: valid in an
/// unquoted identifier, and 10 bytes, so the longest procedure name stays
/// far under PostgreSQL's 63.
fn procedure_suffix(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut suffix = String::from("__");
    for byte in &digest[..4] {
        suffix.push_str(&format!("{byte:02x}"));
    }
    suffix
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
            s.render("SELECT {{schema}}.f(), {{schema}}.g{{suffix}}()"),
            format!("SELECT \"t\".f(), \"t\".g{}()", s.procedure_suffix())
        );
    }

    #[test]
    fn procedure_suffixes_differ_per_schema_and_are_plain_identifiers() {
        let a = SchemaName::new("tenant_a").unwrap_or_else(|e| panic!("{e}"));
        let b = SchemaName::new("Tenant_A").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.procedure_suffix(), b.procedure_suffix());
        for s in [&a, &b] {
            let suffix = s.procedure_suffix();
            assert_eq!(suffix.len(), 10);
            assert!(suffix.starts_with("__"));
            assert!(
                suffix[2..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            );
        }
        assert_eq!(
            a.procedure_name("fetch_work_item"),
            format!("fetch_work_item{}", a.procedure_suffix())
        );
        // Stable across builds: it names functions already installed.
        let t = SchemaName::new("t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.procedure_suffix(), "__e3b98a4d");
    }
}
