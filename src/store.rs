//! The store every operation runs on: one tenant's schema on a pool, the
//! statements rendered for it, its limits, its fetch admission, its long
//! poll, and the [`Driver`] of its SQL mode, chosen once when it is built.
//!
//! The operation modules (`orchestration_queue`, `worker_queue`, `history`,
//! `admin`, `deletion`) take a `&Store`; none of them knows the facade
//! ([`crate::PostgresProvider`]) or branches on the SQL mode: where the SQL
//! differs between modes they ask the store's driver. A store can be built
//! and used without a provider (the tests below do).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::admission::Gate;
use crate::claim_ahead::ClaimAhead;
use crate::config::SqlMode;
use crate::driver::Driver;
use crate::error::Result;
use crate::notify::{LongPoll, Sender, Wake};
use crate::pooler::{Bounded, Db};
use crate::prefetch::Prefetched;
use crate::scan_floor::ScanFloors;
use crate::schema::SchemaName;
use crate::sql::Statements;

/// One tenant's schema on a pool, ready for operations (cheap to clone).
#[derive(Clone)]
pub(crate) struct Store {
    /// The pool, and whether statements reach it through a transaction pooler.
    pub pool: Db,
    /// The tenant's schema.
    pub schema: SchemaName,
    /// Every statement, rendered for the schema and the driver's mode.
    pub sql: Arc<Statements>,
    /// Runs the operations whose SQL differs between the modes.
    pub driver: Driver,
    /// Limits and retention that bound what one tenant's data can cost.
    pub limits: Limits,
    /// Long polling, unless notifications are off.
    pub long_poll: Option<LongPoll>,
    /// Without long polling: sends the notifications of this store's
    /// commits to other processes (with it, its hub does).
    pub sender: Option<Arc<Sender>>,
    /// The pool's fetch admission, shared by every store on it.
    pub gate: Arc<Gate>,
    /// The schema's name, shared: the gate's key for the tenant and the
    /// schema's notification channel.
    pub name: Arc<str>,
    /// Where the fetches' scans of the two queues start ([`crate::scan_floor`]).
    pub floors: Arc<ScanFloors>,
    /// The histories worker fetches returned, kept for the reads that
    /// follow them ([`crate::prefetch`]; off unless [`Store::prefetching`]).
    pub prefetch: Arc<Prefetched>,
    /// The activities worker acks claimed for their tasks' next fetches
    /// ([`crate::claim_ahead`]; off unless [`Store::claiming_ahead`]).
    pub ahead: Arc<ClaimAhead>,
    /// This store's operations that wait out a lock, one attempt at a time
    /// ([`Store::riding_outages`], [`Store::waiting_out_locks`]).
    pub lock_line: Arc<LockLine>,
    /// Lease tokens whose ack lost its connection on an attempt
    /// ([`crate::lost_replies`]).
    pub lost_replies: Arc<crate::lost_replies::LostReplies>,
}

/// A store's operations that gave up waiting for a lock and wait it out:
/// one of them at a time makes an attempt, and while any of them waits, the
/// store's new operations join the line before their first attempt.
#[derive(Debug, Default)]
pub(crate) struct LockLine {
    /// Held by the operation whose turn it is, through its attempt and the
    /// backoff after it.
    turn: tokio::sync::Mutex<()>,
    /// Operations in the line, counted from their first lock timeout until
    /// they return (or are dropped).
    waiting: AtomicUsize,
}

/// An operation's place among [`LockLine::waiting`], given up on drop.
struct InLine<'a>(&'a LockLine);

impl<'a> InLine<'a> {
    fn join(line: &'a LockLine) -> Self {
        line.waiting.fetch_add(1, Ordering::SeqCst);
        Self(line)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Store {
    /// A store for `schema` on `pool` in `mode`: renders every statement
    /// once and picks the mode's driver. `gate` is the pool's admission
    /// ([`Gate::of`]); `long_poll` is `None` without notifications.
    pub(crate) fn new(
        pool: Db,
        schema: SchemaName,
        mode: SqlMode,
        limits: Limits,
        gate: Arc<Gate>,
        long_poll: Option<LongPoll>,
    ) -> Self {
        let sender = long_poll.is_none().then(|| Sender::of(&pool));
        Self {
            sql: Arc::new(Statements::render(&schema, mode)),
            driver: Driver::new(mode),
            name: schema.as_str().into(),
            sender,
            pool,
            schema,
            limits,
            long_poll,
            gate,
            floors: Arc::default(),
            prefetch: Arc::default(),
            ahead: Arc::default(),
            lock_line: Arc::default(),
            lost_replies: Arc::default(),
        }
    }

    /// This store with worker fetches returning their instance's history
    /// for the read that follows, kept for `window` (zero: off).
    pub(crate) fn prefetching(mut self, window: Duration) -> Self {
        self.prefetch = Arc::new(Prefetched::new(window));
        self
    }

    /// This store with worker acks claiming their task's next activity,
    /// held `window` for it (zero: off).
    pub(crate) fn claiming_ahead(mut self, window: Duration) -> Self {
        self.ahead = Arc::new(ClaimAhead::new(window));
        self
    }

    /// A transaction of this store committed and returned `wake` (payloads
    /// of the schema's channel): wakes this pool's waiters at once and posts
    /// the notification for other processes, sent after the commit without
    /// holding up the caller (see [`crate::notify`]). Never inside the
    /// transaction: a durable commit that notifies holds PostgreSQL's
    /// notification-queue lock through its WAL flush.
    pub(crate) fn woke(&self, wake: &[String]) {
        let wakes: Vec<Wake> = wake.iter().filter_map(|p| Wake::from_payload(p)).collect();
        if wakes.is_empty() {
            return;
        }
        match (&self.long_poll, &self.sender) {
            (Some(long_poll), _) => long_poll.committed(&self.name, &wakes),
            (None, Some(sender)) => sender.outbox().post(&self.name, &wakes),
            (None, None) => {}
        }
    }

    /// Notifications of this store's pool posted and not sent yet.
    pub(crate) fn unsent_notifications(&self) -> usize {
        match (&self.long_poll, &self.sender) {
            (Some(long_poll), _) => long_poll.unsent(),
            (None, Some(sender)) => sender.outbox().unsent(),
            (None, None) => 0,
        }
    }

    /// What a single-statement operation runs its statement on so that it
    /// waits at most a second for a lock ([`Driver::bounded`]).
    pub(crate) fn bounded(&self) -> Bounded<'_> {
        self.driver.bounded(&self.pool)
    }

    /// The SQL mode the store's driver runs.
    pub(crate) fn mode(&self) -> SqlMode {
        self.driver.mode()
    }

    /// Runs `work` (an operation on a lease already held: an ack, an
    /// abandon, a renewal), again while its connection or the server is
    /// lost ([`PostgresProviderError::is_connection_lost`]) or the server
    /// is read-only ([`PostgresProviderError::is_read_only`]), for up to the
    /// pool's acquire timeout, backing off from 10 ms to 500 ms; and again,
    /// for as long as it lasts, while it gave up waiting for a lock
    /// ([`PostgresProviderError::is_lock_timeout`]), backing off up to a
    /// second.
    ///
    /// duroxide retries a failed ack only for about 300 ms before it fails
    /// the orchestration; a server restart, a pool of connections the
    /// server closed, or a failover that leaves clients on a read-only
    /// server for a moment, takes longer than that. Waiting here keeps the
    /// lease's work. An attempt whose commit reached the server but whose reply was
    /// lost is retried too: the retry finds the lease gone (released by that
    /// commit), and nothing is written twice; an ack then asks whether its
    /// work is in place ([`Store::acking`]).
    ///
    /// Such an operation waits at most a second for a lock (the procedures
    /// pin `lock_timeout`; in inline mode the connection carries it, or the
    /// transaction's `BEGIN` sets it): a lock on the tenant's own table (an operator's `VACUUM
    /// FULL` or `LOCK TABLE`, a long migration) must not keep a connection
    /// that other tenants on its home shard need for as long as it lasts.
    /// The operation waits out the lock here instead, off the connection,
    /// with no deadline: before, it waited for the lock and then committed,
    /// and still does. After a lock timeout the store's operations retry
    /// one at a time ([`Store::lock_line`], a turn held through the attempt
    /// and the backoff after it), and an operation started while any of
    /// them waits takes its turn before its first attempt too, so however
    /// many of them wait, the tenant holds a connection for at most about a
    /// second at a time, and its shard-mates' operations pass in between.
    /// Only the operations already under way when the first one gives up
    /// make their first attempts side by side.
    ///
    /// [`PostgresProviderError::is_connection_lost`]: crate::PostgresProviderError::is_connection_lost
    /// [`PostgresProviderError::is_read_only`]: crate::PostgresProviderError::is_read_only
    /// [`PostgresProviderError::is_lock_timeout`]: crate::PostgresProviderError::is_lock_timeout
    pub(crate) async fn riding_outages<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retrying(true, work).await
    }

    /// Runs `work` (a single statement that waits at most a second for a
    /// lock, [`Store::bounded`]: a client's or the runtime's enqueue,
    /// append or read), again for as long as it gives up waiting for a
    /// lock ([`PostgresProviderError::is_lock_timeout`]), as
    /// [`Store::riding_outages`] does; any other error is the caller's.
    /// Before, such a call waited for the lock holding a connection that
    /// the tenant's shard-mates need; it still waits as long, off the
    /// connection. A lock timeout rolled the statement back, so a retried
    /// enqueue or append writes once; after a lost connection it is not
    /// retried, as its commit may have reached the server.
    ///
    /// [`PostgresProviderError::is_lock_timeout`]: crate::PostgresProviderError::is_lock_timeout
    pub(crate) async fn waiting_out_locks<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retrying(false, work).await
    }

    /// Runs `work` (one attempt of a fetch), and once more at once if it
    /// ran at an isolation level stricter than READ COMMITTED and was
    /// rolled back for it ([`Store::isolation_refused`]); any other error
    /// is the caller's. [`Store::riding_outages`] and
    /// [`Store::waiting_out_locks`] do the same.
    pub(crate) async fn read_committed<T, F, Fut>(&self, mut work: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match work().await {
            Err(e) if self.isolation_refused(&e) => work().await,
            outcome => outcome,
        }
    }

    /// Whether `error` says the call ran at an isolation level stricter
    /// than READ COMMITTED ([`PostgresProviderError::is_isolation_refused`]):
    /// if so, from now on this store's calls run in READ COMMITTED
    /// transactions of their own ([`Db::require_read_committed`]), so the
    /// call can be made again.
    ///
    /// [`PostgresProviderError::is_isolation_refused`]: crate::PostgresProviderError::is_isolation_refused
    pub(crate) fn isolation_refused(&self, error: &crate::PostgresProviderError) -> bool {
        let refused = error.is_isolation_refused();
        if refused {
            self.pool
                .require_read_committed(self.schema.as_str(), error);
        }
        refused
    }

    /// The loop of [`Store::riding_outages`] (`outages` set) and
    /// [`Store::waiting_out_locks`].
    async fn retrying<T, F, Fut>(&self, outages: bool, mut work: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        const FIRST: Duration = Duration::from_millis(10);
        const MOST: Duration = Duration::from_millis(500);
        const MOST_LOCKED: Duration = Duration::from_secs(1);
        // No deadline when the pool's acquire timeout does not fit the clock.
        let outage = || Instant::now().checked_add(self.pool.acquire_timeout());
        let mut deadline = outage();
        let mut backoff = FIRST;
        let line = &*self.lock_line;
        // This operation's turn in the line, once it has one. While another
        // operation of the store waits out a lock, a new one takes its turn
        // before its first attempt too: otherwise each one started during
        // the lock would hold a connection its shard-mates need for a
        // second before joining the line.
        let mut probe = None;
        // Counted on the pool while it waits in the line or waits out a
        // lock itself (`AdmissionStats::waiting_out_locks`).
        let mut counted = None;
        if line.waiting.load(Ordering::SeqCst) > 0 {
            counted = Some(self.gate.waiting_out_lock());
            probe = Some(line.turn.lock().await);
        }
        let mut in_line = None;
        let mut isolated = false;
        loop {
            match crate::recycle::attempt(work()).await {
                // Rolled back before it did anything: again at once, in a
                // READ COMMITTED transaction of its own.
                Err(e) if !isolated && self.isolation_refused(&e) => isolated = true,
                Err(e) if e.is_lock_timeout() => {
                    in_line.get_or_insert_with(|| InLine::join(line));
                    counted.get_or_insert_with(|| self.gate.waiting_out_lock());
                    crate::observe::lock_timed_out(
                        &self.gate,
                        crate::recycle::operation().unwrap_or("none"),
                    );
                    tracing::debug!(schema = %self.schema, ?backoff, "gave up waiting for a lock, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MOST_LOCKED);
                    drop(probe.take());
                    probe = Some(line.turn.lock().await);
                    // An outage after the lock is timed from here.
                    deadline = outage();
                }
                Err(e)
                    if outages
                        && (e.is_connection_lost() || e.is_read_only())
                        && deadline.is_none_or(|d| Instant::now() + backoff < d) =>
                {
                    drop(probe.take());
                    if e.is_read_only() {
                        self.gate.note_read_only();
                    }
                    tracing::debug!(schema = %self.schema, ?backoff, "connection lost or server read-only, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MOST);
                }
                outcome => return outcome,
            }
        }
    }
}

/// The bounds on data, from [`crate::PostgresOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Milliseconds a parked orphan message is kept.
    pub orphan_retention_ms: i64,
    /// Largest serialized payload accepted.
    pub max_payload_bytes: usize,
    /// Largest history a fetch reads.
    pub max_history_bytes: i64,
    /// Most bytes of one instance's messages a turn takes.
    pub max_batch_bytes: i64,
}

impl Limits {
    /// The limits `options` set.
    pub(crate) fn of(options: &crate::PostgresOptions) -> Self {
        Self {
            orphan_retention_ms: crate::codec::millis(options.orphan_retention),
            max_payload_bytes: options.max_payload_bytes,
            max_history_bytes: i64::try_from(options.max_history_bytes).unwrap_or(i64::MAX),
            max_batch_bytes: i64::try_from(options.max_batch_bytes).unwrap_or(i64::MAX),
        }
    }

    /// [`Limits::check_payload`] for a history event: a failure event
    /// ([`Limits::check_failure`]) or any other.
    pub(crate) fn check_event(&self, event: &duroxide::Event, encoded: &str) -> Result<()> {
        if crate::codec::is_failure_event(event) {
            self.check_failure("history event", encoded)
        } else {
            self.check_payload("history event", encoded)
        }
    }

    /// [`Limits::check_payload`] for an orchestrator message of variant
    /// `kind`: a failure ([`Limits::check_failure`]) or any other.
    pub(crate) fn check_message(&self, field: &str, kind: &str, json: &str) -> Result<()> {
        if crate::codec::is_failure_message(kind) {
            self.check_failure(field, json)
        } else {
            self.check_payload(field, json)
        }
    }

    /// Refuses a failure over the larger of [`Limits::max_payload_bytes`]
    /// and [`Limits::max_history_bytes`], naming `field`. A failure must be
    /// recordable: duroxide's poison failure carries what it could not
    /// process escaped again (a turn's messages, an activity's input), and
    /// ignores its ack's outcome, so a failure refused for its size left
    /// the instance poisoned again at every lease's end, never ended.
    pub(crate) fn check_failure(&self, field: &str, value: &str) -> Result<()> {
        let bound = usize::try_from(self.max_history_bytes)
            .unwrap_or(usize::MAX)
            .max(self.max_payload_bytes);
        if value.len() > bound {
            return Err(crate::PostgresProviderError::invalid_input(
                field,
                format!(
                    "{} bytes exceeds the failure limit of {bound} bytes (the larger of \
                     PostgresOptions::max_payload_bytes and max_history_bytes)",
                    value.len()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a payload over [`Limits::max_payload_bytes`], naming `field`.
    pub(crate) fn check_payload(&self, field: &str, value: &str) -> Result<()> {
        if value.len() > self.max_payload_bytes {
            return Err(crate::PostgresProviderError::invalid_input(
                field,
                format!(
                    "{} bytes exceeds the payload limit of {} bytes (PostgresOptions::max_payload_bytes)",
                    value.len(),
                    self.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The retries of leased work, on a store whose pool never connects.
#[cfg(test)]
mod retry_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::sqlstate;
    use crate::error::tests::server;

    /// A store on a pool that waits `acquire_timeout` for a connection
    /// and never opens one.
    fn store(acquire_timeout: Duration) -> Store {
        let options = crate::PostgresOptions::default();
        let connect = options
            .connect_options("postgres://nobody@localhost:1/none")
            .unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(connect);
        let db = Db::new(pool, None);
        let gate = Gate::of(&db, None);
        let schema = SchemaName::new("retry_tests").unwrap();
        let limits = Limits::of(&options);
        Store::new(db, schema, SqlMode::StoredProcedures, limits, gate, None)
    }

    fn lock_timeout() -> crate::PostgresProviderError {
        let message = "canceling statement due to lock timeout";
        server(sqlstate::LOCK_NOT_AVAILABLE, message)
    }

    /// Leased work waits out a lock for as long as it lasts: before the
    /// lock timeout it waited for the lock and then committed. An outage
    /// is waited out for the pool's acquire timeout only.
    #[tokio::test]
    async fn a_lock_is_waited_out_past_the_acquire_timeout_an_outage_is_not() {
        let s = store(Duration::from_millis(50));
        let attempts = AtomicUsize::new(0);
        let began = Instant::now();
        let outcome = s
            .riding_outages(|| async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0..5 => Err(lock_timeout()),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 6);
        // 10 + 20 + 40 + 80 + 160 ms of backoff.
        assert!(began.elapsed() >= Duration::from_millis(300));

        let attempts = AtomicUsize::new(0);
        let outcome: Result<()> = s
            .riding_outages(|| async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(server("08006", "connection failure"))
            })
            .await;
        assert!(outcome.is_err_and(|e| e.is_connection_lost()));
        // 10 + 20 ms fit in 50 ms; 40 more would not.
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    /// While one operation of the store waits out a lock, another started
    /// then takes its turn in the line before its first attempt: the
    /// store's attempts never overlap, so the tenant holds at most one
    /// connection at a time on a lock. Each attempt lasts 30 ms here, the
    /// first backoff 10 ms; the lock lifts after four attempts.
    #[tokio::test]
    async fn a_call_started_while_another_waits_out_a_lock_joins_the_line_first() {
        let s = store(Duration::from_secs(30));
        let attempts = AtomicUsize::new(0);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let attempt = || async {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..4 => Err(lock_timeout()),
                _ => Ok(()),
            }
        };
        let first = s.waiting_out_locks(attempt);
        let later = async {
            while attempts.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            s.waiting_out_locks(attempt).await
        };
        let (first, later) = tokio::join!(first, later);
        assert!(first.is_ok() && later.is_ok(), "{first:?} {later:?}");
        assert_eq!(most.load(Ordering::SeqCst), 1, "attempts overlapped");
        assert_eq!(s.lock_line.waiting.load(Ordering::SeqCst), 0);
    }

    /// A client's call waits out a lock as leased work does, but a lost
    /// connection is the caller's: an enqueue whose commit reached the
    /// server must not be sent again.
    #[tokio::test]
    async fn a_client_call_waits_out_a_lock_but_not_a_lost_connection() {
        let s = store(Duration::from_secs(30));
        let attempts = AtomicUsize::new(0);
        let outcome = s
            .waiting_out_locks(|| async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0..2 => Err(lock_timeout()),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);

        let attempts = AtomicUsize::new(0);
        let outcome: Result<()> = s
            .waiting_out_locks(|| async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(server("08006", "connection failure"))
            })
            .await;
        assert!(outcome.is_err_and(|e| e.is_connection_lost()));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "sent once");
    }

    /// However many of a store's operations wait out a lock, one retry
    /// runs at a time; first attempts begun before any of them gave up are
    /// not held back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stores_lock_timeout_retries_run_one_at_a_time() {
        let s = store(Duration::from_secs(30));
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (first, most_first) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let op = || async {
            let mut attempt = 0;
            s.riding_outages(|| {
                attempt += 1;
                let (counter, peak) = match attempt {
                    1 => (&first, &most_first),
                    _ => (&running, &most),
                };
                async move {
                    let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                    if attempt < 4 {
                        Err(lock_timeout())
                    } else {
                        Ok(())
                    }
                }
            })
            .await
        };
        let outcomes = futures_util::future::join_all((0..4).map(|_| op())).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(most.load(Ordering::SeqCst), 1, "retries at once");
        assert_eq!(
            most_first.load(Ordering::SeqCst),
            4,
            "first attempts at once"
        );
    }
}

/// The store without a provider: built by hand on a pool, it runs the
/// operations of each mode, its driver choosing the SQL.
#[cfg(all(test, feature = "throwaway"))]
mod tests {
    use std::time::Duration;

    use duroxide::providers::{TagFilter, WorkItem};

    use super::*;
    use crate::{PostgresOptions, ThrowawayPostgres};
    use crate::{deletion, migrate, orchestration_queue, worker_queue};

    /// `DATABASE_URL`, or a throwaway server started for this test.
    fn database_url() -> String {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => ThrowawayPostgres::start().unwrap().url().to_string(),
        }
    }

    /// Migrates `schema` for `mode` (tables only in inline mode) and builds
    /// a store on it: no `PostgresProvider` involved.
    async fn store(pool: &sqlx::PgPool, schema: &str, mode: SqlMode) -> Store {
        let schema = SchemaName::new(schema).unwrap();
        migrate::migrate_status(pool, &schema, mode).await.unwrap();
        let options = PostgresOptions::default();
        let db = Db::new(pool.clone(), None);
        let gate = Gate::of(&db, None);
        Store::new(db, schema, mode, Limits::of(&options), gate, None)
    }

    /// Functions in `schema` (the procedures, when installed).
    async fn functions(pool: &sqlx::PgPool, schema: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p \
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
              WHERE n.nspname = $1",
        )
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap()
    }

    /// Claims and completes an activity, claims and releases an instance's
    /// first message, deletes the instance: the driver's fetches and delete.
    async fn round_trip(s: &Store) {
        let activity = WorkItem::ActivityExecute {
            instance: "i1".to_string(),
            execution_id: 1,
            id: 1,
            name: "Work".to_string(),
            input: "1".to_string(),
            session_id: None,
            tag: None,
        };
        let lease = Duration::from_secs(30);
        let untagged = TagFilter::DefaultOnly;
        worker_queue::enqueue(s, &activity).await.unwrap();
        let (item, token, attempts) =
            worker_queue::fetch(s, lease, Duration::ZERO, None, &untagged)
                .await
                .unwrap()
                .expect("the activity is claimed");
        assert_eq!((item, attempts), (activity, 1));
        worker_queue::ack(s, &token, None).await.unwrap();
        let again = worker_queue::fetch(s, lease, Duration::ZERO, None, &untagged).await;
        assert!(again.unwrap().is_none(), "an acked activity is gone");

        let start = WorkItem::StartOrchestration {
            instance: "i1".to_string(),
            orchestration: "Flow".to_string(),
            input: "{}".to_string(),
            version: Some("1.0.0".to_string()),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            execution_id: 1,
        };
        orchestration_queue::enqueue(s, &start, None).await.unwrap();
        let (item, token, attempts) = orchestration_queue::fetch(s, lease, Duration::ZERO, None)
            .await
            .unwrap()
            .expect("the instance is claimed");
        assert_eq!((item.instance.as_str(), attempts), ("i1", 1));
        assert_eq!(item.orchestration_name, "Flow");
        assert_eq!(item.messages, vec![start]);
        orchestration_queue::abandon(s, &token, None, false)
            .await
            .unwrap();

        let deleted = deletion::delete_instances_atomic(s, &["i1".to_string()], true)
            .await
            .unwrap();
        assert_eq!(deleted.queue_messages_deleted, 1, "{deleted:?}");
        let left = orchestration_queue::fetch(s, lease, Duration::ZERO, None).await;
        assert!(
            left.unwrap().is_none(),
            "the deleted instance's message is gone"
        );
    }

    #[tokio::test]
    async fn a_store_without_a_provider_runs_operations_in_each_mode() {
        let url = database_url();
        let options = PostgresOptions::default();
        let pool = options
            .pool_options()
            .max_connections(4)
            .connect_with(options.connect_options(&url).unwrap())
            .await
            .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let procedures = format!("store_p_{}_{nanos:x}", std::process::id());
        let inline = format!("store_i_{}_{nanos:x}", std::process::id());
        let body = {
            let (pool, procedures, inline) = (pool.clone(), procedures.clone(), inline.clone());
            async move {
                let s = store(&pool, &procedures, SqlMode::StoredProcedures).await;
                assert_eq!(s.driver, Driver::Procedures);
                round_trip(&s).await;
                assert!(
                    functions(&pool, &procedures).await > 0,
                    "procedures installed"
                );

                let s = store(&pool, &inline, SqlMode::InlineSql).await;
                assert_eq!(s.driver, Driver::Inline);
                round_trip(&s).await;
                // Nothing to call: the inline driver sent every statement.
                assert_eq!(functions(&pool, &inline).await, 0);
            }
        };
        // Spawned, so a failure still reaches the cleanup below.
        let outcome = tokio::spawn(body).await;
        for schema in [&procedures, &inline] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
