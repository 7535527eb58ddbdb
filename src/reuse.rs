//! A connection kept for its tenant's next operation, for a moment.
//!
//! sqlx tests every connection it takes back into a pool before anyone can
//! have it again: it sends a `Sync` and waits for the server's answer, one
//! round trip, on a task of its own. A provider operation is one or a few
//! short statements, so that test is a server wake-up and a client task per
//! operation: keeping the connection instead gave procedure mode 1.21× the
//! throughput on a busy two-core machine (docs/benchmarks.md, "Where the
//! time goes").
//!
//! With tenant affinity ([`crate::affinity`]) a tenant's operations follow
//! one another on the same few connections. So a connection that an
//! operation finished with cleanly (its statement, or its transaction's
//! `COMMIT` or `ROLLBACK`, answered) is kept here, on its shard, for the
//! same tenant's next operation: for at most
//! [`crate::PostgresOptions::connection_reuse`], and only while nobody
//! waits for that shard. Anything else goes back to sqlx as before:
//!
//! * a connection an operation was cancelled on, or failed on, is dropped
//!   into the pool (sqlx tests it, and closes it if it is broken);
//! * when an operation of another tenant, or a borrower, wants the shard,
//!   what is kept there goes back to the pool first, so a kept connection
//!   never makes anyone wait;
//! * a sweep returns what was kept longer than the window, and everything
//!   once the shared pool closes.
//!
//! A kept connection is reused by the tenant it served, so the recycling
//! count of [`crate::recycle`] (distinct tenants per connection) is the
//! same as if it had gone through the pool.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

/// Connections kept per shard.
#[derive(Debug)]
pub(crate) struct Kept {
    slots: Vec<Mutex<Vec<Entry>>>,
    window: Duration,
}

/// One kept connection: whose, and since when.
#[derive(Debug)]
struct Entry {
    conn: PoolConnection<Postgres>,
    tenant: Arc<str>,
    since: Instant,
}

impl Kept {
    /// Room for `shards` shards, each connection kept at most `window`
    /// (zero: none is kept).
    pub(crate) fn new(shards: usize, window: Duration) -> Self {
        Self {
            slots: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            window,
        }
    }

    fn slot(&self, shard: usize) -> Option<MutexGuard<'_, Vec<Entry>>> {
        self.slots
            .get(shard)
            .map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps `conn`, from `shard`, for `tenant`'s next operation, unless
    /// keeping is off or `wanted` (read under the shard's lock) says
    /// someone waits for the shard: then it goes back to the pool.
    pub(crate) fn keep(
        &self,
        shard: usize,
        tenant: &Arc<str>,
        conn: PoolConnection<Postgres>,
        wanted: impl FnOnce() -> bool,
    ) {
        if self.window.is_zero() {
            return;
        }
        let Some(mut slot) = self.slot(shard) else {
            return;
        };
        if wanted() {
            return;
        }
        slot.push(Entry {
            conn,
            tenant: tenant.clone(),
            since: Instant::now(),
        });
    }

    /// `tenant`'s connection kept on `shard` most recently, if within the
    /// window. What other tenants kept there, and what is older than the
    /// window, goes back to the pool, so that the caller, if it finds none
    /// of its own, can have one from the pool.
    pub(crate) fn take(&self, shard: usize, tenant: &str) -> Option<PoolConnection<Postgres>> {
        if self.window.is_zero() {
            return None;
        }
        let now = Instant::now();
        let fresh_mine =
            |e: &Entry| &*e.tenant == tenant && now.duration_since(e.since) < self.window;
        let mut returned = Vec::new();
        let found = {
            let mut slot = self.slot(shard)?;
            let found = slot
                .iter()
                .rposition(fresh_mine)
                .map(|i| slot.swap_remove(i).conn);
            // Usually nothing else is there: no allocation then.
            if !slot.iter().all(fresh_mine) {
                let (mine, others) = std::mem::take(&mut *slot).into_iter().partition(fresh_mine);
                *slot = mine;
                returned = others;
            }
            found
        };
        drop(returned); // back to the pool, outside the lock
        found
    }

    /// Whether anything is kept on `shard`.
    pub(crate) fn holds(&self, shard: usize) -> bool {
        self.slot(shard).is_some_and(|slot| !slot.is_empty())
    }

    /// Returns to the pool what was kept longer than the window, or
    /// everything with `all`.
    pub(crate) fn sweep(&self, all: bool) {
        let now = Instant::now();
        for shard in 0..self.slots.len() {
            let returned: Vec<Entry> = match self.slot(shard) {
                Some(mut slot) if !slot.is_empty() => {
                    let (old, fresh) = std::mem::take(&mut *slot)
                        .into_iter()
                        .partition(|e| all || now.duration_since(e.since) >= self.window);
                    *slot = fresh;
                    old
                }
                _ => continue,
            };
            drop(returned);
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // Returning a connection to its pool spawns a task: without a
        // runtime (the last provider dropped outside one), close the kept
        // connections instead, as their shards are going away too.
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        for slot in &mut self.slots {
            let slot = slot.get_mut().unwrap_or_else(|e| e.into_inner());
            for entry in slot.drain(..) {
                drop(entry.conn.leak());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Kept;

    #[test]
    fn nothing_is_kept_with_a_zero_window_or_on_a_shard_out_of_range() {
        let kept = Kept::new(2, Duration::ZERO);
        assert!(kept.take(0, "a").is_none());
        assert!(!kept.holds(0));
        let kept = Kept::new(2, Duration::from_millis(100));
        assert!(kept.take(5, "a").is_none());
        assert!(!kept.holds(5));
    }
}
