//! Tenant affinity: each tenant's operations on a few of a shared pool's
//! connections ([`crate::PostgresOptions::connections_per_tenant`]), and
//! the others' idle ones only while nobody waits for them.
//!
//! A server backend compiles a tenant's procedures, plans its statements and
//! loads its tables' catalog entries the first time it serves that tenant:
//! a few milliseconds, against a fraction of one for the same call warm.
//! sqlx's pool hands out its idle connections in turn, so on a pool shared
//! by many tenants every tenant meets every connection, and with
//! `tenants_per_connection` recycling them, meets the replacements again.
//! Preferring a "home" connection is not enough if a call whose home is busy
//! takes whichever connection frees first: under load, that is any.
//!
//! So the pool is split. The first provider on a pool that asks for
//! affinity divides the pool's connections, less those the shared pool
//! keeps for itself (one, the `LISTEN` connection's or the application's,
//! or its `min_connections`), into shards of about `k` connections each:
//! pools of their own, built from the shared pool's options and connect
//! options (the same hooks, so recycling and the leased-acquire counters
//! still apply). Each schema is assigned a home shard, the one with the
//! fewest schemas then, for as long as it has a provider there; every
//! provider of that schema on the pool runs its operations on its share
//! ([`Shards::acquire`]); the shared pool
//! itself keeps serving the listener and anything else. Closing the shared
//! pool closes the shards. When the last provider of a schema on the pool
//! is dropped, the schema leaves its home ([`Tenancy`]): the tenant count
//! the shares are cut by, and the counts new homes are chosen by, are the
//! live tenants'.
//!
//! While the pool has fewer tenants than shards, a tenant's share is more
//! than its home shard: the shards no other tenant
//! calls home are dealt out among the tenants (a lone tenant's share is
//! the whole pool). When its home shard has no idle connection and no room
//! to open one, a tenant borrows from the rest of its share, a shard
//! nobody is waiting for, with an idle connection or room to open one;
//! when none is free it waits for its home shard, in line (sqlx's pools
//! are fair). It never borrows another tenant's home: there the
//! connection would be cold for it (a first call of each procedure costs
//! milliseconds, a warm one a fraction of one), and in a 200-tenant burst
//! borrowing any idle shard spent more on such first calls than it saved
//! in waiting (docs/benchmarks.md, "The 200-tenant burst"). Leased work
//! is the exception: an ack, abandon or renewal that has waited half a
//! second for its home takes any shard's idle connection nobody waits for
//! ([`Shards::leased_wait`]), so a neighbour's long call on a shared home
//! does not run out its leases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use std::time::Duration;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;

use crate::admission::Share;
use crate::reuse::Kept;

/// How long leased work waits for its home shard before it also looks for
/// another shard's idle connection ([`Shards::leased_wait`]): far beyond a
/// wait behind the home's ordinary calls (milliseconds), far short of a
/// lease (seconds).
const HOME_CLOGGED_AFTER: Duration = Duration::from_millis(500);

/// How often it looks again while it still waits.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The shards of one pool.
#[derive(Debug)]
pub(crate) struct Shards {
    pools: Vec<PgPool>,
    /// Operations waiting for a connection of each shard, their own.
    waiting: Vec<AtomicUsize>,
    /// Schemas with a provider on the pool, each with a home shard.
    tenants: AtomicUsize,
    /// Schemas whose home is each shard (written under `assigned`'s lock).
    homed: Vec<AtomicUsize>,
    assigned: Mutex<Assigned>,
    /// Keeps the shared pool (and so the registry key) alive.
    parent: PgPool,
    /// Connections kept for their tenant's next operation ([`crate::reuse`]).
    kept: Kept,
    /// Dropped with the shards: ends the task that waits for the shared
    /// pool's close to close them, which has nothing left to close.
    _dropped: tokio::sync::oneshot::Sender<()>,
}

/// The home shard of each schema with a provider on the pool, and how many
/// of its providers hold it ([`Tenancy`]).
#[derive(Debug)]
struct Assigned {
    by_schema: HashMap<Arc<str>, (usize, usize)>,
}

/// A provider's hold on its schema's home shard: the schema keeps its home
/// while any provider of it on the pool (any clone of its store) holds
/// one, and leaves it when the last is dropped, so a pool's shards are cut
/// by its live tenants, not by every schema it ever served.
#[derive(Debug)]
pub(crate) struct Tenancy {
    shards: Arc<Shards>,
    home: usize,
    tenant: Arc<str>,
}

impl Tenancy {
    /// The shards.
    pub(crate) fn shards(&self) -> &Arc<Shards> {
        &self.shards
    }

    /// The schema's home shard.
    pub(crate) fn home(&self) -> usize {
        self.home
    }

    /// The schema.
    pub(crate) fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        self.shards.leave(&self.tenant);
    }
}

/// Shards by pool (the address of its connect options, as the gate's key).
fn registry() -> &'static Mutex<HashMap<usize, Weak<Shards>>> {
    static SHARDS: OnceLock<Mutex<HashMap<usize, Weak<Shards>>>> = OnceLock::new();
    SHARDS.get_or_init(Default::default)
}

/// Sizes of the shards `connections` split into, about `per_tenant` each
/// (the remainder spread one by one over the first): empty when affinity
/// would leave a single shard.
fn sizes(connections: u32, per_tenant: u32) -> Vec<u32> {
    if per_tenant == 0 || connections < 2 * per_tenant {
        return Vec::new();
    }
    let count = connections / per_tenant;
    let extra = connections % per_tenant;
    (0..count)
        .map(|i| per_tenant + u32::from(i < extra % count) + extra / count)
        .collect()
}

/// Closes `pool` and every connection it lent out. sqlx's `close` misses a
/// connection whose return to the pool had begun before the close (it is
/// back among the idle ones after the close looked for them), so the close
/// is repeated, a few times at most, until none is left.
async fn close(pool: &PgPool) {
    for _ in 0..CLOSE_ATTEMPTS {
        pool.close().await;
        if pool.size() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How many times [`close`] tries.
const CLOSE_ATTEMPTS: usize = 50;

impl Shards {
    /// The shards of `pool` for `per_tenant` connections per tenant, made by
    /// the first caller that asks for affinity (later callers share them,
    /// whatever `per_tenant` they give); `None` for a caller that asks for
    /// none (0) or when the pool is too small to split.
    /// The shared pool keeps one connection out of the shards (the
    /// listener's, or else the one a pool opens when it is built with
    /// `connect_with`, free for the application's own statements), or its
    /// `min_connections` if more. A connection an operation finished with
    /// is kept up to `reuse` for its tenant's next one ([`crate::reuse`]),
    /// unless the pool tests connections before handing them out.
    pub(crate) fn of(pool: &PgPool, per_tenant: u32, reuse: Duration) -> Option<Arc<Shards>> {
        if per_tenant == 0 {
            return None; // this provider asked for no affinity
        }
        let key = Arc::as_ptr(&pool.connect_options()) as usize;
        let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, shards| shards.strong_count() > 0);
        if let Some(shards) = all.get(&key).and_then(Weak::upgrade) {
            return Some(shards);
        }
        let kept = pool.options().get_min_connections().max(1);
        let connections = pool.options().get_max_connections().saturating_sub(kept);
        let sizes = sizes(connections, per_tenant);
        if sizes.is_empty() {
            return None;
        }
        let connect = (*pool.connect_options()).clone();
        let pools: Vec<PgPool> = sizes
            .iter()
            .map(|&n| {
                pool.options()
                    .clone()
                    .max_connections(n)
                    .min_connections(0)
                    .connect_lazy_with(connect.clone())
            })
            .collect();
        let reuse = if pool.options().get_test_before_acquire() {
            Duration::ZERO
        } else {
            reuse
        };
        let (dropped, gone) = tokio::sync::oneshot::channel::<()>();
        let shards = Arc::new(Shards {
            kept: Kept::new(pools.len(), reuse),
            waiting: pools.iter().map(|_| AtomicUsize::new(0)).collect(),
            tenants: AtomicUsize::new(0),
            homed: pools.iter().map(|_| AtomicUsize::new(0)).collect(),
            assigned: Mutex::new(Assigned {
                by_schema: HashMap::new(),
            }),
            pools,
            parent: pool.clone(),
            _dropped: dropped,
        });
        // The shards close with the shared pool; the task ends with them
        // if they are dropped first (their last provider gone), rather
        // than wait for the close of a pool that may outlive many of them.
        let closed = pool.close_event();
        let watched = Arc::downgrade(&shards);
        tokio::spawn(async move {
            tokio::select! {
                () = closed => {}
                _ = gone => return,
            }
            if let Some(shards) = watched.upgrade() {
                shards.kept.sweep(true);
                for shard in &shards.pools {
                    close(shard).await;
                }
            }
        });
        // What is kept longer than the window goes back to the pool.
        if !reuse.is_zero() {
            let watched = Arc::downgrade(&shards);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(reuse);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(shards) = watched.upgrade() else {
                        break;
                    };
                    let closed = shards.parent.is_closed();
                    shards.kept.sweep(closed);
                    if closed {
                        break;
                    }
                }
            });
        }
        all.insert(key, Arc::downgrade(&shards));
        Some(shards)
    }

    /// A provider of `schema` joins the pool: its hold on the schema's home
    /// shard, which it keeps until dropped ([`Tenancy`]).
    pub(crate) fn join(self: &Arc<Self>, schema: &str) -> Tenancy {
        Tenancy {
            home: self.home(schema),
            shards: self.clone(),
            tenant: schema.into(),
        }
    }

    /// The shard `schema` runs on, counting one more holder of it: the one
    /// it has while any provider of it holds it, or else the one with the
    /// fewest schemas. [`Shards::leave`] undoes it.
    fn home(&self, schema: &str) -> usize {
        let mut guard = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let by_schema = &mut guard.by_schema;
        if let Some((i, holders)) = by_schema.get_mut(schema) {
            *holders += 1;
            return *i;
        }
        let i = self
            .homed
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Ordering::Acquire))
            .map_or(0, |(i, _)| i);
        by_schema.insert(schema.into(), (i, 1));
        if let Some(n) = self.homed.get(i) {
            n.fetch_add(1, Ordering::AcqRel);
        }
        self.tenants.store(by_schema.len(), Ordering::Release);
        i
    }

    /// One holder of `schema`'s home is gone; with the last, the schema
    /// leaves its home.
    fn leave(&self, schema: &str) {
        let mut guard = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let by_schema = &mut guard.by_schema;
        let Some((i, holders)) = by_schema.get_mut(schema) else {
            return;
        };
        *holders = holders.saturating_sub(1);
        if *holders > 0 {
            return;
        }
        let i = *i;
        by_schema.remove(schema);
        if let Some(n) = self.homed.get(i) {
            n.fetch_sub(1, Ordering::AcqRel);
        }
        self.tenants.store(by_schema.len(), Ordering::Release);
    }

    /// Operations waiting for a connection of their own shard now, over
    /// every shard.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.iter().map(|n| n.load(Ordering::Acquire)).sum()
    }

    /// Schemas whose home is shard `index`.
    pub(crate) fn homed(&self, index: usize) -> usize {
        self.homed
            .get(index)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// The share of the tenants whose home is shard `home`, as the fetch
    /// gate counts it: the home, and the connections of every shard of the
    /// share ([`Shards::lender`]), the most fetches of those tenants that
    /// can run at once.
    pub(crate) fn share(&self, home: usize) -> Share {
        let tenants = self.tenants.load(Ordering::Acquire).max(1);
        let n = self.pools.len();
        let connections = (home % tenants..n)
            .step_by(tenants)
            .filter(|&i| i == home || self.homed(i) == 0)
            .filter_map(|i| self.pools.get(i))
            .map(|pool| usize::try_from(pool.options().get_max_connections()).unwrap_or(1))
            .sum();
        Share { home, connections }
    }

    /// Shard `index`'s pool (the shared pool for an index out of range).
    pub(crate) fn pool(&self, index: usize) -> &PgPool {
        self.pools.get(index).unwrap_or(&self.parent)
    }

    /// The pool the shards were split from.
    pub(crate) fn shared(&self) -> &PgPool {
        &self.parent
    }

    /// A connection for `tenant`, whose shard is `home`, and the shard it
    /// came from: the one kept for it on its home ([`crate::reuse`]); else
    /// its own shard's when one is idle for it (more idle connections than
    /// operations in line there) or can be opened; else another shard's of
    /// its share that nobody waits for ([`Shards::lender`]), in line there;
    /// else its own shard's, in line. Fails once the shared pool is closed.
    /// The counts are read without a lock, so two operations arriving at
    /// once may both wait in line where one could have borrowed, or pick
    /// the same lender: the one that does not get the lender's connection
    /// waits in line for it there, and a connection released on a shard
    /// with anyone in line goes back to the pool for them rather than into
    /// a keep. A lost borrow costs a wait, never a connection someone else
    /// waits for.
    pub(crate) async fn acquire(
        &self,
        home: usize,
        tenant: &str,
    ) -> Result<(PoolConnection<sqlx::Postgres>, usize), sqlx::Error> {
        if self.parent.is_closed() {
            return Err(sqlx::Error::PoolClosed);
        }
        let own = self.pool(home);
        // In line first, so operations arriving together see each other:
        // the home's idle connections go to those already in line, and
        // nothing is kept on the home while anyone is in line for it.
        let in_line = InLine::new(self.waiting.get(home));
        if let Some(conn) = self.kept.take(home, tenant) {
            return Ok((conn, home));
        }
        let queued = self
            .waiting
            .get(home)
            .map_or(1, |w| w.load(Ordering::Acquire));
        if idle(own) < queued
            && own.size() >= own.options().get_max_connections()
            && let Some(lender) = self.lender(home)
        {
            drop(in_line);
            // In line on the lender as on a home: a connection released
            // there while this operation waits goes back to the pool
            // for it instead of being kept for the next operation (which
            // would leave this one waiting until the keep's window ends),
            // and one kept there before it got in line is taken now.
            let _in_line = InLine::new(self.waiting.get(lender));
            if let Some(conn) = self.kept.take(lender, tenant) {
                return Ok((conn, lender));
            }
            return Ok((self.pool(lender).acquire().await?, lender));
        }
        if crate::recycle::leased() {
            return self.leased_wait(own, home).await;
        }
        Ok((own.acquire().await?, home))
    }

    /// Leased work's wait for its home shard `own`: in line there, and once
    /// it has waited [`HOME_CLOGGED_AFTER`], on the lookout too for a
    /// connection another shard has idle with nobody waiting for it, which
    /// it takes. A home whose connections a long call holds (a neighbour's
    /// prune or delete over a large tenant, a migration's backfill) would
    /// otherwise keep every tenant sharing it waiting past its leases, and
    /// each lease that ran out is a turn or an activity done again; a cold
    /// connection costs milliseconds. Such a connection is taken as it is
    /// (`try_acquire`: the pool's hooks do not run, so it is neither
    /// tested first nor counted towards recycling; a broken one fails the
    /// call as a lost connection, which leased work rides out).
    async fn leased_wait(
        &self,
        own: &PgPool,
        home: usize,
    ) -> Result<(PoolConnection<sqlx::Postgres>, usize), sqlx::Error> {
        let from_home = own.acquire();
        tokio::pin!(from_home);
        let look = tokio::time::sleep(HOME_CLOGGED_AFTER);
        tokio::pin!(look);
        loop {
            tokio::select! {
                conn = &mut from_home => return Ok((conn?, home)),
                () = &mut look => {
                    if let Some(borrowed) = self.idle_elsewhere(home) {
                        return Ok(borrowed);
                    }
                    look.as_mut().reset(tokio::time::Instant::now() + LOOK_AGAIN);
                }
            }
        }
    }

    /// A connection of a shard other than `home` that is idle now and that
    /// nobody waits for, and its shard.
    fn idle_elsewhere(&self, home: usize) -> Option<(PoolConnection<sqlx::Postgres>, usize)> {
        self.pools.iter().enumerate().find_map(|(i, pool)| {
            let free = i != home
                && self
                    .waiting
                    .get(i)
                    .is_some_and(|w| w.load(Ordering::Acquire) == 0);
            if free {
                pool.try_acquire().map(|conn| (conn, i))
            } else {
                None
            }
        })
    }

    /// Hands back `conn`, from `shard`, that an operation of `tenant`
    /// finished with cleanly: kept for the tenant's next operation while
    /// nobody waits for the shard and the pool is open, else returned to
    /// the pool ([`crate::reuse`]).
    pub(crate) fn release(
        &self,
        shard: usize,
        tenant: &Arc<str>,
        conn: PoolConnection<sqlx::Postgres>,
    ) {
        self.kept.keep(shard, tenant, conn, || {
            self.parent.is_closed()
                || self
                    .waiting
                    .get(shard)
                    .is_none_or(|w| w.load(Ordering::Acquire) > 0)
        });
    }

    /// A shard of `home`'s share, other than `home`, that nobody waits for
    /// and that has an idle connection, or failing that room to open one;
    /// `None` when there is none. With `t` tenants on `s` shards, a
    /// tenant's share is the shards whose index is its home's modulo `t`
    /// that no other tenant calls home: all of them for a lone tenant,
    /// about `s / t` each while tenants are fewer than shards (homes are
    /// handed out in order, so the shares do not overlap; after tenants
    /// have left, the homes of those that stay need not be in order, and
    /// shares may overlap or leave a shard out), only its home once they
    /// are as many. A tenant never borrows a shard another tenant calls
    /// home, whose connections are warm for that tenant and cold for it.
    fn lender(&self, home: usize) -> Option<usize> {
        let tenants = self.tenants.load(Ordering::Acquire).max(1);
        let n = self.pools.len();
        let mut room = None;
        for i in (home % tenants..n).step_by(tenants) {
            if i == home || self.waiting[i].load(Ordering::Acquire) > 0 || self.homed(i) > 0 {
                continue;
            }
            let pool = &self.pools[i];
            if idle(pool) > 0 || self.kept.holds(i) {
                return Some(i);
            }
            if room.is_none() && pool.size() < pool.options().get_max_connections() {
                room = Some(i);
            }
        }
        room
    }
}

/// `pool`'s idle connections, as far as they can be read: sqlx's count
/// dips below zero (wrapping) for a moment while one is taken.
fn idle(pool: &PgPool) -> usize {
    pool.num_idle()
        .min(usize::try_from(pool.size()).unwrap_or(usize::MAX))
}

/// Counts an operation waiting for its own shard while it waits (and when
/// the wait is cancelled, no longer).
struct InLine<'a>(Option<&'a AtomicUsize>);

impl<'a> InLine<'a> {
    fn new(counter: Option<&'a AtomicUsize>) -> Self {
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::AcqRel);
        }
        InLine(counter)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::sync::atomic::Ordering;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::{Shards, sizes};

    /// Which pool: its connect options' address, as the registry keys it.
    fn id(pool: &sqlx::PgPool) -> usize {
        Arc::as_ptr(&pool.connect_options()) as usize
    }

    #[tokio::test]
    async fn schemas_spread_over_one_set_of_shards_per_pool() {
        // Lazy: no server is reached.
        let pool = PgPoolOptions::new()
            .max_connections(9)
            .connect_lazy_with(PgConnectOptions::new());
        assert!(
            Shards::of(&pool, 0, std::time::Duration::ZERO).is_none(),
            "0 asks for none"
        );
        let shards = Shards::of(&pool, 2, std::time::Duration::ZERO).expect("four shards of two");
        let again = Shards::of(&pool, 3, std::time::Duration::ZERO).expect("the same shards");
        assert!(Arc::ptr_eq(&shards, &again));
        // A provider asking for none still gets the shared pool.
        assert!(Shards::of(&pool, 0, std::time::Duration::ZERO).is_none());
        let first: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| id(shards.pool(shards.home(s))))
            .collect();
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 4, "four schemas, four shards");
        assert!(!first.contains(&id(&pool)));
        // A schema keeps its shard; a fifth shares the least loaded one.
        assert_eq!(id(again.pool(again.home("c"))), first[2]);
        assert!(first.contains(&id(shards.pool(shards.home("e")))));
        assert_eq!(
            shards
                .pool(shards.home("a"))
                .options()
                .get_max_connections(),
            2,
            "a shard's size"
        );
        // Too small to split: one shard would be the pool itself.
        let small = PgPoolOptions::new()
            .max_connections(3)
            .connect_lazy_with(PgConnectOptions::new());
        assert!(Shards::of(&small, 2, std::time::Duration::ZERO).is_none());
        // The connection the shared pool keeps is not the shards'.
        let kept = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(PgConnectOptions::new());
        assert!(
            Shards::of(&kept, 2, std::time::Duration::ZERO).is_none(),
            "3 connections"
        );
    }

    #[tokio::test]
    async fn a_tenant_borrows_only_from_its_share_of_the_shards() {
        // Lazy: no server is reached, and every shard has room to open one.
        let pool = PgPoolOptions::new()
            .max_connections(9)
            .connect_lazy_with(PgConnectOptions::new());
        let shards = Shards::of(&pool, 2, std::time::Duration::ZERO).expect("four shards of two");
        let a = shards.home("a");
        assert_eq!(
            shards.lender(a),
            Some(1),
            "a lone tenant's share is every shard"
        );
        let b = shards.home("b");
        assert_eq!((a, b), (0, 1));
        assert_eq!(shards.lender(a), Some(2), "two tenants: shards 0 and 2");
        assert_eq!(shards.lender(b), Some(3), "and 1 and 3");
        let c = shards.home("c");
        assert_eq!(shards.lender(a), Some(3), "three: 0 and 3");
        assert_eq!(shards.lender(b), None, "1 alone");
        assert_eq!(shards.lender(c), None, "2 alone");
        shards.home("d");
        assert_eq!(
            shards.lender(a),
            None,
            "as many tenants as shards: homes only"
        );
    }

    #[tokio::test]
    async fn a_schema_whose_last_provider_is_gone_leaves_its_home() {
        // Lazy: no server is reached, and every shard has room to open one.
        let pool = PgPoolOptions::new()
            .max_connections(9)
            .connect_lazy_with(PgConnectOptions::new());
        let shards = Shards::of(&pool, 2, std::time::Duration::ZERO).expect("four shards of two");
        let a = shards.join("a");
        let a_again = shards.join("a");
        assert_eq!(a.home(), a_again.home(), "one home per schema");
        // Twenty tenants come and go while `a` stays.
        for i in 0..20 {
            let gone = shards.join(&format!("gone{i}"));
            assert_ne!(gone.home(), a.home(), "the emptiest shard");
        }
        assert_eq!(shards.tenants.load(Ordering::Acquire), 1);
        assert_eq!((0..4).map(|i| shards.homed(i)).sum::<usize>(), 1);
        drop(a_again);
        assert_eq!(shards.homed(a.home()), 1, "a provider of `a` remains");
        // A new tenant is homed by the live ones: the two split the shards.
        let b = shards.join("b");
        assert_eq!((a.home(), b.home()), (0, 1));
        assert_eq!(shards.lender(a.home()), Some(2));
        assert_eq!(shards.lender(b.home()), Some(3));
        assert_eq!(shards.share(b.home()).connections, 4);
        drop(a);
        assert_eq!(shards.tenants.load(Ordering::Acquire), 1);
        // After churn the homes of those left need not be in order: with
        // homes 1 and 3 left, each one's share by index holds the other's
        // home, which neither borrows.
        let c = shards.join("c");
        let d = shards.join("d");
        let e = shards.join("e");
        assert_eq!((c.home(), d.home(), e.home()), (0, 2, 3));
        drop(c);
        drop(d);
        assert_eq!((b.home(), e.home()), (1, 3));
        assert_eq!(shards.lender(b.home()), None);
        assert_eq!(shards.lender(e.home()), None);
        assert_eq!(shards.share(e.home()).connections, 2);
    }

    #[test]
    fn shards_cover_the_connections_in_near_equal_parts() {
        assert_eq!(sizes(20, 2), vec![2; 10]);
        assert_eq!(sizes(19, 2), [vec![3], vec![2; 8]].concat());
        assert_eq!(sizes(20, 3), vec![4, 4, 3, 3, 3, 3]);
        assert_eq!(sizes(20, 0), Vec::<u32>::new());
        // One shard would be the pool itself.
        assert_eq!(sizes(3, 2), Vec::<u32>::new());
        for (connections, per_tenant) in [(20, 2), (19, 2), (20, 3), (100, 7), (8, 4)] {
            let s = sizes(connections, per_tenant);
            assert_eq!(s.iter().sum::<u32>(), connections);
            assert!(s.iter().all(|&n| n >= per_tenant && n < 2 * per_tenant));
        }
    }
}
