//! Provider configuration.

use std::time::Duration;

/// Whether a provider may change the schema when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationMode {
    /// Apply pending migrations and reinstall changed procedures (default).
    #[default]
    Apply,
    /// Run no DDL; refuse to start unless the schema is already current.
    /// For processes whose role may not create tables or functions.
    Verify,
}

/// Options for [`crate::PostgresProvider`].
///
/// ```
/// use duroxide_postgres::PostgresOptions;
/// use std::time::Duration;
///
/// let options = PostgresOptions::default()
///     .schema("tenant_a")
///     .max_connections(20)
///     .acquire_timeout(Duration::from_secs(5));
/// assert_eq!(options.schema, "tenant_a");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Schema holding this tenant's tables and procedures (default `public`).
    pub schema: String,
    /// Pool size when the provider builds its own pool (default 10).
    pub max_connections: u32,
    /// Connections kept open when idle (default 0).
    pub min_connections: u32,
    /// How long to wait for a pooled connection (default 30 s).
    pub acquire_timeout: Duration,
    /// Close connections idle for this long (default 10 min).
    pub idle_timeout: Option<Duration>,
    /// Server-side `statement_timeout` for the provider's own pool (default none).
    pub statement_timeout: Option<Duration>,
    /// Apply or only verify migrations at start-up.
    pub migration_mode: MigrationMode,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "public".to_string(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            statement_timeout: None,
            migration_mode: MigrationMode::Apply,
        }
    }
}

impl PostgresOptions {
    /// Sets the tenant schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the pool's maximum size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the pool's minimum size.
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// Sets how long to wait for a pooled connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets the idle timeout of pooled connections.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the server-side statement timeout of the provider's pool.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Chooses whether start-up applies or only verifies migrations.
    pub fn migration_mode(mut self, mode: MigrationMode) -> Self {
        self.migration_mode = mode;
        self
    }
}
