//! The listening task of a [`Hub`](super::Hub): one connection, in a pool
//! of its own, that subscribes to the channel of every schema with a
//! provider on the pool, dispatches what it hears, sends the pool's outbox
//! and keeps itself alive (the module documentation of [`super`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool};

use super::waiters::SchemaWaiters;
use tokio::time::Instant;

use super::{Shared, later, presence};

/// The listening connection's first statement (`notify/keep_session.sql`):
/// turns the server's `idle_session_timeout` (PostgreSQL 14 and later) off
/// for this session, which is idle by design, so the server does not end it
/// every time it has been silent that long, and reads the session's process
/// id (the notifications it sends come back to it with that id). Every
/// connection the listener uses is made here (sqlx's `PgListener`
/// reconnects by itself only after `try_recv` has reported the loss, and the
/// task drops it then), so each one gets it.
pub(super) const KEEP_SESSION: &str = include_str!("../../notify/keep_session.sql");

/// The keepalive (`notify/keepalive.sql`): a query of nothing but a comment,
/// a round trip that runs no statement (the server answers
/// `EmptyQueryResponse`; `pg_stat_statements` does not count it), and that
/// names itself in `pg_stat_activity`, where the listener's last `LISTEN`
/// showed before.
pub(super) const KEEPALIVE: &str = include_str!("../../notify/keepalive.sql");

/// First and longest pause between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// The listening task: connect, subscribe, dispatch, subscribe schemas that
/// join meanwhile on the same connection and unsubscribe those whose last
/// provider left; on loss, reconnect with back-off and wake everyone to
/// check again.
pub(super) async fn listen(shared: Arc<Shared>, pool: PgPool) {
    let mut backoff = BACKOFF.0;
    let mut presence = presence::Presence::default();
    loop {
        if pool.is_closed() {
            shared.connected.store(false, Ordering::Relaxed);
            shared.wake_all();
            return;
        }
        let schemas = shared.schemas();
        let own = own_pool(&pool);
        // Bounded as a keepalive is: a server that accepts the connection
        // and then stops answering must not hold the loop.
        let connected = crate::pooler::answered(shared.keepalive(), async {
            let mut listener = PgListener::connect_with(&own).await?;
            listener.eager_reconnect(false);
            let pid: i32 = sqlx::query_scalar(KEEP_SESSION)
                .fetch_one(&mut listener)
                .await?;
            // Known before this connection sends anything.
            shared
                .own_pid
                .store(u32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
            listener
                .listen_all(schemas.iter().map(|(name, _)| name.as_str()))
                .await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await;
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(_) if pool.is_closed() => {
                retire(own);
                continue;
            }
            Err(e) => {
                retire(own);
                tracing::warn!(error = %e, retry_in = ?backoff, "duroxide-postgres: LISTEN connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        };
        backoff = BACKOFF.0;
        let mut listening: HashSet<String> = schemas.iter().map(|(name, _)| name.clone()).collect();
        shared.channels.store(listening.len(), Ordering::Relaxed);
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        shared.connected.store(true, Ordering::Relaxed);
        // Subscribed now: whatever was committed before is fetched right away.
        subscribed(&schemas);
        let mut heard = Instant::now();
        // Whether this connection holds the presence key (see `presence`).
        let mut announced = false;
        // The pool served closing stops the listener (its own pool never closes by itself).
        let closing = pool.close_event();
        tokio::pin!(closing);
        let reason = loop {
            if !announced && shared.wants_wakes.load(Ordering::SeqCst) {
                let channels: Vec<String> = listening.iter().cloned().collect();
                let announce = presence::announce(&mut listener, true, &channels);
                if let Err(e) = crate::pooler::answered(shared.keepalive(), announce).await {
                    break e.to_string();
                }
                announced = true;
            }
            // While nobody else is known to listen, batches are spaced.
            let hold = presence.hold_until();
            let outbox = &shared.outbox;
            let ready = async move {
                outbox.wait().await;
                if let Some(at) = hold {
                    tokio::time::sleep_until(at).await;
                }
            };
            let keepalive = shared.keepalive();
            let keepalive_at = keepalive.map_or_else(
                || later(heard, Duration::MAX),
                |interval| later(heard, interval),
            );
            tokio::select! {
                _ = &mut closing => break "pool closed".to_string(),
                message = listener.try_recv() => match message {
                    Ok(Some(n)) => {
                        heard = Instant::now();
                        // Another listener announcing itself: no wake-up
                        // (its own, coming back, is an echo like any other).
                        if n.payload() == presence::HELLO
                            && n.process_id() != shared.own_pid.load(Ordering::SeqCst)
                        {
                            presence.heard(heard);
                            shared.hellos.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.received(n.channel(), n.payload(), n.process_id());
                        }
                    }
                    Ok(None) => break "connection lost".to_string(),
                    Err(e) => break e.to_string(),
                },
                // Silent for a keepalive interval: make sure the server is
                // still there (a dropped TCP connection can stay silent
                // forever). Notifications arriving meanwhile are buffered
                // for the next `try_recv`.
                _ = tokio::time::sleep_until(keepalive_at), if keepalive.is_some() => {
                    let wait = keepalive.unwrap_or(BACKOFF.1);
                    match tokio::time::timeout(wait, listener.execute(KEEPALIVE)).await {
                        Ok(Ok(_)) => {
                            heard = Instant::now();
                            shared.keepalives.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("no answer to a keepalive within {wait:?}"),
                    }
                }
                // This pool's commits posted notifications for other
                // processes: send them, batched, on this connection.
                _ = ready => {
                    // Bounded as a keepalive is: a connection that stopped
                    // answering must not hold the loop (and with it the
                    // keepalive that would notice).
                    let looked = crate::pooler::answered(
                        keepalive,
                        presence::look(&mut listener, &mut presence),
                    )
                    .await;
                    match looked {
                        Ok(looked) => {
                            if looked {
                                shared.presence_checks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => break e.to_string(),
                    }
                    // Just learned that nobody else listens: wait for the spacing.
                    if presence.hold_until().is_some_and(|at| at > Instant::now()) {
                        continue;
                    }
                    let alone = presence.alone();
                    if alone {
                        shared.batches_alone.fetch_add(1, Ordering::Relaxed);
                    }
                    let flushed = shared.outbox.flush(&mut listener, true, alone, keepalive).await;
                    presence.sent(Instant::now());
                    match flushed {
                        Ok(()) => heard = Instant::now(),
                        Err(e) if e.is_retryable() => break e.to_string(),
                        Err(e) => tracing::warn!(error = %e, "duroxide-postgres: notifications not sent"),
                    }
                }
                // Cancelling `try_recv` loses nothing: sqlx (0.8, 0.9) leaves a
                // partly read message in the connection's buffer, and
                // notifications arriving during the `LISTEN` or `UNLISTEN`
                // are buffered for the next `try_recv`.
                _ = shared.changed.notified() => {
                    let current = shared.schemas();
                    let left: Vec<String> = listening
                        .iter()
                        .filter(|name| !current.iter().any(|(n, _)| n == *name))
                        .cloned()
                        .collect();
                    let joined: Vec<_> = current
                        .into_iter()
                        .filter(|(_, waiters)| !waiters.subscribed.load(Ordering::SeqCst))
                        .collect();
                    let changes = resubscribe(&mut listener, &mut listening, &left, &joined);
                    if let Err(e) = crate::pooler::answered(keepalive, changes).await {
                        break e.to_string();
                    }
                    // A listener that announced itself says hello on the
                    // channels it joins (one that has not yet does so on all
                    // of them at the top of the loop).
                    if announced && !joined.is_empty() {
                        let channels: Vec<String> = joined.iter().map(|(name, _)| name.clone()).collect();
                        let announce = presence::announce(&mut listener, false, &channels);
                        if let Err(e) = crate::pooler::answered(keepalive, announce).await {
                            break e.to_string();
                        }
                    }
                    shared.channels.store(listening.len(), Ordering::Relaxed);
                    heard = Instant::now();
                    subscribed(&joined);
                }
            }
        };
        shared.connected.store(false, Ordering::Relaxed);
        shared.channels.store(0, Ordering::Relaxed);
        // Waiters fall back to polling until the listener is back.
        for (_, waiters) in shared.schemas() {
            waiters.subscribed.store(false, Ordering::SeqCst);
            waiters.wake_all();
        }
        drop(listener);
        retire(own);
        if pool.is_closed() {
            // The application closed the pool: nothing was lost, and
            // nothing will come back.
            tracing::debug!(%reason, "duroxide-postgres: pool closed; listener stopped");
            return;
        }
        tracing::warn!(%reason, "duroxide-postgres: LISTEN connection lost; polling until it is back");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// A pool of one connection for one listening connection, made with
/// `pool`'s connection settings (not its `after_connect` hook, which a
/// listener does not need: it reads no table). A new one per connection,
/// so a listener given up on holds nothing a replacement needs.
pub(super) fn own_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Closes a listener's own pool once its connection is back: at once for
/// a sound one (after sqlx's `UNLISTEN *`), when TCP gives up for a silent
/// one, on a task of its own either way.
fn retire(own: PgPool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { own.close().await });
    }
}

/// Stops listening to the schemas that `left` and listens to those that
/// `joined` (a schema that left and joined again is listened to anew: a
/// second `LISTEN` of a channel is harmless), on the live connection.
async fn resubscribe(
    listener: &mut PgListener,
    listening: &mut HashSet<String>,
    left: &[String],
    joined: &[(String, Arc<SchemaWaiters>)],
) -> std::result::Result<(), sqlx::Error> {
    for name in left {
        listener.unlisten(name).await?;
        listening.remove(name);
    }
    if !joined.is_empty() {
        listener
            .listen_all(joined.iter().map(|(name, _)| name.as_str()))
            .await?;
        listening.extend(joined.iter().map(|(name, _)| name.clone()));
    }
    Ok(())
}

/// Marks `schemas` subscribed and wakes their waiters, so work committed
/// before the subscription took effect is fetched now, not at a timeout.
fn subscribed(schemas: &[(String, Arc<SchemaWaiters>)]) {
    for (_, waiters) in schemas {
        waiters.subscribed.store(true, Ordering::SeqCst);
        waiters.wake_all();
    }
}
