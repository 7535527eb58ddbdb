//! Admission of fetch statements to a shared pool.
//!
//! Every provider on a pool shares one [`Gate`] (found like the `LISTEN`
//! hub, by the pool's connect options). A fetch statement (orchestration or
//! activity, either SQL mode) takes a slot before it asks the pool for a
//! connection and gives it back when the statement is done; waiting for new
//! work (long polling) holds no slot. Everything else — acks, abandons, lock
//! renewals, history reads, enqueues — goes to the pool directly. So:
//!
//! * **Leased work never queues behind fetches.** The gate has fewer slots
//!   than the pool has connections: a quarter of them (at least one, when
//!   the pool has two or more) stays free of fetches, so an ack waits for at
//!   most the operations of leased work ahead of it, never for hundreds of
//!   fetches, and does not lose its lease to a burst of them.
//! * **Fetches are admitted at the rate the pool serves them**, first come
//!   first served, instead of piling up in the pool's own queue.
//! * **No tenant holds every slot.** One schema may hold at most
//!   three quarters of the slots (at least one), so a tenant whose fetches
//!   are slow or stuck (a locked table, a huge history) leaves the others
//!   slots to fetch with. A waiter whose schema is at its cap lets later
//!   waiters of other schemas pass.
//! * **No fetch waits for a connection with a slot.** With tenant
//!   affinity, the fetches of the tenants on one home shard together hold
//!   at most as many slots as that tenant's share has connections
//!   ([`Share`]): the rest wait here, holding nothing, instead of in the
//!   shard's line, where they would hold slots other tenants could use and
//!   stand ahead of their shard-mates' acks. With the fetches' lock
//!   timeout, an ack waits for at most one fetch per connection of its
//!   home, however stuck its shard-mate's table.
//!
//! `PostgresOptions::fetch_slots` overrides the number of slots; the first
//! provider on a pool sets the gate up.
//!
//! The gate also keeps the pool's counters of leased work, for
//! [`AdmissionStats`]: leases found gone by an ack, abandon or renewal,
//! the slowest wait of leased work for a connection, and connections
//! recycled by the tenant bound (`crate::recycle`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::oneshot;

/// The fetch slots of one pool.
pub(crate) struct Gate {
    /// Slots in all.
    slots: usize,
    /// Slots one schema may hold at once.
    per_schema: usize,
    state: Mutex<State>,
    /// Acks, abandons and renewals that found their lease gone.
    lease_expiries: AtomicU64,
    /// Statements that gave up waiting for a lock.
    lock_timeouts: AtomicU64,
    /// Operations waiting out a lock now ([`WaitingOut`]).
    waiting_out_locks: AtomicUsize,
    /// The longest wait of leased work for a connection, in microseconds.
    slowest_leased_acquire_us: AtomicU64,
    /// Connections closed because they had served their share of tenants.
    recycled: AtomicU64,
    /// Home connections warmed by a provider's build.
    warmed: AtomicU64,
    /// Claims set aside because this build could not decode them.
    unreadable_set_aside: AtomicU64,
    /// When an operation last met a read-only server (SQLSTATE 25006), if
    /// ever: connections opened before then are closed rather than handed
    /// out again ([`Gate::opened_before_read_only`]).
    read_only_at: Mutex<Option<Instant>>,
}

/// How often, at most, meeting a read-only server marks the connections
/// opened so far for replacement: while the server stays read-only, the
/// connections opened since are replaced at that pace, not at every error.
const READ_ONLY_GENERATION: Duration = Duration::from_secs(1);

/// The connections a fetch runs on, with tenant affinity: its tenant's
/// home shard (`home`, the key: every tenant on that shard has the same
/// share) and how many connections its share has (`connections`). The
/// fetches of one home hold at most that many slots at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    /// The home shard's index.
    pub home: usize,
    /// The share's connections: the most fetches of that home that can run.
    pub connections: usize,
}

/// A fetch waiting for a slot: its schema, its share, where to send it.
type Waiter = (Arc<str>, Option<Share>, oneshot::Sender<Slot>);

#[derive(Default)]
struct State {
    free: usize,
    held: HashMap<Arc<str>, usize>,
    /// Slots held by the fetches of each home shard.
    by_home: HashMap<usize, usize>,
    waiting: VecDeque<Waiter>,
}

impl State {
    fn held(&self, schema: &str) -> usize {
        self.held.get(schema).copied().unwrap_or(0)
    }

    /// Whether a fetch of `schema` on `share` may take a free slot: below
    /// its schema's cap and its share's connections.
    fn may_take(&self, schema: &str, share: Option<Share>, per_schema: usize) -> bool {
        self.held(schema) < per_schema
            && share.is_none_or(|s| {
                self.by_home.get(&s.home).copied().unwrap_or(0) < s.connections.max(1)
            })
    }

    /// Counts a slot taken by a fetch of `schema` on `share`.
    fn take(&mut self, schema: &Arc<str>, share: Option<Share>) {
        self.free -= 1;
        *self.held.entry(schema.clone()).or_default() += 1;
        if let Some(s) = share {
            *self.by_home.entry(s.home).or_default() += 1;
        }
    }

    /// Counts a slot given back by a fetch of `schema` on `share`.
    fn give_back(&mut self, schema: &str, share: Option<Share>) {
        if let Some(held) = self.held.get_mut(schema) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(schema);
            }
        }
        if let Some(s) = share
            && let Some(held) = self.by_home.get_mut(&s.home)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.by_home.remove(&s.home);
            }
        }
        self.free += 1;
    }
}

/// A fetch's slot; given back when dropped.
pub(crate) struct Slot {
    gate: Option<Arc<Gate>>,
    schema: Arc<str>,
    share: Option<Share>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release(&self.schema, self.share);
        }
    }
}

/// What a pool's admission looks like now, for tests and monitoring: the
/// fetch gate, and the counters of leased work and connection recycling
/// (since the first provider on the pool was built; shared by every
/// provider on the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Fetch statements the pool admits at once.
    pub slots: usize,
    /// Of those, how many one schema may hold.
    pub per_schema: usize,
    /// Slots held now.
    pub held: usize,
    /// Fetches waiting for a slot.
    pub waiting: usize,
    /// Acks, abandons and lock renewals (orchestration or activity) that
    /// found their lease gone: expired, or expired and taken by another
    /// fetch. Each one is a turn or an activity done again.
    pub lease_expiries: u64,
    /// Statements of this pool's providers that gave up waiting a second
    /// for a lock (SQLSTATE 55P03): another session held a tenant's table
    /// or rows, as an operator's `LOCK TABLE`, `VACUUM FULL` or long
    /// migration does. Client and admin calls wait such a lock out off the
    /// connection and try again (each try that gives up counts); fetches,
    /// acks, abandons and renewals return the error and the runtime tries
    /// again. The `tracing` span of each names the tenant.
    pub lock_timeouts: u64,
    /// Operations of this pool's providers waiting out a lock now: calls
    /// that gave up on a lock and wait to try again, and the calls of the
    /// same provider that wait their turn behind them before a first
    /// attempt (a tenant's calls form one line while a lock holds them).
    /// Zero while no tenant's table or rows are held; a gauge, where
    /// `lock_timeouts` is a count.
    pub waiting_out_locks: usize,
    /// Operations of this pool's providers waiting for a connection of
    /// their tenant's shard now (with tenant affinity; zero on a plain
    /// pool, whose queue sqlx keeps out of sight). A gauge: a pool too
    /// small for its tenants, or a tenant's calls queued behind one of its
    /// own that holds the home connection, shows here first.
    pub waiting_for_connections: usize,
    /// The longest an ack, abandon or lock renewal waited for a pool
    /// connection. Measured only on pools built from
    /// `PostgresOptions::pool_options` (as `PostgresProvider::connect_with`
    /// builds its own); zero elsewhere.
    pub slowest_leased_acquire: Duration,
    /// Connections closed because they had served
    /// `PostgresOptions::tenants_per_connection` distinct schemas (pools
    /// built from `PostgresOptions::pool_options` only).
    pub connections_recycled: u64,
    /// Tenants whose home connection a provider's build warmed
    /// (`PostgresOptions::warm_up`): the whole sequence ran and was rolled
    /// back.
    pub connections_warmed: u64,
    /// Claims of this pool's providers set aside because this build could
    /// not decode what they carried: an activity, or a message of a turn,
    /// that a newer duroxide release wrote (during a rolling upgrade), or a
    /// row written by hand. Each is out of sight for a second, its attempt
    /// not counted, and then claimable by any dispatcher; one that can read
    /// it runs it. A count that keeps growing once every node runs the
    /// newest release means an item nobody can read, which waits for an
    /// operator (docs/operations.md, "Rolling upgrades"). Each is also
    /// logged at WARN with the tenant's schema and what did not decode.
    pub unreadable_set_aside: u64,
}

/// An operation counted in [`AdmissionStats::waiting_out_locks`] until
/// dropped ([`Gate::waiting_out_lock`]).
pub(crate) struct WaitingOut(Arc<Gate>);

impl Drop for WaitingOut {
    fn drop(&mut self) {
        self.0.waiting_out_locks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Gates by pool.
fn gates() -> &'static Mutex<HashMap<usize, Weak<Gate>>> {
    static GATES: OnceLock<Mutex<HashMap<usize, Weak<Gate>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

/// Slots for a pool of `connections`: all but a quarter (at least one when
/// there are two or more).
fn default_slots(connections: usize) -> usize {
    let reserve = if connections >= 2 {
        (connections / 4).max(1)
    } else {
        0
    };
    connections.saturating_sub(reserve).max(1)
}

impl Gate {
    /// The gate of `pool`, created on first use with `slots` (or the
    /// default for the pool's size).
    pub(crate) fn of(pool: &PgPool, slots: Option<usize>) -> Arc<Gate> {
        let key = Arc::as_ptr(&pool.connect_options()) as usize;
        let mut all = gates().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = all.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
        let slots = slots.unwrap_or_else(|| default_slots(connections)).max(1);
        let gate = Arc::new(Gate::new(slots));
        all.insert(key, Arc::downgrade(&gate));
        gate
    }

    fn new(slots: usize) -> Self {
        Gate {
            slots,
            per_schema: (slots - slots / 4).max(1),
            state: Mutex::new(State {
                free: slots,
                ..State::default()
            }),
            lease_expiries: AtomicU64::new(0),
            lock_timeouts: AtomicU64::new(0),
            waiting_out_locks: AtomicUsize::new(0),
            slowest_leased_acquire_us: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            warmed: AtomicU64::new(0),
            unreadable_set_aside: AtomicU64::new(0),
            read_only_at: Mutex::new(None),
        }
    }

    /// An operation met a read-only server (a failover's old primary, now a
    /// standby, keeps the sessions made to it read-only for as long as they
    /// live): the connections opened until now are to be replaced.
    pub(crate) fn note_read_only(&self) {
        let now = Instant::now();
        let mut at = self.read_only_at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_none_or(|t| now.saturating_duration_since(t) >= READ_ONLY_GENERATION) {
            *at = Some(now);
        }
    }

    /// Whether a connection of this `age` was opened before an operation
    /// last met a read-only server: the pool's hook closes it instead of
    /// handing it out (`crate::recycle`).
    pub(crate) fn opened_before_read_only(&self, age: Duration) -> bool {
        let at = *self.read_only_at.lock().unwrap_or_else(|e| e.into_inner());
        at.is_some_and(|at| {
            Instant::now()
                .checked_sub(age)
                .is_none_or(|opened| opened < at)
        })
    }

    /// Counts a claim set aside because this build could not decode what
    /// it carried.
    pub(crate) fn note_unreadable_set_aside(&self) {
        self.unreadable_set_aside.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ack, abandon or renewal that found its lease gone.
    pub(crate) fn note_lease_expired(&self) {
        self.lease_expiries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a statement that gave up waiting for a lock.
    pub(crate) fn note_lock_timeout(&self) {
        self.lock_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an operation among those waiting out a lock until the guard
    /// is dropped.
    pub(crate) fn waiting_out_lock(self: &Arc<Self>) -> WaitingOut {
        self.waiting_out_locks.fetch_add(1, Ordering::SeqCst);
        WaitingOut(self.clone())
    }

    /// Records how long leased work waited for a connection.
    pub(crate) fn note_leased_acquire(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.slowest_leased_acquire_us
            .fetch_max(us, Ordering::Relaxed);
    }

    /// Counts a connection recycled by the tenant bound.
    pub(crate) fn note_recycled(&self) {
        self.recycled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tenant's home connection warmed.
    pub(crate) fn note_warmed(&self) {
        self.warmed.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for a slot for a fetch of `schema`, running on `share` (with
    /// tenant affinity; `None` without).
    pub(crate) async fn enter(self: &Arc<Self>, schema: &Arc<str>, share: Option<Share>) -> Slot {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Whenever a slot is free, every waiter is at its schema's cap
            // or its share's, so taking it jumps no one who could have had
            // it.
            if state.free > 0 && state.may_take(schema, share, self.per_schema) {
                state.take(schema, share);
                return Slot {
                    gate: Some(self.clone()),
                    schema: schema.clone(),
                    share,
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back((schema.clone(), share, tx));
            rx
        };
        match waiting.await {
            Ok(slot) => slot,
            // The gate is gone (it cannot be while we hold an Arc of it).
            Err(_) => Slot {
                gate: None,
                schema: schema.clone(),
                share,
            },
        }
    }

    /// Gives `schema`'s slot, on `share`, back and hands free slots to the
    /// first waiters below their schema's cap and their share's.
    fn release(self: &Arc<Self>, schema: &str, share: Option<Share>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.give_back(schema, share);
        let mut i = 0;
        while state.free > 0 && i < state.waiting.len() {
            let eligible = {
                let (waiter, share, tx) = &state.waiting[i];
                if tx.is_closed() {
                    None // a cancelled fetch
                } else {
                    Some(state.may_take(waiter, *share, self.per_schema))
                }
            };
            match eligible {
                None => {
                    state.waiting.remove(i);
                }
                Some(false) => i += 1,
                Some(true) => {
                    let Some((waiter, share, tx)) = state.waiting.remove(i) else {
                        break;
                    };
                    state.take(&waiter, share);
                    let slot = Slot {
                        gate: Some(self.clone()),
                        schema: waiter.clone(),
                        share,
                    };
                    if let Err(mut slot) = tx.send(slot) {
                        // Cancelled in between: undo without re-entering.
                        slot.gate = None;
                        state.give_back(&waiter, share);
                    }
                }
            }
        }
    }

    /// The gate's numbers now.
    pub(crate) fn stats(&self) -> AdmissionStats {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        AdmissionStats {
            slots: self.slots,
            per_schema: self.per_schema,
            held: self.slots - state.free,
            waiting: state
                .waiting
                .iter()
                .filter(|(_, _, tx)| !tx.is_closed())
                .count(),
            lease_expiries: self.lease_expiries.load(Ordering::Relaxed),
            lock_timeouts: self.lock_timeouts.load(Ordering::Relaxed),
            waiting_out_locks: self.waiting_out_locks.load(Ordering::SeqCst),
            // The pool's, not the gate's: `PostgresProvider::admission_stats`.
            waiting_for_connections: 0,
            slowest_leased_acquire: Duration::from_micros(
                self.slowest_leased_acquire_us.load(Ordering::Relaxed),
            ),
            connections_recycled: self.recycled.load(Ordering::Relaxed),
            connections_warmed: self.warmed.load(Ordering::Relaxed),
            unreadable_set_aside: self.unreadable_set_aside.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_pool_stays_free_of_fetches() {
        assert_eq!(default_slots(1), 1);
        assert_eq!(default_slots(2), 1);
        assert_eq!(default_slots(4), 3);
        assert_eq!(default_slots(10), 8);
        assert_eq!(default_slots(20), 15);
        assert_eq!(Gate::new(1).per_schema, 1);
        assert_eq!(Gate::new(3).per_schema, 3);
        assert_eq!(Gate::new(4).per_schema, 3);
        assert_eq!(Gate::new(15).per_schema, 12);
    }

    #[tokio::test]
    async fn a_schema_at_its_cap_lets_others_pass_and_slots_come_back() {
        let gate = Arc::new(Gate::new(4));
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(gate.enter(&a, None).await);
        }
        // `a` is at its cap of 3: its next fetch waits, `b` takes the last slot.
        let a_waits = tokio::spawn({
            let gate = gate.clone();
            let a = a.clone();
            async move { gate.enter(&a, None).await }
        });
        tokio::task::yield_now().await;
        let b_slot = gate.enter(&b, None).await;
        assert_eq!(gate.stats().held, 4);
        drop(b_slot);
        // Freed by `b`, but `a` is still at its cap.
        assert_eq!(gate.stats().held, 3);
        held.pop();
        let a_slot = a_waits.await.expect("task");
        assert_eq!(gate.stats().held, 3);
        drop(a_slot);
        drop(held);
        assert_eq!(gate.stats().held, 0);
        assert_eq!(gate.stats().waiting, 0);
    }

    #[tokio::test]
    async fn the_fetches_of_one_home_hold_no_more_slots_than_its_share_has_connections() {
        let gate = Arc::new(Gate::new(7));
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let c: Arc<str> = "c".into();
        // `a` and `b` share home shard 0, of one connection; `c` is on 1.
        let home = Some(Share {
            home: 0,
            connections: 1,
        });
        let other = Some(Share {
            home: 1,
            connections: 1,
        });
        let a_slot = gate.enter(&a, home).await;
        let b_waits = tokio::spawn({
            let gate = gate.clone();
            let b = b.clone();
            async move { gate.enter(&b, home).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            gate.stats().waiting,
            1,
            "b waits for a's fetch, holding nothing"
        );
        // Another home passes, and the waiter keeps its place.
        let c_slot = gate.enter(&c, other).await;
        assert_eq!(gate.stats().held, 2);
        drop(c_slot);
        assert_eq!(gate.stats().waiting, 1);
        drop(a_slot);
        let b_slot = b_waits.await.expect("task");
        assert_eq!((gate.stats().held, gate.stats().waiting), (1, 0));
        drop(b_slot);
        assert_eq!(gate.stats().held, 0);
        // Without affinity only the schema's cap applies.
        let held: Vec<_> =
            futures_util::future::join_all((0..5).map(|_| gate.enter(&a, None))).await;
        assert_eq!(gate.stats().held, 5);
        drop(held);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_loses_no_slot() {
        let gate = Arc::new(Gate::new(1));
        let s: Arc<str> = "s".into();
        let first = gate.enter(&s, None).await;
        let waiter = tokio::spawn({
            let gate = gate.clone();
            let s = s.clone();
            async move { gate.enter(&s, None).await }
        });
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert_eq!(gate.stats().held, 0);
        let again = gate.enter(&s, None).await;
        assert_eq!(gate.stats().held, 1);
        drop(again);
    }
}
