//! A provider's long poll: fetch, and between fetches wait for a
//! notification, a due time or the poll timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::waiters::{Queue, QueueWaiters, Registration, SchemaWaiters};
use super::{Hub, Membership, NotificationStats, Shared, Wake};
use crate::error::Result;

/// Long polling for one provider: its pool's hub and its schema's waiters.
#[derive(Debug, Clone)]
pub(crate) struct LongPoll {
    membership: Arc<Membership>,
    waiters: Arc<SchemaWaiters>,
    fallback: Duration,
}

impl LongPoll {
    /// Joins the hub of `pool` for `schema`, asking for `keepalive` on its
    /// listening connection.
    pub(crate) fn new(
        pool: &PgPool,
        listen_pool: Option<&PgPool>,
        schema: &str,
        fallback: Duration,
        settle: Duration,
        keepalive: Duration,
    ) -> Self {
        let membership = Hub::join(pool, listen_pool, schema, keepalive);
        let waiters = membership.waiters.clone();
        // The same saturation as every duration bound into a statement.
        let settle_ms = u64::try_from(crate::codec::millis(settle)).unwrap_or(0);
        waiters.settle_ms.store(settle_ms, Ordering::Relaxed);
        Self {
            membership: Arc::new(membership),
            waiters,
            fallback,
        }
    }

    /// How long fresh completions with siblings in flight settle.
    pub(crate) fn settle(&self) -> Duration {
        Duration::from_millis(self.waiters.settle_ms.load(Ordering::Relaxed))
    }

    /// This provider's transaction committed and asks to wake `wakes` of
    /// `channel` (its schema): this pool's waiters are woken now, without a
    /// round trip through the server, and other processes by a notification
    /// the hub sends after the commit (its echo is not dispatched again).
    pub(crate) fn committed(&self, channel: &Arc<str>, wakes: &[Wake]) {
        let shared = &self.membership.hub.shared;
        for wake in wakes {
            shared.deliver(self.waiters.clone(), *wake);
            shared.local.fetch_add(1, Ordering::Relaxed);
            shared.received.fetch_add(1, Ordering::Release);
        }
        shared.outbox.post(channel, wakes);
    }

    /// Notifications posted on this provider's pool and not sent yet.
    pub(crate) fn unsent(&self) -> usize {
        self.membership.hub.shared.outbox.unsent()
    }

    /// The hub's counters, and whether it listens for this provider's schema.
    pub(crate) fn stats(&self) -> NotificationStats {
        NotificationStats {
            subscribed: self.waiters.subscribed.load(Ordering::SeqCst),
            ..self.membership.hub.stats()
        }
    }

    /// Where `queue`'s notifications stand before a fetch made outside
    /// [`LongPoll::fetch`] (a worker's ack that claims the next item,
    /// [`crate::claim_ahead`]), for [`LongPoll::fetched_elsewhere`].
    pub(crate) fn mark(&self, queue: Queue) -> FetchMark {
        self.membership.hub.shared.wants_wakes();
        FetchMark {
            epoch: self.waiters.queue(queue).epoch.load(Ordering::SeqCst),
            subscribed: self.waiters.subscribed.load(Ordering::SeqCst),
            at: Instant::now(),
        }
    }

    /// Records what such a fetch with `key` found, as a fetch of the long
    /// poll's own would: work it saw beyond its claim wakes a waiter, and a
    /// claim that was all there was or an empty queue leaves a quiet note
    /// (see [`LongPoll::fetch`]) when `vouches`: the fetch looked at all
    /// the work a fetch with `key` may take.
    pub(crate) fn fetched_elsewhere<T>(
        &self,
        queue: Queue,
        key: u64,
        mark: FetchMark,
        polled: &Polled<T>,
        vouches: bool,
    ) {
        let waiters = self.waiters.queue(queue);
        let next_due_ms = match polled {
            Polled::Found {
                more, next_due_ms, ..
            } => {
                waiters.claimed();
                if *more {
                    waiters.wake_one();
                    return;
                }
                *next_due_ms
            }
            Polled::Empty { next_due_ms } => *next_due_ms,
        };
        if mark.subscribed && vouches {
            waiters.note_quiet_for(key, mark.epoch, mark.at, next_due_ms);
        }
    }

    /// Runs `fetch` until it finds work or `poll_timeout` has passed, waiting
    /// in between for a notification on `queue`, the next due time the fetch
    /// reported, or the fallback interval while the listener is down. `key`
    /// identifies the fetch's parameters: a fetch skips its query while the
    /// last empty fetch with the same key still vouches for the queue (see
    /// the module documentation).
    pub(crate) async fn fetch<T, F, FFut>(
        &self,
        queue: Queue,
        key: u64,
        poll_timeout: Duration,
        mut fetch: F,
    ) -> Result<Option<T>>
    where
        F: FnMut() -> FFut,
        FFut: Future<Output = Result<Polled<T>>>,
    {
        let deadline = super::later(Instant::now(), poll_timeout);
        let waiters = self.waiters.queue(queue);
        let shared = &self.membership.hub.shared;
        shared.wants_wakes();
        let registration = Registration::new(waiters, key);
        let mut woken = false;
        // The due time the last wait ended at, when a due time ended it.
        let mut due: Option<Instant> = None;
        loop {
            // Registered before fetching, so a commit during the fetch is not missed.
            let notified = waiters.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A wake-up another waiter could not use, handed on to this one.
            let handed = registration.handed.notified();
            tokio::pin!(handed);
            handed.as_mut().enable();
            // Read after registering: a notification that bumps it later wakes us.
            let epoch = waiters.epoch.load(Ordering::SeqCst);
            let subscribed = self.waiters.subscribed.load(Ordering::SeqCst);
            let now = Instant::now();
            let quiet = subscribed
                .then(|| waiters.quiet_until(key, epoch, now))
                .flatten();
            // Every waiter that learnt a due time wakes at it. If another's
            // fetch with these parameters began since, this one waits for
            // its outcome (a quiet note, or a wake-up if it saw more) rather
            // than send a statement that would race it for the same work.
            let mut leading = None;
            if let Some(due) = due.take().filter(|_| subscribed && quiet.is_none()) {
                let done = waiters.fetch_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                leading = waiters.lead_or_follow(key, due, now);
                if leading.is_none() {
                    shared.followed.fetch_add(1, Ordering::Relaxed);
                    woken = tokio::select! {
                        _ = &mut notified => true,
                        _ = &mut handed => true,
                        _ = &mut done => false,
                        _ = tokio::time::sleep_until(deadline) => false,
                    };
                    if woken {
                        shared.wakeups.fetch_add(1, Ordering::Relaxed);
                        crate::observe::fetch_woken(queue);
                    }
                    continue;
                }
            }
            waiters.looking(registration.id, epoch);
            let next_due_ms = match quiet {
                Some(_) => {
                    shared.quiet_skips.fetch_add(1, Ordering::Relaxed);
                    if woken {
                        hand_on(shared, waiters, registration.id, key);
                    }
                    None
                }
                None => {
                    // Ends (waking followers) after the note below is written.
                    let _in_flight = leading.unwrap_or_else(|| waiters.begin_fetch(key, now));
                    shared.queries.fetch_add(1, Ordering::Relaxed);
                    match fetch().await? {
                        Polled::Found {
                            item,
                            more,
                            next_due_ms,
                        } => {
                            waiters.claimed();
                            if more {
                                // Someone else's turn: the fetch saw more claimable work.
                                waiters.wake_one();
                            } else if subscribed {
                                // The claim was all there was: the fetch this
                                // dispatcher makes after its turn can wait without
                                // a query unless a notification comes first.
                                waiters.note_quiet_for(key, epoch, now, next_due_ms);
                            }
                            return Ok(Some(item));
                        }
                        Polled::Empty { next_due_ms } => {
                            if woken {
                                shared.empty_wakeups.fetch_add(1, Ordering::Relaxed);
                                waiters.woke_for_nothing();
                                hand_on(shared, waiters, registration.id, key);
                            }
                            if subscribed {
                                waiters.note_quiet_for(key, epoch, now, next_due_ms);
                            }
                            next_due_ms
                        }
                    }
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Counted from the scan's clock reading but applied from now,
            // after the statement returned: the wake-up is never early.
            let due_at = next_due_ms
                .map(|ms| now + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
                .into_iter()
                .chain(quiet)
                .min();
            let mut wake_at = due_at.map_or(deadline, |at| at.min(deadline));
            if !self.waiters.subscribed.load(Ordering::SeqCst) {
                wake_at = wake_at.min(now + self.fallback);
            }
            woken = tokio::select! {
                _ = &mut notified => true,
                _ = &mut handed => true,
                _ = tokio::time::sleep_until(wake_at) => false,
            };
            if woken {
                shared.wakeups.fetch_add(1, Ordering::Relaxed);
                crate::observe::fetch_woken(queue);
            } else if due_at == Some(wake_at) && wake_at < deadline {
                due = Some(wake_at);
            }
        }
    }
}

/// Where a queue's notifications stood before a fetch made outside the
/// long poll ([`LongPoll::mark`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchMark {
    epoch: u64,
    subscribed: bool,
    at: Instant,
}

/// A woken fetch found nothing (or skipped on a quiet note): the work
/// notified may be for another waiter's parameters, so wake one that has
/// not looked since (see [`QueueWaiters::hand_on`]).
fn hand_on(shared: &Shared, waiters: &QueueWaiters, id: u64, key: u64) {
    if waiters.hand_on(id, key) {
        shared.handed_on.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one fetch statement found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    /// A claimed item, and whether the fetch saw more claimable work.
    Found {
        /// The claimed item.
        item: T,
        /// Another dispatcher could claim something right now.
        more: bool,
        /// Set only when the item was the first candidate and nothing else
        /// was claimable: milliseconds until a delayed item or an expiring
        /// lock (the claimed item's own included) may make work claimable
        /// without a notification.
        next_due_ms: Option<i64>,
    },
    /// Nothing claimable.
    Empty {
        /// Milliseconds until a delayed item or an expiring lock may make
        /// work claimable without a notification; `None` when nothing is
        /// pending (or the fetch was not asked).
        next_due_ms: Option<i64>,
    },
}

impl<T> Polled<T> {
    /// The item, if any.
    pub(crate) fn into_item(self) -> Option<T> {
        match self {
            Self::Found { item, .. } => Some(item),
            Self::Empty { .. } => None,
        }
    }

    /// Applies `f` to a found item.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> Result<U>) -> Result<Polled<U>> {
        Ok(match self {
            Self::Found {
                item,
                more,
                next_due_ms,
            } => Polled::Found {
                item: f(item)?,
                more,
                next_due_ms,
            },
            Self::Empty { next_due_ms } => Polled::Empty { next_due_ms },
        })
    }
}
