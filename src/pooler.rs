//! The provider's pool, and how statements reach it through a transaction
//! pooler (PgBouncer with `pool_mode = transaction`).
//!
//! Behind such a pooler a server connection belongs to a client connection
//! only while a transaction is open: at every `ReadyForQuery` that reports
//! "idle" the pooler may hand it to another client. sqlx's extended protocol
//! does not fit that by default:
//!
//! * a named prepared statement (`sqlx_s_N`, cached per client connection)
//!   lives on whichever server connection parsed it, so a later `Bind` meets
//!   a server that never saw it, or one that holds another client's
//!   statement of the same name;
//! * even an unnamed statement is sent as `Parse`/`Describe`/`Sync` and then,
//!   once the description is read, `Bind`/`Execute`/`Sync`: two
//!   synchronisations, between which the pooler may switch servers.
//!
//! [`Db`] is what operation modules execute on (`&p.pool`). Without a pooler
//! it is the pool itself. With [`PostgresOptions::transaction_pooler`] each
//! statement runs, unnamed, inside an explicit transaction on one connection
//! (`BEGIN` with the session settings as `SET LOCAL`, the statement,
//! `COMMIT`), so the server connection stays the same throughout. Inline
//! transactions ([`crate::inline::Tx`]) are explicit already; they close the
//! statements they prepared before they end.
//!
//! [`PostgresOptions::transaction_pooler`]: crate::PostgresOptions::transaction_pooler

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::affinity::Tenancy;
use crate::sql::Sql;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, PgPool, Postgres, SqlStr};

/// The pool operations run on, and whether a transaction pooler is in front
/// of the server.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: PgPool,
    /// Under a transaction pooler: the statement that opens each transaction.
    pooled_begin: Option<Sql>,
    /// What opens an inline transaction, which waits at most a second for a
    /// lock: `BEGIN` (or `pooled_begin`) and the lock timeout, in one round
    /// trip; `BEGIN` alone on connections that carry the lock timeout.
    bounded_begin: Sql,
    /// Whether the pool's connections carry the lock timeout as a startup
    /// option ([`crate::config::carries_lock_timeout`]), so that a single
    /// statement needs no transaction of its own to wait at most a second
    /// for a lock ([`Bounded`]).
    lock_timeout_set: bool,
    /// Set once a call met a connection whose transactions default to an
    /// isolation level stricter than READ COMMITTED
    /// ([`Db::require_read_committed`]): from then on every statement that
    /// would run alone runs in a transaction of its own opened with
    /// [`READ_COMMITTED`]. Shared by every clone of this `Db`.
    own_transactions: Arc<AtomicBool>,
    /// How long a statement, or an inline transaction once begun, may go
    /// unanswered before the connection is given up on
    /// ([`crate::PostgresOptions::call_timeout`]; `None`: as long as TCP
    /// keeps it).
    call_timeout: Option<Duration>,
    /// With tenant affinity: the shared pool's shards, this tenant's
    /// (`pool` being that one) and the tenant, held while any clone of this
    /// `Db` lives. Connections come from [`Db::acquire`] and go back
    /// through [`Db::release`].
    home: Option<Arc<Tenancy>>,
}

/// A connection an operation runs on, and the shard it came from (with
/// tenant affinity). Dropped, it goes back to its pool as any pooled
/// connection; an operation that finished cleanly hands it to
/// [`Db::release`] instead.
#[derive(Debug)]
pub(crate) struct Conn {
    conn: PoolConnection<Postgres>,
    shard: Option<usize>,
}

impl Conn {
    /// Closes the connection when dropped, instead of returning it.
    pub(crate) fn close_on_drop(&mut self) {
        self.conn.close_on_drop();
    }
}

impl Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Db {
    /// `pool`, reached directly (`pooled_begin` `None`) or through a
    /// transaction pooler, each transaction opened with `pooled_begin`.
    pub(crate) fn new(pool: PgPool, pooled_begin: Option<String>) -> Self {
        let lock_timeout_set =
            pooled_begin.is_none() && crate::config::carries_lock_timeout(&pool.connect_options());
        let begin = pooled_begin.as_deref().unwrap_or(READ_COMMITTED);
        let bounded_begin = Sql::new(match lock_timeout_set {
            true => begin.to_owned(),
            false => format!("{begin}; {LOCK_TIMEOUT}"),
        });
        Self {
            pool,
            pooled_begin: pooled_begin.map(Sql::new),
            bounded_begin,
            lock_timeout_set,
            own_transactions: Arc::default(),
            call_timeout: None,
            home: None,
        }
    }

    /// The same, giving up on a connection whose server leaves a call
    /// unanswered for `limit` ([`answered`]).
    pub(crate) fn with_call_timeout(mut self, limit: Option<Duration>) -> Self {
        self.call_timeout = limit;
        self
    }

    /// How long a call may go unanswered ([`Db::with_call_timeout`]).
    pub(crate) fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// The same without a call timeout: for deletions and prunes, whose
    /// one statement or transaction may rightly run for minutes on a large
    /// tenant (a statement timeout still bounds them where one is set).
    pub(crate) fn long_running(&self) -> Self {
        self.clone().with_call_timeout(None)
    }

    /// A call met a connection whose transactions default to an isolation
    /// level stricter than READ COMMITTED (`error` says how,
    /// [`crate::PostgresProviderError::is_isolation_refused`]): from now on
    /// every statement of this `Db` that would run alone runs in a READ
    /// COMMITTED transaction of its own, two round trips more (its `BEGIN`
    /// and `COMMIT`). Warns the first time.
    pub(crate) fn require_read_committed(&self, schema: &str, error: &dyn std::fmt::Display) {
        if !self.own_transactions.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                schema,
                "a connection's transactions default to an isolation level stricter than READ \
                 COMMITTED ({error}): each provider call now runs in a READ COMMITTED transaction \
                 of its own, two round trips more; set default_transaction_isolation = \
                 'read committed' for the provider's role or connections (docs/operations.md, \
                 \"Isolation level\")"
            );
        }
    }

    /// What opens the transaction a statement that needs none of its own
    /// runs in: a transaction pooler's `BEGIN`, or READ COMMITTED's once
    /// [`Db::require_read_committed`] was called; `None` otherwise.
    fn statement_begin(&self) -> Option<&Sql> {
        match self.pooled_begin.as_ref() {
            Some(begin) => Some(begin),
            None => self
                .own_transactions
                .load(Ordering::Relaxed)
                .then(|| &*READ_COMMITTED_BEGIN),
        }
    }

    /// The same, on `schema`'s shard of `shards` instead of the pool: the
    /// schema keeps that home until every clone of the `Db` is dropped.
    pub(crate) fn on_shard(&self, shards: &Arc<crate::affinity::Shards>, schema: &str) -> Self {
        let tenancy = shards.join(schema);
        Self {
            pool: shards.pool(tenancy.home()).clone(),
            pooled_begin: self.pooled_begin.clone(),
            bounded_begin: self.bounded_begin.clone(),
            lock_timeout_set: self.lock_timeout_set,
            own_transactions: self.own_transactions.clone(),
            call_timeout: self.call_timeout,
            home: Some(Arc::new(tenancy)),
        }
    }

    /// A connection: from the pool, or with tenant affinity, the one kept
    /// for this tenant, or one from its shard or an idle one it may borrow
    /// ([`crate::affinity::Shards::acquire`]).
    pub(crate) async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        match &self.home {
            None => Ok(Conn {
                conn: self.pool.acquire().await?,
                shard: None,
            }),
            Some(t) => {
                let (conn, shard) = t.shards().acquire(t.home(), t.tenant()).await?;
                Ok(Conn {
                    conn,
                    shard: Some(shard),
                })
            }
        }
    }

    /// A connection of this tenant's home shard, never one borrowed from
    /// another shard: for work that should leave its effects on the
    /// connections the tenant's operations will use ([`crate::warm_up`]).
    /// Without affinity, [`Db::acquire`].
    pub(crate) async fn acquire_home(&self) -> Result<Conn, sqlx::Error> {
        match &self.home {
            None => self.acquire().await,
            Some(t) => Ok(Conn {
                conn: t.shards().pool(t.home()).acquire().await?,
                shard: Some(t.home()),
            }),
        }
    }

    /// Hands back a connection whose last statement, or transaction, an
    /// operation saw to its end: with tenant affinity it may be kept for
    /// this tenant's next operation ([`crate::reuse`]); otherwise it goes
    /// back to the pool.
    pub(crate) fn release(&self, conn: Conn) {
        if let (Some(t), Some(shard)) = (&self.home, conn.shard) {
            t.shards().release(shard, t.tenant(), conn.conn);
        }
    }

    /// With tenant affinity, how many schemas share this tenant's home
    /// shard (its own included); `None` without affinity.
    pub(crate) fn tenants_at_home(&self) -> Option<usize> {
        self.home.as_ref().map(|t| t.shards().homed(t.home()))
    }

    /// The pool the application gave: the shared pool with tenant affinity,
    /// else the pool itself.
    pub(crate) fn shared(&self) -> &PgPool {
        match &self.home {
            None => &self.pool,
            Some(t) => t.shards().shared(),
        }
    }

    /// Operations of the shared pool's providers waiting for a connection
    /// of their tenant's shard now; zero without tenant affinity, where
    /// sqlx's pool queues them out of sight.
    pub(crate) fn waiting_for_connections(&self) -> usize {
        self.home.as_ref().map_or(0, |t| t.shards().waiting())
    }

    /// How long the pool waits for a connection before it gives up.
    pub(crate) fn acquire_timeout(&self) -> std::time::Duration {
        self.pool.options().get_acquire_timeout()
    }

    /// What opens an inline transaction that waits at most a second for a
    /// lock, with or without a transaction pooler (`inline/lock_timeout.sql`).
    pub(crate) fn bounded_begin(&self) -> &Sql {
        &self.bounded_begin
    }

    /// The group of connections this tenant's fetches run on, for the
    /// fetch gate ([`crate::admission::Gate::enter`]): with tenant
    /// affinity, its home shard and its share's connections
    /// ([`crate::affinity::Shards::share`]); `None` without.
    pub(crate) fn fetch_share(&self) -> Option<crate::admission::Share> {
        self.home.as_ref().map(|t| t.shards().share(t.home()))
    }

    /// What opens a transaction under a transaction pooler; `None` without one.
    pub(crate) fn pooled_begin(&self) -> Option<&Sql> {
        self.pooled_begin.as_ref()
    }

    /// `query`'s first row, on `conn`, a connection of this pool acquired by
    /// the caller: for statements whose parameters must be computed once a
    /// connection is in hand (a lease counted from the call, not from the
    /// end of a wait for a connection).
    pub(crate) async fn fetch_optional_on<'q, E>(
        &self,
        conn: Conn,
        query: E,
    ) -> Result<Option<PgRow>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        match self.statement_begin() {
            None => {
                let mut flight = InFlight(Some(conn));
                let conn = flight.conn()?;
                let row = answered(self.call_timeout, (&mut **conn).fetch_optional(query)).await;
                self.landed(flight, &row);
                row
            }
            Some(begin) => Ok(first_row(self.pinned(conn, begin, query).await?)),
        }
    }

    /// [`Executor::fetch_many`] on this `Db`, each call in a transaction of
    /// its own opened with `begin` when there is one (a transaction
    /// pooler's `BEGIN`, or one with a lock timeout: [`Bounded`]).
    fn fetch_many_with<'e, 'q: 'e, E>(
        &'e self,
        begin: Option<&'e Sql>,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let begin = begin.or_else(|| self.statement_begin());
        stream::once(async move {
            let conn = self.acquire().await?;
            match begin {
                None => {
                    let mut flight = InFlight(Some(conn));
                    let conn = flight.conn()?;
                    let results: Result<Vec<_>, _> = answered(
                        self.call_timeout,
                        (&mut **conn).fetch_many(query).try_collect(),
                    )
                    .await;
                    self.landed(flight, &results);
                    results
                }
                Some(begin) => self.pinned(conn, begin, query).await,
            }
        })
        .map_ok(|results| stream::iter(results.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// [`Executor::fetch_optional`] on this `Db`, as
    /// [`Db::fetch_many_with`].
    fn fetch_optional_with<'e, 'q: 'e, E>(
        &'e self,
        begin: Option<&'e Sql>,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        match begin.or_else(|| self.statement_begin()) {
            None => Box::pin(async move {
                let conn = self.acquire().await?;
                self.fetch_optional_on(conn, query).await
            }),
            Some(begin) => Box::pin(async move {
                let conn = self.acquire().await?;
                Ok(first_row(self.pinned(conn, begin, query).await?))
            }),
        }
    }

    /// Where the connection of a statement sent alone goes once the call
    /// ended with `outcome`: kept or handed back ([`Db::release`]) when it
    /// succeeded; back to the pool when the server answered with an error
    /// (a lock timeout, a lock token unknown: the connection is sound);
    /// closed when the connection failed or the server left the call
    /// unanswered ([`answered`]), since an answer may still be owed.
    fn landed<T>(&self, mut flight: InFlight, outcome: &Result<T, sqlx::Error>) {
        match outcome {
            Ok(_) => {
                if let Some(conn) = flight.done() {
                    self.release(conn);
                }
            }
            Err(sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)) => {}
            Err(_) => drop(flight.done()),
        }
    }

    /// Runs `query` in a transaction of its own on `conn`, opened with
    /// `begin`, and collects its results: unnamed under a transaction
    /// pooler, else as the query asks (sqlx caches its statements).
    async fn pinned<'q, E>(
        &self,
        conn: Conn,
        begin: &Sql,
        query: E,
    ) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let mut guard = InFlight(Some(conn));
        let conn = guard.conn()?;
        let pooled = self.pooled_begin.is_some();
        let outcome = answered::<_, sqlx::Error, _>(self.call_timeout, async move {
            // The executor's own boxed futures and streams: sqlx's `async fn`
            // helpers over a borrowed connection would not prove `Send` here.
            (&mut **conn).execute(sqlx::raw_sql(begin)).await?;
            let outcome: Result<Vec<_>, sqlx::Error> = match pooled {
                true => (&mut **conn).fetch_many(Unnamed(query)).try_collect().await,
                false => (&mut **conn).fetch_many(query).try_collect().await,
            };
            let end = if outcome.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            (&mut **conn).execute(sqlx::raw_sql(end)).await?;
            Ok(outcome)
        })
        .await?;
        if let Some(conn) = guard.done() {
            self.release(conn);
        }
        outcome
    }
}

/// Set by the first round trip of an inline transaction that waits at most
/// a second for a lock ([`Db::bounded_begin`]).
const LOCK_TIMEOUT: &str = include_str!("../inline/lock_timeout.sql");

/// What opens every transaction the provider opens itself: READ COMMITTED
/// whatever the connection's `default_transaction_isolation`, as every
/// statement is written for (docs/architecture.md, "Isolation").
pub(crate) const READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// [`READ_COMMITTED`] as the statements a `Db` runs take it.
static READ_COMMITTED_BEGIN: std::sync::LazyLock<Sql> =
    std::sync::LazyLock::new(|| Sql::new(READ_COMMITTED));

/// The first row among a statement's results.
fn first_row(results: Vec<Either<PgQueryResult, PgRow>>) -> Option<PgRow> {
    results.into_iter().find_map(|step| match step {
        Either::Right(row) => Some(row),
        Either::Left(_) => None,
    })
}

impl Deref for Db {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

/// A connection with a statement or transaction in flight: closed rather
/// than returned to the pool if dropped before [`InFlight::done`] (a
/// cancelled call, or one given up on by [`answered`]), so that no other
/// caller inherits an open transaction or the answer still owed to this
/// one, and no pool slot waits for a server that stopped answering.
pub(crate) struct InFlight(pub(crate) Option<Conn>);

impl InFlight {
    /// The connection, until [`InFlight::done`].
    pub(crate) fn conn(&mut self) -> Result<&mut Conn, sqlx::Error> {
        self.0.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// The call ended (the server answered): the connection may be reused.
    pub(crate) fn done(&mut self) -> Option<Conn> {
        self.0.take()
    }

    /// The call ended with `outcome`: the connection goes back to its
    /// pool, unless the outcome is a lost connection
    /// ([`crate::PostgresProviderError::is_connection_lost`], a call given
    /// up on among them), in which case it is closed.
    pub(crate) fn settle<T>(mut self, outcome: &Result<T, crate::PostgresProviderError>) {
        if !outcome
            .as_ref()
            .is_err_and(crate::PostgresProviderError::is_connection_lost)
        {
            drop(self.done());
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// `work`, given up after `limit` (if any) with an I/O error of kind
/// `TimedOut`, which counts as a lost connection
/// ([`crate::PostgresProviderError::is_connection_lost`]): the server left
/// the call unanswered that long (a network partition, or a failover whose
/// old server vanished without a reset, leaves a connection silent until
/// TCP gives up, a quarter of an hour later). `work` is dropped, so the
/// connection it ran on must be held by an [`InFlight`] (or an inline
/// transaction), which closes it. A plain function, not an `async fn`:
/// the future holds `work` once (see [`crate::recycle::Scope::run`]).
pub(crate) fn answered<T, E, F>(
    limit: Option<Duration>,
    work: F,
) -> impl Future<Output = Result<T, E>>
where
    F: Future<Output = Result<T, E>>,
    E: From<sqlx::Error>,
{
    answered_by(Deadline::after(limit), work)
}

/// [`answered`], with a deadline set before `work` began: for the
/// statements of one inline transaction, which share one.
pub(crate) fn answered_by<T, E, F>(
    deadline: Option<Deadline>,
    work: F,
) -> impl Future<Output = Result<T, E>>
where
    F: Future<Output = Result<T, E>>,
    E: From<sqlx::Error>,
{
    match deadline {
        None => futures_util::future::Either::Right(work),
        Some(Deadline { at, limit }) => futures_util::future::Either::Left(
            tokio::time::timeout_at(at, work).map(move |outcome| match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(unanswered(limit).into()),
            }),
        ),
    }
}

/// When a call, or a transaction, begun now must have been answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: tokio::time::Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now, if any (and if the clock can count that far).
    pub(crate) fn after(limit: Option<Duration>) -> Option<Self> {
        let limit = limit?;
        let at = tokio::time::Instant::now().checked_add(limit)?;
        Some(Self { at, limit })
    }
}

/// The error of a call the server left unanswered for `limit`.
pub(crate) fn unanswered(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the server left a call unanswered for {limit:?} (PostgresOptions::call_timeout); \
             its connection was closed"
        ),
    ))
}

/// A query sent as an unnamed statement, whatever it asked for.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(self) -> SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

impl<'c> Executor<'c> for &'c Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.fetch_many_with(self.pooled_begin.as_ref(), query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.fetch_optional_with(self.pooled_begin.as_ref(), query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    // sqlx declares this only with its `offline` feature, which the crate
    // turns on (through `macros`) so that the impl compiles whatever
    // features other crates in a build ask of sqlx.
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.pool.describe(sql)
    }
}

/// What a single-statement operation that must not wait long for a lock
/// (an ack, an abandon or a renewal of a lease already held; an enqueue,
/// a history append or a read) runs its statement on: the [`Db`], the statement sent
/// alone (a procedure's call, which pins `lock_timeout` itself), or, with
/// `bounded` (inline mode), in a transaction of its own that waits at most
/// a second for a lock ([`Db::bounded_begin`]; SQLSTATE 55P03 when it gives
/// up), as the procedure it stands for would. PostgreSQL takes a
/// statement's table locks when it parses or binds it, before anything the
/// statement itself sets takes effect, so the setting needs a transaction
/// around the statement: two round trips more than the statement alone
/// (its `BEGIN`, which carries the setting, and its `COMMIT`); none under
/// a transaction pooler, where each statement has that transaction anyway,
/// and none on connections that carry the lock timeout as a startup option
/// (a pool built from `PostgresOptions::connect_options`), where the
/// statement goes alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounded<'a> {
    /// The pool, and a transaction pooler's `BEGIN` if any.
    pub db: &'a Db,
    /// Whether the statement needs a transaction of its own to carry the
    /// lock timeout (inline mode).
    pub bounded: bool,
}

impl<'a> Bounded<'a> {
    /// What opens each statement's transaction: the lock timeout's `BEGIN`
    /// when bounded on connections that do not carry the lock timeout, else
    /// the pool's own (a transaction pooler's, or none).
    fn begin(&self) -> Option<&'a Sql> {
        match self.bounded && !self.db.lock_timeout_set {
            true => Some(&self.db.bounded_begin),
            false => self.db.pooled_begin.as_ref(),
        }
    }
}

impl<'c> Executor<'c> for Bounded<'c> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.db.fetch_many_with(self.begin(), query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.db.fetch_optional_with(self.begin(), query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        Executor::prepare_with(self.db, sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Executor::describe(self.db, sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unanswered_call_is_a_lost_connection_and_no_limit_waits() {
        let limit = Some(Duration::from_millis(10));
        let silent = std::future::pending::<Result<(), sqlx::Error>>();
        let err = crate::PostgresProviderError::from(answered(limit, silent).await.unwrap_err());
        assert!(err.is_connection_lost() && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("call_timeout"), "{err}");
        let quick = answered(limit, async { Ok::<_, sqlx::Error>(7) }).await;
        assert_eq!(quick.ok(), Some(7));
        let unbounded = answered(None, std::future::pending::<Result<(), sqlx::Error>>());
        let waited = tokio::time::timeout(Duration::from_millis(50), unbounded).await;
        assert!(waited.is_err(), "no limit: the call is not given up on");
        assert!(Deadline::after(None).is_none());
        assert!(
            Deadline::after(Some(Duration::MAX)).is_none(),
            "past the clock's range: none"
        );
    }
}
