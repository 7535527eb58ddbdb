//! Whether any other process listens: notifications only serve others.
//!
//! A pool's own waiters are woken at the commit, without a round trip
//! ([`super::LongPoll::committed`]); the notification the hub then sends is
//! for other processes (and other pools of this one). A runtime that is
//! alone on its database (the common deployment: one process, or one per
//! database) sent every one of them for nothing: a transaction of its own on
//! the listening connection, and the echo back to that connection, several
//! per orchestration.
//!
//! So a hub whose waiters need notifications says so: once one of its
//! fetches waits ([`super::Shared::wants_wakes`]), its listening connection
//! holds a shared advisory lock on [`KEY`] for as long as it lives (unless
//! a session holds the key exclusively: then the others see that one), and
//! announces itself ([`HELLO`]) on every channel it listens to. A hub that
//! has notifications to send looks, at most once every [`RECHECK`] and only
//! while it has something to send (an idle hub sends no statement), for
//! that lock held by any other backend ([`OTHERS`]); a `HELLO` from another
//! connection tells it at once. While nobody else is known to listen it
//! still sends, but at most one batch per [`ALONE_INTERVAL`] (identical
//! notifications pending meanwhile fold into one): a listener that does not
//! announce itself (a build before this one, during a rolling upgrade) or
//! that the hub has not heard of yet is woken that much later at most,
//! never left to its poll timeout.
//!
//! The lock is only ever read, never waited for: a role that takes the key
//! itself (any role can), or forges a `HELLO`, makes the hubs send at once,
//! as before; no other session can hide a listener that announced itself.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::time::Instant;

use crate::error::PostgresProviderError;

/// The advisory lock key (two `int4`s, so it shares no key space with
/// single-`bigint` locks): "DXPG" and 1, for "a listening connection".
pub(super) const KEY: (i32, i32) = (0x4458_5047, 1);

/// Takes the key, shared, for the session, if no session holds it
/// exclusively (any role may take a key: waiting for it would let one stop
/// this connection from listening); whether it was taken
/// (`notify/advertise.sql`).
pub(super) const ADVERTISE: &str = include_str!("../../notify/advertise.sql");

/// Whether a backend other than this one holds the key (`$1`, `$2`) in
/// this database (`notify/others.sql`). Like every statement of the
/// listening connection, it names itself first (`pg_stat_activity` shows
/// it as the listener).
pub(super) const OTHERS: &str = include_str!("../../notify/others.sql");

/// The payload a hub sends on its channels when it starts to need
/// notifications (earlier builds ignore it: not a wake-up they know).
pub(super) const HELLO: &str = "hello";

/// How long what [`OTHERS`] answered is trusted.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

/// Least time between two batches while no other listener is known.
pub(super) const ALONE_INTERVAL: Duration = Duration::from_millis(100);

/// What a hub knows about other listening processes.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Another listener was seen (lock or hello) at the last look.
    others: bool,
    /// When it was last learned; `None`: never.
    learned: Option<Instant>,
    /// When the last batch was sent.
    last_send: Option<Instant>,
    /// Looking has failed for good (no right to read `pg_locks`): send at
    /// once, as if others listened, and stop looking.
    given_up: bool,
}

impl Presence {
    /// Whether [`OTHERS`] should be asked again before sending at `now`.
    pub(super) fn stale(&self, now: Instant) -> bool {
        !self.given_up
            && self
                .learned
                .is_none_or(|at| now.saturating_duration_since(at) >= RECHECK)
    }

    /// What [`OTHERS`] answered at `now`.
    pub(super) fn looked(&mut self, others: bool, now: Instant) {
        self.others = others;
        self.learned = Some(now);
    }

    /// Another connection said hello at `now`.
    pub(super) fn heard(&mut self, now: Instant) {
        self.looked(true, now);
    }

    /// [`OTHERS`] cannot be answered: behave as if others listened.
    pub(super) fn give_up(&mut self) {
        self.given_up = true;
        self.others = true;
    }

    /// When the next batch may go: at once (`None`) while others are known
    /// to listen, else [`ALONE_INTERVAL`] after the last one.
    pub(super) fn hold_until(&self) -> Option<Instant> {
        if self.others {
            return None;
        }
        self.last_send.map(|at| at + ALONE_INTERVAL)
    }

    /// Whether no other listener is known.
    pub(super) fn alone(&self) -> bool {
        !self.others
    }

    /// A batch went out at `now`.
    pub(super) fn sent(&mut self, now: Instant) {
        self.last_send = Some(now);
    }
}

/// A statement's outcome on the listening connection: the connection's
/// loss is an error (the caller reconnects); any other refusal (a right
/// revoked) is logged as `what` and read as no answer (`None`).
fn unless_refused<T>(
    outcome: std::result::Result<T, sqlx::Error>,
    what: &str,
) -> Result<Option<T>, PostgresProviderError> {
    match outcome.map_err(PostgresProviderError::from) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "duroxide-postgres: {what}");
            Ok(None)
        }
    }
}

/// Takes [`KEY`] on the listening connection (`take`) and says [`HELLO`]
/// on `channels`. A refusal other than the connection's is logged and
/// skipped: the hub then listens unannounced, and others' notifications
/// reach it at the pace of [`ALONE_INTERVAL`].
pub(super) async fn announce(
    listener: &mut PgListener,
    take: bool,
    channels: &[String],
) -> Result<(), PostgresProviderError> {
    const REFUSED: &str = "the listener cannot announce itself";
    if take {
        let taken = sqlx::query_scalar::<_, bool>(ADVERTISE)
            .bind(KEY.0)
            .bind(KEY.1)
            .fetch_one(&mut *listener)
            .await;
        if unless_refused(taken, REFUSED)? == Some(false) {
            tracing::debug!("duroxide-postgres: the listener key is held exclusively");
        }
    }
    if !channels.is_empty() {
        let said = sqlx::query(super::outbox::SEND)
            .bind(channels)
            .bind(vec![HELLO; channels.len()])
            .execute(&mut *listener)
            .await;
        unless_refused(said, REFUSED)?;
    }
    Ok(())
}

/// Asks [`OTHERS`] on the listening connection when `presence` is stale
/// and records the answer; whether it asked. Only the connection's loss is
/// an error; a refusal makes the hub send at once from then on.
pub(super) async fn look(
    listener: &mut PgListener,
    presence: &mut Presence,
) -> Result<bool, PostgresProviderError> {
    let now = Instant::now();
    if !presence.stale(now) {
        return Ok(false);
    }
    let others = sqlx::query_scalar::<_, bool>(OTHERS)
        .bind(KEY.0)
        .bind(KEY.1)
        .fetch_one(&mut *listener)
        .await;
    let refused = "cannot tell whether other processes listen; notifying at once";
    match unless_refused(others, refused)? {
        Some(others) => presence.looked(others, now),
        None => presence.give_up(),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_batches_are_spaced_and_others_are_sent_to_at_once() {
        let now = Instant::now();
        let mut presence = Presence::default();
        assert!(presence.stale(now), "never looked");
        assert_eq!(presence.hold_until(), None, "nothing sent yet");
        presence.looked(false, now);
        presence.sent(now);
        assert_eq!(presence.hold_until(), Some(now + ALONE_INTERVAL));
        assert!(!presence.stale(now + RECHECK / 2));
        assert!(presence.stale(now + RECHECK));
        presence.heard(now + RECHECK / 2);
        assert_eq!(presence.hold_until(), None);
        assert!(!presence.stale(now + RECHECK));
    }

    #[test]
    fn a_hub_that_cannot_look_sends_at_once_for_good() {
        let now = Instant::now();
        let mut presence = Presence::default();
        presence.looked(false, now);
        presence.sent(now);
        presence.give_up();
        assert_eq!(presence.hold_until(), None);
        assert!(!presence.stale(now + RECHECK * 10));
    }
}
