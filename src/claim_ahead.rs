//! A worker's ack claims the activity its task asks for next.
//!
//! duroxide's worker dispatcher is a loop in one tokio task: fetch an
//! activity, run it, ack it, fetch again at once with the same parameters.
//! The fetch after an ack is a round trip of its own, on the critical path
//! of every activity when one worker slot runs them. So an ack of the item
//! the same task fetched last also claims the next item with that fetch's
//! parameters, in the same call and transaction
//! (`procedures/ack_work_item_and_claim.sql`), and keeps it for the task's
//! next fetch:
//!
//! * only the **same task** gets it, and only if its next fetch asks with
//!   the **same parameters** (lease, tags, session owner and lease): any
//!   other fetch gives it back first and then fetches as usual;
//! * within the **window** ([`crate::PostgresOptions::prefetch_window`]):
//!   a task that does not come back (a dispatcher shutting down) has it
//!   given back when the window ends, so it waits for nobody's lease;
//! * only after acking an item **without a session**: the ack of a session's
//!   item touches the session's row, and a claim in that transaction could
//!   then wait for another session's row while holding it;
//! * it claims only items **without a session**, whatever owner the fetch
//!   named: taking a session means writing the session's row, which another
//!   transaction may hold (the ack would wait for it, and in procedure mode
//!   fail with it, its activity then run again), and a session taken for an
//!   item given back unused would stay taken by this worker. The session's
//!   items wait for the task's own fetch;
//! * and so **not while the fetch's session owner holds a session**
//!   ([`ClaimAhead::holds_session`]): fed by claims made ahead, its task
//!   would never fetch for itself while items without a session kept
//!   coming, and its sessions' items, which no other owner may take, would
//!   wait until the session went idle.
//!
//! In both modes the ack and the claim are one transaction (the procedure
//! `ack_work_item_and_claim`; inline, `inline::worker::ack_and_fetch`), so
//! an error in either fails the call, nothing committed, and the caller
//! retries or gives the item back.
//!
//! Giving an item back is `abandon_work_item` without counting the attempt:
//! the item is visible again at once, its attempt count as before the claim.
//! The claim is the fetch the task would have made a moment later: the
//! oldest item it may run at that moment, its lease counted from the ack.
//!
//! A runtime shut down right after an ack runs no timer: the timer's task
//! is dropped with the tokio runtime, and dropping it gives the item back
//! at once on a connection of its own
//! ([`crate::lost_replies::give_back_blocking`]), so a
//! graceful shutdown leaves nothing leased. Only a process that dies
//! (crash, kill) leaves the item to its lease, as it leaves any claim.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::Id;

use crate::worker_queue::{Claimed, FetchParams};

/// What a task's last worker call left for its next.
enum Entry {
    /// The task fetched this token with these parameters at `at`: its ack
    /// may claim the next item with them.
    Fetched {
        token: String,
        params: FetchParams,
        at: Instant,
    },
    /// The task's ack claimed this item with these parameters, at `at`;
    /// `began` is when that ack began on the prefetch clock (what the
    /// claimed history is as of, [`crate::prefetch`]).
    Claimed {
        claimed: Box<Claimed>,
        params: FetchParams,
        at: Instant,
        began: u64,
    },
}

/// What a task's fetch finds kept for it.
pub(crate) enum Kept {
    /// An item claimed for this fetch (its parameters matched, in time),
    /// and when the ack that claimed it began on the prefetch clock.
    Item(Box<Claimed>, u64),
    /// An item claimed with other parameters, or too long ago: give it back
    /// (its lock token) before fetching.
    GiveBack(String),
}

/// Entries past which a keep drops those of tasks that never came back.
const SWEEP_ABOVE: usize = 256;

/// The per-task claims of one store.
pub(crate) struct ClaimAhead {
    /// How long a claimed item waits for its task; zero: acks claim nothing.
    window: Duration,
    tasks: Mutex<HashMap<Id, Entry>>,
    /// Session owners known to hold a session, and until when at least
    /// ([`ClaimAhead::holds_session`]).
    holders: Mutex<HashMap<String, Instant>>,
}

impl Default for ClaimAhead {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl ClaimAhead {
    /// Claims ahead, holding each item `window` for its task (zero: off).
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            tasks: Mutex::default(),
            holders: Mutex::default(),
        }
    }

    /// Whether acks claim ahead at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// How long a claimed item waits for its task.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The current task fetched `token` with `params`; `session` says the
    /// item belongs to a session (its ack then claims nothing).
    pub(crate) fn fetched(&self, token: &str, params: &FetchParams, session: bool) {
        let Some(task) = self.task() else {
            return;
        };
        if let (true, Some(owner), Some(lease)) = (session, &params.owner, params.session_lock) {
            self.holds_session(owner, Instant::now() + lease);
        }
        let mut tasks = self.lock();
        if session {
            tasks.remove(&task);
        } else {
            self.sweep(&mut tasks);
            tasks.insert(
                task,
                Entry::Fetched {
                    token: token.to_string(),
                    params: params.clone(),
                    at: Instant::now(),
                },
            );
        }
    }

    /// The parameters to claim the next item with, if the current task's
    /// last fetch claimed `token` (which is being acked) and no claim of
    /// its own is waiting.
    pub(crate) fn params_for_ack(&self, token: &str) -> Option<FetchParams> {
        let task = self.task()?;
        let params = {
            let mut tasks = self.lock();
            match tasks.get(&task)? {
                Entry::Fetched { token: t, .. } if t == token => match tasks.remove(&task) {
                    Some(Entry::Fetched { params, .. }) => params,
                    _ => return None,
                },
                _ => return None,
            }
        };
        // A worker holding a session fetches for itself: its session's
        // items, which no claim ahead takes, come in their turn.
        match params.owner.as_deref() {
            Some(owner) if self.holding(owner) => None,
            _ => Some(params),
        }
    }

    /// Notes that session owner `owner` holds a session until `until` at
    /// least: it was handed a session's item with that lease, or a renewal
    /// naming it renewed some session (duroxide renews all of a runtime's
    /// owners at once, and each of them is counted as holding one). Until
    /// then the acks of its tasks claim nothing ahead, so that its next
    /// fetch, which may take its sessions' items, is a fetch of its own:
    /// the claim ahead takes only items without a session, and a worker
    /// fed by it would leave its sessions' items waiting (no other owner
    /// may take them) for as long as items without a session kept coming.
    pub(crate) fn holds_session(&self, owner: &str, until: Instant) {
        if !self.enabled() {
            return;
        }
        let mut holders = self
            .holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if holders.len() >= SWEEP_ABOVE {
            let now = Instant::now();
            holders.retain(|_, held_until| *held_until > now);
        }
        let held_until = holders.entry(owner.to_string()).or_insert(until);
        if *held_until < until {
            *held_until = until;
        }
    }

    /// Whether `owner` is known to hold a session now.
    fn holding(&self, owner: &str) -> bool {
        self.holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(owner)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Keeps `claimed`, claimed with `params` by an ack of the current task
    /// that began at `began` (prefetch clock), for the task's next fetch.
    /// `false` outside a task: the caller gives the item back.
    pub(crate) fn keep(&self, claimed: Claimed, params: FetchParams, began: u64) -> bool {
        let Some(task) = self.task() else {
            return false;
        };
        let mut tasks = self.lock();
        self.sweep(&mut tasks);
        tasks.insert(
            task,
            Entry::Claimed {
                claimed: Box::new(claimed),
                params,
                at: Instant::now(),
                began,
            },
        );
        true
    }

    /// What the current task's fetch with `params` finds kept for it.
    pub(crate) fn take(&self, params: &FetchParams) -> Option<Kept> {
        let task = self.task()?;
        let mut tasks = self.lock();
        if !matches!(tasks.get(&task)?, Entry::Claimed { .. }) {
            return None;
        }
        let Some(Entry::Claimed {
            claimed,
            params: claimed_with,
            at,
            began,
        }) = tasks.remove(&task)
        else {
            return None;
        };
        Some(
            if at.elapsed() < self.window && same(params, &claimed_with) {
                Kept::Item(claimed, began)
            } else {
                Kept::GiveBack(claimed.token)
            },
        )
    }

    /// The token of an item claimed for `task` at least a window ago and
    /// not taken, removed: the caller gives it back.
    pub(crate) fn expired(&self, task: Id, token: &str) -> bool {
        let mut tasks = self.lock();
        let stale = matches!(
            tasks.get(&task),
            Some(Entry::Claimed { claimed, .. }) if claimed.token == token
        );
        if stale {
            tasks.remove(&task);
        }
        stale
    }

    /// Drops, once there are many, the entries of tasks that did not come
    /// back: fetches whose lease has ended (their ack cannot succeed).
    /// Claims stay: their timer gives them back.
    fn sweep(&self, tasks: &mut HashMap<Id, Entry>) {
        if tasks.len() < SWEEP_ABOVE {
            return;
        }
        tasks.retain(|_, e| match e {
            Entry::Fetched { params, at, .. } => at.elapsed() < params.lock_timeout,
            Entry::Claimed { .. } => true,
        });
    }

    fn task(&self) -> Option<Id> {
        tokio::task::try_id().filter(|_| self.enabled())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Entry>> {
        // Nothing here can leave the map inconsistent.
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a fetch with `a` may take what one with `b` claimed.
fn same(a: &FetchParams, b: &FetchParams) -> bool {
    a.lock_timeout == b.lock_timeout
        && a.tag_mode == b.tag_mode
        && a.tags == b.tags
        && a.owner == b.owner
        && a.session_lock == b.session_lock
        && a.history_bytes == b.history_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use duroxide::providers::WorkItem;

    fn params(lock_ms: u64) -> FetchParams {
        FetchParams {
            lock_timeout: Duration::from_millis(lock_ms),
            tag_mode: "default",
            tags: Vec::new(),
            owner: Some("w".into()),
            session_lock: Some(Duration::from_secs(1)),
            next_due: true,
            history_bytes: None,
        }
    }

    fn claimed(token: &str) -> Claimed {
        Claimed {
            item: WorkItem::ActivityExecute {
                instance: "i".into(),
                execution_id: 1,
                id: 1,
                name: "a".into(),
                input: String::new(),
                session_id: None,
                tag: None,
            },
            token: token.into(),
            attempts: 1,
            history: None,
        }
    }

    fn ahead() -> std::sync::Arc<ClaimAhead> {
        std::sync::Arc::new(ClaimAhead::new(Duration::from_secs(60)))
    }

    #[tokio::test]
    async fn only_an_ack_of_the_tasks_last_fetch_claims() {
        let a = ahead();
        tokio::spawn(async move {
            a.fetched("t1", &params(1000), false);
            assert!(a.params_for_ack("other").is_none());
            assert!(a.params_for_ack("t1").is_some());
            // Used once.
            assert!(a.params_for_ack("t1").is_none());
            // A session's item: its ack claims nothing.
            a.fetched("t2", &params(1000), true);
            assert!(a.params_for_ack("t2").is_none());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn an_owner_holding_a_session_claims_nothing_ahead_until_it_ends() {
        let a = ahead();
        tokio::spawn(async move {
            // A renewal naming owner `w` renewed a session, held 200 ms on.
            let until = Instant::now() + Duration::from_millis(200);
            a.holds_session("w", until);
            a.fetched("t1", &params(1000), false);
            assert!(a.params_for_ack("t1").is_none());
            // Another owner's ack still claims.
            let mut other = params(1000);
            other.owner = Some("v".into());
            a.fetched("t2", &other, false);
            assert!(a.params_for_ack("t2").is_some());
            // The hold's end is the condition awaited.
            tokio::time::sleep_until(until.into()).await;
            a.fetched("t3", &params(1000), false);
            assert!(a.params_for_ack("t3").is_some());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn another_task_neither_claims_nor_takes() {
        let a = ahead();
        let b = a.clone();
        tokio::spawn(async move {
            b.fetched("t1", &params(1000), false);
            assert!(b.keep(claimed("c1"), params(1000), 1));
            let c = b.clone();
            let (acked, taken) = tokio::spawn(async move {
                (
                    c.params_for_ack("t1").is_some(),
                    c.take(&params(1000)).is_some(),
                )
            })
            .await
            .unwrap();
            assert!(!acked && !taken);
            assert!(matches!(b.take(&params(1000)), Some(Kept::Item(c, 1)) if c.token == "c1"));
            assert!(b.take(&params(1000)).is_none(), "taken once");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn other_parameters_or_a_late_fetch_give_it_back() {
        let a = ahead();
        tokio::spawn(async move {
            assert!(a.keep(claimed("c1"), params(1000), 1));
            assert!(matches!(a.take(&params(2000)), Some(Kept::GiveBack(t)) if t == "c1"));
        })
        .await
        .unwrap();
        let late = std::sync::Arc::new(ClaimAhead::new(Duration::from_millis(1)));
        tokio::spawn(async move {
            assert!(late.keep(claimed("c2"), params(1000), 1));
            std::thread::sleep(Duration::from_millis(2));
            assert!(matches!(late.take(&params(1000)), Some(Kept::GiveBack(t)) if t == "c2"));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_timer_gives_back_only_what_is_still_kept() {
        let a = ahead();
        let b = a.clone();
        let task = tokio::spawn(async move {
            assert!(b.keep(claimed("c1"), params(1000), 1));
            tokio::task::id()
        })
        .await
        .unwrap();
        assert!(!a.expired(task, "c0"));
        assert!(a.expired(task, "c1"));
        assert!(!a.expired(task, "c1"), "given back once");
    }

    #[tokio::test]
    async fn off_claims_nothing() {
        let off = ClaimAhead::new(Duration::ZERO);
        tokio::spawn(async move {
            off.fetched("t1", &params(1000), false);
            assert!(off.params_for_ack("t1").is_none());
            assert!(!off.keep(claimed("c1"), params(1000), 1));
        })
        .await
        .unwrap();
    }
}
