//! Notifications serve other processes only: a hub alone on its database
//! spaces its batches (identical notifications pending meanwhile fold),
//! yet a listener that does not announce itself (an earlier build) still
//! hears every commit's kind of wake-up; a hub whose fetch waits announces
//! itself, and another hub then notifies it at once, whether it learned so
//! by looking or by hearing the announcement.
//!
//! Each test runs in a database of its own: the announcement is per
//! database, and every other test's hubs announce themselves in the shared
//! one.

use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;

use super::{LOCK, LONG, claimed, eventually, subscribed, waiting_fetch};
use crate::fixtures::{activity, start};
use crate::support::{
    ScratchDatabase, fresh_schema_name, in_both_modes, pool_on_database, provider_on,
};

/// Backends holding the listeners' presence key in this database.
const HOLDERS: &str = "SELECT count(*) FROM pg_catalog.pg_locks \
     WHERE locktype = 'advisory' AND classid = 1146638407 AND objid = 1 AND objsubid = 2 \
       AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())";

/// Runs `body` with a fresh database (its name, and a pool on it for
/// control statements) and a schema name, dropping the database afterwards
/// even when `body` panics.
async fn in_own_database<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(String, PgPool, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let database = ScratchDatabase::create(&fresh_schema_name(tag), 4).await;
    let outcome = std::panic::AssertUnwindSafe(body(
        database.name.clone(),
        database.pool.clone(),
        fresh_schema_name(tag),
    ))
    .catch_unwind()
    .await;
    database.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Two providers of `schema` (in `mode`) on pools of their own on `database` (two hubs,
/// as two processes would have), both subscribed.
async fn two_hubs(
    database: &str,
    schema: &str,
    mode: SqlMode,
) -> (PgPool, PostgresProvider, PgPool, PostgresProvider) {
    let (pool_a, pool_b) = (
        pool_on_database(database, 6).await,
        pool_on_database(database, 6).await,
    );
    let a = provider_on(&pool_a, schema, mode, true).await;
    let b = provider_on(&pool_b, schema, mode, true).await;
    subscribed(&a).await;
    subscribed(&b).await;
    (pool_a, a, pool_b, b)
}

/// Waits until `p` has sent every notification of the commits that returned.
async fn all_sent(p: &PostgresProvider) {
    eventually("every notification sent", || async {
        p.probe_unsent_notifications() == 0
    })
    .await;
}

/// A hub alone on its database sends its batches at most one per 100 ms:
/// twenty commits in a row cost a couple of notifications, not twenty.
/// A plain `LISTEN` on the channel, which announces nothing (as an earlier
/// build's listener), still hears the commits, the last one included.
async fn a_hub_alone_spaces_its_batches_and_an_unannounced_listener_still_hears_them(
    mode: SqlMode,
) {
    in_own_database("presence_alone", |database, control, schema| async move {
        let pool = pool_on_database(&database, 6).await;
        let p = provider_on(&pool, &schema, mode, true).await;
        subscribed(&p).await;
        let mut old_build = PgListener::connect_with(&control)
            .await
            .unwrap_or_else(|e| panic!("listen: {e}"));
        old_build
            .listen(&schema)
            .await
            .unwrap_or_else(|e| panic!("listen: {e}"));
        let before = p.notification_stats().unwrap_or_default();

        let began = Instant::now();
        for i in 0..20 {
            p.enqueue_for_orchestrator(start(&format!("alone-{i}")), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
        }
        all_sent(&p).await;
        let elapsed = began.elapsed();
        sqlx::query("SELECT pg_catalog.pg_notify($1, 'marker')")
            .bind(&schema)
            .execute(&control)
            .await
            .unwrap_or_else(|e| panic!("marker: {e}"));
        let mut heard = 0u128;
        loop {
            let n = tokio::time::timeout(LONG, old_build.recv())
                .await
                .unwrap_or_else(|_| panic!("no marker after {heard} notifications"))
                .unwrap_or_else(|e| panic!("recv: {e}"));
            if n.payload() == "marker" {
                break;
            }
            assert_eq!(n.payload(), "orchestrator");
            heard += 1;
        }

        let after = p.notification_stats().unwrap_or_default();
        let bound = 2 + elapsed.as_millis() / 100;
        assert!(heard >= 1, "the unannounced listener heard the commits");
        assert!(
            heard <= bound,
            "{heard} notifications in {elapsed:?}: at most one batch per 100 ms ({after:?})"
        );
        assert!(after.batches_alone > before.batches_alone, "{after:?}");
        assert!(after.presence_checks > before.presence_checks, "{after:?}");
        assert_eq!(
            after.local - before.local,
            20,
            "its own waiters: every commit"
        );
        drop(old_build);
        pool.close().await;
    })
    .await;
}

/// A hub whose fetch waits announces itself (it holds the presence key);
/// another hub, finding it, sends its notifications at once, and the
/// waiting fetch claims the work.
async fn a_waiting_hub_announces_itself_and_is_notified_at_once(mode: SqlMode) {
    in_own_database("presence_found", |database, control, schema| async move {
        let (pool_a, a, pool_b, b) = two_hubs(&database, &schema, mode).await;
        let holders = || async {
            sqlx::query_scalar::<_, i64>(HOLDERS)
                .fetch_one(&control)
                .await
                .unwrap_or_else(|e| panic!("pg_locks: {e}"))
        };
        assert_eq!(holders().await, 0, "no fetch has waited yet");

        let fetch = waiting_fetch(&b, LONG);
        eventually("the waiting hub holds the key", || async {
            holders().await == 1
        })
        .await;
        let before = a.notification_stats().unwrap_or_default();
        a.enqueue_for_orchestrator(start("found"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        assert_eq!(claimed(fetch).await.as_deref(), Some("found"));
        all_sent(&a).await;
        let after = a.notification_stats().unwrap_or_default();
        assert!(after.sent > before.sent, "{after:?}");
        assert_eq!(
            after.batches_alone, before.batches_alone,
            "sent at once, another listener being known: {after:?}"
        );
        pool_a.close().await;
        pool_b.close().await;
    })
    .await;
}

/// A hub that found itself alone hears another hub announce itself and
/// notifies it at once from then on, without waiting to look again.
async fn a_hub_that_was_alone_hears_an_announcement(mode: SqlMode) {
    in_own_database("presence_hello", |database, _control, schema| async move {
        let (pool_a, a, pool_b, b) = two_hubs(&database, &schema, mode).await;
        a.enqueue_for_orchestrator(start("first"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        all_sent(&a).await;
        let alone = a.notification_stats().unwrap_or_default();
        assert_eq!(alone.batches_alone, 1, "nobody waited anywhere: {alone:?}");

        // A worker of b waits (the queued turn is not for it), so b announces itself.
        let worker = {
            let b = b.clone();
            tokio::spawn(async move {
                b.fetch_work_item(LOCK, LONG, None, &TagFilter::Any)
                    .await
                    .unwrap_or_else(|e| panic!("fetch: {e}"))
                    .map(|(item, _, _)| item)
            })
        };
        eventually("a heard b's announcement", || async {
            a.notification_stats().unwrap_or_default().hellos > alone.hellos
        })
        .await;
        a.enqueue_for_worker(activity("hello", 1))
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        // Not woken, it would time out after LONG and claim nothing.
        let item = worker.await.unwrap_or_else(|e| panic!("join: {e}"));
        assert_eq!(item, Some(activity("hello", 1)));
        all_sent(&a).await;
        let after = a.notification_stats().unwrap_or_default();
        assert_eq!(
            after.batches_alone, alone.batches_alone,
            "sent at once after the announcement: {after:?}"
        );
        pool_a.close().await;
        pool_b.close().await;
    })
    .await;
}

in_both_modes!(a_hub_alone_spaces_its_batches_and_an_unannounced_listener_still_hears_them:
    a_hub_alone_spaces_its_batches_and_an_unannounced_listener_still_hears_them_procedures,
    a_hub_alone_spaces_its_batches_and_an_unannounced_listener_still_hears_them_inline);

in_both_modes!(a_waiting_hub_announces_itself_and_is_notified_at_once:
    a_waiting_hub_announces_itself_and_is_notified_at_once_procedures,
    a_waiting_hub_announces_itself_and_is_notified_at_once_inline);

in_both_modes!(a_hub_that_was_alone_hears_an_announcement:
    a_hub_that_was_alone_hears_an_announcement_procedures,
    a_hub_that_was_alone_hears_an_announcement_inline);
