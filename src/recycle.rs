//! Connection recycling: a bound on what one server backend accumulates.
//!
//! A PostgreSQL backend caches, for the life of the connection, the compiled
//! procedures, their plans and the relation/catalog entries of every schema
//! it has served, and never frees them: about a megabyte per tenant in
//! procedure mode (see docs/benchmarks.md). On a pool shared by many
//! tenants, every connection ends up serving every tenant, so backend
//! memory grows with the tenant count times the pool size.
//!
//! The bound: a pooled connection serves at most
//! `PostgresOptions::tenants_per_connection` distinct schemas. When a
//! provider operation is about to take an idle connection that has already
//! served that many other schemas, the connection is closed instead (the
//! pool opens a fresh one), so no backend holds the caches of more than that
//! many tenants. A pool with a single tenant, or a few, never recycles.
//!
//! How it works without touching every call site: the provider runs each
//! operation inside a [`Scope`] (a task-local naming the tenant and the
//! pool's [`Gate`]); the pool's `after_connect` and `before_acquire` hooks,
//! installed by [`PostgresOptions::pool_options`], read it when the
//! operation takes a connection. sqlx gives a connection no identity, so
//! the hooks know a connection by its creation instant (now minus the age
//! sqlx reports); two connections opened within [`SAME_CONNECTION`] of each
//! other share one record, which only makes them recycle sooner.
//!
//! The same hooks time how long leased work (acks, abandons, renewals)
//! waited for its connection, for [`crate::AdmissionStats`], and close the
//! connections opened before an operation met a read-only server (SQLSTATE
//! 25006): such a session stays read-only for as long as it lives (a
//! failover's old primary, now a standby, keeps the connections made to
//! it), so the pool opens new ones, which reach the writable server
//! ([`Gate::note_read_only`]).
//!
//! Pools built without these hooks (a plain `PgPoolOptions`) do not
//! recycle; build shared pools from [`PostgresOptions::pool_options`].

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgPoolOptions;

use crate::admission::Gate;
use crate::config::PostgresOptions;

/// Connections whose creation instants are this close are taken as one:
/// wide enough for a thread preempted between sqlx's clock reading and
/// ours, narrow enough that only connections opened together share a
/// record (which only makes them recycle sooner).
const SAME_CONNECTION: Duration = Duration::from_millis(2);

tokio::task_local! {
    static SCOPE: Scope;
}

/// The provider operation running on this task: what the pool hooks need.
#[derive(Clone)]
pub(crate) struct Scope {
    /// The pool's shared state, where the hooks count.
    pub gate: Arc<Gate>,
    /// The schema served.
    pub tenant: Arc<str>,
    /// When the operation, or its current attempt ([`attempt`]), started:
    /// a wait for a connection is timed from the attempt that asked for it.
    pub started: Instant,
    /// Leased work (ack, abandon, renewal): its wait for a connection counts
    /// towards the slowest leased acquire.
    pub leased: bool,
    /// The trait method running, as metrics label it.
    pub operation: &'static str,
}

impl Scope {
    /// Runs `work` with this scope visible to the pool's hooks. A plain
    /// function, not an `async fn`: the future holds `work` once (an
    /// `async fn` would hold it as its argument and again as awaited, and
    /// every layer of wrapping would double an operation's future).
    pub(crate) fn run<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        SCOPE.scope(self, work)
    }
}

/// Whether the calling task runs leased work (an ack, an abandon, a lock
/// renewal), whose lease runs out while it waits.
pub(crate) fn leased() -> bool {
    SCOPE.try_with(|scope| scope.leased).unwrap_or(false)
}

/// The trait method the calling task runs, if it runs one.
pub(crate) fn operation() -> Option<&'static str> {
    SCOPE.try_with(|scope| scope.operation).ok()
}

/// `work`, run in the scope of the task that calls this (if any): for work
/// handed to a task of its own, so the pool's hooks still see the tenant.
pub(crate) fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    within(SCOPE.try_with(Scope::clone).ok(), work)
}

/// `work`, one attempt of the calling task's operation (its first or a
/// retry), in that operation's scope started now: its waits for a
/// connection are timed from the attempt, not from the operation's start.
pub(crate) fn attempt<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let scope = SCOPE
        .try_with(|scope| Scope {
            started: Instant::now(),
            ..scope.clone()
        })
        .ok();
    within(scope, work)
}

/// `work` in `scope`, if any; holding `work` once (see [`Scope::run`]).
fn within<F: Future>(scope: Option<Scope>, work: F) -> impl Future<Output = F::Output> {
    match scope {
        Some(scope) => Either::Left(scope.run(work)),
        None => Either::Right(work),
    }
}

/// An instant all creation times are measured from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What one connection has served.
struct Served {
    tenants: HashSet<Arc<str>>,
    last_seen: Instant,
}

/// The connections of one pool, by creation time (nanoseconds since
/// [`epoch`]).
struct Table {
    limit: usize,
    /// Records kept at most (closed connections' records age out).
    capacity: usize,
    connections: Mutex<BTreeMap<u128, Served>>,
}

/// The decision for a connection about to be used.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    Recycle,
}

impl Table {
    fn new(limit: usize, max_connections: u32) -> Self {
        Table {
            limit,
            capacity: 2 * usize::try_from(max_connections).unwrap_or(usize::MAX / 4) + 16,
            connections: Mutex::new(BTreeMap::new()),
        }
    }

    /// The connection's key: its creation instant, from its age now.
    fn key(age: Duration) -> u128 {
        let now = Instant::now();
        now.checked_sub(age).map_or(0, |created| {
            created.saturating_duration_since(epoch()).as_nanos()
        })
    }

    /// Notes that the connection created at `key` serves `tenant` next, or
    /// says it must be recycled first.
    fn serve(&self, key: u128, tenant: &Arc<str>, fresh: bool) -> Verdict {
        let mut all = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let tolerance = SAME_CONNECTION.as_nanos();
        let found = all
            .range(key.saturating_sub(tolerance)..=key.saturating_add(tolerance))
            .min_by_key(|(k, _)| k.abs_diff(key))
            .map(|(k, _)| *k);
        let now = Instant::now();
        let key = match found {
            Some(k) => k,
            None => {
                if all.len() >= self.capacity {
                    // Forget the record seen longest ago: a closed connection.
                    if let Some(stale) =
                        all.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k)
                    {
                        all.remove(&stale);
                    }
                }
                all.insert(
                    key,
                    Served {
                        tenants: HashSet::new(),
                        last_seen: now,
                    },
                );
                key
            }
        };
        let Some(served) = all.get_mut(&key) else {
            return Verdict::Keep;
        };
        served.last_seen = now;
        if served.tenants.contains(tenant) {
            return Verdict::Keep;
        }
        if !fresh && self.limit > 0 && served.tenants.len() >= self.limit {
            all.remove(&key);
            return Verdict::Recycle;
        }
        served.tenants.insert(tenant.clone());
        Verdict::Keep
    }

    /// A pool hook: `true` keeps the connection.
    fn hook(&self, meta: &PoolConnectionMetadata, fresh: bool) -> bool {
        let Ok(scope) = SCOPE.try_with(Scope::clone) else {
            return true; // not a provider operation
        };
        if !fresh && scope.gate.opened_before_read_only(meta.age) {
            return false; // may still be a session of a read-only server
        }
        let verdict = self.serve(Self::key(meta.age), &scope.tenant, fresh);
        if verdict == Verdict::Recycle {
            scope.gate.note_recycled();
            return false;
        }
        if scope.leased {
            scope.gate.note_leased_acquire(scope.started.elapsed());
        }
        true
    }
}

impl PostgresOptions {
    /// Pool options for a pool shared by many tenants: the sizes and
    /// timeouts of these options, and the hooks that recycle a connection
    /// once it has served [`PostgresOptions::tenants_per_connection`]
    /// distinct schemas (bounding the server memory each backend holds) and
    /// time the acquires of leased work. Build the pool with
    /// `.connect_with(options.connect_options(url)?)`;
    /// [`crate::PostgresProvider::connect_with`] does this for its own pool.
    /// Setting another `after_connect` or `before_acquire` hook on the
    /// result replaces these.
    pub fn pool_options(&self) -> PgPoolOptions {
        let table = Arc::new(Table::new(
            self.tenants_per_connection,
            self.max_connections,
        ));
        let on_connect = table.clone();
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .test_before_acquire(self.test_before_acquire)
            .after_connect(move |_conn, meta| {
                on_connect.hook(&meta, true);
                Box::pin(async { Ok(()) })
            })
            .before_acquire(move |_conn, meta| {
                let keep = table.hook(&meta, false);
                Box::pin(async move { Ok(keep) })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_serves_at_most_the_limit_of_tenants() {
        let table = Table::new(2, 4);
        let t = |s: &str| -> Arc<str> { s.into() };
        let conn = 1_000_000_000u128;
        assert_eq!(table.serve(conn, &t("a"), true), Verdict::Keep);
        assert_eq!(table.serve(conn + 10, &t("b"), false), Verdict::Keep);
        // Tenants it already serves cost nothing more.
        assert_eq!(table.serve(conn, &t("a"), false), Verdict::Keep);
        assert_eq!(table.serve(conn, &t("c"), false), Verdict::Recycle);
        // Another connection, far enough apart in time, has its own record.
        let other = conn + 10 * SAME_CONNECTION.as_nanos();
        assert_eq!(table.serve(other, &t("c"), false), Verdict::Keep);
        // The recycled record is gone: a connection at that instant is new.
        assert_eq!(table.serve(conn, &t("c"), false), Verdict::Keep);
    }

    #[test]
    fn zero_means_no_limit_and_records_stay_bounded() {
        let table = Table::new(0, 1);
        let conn = 5u128;
        for i in 0..100 {
            let tenant: Arc<str> = format!("t{i}").into();
            assert_eq!(table.serve(conn, &tenant, false), Verdict::Keep);
        }
        for i in 0..100u128 {
            let tenant: Arc<str> = "x".into();
            table.serve(i * 10 * SAME_CONNECTION.as_nanos(), &tenant, false);
        }
        let records = table.connections.lock().map(|c| c.len()).unwrap_or(0);
        assert!(records <= table.capacity, "{records}");
    }
}
