//! Which tests run side by side: each takes a [`Slot`] of its [`Kind`]
//! before it starts.

use std::sync::OnceLock;

/// What a test does to the machine, for [`Slot`]: which tests it may run
/// alongside, and how many of its kind at once.
///
/// Two reasons to keep tests apart. duroxide's `race_replay` module and the
/// transition-delivery test run runtimes polling every 10 ms against 2 s
/// backoffs and 10 s deadlines; with every variant of them at once on two
/// cores they starve each other past those deadlines, so they take turns.
/// And the `instance_locking` and `lock_expiration` modules assert lease
/// expiry with 100-200 ms margins (a lock taken "now" must be free
/// `lock_timeout + 100 ms` later). Measured on a 2-core machine during a
/// whole-suite run, a task that wakes up took 50-150 ms to get a statement
/// executed, about once a second: enough to eat such a margin (a fresh-clone
/// CI run failed `test_multi_threaded_lock_expiration_recovery` that way).
/// So those run only among themselves: a waiting one keeps every other
/// suite test from starting, and starts once the running ones are done.
/// Three `sessions` tests join them: they require a statement to follow the
/// previous one within 200 ms (an idle window) or 400 ms (a session lock
/// renewed at 0.6 s of 1 s), and a whole-suite run failed two of them at
/// once that way. The module's other tests sleep past an expiry before they
/// check, which a late wake-up cannot break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any other suite test (or differential case): no limit, but never
    /// alongside [`Kind::LockTiming`].
    Suite,
    /// `instance_locking` and `lock_expiration` tests, the `sessions`
    /// tests with a deadline and the `long_polling` tests that bound an
    /// empty fetch's duration: eight at a time, alone.
    LockTiming,
    /// `race_replay` factory tests: three at a time.
    RaceReplay,
    /// `test_continue_as_new_transition_delivery` (seven scenarios, each a
    /// runtime of its own and a start delayed 2 s, about 20 s a test
    /// alone, mostly waiting): two at a time. Their names sort near the
    /// end, so they run last, while little else does; one at a time, their
    /// eight variants made a tail of nearly three minutes with the machine
    /// mostly idle.
    TransitionDelivery,
    /// Our own tests that drive duroxide runtimes under load: two at a time.
    Runtime,
}

const KINDS: [Kind; 5] = [
    Kind::Suite,
    Kind::LockTiming,
    Kind::RaceReplay,
    Kind::TransitionDelivery,
    Kind::Runtime,
];

impl Kind {
    /// The kind of a factory-suite test, by module and name.
    pub fn of_suite_test(module: &str, test: &str) -> Kind {
        match (module, test) {
            ("race_replay", _) => Kind::RaceReplay,
            ("instance_locking" | "lock_expiration", _) => Kind::LockTiming,
            // An empty fetch must return within 200 ms of its poll timeout,
            // or within 500 ms when short polling: a stall on a busy machine
            // (a fresh pool's first connection included) can take that.
            (
                "long_polling",
                "test_fetch_respects_timeout_upper_bound"
                | "test_short_poll_returns_immediately"
                | "test_short_poll_work_item_returns_immediately",
            ) => Kind::LockTiming,
            (
                "sessions",
                "test_ack_updates_session_last_activity"
                | "test_renew_work_item_updates_session_last_activity"
                | "test_session_lock_renewal_extends_past_original_timeout",
            ) => Kind::LockTiming,
            _ => Kind::Suite,
        }
    }

    /// How many of this kind may run at once.
    fn limit(self) -> usize {
        match self {
            Kind::Suite => usize::MAX,
            Kind::LockTiming => 8,
            Kind::RaceReplay => 3,
            Kind::TransitionDelivery => 2,
            Kind::Runtime => 2,
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Tests running per kind, and lock-timing tests waiting for the rest to end.
#[derive(Default)]
struct Slots {
    running: [usize; KINDS.len()],
    timing_waiting: usize,
}

impl Slots {
    fn may_start(&self, kind: Kind) -> bool {
        let timing = self.running[Kind::LockTiming.index()];
        let others: usize = self.running.iter().sum::<usize>() - timing;
        self.running[kind.index()] < kind.limit()
            && match kind {
                Kind::LockTiming => others == 0,
                _ => timing == 0 && self.timing_waiting == 0,
            }
    }
}

fn slots() -> &'static (std::sync::Mutex<Slots>, std::sync::Condvar) {
    static SLOTS: OnceLock<(std::sync::Mutex<Slots>, std::sync::Condvar)> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// A running test's place among the others of its [`Kind`], released on
/// drop. A test takes at most one (two could deadlock).
pub struct Slot(Kind);

impl Slot {
    /// Waits (blocking this test's thread) until a test of `kind` may start.
    pub fn acquire(kind: Kind) -> Self {
        let wait = || {
            let (slots, changed) = slots();
            let mut state = slots.lock().unwrap_or_else(|e| e.into_inner());
            let timing = kind == Kind::LockTiming;
            if timing {
                state.timing_waiting += 1;
            }
            while !state.may_start(kind) {
                state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if timing {
                state.timing_waiting -= 1;
            }
            state.running[kind.index()] += 1;
        };
        // Blocking a multi-threaded runtime's worker needs `block_in_place`;
        // a test without a runtime (or with a current-thread one, which has
        // nothing else to run yet) just blocks.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
        Slot(kind)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (slots, changed) = slots();
        let mut state = slots.lock().unwrap_or_else(|e| e.into_inner());
        let running = &mut state.running[self.0.index()];
        *running = running.saturating_sub(1);
        changed.notify_all();
    }
}
