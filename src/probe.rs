//! Test hooks: one long-polling fetch attempt, with what long polling learns
//! from it, so the differential test can compare both SQL modes on values
//! the `Provider` trait does not return. Hidden from the documentation; not
//! part of the supported API.

use std::time::Duration;

use duroxide::providers::{OrchestrationItem, WorkItem};

use crate::codec;
use crate::error::Result;
use crate::notify::Polled;
use crate::provider::PostgresProvider;
use crate::{orchestration_queue, worker_queue};

/// What one fetch statement reported to long polling: the claimed item, if
/// any; whether it saw more claimable work (only with an item); and the
/// milliseconds until a delayed item or an expiring lease may make work
/// claimable (`Some(0)`: look again now).
#[doc(hidden)]
#[derive(Debug)]
pub struct FetchProbe<T> {
    /// The claimed item: (item, lock token, attempts).
    pub item: Option<T>,
    /// Another fetch could claim something right now.
    pub more: bool,
    /// The next due time the fetch reported.
    pub next_due_ms: Option<i64>,
}

impl<T> From<Polled<T>> for FetchProbe<T> {
    fn from(polled: Polled<T>) -> Self {
        match polled {
            Polled::Found {
                item,
                more,
                next_due_ms,
            } => Self {
                item: Some(item),
                more,
                next_due_ms,
            },
            Polled::Empty { next_due_ms } => Self {
                item: None,
                more: false,
                next_due_ms,
            },
        }
    }
}

impl PostgresProvider {
    /// Test hook: one orchestration fetch attempt as a long-polling fetch
    /// without a capability filter makes it (next due time asked for,
    /// completions settling for `settle`), without waiting and without
    /// touching the notification state.
    #[doc(hidden)]
    pub async fn probe_fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        settle: Duration,
    ) -> Result<FetchProbe<(OrchestrationItem, String, u32)>> {
        let params = orchestration_queue::FetchParams {
            lock_timeout,
            has_filter: false,
            bounds: [None; 6],
            next_due: true,
            settle_ms: codec::millis(settle),
            orphan_retention_ms: self.store.limits.orphan_retention_ms,
            max_history_bytes: self.store.limits.max_history_bytes,
            max_batch_bytes: self.store.limits.max_batch_bytes,
        };
        Ok(orchestration_queue::fetch_once(&self.store, params)
            .await?
            .into())
    }

    /// Test hook: one work-item fetch attempt as a long-polling fetch of
    /// untagged items makes it (next due time asked for), for the session
    /// owner and session lease in `session` (or items without a session),
    /// without waiting and without touching the notification state.
    #[doc(hidden)]
    pub async fn probe_fetch_work_item(
        &self,
        lock_timeout: Duration,
        session: Option<(&str, Duration)>,
    ) -> Result<FetchProbe<(WorkItem, String, u32)>> {
        let params = worker_queue::FetchParams {
            lock_timeout,
            tag_mode: "default",
            tags: Vec::new(),
            owner: session.map(|(owner, _)| owner.to_string()),
            session_lock: session.map(|(_, lease)| lease),
            next_due: true,
            history_bytes: None,
        };
        Ok(worker_queue::fetch_once(&self.store, &params)
            .await?
            .map(|c| Ok((c.item, c.token, c.attempts)))?
            .into())
    }

    /// Test hook: forgets both queues' scan floors, so the next fetch of
    /// each scans its whole queue (for tests that move visibility times
    /// back behind the provider's back; `crate::scan_floor`).
    #[doc(hidden)]
    pub fn probe_forget_scan_floors(&self) {
        self.store.floors.orchestrator.forget();
        self.store.floors.worker.forget();
    }

    /// Test hook: notifications this provider's pool has posted for other
    /// processes and not sent yet (queued, or in a send that has not
    /// returned). Zero means every notification of a commit that returned
    /// has been sent, so a notification sent afterwards arrives after them.
    #[doc(hidden)]
    pub fn probe_unsent_notifications(&self) -> usize {
        self.store.unsent_notifications()
    }
}
