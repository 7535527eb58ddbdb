//! What one call read, kept for the call its task makes next.
//!
//! Two of duroxide's calls always come in pairs, the second right after the
//! first in the same task:
//!
//! * the **worker** claims an activity (`fetch_work_item`) and reads the
//!   whole history of its instance (`read`), to give the activity its
//!   orchestration's name and version;
//! * the **client**'s status (`Client::get_orchestration_status`, which
//!   `wait_for_orchestration` polls) reads the history (`read`) and then
//!   the custom status (`get_custom_status`).
//!
//! Each second call was a round trip, a connection and a statement of its
//! own. So the first returns what the second needs (the claim statement the
//! instance's history up to
//! [`crate::PostgresOptions::HISTORY_PREFETCH_MAX_BYTES`],
//! `statements/fetch_work_item/claim.sql`; the history read the custom
//! status, `procedures/read_history.sql`), and the store answers the second
//! from it when:
//!
//! * it comes from the **same tokio task**: everything else (another
//!   dispatcher, another client poll) goes to the server;
//! * it is about the **same instance**, and it is the task's next such call
//!   (what was kept is taken, never answered twice);
//! * it comes within the **window** ([`crate::PostgresOptions::prefetch_window`]);
//! * no write of that instance through this store **ended after the first
//!   call began** (an orchestration turn's ack with events, an append, a
//!   deletion, a pruning): a task that saw its write finish, or heard of it
//!   from the task that made it, reads it.
//!
//! The second call then answers as of the first one's snapshot, as if it
//! had run then. Another process's commit in between is not in it; a call
//! sent to the server at that moment could have missed it as well. For the
//! client's status the history and the custom status now come from one
//! snapshot, where two calls could straddle a turn.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::Id;

/// Slots the instances' last write times are hashed into: two instances
/// sharing one only cost a read answered by the server.
const SLOTS: usize = 64;

/// What one call read, kept for the call its task makes next.
enum Payload {
    /// A worker fetch's history of the claimed activity's instance (the
    /// events as stored, JSON), for the worker's `read`.
    History(Vec<String>),
    /// A history read's custom status and version of the instance (`None`
    /// version: no instance row), for the client's `get_custom_status`.
    Status(Option<String>, Option<i64>),
}

/// One call's read, kept for its task's next call.
struct Kept {
    instance: String,
    payload: Payload,
    /// When the call that read it began ([`Prefetched::now`]).
    began: u64,
}

/// What the store's calls read for the next call of the same task.
pub(crate) struct Prefetched {
    /// How long what was kept answers the next call; zero: nothing is
    /// kept (and the first calls are not asked for anything extra).
    window: Duration,
    kept: Mutex<HashMap<Id, Kept>>,
    /// The clock's origin: times are nanoseconds since.
    origin: Instant,
    /// When a write of an instance hashed to each slot last ended.
    written: [AtomicU64; SLOTS],
    /// When a write of any instance's history (a deletion or pruning by
    /// filter) last ended.
    written_all: AtomicU64,
    /// When entries nobody came back for were last dropped.
    swept: AtomicU64,
}

impl Default for Prefetched {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl Prefetched {
    /// Keeps what fetches read for `window` (zero: off).
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            kept: Mutex::default(),
            origin: Instant::now(),
            written: std::array::from_fn(|_| AtomicU64::new(0)),
            written_all: AtomicU64::new(0),
            swept: AtomicU64::new(0),
        }
    }

    /// Whether the first calls should read anything for the second.
    pub(crate) fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// Now on this store's clock: what a fetch records before it starts.
    /// Never zero, so that a fetch never begins with the writes' initial
    /// times.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn slot(instance: &str) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(instance);
        usize::try_from(hash % SLOTS as u64).unwrap_or_default()
    }

    /// Keeps `events`, the history of `instance` a worker fetch of the
    /// current task that began at `began` ([`Prefetched::now`]) returned.
    pub(crate) fn keep_history(&self, instance: &str, events: Vec<String>, began: u64) {
        self.keep(instance, Payload::History(events), began);
    }

    /// Keeps the custom status and version (`None`: no instance row) a
    /// history read of `instance` by the current task that began at `began`
    /// returned.
    pub(crate) fn keep_status(
        &self,
        instance: &str,
        status: Option<String>,
        version: Option<i64>,
        began: u64,
    ) {
        self.keep(instance, Payload::Status(status, version), began);
    }

    /// Keeps `payload` for the current task's next call, replacing what it
    /// kept before. Nothing is kept outside a task.
    fn keep(&self, instance: &str, payload: Payload, began: u64) {
        let Some(task) = tokio::task::try_id().filter(|_| self.enabled()) else {
            return;
        };
        let now = self.now();
        let mut kept = self.lock();
        // Entries of tasks that never came back (or ended) are dropped once
        // a window, so a keep costs a scan of the map only that often.
        let window = self.window_nanos();
        if now.saturating_sub(self.swept.load(Ordering::Relaxed)) >= window {
            self.swept.store(now, Ordering::Relaxed);
            let oldest = now.saturating_sub(window);
            kept.retain(|_, k| k.began > oldest);
        }
        kept.insert(
            task,
            Kept {
                instance: instance.to_string(),
                payload,
                began,
            },
        );
    }

    /// The history kept for the current task's read of `instance`, if it
    /// qualifies; whatever this task kept is discarded either way.
    pub(crate) fn take_history(&self, instance: &str) -> Option<Vec<String>> {
        match self.take(instance)? {
            Payload::History(events) => Some(events),
            Payload::Status(..) => None,
        }
    }

    /// The custom status and version kept for the current task's status
    /// read of `instance`, if it qualifies; whatever this task kept is
    /// discarded either way.
    pub(crate) fn take_status(&self, instance: &str) -> Option<(Option<String>, Option<i64>)> {
        match self.take(instance)? {
            Payload::Status(status, version) => Some((status, version)),
            Payload::History(_) => None,
        }
    }

    /// What the current task kept for `instance`, if still good: taken
    /// within the window, and no write of the instance ended since the
    /// call that read it began.
    fn take(&self, instance: &str) -> Option<Payload> {
        if !self.enabled() {
            return None;
        }
        let task = tokio::task::try_id()?;
        let k = {
            let mut kept = self.lock();
            if kept.is_empty() {
                return None;
            }
            kept.remove(&task)?
        };
        let fresh = k.instance == instance
            && self.now().saturating_sub(k.began) < self.window_nanos()
            && self.written[Self::slot(instance)].load(Ordering::Acquire) < k.began
            && self.written_all.load(Ordering::Acquire) < k.began;
        fresh.then_some(k.payload)
    }

    /// A write of `instance`'s history through this store ended.
    pub(crate) fn wrote(&self, instance: &str) {
        self.written[Self::slot(instance)].fetch_max(self.now(), Ordering::AcqRel);
    }

    /// A write of any number of instances' histories through this store
    /// ended.
    pub(crate) fn wrote_all(&self) {
        self.written_all.fetch_max(self.now(), Ordering::AcqRel);
    }

    fn window_nanos(&self) -> u64 {
        u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Kept>> {
        // Nothing here can leave the map inconsistent: a poisoned lock's
        // data is as good as any.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Prefetched {
        Prefetched::new(Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_task_reads_what_it_fetched_once() {
        let p = window();
        tokio::spawn(async move {
            p.keep_history("a", vec!["e1".into()], p.now());
            assert_eq!(p.take_history("a"), Some(vec!["e1".to_string()]));
            assert_eq!(p.take_history("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn another_instance_or_task_reads_nothing() {
        let p = std::sync::Arc::new(window());
        let q = p.clone();
        tokio::spawn(async move {
            q.keep_history("a", vec!["e1".into()], q.now());
            let r = q.clone();
            let other = tokio::spawn(async move { r.take_history("a") })
                .await
                .unwrap();
            assert_eq!(other, None);
            // A read of another instance discards what was kept.
            assert_eq!(q.take_history("b"), None);
            assert_eq!(q.take_history("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_write_ended_after_the_fetch_began_leaves_nothing_to_read() {
        let p = window();
        tokio::spawn(async move {
            // Written before the fetch began: the fetch saw it.
            p.wrote("a");
            p.wrote_all();
            let began = p.now();
            p.keep_history("a", vec!["e1".into()], began);
            assert_eq!(p.take_history("a"), Some(vec!["e1".to_string()]));
            // Written while the fetch ran, kept after.
            let began = p.now();
            p.wrote("a");
            p.keep_history("a", vec!["e1".into()], began);
            assert_eq!(p.take_history("a"), None);
            let began = p.now();
            p.wrote_all();
            p.keep_history("a", vec!["e1".into()], began);
            assert_eq!(p.take_history("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_zero_window_keeps_nothing() {
        let off = Prefetched::new(Duration::ZERO);
        assert!(!off.enabled());
        tokio::spawn(async move {
            off.keep_history("a", vec!["e1".into()], off.now());
            assert_eq!(off.take_history("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_status_answers_only_a_status_read() {
        let p = window();
        tokio::spawn(async move {
            p.keep_status("a", Some("s".into()), Some(2), p.now());
            assert_eq!(p.take_history("a"), None);
            p.keep_status("a", Some("s".into()), Some(2), p.now());
            assert_eq!(p.take_status("a"), Some((Some("s".to_string()), Some(2))));
            p.keep_history("a", vec!["e1".into()], p.now());
            assert_eq!(p.take_status("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn what_nobody_came_back_for_is_dropped() {
        let p = std::sync::Arc::new(Prefetched::new(Duration::from_millis(1)));
        for _ in 0..3 {
            let q = p.clone();
            tokio::spawn(async move { q.keep_history("a", vec!["e1".into()], q.now()) })
                .await
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
        let q = p.clone();
        tokio::spawn(async move { q.keep_history("b", vec!["e1".into()], q.now()) })
            .await
            .unwrap();
        assert_eq!(p.lock().len(), 1, "the three expired entries are dropped");
    }

    #[test]
    fn nothing_is_kept_outside_a_task() {
        let p = window();
        p.keep_history("a", vec!["e1".into()], p.now());
        assert!(p.lock().is_empty());
        assert_eq!(p.take_history("a"), None);
    }
}
