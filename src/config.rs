//! Provider configuration.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// The planner settings of the provider's connections with
/// [`PostgresOptions::generic_plans`] on, the ones the procedures pin for
/// their own statements (procedures/*.sql). A statement is planned once per
/// connection and the plan kept for the connection's life, so the plan must
/// suit the table at any size: planned while a queue was empty or nearly so,
/// as an idle tenant's queues are, PostgreSQL would choose to read the queue
/// whole (cheapest on one page) and keep doing so for every fetch and ack
/// of the backlog that follows, until autovacuum next analyzes the table.
/// Sequential scans are therefore off; a table without a usable index is
/// still read whole. JIT is off with them: a scan that has no alternative
/// costs as much as a disabled one, which would compile the statement.
const PLAN_SETTINGS: [(&str, &str); 3] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("jit", "off"),
];

/// Whether connections made with `connect` carry [`PLAN_SETTINGS`] as
/// startup options, as [`PostgresOptions::connect_options`] gives them.
pub(crate) fn carries_plan_settings(connect: &PgConnectOptions) -> bool {
    let startup = connect.get_options().unwrap_or_default();
    PLAN_SETTINGS
        .iter()
        .all(|(name, value)| startup.contains(&format!("{name}={value}")))
}

/// The lock timeout of the provider's connections as a startup option
/// ([`PostgresOptions::connect_options`]): the second the procedures pin
/// for every statement a caller waits on (procedures/*.sql), so that a
/// tenant whose table is locked does not hold a connection its shard-mates
/// need for as long as the lock lasts; the provider waits the lock out off
/// the connection (`Store::waiting_out_locks`). On connections that carry
/// it, inline mode's single statements need no transaction of their own to
/// set it (`pooler::Bounded`). Migrations set their own (`migrate/pin.sql`).
const LOCK_SETTING: (&str, &str) = ("lock_timeout", "1s");

/// The isolation level of the provider's connections as a startup option
/// ([`PostgresOptions::connect_options`]): READ COMMITTED, which every
/// statement is written for, whatever the server, database or role
/// default to, so that no call needs a transaction of its own to set it
/// (`pooler::Db::require_read_committed`, docs/architecture.md,
/// "Isolation").
const ISOLATION_SETTING: (&str, &str) = ("default_transaction_isolation", "read committed");

/// Whether connections made with `connect` carry [`LOCK_SETTING`] as a
/// startup option, as [`PostgresOptions::connect_options`] gives them (a
/// startup option outranks a role's or database's setting).
pub(crate) fn carries_lock_timeout(connect: &PgConnectOptions) -> bool {
    let (name, value) = LOCK_SETTING;
    connect
        .get_options()
        .is_some_and(|startup| startup.contains(&format!("{name}={value}")))
}

/// What connections made with `connect` lack of the settings
/// [`PostgresOptions::connect_options`] gives inline SQL under `options`,
/// each with what its absence costs (none behind a transaction pooler,
/// which gets them per transaction): for the warning a provider in inline
/// mode gives once on such a pool.
pub(crate) fn inline_lacks(
    options: &PostgresOptions,
    connect: &PgConnectOptions,
) -> Vec<&'static str> {
    let mut lacks = Vec::new();
    if options.transaction_pooler {
        return lacks;
    }
    if options.generic_plans && !carries_plan_settings(connect) {
        lacks.push(
            "plan_cache_mode = force_generic_plan, enable_seqscan = off and jit = off \
             (a statement planned while a queue was empty may read the whole queue on \
             every call once a backlog arrives)",
        );
    }
    if !carries_lock_timeout(connect) {
        lacks.push(
            "lock_timeout = 1s (each client call then runs in a transaction of its own \
             to bound its wait for a lock: two round trips more)",
        );
    }
    lacks
}

mod modes;

pub use modes::{MigrationMode, SqlMode};

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
    /// Server-side `statement_timeout` for the provider's own pool (default
    /// none). Migrations run to their end whatever it is (they set their
    /// own, none, as they do for locks).
    pub statement_timeout: Option<Duration>,
    /// How long the server may leave one call unanswered before the
    /// provider gives up on its connection (default 30 s; `None`: no
    /// limit). A call is one statement (every operation in procedure
    /// mode), or one inline transaction from its `BEGIN` to its end; the
    /// wait for a pooled connection is not part of it (`acquire_timeout`
    /// bounds that). A network partition, or a failover whose old server
    /// vanished without a reset, leaves a connection silent until TCP gives
    /// up, about a quarter of an hour on Linux: without this bound every
    /// runtime dispatcher that met such a connection waited that long. Past
    /// it the connection is closed, never returned to the pool, and the
    /// call fails with an I/O error of kind `TimedOut`, which counts as a
    /// lost connection: retryable, and acks, abandons and renewals retry it
    /// on a fresh connection within `acquire_timeout`. Whether a call given
    /// up on had committed is unknown, as with any connection lost
    /// mid-call. Deletions and prunes are exempt (one statement may rightly
    /// run for minutes on a large tenant; `statement_timeout` bounds them
    /// if set), and so are migrations. Set it well above the slowest call a
    /// healthy server answers: a call cut short on a busy server is retried
    /// on a new connection that starts cold.
    pub call_timeout: Option<Duration>,
    /// Run the provider's own pool with `plan_cache_mode = force_generic_plan`
    /// (default on), the mode the plpgsql procedures pin for their own
    /// statements, and with the planner settings that keep a plan made once
    /// right as tables grow: `enable_seqscan = off` (a plan made while a
    /// queue was empty would otherwise read the whole queue on every fetch of
    /// a later backlog) and `jit = off`, both pinned by the procedures too.
    /// PostgreSQL's default plans each prepared statement afresh on every
    /// execution when its first five custom plans looked cheaper than a
    /// generic one, as they do on a tenant schema not yet analyzed; the
    /// connection then keeps paying the planning, several times what the
    /// provider's indexed statements cost to run. Off for poolers that refuse
    /// startup options (PgBouncer without `ignore_startup_parameters =
    /// options`). See [`PostgresOptions::connect_options`].
    pub generic_plans: bool,
    /// Ping every pooled connection before handing it out (sqlx's
    /// `test_before_acquire`; default off). The ping is a round trip in
    /// front of every provider operation. Off, a connection that died while
    /// idle fails one operation with a retryable error (the runtime retries)
    /// and is discarded; sqlx still checks each connection when it is
    /// returned to the pool.
    pub test_before_acquire: bool,
    /// Apply or only verify migrations at start-up.
    pub migration_mode: MigrationMode,
    /// Stored procedures (default) or inline SQL; [`SqlMode::ENV_VAR`] overrides it.
    pub sql_mode: SqlMode,
    /// Long polling with `LISTEN`/`NOTIFY` (default on): an empty fetch with a
    /// non-zero `poll_timeout` waits for committed work, the next due item or
    /// the timeout. Off: every fetch returns at once (short polling), for
    /// poolers in transaction mode (PgBouncer) or servers without `LISTEN`.
    /// Either way the provider's commits are notified to other processes,
    /// after the commit (see `docs/architecture.md`, "Long polling").
    pub notifications: bool,
    /// While the listening connection is down, how often waiting fetches
    /// poll instead (default 250 ms).
    pub fallback_poll_interval: Duration,
    /// With notifications on: how long the completions of an instance that
    /// still has other activities queued or running may wait for their
    /// siblings before an orchestrator dispatcher takes them (default 10 ms;
    /// zero: at once). The window restarts at each completion, up to five
    /// times this after the first, so the completions of a fan-out land in
    /// one turn instead of one turn each even when they trickle in. The last
    /// completion of a fan-out, or of a lone activity, is taken at once, so
    /// sequential orchestrations never wait.
    pub completion_settle: Duration,
    /// How long messages for an instance that has not started are kept
    /// (default 1 hour; zero: dropped when first found). Such messages — an
    /// event or cancellation raised for an id that was never started or was
    /// deleted, or the completion of a force-deleted parent's child — are
    /// parked out of the fetches' way, still delivered with the instance's
    /// first turn should its start arrive within this time, and dropped
    /// after it. Events sent with `enqueue_event` (duroxide's
    /// `QueueMessage`) to a never-started instance are dropped at once, as
    /// duroxide expects, unless its start is queued but held back (abandoned
    /// with a delay): they are parked then, and delivered with the start.
    /// See [`crate::PostgresProvider::orphaned_instances`].
    pub orphan_retention: Duration,
    /// Largest serialized payload accepted (default 16 MiB): a work item
    /// enqueued, a history event, an activity result, an orchestration
    /// output, a custom status or a KV value. A larger one is refused before
    /// it reaches the server with a permanent error naming the field and the
    /// limit; nothing already committed changes. duroxide then runs the turn
    /// or the activity that produced it again (an activity's side effects
    /// included), each ack refused the same way, until its maximum attempts
    /// make it poison. A failure is held to the larger of this limit and
    /// `max_history_bytes` instead (an activity's or a sub-orchestration's
    /// failure message, a failure event, a failed execution's output), so
    /// that it is recorded: duroxide's poison failure carries the turn's
    /// messages or the activity's input escaped again, and an application's
    /// error may be long too.
    pub max_payload_bytes: usize,
    /// Largest history (the current execution's events, as stored) a fetch
    /// reads (default 256 MiB, well below PostgreSQL's 1 GB limit on one
    /// value). A larger one is not read: the turn is handed to the runtime
    /// with a history error, which it abandons and, after its maximum
    /// attempts, fails as poison, rather than failing every fetch that meets
    /// the instance.
    pub max_history_bytes: usize,
    /// Most bytes of one instance's queued messages a turn takes (default
    /// 256 MiB; the messages as stored, counted in queue order). The first
    /// message is always taken, and a start (`StartOrchestration`,
    /// `ContinueAsNew`) is never left behind; the messages past the limit
    /// come in the instance's next turns, in order. Without a bound, more
    /// than PostgreSQL's 1 GB limit on one value queued for one instance
    /// would fail every fetch that met it, for every instance behind it.
    pub max_batch_bytes: usize,
    /// Fetch statements the pool runs at once, shared by every provider on
    /// the pool (default `None`: all but a quarter of the pool's
    /// connections, less the one the `LISTEN` connection holds with
    /// notifications on, at least one kept free when it has two or more, so acks,
    /// abandons and lock renewals never queue behind fetches; one schema may
    /// hold three quarters of the slots). The first provider on a pool sets
    /// it. See [`crate::PostgresProvider::admission_stats`].
    pub fetch_slots: Option<usize>,
    /// With notifications on: after this long without a message on the
    /// listening connection, it sends a keepalive (a query that is only a
    /// comment: a round trip, no statement) and waits at most this long for the reply; a
    /// connection that does not answer (a silently dropped TCP connection)
    /// is replaced, and waiting fetches poll meanwhile (default 30 s; zero
    /// asks for no keepalive). The listener of a pool is shared by every
    /// provider on it and uses the shortest interval any of them asked for.
    pub listener_keepalive: Duration,
    /// The database URL reaches the server through a pooler in transaction
    /// pooling mode, such as PgBouncer with `pool_mode = transaction`
    /// (default off). A server connection then belongs to a client only
    /// for the length of a transaction, so the provider sends no named
    /// prepared statements and keeps every statement it sends inside an
    /// explicit transaction: `BEGIN`, the statement (unnamed, parsed and
    /// executed in two round trips), `COMMIT` — four round trips per
    /// operation instead of one. The connections carry no `options` startup
    /// parameter and no `extra_float_digits`, which PgBouncer refuses by
    /// default: the statement timeout and generic plans are set with
    /// `SET LOCAL` in each transaction's `BEGIN` instead. With notifications
    /// on, [`PostgresOptions::listen_url`] is required, since `LISTEN`
    /// cannot work through such a pooler. Migrations work through it (they
    /// run in one transaction). See docs/operations.md, "PgBouncer".
    pub transaction_pooler: bool,
    /// A URL reaching the server directly, bypassing any pooler, for the
    /// `LISTEN` connection (default `None`: the listener takes a connection
    /// of the provider's pool). Notifications our statements send through
    /// the pooler reach it: they are the same server's. The listener's own
    /// small pool is built from this URL with the same application name;
    /// it holds one connection.
    pub listen_url: Option<String>,
    /// The longest [`crate::PostgresProvider::health`] takes (default 5 s):
    /// past it, the report says unreachable instead of waiting for a pool
    /// connection for the whole `acquire_timeout`, so a readiness probe
    /// gets its answer in time.
    pub health_timeout: Duration,
    /// Distinct schemas one pooled connection serves before it is closed and
    /// replaced (default [`PostgresOptions::DEFAULT_TENANTS_PER_CONNECTION`];
    /// zero: no limit). A server backend keeps the compiled procedures,
    /// plans and catalog entries of every schema it served (about 3 MiB
    /// per schema whose procedures it has all run, in procedure mode), so
    /// this bounds each backend's memory on a pool shared by many tenants.
    /// Applies to pools built from [`PostgresOptions::pool_options`], as
    /// `PostgresProvider::connect_with` builds its own.
    pub tenants_per_connection: usize,
    /// Tenant affinity (default 1; 0: off): the first provider on a pool
    /// splits the pool's connections, less one the pool keeps (the
    /// `LISTEN` connection's, or the application's) or its
    /// `min_connections` if more, into shards of about this many (later
    /// providers share them, whatever they set, unless they set 0 and run
    /// on the pool itself). Each schema is given a home shard, the one
    /// with the fewest schemas, and its operations run on its share: its
    /// home, plus, while the pool holds fewer tenants than shards, the
    /// shards no tenant calls home dealt out among them (a lone tenant's
    /// share is the whole pool). A busy tenant borrows from its share only
    /// a connection nobody waits for, and otherwise waits for its home.
    /// So a tenant meets few server backends and each backend compiles
    /// the procedures and plans of few tenants: a backend's first call in
    /// a schema costs milliseconds, a warm one a fraction of one, and a
    /// pool handing out its connections in turn made nearly every call of
    /// a 200-tenant burst a first call (the burst took 5.5× the one-tenant
    /// run without affinity, 1.4× with it, in procedure mode;
    /// docs/benchmarks.md, "The 200-tenant burst"). A busy tenant cannot
    /// take a neighbour's home either. A pool too small for two shards is
    /// not split. Memory: a
    /// backend holds every procedure of each tenant it serves (about
    /// 3 MiB a tenant in procedure mode), bounded by
    /// `tenants_per_connection`. See docs/architecture.md, "Tenant
    /// affinity".
    pub connections_per_tenant: u32,
    /// With tenant affinity, how long a connection an operation finished
    /// with is kept for the same tenant's next operation instead of going
    /// back to the pool (default 100 ms; zero: never kept). sqlx tests
    /// every connection it takes back with a round trip to the server
    /// before anyone can have it again; a kept connection skips that test
    /// (1.21× procedure mode's throughput and 1.13× inline's on a busy
    /// durable server; docs/benchmarks.md, "Where the time goes"). A connection is kept
    /// only while nobody waits for its shard, and only after its statement
    /// or transaction ended cleanly; another tenant or a borrower wanting
    /// the shard sends it back to the pool first. Off when the pool tests
    /// connections before handing them out (`test_before_acquire`). Like
    /// the shard sizes, fixed by the first provider on the pool.
    pub connection_reuse: Duration,
    /// Prepared statements each connection keeps (sqlx's statement cache;
    /// default [`PostgresOptions::DEFAULT_STATEMENT_CACHE_CAPACITY`], where
    /// sqlx's own is 100), set by [`PostgresOptions::connect_options`].
    /// Every tenant's statements are its own text (they name its schema),
    /// so a connection serving many tenants needs room for all of theirs:
    /// past the capacity, each statement is parsed, planned and closed
    /// again on every call, which in inline mode (a few dozen statements
    /// per tenant) cost a 200-tenant burst with one connection per tenant
    /// more than half of the server's CPU. Each kept statement costs the
    /// server backend some memory (in that burst, ten inline tenants per
    /// connection, about 6 MiB per backend). Unused with
    /// [`PostgresOptions::transaction_pooler`], which sends no named
    /// statements.
    pub statement_cache_capacity: usize,
    /// How long what one call read answers the call its task makes right
    /// after it (default [`PostgresOptions::DEFAULT_PREFETCH_WINDOW`];
    /// zero: off, and the first calls read nothing extra). Two of
    /// duroxide's calls come in such pairs: the worker claims an activity
    /// and reads its instance's history (to name its orchestration), and
    /// the client's status reads the history and then the custom status.
    /// So a worker fetch returns the instance's history (up to
    /// [`PostgresOptions::HISTORY_PREFETCH_MAX_BYTES`]) and a history read
    /// the custom status, and the provider answers the second call from
    /// them: one round trip fewer per activity and per status poll. Only
    /// the next such call of the same task about the same instance is
    /// answered so, and never after this provider wrote that instance; it
    /// answers as of the first call's snapshot (docs/architecture.md,
    /// "What one call reads for the next").
    pub prefetch_window: Duration,
    /// Whether a worker's ack also claims the activity its task will ask
    /// for next (default `true`; off as well when
    /// [`PostgresOptions::prefetch_window`] is zero, which is how long the
    /// claimed item waits for its task). duroxide's worker dispatcher acks
    /// an activity and fetches the next at once, in the same task; the ack
    /// then runs the fetch in its own call and transaction, and the fetch
    /// is answered without a round trip. Only the same task's next fetch
    /// with the same parameters takes the item; anything else gives it
    /// back (visible again, the attempt not counted), as does the window's
    /// end (docs/architecture.md, "What one call reads for the next").
    pub claim_ahead: bool,
    /// Whether building a provider warms its tenant's home connection
    /// (default `true`; with tenant affinity, in either SQL mode). A server
    /// backend's first calls in a schema compile its procedures, plan their
    /// statements and load its tables' catalog entries: about ten
    /// milliseconds of server CPU per tenant, paid by its first
    /// orchestration on each connection. The provider's build pays it
    /// instead, once (a few tens of milliseconds more per build), running a
    /// client's start, a turn, an activity and the status reads on an
    /// instance of its own and rolling them back: one call in procedure
    /// mode (`procedures/warm_up.sql`), the same steps with inline mode's
    /// statements in inline mode (some thirty round trips in one
    /// transaction). Skipped behind a transaction pooler, and when the
    /// home shard holds more tenants than `tenants_per_connection`, whose
    /// recycling would close the warmed connection; where tenants will
    /// outnumber the shards times that bound, the first ones are warmed
    /// and then recycled, so turning it off saves the startup cost. See
    /// docs/architecture.md, "Warming a tenant's connection".
    pub warm_up: bool,
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
            call_timeout: Some(Duration::from_secs(30)),
            generic_plans: true,
            test_before_acquire: false,
            migration_mode: MigrationMode::Apply,
            sql_mode: SqlMode::StoredProcedures,
            notifications: true,
            fallback_poll_interval: Duration::from_millis(250),
            completion_settle: Duration::from_millis(10),
            orphan_retention: Duration::from_secs(3600),
            max_payload_bytes: 16 * 1024 * 1024,
            max_history_bytes: 256 * 1024 * 1024,
            max_batch_bytes: 256 * 1024 * 1024,
            fetch_slots: None,
            listener_keepalive: Duration::from_secs(30),
            transaction_pooler: false,
            listen_url: None,
            health_timeout: Duration::from_secs(5),
            tenants_per_connection: Self::DEFAULT_TENANTS_PER_CONNECTION,
            connections_per_tenant: 1,
            connection_reuse: Self::DEFAULT_CONNECTION_REUSE,
            statement_cache_capacity: Self::DEFAULT_STATEMENT_CACHE_CAPACITY,
            prefetch_window: Self::DEFAULT_PREFETCH_WINDOW,
            claim_ahead: true,
            warm_up: true,
        }
    }
}

impl PostgresOptions {
    /// The default of [`PostgresOptions::tenants_per_connection`]: with
    /// about 3 MiB per schema a backend serves in full (with tenant
    /// affinity, each of a backend's tenants runs all its procedures
    /// there), a backend stays under about 100 MiB.
    pub const DEFAULT_TENANTS_PER_CONNECTION: usize = 32;

    /// Sets how many distinct schemas one pooled connection serves before
    /// it is replaced (see the `tenants_per_connection` field).
    pub fn tenants_per_connection(mut self, tenants: usize) -> Self {
        self.tenants_per_connection = tenants;
        self
    }

    /// The default of [`PostgresOptions::statement_cache_capacity`]: room
    /// for the statements of a few dozen inline tenants, or of many more
    /// than the recycling bound's 32 in procedure mode (about ten each).
    pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 1024;

    /// Sets how many prepared statements each connection keeps (see the
    /// `statement_cache_capacity` field).
    pub fn statement_cache_capacity(mut self, statements: usize) -> Self {
        self.statement_cache_capacity = statements;
        self
    }

    /// Sets the size of the shards a shared pool is split into, one a
    /// tenant's home (see the `connections_per_tenant` field; 0: no
    /// affinity, any connection).
    pub fn connections_per_tenant(mut self, connections: u32) -> Self {
        self.connections_per_tenant = connections;
        self
    }

    /// The default of [`PostgresOptions::connection_reuse`].
    pub const DEFAULT_CONNECTION_REUSE: Duration = Duration::from_millis(100);

    /// Sets how long a connection is kept for its tenant's next operation
    /// (see the `connection_reuse` field; zero: never kept).
    pub fn connection_reuse(mut self, window: Duration) -> Self {
        self.connection_reuse = window;
        self
    }

    /// The default of [`PostgresOptions::prefetch_window`]: duroxide makes
    /// the second call at once, so this only bounds how long what nobody
    /// asked for is kept.
    pub const DEFAULT_PREFETCH_WINDOW: Duration = Duration::from_millis(100);

    /// The largest history (the events' stored bytes) a worker fetch
    /// returns for the read that follows it; a larger one is read from the
    /// server as without the prefetch.
    pub const HISTORY_PREFETCH_MAX_BYTES: usize = 1024 * 1024;

    /// Sets how long what one call read answers the call its task makes
    /// next (see the `prefetch_window` field; zero: off).
    pub fn prefetch_window(mut self, window: Duration) -> Self {
        self.prefetch_window = window;
        self
    }

    /// Sets whether a worker's ack claims its task's next activity (see
    /// the `claim_ahead` field).
    pub fn claim_ahead(mut self, on: bool) -> Self {
        self.claim_ahead = on;
        self
    }

    /// Sets whether building a provider warms its tenant's home connection
    /// (see the `warm_up` field).
    pub fn warm_up(mut self, on: bool) -> Self {
        self.warm_up = on;
        self
    }

    /// Sets the tenant schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Pings each pooled connection before use (off by default; see the
    /// `test_before_acquire` field).
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = test;
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

    /// Sets how long the server may leave one call unanswered before the
    /// provider gives up on its connection (see the `call_timeout` field;
    /// `None`: no limit).
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Turns `plan_cache_mode = force_generic_plan` on the provider's own
    /// pool on (default) or off (see the `generic_plans` field).
    pub fn generic_plans(mut self, on: bool) -> Self {
        self.generic_plans = on;
        self
    }

    /// The connection settings [`PostgresProvider::connect_with`] builds its
    /// pool with: `database_url`; the `application_name` it names (or
    /// `PGAPPNAME`), else `duroxide-postgres/SCHEMA` (as `pg_stat_activity`
    /// shows it, so an operator can tell tenants apart; the server cuts it
    /// at 63 bytes); a lock timeout of a second (`lock_timeout = 1s`: the
    /// provider waits a locked table out off the connection, and sets its
    /// own for migrations); READ COMMITTED as the default isolation level
    /// (`default_transaction_isolation`, which the provider's statements
    /// are written for, whatever the server, database or role say); the
    /// statement timeout; generic plans and their planner
    /// settings (`enable_seqscan = off`, `jit = off`) unless turned off; and
    /// the statement cache's capacity. Build a pool you pass to
    /// [`PostgresProvider::from_pool`] from them to get the same (in inline
    /// mode a pool without these settings is warned about once). With [`PostgresOptions::transaction_pooler`]
    /// they carry no startup `options` and no `extra_float_digits` (the
    /// provider sets the statement timeout and generic plans in each
    /// transaction instead).
    ///
    /// ```
    /// use duroxide_postgres::PostgresOptions;
    ///
    /// let options = PostgresOptions::default().schema("tenant_a");
    /// let default = options.connect_options("postgres://db/app").unwrap();
    /// assert_eq!(default.get_application_name(), Some("duroxide-postgres/tenant_a"));
    /// let named = options
    ///     .connect_options("postgres://db/app?application_name=billing")
    ///     .unwrap();
    /// assert_eq!(named.get_application_name(), Some("billing"));
    /// ```
    ///
    /// [`PostgresProvider::connect_with`]: crate::PostgresProvider::connect_with
    /// [`PostgresProvider::from_pool`]: crate::PostgresProvider::from_pool
    ///
    /// # Errors
    /// A `database_url` sqlx cannot parse.
    pub fn connect_options(&self, database_url: &str) -> crate::Result<PgConnectOptions> {
        let mut connect: PgConnectOptions = database_url.parse()?;
        if connect.get_application_name().is_none() {
            connect = connect.application_name(&format!("duroxide-postgres/{}", self.schema));
        }
        if self.transaction_pooler {
            // PgBouncer refuses startup parameters it does not track.
            return Ok(connect.extra_float_digits(None));
        }
        connect = connect
            .statement_cache_capacity(self.statement_cache_capacity)
            .options([LOCK_SETTING, ISOLATION_SETTING]);
        if let Some(timeout) = self.statement_timeout {
            connect = connect.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        if self.generic_plans {
            connect = connect.options(PLAN_SETTINGS);
        }
        Ok(connect)
    }

    /// Chooses stored procedures or inline SQL (the environment can override it).
    pub fn sql_mode(mut self, mode: SqlMode) -> Self {
        self.sql_mode = mode;
        self
    }

    /// Turns `LISTEN`/`NOTIFY` long polling on (default) or off.
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Sets how often waiting fetches poll while the listener is reconnecting.
    pub fn fallback_poll_interval(mut self, interval: Duration) -> Self {
        self.fallback_poll_interval = interval;
        self
    }

    /// Sets how long a fresh completion with sibling activities still in
    /// flight may wait for them (zero: at once).
    pub fn completion_settle(mut self, settle: Duration) -> Self {
        self.completion_settle = settle;
        self
    }

    /// Sets how long messages for an instance that has not started are kept
    /// (see the `orphan_retention` field).
    pub fn orphan_retention(mut self, retention: Duration) -> Self {
        self.orphan_retention = retention;
        self
    }

    /// Sets the largest serialized payload accepted (see the
    /// `max_payload_bytes` field).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the largest history a fetch reads (see the `max_history_bytes`
    /// field).
    pub fn max_history_bytes(mut self, bytes: usize) -> Self {
        self.max_history_bytes = bytes;
        self
    }

    /// Sets how many bytes of one instance's messages a turn takes (see the
    /// `max_batch_bytes` field).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets how many fetch statements the pool runs at once (see the
    /// `fetch_slots` field).
    pub fn fetch_slots(mut self, slots: Option<usize>) -> Self {
        self.fetch_slots = slots;
        self
    }

    /// Sets how long the listening connection may stay silent before it
    /// sends a keepalive, and how long it waits for the reply.
    pub fn listener_keepalive(mut self, interval: Duration) -> Self {
        self.listener_keepalive = interval;
        self
    }

    /// Declares that the database URL goes through a pooler in transaction
    /// pooling mode (see the `transaction_pooler` field).
    pub fn transaction_pooler(mut self, on: bool) -> Self {
        self.transaction_pooler = on;
        self
    }

    /// Sets the direct URL of the `LISTEN` connection (see the `listen_url`
    /// field).
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }

    /// What each transaction starts with under a transaction pooler: `BEGIN`
    /// and, as `SET LOCAL`, the settings a direct connection gets as startup
    /// options. One simple-query message, one round trip.
    pub(crate) fn pooled_begin(&self) -> String {
        let mut begin = String::from(crate::pooler::READ_COMMITTED);
        if let Some(timeout) = self.statement_timeout {
            begin.push_str(&format!(
                "; SET LOCAL statement_timeout = {}",
                timeout.as_millis()
            ));
        }
        if self.generic_plans {
            for (name, value) in PLAN_SETTINGS {
                begin.push_str(&format!("; SET LOCAL {name} = {value}"));
            }
        }
        begin
    }

    /// Sets the longest [`crate::PostgresProvider::health`] takes.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Chooses whether start-up applies or only verifies migrations.
    pub fn migration_mode(mut self, mode: MigrationMode) -> Self {
        self.migration_mode = mode;
        self
    }
}

#[cfg(test)]
mod tests;
