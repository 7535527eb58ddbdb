//! The fetches waiting on each queue of a schema, and what they note for
//! each other: the quiet note of the last fetch that left a queue empty, the
//! settling wake-up scheduled, and who is registered.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::later;

/// How long an empty fetch's [`Quiet`] note is trusted at most: work that
/// appears without a notification (rows written by hand) is still found
/// within this, and an idle dispatcher's fetch after each poll timeout
/// still queries.
pub(super) const QUIET_MAX: Duration = Duration::from_secs(1);

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
    /// fetch's next due time, capped at [`QUIET_MAX`] after it.
    until: Instant,
}

/// The two queues a fetch can wait on; the `NOTIFY` payload names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// `orchestrator_queue` (payload `orchestrator`).
    Orchestrator,
    /// `worker_queue` (payload `worker`).
    Worker,
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
}

impl QueueWaiters {
    /// Wakes one registered fetch, if there is one.
    pub(super) fn wake_one(&self) {
        if self.registered.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// New work may be claimable: invalidates the quiet note, wakes one.
    pub(super) fn announce(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.wake_one();
    }

    /// Until when a fetch with `key` would find nothing, if the last empty
    /// fetch's note still holds (same parameters, no notification since,
    /// its time not up).
    pub(super) fn quiet_until(&self, key: u64, epoch: u64, now: Instant) -> Option<Instant> {
        let note = (*self.quiet.lock().ok()?)?;
        (note.key == key && note.epoch == epoch && now < note.until).then_some(note.until)
    }

    /// Notes that a fetch with `key`, begun at `now` with the notification
    /// count at `epoch`, left nothing claimable until `next_due_ms` after
    /// `now`. Only a fetch that scanned the whole queue reports a due time:
    /// one that gave up on contended candidates, claimed past a skipped one,
    /// saw more, or (empty-handed) found nothing pending at all reports none
    /// and leaves no note. The due time is counted from before the fetch
    /// began, so the note never outlives it.
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
        let until = later(now, Duration::from_millis(ms)).min(Instant::now() + QUIET_MAX);
        if let Ok(mut quiet) = self.quiet.lock() {
            *quiet = Some(Quiet { key, epoch, until });
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

/// Registration of one waiting fetch; dropped when the fetch returns or is
/// cancelled.
pub(super) struct Registration<'a>(&'a QueueWaiters);

impl<'a> Registration<'a> {
    pub(super) fn new(waiters: &'a QueueWaiters) -> Self {
        waiters.registered.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.0.registered.fetch_sub(1, Ordering::SeqCst);
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
