//! Acks and abandons whose reply was lost.
//!
//! An ack's commit can reach the server while its reply never reaches the
//! client: the connection drops between the two, or the provider gives up
//! on a server that answers later than `PostgresOptions::call_timeout` (a
//! stalled disk). The ack is then tried again, by [`Store::riding_outages`]
//! on a fresh connection within `acquire_timeout`, or by duroxide's runtime
//! after that (a retryable error; with the defaults the provider's own
//! retries have given up by then). Either way, that attempt finds its lock
//! token gone: the commit it cannot see released it. Reported as an unknown
//! token (`DX001`, permanent), the runtime would take its committed turn
//! for a failed one and try to fail the instance.
//!
//! So a lease's ack remembers its token when an attempt loses its
//! connection ([`LostReplies`], per store, bounded), and when an attempt
//! then meets `DX001`, asks the database whether the ack's work is in
//! place ([`Landed`]): a turn's last event in the history
//! (`procedures/turn_landed.sql`), an activity gone from the worker queue
//! (`procedures/activity_settled.sql`). In place, the ack reports success;
//! otherwise the lease was lost before the ack landed, and the ack fails as
//! before. Nothing is written twice either way: an ack that landed is never
//! run again. The question costs nothing on the way an ack normally goes;
//! it is asked only after a lost connection.
//!
//! An abandon asks nothing: its lease gone after a lost attempt is released
//! either way (by that attempt, or by its end and another claim), which is
//! all an abandon asks for, so it reports success. A renewal is not covered:
//! a lease gone is what its caller must hear.
//!
//! What cannot be asked: an activity's ack without a completion (the
//! runtime's ack of a cancelled activity, whose error it only logs) and a
//! turn with no history to append. Those fail as before.
//!
//! # Claims whose reply was lost
//!
//! A fetch (or the claim an activity's ack makes ahead,
//! [`crate::claim_ahead`]) can commit its lease unseen the same way, or be
//! dropped by its caller after its request went out: duroxide's dispatchers
//! race each fetch against the runtime's shutdown and drop the loser. Its
//! item is then leased to nobody until the lease ends (by default 5 s for
//! a turn and 30 s for an activity, often minutes), and that fetch's
//! attempt counts toward poisoning. So the token of every claim is made
//! here, before the call ([`Claiming`]), and a claim whose call lost its
//! connection or was dropped midway is given back: abandoned without
//! counting the attempt, on a task of its own, as soon as the server
//! answers. Its commit may land after the client gave up (a server that
//! answers late finishes the call anyway), so while the token is unknown
//! the give-back looks again, backing off, for [`SETTLE`] at most, or the
//! lease's length if shorter. A claim whose call failed otherwise was
//! rolled back with its transaction, and one whose call returned was
//! delivered: neither is given back. A claim whose call was dropped (not
//! lost) comes back [`DROPPED_GRACE`] later. A tokio runtime that ends before the
//! give-back does (a graceful shutdown, then the process's end) drops its
//! task, which then gives the claim back from a thread of its own
//! ([`give_back_blocking`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duroxide::Event;
use duroxide::providers::WorkItem;

use crate::codec;
use crate::error::{PostgresProviderError, Result, sqlstate};
use crate::notify::Queue;
use crate::store::Store;
use crate::{orchestration_queue, worker_queue};

/// Tokens a store keeps at most: acks whose attempt lost its connection and
/// that have not been settled since. The oldest goes first; a token pushed
/// out only means its ack, if retried much later, fails as before.
const KEPT: usize = 1024;

/// The lease tokens whose ack lost its connection on some attempt, and so
/// may have committed unseen.
#[derive(Debug, Default)]
pub(crate) struct LostReplies {
    /// Whether `tokens` may hold anything: spares every ack the lock.
    any: AtomicBool,
    tokens: Mutex<VecDeque<String>>,
}

impl LostReplies {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // Nothing here can leave the queue inconsistent.
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `token`'s ack lost its connection on an attempt.
    fn note(&self, token: &str) {
        let mut tokens = self.lock();
        if !tokens.iter().any(|t| t == token) {
            if tokens.len() >= KEPT {
                tokens.pop_front();
            }
            tokens.push_back(token.to_string());
        }
        self.any.store(true, Ordering::SeqCst);
    }

    /// Whether `token`'s ack lost its connection on an attempt since it was
    /// last settled; it is forgotten either way.
    fn take(&self, token: &str) -> bool {
        if !self.any.load(Ordering::SeqCst) {
            return false;
        }
        let mut tokens = self.lock();
        let at = tokens.iter().position(|t| t == token);
        if let Some(at) = at {
            tokens.remove(at);
        }
        self.any.store(!tokens.is_empty(), Ordering::SeqCst);
        at.is_some()
    }
}

/// What tells whether a lease's ack is in place. It borrows the ack's own
/// arguments: nothing is built for it unless the question is asked.
#[derive(Debug)]
pub(crate) enum Landed<'a> {
    /// A turn's ack of execution `execution_id`: `last`, its delta's last
    /// event, in the history.
    Turn { execution_id: u64, last: &'a Event },
    /// An activity's ack: the activity `completion` names, gone from the
    /// worker queue.
    Activity { completion: &'a WorkItem },
    /// An abandon (the operation named): a lease gone is released.
    Released(&'static str),
}

impl<'a> Landed<'a> {
    /// What tells whether a turn's ack with `history_delta` landed: its
    /// last event. `None` without one.
    pub(crate) fn turn(execution_id: u64, history_delta: &'a [Event]) -> Option<Self> {
        Some(Self::Turn {
            execution_id,
            last: history_delta.last()?,
        })
    }

    /// What tells whether an activity's ack with `completion` landed: the
    /// activity the completion names. `None` without one.
    pub(crate) fn activity(completion: Option<&'a WorkItem>) -> Option<Self> {
        match completion? {
            completion @ (WorkItem::ActivityCompleted { .. } | WorkItem::ActivityFailed { .. }) => {
                Some(Self::Activity { completion })
            }
            _ => None,
        }
    }

    /// Asks the database.
    async fn ask(&self, s: &Store) -> Result<bool> {
        let query = match self {
            Self::Turn { execution_id, last } => {
                sqlx::query_scalar(&s.sql.orchestration.turn_landed)
                    .bind(&last.instance_id)
                    .bind(codec::to_i64("execution_id", *execution_id)?)
                    .bind(codec::to_i64("event_id", last.event_id)?)
                    .bind(codec::event_type(last))
            }
            Self::Activity {
                completion:
                    WorkItem::ActivityCompleted {
                        instance,
                        execution_id,
                        id,
                        ..
                    }
                    | WorkItem::ActivityFailed {
                        instance,
                        execution_id,
                        id,
                        ..
                    },
            } => sqlx::query_scalar(&s.sql.worker.activity_settled)
                .bind(instance)
                .bind(codec::to_i64("execution_id", *execution_id)?)
                .bind(codec::to_i64("activity_id", *id)?),
            // Not built for other items (`Landed::activity`): nothing to ask.
            Self::Activity { .. } => return Ok(false),
            Self::Released(_) => return Ok(true),
        };
        Ok(query.fetch_one(s.bounded()).await?)
    }

    /// The operation's name, for the log.
    fn operation(&self) -> &'static str {
        match self {
            Self::Turn { .. } => "ack_orchestration_item",
            Self::Activity { .. } => "ack_work_item",
            Self::Released(operation) => operation,
        }
    }
}

/// Whether `error` says the lease's token is unknown.
fn token_unknown(error: &PostgresProviderError) -> bool {
    error.sqlstate().as_deref() == Some(sqlstate::INVALID_LOCK_TOKEN)
}

impl Store {
    /// Runs `work`, the ack or abandon of the lease `token`, as
    /// [`Store::riding_outages`] does; when it finds the token gone after
    /// this call or an earlier one for the same token lost its connection,
    /// reports success if `landed` finds the ack's work in place (see the
    /// module's documentation).
    pub(crate) async fn acking<F, Fut>(
        &self,
        token: &str,
        landed: Option<Landed<'_>>,
        mut work: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let Some(landed) = landed else {
            return self.riding_outages(work).await;
        };
        let lost = &*self.lost_replies;
        let outcome = self
            .riding_outages(|| {
                let attempt = work();
                async move {
                    let outcome = attempt.await;
                    if outcome
                        .as_ref()
                        .is_err_and(PostgresProviderError::is_connection_lost)
                    {
                        lost.note(token);
                    }
                    outcome
                }
            })
            .await;
        match outcome {
            Err(e) if token_unknown(&e) && lost.take(token) => {
                match self.waiting_out_locks(|| landed.ask(self)).await {
                    Ok(true) => {
                        tracing::info!(
                            schema = %self.schema,
                            operation = landed.operation(),
                            "a call whose reply was lost had landed; its retry reports success"
                        );
                        crate::observe::landed_after_lost_reply(landed.operation());
                        Ok(())
                    }
                    Ok(false) => Err(e),
                    Err(asking) => {
                        // Unknown still: the next retry asks again.
                        lost.note(token);
                        Err(if asking.is_retryable() { asking } else { e })
                    }
                }
            }
            Ok(()) => {
                lost.take(token);
                Ok(())
            }
            outcome => outcome,
        }
    }
}

/// How long a give-back looks again for a claim whose commit has not
/// landed yet: a call the client gave up on or dropped is finished by the
/// server within its statement's time, and one that never committed is
/// looked for no longer than this.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// The first pause of a give-back that did not find its token yet; it
/// doubles up to [`MOST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two looks of a give-back.
const MOST_PAUSE: Duration = Duration::from_secs(2);

/// How long a claim whose call was dropped midway stays out of sight once
/// given back. Its caller dropped it on purpose (duroxide's dispatchers drop
/// the fetch under way when their runtime stops), and a fetch that raced
/// that stop must not see the item reappear the same instant: duroxide's
/// conformance suite stops a runtime whose fetch it saw come back empty and
/// expects the item still out of sight right after
/// (`race_replay::test_continue_as_new_unregistered_backoff`). Still far
/// sooner than the lease (5 s for a turn, 30 s for an activity by default).
pub(crate) const DROPPED_GRACE: Duration = Duration::from_secs(2);

/// A claim under way on `queue`: the lease token its call binds, made
/// before the call. Once the call may have reached the server
/// ([`Claiming::sent`]), and unless [`Claiming::settle`] then hears that
/// the call returned or failed on the server, dropping it gives the claim
/// back (see the module's documentation).
pub(crate) struct Claiming<'a> {
    store: &'a Store,
    /// Whether the claim may have been made and not heard of: set when the
    /// call may reach the server, cleared when its outcome is heard.
    armed: AtomicBool,
    /// Whether the call lost its connection (rather than being dropped).
    lost: bool,
    queue: Queue,
    token: String,
    /// The lease the call asks for: no give-back looks longer than this.
    lease: Duration,
}

impl<'a> Claiming<'a> {
    /// A claim on `queue` for a lease of `lease`, with a fresh token.
    pub(crate) fn new(store: &'a Store, queue: Queue, lease: Duration) -> Self {
        Self {
            store,
            armed: AtomicBool::new(false),
            lost: false,
            queue,
            token: uuid::Uuid::new_v4().to_string(),
            lease,
        }
    }

    /// The token the claim's call binds.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The call has a connection and is about to be sent (in procedure
    /// mode), or its transaction will run whatever becomes of the call (in
    /// inline mode): from now on it may claim. A call dropped before this
    /// (while it waited for a connection) claimed nothing.
    pub(crate) fn sent(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    /// The call ended with `outcome`: a lost connection leaves its claim to
    /// give back (now, as `self` drops, visible at once); anything else
    /// leaves nothing.
    pub(crate) fn settle<T>(mut self, outcome: &Result<T>) {
        self.lost = outcome
            .as_ref()
            .is_err_and(PostgresProviderError::is_connection_lost);
        if !self.lost {
            self.armed.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let stray = Stray {
            queue: self.queue,
            token: std::mem::take(&mut self.token),
            after: (!self.lost).then_some(DROPPED_GRACE),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            give_back_blocking(self.store, stray);
            return;
        };
        let lease = self.lease;
        let mut held = GivingBack(Some((self.store.clone(), stray)));
        runtime.spawn(async move {
            if let Some((store, stray)) = &held.0 {
                give_back(store, stray, lease).await;
            }
            held.0.take();
        });
    }
}

/// A claim to give back: its queue, its lease token, and how long it stays
/// out of sight once given back (`None`: visible at once).
#[derive(Clone)]
pub(crate) struct Stray {
    pub queue: Queue,
    pub token: String,
    pub after: Option<Duration>,
}

/// A give-back task's hold on its claim. Dropped before the give-back
/// ended (the tokio runtime shut down: a runtime's graceful shutdown, then
/// the process's end), it gives the claim back at once on a connection of
/// its own ([`give_back_blocking`]).
struct GivingBack(Option<(Store, Stray)>);

impl Drop for GivingBack {
    fn drop(&mut self) {
        if let Some((store, stray)) = self.0.take() {
            give_back_blocking(&store, stray);
        }
    }
}

/// How long a give-back at a runtime's end may take in all: connecting,
/// and the abandon, again while its claim's commit may still land.
const GIVE_BACK_AT_END: Duration = Duration::from_secs(2);

/// How long a give-back at a runtime's end looks again for a token it did
/// not find: a call dropped after its request went out commits within its
/// statement's time, and one dropped before (waiting for a connection)
/// never does, so a runtime's end waits this long for each such claim at
/// most.
const LOOK_AT_END: Duration = Duration::from_millis(500);

/// Gives back the claim `token` on `queue` from a thread of its own, on a
/// connection of its own (the pool's belong to the runtime that is ending,
/// [`crate::claim_ahead`] too), without counting its attempt: looking again
/// every [`FIRST_PAUSE`] while the token is unknown, for [`LOOK_AT_END`],
/// and taking [`GIVE_BACK_AT_END`] at most in all. A failure leaves the
/// item to its lease.
pub(crate) fn give_back_blocking(s: &Store, stray: Stray) {
    let alone = give_back_alone(s, stray);
    let done = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(alone))
    })
    .join();
    if !matches!(done, Ok(Ok(true))) {
        tracing::debug!(target: "duroxide_postgres", "giving back a claim at the runtime's end failed; it is left to its lease");
    }
}

/// The give-back of [`give_back_blocking`], on a connection of its own
/// from `s`'s pool's settings: whether it released the claim.
fn give_back_alone(s: &Store, stray: Stray) -> impl Future<Output = bool> + Send + 'static {
    let Stray {
        queue,
        token,
        after,
    } = stray;
    let options = s.pool.shared().connect_options();
    let sql = match queue {
        Queue::Orchestrator => s.sql.orchestration.abandon.clone(),
        Queue::Worker => s.sql.worker.abandon.clone(),
    };
    async move {
        use sqlx::Connection;
        let attempt = tokio::time::timeout(GIVE_BACK_AT_END, async move {
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            let looking = Instant::now();
            let released = loop {
                // Unnamed: nothing is left prepared (a transaction pooler
                // may stand in between).
                let (released, _wake): (bool, Vec<String>) = sqlx::query_as(&sql)
                    .persistent(false)
                    .bind(&token)
                    .bind(after.map(codec::millis))
                    .bind(true)
                    .fetch_one(&mut conn)
                    .await?;
                if released || looking.elapsed() >= LOOK_AT_END {
                    break released;
                }
                tokio::time::sleep(FIRST_PAUSE).await;
            };
            conn.close().await?;
            Ok::<bool, sqlx::Error>(released)
        })
        .await;
        matches!(attempt, Ok(Ok(true)))
    }
}

/// Gives back the claim `token` on `queue`, whose caller never heard of it:
/// abandons it without counting the attempt, looking again while the token
/// is unknown for [`SETTLE`] or `lease`, whichever is shorter.
async fn give_back(s: &Store, stray: &Stray, lease: Duration) {
    let Stray {
        queue,
        ref token,
        after,
    } = *stray;
    let until = Instant::now() + lease.min(SETTLE);
    let mut pause = FIRST_PAUSE;
    loop {
        let outcome = s
            .riding_outages(|| async {
                match queue {
                    Queue::Orchestrator => {
                        orchestration_queue::abandon(s, token, after, true).await
                    }
                    Queue::Worker => worker_queue::abandon(s, token, after, true).await,
                }
            })
            .await;
        match outcome {
            Ok(()) => return given_back(s, queue),
            Err(e) if token_unknown(&e) && Instant::now() + pause < until => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MOST_PAUSE);
            }
            Err(e) if token_unknown(&e) => return,
            Err(PostgresProviderError::Database(sqlx::Error::PoolClosed)) => {
                // The pool was closed meanwhile (its runtime is ending).
                if give_back_alone(s, stray.clone()).await {
                    given_back(s, queue);
                }
                return;
            }
            Err(e) => {
                tracing::debug!(
                    target: "duroxide_postgres",
                    schema = %s.schema,
                    error = %e,
                    "giving back a claim whose reply was lost failed; it is left to its lease"
                );
                return;
            }
        }
    }
}

/// Says that a claim on `queue` whose caller never heard of it was given
/// back: an INFO event and `given_back_after_lost_reply_total`.
fn given_back(s: &Store, queue: Queue) {
    tracing::info!(
        schema = %s.schema,
        queue = queue.name(),
        "an item claimed by a call whose reply was lost was given back"
    );
    crate::observe::given_back_after_lost_reply(queue);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_remembered_until_taken_once() {
        let lost = LostReplies::default();
        assert!(!lost.take("a"));
        lost.note("a");
        lost.note("a");
        lost.note("b");
        assert!(lost.take("a"));
        assert!(!lost.take("a"), "taken once");
        assert!(lost.take("b"));
        assert!(!lost.any.load(Ordering::SeqCst), "empty again");
    }

    #[test]
    fn the_oldest_token_goes_first_past_the_bound() {
        let lost = LostReplies::default();
        for i in 0..=KEPT {
            lost.note(&format!("t{i}"));
        }
        assert!(!lost.take("t0"), "the oldest pushed out");
        assert!(lost.take("t1") && lost.take(&format!("t{KEPT}")));
    }

    #[test]
    fn only_a_completion_names_an_activity() {
        let done = WorkItem::ActivityCompleted {
            instance: "i".to_string(),
            execution_id: 2,
            id: 7,
            result: "r".to_string(),
        };
        assert!(matches!(
            Landed::activity(Some(&done)),
            Some(Landed::Activity { completion }) if std::ptr::eq(completion, &done)
        ));
        let start = WorkItem::StartOrchestration {
            instance: "i".to_string(),
            orchestration: "o".to_string(),
            input: String::new(),
            version: None,
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            execution_id: 1,
        };
        assert!(Landed::activity(Some(&start)).is_none());
        assert!(Landed::activity(None).is_none());
        assert!(Landed::turn(1, &[]).is_none());
        assert_eq!(
            Landed::Released("abandon_work_item").operation(),
            "abandon_work_item"
        );
    }
}
