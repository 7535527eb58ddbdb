//! [`PostgresOptions::from_env`]: the provider's options from
//! `DUROXIDE_POSTGRES_*` environment variables.

use std::time::Duration;

use crate::config::{MigrationMode, PostgresOptions, SqlMode};
use crate::error::{PostgresProviderError, Result};

/// The variables [`PostgresOptions::from_env`] reads, each with the option it
/// sets (listed in the method's documentation and docs/operations.md).
pub(crate) const VARIABLES: [&str; 15] = [
    "DUROXIDE_POSTGRES_SCHEMA",
    "DUROXIDE_POSTGRES_MAX_CONNECTIONS",
    "DUROXIDE_POSTGRES_MIN_CONNECTIONS",
    "DUROXIDE_POSTGRES_ACQUIRE_TIMEOUT_MS",
    "DUROXIDE_POSTGRES_IDLE_TIMEOUT_MS",
    "DUROXIDE_POSTGRES_STATEMENT_TIMEOUT_MS",
    "DUROXIDE_POSTGRES_CALL_TIMEOUT_MS",
    "DUROXIDE_POSTGRES_GENERIC_PLANS",
    "DUROXIDE_POSTGRES_TEST_BEFORE_ACQUIRE",
    "DUROXIDE_POSTGRES_MIGRATION_MODE",
    "DUROXIDE_POSTGRES_SQL_MODE",
    "DUROXIDE_POSTGRES_NOTIFICATIONS",
    "DUROXIDE_POSTGRES_FETCH_SLOTS",
    "DUROXIDE_POSTGRES_HEALTH_TIMEOUT_MS",
    "DUROXIDE_POSTGRES_LISTENER_KEEPALIVE_MS",
];

impl PostgresOptions {
    /// The defaults, overridden by every `DUROXIDE_POSTGRES_*` variable that
    /// is set and not empty:
    ///
    /// | variable | option | value |
    /// |---|---|---|
    /// | `DUROXIDE_POSTGRES_SCHEMA` | `schema` | a schema name |
    /// | `DUROXIDE_POSTGRES_MAX_CONNECTIONS` | `max_connections` | integer |
    /// | `DUROXIDE_POSTGRES_MIN_CONNECTIONS` | `min_connections` | integer |
    /// | `DUROXIDE_POSTGRES_ACQUIRE_TIMEOUT_MS` | `acquire_timeout` | milliseconds |
    /// | `DUROXIDE_POSTGRES_IDLE_TIMEOUT_MS` | `idle_timeout` | milliseconds, `0`: never |
    /// | `DUROXIDE_POSTGRES_STATEMENT_TIMEOUT_MS` | `statement_timeout` | milliseconds, `0`: none |
    /// | `DUROXIDE_POSTGRES_CALL_TIMEOUT_MS` | `call_timeout` | milliseconds, `0`: none |
    /// | `DUROXIDE_POSTGRES_GENERIC_PLANS` | `generic_plans` | `on`/`off` |
    /// | `DUROXIDE_POSTGRES_TEST_BEFORE_ACQUIRE` | `test_before_acquire` | `on`/`off` |
    /// | `DUROXIDE_POSTGRES_MIGRATION_MODE` | `migration_mode` | `apply`/`verify` |
    /// | `DUROXIDE_POSTGRES_SQL_MODE` | `sql_mode` | `procedures`/`inline` |
    /// | `DUROXIDE_POSTGRES_NOTIFICATIONS` | `notifications` | `on`/`off` |
    /// | `DUROXIDE_POSTGRES_FETCH_SLOTS` | `fetch_slots` | integer, `auto`: the default |
    /// | `DUROXIDE_POSTGRES_HEALTH_TIMEOUT_MS` | `health_timeout` | milliseconds |
    /// | `DUROXIDE_POSTGRES_LISTENER_KEEPALIVE_MS` | `listener_keepalive` | milliseconds, `0`: none |
    ///
    /// `on`/`off` also accept `true`/`false`, `yes`/`no` and `1`/`0`. The
    /// database URL is not among them: pass it to
    /// [`crate::PostgresProvider::connect_with`] (sqlx reads the libpq
    /// variables `PGHOST`, `PGUSER`, `PGPASSWORD`, `PGAPPNAME`, ... for what
    /// the URL leaves out). Set the remaining options with the builder
    /// methods on the result.
    ///
    /// # Errors
    /// [`PostgresProviderError::InvalidInput`] naming the variable whose value
    /// cannot be read, so a typo fails start-up rather than being ignored.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`PostgresOptions::from_env`] with the variables read through `lookup`.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut options = Self::default();
        for name in VARIABLES {
            let Some(value) = lookup(name) else { continue };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let bad = |expected: &str| {
                PostgresProviderError::invalid_input(name, format!("{value:?} is not {expected}"))
            };
            let count = || value.parse::<u32>().map_err(|_| bad("a whole number"));
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad("a whole number of milliseconds"))
            };
            let optional_millis = || millis().map(|d| (!d.is_zero()).then_some(d));
            let switch = || match value.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => Ok(true),
                "off" | "false" | "no" | "0" => Ok(false),
                _ => Err(bad("`on` or `off`")),
            };
            match name {
                "DUROXIDE_POSTGRES_SCHEMA" => options.schema = value.to_string(),
                "DUROXIDE_POSTGRES_MAX_CONNECTIONS" => options.max_connections = count()?,
                "DUROXIDE_POSTGRES_MIN_CONNECTIONS" => options.min_connections = count()?,
                "DUROXIDE_POSTGRES_ACQUIRE_TIMEOUT_MS" => options.acquire_timeout = millis()?,
                "DUROXIDE_POSTGRES_IDLE_TIMEOUT_MS" => options.idle_timeout = optional_millis()?,
                "DUROXIDE_POSTGRES_STATEMENT_TIMEOUT_MS" => {
                    options.statement_timeout = optional_millis()?;
                }
                "DUROXIDE_POSTGRES_CALL_TIMEOUT_MS" => options.call_timeout = optional_millis()?,
                "DUROXIDE_POSTGRES_GENERIC_PLANS" => options.generic_plans = switch()?,
                "DUROXIDE_POSTGRES_TEST_BEFORE_ACQUIRE" => options.test_before_acquire = switch()?,
                "DUROXIDE_POSTGRES_MIGRATION_MODE" => {
                    options.migration_mode = value
                        .parse::<MigrationMode>()
                        .map_err(|_| bad("`apply` or `verify`"))?;
                }
                "DUROXIDE_POSTGRES_SQL_MODE" => {
                    options.sql_mode = value
                        .parse::<SqlMode>()
                        .map_err(|_| bad("`procedures` or `inline`"))?;
                }
                "DUROXIDE_POSTGRES_NOTIFICATIONS" => options.notifications = switch()?,
                "DUROXIDE_POSTGRES_FETCH_SLOTS" => {
                    options.fetch_slots = if value.eq_ignore_ascii_case("auto") {
                        None
                    } else {
                        Some(
                            value
                                .parse::<usize>()
                                .map_err(|_| bad("a whole number or `auto`"))?,
                        )
                    };
                }
                "DUROXIDE_POSTGRES_HEALTH_TIMEOUT_MS" => options.health_timeout = millis()?,
                "DUROXIDE_POSTGRES_LISTENER_KEEPALIVE_MS" => {
                    options.listener_keepalive = millis()?;
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<PostgresOptions> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PostgresOptions::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_give_the_defaults() {
        let options = from(&[]).expect("defaults");
        let default = PostgresOptions::default();
        assert_eq!(options.schema, default.schema);
        assert_eq!(options.max_connections, default.max_connections);
        assert_eq!(options.health_timeout, default.health_timeout);
        assert_eq!(options.sql_mode, default.sql_mode);
    }

    #[test]
    fn every_variable_sets_its_option() {
        let options = from(&[
            ("DUROXIDE_POSTGRES_SCHEMA", "tenant_a"),
            ("DUROXIDE_POSTGRES_MAX_CONNECTIONS", "25"),
            ("DUROXIDE_POSTGRES_MIN_CONNECTIONS", " 2 "),
            ("DUROXIDE_POSTGRES_ACQUIRE_TIMEOUT_MS", "1500"),
            ("DUROXIDE_POSTGRES_IDLE_TIMEOUT_MS", "0"),
            ("DUROXIDE_POSTGRES_STATEMENT_TIMEOUT_MS", "30000"),
            ("DUROXIDE_POSTGRES_CALL_TIMEOUT_MS", "0"),
            ("DUROXIDE_POSTGRES_GENERIC_PLANS", "off"),
            ("DUROXIDE_POSTGRES_TEST_BEFORE_ACQUIRE", "TRUE"),
            ("DUROXIDE_POSTGRES_MIGRATION_MODE", "verify"),
            ("DUROXIDE_POSTGRES_SQL_MODE", "inline"),
            ("DUROXIDE_POSTGRES_NOTIFICATIONS", "no"),
            ("DUROXIDE_POSTGRES_FETCH_SLOTS", "6"),
            ("DUROXIDE_POSTGRES_HEALTH_TIMEOUT_MS", "2000"),
            ("DUROXIDE_POSTGRES_LISTENER_KEEPALIVE_MS", "0"),
        ])
        .expect("all valid");
        assert_eq!(options.schema, "tenant_a");
        assert_eq!(options.max_connections, 25);
        assert_eq!(options.min_connections, 2);
        assert_eq!(options.acquire_timeout, Duration::from_millis(1500));
        assert_eq!(options.idle_timeout, None);
        assert_eq!(options.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(options.call_timeout, None);
        assert!(!options.generic_plans);
        assert!(options.test_before_acquire);
        assert_eq!(options.migration_mode, MigrationMode::Verify);
        assert_eq!(options.sql_mode, SqlMode::InlineSql);
        assert!(!options.notifications);
        assert_eq!(options.fetch_slots, Some(6));
        assert_eq!(options.health_timeout, Duration::from_secs(2));
        assert_eq!(options.listener_keepalive, Duration::ZERO);
        let auto = from(&[("DUROXIDE_POSTGRES_FETCH_SLOTS", "auto")]).expect("auto");
        assert_eq!(auto.fetch_slots, None);
    }

    #[test]
    fn empty_values_are_ignored_and_bad_ones_name_their_variable() {
        let options = from(&[("DUROXIDE_POSTGRES_MAX_CONNECTIONS", "  ")]).expect("empty");
        assert_eq!(options.max_connections, 10);
        for (name, value) in [
            ("DUROXIDE_POSTGRES_MAX_CONNECTIONS", "ten"),
            ("DUROXIDE_POSTGRES_ACQUIRE_TIMEOUT_MS", "5s"),
            ("DUROXIDE_POSTGRES_NOTIFICATIONS", "maybe"),
            ("DUROXIDE_POSTGRES_SQL_MODE", "inlined"),
            ("DUROXIDE_POSTGRES_MIGRATION_MODE", "force"),
            ("DUROXIDE_POSTGRES_FETCH_SLOTS", "-1"),
        ] {
            let err = from(&[(name, value)]).expect_err(value);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
