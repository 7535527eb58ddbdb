//! Where a fetch's scan of a queue starts: a lower bound ("floor") on the
//! visibility time of every message the queue holds.
//!
//! A fetch reads its queue's visibility index in order and takes the first
//! message it may run. The messages it delivered are deleted, but while any
//! session in the database holds an older snapshot (a transaction left open
//! in `psql`, a long report, `pg_dump`), PostgreSQL can neither remove those
//! rows nor mark their index entries dead, so a scan from the index's first
//! entry walks every message delivered since the snapshot began, on every
//! fetch of every tenant (docs/benchmarks.md, "A snapshot held in the
//! database").
//!
//! So a fetch starts at a floor instead. A fetch made once the floor is
//! [`MOVE`] old also returns the next floor: the least of the oldest
//! message's visibility time at or above the floor it scanned from and its
//! own clock, minus [`MARGIN`] (one more walk from the floor, so not every
//! fetch makes it). Every [`RESCAN`], a fetch scans from the index's first
//! entry instead.
//!
//! Why no message is lost, and none waits long:
//!
//! * every message the scan saw at or above the floor is at or above the
//!   next floor;
//! * a message committed after the scan is visible from the clock its
//!   writer read, at most the writer's time to commit before the scan's
//!   clock: within [`MARGIN`] unless the writer stalled that long between
//!   reading the clock and committing;
//! * a timer's visibility is the runtime's fire time, which can be long
//!   past when the turn that schedules it commits: the ack writes it as no
//!   earlier than the database's clock
//!   (`statements/ack_orchestration_item/enqueue_orchestrator.sql`);
//! * what slips below the floor anyway (a stalled writer, a row written
//!   behind the provider's back, the server's clock stepped back) is found
//!   by the next full scan (the first fetch once the last one is [`RESCAN`]
//!   old; a long-polling fetcher may sleep until its poll timeout or a
//!   notification first), and stays above the floors computed after it. A fetch that scanned from a floor another
//!   fetch has replaced meanwhile does not set its own, so a floor lowered
//!   by a full scan is never raised past what it found.
//!
//! While a snapshot is held, a fetch walks what was delivered in the last
//! [`MARGIN`] and [`MOVE`] or so (since the oldest message still queued, if
//! older), instead of everything delivered since the snapshot began; a full
//! scan every [`RESCAN`] still walks it all.
//!
//! A message that stays in the queue (the messages of an instance leased by
//! a long turn, a message no dispatcher's capability filter or tags match)
//! keeps the floor at its own visibility time: the scan then walks what was
//! delivered since, as it did without a floor, and no more. A running
//! activity does not: a locked item's visibility time is when its lock ends
//! (`statements/fetch_work_item/claim.sql`).
//!
//! The floor is per store (one tenant in one process) and per queue; each
//! process keeps its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far below a scan's reading the next floor is set: covers writers
/// that read the clock before that scan and commit after it.
pub(crate) const MARGIN: Duration = Duration::from_secs(1);

/// How old a floor is when a fetch computes the next one.
pub(crate) const MOVE: Duration = Duration::from_secs(1);

/// How often a fetch scans the whole queue, for what slipped below a floor.
pub(crate) const RESCAN: Duration = Duration::from_secs(10);

/// [`MARGIN`] in milliseconds, as the candidate statements take it.
const MARGIN_MS: i64 = MARGIN.as_millis() as i64;

/// One queue's floor (ms since the epoch), when it was set, and when the
/// last full scan started.
#[derive(Default)]
pub(crate) struct ScanFloor(Mutex<Option<State>>);

#[derive(Clone, Copy)]
struct State {
    floor: i64,
    moved: Instant,
    full_scan: Instant,
}

impl ScanFloor {
    /// Where a fetch starting now scans from (`None`: the whole queue).
    pub(crate) fn start(&self) -> Scan {
        let now = Instant::now();
        let state = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(s) if now.duration_since(s.full_scan) < RESCAN => Scan {
                floor: Some(s.floor),
                next: now.duration_since(s.moved) >= MOVE,
                started: now,
            },
            _ => Scan {
                floor: None,
                next: true,
                started: now,
            },
        }
    }

    /// Forgets the floor: the next fetch scans the whole queue.
    pub(crate) fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records the next floor a fetch's `scan` returned: a full scan's
    /// unless a later full scan set one already; a floored scan's only if
    /// the floor it scanned from is still the current one.
    pub(crate) fn set(&self, scan: Scan, next: Option<i64>) {
        let Some(next) = next else {
            return;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (scan.floor, *state) {
            (None, None) => {}
            (None, Some(current)) if current.full_scan <= scan.started => {}
            (Some(from), Some(current)) if current.floor == from => {
                *state = Some(State {
                    floor: next,
                    moved: scan.started,
                    ..current
                });
                return;
            }
            _ => return,
        }
        *state = Some(State {
            floor: next,
            moved: scan.started,
            full_scan: scan.started,
        });
    }
}

/// A fetch's view of its queue's floor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scan {
    /// Where the scan starts (`None`: at the index's first entry).
    pub floor: Option<i64>,
    /// Whether the fetch computes the next floor.
    next: bool,
    started: Instant,
}

impl Scan {
    /// The candidate statements' `p_next_floor_margin_ms`: the margin when
    /// this fetch computes the next floor, else `None`.
    pub(crate) fn next_floor_margin_ms(&self) -> Option<i64> {
        self.next.then_some(MARGIN_MS)
    }
}

/// The floors of a store's two queues.
#[derive(Default)]
pub(crate) struct ScanFloors {
    /// `orchestrator_queue`.
    pub orchestrator: ScanFloor,
    /// `worker_queue`.
    pub worker: ScanFloor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scan_moves_the_floor_until_a_full_scan_is_due() {
        let floors = ScanFloor::default();
        let first = floors.start();
        assert_eq!(first.floor, None, "no floor before a full scan");
        floors.set(first, Some(1_000));
        let second = floors.start();
        assert_eq!(second.floor, Some(1_000));
        assert_eq!(
            second.next_floor_margin_ms(),
            None,
            "moved less than MOVE ago"
        );
        floors.set(second, Some(1_500));
        assert_eq!(floors.start().floor, Some(1_500), "a floored scan moves it");
        floors.set(floors.start(), None);
        assert_eq!(
            floors.start().floor,
            Some(1_500),
            "no next floor: unchanged"
        );

        let floors = ScanFloor::default();
        let Some(long_ago) = Instant::now().checked_sub(RESCAN) else {
            return; // the machine booted less than RESCAN ago
        };
        floors.set(
            Scan {
                floor: None,
                next: true,
                started: long_ago,
            },
            Some(5),
        );
        assert_eq!(floors.start().floor, None, "a full scan is due");
    }

    #[test]
    fn a_floor_lowered_by_a_full_scan_is_not_raised_by_an_older_scan() {
        let floors = ScanFloor::default();
        floors.set(floors.start(), Some(1_000));
        let floored = floors.start();
        assert_eq!(floored.floor, Some(1_000));
        // A full scan finds a message below the floor and lowers it ...
        let full = Scan {
            floor: None,
            next: true,
            started: Instant::now(),
        };
        floors.set(full, Some(400));
        // ... and the scan from the old floor, ending later, keeps out.
        floors.set(floored, Some(1_800));
        assert_eq!(floors.start().floor, Some(400));
    }

    #[test]
    fn an_older_full_scan_never_replaces_a_newer_one() {
        let floors = ScanFloor::default();
        let older = Scan {
            floor: None,
            next: true,
            started: Instant::now(),
        };
        let newer = Scan {
            floor: None,
            next: true,
            started: older.started + Duration::from_millis(1),
        };
        floors.set(newer, Some(2_000));
        floors.set(older, Some(1_000));
        assert_eq!(floors.start().floor, Some(2_000));
    }
}
