//! The listening connection stays up through the server's
//! `idle_session_timeout`, and a listener whose server stops answering is
//! noticed by its keepalive and replaced; closing the pool stops its
//! listener without a warning.

use std::time::Duration;

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;

use super::{
    LONG, claimed, eventually, listeners, subscribed, tagged_pool, waiting_fetch, with_schemas,
};
use crate::fixtures::start;
use crate::support::{database_url, provider_on};

/// A pool tagged `application_name` whose sessions the server ends after
/// one second idle.
async fn idle_ending_pool(application_name: &str) -> PgPool {
    let options: PgConnectOptions = database_url()
        .parse::<PgConnectOptions>()
        .unwrap_or_else(|e| panic!("{e}"))
        .application_name(application_name)
        .options([("idle_session_timeout", "1000")]);
    PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A long-polling provider in `mode` on `schema` over `pool`, with
/// `keepalive` as its listener keepalive.
async fn listening_provider(
    pool: &PgPool,
    schema: &str,
    mode: SqlMode,
    keepalive: Duration,
) -> PostgresProvider {
    let options = PostgresOptions::default()
        .schema(schema)
        .sql_mode(mode)
        .listener_keepalive(keepalive);
    PostgresProvider::from_pool_with(pool.clone(), options)
        .await
        .unwrap_or_else(|e| panic!("{mode} provider on {schema}: {e}"))
}

/// With the server ending sessions idle for a second, the listening
/// connection is still the first one after several idle seconds (it turns
/// the timeout off for itself), and a commit still wakes a waiting fetch at
/// once. Before, the server ended it every second and waiters polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_outlives_idle_session_timeout() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schemas("idle_listen", 1, |other_pool, names, app| async move {
            // The listener's pool carries the test's tag; the tagged pool
            // `with_schemas` made has no listener and enqueues.
            let pool = idle_ending_pool(&app).await;
            let p = listening_provider(&pool, &names[0], mode, Duration::from_secs(30)).await;
            subscribed(&p).await;
            let pids = listeners(&other_pool, &app).await;
            assert_eq!(pids.len(), 1, "{mode}: one listener");
            let connections = p.notification_stats().unwrap_or_default().connections;

            // Idle: three times the server's timeout.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stats = p.notification_stats().unwrap_or_default();
            assert!(stats.connected, "{mode}: still connected");
            assert_eq!(
                stats.connections, connections,
                "{mode}: no reconnect while idle"
            );
            assert_eq!(
                listeners(&other_pool, &app).await,
                pids,
                "{mode}: the same backend"
            );

            let begun = Instant::now();
            let fetch = waiting_fetch(&p, LONG);
            let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            enqueuer
                .enqueue_for_orchestrator(start("after-idle"), None)
                .await
                .unwrap_or_else(|e| panic!("enqueue: {e}"));
            assert_eq!(
                claimed(fetch).await.as_deref(),
                Some("after-idle"),
                "{mode}"
            );
            let waited = begun.elapsed();
            assert!(
                waited < Duration::from_secs(3),
                "{mode}: woken by the commit ({waited:?})"
            );
            drop(p);
            pool.close().await;
        })
        .await;
    }
}

/// Sends `signal` to server process `pid`; false if this process may not
/// (a server run by another user).
fn signal(pid: i32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resumes a stopped backend however the test ends.
struct Resume(i32);

impl Resume {
    /// Stops backend `pid` (SIGSTOP) until the guard returned is dropped;
    /// `None`, with a note that the test is skipped, when this process may
    /// not signal the server's processes.
    fn after_stopping(pid: i32) -> Option<Resume> {
        if signal(pid, "STOP") {
            Some(Resume(pid))
        } else {
            eprintln!("note: cannot signal the server's processes; skipped");
            None
        }
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// A listening connection whose server stops answering (its backend
/// stopped with SIGSTOP: the TCP connection stays up, nothing comes back,
/// as when a network drops packets) is noticed by the keepalive within its
/// bounded wait and replaced; a commit then wakes a waiting fetch again.
/// The keepalive is a second: a keepalive waits as long as its interval
/// for the reply, and under the whole suite's load on two cores a reply
/// took longer than the 300 ms this test once used, so the "answered
/// keepalives" never added up before the server was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stops_answering_is_replaced() {
    with_schemas("mute_listen", 1, |pool, names, app| async move {
        let mode = SqlMode::StoredProcedures;
        let p = listening_provider(&pool, &names[0], mode, Duration::from_secs(1)).await;
        subscribed(&p).await;
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "one listener");
        let connections = p.notification_stats().unwrap_or_default().connections;
        // Answered keepalives keep the connection.
        eventually("answered keepalives", || async {
            p.notification_stats().is_some_and(|s| s.keepalives >= 3)
        })
        .await;
        assert_eq!(
            p.notification_stats().unwrap_or_default().connections,
            connections,
            "no reconnect while the server answers"
        );
        assert_eq!(listeners(&pool, &app).await, pids, "the same backend");
        let Some(resume) = Resume::after_stopping(pids[0]) else {
            return;
        };
        eventually("a new listening connection", || async {
            p.notification_stats()
                .is_some_and(|s| s.connected && s.connections > connections)
        })
        .await;
        drop(resume);

        let begun = Instant::now();
        let fetch = waiting_fetch(&p, LONG);
        let other_pool = tagged_pool("mute_listen_other").await;
        let enqueuer = provider_on(&other_pool, &names[0], mode, false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        enqueuer
            .enqueue_for_orchestrator(start("after-mute"), None)
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
        assert_eq!(claimed(fetch).await.as_deref(), Some("after-mute"));
        assert!(
            begun.elapsed() < Duration::from_secs(3),
            "woken by the commit"
        );
        other_pool.close().await;
    })
    .await;
}

/// The same with the listener on a connection of its own (`listen_url`, as
/// behind PgBouncer): the mute connection's return to that pool waits for
/// an answer that does not come (until TCP gives up, or the backend
/// resumes), and the reconnect must not wait for it. Before, the listen
/// pool held one connection, and the provider polled until the old backend
/// answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_listener_that_stops_answering_is_replaced() {
    with_schemas("mute_own", 1, |pool, names, app| async move {
        let url = format!("{}&application_name={app}", database_url());
        let url = if database_url().contains('?') {
            url
        } else {
            url.replacen('&', "?", 1)
        };
        let options = PostgresOptions::default()
            .schema(&names[0])
            .sql_mode(SqlMode::StoredProcedures)
            .listener_keepalive(Duration::from_secs(1))
            .listen_url(url);
        let p = PostgresProvider::from_pool_with(pool.clone(), options)
            .await
            .unwrap_or_else(|e| panic!("provider: {e}"));
        subscribed(&p).await;
        let pids = listeners(&pool, &app).await;
        assert_eq!(pids.len(), 1, "one listener");
        let connections = p.notification_stats().unwrap_or_default().connections;
        let Some(resume) = Resume::after_stopping(pids[0]) else {
            return;
        };
        eventually("a new listening connection", || async {
            p.notification_stats()
                .is_some_and(|s| s.connected && s.subscribed && s.connections > connections)
        })
        .await;
        drop(resume);
    })
    .await;
}

/// The warnings the provider's crate logs, as they are emitted.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn taken(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if *meta.level() <= tracing::Level::WARN && meta.target().starts_with("duroxide_postgres") {
            let mut fields = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    fields.push_str(&format!("{}={value:?} ", field.name()));
                },
            );
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{}: {fields}", meta.target()));
        }
    }
}

/// An application closing its pool stops the pool's listener without a
/// warning: nothing was lost and nothing will come back. Before, it logged
/// "LISTEN connection lost; polling until it is back". The runtime is
/// single-threaded, so the listener's events reach this test's subscriber,
/// and it has logged whatever it logs on the way down once it reports
/// itself disconnected (it stores that just before, without yielding).
#[tokio::test]
async fn closing_the_pool_stops_its_listener_without_a_warning() {
    use tracing_subscriber::layer::SubscriberExt;

    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        let warnings = Warnings::default();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
        tracing::callsite::rebuild_interest_cache();
        with_schemas("close_listen", 1, |_, names, app| async move {
            // Built as the provider advises, so the only warning there could
            // be is the listener's.
            let options = PostgresOptions::default()
                .connect_options(database_url())
                .unwrap_or_else(|e| panic!("{e}"))
                .application_name(&app);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let p = listening_provider(&pool, &names[0], mode, Duration::from_secs(30)).await;
            subscribed(&p).await;
            pool.close().await;
            eventually("the listener stopped", || async {
                p.notification_stats().is_some_and(|s| !s.connected)
            })
            .await;
        })
        .await;
        assert_eq!(warnings.taken(), Vec::<String>::new(), "{mode}");
    }
}
