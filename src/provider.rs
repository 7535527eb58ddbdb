//! `PostgresProvider`: construction, health, and the `Provider` facade.
//!
//! The provider builds a [`Store`] (pool, schema, rendered statements,
//! limits, admission, long poll and the driver of its SQL mode) and holds
//! it. Each trait method is a one-line delegation to the module that owns
//! the operation (`orchestration_queue`, `worker_queue`, `history`), given
//! the store; the `ProviderAdmin` half lives in `provider_admin`. Each runs
//! through [`Store::observe`] (`observe`): its span and metrics, and its
//! error turned into duroxide's `ProviderError` with the trait method's name
//! as the operation. No module below this facade knows the provider.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::{Event, SystemStats};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::admission::{AdmissionStats, Gate};
use crate::config::{MigrationMode, PostgresOptions, SqlMode};
use crate::error::Result;
use crate::lost_replies::Landed;
use crate::migrate::{self, SchemaStatus};
use crate::notify::{LongPoll, NotificationStats};
use crate::pooler::Db;
use crate::recycle::Scope;
use crate::schema::SchemaName;
use crate::store::{Limits, Store};
use crate::{history, orchestration_queue, worker_queue};

/// A duroxide storage provider backed by one PostgreSQL schema.
///
/// A provider is a (pool, schema) pair: several providers — tenants — can share
/// one [`PgPool`], and nothing depends on a connection's `search_path`.
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresProvider {
    /// What every operation runs on.
    pub(crate) store: Store,
    name: Arc<str>,
    /// The bound on [`PostgresProvider::health`].
    health_timeout: Duration,
    /// Why the provider runs inline SQL though it asked for stored procedures.
    fallback: Option<Arc<str>>,
    /// It calls a newer build's procedures (its role may not run inline
    /// SQL): they answer its calls, so health counts them as ready.
    calls_newer: bool,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("schema", &self.store.schema.as_str())
            .finish_non_exhaustive()
    }
}

/// What a readiness probe needs to know, from [`PostgresProvider::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The database answered.
    pub reachable: bool,
    /// The provider's schema.
    pub schema: String,
    /// The SQL mode in force.
    pub sql_mode: SqlMode,
    /// Highest migration applied to the schema (`None`: never migrated or unreachable).
    pub schema_version: Option<i64>,
    /// Highest migration this build carries.
    pub latest_version: i64,
    /// Migrations or procedures still to be applied.
    pub migrations_pending: bool,
    /// Why the check failed, when it did.
    pub error: Option<String>,
    /// Why the provider runs inline SQL though it was configured for stored
    /// procedures: a newer build of this crate installed procedures other
    /// than this build's (rolling upgrade; see docs/operations.md). The
    /// provider works; it is ready.
    pub fallback: Option<String>,
}

impl HealthReport {
    /// Reachable and fully migrated.
    pub fn is_ready(&self) -> bool {
        self.reachable && !self.migrations_pending && self.error.is_none()
    }
}

impl PostgresProvider {
    /// Connects to `database_url` with default options (schema `public`),
    /// migrating the schema if needed.
    ///
    /// # Errors
    /// Connection, schema-name or migration failures.
    pub async fn connect(database_url: &str) -> Result<Self> {
        Self::connect_with(database_url, PostgresOptions::default()).await
    }

    /// Connects to `database_url` with its own pool built from `options`.
    ///
    /// # Errors
    /// Connection, schema-name or migration failures.
    pub async fn connect_with(database_url: &str, options: PostgresOptions) -> Result<Self> {
        let schema = SchemaName::new(&options.schema)?;
        let connect = options.connect_options(database_url)?;
        let pool = options.pool_options().connect_with(connect).await?;
        Self::build(pool, schema, &options).await
    }

    /// Builds a provider on an existing pool for `schema`, migrating it if needed.
    ///
    /// # Errors
    /// Schema-name or migration failures.
    pub async fn from_pool(pool: PgPool, schema: &str) -> Result<Self> {
        Self::from_pool_with(pool, PostgresOptions::default().schema(schema)).await
    }

    /// Builds a provider on an existing pool; `schema`, `migration_mode` and
    /// `sql_mode` apply (the pool is already configured).
    ///
    /// # Errors
    /// Schema-name or migration failures.
    pub async fn from_pool_with(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        let schema = SchemaName::new(&options.schema)?;
        Self::build(pool, schema, &options).await
    }

    async fn build(pool: PgPool, schema: SchemaName, options: &PostgresOptions) -> Result<Self> {
        let requested = SqlMode::resolve(options.sql_mode)?;
        if options.transaction_pooler && options.notifications && options.listen_url.is_none() {
            return Err(crate::PostgresProviderError::invalid_input(
                "listen_url",
                "notifications through a transaction pooler need a direct URL for LISTEN \
                 (PostgresOptions::listen_url), or notifications off",
            ));
        }
        // The listener's settings, straight to the server: its connections
        // are made with them (crate::notify::listener::own_pool), and notifications
        // left unsent when the last provider goes are sent on this pool.
        let listen_pool = match (&options.listen_url, options.notifications) {
            (Some(url), true) => {
                let connect = PostgresOptions {
                    transaction_pooler: false,
                    ..options.clone()
                }
                .connect_options(url)?;
                Some(
                    PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(options.acquire_timeout)
                        .idle_timeout(None)
                        .connect_lazy_with(connect),
                )
            }
            _ => None,
        };
        // Inline statements run with the connection's settings.
        let lacks = crate::config::inline_lacks(options, &pool.connect_options());
        let pool = Db::new(
            pool,
            options.transaction_pooler.then(|| options.pooled_begin()),
        )
        .with_call_timeout(options.call_timeout);
        // The listener holds none of the pool's connections (crate::notify).
        let gate = Gate::of(&pool, options.fetch_slots);
        // Operations (and the migration check) run on the tenant's shard of
        // the pool, if it has one; the gate and the listener stay the pool's.
        let work_pool = match crate::affinity::Shards::of(
            &pool,
            options.connections_per_tenant,
            options.connection_reuse,
        ) {
            Some(shards) => pool.on_shard(&shards, schema.as_str()),
            None => pool.clone(),
        };
        // In the pool's scope: the connections it uses count this tenant.
        let setup = Scope {
            gate: gate.clone(),
            tenant: schema.as_str().into(),
            started: std::time::Instant::now(),
            leased: false,
            operation: "new",
        };
        let status = setup
            .run(async {
                match options.migration_mode {
                    MigrationMode::Apply => {
                        migrate::migrate_status(&work_pool, &schema, requested).await
                    }
                    MigrationMode::Verify => migrate::inspect(&work_pool, &schema).await,
                }
            })
            .await?;
        // Rolling upgrades: a newer build's procedures are used only when
        // they are this build's own; otherwise inline SQL, if the role may
        // run it: a runtime role with EXECUTE only keeps calling them (a
        // release keeps the previous build's calls valid, and processes
        // already running call them anyway).
        let (mut mode, mut fallback) = migrate::effective_mode(&schema, requested, &status);
        let mut calls_newer = false;
        if fallback.is_some() && !migrate::can_run_inline(&work_pool, &schema).await? {
            tracing::warn!(
                schema = %schema,
                "a newer build's procedures are installed and this role has no rights on the tables \
                 for inline SQL (EXECUTE only): calling the newer procedures"
            );
            mode = requested;
            fallback = None;
            calls_newer = true;
        }
        // Procedures a newer build installed are not this build's, but they
        // answer its calls.
        let ready = status.is_ready_for(mode) || answers(calls_newer, &status);
        if options.migration_mode == MigrationMode::Verify && !ready {
            return Err(crate::PostgresProviderError::SchemaNotReady {
                schema: schema.to_string(),
                reason: format!(
                    "{} migration(s) pending, {} procedure(s) missing or stale",
                    status.pending_migrations, status.stale_procedures
                ),
            });
        }
        if mode == SqlMode::InlineSql && !lacks.is_empty() {
            warn_plain_connections(&schema, &lacks);
        }
        let name: Arc<str> = format!("duroxide-postgres[{mode}]").into();
        let long_poll = options.notifications.then(|| {
            LongPoll::new(
                &pool,
                listen_pool.as_ref(),
                schema.as_str(),
                options.fallback_poll_interval,
                options.completion_settle,
                options.listener_keepalive,
            )
        });
        tracing::info!(
            schema = %schema,
            sql_mode = %mode,
            notifications = options.notifications,
            "duroxide-postgres provider ready"
        );
        let store = Store::new(
            work_pool,
            schema,
            mode,
            Limits::of(options),
            gate,
            long_poll,
        )
        .prefetching(options.prefetch_window)
        .claiming_ahead(if options.claim_ahead {
            options.prefetch_window
        } else {
            Duration::ZERO
        });
        if crate::warm_up::wanted(options, store.pool.tenants_at_home()) {
            crate::warm_up::run(&store).await;
        }
        Ok(Self {
            store,
            name,
            health_timeout: options.health_timeout,
            fallback: fallback.map(Into::into),
            calls_newer,
        })
    }

    /// The SQL mode in force (after the environment override).
    pub fn sql_mode(&self) -> SqlMode {
        self.store.mode()
    }

    /// Counters of the pool's `LISTEN` connection (shared by every provider
    /// on the pool); `None` when notifications are off.
    pub fn notification_stats(&self) -> Option<NotificationStats> {
        self.store.long_poll.as_ref().map(LongPoll::stats)
    }

    /// The fetch admission of the pool (shared by every provider on it):
    /// slots, the share one schema may hold, slots held and fetches
    /// waiting; and the operations waiting for a connection or out a lock.
    pub fn admission_stats(&self) -> AdmissionStats {
        AdmissionStats {
            waiting_for_connections: self.store.pool.waiting_for_connections(),
            ..self.store.gate.stats()
        }
    }

    /// The pool this provider runs on: the one it was given or built (with
    /// tenant affinity, the shared pool its shard was split from).
    pub fn pool(&self) -> &PgPool {
        self.store.pool.shared()
    }

    /// Whether statements go through a transaction pooler (see
    /// [`PostgresOptions::transaction_pooler`]).
    pub fn transaction_pooler(&self) -> bool {
        self.store.pool.pooled_begin().is_some()
    }

    /// The provider's schema.
    pub fn schema(&self) -> &SchemaName {
        &self.store.schema
    }

    /// Compares the schema with this build (no changes made).
    ///
    /// # Errors
    /// Database errors, or a schema this build must refuse.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        migrate::inspect(&self.store.pool, &self.store.schema).await
    }

    /// Reports reachability and migration state; never fails, and returns
    /// within the `health_timeout` option (default 5 s) even when the pool
    /// has no free connection or the server does not answer: the report then
    /// says unreachable, with the reason.
    pub async fn health(&self) -> HealthReport {
        let s = &self.store;
        let latest_version = migrate::latest_version();
        let mut report = HealthReport {
            reachable: false,
            schema: s.schema.to_string(),
            sql_mode: s.mode(),
            schema_version: None,
            latest_version,
            migrations_pending: true,
            error: None,
            fallback: self.fallback.as_deref().map(str::to_string),
        };
        // (connected, outcome): whether a connection was had, then the inspection.
        // A connection given up on mid-inspection (the server stopped
        // answering) is closed, not returned: a probe every few seconds
        // during a partition would otherwise take the pool's connections
        // one by one until TCP gives up on them.
        let probe = async {
            match s.pool.acquire().await {
                Ok(conn) => {
                    let mut flight = crate::pooler::InFlight(Some(conn));
                    let outcome = match flight.conn() {
                        Ok(conn) => migrate::inspect_on(conn, &s.schema).await,
                        Err(e) => Err(e.into()),
                    };
                    flight.settle(&outcome);
                    (true, outcome)
                }
                Err(e) => (false, Err(e.into())),
            }
        };
        match tokio::time::timeout(self.health_timeout, probe).await {
            Ok((connected, outcome)) => {
                report.reachable = connected;
                match outcome {
                    Ok(status) => {
                        report.schema_version = status.applied_version;
                        report.migrations_pending =
                            !(status.is_ready_for(s.mode()) || answers(self.calls_newer, &status));
                    }
                    Err(e) => report.error = Some(e.to_string()),
                }
            }
            Err(_) => {
                report.error = Some(format!(
                    "no connection or answer within {:?} (PostgresOptions::health_timeout)",
                    self.health_timeout
                ));
            }
        }
        report
    }
}

/// Whether a provider that calls a newer build's procedures (`calls_newer`)
/// finds `status` able to answer it: every migration applied and the
/// procedures still a newer build's (a release keeps the previous build's
/// calls valid).
fn answers(calls_newer: bool, status: &migrate::SchemaStatus) -> bool {
    calls_newer && status.pending_migrations == 0 && status.procedures_are_newer()
}

/// Warns, once per process, that inline SQL runs on a pool built without
/// [`PostgresOptions::connect_options`], naming the settings its
/// connections lack and what that costs (`lacks`, from
/// `config::inline_lacks`). Procedures pin their own settings.
fn warn_plain_connections(schema: &SchemaName, lacks: &[&str]) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            schema = %schema,
            "inline SQL on a pool whose connections do not set {}; build the pool from \
             PostgresOptions::connect_options (or turn generic_plans off if the role or \
             database sets the planner settings)",
            lacks.join(", nor ")
        );
    }
}

#[async_trait::async_trait]
impl Provider for PostgresProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        self.store
            .observe(
                "fetch_orchestration_item",
                orchestration_queue::fetch(&self.store, lock_timeout, poll_timeout, filter),
            )
            .await
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "ack_orchestration_item",
                self.store.acking(
                    lock_token,
                    Landed::turn(execution_id, &history_delta),
                    || {
                        orchestration_queue::ack(
                            &self.store,
                            lock_token,
                            execution_id,
                            &history_delta,
                            &worker_items,
                            &orchestrator_items,
                            &metadata,
                            &cancelled_activities,
                        )
                    },
                ),
            )
            .await
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "abandon_orchestration_item",
                self.store.acking(
                    lock_token,
                    Some(Landed::Released("abandon_orchestration_item")),
                    || orchestration_queue::abandon(&self.store, lock_token, delay, ignore_attempt),
                ),
            )
            .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "renew_orchestration_item_lock",
                self.store
                    .riding_outages(|| orchestration_queue::renew(&self.store, token, extend_for)),
            )
            .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "enqueue_for_orchestrator",
                self.store
                    .waiting_out_locks(|| orchestration_queue::enqueue(&self.store, &item, delay)),
            )
            .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.store
            .observe(
                "read",
                self.store
                    .waiting_out_locks(|| history::read(&self.store, instance)),
            )
            .await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.store
            .observe(
                "read_with_execution",
                self.store.waiting_out_locks(|| {
                    history::read_with_execution(&self.store, instance, execution_id)
                }),
            )
            .await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "append_with_execution",
                self.store.waiting_out_locks(|| {
                    history::append_with_execution(&self.store, instance, execution_id, &new_events)
                }),
            )
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.store
            .observe(
                "enqueue_for_worker",
                self.store
                    .waiting_out_locks(|| worker_queue::enqueue(&self.store, &item)),
            )
            .await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.store
            .observe(
                "fetch_work_item",
                worker_queue::fetch(&self.store, lock_timeout, poll_timeout, session, tag_filter),
            )
            .await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "ack_work_item",
                self.store
                    .acking(token, Landed::activity(completion.as_ref()), || {
                        worker_queue::ack(&self.store, token, completion.as_ref())
                    }),
            )
            .await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "renew_work_item_lock",
                self.store
                    .riding_outages(|| worker_queue::renew(&self.store, token, extend_for)),
            )
            .await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.store
            .observe(
                "abandon_work_item",
                self.store
                    .acking(token, Some(Landed::Released("abandon_work_item")), || {
                        worker_queue::abandon(&self.store, token, delay, ignore_attempt)
                    }),
            )
            .await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.store
            .observe(
                "renew_session_lock",
                self.store.riding_outages(|| {
                    worker_queue::renew_sessions(&self.store, owner_ids, extend_for, idle_timeout)
                }),
            )
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.store
            .observe(
                "cleanup_orphaned_sessions",
                self.store.waiting_out_locks(|| {
                    worker_queue::cleanup_orphaned_sessions(&self.store, idle_timeout)
                }),
            )
            .await
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        Some(self)
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        self.store
            .observe(
                "get_custom_status",
                self.store.waiting_out_locks(|| {
                    history::get_custom_status(&self.store, instance, last_seen_version)
                }),
            )
            .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.store
            .observe(
                "get_kv_value",
                self.store
                    .waiting_out_locks(|| history::get_kv_value(&self.store, instance, key)),
            )
            .await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        self.store
            .observe(
                "get_kv_all_values",
                self.store
                    .waiting_out_locks(|| history::get_kv_all_values(&self.store, instance)),
            )
            .await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<SystemStats>, ProviderError> {
        self.store
            .observe(
                "get_instance_stats",
                self.store
                    .waiting_out_locks(|| history::get_instance_stats(&self.store, instance)),
            )
            .await
    }
}
