//! Leased work rides out a server that is down for a moment.
//!
//! duroxide retries a failed ack only five times over about 300 ms, then
//! fails the orchestration with an infrastructure error. A restart takes
//! longer than that, and while the server is down its Unix socket is gone:
//! connecting fails with `NotFound`, which sqlx (unlike a refused TCP
//! connection) does not wait out. The provider waits for the server, within
//! the pool's acquire timeout, so an ack issued during the outage commits
//! once the server is back. A database that is read-only for a while (a
//! server demoted to a standby) is waited out the same way, and so is a
//! server that refuses new connections because it is full (sqlx itself
//! retries `too_many_connections` while it connects).

use std::time::Duration;

use duroxide::providers::{Provider, ProviderError, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

use super::{url_of, with_fault_db};
use crate::fixtures::{activity, completion, event, metadata, start};
use crate::support::in_both_modes;

const LOCK: Duration = Duration::from_secs(60);

/// The most idle connections the pool can hold when the server stops (the
/// provider's pool of 10): each fails at most one operation afterwards.
const STALE_CONNECTIONS: usize = 10;

in_both_modes!(acks_during_an_outage:
    acks_sent_while_the_server_is_down_commit_once_it_is_back_procedures,
    acks_sent_while_the_server_is_down_commit_once_it_is_back_inline; 4);

in_both_modes!(acks_while_read_only:
    acks_sent_while_the_database_is_read_only_commit_once_it_is_writable_procedures,
    acks_sent_while_the_database_is_read_only_commit_once_it_is_writable_inline; 4);

in_both_modes!(acks_after_read_only_sessions:
    acks_commit_when_the_database_is_writable_again_though_its_read_only_sessions_live_on_procedures,
    acks_commit_when_the_database_is_writable_again_though_its_read_only_sessions_live_on_inline; 4);

in_both_modes!(acks_while_full:
    acks_sent_while_the_database_is_full_commit_once_it_admits_them_procedures,
    acks_sent_while_the_database_is_full_commit_once_it_admits_them_inline; 4);

const ID: &str = "outage-1";

/// The task sending both acks: the orchestration's outcome, the activity's.
type Acks = tokio::task::JoinHandle<(Result<(), ProviderError>, Result<(), ProviderError>)>;

/// A provider on `db` holding a lease on an orchestration turn and on an
/// activity, with the two lock tokens.
async fn leases_held(db: &super::FaultDb, mode: SqlMode) -> (PostgresProvider, String, String) {
    let provider = PostgresProvider::connect_with(
        &url_of(&db.name),
        PostgresOptions::default().sql_mode(mode),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider on {}: {e}", db.name));
    leases_held_by(provider, mode).await
}

/// `provider` once it holds a lease on an orchestration turn and on an
/// activity, with the two lock tokens.
async fn leases_held_by(
    provider: PostgresProvider,
    mode: SqlMode,
) -> (PostgresProvider, String, String) {
    provider
        .enqueue_for_orchestrator(start(ID), None)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
    provider
        .enqueue_for_worker(activity("other", 2))
        .await
        .unwrap_or_else(|e| panic!("enqueue activity: {e}"));
    let (_item, orch_token, _) = provider
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}"))
        .unwrap_or_else(|| panic!("{mode}: no orchestration item"));
    let (_work, work_token, _) = provider
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap_or_else(|e| panic!("fetch work: {e}"))
        .unwrap_or_else(|| panic!("{mode}: no work item"));
    (provider, orch_token, work_token)
}

/// Both acks, sent from a task of their own, the orchestration's first.
fn acks(provider: &PostgresProvider, orch_token: String, work_token: String) -> Acks {
    let provider = provider.clone();
    tokio::spawn(async move {
        let orchestration = provider
            .ack_orchestration_item(
                &orch_token,
                1,
                vec![event(ID, 1), event(ID, 2)],
                vec![activity(ID, 2)],
                vec![],
                metadata(),
                vec![],
            )
            .await;
        let work = provider
            .ack_work_item(&work_token, Some(completion("other", 2)))
            .await;
        (orchestration, work)
    })
}

/// `acks` once an outage of a second has passed, which they must still be
/// waiting out (the database was `state` all along).
async fn still_waiting_after_an_outage(acks: Acks, state: &str) -> Acks {
    // The outage: how long it lasts, not a synchronization.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !acks.is_finished(),
        "{state}: the acks returned during the outage: {:?}",
        acks.await
    );
    acks
}

/// Both acks committed: the turn's two events are in the history and its
/// activity is queued.
async fn assert_acks_committed(provider: &PostgresProvider, mode: SqlMode, acks: Acks) {
    let (orchestration, work) = acks.await.unwrap_or_else(|e| panic!("ack task: {e}"));
    orchestration.unwrap_or_else(|e| panic!("{mode}: the orchestration ack failed: {e}"));
    work.unwrap_or_else(|e| panic!("{mode}: the activity ack failed: {e}"));

    // Other idle connections of the pool (with tenant affinity, on
    // other shards) died with the server or were terminated: each fails
    // one operation with a retryable error, which the runtime retries, as
    // here.
    let mut history = provider.read(ID).await;
    for _ in 0..STALE_CONNECTIONS {
        match &history {
            Err(e) if e.is_retryable() => history = provider.read(ID).await,
            _ => break,
        }
    }
    let history = history.unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(history.len(), 2, "{mode}: the acked turn's events");
    let any = TagFilter::default();
    let fetch = || provider.fetch_work_item(LOCK, Duration::ZERO, None, &any);
    let mut scheduled = fetch().await;
    for _ in 0..STALE_CONNECTIONS {
        match &scheduled {
            Err(e) if e.is_retryable() => scheduled = fetch().await,
            _ => break,
        }
    }
    let scheduled = scheduled.unwrap_or_else(|e| panic!("fetch work after: {e}"));
    assert!(scheduled.is_some(), "{mode}: the acked turn's activity");
}

/// The server stops with leases held; an orchestration ack and an activity
/// ack are sent while it is down, then it starts again. Both commit.
async fn acks_during_an_outage(mode: SqlMode) {
    with_fault_db(&format!("outage_{mode}"), |db| async move {
        let (provider, orch_token, work_token) = leases_held(&db, mode).await;
        super::stop_server().await;
        let acks = acks(&provider, orch_token, work_token);
        super::start_server().await;
        assert_acks_committed(&provider, mode, acks).await;
    })
    .await;
}

/// A provider on `db` holding leases while the database turns read-only
/// (its sessions terminated, so that new ones take the setting up), with
/// its two acks sent meanwhile and still waiting a second later; the
/// database is writable again when this returns, the sessions opened while
/// it was read-only still alive.
async fn acks_sent_while_read_only(db: &super::FaultDb, mode: SqlMode) -> (PostgresProvider, Acks) {
    let (provider, orch_token, work_token) = leases_held(db, mode).await;
    db.admin("ALTER DATABASE {{db}} SET default_transaction_read_only = on")
        .await;
    db.terminate_backends().await;
    let acks = still_waiting_after_an_outage(
        acks(&provider, orch_token, work_token),
        &format!("{mode}: read-only"),
    )
    .await;
    db.admin("ALTER DATABASE {{db}} RESET default_transaction_read_only")
        .await;
    (provider, acks)
}

/// The database turns read-only with leases held (as when the server is
/// demoted to a standby, or `default_transaction_read_only` is set for a
/// while; sessions take the setting up when they start, so they are
/// terminated at both switches). Acks sent meanwhile wait for it to be
/// writable again and commit. Before, each failed at once with SQLSTATE
/// 25006, which duroxide retries for about 300 ms and then fails the
/// orchestration with an infrastructure error.
async fn acks_while_read_only(mode: SqlMode) {
    with_fault_db(&format!("ro_acks_{mode}"), |db| async move {
        let (provider, acks) = acks_sent_while_read_only(&db, mode).await;
        db.terminate_backends().await;
        assert_acks_committed(&provider, mode, acks).await;
    })
    .await;
}

/// As [`acks_while_read_only`], but the sessions opened while the database
/// was read-only stay (as after a failover whose old primary, now a
/// standby, keeps the connections made to it): they refuse every write
/// for as long as they live. The provider replaces the connections that met
/// a read-only server instead of handing them out again, so the acks
/// commit once new sessions are writable. Before, they kept failing with
/// 25006 until the pool's connections aged out.
async fn acks_after_read_only_sessions(mode: SqlMode) {
    with_fault_db(&format!("ro_live_{mode}"), |db| async move {
        let (provider, acks) = acks_sent_while_read_only(&db, mode).await;
        assert_acks_committed(&provider, mode, acks).await;
    })
    .await;
}

/// The database refuses every new connection of the provider's role with
/// SQLSTATE 53300 (`too_many_connections`, as a full server does: here the
/// database's connection limit is 0, which binds every role but a
/// superuser) while leases are held, and the pool's connections are
/// terminated. Acks sent meanwhile wait for a connection and commit once
/// the database admits one, instead of failing within duroxide's ~300 ms
/// of ack retries.
async fn acks_while_full(mode: SqlMode) {
    with_fault_db(&format!("full_acks_{mode}"), |db| async move {
        let role = format!("{}_runtime", db.name);
        db.admin(&format!("CREATE ROLE \"{role}\" LOGIN")).await;
        db.admin(&format!("ALTER DATABASE {{{{db}}}} OWNER TO \"{role}\""))
            .await;
        let options = PostgresOptions::default().sql_mode(mode);
        let connect = options
            .connect_options(&url_of(&db.name))
            .unwrap_or_else(|e| panic!("{e}"))
            .username(&role);
        let pool = options
            .pool_options()
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
        let provider = PostgresProvider::from_pool_with(pool, options)
            .await
            .unwrap_or_else(|e| panic!("{mode} provider as {role}: {e}"));
        let (provider, orch_token, work_token) = leases_held_by(provider, mode).await;

        db.admin("ALTER DATABASE {{db}} CONNECTION LIMIT 0").await;
        db.terminate_backends().await;
        let acks = still_waiting_after_an_outage(
            acks(&provider, orch_token, work_token),
            &format!("{mode}: full"),
        )
        .await;
        db.admin("ALTER DATABASE {{db}} CONNECTION LIMIT -1").await;
        assert_acks_committed(&provider, mode, acks).await;
        provider.pool().close().await;
    })
    .await;
}
