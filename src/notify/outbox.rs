//! Notifications to other processes, sent after the commit that calls for
//! them, never inside it.
//!
//! A durable transaction that calls `pg_notify` holds PostgreSQL's
//! notification-queue lock from its pre-commit through its WAL flush, so
//! notifying commits are flushed one at a time instead of sharing a flush.
//! The provider's transactions therefore only *say* what to wake (a list of
//! [`Wake`]s, the payloads of the schema's channel); after the commit the
//! provider wakes its own pool's waiters directly (see [`super::LongPoll`])
//! and posts the notification here. One [`Outbox`] per pool holds what is
//! still to be sent, folded (an identical pending notification is sent
//! once) and bounded ([`MAX_PENDING`]); a task sends it in batches, one
//! statement for many notifications ([`SEND`]), in a transaction of its own
//! that writes no rows and commits without waiting for a WAL flush
//! (`synchronous_commit` off for that transaction).
//!
//! With long polling on, the hub's listening connection sends the outbox
//! (`super::listen`): its own notifications come back to it, recognised by
//! their sender's process id and not dispatched again (this pool's waiters
//! were woken at the commit). With long polling off there is no hub; a
//! [`Sender`] sends the pool's outbox on pooled connections.
//!
//! A notification posted but not sent when the process dies is lost: waiters
//! in other processes then find the work at their next due time or poll
//! timeout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::PostgresProviderError;
use crate::pooler::{Db, InFlight, answered};

/// The statement that sends a batch (`notify/send.sql`): one notification
/// per (channel, payload) pair, in one transaction, which commits with
/// `synchronous_commit` off (a notification is not durable anyway, and
/// waiting for a flush while holding the notification-queue lock is what
/// made notifying commits queue). It names itself first, so
/// `pg_stat_activity` shows the listening connection (whose last query it
/// often is) as the listener.
pub(super) const SEND: &str = include_str!("../../notify/send.sql");

/// Distinct notifications the outbox holds at most: folding bounds it by
/// three per schema on the pool; past this (only while sending fails for
/// long with that many tenants) new ones are dropped and counted.
pub(super) const MAX_PENDING: usize = 16_384;

/// Most notifications sent in one statement.
const BATCH: usize = 1_000;

/// Sends that failed in a row before the batch is dropped: a statement the
/// server keeps refusing must not be retried forever.
const MAX_FAILURES: u32 = 5;

/// First and longest pause after a failed send ([`Sender`]).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// What a committed transaction wakes: one payload of the schema's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Wake {
    /// Orchestrator waiters, at once.
    Orchestrator,
    /// Orchestrator waiters, after the settle time (more completions of
    /// the instance are on their way).
    OrchestratorSettle,
    /// Worker waiters.
    Worker,
}

impl Wake {
    /// The `NOTIFY` payload.
    pub(crate) fn payload(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator",
            Self::OrchestratorSettle => "orchestrator settle",
            Self::Worker => "worker",
        }
    }

    /// The wake a payload names; `None` for anything else (a payload sent by
    /// someone else).
    pub(crate) fn from_payload(payload: &str) -> Option<Self> {
        match payload {
            "orchestrator" => Some(Self::Orchestrator),
            "orchestrator settle" => Some(Self::OrchestratorSettle),
            "worker" => Some(Self::Worker),
            _ => None,
        }
    }
}

/// Counters of an outbox.
#[derive(Debug, Default)]
pub(super) struct OutboxCounters {
    pub(super) sent: AtomicU64,
    pub(super) folded: AtomicU64,
    pub(super) dropped: AtomicU64,
}

/// What is still to be sent: distinct (channel, wake) pairs, in posting order.
#[derive(Debug, Default)]
struct Pending {
    order: Vec<(Arc<str>, Wake)>,
    set: HashSet<(Arc<str>, Wake)>,
    /// Taken for a send that has not returned yet.
    in_flight: usize,
    /// Sends that failed in a row.
    failures: u32,
}

/// One pool's notifications still to be sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Mutex<Pending>,
    /// Something was posted.
    ready: Notify,
    pub(super) counters: OutboxCounters,
}

impl Outbox {
    /// Queues `wakes` for `channel` without waiting: an identical pending
    /// notification absorbs one, a full outbox drops it.
    pub(crate) fn post(&self, channel: &Arc<str>, wakes: &[Wake]) {
        if wakes.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for wake in wakes {
            let key = (channel.clone(), *wake);
            if pending.set.contains(&key) {
                self.counters.folded.fetch_add(1, Ordering::Relaxed);
            } else if pending.set.len() >= MAX_PENDING {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                pending.set.insert(key.clone());
                pending.order.push(key);
            }
        }
        drop(pending);
        self.ready.notify_one();
    }

    /// Notifications posted and not yet sent (queued or in a send).
    pub(crate) fn unsent(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.order.len() + pending.in_flight
    }

    /// Waits until something is queued.
    pub(super) async fn wait(&self) {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if !self.is_empty() {
                return;
            }
            ready.await;
        }
    }

    fn is_empty(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.order.is_empty()
    }

    /// Takes up to [`BATCH`] (and at most `max`) queued notifications for
    /// one send, as the two arrays [`SEND`] binds.
    fn take(&self, max: usize) -> Batch {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.order.len().min(BATCH).min(max);
        let taken: Vec<(Arc<str>, Wake)> = pending.order.drain(..n).collect();
        for key in &taken {
            pending.set.remove(key);
        }
        pending.in_flight += taken.len();
        Batch { taken }
    }

    /// A send ended: counts it, or queues its notifications again (those
    /// posted meanwhile fold into them) unless sending has failed
    /// [`MAX_FAILURES`] times in a row or `retry` is false.
    fn finish(&self, batch: Batch, outcome: Result<(), bool>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.in_flight = pending.in_flight.saturating_sub(batch.taken.len());
        match outcome {
            Ok(()) => {
                pending.failures = 0;
                self.counters
                    .sent
                    .fetch_add(batch.taken.len() as u64, Ordering::Relaxed);
            }
            Err(retry) => {
                pending.failures += 1;
                if !retry || pending.failures >= MAX_FAILURES {
                    pending.failures = 0;
                    self.counters
                        .dropped
                        .fetch_add(batch.taken.len() as u64, Ordering::Relaxed);
                    return;
                }
                let mut again: Vec<_> = batch
                    .taken
                    .into_iter()
                    .filter(|key| !pending.set.contains(key))
                    .collect();
                for key in &again {
                    pending.set.insert(key.clone());
                }
                again.append(&mut pending.order);
                pending.order = again;
            }
        }
    }

    /// Sends what is queued, a batch at a time, on `conn` (with `once`,
    /// only what was queued when it began: what is posted while it sends
    /// waits for the next call). A failure puts the batch back unless it is
    /// permanent (see [`Outbox::finish`]) and is returned: the caller
    /// decides whether its connection is still good.
    ///
    /// `prepared`: [`SEND`] is prepared once on `conn` and reused (the
    /// listening connection, which is always a direct one, and pooled
    /// connections without a transaction pooler); otherwise it is sent
    /// unnamed, parsed and planned again at every batch, since behind a
    /// transaction pooler a named statement would outlive the server
    /// connection it was prepared on.
    ///
    /// `limit`: how long the server may leave one batch unanswered; past
    /// it the batch is put back and the error is a lost connection
    /// ([`crate::pooler::answered`]), which the caller must not reuse.
    pub(super) async fn flush<C>(
        &self,
        conn: &mut C,
        prepared: bool,
        once: bool,
        limit: Option<Duration>,
    ) -> Result<(), PostgresProviderError>
    where
        for<'c> &'c mut C: sqlx::Executor<'c, Database = sqlx::Postgres>,
    {
        let mut budget = if once {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.order.len()
        } else {
            usize::MAX
        };
        loop {
            let batch = self.take(budget);
            if batch.taken.is_empty() {
                return Ok(());
            }
            budget = budget.saturating_sub(batch.taken.len());
            let (channels, payloads) = batch.arrays();
            let sent = answered(
                limit,
                sqlx::query(SEND)
                    .persistent(prepared)
                    .bind(channels)
                    .bind(payloads)
                    .execute(&mut *conn),
            )
            .await;
            match sent {
                Ok(_) => self.finish(batch, Ok(())),
                Err(e) => {
                    let e = PostgresProviderError::from(e);
                    self.finish(batch, Err(e.is_retryable()));
                    return Err(e);
                }
            }
        }
    }
}

/// Notifications taken for one send.
#[derive(Debug)]
struct Batch {
    taken: Vec<(Arc<str>, Wake)>,
}

impl Batch {
    fn arrays(&self) -> (Vec<String>, Vec<&'static str>) {
        self.taken
            .iter()
            .map(|(channel, wake)| (channel.to_string(), wake.payload()))
            .unzip()
    }
}

/// Sends one pool's outbox on pooled connections, for providers without
/// long polling (no hub, so no listening connection to send on).
#[derive(Debug)]
pub(crate) struct Sender {
    outbox: Arc<Outbox>,
    task: tokio::task::AbortHandle,
    db: Db,
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
        flush_on_drop(&self.outbox, self.db.clone());
    }
}

/// How long the last try to send a dropped pool's notifications may take.
const FLUSH_ON_DROP: Duration = Duration::from_secs(2);

/// The last provider of a pool is gone with notifications unsent: one
/// last try to send them, on a task of its own (if a runtime is still
/// there), bounded by [`FLUSH_ON_DROP`]. Best effort: a pool closed at once
/// refuses it, and waiters in other processes then find the work at their
/// next due time or poll timeout.
pub(super) fn flush_on_drop(outbox: &Arc<Outbox>, db: Db) {
    if outbox.unsent() == 0 || db.is_closed() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let outbox = outbox.clone();
    runtime.spawn(async move {
        let _ = tokio::time::timeout(FLUSH_ON_DROP, send_on(&db, &outbox)).await;
    });
}

/// Senders by pool, so every provider without long polling on a pool shares one.
fn senders() -> &'static Mutex<HashMap<usize, Weak<Sender>>> {
    static SENDERS: OnceLock<Mutex<HashMap<usize, Weak<Sender>>>> = OnceLock::new();
    SENDERS.get_or_init(Default::default)
}

impl Sender {
    /// The sender of `db`'s pool (created, with its task, on first use).
    pub(crate) fn of(db: &Db) -> Arc<Self> {
        // Clones of a pool share their connect options: the Arc identifies the pool.
        let key = Arc::as_ptr(&db.connect_options()) as usize;
        let mut all = senders().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, sender| sender.strong_count() > 0);
        if let Some(sender) = all.get(&key).and_then(Weak::upgrade)
            && !sender.task.is_finished()
        {
            return sender;
        }
        let outbox = Arc::new(Outbox::default());
        let task = tokio::spawn(send_on_pool(outbox.clone(), db.clone())).abort_handle();
        let sender = Arc::new(Self {
            outbox,
            task,
            db: db.clone(),
        });
        all.insert(key, Arc::downgrade(&sender));
        sender
    }

    /// The pool's outbox.
    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

/// The [`Sender`]'s task: waits for notifications and sends them, each batch
/// in a transaction of its own on a pooled connection (through a
/// transaction pooler too), backing off while sending fails.
async fn send_on_pool(outbox: Arc<Outbox>, db: Db) {
    let mut backoff = BACKOFF.0;
    loop {
        outbox.wait().await;
        if db.is_closed() {
            return;
        }
        match send_on(&db, &outbox).await {
            Ok(()) => backoff = BACKOFF.0,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "duroxide-postgres: sending notifications failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Sends `outbox` on one pooled connection: behind a transaction pooler
/// inside one explicit transaction, so the server connection stays the same
/// throughout (see [`crate::pooler`]); a connection dropped inside that
/// transaction (the task aborted) is closed, not returned to the pool.
async fn send_on(db: &Db, outbox: &Outbox) -> Result<(), PostgresProviderError> {
    use sqlx::Executor as _;
    let limit = db.call_timeout();
    let mut flight = InFlight(Some(db.acquire().await?));
    let conn = flight.conn()?;
    let Some(begin) = db.pooled_begin() else {
        let sent = outbox.flush(&mut **conn, true, false, limit).await;
        flight.settle(&sent);
        return sent;
    };
    answered(limit, (&mut **conn).execute(sqlx::raw_sql(begin))).await?;
    let sent = outbox.flush(&mut **conn, false, false, limit).await;
    let end = if sent.is_ok() { "COMMIT" } else { "ROLLBACK" };
    answered(limit, (&mut **conn).execute(sqlx::raw_sql(end))).await?;
    flight.done();
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> Arc<str> {
        name.into()
    }

    #[test]
    fn no_procedure_or_statement_notifies_inside_its_transaction() {
        for (name, text) in crate::embedded::PROCEDURE_FILES {
            assert!(
                !text.contains("pg_notify"),
                "procedures/{name}.sql notifies"
            );
        }
        for (procedure, name, text) in crate::embedded::STATEMENT_FILES {
            assert!(
                !text.contains("pg_notify"),
                "statements/{procedure}/{name}.sql notifies"
            );
        }
    }

    #[test]
    fn identical_pending_notifications_fold_and_the_outbox_is_bounded() {
        let outbox = Outbox::default();
        let (a, b) = (channel("a"), channel("b"));
        outbox.post(&a, &[Wake::Orchestrator, Wake::Worker]);
        outbox.post(&a, &[Wake::Orchestrator]);
        outbox.post(&b, &[Wake::Orchestrator]);
        assert_eq!(outbox.unsent(), 3);
        assert_eq!(outbox.counters.folded.load(Ordering::Relaxed), 1);
        let batch = outbox.take(usize::MAX);
        assert_eq!(
            batch.arrays(),
            (
                vec!["a".to_string(), "a".to_string(), "b".to_string()],
                vec!["orchestrator", "worker", "orchestrator"]
            ),
            "in posting order"
        );
        // Posted while the batch is being sent: queued anew, not folded
        // into the batch in flight.
        outbox.post(&a, &[Wake::Orchestrator]);
        assert_eq!(outbox.unsent(), 4);
        outbox.finish(batch, Ok(()));
        assert_eq!(outbox.unsent(), 1);
        assert_eq!(outbox.counters.sent.load(Ordering::Relaxed), 3);

        let full = Outbox::default();
        for i in 0..MAX_PENDING + 10 {
            full.post(&channel(&format!("s{i}")), &[Wake::Worker]);
        }
        assert_eq!(full.unsent(), MAX_PENDING);
        assert_eq!(full.counters.dropped.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_failed_send_is_retried_then_given_up() {
        let outbox = Outbox::default();
        let a = channel("a");
        outbox.post(&a, &[Wake::Worker]);
        for attempt in 1..MAX_FAILURES {
            let batch = outbox.take(usize::MAX);
            // Posted meanwhile: folds into the batch put back.
            outbox.post(&a, &[Wake::Worker]);
            outbox.finish(batch, Err(true));
            assert_eq!(
                outbox.unsent(),
                1,
                "attempt {attempt}: back in the queue once"
            );
        }
        let batch = outbox.take(usize::MAX);
        outbox.finish(batch, Err(true));
        assert_eq!(outbox.unsent(), 0, "given up after {MAX_FAILURES} failures");
        assert_eq!(outbox.counters.dropped.load(Ordering::Relaxed), 1);

        outbox.post(&a, &[Wake::Orchestrator]);
        let batch = outbox.take(usize::MAX);
        outbox.finish(batch, Err(false));
        assert_eq!(outbox.unsent(), 0, "a permanent failure is not retried");
        assert_eq!(outbox.counters.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn payloads_round_trip() {
        for wake in [Wake::Orchestrator, Wake::OrchestratorSettle, Wake::Worker] {
            assert_eq!(Wake::from_payload(wake.payload()), Some(wake));
        }
        assert_eq!(Wake::from_payload("marker"), None);
    }
}
