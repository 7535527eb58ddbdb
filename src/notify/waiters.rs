//! The fetches waiting on each queue of a schema, and what they note for
//! each other: the quiet note of the last fetch that left a queue empty, the
//! settling wake-up scheduled, and who is registered.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::later;

/// How long an empty fetch's [`Quiet`] note is trusted at most: work that
/// appears without a notification (rows written by hand) is still found
/// within this, and an idle dispatcher's fetch after each poll timeout
/// still queries.
pub(super) const QUIET_MAX: Duration = Duration::from_secs(1);

/// How much earlier than a waiter's due time a fetch in flight may have
/// begun for the waiter to follow it ([`QueueWaiters::lead_or_follow`]).
/// Every waiter counts a due time from after the statement that reported
/// it, so waiters that learnt one due time from different statements wake
/// a statement's duration apart. Following a fetch begun too early to see
/// the item due is harmless: that fetch leaves a note saying so, or none,
/// and the follower decides again after it.
pub(super) const FOLLOW_SLACK: Duration = Duration::from_millis(25);

/// Notification-woken fetches of a queue that may come back empty in a row
/// (no fetch of this process claiming in between) before the queue counts as
/// flooded: from then on, its notifications wake at most one waiter per
/// [`FLOOD_WINDOW`] ([`QueueWaiters::admit`]).
///
/// A channel is open to any role (`NOTIFY` needs no privilege), so a role
/// without rights on the schema can notify it at any rate; without this,
/// each forged notification cost a fetch. Wake-ups that lose a race to
/// another process's dispatcher look the same, which is why a few are
/// allowed before the window applies.
pub(super) const FLOOD_STREAK: u32 = 3;

/// While a queue is flooded, the shortest time between two wake-ups its
/// notifications cause: work committed meanwhile is fetched at most this
/// long after its notification (plus the fetch). A fetch that claims work
/// ends the flood state at once.
pub(crate) const FLOOD_WINDOW: Duration = Duration::from_millis(100);

/// A queue's flood control ([`QueueWaiters::admit`]).
#[derive(Debug, Default)]
struct Flood {
    /// Notification-woken fetches that came back empty since the last claim.
    streak: u32,
    /// When a notification last woke a waiter.
    last: Option<Instant>,
    /// A held wake-up is scheduled.
    pending: bool,
}

/// What to do with a notification ([`QueueWaiters::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Wake a waiter now.
    Now,
    /// A held wake-up is scheduled already: it covers this one.
    Coalesced,
    /// Hold the wake-up until then (schedule it, then
    /// [`QueueWaiters::release_held`]).
    At(Instant),
}

/// What the last fetch that left a queue empty saw, for fetches with the same
/// parameters (`key`: capability filter, tags, session owner, settle time).
/// Noted only by a fetch that scanned the whole queue and reported a next
/// due time (a lease, a delayed item or a settling completion; after a
/// claim, at least the claim's own lease).
#[derive(Debug, Clone, Copy)]
pub(super) struct Quiet {
    key: u64,
    /// The queue's notification count read before that fetch began.
    epoch: u64,
    /// Until when nothing can become claimable without a notification: the
    /// fetch's next due time counted from before its statement (the
    /// earliest it can be), capped at [`QUIET_MAX`] after the note.
    until: Instant,
    /// When a waiter trusting the note wakes: that due time counted from
    /// after the statement (the latest it can be), so the wake-up is never
    /// early, or the cap.
    wake: Instant,
}

/// The two queues a fetch can wait on; the `NOTIFY` payload names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// `orchestrator_queue` (payload `orchestrator`).
    Orchestrator,
    /// `worker_queue` (payload `worker`).
    Worker,
}

impl Queue {
    /// The queue's name in metric labels and logs, as in its payload.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator",
            Self::Worker => "worker",
        }
    }
}

/// The fetches waiting on one queue of one schema.
///
/// A fetch registers before it queries, so a wake-up while nobody is
/// registered can be dropped: every dispatcher is busy, and whichever fetches
/// next starts its query after the commit that was notified and sees its
/// work. Dropping it (instead of leaving a `Notify` permit behind) spares the
/// next fetch a wake-up for work that is long taken.
#[derive(Debug, Default)]
pub(super) struct QueueWaiters {
    pub(super) notify: Notify,
    pub(super) registered: AtomicUsize,
    /// The settling wake-up scheduled, if any (see [`SchemaWaiters::settle_ms`]).
    pub(super) settling: Mutex<Option<SettleTimer>>,
    /// Notifications (and settle timers, reconnects) so far: bumped before
    /// the wake-up, so a fetch that read the old count is woken.
    pub(super) epoch: AtomicU64,
    /// The note of the last fetch that left the queue empty.
    quiet: Mutex<Option<Quiet>>,
    /// The fetch statement in flight that began last, if it has not ended.
    in_flight: Mutex<Option<InFlight>>,
    /// Numbers the fetches, so only the one recorded clears [`Self::in_flight`].
    fetches: AtomicU64,
    /// Woken whenever a fetch statement ends (returns, fails or is cancelled),
    /// after the quiet note it left, if any, is written.
    pub(super) fetch_done: Notify,
    /// Every registered fetch, for handing on a wake-up ([`Self::hand_on`]).
    roster: Mutex<Roster>,
    /// Flood control of notifications ([`Self::admit`]).
    flood: Mutex<Flood>,
}

/// The registered fetches of a queue, and the parameters that found
/// nothing since the latest notification.
#[derive(Debug, Default)]
struct Roster {
    next_id: u64,
    entries: Vec<Entry>,
    /// The notification count `empty_keys` belong to.
    empty_epoch: u64,
    /// Parameters whose fetch, begun since notification `empty_epoch`, found
    /// nothing: a waiter with them would find nothing either.
    empty_keys: Vec<u64>,
}

/// One registered fetch.
#[derive(Debug)]
struct Entry {
    id: u64,
    key: u64,
    /// The notification count read before its latest fetch (or skip).
    looked: u64,
    /// The notification count it was last handed a wake-up for.
    handed: u64,
    /// Wakes this fetch alone.
    wake: Arc<Notify>,
}

/// A fetch statement in flight: its parameters, when it began (before its
/// scan's clock reading) and its number.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    key: u64,
    since: Instant,
    id: u64,
}

impl QueueWaiters {
    /// Wakes one registered fetch, if there is one.
    pub(super) fn wake_one(&self) {
        if self.registered.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// For a waiter woken at `due` (at `now`): `None` if a fetch statement
    /// with `key`, begun at `due` or at most [`FOLLOW_SLACK`] before, is in
    /// flight (its scan sees what came due by then, so the waiter can take
    /// its outcome, a quiet note or a wake-up if it saw more, instead of
    /// sending a statement of its own); otherwise the waiter's own fetch,
    /// recorded as in flight from `now`. One lock decides both, so of
    /// waiters woken together exactly one fetches.
    pub(super) fn lead_or_follow(
        &self,
        key: u64,
        due: Instant,
        now: Instant,
    ) -> Option<FetchInFlight<'_>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.is_some_and(|f| f.key == key && later(f.since, FOLLOW_SLACK) >= due) {
            return None;
        }
        Some(self.record(&mut in_flight, key, now))
    }

    /// Records a fetch statement with `key`, begun at `since`, as in flight
    /// until the returned guard is dropped.
    pub(super) fn begin_fetch(&self, key: u64, since: Instant) -> FetchInFlight<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        self.record(&mut in_flight, key, since)
    }

    /// Makes a fetch the one in flight (`in_flight` is the locked record).
    fn record(
        &self,
        in_flight: &mut Option<InFlight>,
        key: u64,
        since: Instant,
    ) -> FetchInFlight<'_> {
        let id = self.fetches.fetch_add(1, Ordering::Relaxed);
        *in_flight = Some(InFlight { key, since, id });
        FetchInFlight { waiters: self, id }
    }

    /// A fetch (`id`, with `key`) woken by a notification, or handed one,
    /// found nothing: the work notified is for a waiter with other
    /// parameters (another session owner, another capability filter). Wakes
    /// the longest-waiting fetch with other parameters that has not looked
    /// since the latest notification and has not been handed it yet, so
    /// each notification reaches each waiter at most once. Returns whether
    /// one was woken.
    pub(super) fn hand_on(&self, id: u64, key: u64) -> bool {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut roster = self.roster.lock().unwrap_or_else(|e| e.into_inner());
        if roster.empty_epoch != epoch {
            roster.empty_epoch = epoch;
            roster.empty_keys.clear();
        }
        if !roster.empty_keys.contains(&key) {
            roster.empty_keys.push(key);
        }
        let Roster {
            entries,
            empty_keys,
            ..
        } = &mut *roster;
        let next = entries
            .iter_mut()
            .filter(|e| {
                e.id != id && e.looked < epoch && e.handed < epoch && !empty_keys.contains(&e.key)
            })
            .min_by_key(|e| (e.looked, e.id));
        match next {
            Some(entry) => {
                entry.handed = epoch;
                entry.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Records that fetch `id` looks at the queue (fetches, or skips on a
    /// quiet note) having read notification count `epoch`.
    pub(super) fn looking(&self, id: u64, epoch: u64) {
        let mut roster = self.roster.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = roster.entries.iter_mut().find(|e| e.id == id) {
            entry.looked = epoch;
        }
    }

    /// New work may be claimable: invalidates the quiet note, wakes one.
    pub(super) fn announce(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.wake_one();
    }

    /// Whether a notification arriving at `now` may wake a waiter now. Yes
    /// unless the queue is flooded ([`FLOOD_STREAK`] empty wake-ups in a
    /// row); then at most one wake-up per [`FLOOD_WINDOW`]: a notification
    /// inside the window is held until its end (one held wake-up at a time,
    /// later ones coalesce into it). A held notification moves the
    /// notification count when its wake-up goes out ([`Self::release_held`]).
    pub(super) fn admit(&self, now: Instant) -> Admit {
        let mut flood = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        if flood.streak >= FLOOD_STREAK {
            if flood.pending {
                return Admit::Coalesced;
            }
            if let Some(at) = flood.last.map(|last| later(last, FLOOD_WINDOW))
                && now < at
            {
                flood.pending = true;
                return Admit::At(at);
            }
        }
        flood.last = Some(now);
        Admit::Now
    }

    /// A held wake-up is due ([`Admit::At`]) at `now`: wakes one waiter.
    pub(super) fn release_held(&self, now: Instant) {
        let mut flood = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        flood.pending = false;
        flood.last = Some(now);
        drop(flood);
        self.announce();
    }

    /// A fetch woken by a notification (or handed one) found nothing.
    pub(super) fn woke_for_nothing(&self) {
        let mut flood = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        flood.streak = flood.streak.saturating_add(1);
    }

    /// A fetch claimed work: notifications wake waiters at once again.
    pub(super) fn claimed(&self) {
        let mut flood = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        flood.streak = 0;
    }

    /// If the last empty fetch's note still holds for a fetch with `key`
    /// (same parameters, no notification since, its time not up), when to
    /// wake and look again.
    pub(super) fn quiet_until(&self, key: u64, epoch: u64, now: Instant) -> Option<Instant> {
        let note = (*self.quiet.lock().ok()?)?;
        (note.key == key && note.epoch == epoch && now < note.until).then_some(note.wake)
    }

    /// Notes that a fetch with `key`, begun at `now` with the notification
    /// count at `epoch`, left nothing claimable until `next_due_ms` after
    /// `now`. Only a fetch that scanned the whole queue reports a due time:
    /// one that gave up on contended candidates, claimed past a skipped one,
    /// saw more, or (empty-handed) found nothing pending at all reports none
    /// and leaves no note. The note holds until that due time counted from
    /// before the fetch began, so it never outlives it, and wakes its
    /// waiters at it counted from now, after the fetch, so they never wake
    /// before it.
    pub(super) fn note_quiet_for(
        &self,
        key: u64,
        epoch: u64,
        now: Instant,
        next_due_ms: Option<i64>,
    ) {
        let Some(ms) = next_due_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
        else {
            return;
        };
        let due = Duration::from_millis(ms);
        let noted = Instant::now();
        let until = later(now, due).min(noted + QUIET_MAX);
        let wake = noted + due.min(QUIET_MAX);
        if let Ok(mut quiet) = self.quiet.lock() {
            *quiet = Some(Quiet {
                key,
                epoch,
                until,
                wake,
            });
        }
    }
}

/// A settling wake-up: due `completion_settle` after the latest settling
/// completion, but no later than five times that after the first, as the
/// fetch's own rule for an instance.
#[derive(Debug, Clone, Copy)]
pub(super) struct SettleTimer {
    pub(super) cap: Instant,
    pub(super) due: Instant,
}

/// A fetch statement in flight ([`QueueWaiters::begin_fetch`],
/// [`QueueWaiters::lead_or_follow`]): dropped
/// when it ends, however it ends, which wakes the waiters that followed it.
pub(super) struct FetchInFlight<'a> {
    waiters: &'a QueueWaiters,
    id: u64,
}

impl Drop for FetchInFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .waiters
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if in_flight.is_some_and(|f| f.id == self.id) {
            *in_flight = None;
        }
        drop(in_flight);
        self.waiters.fetch_done.notify_waiters();
    }
}

/// Registration of one waiting fetch with parameters `key`; dropped when
/// the fetch returns or is cancelled.
pub(super) struct Registration<'a> {
    waiters: &'a QueueWaiters,
    pub(super) id: u64,
    /// Woken when another waiter hands this one a wake-up.
    pub(super) handed: Arc<Notify>,
}

impl<'a> Registration<'a> {
    pub(super) fn new(waiters: &'a QueueWaiters, key: u64) -> Self {
        waiters.registered.fetch_add(1, Ordering::SeqCst);
        let handed = Arc::new(Notify::new());
        let mut roster = waiters.roster.lock().unwrap_or_else(|e| e.into_inner());
        let id = roster.next_id;
        roster.next_id += 1;
        roster.entries.push(Entry {
            id,
            key,
            looked: 0,
            handed: 0,
            wake: handed.clone(),
        });
        drop(roster);
        Self {
            waiters,
            id,
            handed,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut roster = self
            .waiters
            .roster
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        roster.entries.retain(|e| e.id != self.id);
        drop(roster);
        self.waiters.registered.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The waiters of one schema, per queue.
#[derive(Debug, Default)]
pub(super) struct SchemaWaiters {
    pub(super) orchestrator: QueueWaiters,
    pub(super) worker: QueueWaiters,
    /// How long a completion whose instance has more activities in flight
    /// waits before it wakes an orchestrator waiter, in milliseconds (0:
    /// at once).
    pub(super) settle_ms: AtomicU64,
    /// The hub's connection has subscribed to this schema's channel (and
    /// not lost it since): its waiters can trust notifications.
    pub(super) subscribed: AtomicBool,
    /// Live providers of this schema on the pool ([`Membership`](super::Membership)s); changed
    /// only under the hub's schema map lock.
    pub(super) members: AtomicUsize,
}

impl SchemaWaiters {
    pub(super) fn queue(&self, queue: Queue) -> &QueueWaiters {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    pub(super) fn wake_all(&self) {
        for queue in [&self.orchestrator, &self.worker] {
            queue.epoch.fetch_add(1, Ordering::SeqCst);
            queue.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooded_queue_wakes_once_per_window_until_a_claim() {
        let q = QueueWaiters::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Not flooded: every notification wakes at once.
        assert_eq!(q.admit(t0), Admit::Now);
        for _ in 1..FLOOD_STREAK {
            q.woke_for_nothing();
        }
        assert_eq!(q.admit(t0), Admit::Now, "a streak below the limit");
        q.woke_for_nothing();
        // Flooded: one wake-up per window, the rest merged into it.
        assert_eq!(q.admit(t0 + ms(10)), Admit::At(t0 + FLOOD_WINDOW));
        assert_eq!(q.admit(t0 + ms(20)), Admit::Coalesced);
        assert_eq!(q.admit(t0 + ms(90)), Admit::Coalesced);
        let released = t0 + FLOOD_WINDOW;
        q.release_held(released);
        assert_eq!(
            q.admit(released + ms(1)),
            Admit::At(released + FLOOD_WINDOW)
        );
        q.release_held(released + FLOOD_WINDOW);
        // A notification after a quiet window goes out at once.
        let quiet = released + FLOOD_WINDOW * 3;
        assert_eq!(q.admit(quiet), Admit::Now);
        assert_eq!(q.admit(quiet + ms(1)), Admit::At(quiet + FLOOD_WINDOW));
        q.release_held(quiet + FLOOD_WINDOW);
        // A claim ends the flood: every notification wakes at once again.
        q.claimed();
        let after = quiet + FLOOD_WINDOW + ms(1);
        assert_eq!(q.admit(after), Admit::Now);
        assert_eq!(q.admit(after), Admit::Now);
    }
}
