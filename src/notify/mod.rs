//! Long polling with `LISTEN`/`NOTIFY`.
//!
//! Statements that make work visible return what to wake (a list of
//! [`Wake`]s: the payloads of the schema's channel) instead of calling
//! `pg_notify` inside their durable transaction (see [`outbox`] for why).
//! After the commit the provider wakes its own pool's waiters directly
//! ([`LongPoll::committed`], no round trip) and posts the notification to
//! the pool's [`Outbox`], which sends it to other processes with
//! `pg_notify`, batched, outside any durable transaction. Here, one [`Hub`]
//! per pool holds the single listening connection for every provider
//! (tenant) on that pool, sends the pool's outbox on it, and wakes the
//! fetches waiting on the notified (schema, queue), one at a time. A
//! notification that connection sent itself comes back to it and is
//! recognised by its sender's process id: its waiters were woken at the
//! commit, so it is not dispatched again, and each commit reaches each
//! waiter at most once, as before.
//!
//! A waiting fetch ([`LongPoll::fetch`]) sleeps until a notification, the
//! next due item, or its `poll_timeout`. The fetch statement itself reports
//! the next due item when it claims nothing ([`Polled::Empty`]), computed
//! from the same clock reading as its scan, so nothing that comes due in
//! between is slept past and no second statement is needed. A fetch that
//! claims work also reports whether it saw more ([`Polled::Found`]); only
//! then is one more waiter woken, so a notification for one item costs one
//! fetch, not one per waiter.
//!
//! Waiters of one queue differ in what they may take (a worker slot's
//! session owner, a dispatcher's capability filter). A waiter that was woken
//! and found nothing hands the wake-up on (`QueueWaiters::hand_on`) to a
//! waiter with other parameters that has not looked since the notification,
//! so the one that can use the work is woken at once; each notification
//! reaches each waiter at most once.
//!
//! An activity completion whose instance still has activities in flight is
//! notified as `orchestrator settle`: the hub wakes a waiter the provider's
//! `completion_settle` after the latest such completion (at most five times
//! that after the first) rather than at once, so the siblings' completions
//! join the same turn (the fetch itself passes such an instance over for that
//! long, see `procedures/fetch_orchestration_item.sql`).
//!
//! A fetch that found nothing leaves a note on its queue ([`Quiet`](waiters::Quiet)): the
//! queue's notification count before it began, and until when nothing can
//! become claimable by time alone (its next due item). So does a fetch whose
//! claim was all there was (its first candidate, nothing more ready), its
//! own new lease counted among the due items. Work only becomes claimable by
//! a notified commit or by time, so a later fetch with the same parameters,
//! while no notification has come since and that time has not passed, would
//! find nothing too: it waits without querying. This spares the empty fetch
//! a dispatcher makes when it comes back from a turn while nothing new came
//! in (an ack that leaves work for the queue notifies it). A note is trusted
//! for at most [`QUIET_MAX`](waiters::QUIET_MAX) and only while the listener is subscribed to the
//! schema. Settling completions do not count as notifications (they are not
//! claimable yet); the settle timer's wake-up does.
//!
//! Every waiter learns the same due times and wakes at them together. A
//! waiter woken at a due time while a fetch with its parameters, begun since
//! (within [`FOLLOW_SLACK`](waiters::FOLLOW_SLACK)), is in flight waits for
//! that fetch to end and decides again from the note it left, so a herd
//! sends one statement, not one each (`NotificationStats::followed`).
//!
//! A provider that joins a hub whose connection is up is subscribed on that
//! connection (one `LISTEN`, no reconnect, no wake-up for the other tenants);
//! until then its own fetches poll at the fallback interval, and once
//! subscribed its waiters are woken to look again. When the last provider of
//! a schema on the pool is dropped (with every clone), the connection stops
//! listening to that schema (`UNLISTEN`): a tenant removed from a long-lived
//! pool costs nothing afterwards.
//!
//! If the listening connection drops, every waiter is woken and polls at the
//! fallback interval; the hub reconnects with back-off, subscribes again and
//! wakes every waiter once more, so work committed during the gap is fetched
//! right away instead of at the timeout.
//!
//! The listening connection is idle by design: it turns the server's
//! `idle_session_timeout` off for itself ([`KEEP_SESSION`](listener::KEEP_SESSION)) on every
//! connection, and after [`PostgresOptions::listener_keepalive`] without a
//! message it sends a keepalive (a comment, [`KEEPALIVE`](listener::KEEPALIVE)), waiting for the
//! answer at most as long. A connection that does not answer (a dropped TCP
//! connection stays silent, it does not fail) is given up like a lost one.
//!
//! Each listening connection is a new one, in a pool of its own made from
//! the connection settings of the pool it serves ([`own_pool`](listener::own_pool)), never one
//! of that pool's: sqlx sends `UNLISTEN *` on a listener it drops before
//! the connection goes back to its pool, which on a silent connection
//! waits until TCP gives up, and an idle pooled connection taken for a new
//! listener after a partition may be silent too. Neither may hold a place
//! in the application's pool, nor keep a replacement from listening.
//!
//! [`PostgresOptions::listener_keepalive`]: crate::PostgresOptions::listener_keepalive

mod listener;
mod long_poll;
mod outbox;
mod presence;
mod waiters;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::pooler::Db;

pub(crate) use long_poll::{LongPoll, Polled};
pub(crate) use outbox::{Outbox, Sender, Wake};
pub(crate) use waiters::Queue;
use waiters::{Admit, SchemaWaiters, SettleTimer};

/// A settling wake-up waits at most this many settle times after the first
/// settling completion (the fetch's cap, `fetch_orchestration_item.sql`).
const SETTLE_CAP: u32 = 5;

/// State shared by a hub and its listening task.
#[derive(Debug, Default)]
struct Shared {
    schemas: Mutex<HashMap<String, Arc<SchemaWaiters>>>,
    connected: AtomicBool,
    /// A schema joined (subscribe to its channel too) or its last provider
    /// left (stop listening to it).
    changed: Notify,
    /// Channels the connection listens to now.
    channels: AtomicUsize,
    received: AtomicU64,
    reconnects: AtomicU64,
    wakeups: AtomicU64,
    empty_wakeups: AtomicU64,
    quiet_skips: AtomicU64,
    followed: AtomicU64,
    queries: AtomicU64,
    keepalives: AtomicU64,
    handed_on: AtomicU64,
    coalesced: AtomicU64,
    /// Wake-ups of this pool's own commits, delivered without a round trip.
    local: AtomicU64,
    /// Notifications this connection sent that came back to it (ignored).
    echoes: AtomicU64,
    /// The listening connection's backend process id (0: none yet).
    own_pid: AtomicU32,
    /// A fetch on this pool has waited for notifications: the listening
    /// connection tells other processes that it listens (see [`presence`]).
    wants_wakes: AtomicBool,
    /// Times the hub looked whether other processes listen.
    presence_checks: AtomicU64,
    /// Batches sent while no other process was known to listen.
    batches_alone: AtomicU64,
    /// Other listening connections that announced themselves.
    hellos: AtomicU64,
    /// What this pool's commits still have to tell other processes; sent on
    /// the listening connection.
    outbox: Arc<Outbox>,
    /// The listening connection's keepalive interval in milliseconds
    /// (`u64::MAX`: none asked for).
    keepalive_ms: AtomicU64,
}

impl Shared {
    /// How long the listening connection may stay silent before a
    /// keepalive, and how long the keepalive's reply may take.
    fn keepalive(&self) -> Option<Duration> {
        match self.keepalive_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn schemas(&self) -> Vec<(String, Arc<SchemaWaiters>)> {
        self.schemas
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// A fetch waits for notifications: from now on the listening
    /// connection tells other processes that this one listens.
    fn wants_wakes(&self) {
        // Read first: every fetch calls this, and after the first one the
        // flag is set for good, so a plain load spares the write.
        if !self.wants_wakes.load(Ordering::Relaxed)
            && !self.wants_wakes.swap(true, Ordering::SeqCst)
        {
            self.changed.notify_one();
        }
    }

    fn wake_all(&self) {
        for (_, waiters) in self.schemas() {
            waiters.wake_all();
        }
    }

    /// A notification received on the listening connection from `pid`:
    /// dispatched unless this connection sent it (its waiters were woken at
    /// the commit already, see [`LongPoll::committed`]).
    fn received(self: &Arc<Self>, channel: &str, payload: &str, pid: u32) {
        if pid != 0 && pid == self.own_pid.load(Ordering::SeqCst) {
            self.echoes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Counted once the wake-up is handed on: whoever sees the count
        // move may rely on the queue's notification count having moved too.
        let wake = Wake::from_payload(payload);
        let waiters = self
            .schemas
            .lock()
            .ok()
            .and_then(|m| m.get(channel).cloned());
        if let (Some(wake), Some(waiters)) = (wake, waiters) {
            self.deliver(waiters, wake);
        }
        self.received.fetch_add(1, Ordering::Release);
    }

    /// Wakes a waiter of `waiters` for `wake`, at once or, for a settling
    /// completion, after the settle time.
    fn deliver(self: &Arc<Self>, waiters: Arc<SchemaWaiters>, wake: Wake) {
        let (queue, settle) = match wake {
            Wake::Orchestrator => (Queue::Orchestrator, false),
            Wake::OrchestratorSettle => (Queue::Orchestrator, true),
            Wake::Worker => (Queue::Worker, false),
        };
        let settle_ms = waiters.settle_ms.load(Ordering::Relaxed);
        if !settle || settle_ms == 0 {
            self.release(&waiters, queue);
            return;
        }
        // More completions of the instance are on their way: let them land
        // so one turn takes them all. One timer per queue, pushed back by
        // each settling completion up to its cap; a wake-up without the
        // hint meanwhile goes out at once as usual.
        let settle = Duration::from_millis(settle_ms);
        let now = Instant::now();
        let Ok(mut timer) = waiters.orchestrator.settling.lock() else {
            return;
        };
        let due = later(now, settle);
        if let Some(timer) = timer.as_mut() {
            timer.due = due.min(timer.cap);
            return;
        }
        *timer = Some(SettleTimer {
            cap: later(now, settle.saturating_mul(SETTLE_CAP)),
            due,
        });
        drop(timer);
        let shared = self.clone();
        tokio::spawn(async move {
            let queue = &waiters.orchestrator;
            loop {
                let due = match queue.settling.lock() {
                    Ok(mut timer) => match *timer {
                        Some(t) if t.due > Instant::now() => t.due,
                        _ => {
                            *timer = None;
                            break;
                        }
                    },
                    Err(_) => break,
                };
                tokio::time::sleep_until(due).await;
            }
            shared.release(&waiters, Queue::Orchestrator);
        });
    }

    /// Wakes a waiter of `queue` for a notification, or holds the wake-up
    /// while the queue is flooded ([`QueueWaiters::admit`]). A held
    /// notification moves the queue's notification count only when its
    /// wake-up goes out: moved at once, it would reopen every hand-on chain
    /// (a waiter may be handed each notification once) and keep the
    /// flooded queue's waiters fetching for each other. A quiet note taken
    /// meanwhile therefore lasts until the held wake-up, which is the
    /// documented bound for work committed during a flood.
    fn release(self: &Arc<Self>, waiters: &Arc<SchemaWaiters>, queue: Queue) {
        let q = waiters.queue(queue);
        match q.admit(Instant::now()) {
            Admit::Now => q.announce(),
            Admit::Coalesced => {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Admit::At(at) => {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                let waiters = waiters.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    waiters.queue(queue).release_held(Instant::now());
                });
            }
        }
    }
}

/// `now + d`, or a time a century away when that does not fit in an
/// [`Instant`] (a settle time or a fetch's `poll_timeout` can be as long as
/// a caller likes: `Duration::MAX` is "wait for good").
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Counters of a hub (shared by every provider on its pool), and whether it
/// listens for one provider's schema; for tests, operators and the load tool.
///
/// A commit's wake-ups reach this pool's waiters directly (`local`) and
/// other processes through a notification sent after the commit (`sent`);
/// other processes' notifications arrive on the listening connection
/// (`received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NotificationStats {
    /// Notifications that reached this pool's waiters: received on the
    /// listening connection from other sessions (other processes, other
    /// pools), or posted by this pool's own commits and delivered directly
    /// (`local`). Its own, coming back to the listening connection, are
    /// counted in `echoes` instead.
    pub received: u64,
    /// Of `received`, the wake-ups this pool's own commits delivered to its
    /// waiters directly, without a round trip through the server.
    pub local: u64,
    /// Notifications sent to other processes (after folding: identical ones
    /// pending together are sent once).
    pub sent: u64,
    /// Notifications folded into an identical one waiting to be sent.
    pub folded: u64,
    /// Notifications given up: posted while the outbox was full, or whose
    /// sending failed too often in a row. Waiters in other processes find
    /// such work at their next due time or poll timeout.
    pub dropped: u64,
    /// Notifications the listening connection sent that came back to it,
    /// not dispatched again.
    pub echoes: u64,
    /// Times the listening connection was (re)established.
    pub connections: u64,
    /// Whether the listening connection is up now.
    pub connected: bool,
    /// Whether it is subscribed to this provider's schema: until it is
    /// (just after the provider joined, or while the connection is down),
    /// the provider's fetches poll at the fallback interval.
    pub subscribed: bool,
    /// Schemas (channels) the connection listens to now: one per schema
    /// with a live provider on the pool, once subscribed.
    pub channels: usize,
    /// Waiting fetches woken by a notification (or a reconnect).
    pub wakeups: u64,
    /// Of those, the ones that then found no work: the cost of a wake-up
    /// that lost the race or came for work another waiter took.
    pub empty_wakeups: u64,
    /// Fetches that went straight to waiting because an earlier fetch with
    /// the same parameters had left the queue empty (found nothing, or
    /// claimed all there was) and no notification had come since (no
    /// statement sent).
    pub quiet_skips: u64,
    /// Waiting fetches woken at a due time that took the outcome of another
    /// fetch with the same parameters, begun since, instead of querying
    /// (every waiter learns the same due times and wakes at them together).
    pub followed: u64,
    /// Times the hub looked whether another process listens (at most once
    /// a second, and only while it has notifications to send).
    pub presence_checks: u64,
    /// Batches of notifications sent while no other process was known to
    /// listen: at most one per 100 ms, identical notifications folded
    /// meanwhile (this pool's own waiters were woken at the commit).
    pub batches_alone: u64,
    /// Other processes' listening connections that announced themselves on
    /// a channel this one listens to (from then on, notifications go to
    /// them at once).
    pub hellos: u64,
    /// Fetch statements sent by long-polling fetches (each one's first
    /// included): what quiet notes and following spare shows as fewer.
    pub queries: u64,
    /// Keepalives the listening connection sent (one per keepalive
    /// interval without a message) and got an answer to.
    pub keepalives: u64,
    /// Wake-ups handed on: a waiter woken by a notification found nothing
    /// it may take (the work is for another session owner or capability
    /// filter) and woke a waiter with other parameters that had not looked
    /// since the notification (each notification reaches each waiter at
    /// most once).
    pub handed_on: u64,
    /// Notifications whose wake-up was held or merged into a held one
    /// because their queue was flooded: several wake-ups in a row had
    /// found nothing (forged `NOTIFY`s from any role, or another process
    /// taking the work first). While flooded, a queue's notifications wake
    /// at most one waiter per 100 ms; a fetch that claims work ends it.
    pub coalesced: u64,
}

/// The listening connection of one pool and the waiters of every schema on it.
#[derive(Debug)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
    /// The pool whose settings the listening connections are made with,
    /// and whose close stops them (see [`Hub::join`]).
    listen_on: PgPool,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
        // Notifications still unsent: one last try on a pooled connection.
        outbox::flush_on_drop(&self.shared.outbox, Db::new(self.listen_on.clone(), None));
    }
}

/// Hubs by pool, so every provider on a pool shares one listener.
fn hubs() -> &'static Mutex<HashMap<usize, Weak<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<usize, Weak<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
}

impl Hub {
    /// The hub of `pool` (created, with its listening task, on first use),
    /// subscribed to `schema`'s channel, and a membership that leaves it
    /// when dropped. A new hub listens on connections of its own made with
    /// the settings of `listen_pool` (a direct URL beside a transaction
    /// pooler), or of `pool` without one ([`own_pool`](listener::own_pool)).
    pub(crate) fn join(
        pool: &PgPool,
        listen_pool: Option<&PgPool>,
        schema: &str,
        keepalive: Duration,
    ) -> Membership {
        // Clones of a pool share their connect options: the Arc identifies the pool.
        let key = Arc::as_ptr(&pool.connect_options()) as usize;
        let hub = {
            let mut all = hubs().lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|_, hub| hub.strong_count() > 0);
            match all.get(&key).and_then(Weak::upgrade) {
                Some(hub) if !hub.task.is_finished() => hub,
                _ => {
                    // Subscribed from the first connection, with no
                    // separate `LISTEN` after it.
                    let shared = Arc::new(Shared {
                        keepalive_ms: AtomicU64::new(u64::MAX),
                        ..Shared::default()
                    });
                    if let Ok(mut schemas) = shared.schemas.lock() {
                        schemas.insert(schema.to_string(), Arc::default());
                    }
                    let listen_on = listen_pool.unwrap_or(pool).clone();
                    let task = tokio::spawn(listener::listen(shared.clone(), listen_on.clone()))
                        .abort_handle();
                    let hub = Arc::new(Hub {
                        shared,
                        task,
                        listen_on,
                    });
                    all.insert(key, Arc::downgrade(&hub));
                    hub
                }
            }
        };
        // The shortest keepalive any provider on the pool asked for.
        let keepalive_ms = u64::try_from(keepalive.as_millis()).unwrap_or(u64::MAX);
        if keepalive_ms > 0 {
            hub.shared
                .keepalive_ms
                .fetch_min(keepalive_ms, Ordering::Relaxed);
        }
        let (waiters, added) = {
            let mut schemas = hub.shared.schemas.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = !schemas.contains_key(schema);
            let waiters = schemas.entry(schema.to_string()).or_default().clone();
            waiters.members.fetch_add(1, Ordering::SeqCst);
            (waiters, fresh)
        };
        if added {
            hub.shared.changed.notify_one();
        }
        Membership {
            hub,
            schema: schema.to_string(),
            waiters,
        }
    }

    /// The hub's counters (`subscribed` is per provider: see [`LongPoll::stats`]).
    pub(crate) fn stats(&self) -> NotificationStats {
        NotificationStats {
            received: self.shared.received.load(Ordering::Acquire),
            connections: self.shared.reconnects.load(Ordering::Relaxed),
            connected: self.shared.connected.load(Ordering::Relaxed),
            subscribed: false,
            channels: self.shared.channels.load(Ordering::Relaxed),
            wakeups: self.shared.wakeups.load(Ordering::Relaxed),
            empty_wakeups: self.shared.empty_wakeups.load(Ordering::Relaxed),
            quiet_skips: self.shared.quiet_skips.load(Ordering::Relaxed),
            followed: self.shared.followed.load(Ordering::Relaxed),
            presence_checks: self.shared.presence_checks.load(Ordering::Relaxed),
            batches_alone: self.shared.batches_alone.load(Ordering::Relaxed),
            hellos: self.shared.hellos.load(Ordering::Relaxed),
            queries: self.shared.queries.load(Ordering::Relaxed),
            keepalives: self.shared.keepalives.load(Ordering::Relaxed),
            handed_on: self.shared.handed_on.load(Ordering::Relaxed),
            coalesced: self.shared.coalesced.load(Ordering::Relaxed),
            local: self.shared.local.load(Ordering::Relaxed),
            sent: self.shared.outbox.counters.sent.load(Ordering::Relaxed),
            folded: self.shared.outbox.counters.folded.load(Ordering::Relaxed),
            dropped: self.shared.outbox.counters.dropped.load(Ordering::Relaxed),
            echoes: self.shared.echoes.load(Ordering::Relaxed),
        }
    }
}

/// One provider's place in its pool's hub (shared by the provider's clones):
/// dropping the last membership of a schema removes the schema from the hub,
/// and the listening task stops listening to it.
#[derive(Debug)]
pub(crate) struct Membership {
    hub: Arc<Hub>,
    schema: String,
    waiters: Arc<SchemaWaiters>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let left = {
            let mut schemas = self
                .hub
                .shared
                .schemas
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let last = self.waiters.members.fetch_sub(1, Ordering::SeqCst) == 1;
            // A schema that left and joined again has a new entry: leave it.
            let ours = schemas
                .get(&self.schema)
                .is_some_and(|w| Arc::ptr_eq(w, &self.waiters));
            if last && ours {
                schemas.remove(&self.schema);
            }
            last && ours
        };
        if left {
            self.hub.shared.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_too_far_for_the_clock_lands_a_century_ahead() {
        let now = Instant::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        assert!(later(now, Duration::MAX) > now + 99 * year);
        let settle = Duration::from_millis(10);
        assert_eq!(later(now, settle), now + settle);
    }
}
