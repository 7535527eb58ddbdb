//! The history a worker fetch returns, kept for the read that follows it.
//!
//! duroxide's worker reads the whole history of an activity's instance
//! right after claiming the activity, to give the activity its
//! orchestration's name and version: one more round trip, a connection and
//! a statement for every activity. The fetch therefore returns that history
//! with the claim (`statements/fetch_work_item/claim.sql`, up to
//! [`crate::PostgresOptions::HISTORY_PREFETCH_MAX_BYTES`]), and the store
//! answers the read from it when:
//!
//! * the read comes from the **task that fetched** (a tokio task id): the
//!   runtime's worker fetches and reads in one task with nothing between
//!   them; a client's status poll or any other task reads from the server;
//! * it reads the **same instance**, and it is the first read since the
//!   fetch (what was kept is taken, never answered twice);
//! * it comes within the **window** ([`crate::PostgresOptions::history_prefetch_window`]);
//! * no write of that instance's history through this store **ended after
//!   the fetch began** (an orchestration turn's ack with events, an
//!   append, a deletion, a pruning): a task that saw its write finish, or
//!   heard of it from the task that made it, reads it.
//!
//! The read then returns the history as it stood when the fetch claimed
//! the activity, as if it had run then. Another process's turn committed
//! in between is not in it; without the prefetch a read sent at that
//! moment could not have seen it either.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::Id;

/// Slots the instances' last write times are hashed into: two instances
/// sharing one only cost a read answered by the server.
const SLOTS: usize = 64;

/// One fetch's history, kept for its task's next read.
struct Kept {
    instance: String,
    /// The events as stored (JSON), decoded by the read that takes them.
    events: Vec<String>,
    /// When the fetch began ([`Prefetched::now`]).
    began: u64,
}

/// What the store's worker fetches read, by the task that fetched.
pub(crate) struct Prefetched {
    /// How long a kept history answers a read; zero: nothing is kept (the
    /// fetch is not asked for the history).
    window: Duration,
    kept: Mutex<HashMap<Id, Kept>>,
    /// The clock's origin: times are nanoseconds since.
    origin: Instant,
    /// When a write of an instance hashed to each slot last ended.
    written: [AtomicU64; SLOTS],
    /// When a write of any instance's history (a deletion or pruning by
    /// filter) last ended.
    written_all: AtomicU64,
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
        }
    }

    /// Whether fetches should return the history at all.
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

    /// Keeps `events`, the history of `instance` a fetch of the current task
    /// that began at `began` ([`Prefetched::now`]) returned, replacing what
    /// an earlier fetch of this task left. Nothing is kept outside a task.
    pub(crate) fn keep(&self, instance: &str, events: Vec<String>, began: u64) {
        let Some(task) = tokio::task::try_id().filter(|_| self.enabled()) else {
            return;
        };
        let mut kept = self.lock();
        // Entries of tasks that never read (or ended) go when they expire.
        let oldest = self.now().saturating_sub(self.window_nanos());
        kept.retain(|_, k| k.began > oldest);
        kept.insert(
            task,
            Kept {
                instance: instance.to_string(),
                events,
                began,
            },
        );
    }

    /// The history kept for the current task's read of `instance`, if it
    /// qualifies; whatever this task kept is discarded either way.
    pub(crate) fn take(&self, instance: &str) -> Option<Vec<String>> {
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
        fresh.then_some(k.events)
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
            p.keep("a", vec!["e1".into()], p.now());
            assert_eq!(p.take("a"), Some(vec!["e1".to_string()]));
            assert_eq!(p.take("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn another_instance_or_task_reads_nothing() {
        let p = std::sync::Arc::new(window());
        let q = p.clone();
        tokio::spawn(async move {
            q.keep("a", vec!["e1".into()], q.now());
            let r = q.clone();
            let other = tokio::spawn(async move { r.take("a") }).await.unwrap();
            assert_eq!(other, None);
            // A read of another instance discards what was kept.
            assert_eq!(q.take("b"), None);
            assert_eq!(q.take("a"), None);
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
            p.keep("a", vec!["e1".into()], began);
            assert_eq!(p.take("a"), Some(vec!["e1".to_string()]));
            // Written while the fetch ran, kept after.
            let began = p.now();
            p.wrote("a");
            p.keep("a", vec!["e1".into()], began);
            assert_eq!(p.take("a"), None);
            let began = p.now();
            p.wrote_all();
            p.keep("a", vec!["e1".into()], began);
            assert_eq!(p.take("a"), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_zero_window_keeps_nothing() {
        let off = Prefetched::new(Duration::ZERO);
        assert!(!off.enabled());
        tokio::spawn(async move {
            off.keep("a", vec!["e1".into()], off.now());
            assert_eq!(off.take("a"), None);
        })
        .await
        .unwrap();
    }

    #[test]
    fn nothing_is_kept_outside_a_task() {
        let p = window();
        p.keep("a", vec!["e1".into()], p.now());
        assert!(p.lock().is_empty());
        assert_eq!(p.take("a"), None);
    }
}
