//! Connections that stop answering: a network partition, or a failover
//! whose old primary vanished without a reset. The connections the pool
//! holds then send into a socket that never answers, and nothing tells the
//! client: TCP gives up only after its retransmissions (about a quarter of
//! an hour on Linux), or never while the peer's kernel still acknowledges.
//!
//! The tests reach the server through [`Proxy`], which can cut every
//! connection open at that moment: the server's side is closed (the old
//! primary is gone, with its transactions and row locks), the client's side
//! stays open and silent. Connections made afterwards go through as
//! before (the new primary). A provider must give up on a silent
//! connection after `PostgresOptions::call_timeout`, discard it, and go on
//! with fresh ones.
//!
//! [`Proxy::lose`] loses one request, or only its reply, on whichever
//! connection sends it next (`tests/integration/lost_replies.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::Client;
use duroxide::provider_stress_tests::{create_default_activities, create_default_orchestrations};
use duroxide::providers::Provider;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fixtures::{
    ack_first_turn, claim_and_ack_turn, fan_outs_complete, start, start_fan_outs,
};
use crate::support::{
    Kind, Slot, TestSchema, connect_options, eventually, in_both_modes, with_schema,
};

/// The port in the proxy's socket name (`.s.PGSQL.PORT`), as sqlx builds it.
const PROXY_PORT: u16 = 5432;

/// A proxy in front of the test server, on a Unix socket of its own.
pub struct Proxy {
    dir: PathBuf,
    /// Bumped by [`Proxy::cut`]; each connection knows the value it was
    /// opened under.
    cuts: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// What [`Proxy::lose`] set and no connection has sprung yet.
    trap: Trap,
    /// The accept loop; aborting it drops every connection it holds.
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy forwarding to the server [`connect_options`] names.
    pub async fn start(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dx-proxy-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let listener = UnixListener::bind(socket_in(&dir, PROXY_PORT))
            .unwrap_or_else(|e| panic!("bind the proxy in {}: {e}", dir.display()));
        let (cuts, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let trap = Trap::default();
        let task = tokio::spawn(accept(
            listener,
            cuts.clone(),
            accepted.clone(),
            trap.clone(),
        ));
        Self {
            dir,
            cuts,
            accepted,
            trap,
            task,
        }
    }

    /// The test server's connection settings, reached through this proxy.
    pub fn connect_options(&self) -> PgConnectOptions {
        connect_options().socket(&self.dir).port(PROXY_PORT)
    }

    /// Cuts every connection open now: its server side closes, its client
    /// side stays open and never answers again.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Connections the proxy accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next bytes a client sends that contain one of `patterns`, on
    /// any connection, are lost as `loss` says; from then on that
    /// connection's client hears nothing more (until it gives up and closes
    /// it), while its server side stays open. One loss per call.
    pub fn lose(&self, patterns: &[&[u8]], loss: Loss) {
        let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.to_vec()).collect();
        *self.trap.lock() = Some((patterns, loss));
    }

    /// Whether the loss [`Proxy::lose`] set has happened.
    pub fn lost(&self) -> bool {
        self.trap.lock().is_none()
    }
}

/// What [`Proxy::lose`] loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The request never reaches the server.
    Request,
    /// The request reaches the server, which runs it (and commits, if it
    /// ends a transaction); its reply never reaches the client.
    Reply,
}

/// A loss set and not sprung yet: what bytes spring it, and the loss.
type Armed = Option<(Vec<Vec<u8>>, Loss)>;

/// The loss a proxy waits to inflict.
#[derive(Clone, Default)]
struct Trap(Arc<Mutex<Armed>>);

impl Trap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The loss `bytes` spring, if they contain one of the patterns set.
    fn springs(&self, bytes: &[u8]) -> Option<Loss> {
        let mut trap = self.lock();
        let (patterns, loss) = trap.as_ref()?;
        let loss = *loss;
        let found = patterns
            .iter()
            .any(|p| bytes.windows(p.len()).any(|w| w == p.as_slice()));
        found.then(|| {
            *trap = None;
            loss
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL's socket file for `port` in `dir`.
fn socket_in(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// Accepts connections until aborted; the connections' tasks live in a set
/// this task owns, so aborting it closes them all.
async fn accept(
    listener: UnixListener,
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    trap: Trap,
) {
    let mut pipes = JoinSet::new();
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((client, _)) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let cut = cuts.subscribe();
                pipes.spawn(pipe(client, cut, trap.clone()));
            }
            Some(_) = pipes.join_next() => {}
        }
    }
}

/// The server's stream, over its socket or TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to the test server.
async fn upstream() -> std::io::Result<Box<dyn Stream>> {
    let options = connect_options();
    Ok(match options.get_socket() {
        Some(dir) => Box::new(UnixStream::connect(socket_in(dir, options.get_port())).await?),
        None => Box::new(TcpStream::connect((options.get_host(), options.get_port())).await?),
    })
}

/// Forwards between `client` and a new server connection until either side
/// closes, or until the next cut: then the server side is closed and the
/// client's bytes are read and dropped until the client closes. Bytes that
/// spring `trap` make the connection deaf: the server's replies are dropped
/// from then on (and, for [`Loss::Request`], those bytes too).
async fn pipe(client: UnixStream, mut cut: watch::Receiver<u64>, trap: Trap) {
    let opened = *cut.borrow_and_update();
    let Ok(server) = upstream().await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let deaf = AtomicBool::new(false);
    {
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from_client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let loss = trap.springs(&buf[..n]);
                if loss.is_some() {
                    deaf.store(true, Ordering::SeqCst);
                }
                if loss != Some(Loss::Request) && to_server.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from_server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !deaf.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = up => return,
            _ = down => return,
            _ = cut.wait_for(|n| *n > opened) => {}
        }
    }
    drop((from_server, to_server));
    let mut sink = [0u8; 8192];
    while matches!(from_client.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// A pool of `max_connections` through `proxy`, built as the provider
/// builds its own (`PostgresOptions::pool_options`).
pub(crate) async fn pool_through(
    proxy: &Proxy,
    options: &PostgresOptions,
    max_connections: u32,
) -> PgPool {
    options
        .pool_options()
        .max_connections(max_connections)
        .connect_with(proxy.connect_options())
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {e}"))
}

/// A provider in `mode` on `schema` over `pool`.
pub(crate) async fn provider(
    pool: &PgPool,
    schema: &TestSchema,
    mode: SqlMode,
    options: PostgresOptions,
) -> Arc<PostgresProvider> {
    let options = options.schema(&schema.name).sql_mode(mode);
    Arc::new(
        PostgresProvider::from_pool_with(pool.clone(), options)
            .await
            .unwrap_or_else(|e| panic!("{mode} provider: {e}")),
    )
}

/// Waits until every connection of `pool` is idle in it: sqlx tests each
/// connection handed back with a round trip, and one cut while that test
/// waits for its answer would hold its place in the pool for good (the
/// provider cannot reach it there), which is not what these tests look at.
pub(crate) async fn all_idle(pool: &PgPool) {
    eventually("every connection idle in the pool", || async {
        pool.num_idle() == pool.size() as usize
    })
    .await;
}

/// How long a call may take before the test calls it hung: well beyond the
/// provider's one-second bound in these tests, far short of TCP's.
pub(crate) const HUNG: Duration = Duration::from_secs(20);

/// `call` within [`HUNG`], or a panic naming `what`.
pub(crate) async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HUNG, call).await.unwrap_or_else(|_| {
        panic!("{what} still waits after {HUNG:?}: a silent connection hung it")
    })
}

/// The provider's options in these tests: calls give up after a second,
/// and the provider runs on the pool the test built (no tenant affinity,
/// whose shards are pools of their own), so the test sees what happens to
/// that pool's connections.
pub(crate) fn options() -> PostgresOptions {
    PostgresOptions::default()
        .notifications(false)
        .connections_per_tenant(0)
        .call_timeout(Some(Duration::from_secs(1)))
}

in_both_modes!(calls_after_a_cut_give_up_on_silent_connections:
    calls_after_a_cut_give_up_on_silent_connections_procedures,
    calls_after_a_cut_give_up_on_silent_connections_inline);

/// After every pooled connection went silent, each call that meets one
/// returns (an error the runtime retries) instead of waiting for TCP, the
/// silent connection is closed rather than returned to the pool (closing
/// the pool at the end still finishes: sqlx's test of a connection handed
/// back mid-call would wait forever here), calls then run on fresh
/// connections, and the turns enqueued are claimed and acked.
async fn calls_after_a_cut_give_up_on_silent_connections(mode: SqlMode) {
    with_schema("stall_calls", |schema| async move {
        const POOL: u32 = 3;
        const CALLS: usize = 2 * POOL as usize + 2;
        let proxy = Proxy::start("calls").await;
        let pool = pool_through(&proxy, &options(), POOL).await;
        let p = provider(&pool, &schema, mode, options()).await;
        // Every connection of the pool in use once, then idle in the pool.
        let warm: Vec<_> = (0..POOL).map(|_| pool.acquire()).collect();
        for conn in futures::future::join_all(warm).await {
            conn.unwrap_or_else(|e| panic!("warm: {e}"));
        }
        p.enqueue_for_orchestrator(start("before"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue before the cut: {e}"));
        claim_and_ack_turn(&*p, Duration::from_secs(30)).await;
        let opened = proxy.accepted();
        all_idle(&pool).await;

        proxy.cut();
        let (mut enqueued, mut failed) = (0, 0);
        while enqueued < CALLS {
            assert!(
                failed < 4 * CALLS,
                "{mode}: {failed} calls failed: the pool does not recover"
            );
            let instance = format!("after-{}", enqueued + failed);
            match bounded(
                "an enqueue after the cut",
                p.enqueue_for_orchestrator(start(&instance), None),
            )
            .await
            {
                Ok(()) => enqueued += 1,
                Err(e) => {
                    assert!(
                        e.is_retryable(),
                        "{mode}: a silent connection's error is retryable: {e:?}"
                    );
                    failed += 1;
                }
            }
        }
        assert!(failed > 0, "{mode}: no call met a silent connection");
        assert!(
            proxy.accepted() > opened,
            "{mode}: fresh connections were opened"
        );

        // The queue works on the fresh connections.
        let mut claimed = 0;
        while let Some((item, token, _)) = bounded(
            "a fetch after the cut",
            p.fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: fetch after the cut: {e:?}"))
        {
            bounded(
                "an ack after the cut",
                ack_first_turn(&*p, &token, &item.instance),
            )
            .await
            .unwrap_or_else(|e| panic!("{mode}: ack after the cut ({}): {e:?}", item.instance));
            claimed += 1;
        }
        assert!(claimed >= CALLS, "{mode}: {claimed} turns claimed");
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(a_runtime_rides_out_silent_connections:
    a_runtime_rides_out_silent_connections_procedures,
    a_runtime_rides_out_silent_connections_inline; 4);

/// A runtime at 2:2 (notifications on, so its listener goes silent too)
/// whose every connection goes silent mid-flight completes what it had
/// started and what is started after, each in far less time than TCP takes
/// to give up.
async fn a_runtime_rides_out_silent_connections(mode: SqlMode) {
    let _slot = Slot::acquire(Kind::Runtime);
    with_schema("stall_runtime", |schema| async move {
        // The defaults otherwise: tenant affinity, so the runtime's calls
        // run on its shard's own pool.
        let options = options()
            .notifications(true)
            .connections_per_tenant(PostgresOptions::default().connections_per_tenant)
            .listener_keepalive(Duration::from_secs(1));
        let proxy = Proxy::start("runtime").await;
        let pool = pool_through(&proxy, &options, 8).await;
        let p = provider(&pool, &schema, mode, options).await;
        let runtime = Runtime::start_with_options(
            p.clone(),
            create_default_activities(0),
            create_default_orchestrations(),
            RuntimeOptions {
                orchestration_concurrency: 2,
                worker_concurrency: 2,
                ..Default::default()
            },
        )
        .await;
        // The client on the test's own pool: the runtime is under test.
        let client = Client::new(Arc::new(schema.provider_in(mode).await));
        start_fan_outs(&client, 0..10).await;
        fan_outs_complete(&client, 0..3, Duration::from_secs(60), mode.as_str()).await;
        proxy.cut();
        start_fan_outs(&client, 10..20).await;
        fan_outs_complete(&client, 0..20, Duration::from_secs(60), mode.as_str()).await;
        bounded("the runtime's shutdown", runtime.shutdown(None)).await;
        // The listener's silent connection was in a pool of its own.
        drop(p);
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

/// Readiness probes during a partition: one that meets a silent
/// connection reports unreachable within its `health_timeout` and closes
/// that connection, so probes leave the pool whole: later ones report the
/// server reachable, and closing the pool still finishes (a connection
/// handed back mid-probe waited in sqlx's test of it forever here, and a
/// probe every few seconds took the pool's connections one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_after_a_cut_leave_the_pool_whole() {
    with_schema("stall_health", |schema| async move {
        const POOL: u32 = 3;
        let options = options()
            .call_timeout(None)
            .health_timeout(Duration::from_secs(1));
        let proxy = Proxy::start("health").await;
        let pool = pool_through(&proxy, &options, POOL).await;
        let p = provider(&pool, &schema, SqlMode::StoredProcedures, options).await;
        let warm: Vec<_> = (0..POOL).map(|_| pool.acquire()).collect();
        for conn in futures::future::join_all(warm).await {
            conn.unwrap_or_else(|e| panic!("warm: {e}"));
        }
        assert!(p.health().await.reachable, "reachable before the cut");
        all_idle(&pool).await;

        proxy.cut();
        let mut unreachable = 0;
        for _ in 0..(2 * POOL + 2) {
            let report = bounded("a health probe after the cut", p.health()).await;
            unreachable += usize::from(report.error.is_some());
        }
        assert!(unreachable > 0, "no probe met a silent connection");
        eventually("a probe that finds the server reachable", || async {
            let report = p.health().await;
            report.reachable && report.error.is_none()
        })
        .await;
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

in_both_modes!(an_error_the_server_answers_keeps_its_connection:
    an_error_the_server_answers_keeps_its_connection_procedures,
    an_error_the_server_answers_keeps_its_connection_inline);

/// Only a call left unanswered (or a broken connection) costs its
/// connection: acks and abandons with an unknown lock token, which the
/// server answers with an error, leave the pool's connections as they
/// were, so errors a runtime meets in the normal course (a lease lost, a
/// lock waited out) do not make the pool reconnect and plan everything
/// afresh.
async fn an_error_the_server_answers_keeps_its_connection(mode: SqlMode) {
    with_schema("stall_errors", |schema| async move {
        const POOL: u32 = 2;
        let proxy = Proxy::start("errors").await;
        let pool = pool_through(&proxy, &options(), POOL).await;
        let p = provider(&pool, &schema, mode, options()).await;
        p.enqueue_for_orchestrator(start("known"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: enqueue: {e}"));
        for i in 0..5 {
            let token = format!("no-such-token-{i}");
            let refused = ack_first_turn(&*p, &token, "known").await;
            assert!(refused.is_err(), "{mode}: an unknown token is refused");
            let refused = p.abandon_work_item(&token, None, false).await;
            assert!(refused.is_err(), "{mode}: an unknown token is refused");
        }
        claim_and_ack_turn(&*p, Duration::from_secs(30)).await;
        // The pool may open its second connection while sqlx tests the
        // first on its way back; a connection closed would make a third.
        assert!(
            proxy.accepted() <= POOL as usize,
            "{mode}: errors the server answered cost connections ({} opened)",
            proxy.accepted()
        );
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}

/// A listening connection that went silent is replaced after its
/// keepalive goes unanswered. The one given up on used to go back to the
/// application's pool with `UNLISTEN *` sent on it first (sqlx's
/// `PgListener` does that when dropped), which waited for an answer that
/// never came: it held its place in the pool until TCP gave up, a quarter
/// of an hour, each partition or failover one more, and closing the pool
/// waited for it. After the replacement the pool must still lend every
/// connection but the new listener's, and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_listener_gives_its_place_in_the_pool_back() {
    with_schema("stall_listener", |schema| async move {
        const POOL: u32 = 3;
        let options = options()
            .notifications(true)
            .listener_keepalive(Duration::from_millis(500));
        let proxy = Proxy::start("listener").await;
        let pool = pool_through(&proxy, &options, POOL).await;
        let p = provider(&pool, &schema, SqlMode::StoredProcedures, options).await;
        let stats = || {
            p.notification_stats()
                .unwrap_or_else(|| panic!("notifications on"))
        };
        eventually("the listener to connect", || async { stats().connected }).await;
        let first = stats().connections;
        // Idle pooled connections, silent after the cut like the listener's.
        let warm: Vec<_> = (0..POOL - 1).map(|_| pool.acquire()).collect();
        for conn in futures::future::join_all(warm).await {
            conn.unwrap_or_else(|e| panic!("warm: {e}"));
        }
        eventually("the warmed connections idle in the pool", || async {
            pool.num_idle() >= (POOL - 1) as usize
        })
        .await;

        proxy.cut();
        eventually("a new listener", || async {
            let now = stats();
            now.connected && now.connections > first
        })
        .await;
        let lent = (0..POOL - 1).map(|_| pool.acquire());
        let lent = bounded(
            "lending all but the new listener's connection",
            futures::future::join_all(lent),
        )
        .await;
        for conn in lent {
            // Out of the pool and dropped: one of those silent connections
            // handed back would wait in sqlx's test of it until TCP gives
            // up, which is not what this test looks at.
            drop(conn.unwrap_or_else(|e| panic!("acquire: {e}")).detach());
        }
        drop(p);
        bounded("closing the pool", pool.close()).await;
    })
    .await;
}
