//! Races the conformance suite does not cover: many dispatchers fetching at
//! once, an ack racing a renewal and a competing fetch, tenants sharing a pool,
//! a fetch stalled on its pool or on a lost candidate, a pooled connection that died while idle.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Barrier;

use crate::fixtures::{activity, event, metadata, start};
use crate::support::{TestSchema, provider_on, with_schema};

async fn providers(schema: &TestSchema, n: usize) -> Vec<Arc<dyn Provider>> {
    let mut out: Vec<Arc<dyn Provider>> = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Arc::new(schema.provider().await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_fetchers_ten_instances_each_get_a_different_one() {
    with_schema("race_fetchers", |schema| async move {
        let dispatchers = providers(&schema, 10).await;
        for i in 0..10 {
            dispatchers[0]
                .enqueue_for_orchestrator(start(&format!("inst-{i}")), None)
                .await
                .expect("enqueue");
        }
        let barrier = Arc::new(Barrier::new(10));
        let fetches = dispatchers.iter().cloned().map(|provider| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                provider
                    .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                    .await
            })
        });
        let mut seen = HashSet::new();
        for outcome in futures::future::join_all(fetches).await {
            let (item, _token, attempts) = outcome
                .expect("task")
                .expect("fetch succeeds")
                .expect("no fetcher comes back empty-handed");
            assert_eq!(attempts, 1);
            assert!(
                seen.insert(item.instance.clone()),
                "{} fetched twice",
                item.instance
            );
        }
        assert_eq!(seen.len(), 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ack_racing_renewal_and_another_fetch_never_double_processes() {
    with_schema("race_ack_renew", |schema| async move {
        let [owner, rival]: [Arc<dyn Provider>; 2] = providers(&schema, 2)
            .await
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let rounds = 25;
        for round in 0..rounds {
            let instance = format!("ack-race-{round}");
            owner
                .enqueue_for_orchestrator(start(&instance), None)
                .await
                .expect("enqueue");
            let (item, token, _) = owner
                .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("item");
            assert_eq!(item.instance, instance);

            let ack = {
                let owner = owner.clone();
                let token = token.clone();
                let instance = instance.clone();
                tokio::spawn(async move {
                    owner
                        .ack_orchestration_item(
                            &token,
                            1,
                            vec![event(&instance, 1)],
                            vec![],
                            vec![],
                            metadata(),
                            vec![],
                        )
                        .await
                })
            };
            let renew = {
                let owner = owner.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    owner
                        .renew_orchestration_item_lock(&token, Duration::from_secs(30))
                        .await
                })
            };
            let steal = {
                let rival = rival.clone();
                tokio::spawn(async move {
                    rival
                        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                        .await
                })
            };
            ack.await
                .expect("task")
                .expect("the lease holder's ack succeeds");
            // Renewal either landed before the ack or fails after it; both are fine.
            let _ = renew.await.expect("task");
            let stolen = steal.await.expect("task").expect("fetch does not error");
            assert!(
                stolen.is_none(),
                "round {round}: rival fetched {:?} while it was leased or after it was acked",
                stolen.map(|(i, _, _)| i.instance)
            );
            let history = owner.read(&instance).await.expect("read");
            assert_eq!(
                history.len(),
                1,
                "round {round}: exactly one turn committed"
            );
        }
        let depth: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(depth, 0, "every message consumed exactly once");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_one_pool_never_see_or_block_each_other() {
    with_schema("tenant_a", |a| async move {
        let b = TestSchema {
            pool: a.pool.clone(),
            name: format!("{}_b", a.name),
        };
        let (pa, pb) = (a.provider().await, b.provider().await);
        pa.enqueue_for_orchestrator(start("same-id"), None)
            .await
            .expect("enqueue a");
        pb.enqueue_for_orchestrator(start("same-id"), None)
            .await
            .expect("enqueue b");

        let (item_a, _, _) = pa
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .expect("fetch a")
            .expect("a has work");
        // A's lease on "same-id" must not block tenant B's instance of the same id.
        let (item_b, _, _) = pb
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .expect("fetch b")
            .expect("b has work");
        assert_eq!(
            (item_a.instance.as_str(), item_b.instance.as_str()),
            ("same-id", "same-id")
        );
        assert!(
            pa.fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                .await
                .expect("fetch a again")
                .is_none()
        );
        crate::support::drop_schema(&b.pool, &b.name).await;
    })
    .await;
}

#[tokio::test]
async fn text_with_nul_is_refused_naming_the_field_and_nothing_is_stored() {
    with_schema("nul_input", |schema| async move {
        let provider = schema.provider().await;
        let err = provider
            .enqueue_for_orchestrator(start("bad\0id"), None)
            .await
            .expect_err("NUL must be refused");
        assert!(!err.is_retryable());
        assert!(err.message.contains("instance"), "{err}");
        // The names a start carries into the instance's row: every ack of
        // the instance binds them, its poison ack included, so one accepted
        // here failed them all and the instance never ended.
        let named = |orchestration: &str, version: Option<&str>, parent: Option<&str>| {
            WorkItem::StartOrchestration {
                instance: "named".into(),
                orchestration: orchestration.into(),
                input: "{}".into(),
                version: version.map(str::to_string),
                parent_instance: parent.map(str::to_string),
                parent_id: parent.map(|_| 1),
                parent_execution_id: None,
                execution_id: 1,
            }
        };
        for (item, field) in [
            (named("bad\0name", None, None), "orchestration"),
            (named("Fine", Some("1.0\0"), None), "version"),
            (named("Fine", None, Some("par\0ent")), "parent_instance"),
        ] {
            let err = provider
                .enqueue_for_orchestrator(item, None)
                .await
                .expect_err("NUL must be refused");
            assert!(!err.is_retryable());
            assert!(err.message.contains(field), "{field}: {err}");
        }
        let continued = WorkItem::ContinueAsNew {
            instance: "named".into(),
            orchestration: "bad\0name".into(),
            input: "{}".into(),
            version: None,
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: Vec::new(),
            initial_custom_status: None,
        };
        let err = provider
            .enqueue_for_orchestrator(continued, None)
            .await
            .expect_err("NUL must be refused");
        assert!(err.message.contains("orchestration"), "{err}");
        let depth: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(depth, 0);
    })
    .await;
}

/// A fetch that waits for a pooled connection still hands out a lease that
/// ends `lock_timeout` after it was called, as the runtime (and the suite's
/// lock-expiry tests) count it, not `lock_timeout` after the server took the
/// row. Checked on the lease rows, in both SQL modes, for both queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_counts_from_the_call_not_from_a_late_connection() {
    with_schema("lease_clock", |schema| async move {
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            let instance = format!("lease-{mode}");
            let provider = schema.provider_in(mode).await;
            provider
                .enqueue_for_orchestrator(start(&instance), None)
                .await
                .expect("enqueue start");
            provider
                .enqueue_for_worker(activity(&instance, 1))
                .await
                .expect("enqueue activity");

            // A provider whose only connection is busy for 1,500 ms: longer
            // than a cold first call takes on a server crowded with tenants
            // (a new backend resolving the procedure's name across all of
            // them), so a lease counted from the call and one counted from
            // the claim stay apart.
            let one = PgPoolOptions::new()
                .max_connections(1)
                .connect(crate::support::database_url())
                .await
                .expect("one-connection pool");
            let stalled = Arc::new(provider_on(&one, &schema.name, mode, false).await);
            let lease = Duration::from_secs(3);
            let server_ms = || async {
                sqlx::query_scalar::<_, i64>(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                )
                .fetch_one(&schema.pool)
                .await
                .expect("server clock")
            };

            for table in ["instance_locks", "worker_queue"] {
                let held = one.acquire().await.expect("hold the connection");
                let called_ms = server_ms().await;
                let fetcher = stalled.clone();
                let fetch = tokio::spawn(async move {
                    if table == "instance_locks" {
                        let turn = fetcher
                            .fetch_orchestration_item(lease, Duration::ZERO, None)
                            .await;
                        turn.map(|claimed| claimed.is_some())
                    } else {
                        let work = fetcher
                            .fetch_work_item(lease, Duration::ZERO, None, &TagFilter::Any)
                            .await;
                        work.map(|claimed| claimed.is_some())
                    }
                });
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                drop(held);
                let claimed = fetch.await.expect("fetch task").expect("fetch");
                assert!(claimed, "{mode} {table}: nothing claimed");

                // The newest lease (the first mode's have expired, and may
                // have been taken over: either way this one ends last).
                let sql = schema.sql(&format!(
                    "SELECT max(locked_until_ms) FROM {{{{schema}}}}.{table}"
                ));
                let until: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(&schema.pool)
                    .await
                    .expect("lease row");
                let ends_after_call = until.expect("a lease is held") - called_ms;
                // Counted from the claim it would end 4,500 ms or more after the call.
                assert!(
                    (2_500..4_250).contains(&ends_after_call),
                    "{mode} {table}: lease ends {ends_after_call} ms after the call"
                );
            }
            one.close().await;
        }
    })
    .await;
}

/// A fetch that loses its first candidate to another dispatcher, after
/// waiting on that dispatcher's uncommitted lease, claims the next instance
/// with a lease that is not spent by the wait: counted from the call (in
/// procedure mode from when the server received it, inline from each
/// candidate's own start less the time spent), it would end 500 ms after
/// the claim, too soon for the runtime's renewal, so a claim that took long
/// has it run `lock_timeout` from its end (`extend_lease`), never longer.
/// (The wait stays under the second a fetch waits for a lock before it
/// gives up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_not_spent_by_a_candidate_lost_to_another_dispatcher() {
    // A schema per mode: on a slow machine the first mode's 1 s lease can
    // expire before the second mode's fetch, which would then take it over.
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("lease_retry_{mode}"), |schema| async move {
            let provider = Arc::new(schema.provider_in(mode).await);
            let (first, second) = (format!("first-{mode}"), format!("second-{mode}"));
            for instance in [&first, &second] {
                provider
                    .enqueue_for_orchestrator(start(instance), None)
                    .await
                    .expect("enqueue start");
            }
            // Another dispatcher's lease on `first`, not committed yet.
            let mut other = schema.pool.begin().await.expect("begin");
            sqlx::query(schema.statement(
                "INSERT INTO {{schema}}.instance_locks (instance_id, lock_token, locked_until_ms, locked_at_ms) \
                 VALUES ($1, $2, {{now_ms}} + 60000, {{now_ms}})",
            ))
            .bind(&first)
            .bind(format!("other-{mode}"))
            .execute(&mut *other)
            .await
            .expect("the other dispatcher's lease");

            let called_ms: i64 = sqlx::query_scalar(schema.statement("SELECT {{now_ms}}"))
                .fetch_one(&schema.pool)
                .await
                .expect("server clock");
            let fetcher = provider.clone();
            let fetch = tokio::spawn(async move {
                fetcher
                    .fetch_orchestration_item(Duration::from_secs(1), Duration::ZERO, None)
                    .await
            });
            // The fetch picked `first` and now waits on the uncommitted lease row.
            let waiting = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                            WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0)";
            while !sqlx::query_scalar::<_, bool>(waiting)
                .bind(&schema.name)
                .fetch_one(&schema.pool)
                .await
                .expect("pg_stat_activity")
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Most of the lease, and longer than a cold first call on a
            // crowded server takes (see
            // a_lease_counts_from_the_call_not_from_a_late_connection), but
            // less than the fetch's lock timeout (a second).
            tokio::time::sleep(Duration::from_millis(700)).await;
            other.commit().await.expect("commit the other lease");

            let (item, _, _) = fetch
                .await
                .expect("fetch task")
                .expect("fetch")
                .expect("the second instance is claimed");
            let returned_ms: i64 = sqlx::query_scalar(schema.statement("SELECT {{now_ms}}"))
                .fetch_one(&schema.pool)
                .await
                .expect("server clock");
            assert_eq!(item.instance, second, "{mode}");
            let until: i64 = sqlx::query_scalar(schema.statement(
                "SELECT locked_until_ms FROM {{schema}}.instance_locks WHERE instance_id = $1",
            ))
            .bind(&second)
            .fetch_one(&schema.pool)
            .await
            .expect("lease row");
            // The 1 s lease (at least half of it, less a pool wait) from
            // the claim's end, which precedes `returned_ms`.
            let ends_after_return = until - returned_ms;
            assert!(
                (500..=1_000).contains(&ends_after_return),
                "{mode}: lease ends {ends_after_return} ms after the fetch returned, {} ms after the call",
                until - called_ms
            );
        })
        .await;
    }
}

/// The provider's own pool does not ping a connection before each operation
/// (a round trip in front of every call). A connection that died while idle
/// therefore fails the one operation that gets it, with a retryable error,
/// and is discarded: the retry succeeds and nothing is lost or doubled. With
/// `test_before_acquire(true)` the ping catches it and no operation fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_idle_costs_one_retryable_failure() {
    with_schema("dead_idle_conn", |schema| async move {
        for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
            for ping in [false, true] {
                let options = PostgresOptions::default()
                    .schema(&schema.name)
                    .sql_mode(mode)
                    .notifications(false)
                    .max_connections(1)
                    .test_before_acquire(ping);
                let provider =
                    PostgresProvider::connect_with(crate::support::database_url(), options)
                        .await
                        .expect("provider with its own one-connection pool");
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(provider.pool())
                    .await
                    .expect("backend pid");
                // The connection is back in the pool, idle, when its backend dies.
                while provider.pool().num_idle() < 1 {
                    tokio::task::yield_now().await;
                }
                let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
                    .bind(pid)
                    .fetch_one(&schema.pool)
                    .await
                    .expect("terminate the idle connection's backend");
                assert!(killed, "{mode}: backend {pid} not terminated");

                let instance = format!("dead-conn-{mode}-{ping}");
                let first = provider
                    .enqueue_for_orchestrator(start(&instance), None)
                    .await;
                if ping {
                    first.expect("the ping replaces the dead connection");
                } else {
                    let err = first.expect_err("the dead connection is handed out once");
                    assert!(err.is_retryable(), "{mode}: not retryable: {err:?}");
                    provider
                        .enqueue_for_orchestrator(start(&instance), None)
                        .await
                        .expect("the retry gets a new connection");
                }
                let queued: i64 = sqlx::query_scalar(schema.statement(
                    "SELECT count(*) FROM {{schema}}.orchestrator_queue WHERE instance_id = $1",
                ))
                .bind(&instance)
                .fetch_one(&schema.pool)
                .await
                .expect("count queued");
                assert_eq!(
                    queued, 1,
                    "{mode} ping={ping}: start message lost or doubled"
                );
                provider.pool().close().await;
            }
        }
    })
    .await;
}

/// An abandoned batch comes due as one: its messages get one visibility time,
/// so a fetch at the end of the delay takes them all in one turn. Read from
/// the clock per row, a large batch spanned several milliseconds and a fetch
/// at a boundary split it (duroxide's CAN-window cancel scenario failed that
/// way: the late message and the cancel landed in different turns).
/// A duration too long to add to a clock reading (`Duration::MAX` as a lock
/// timeout, a delay or an extension) means "as long as there is", not an
/// arithmetic error: every operation that takes one succeeds, and what it
/// delayed stays out of reach.
#[tokio::test]
async fn durations_beyond_the_clock_saturate() {
    const FOREVER: Duration = Duration::MAX;
    const LOCK: Duration = Duration::from_secs(30);
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("forever_{mode}"), |schema| async move {
            let p = schema.provider_in(mode).await;
            p.enqueue_for_orchestrator(start("later"), Some(FOREVER))
                .await
                .unwrap_or_else(|e| panic!("{mode}: delayed enqueue: {e}"));
            p.enqueue_for_orchestrator(start("now"), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue: {e}"));
            let (item, token, _) = p
                .fetch_orchestration_item(FOREVER, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch with an endless lease: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the undelayed start"));
            assert_eq!(item.instance, "now", "{mode}");
            p.renew_orchestration_item_lock(&token, FOREVER)
                .await
                .unwrap_or_else(|e| panic!("{mode}: renew: {e}"));
            p.abandon_orchestration_item(&token, Some(FOREVER), false)
                .await
                .unwrap_or_else(|e| panic!("{mode}: abandon with an endless delay: {e}"));
            let next = p
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"));
            assert!(next.is_none(), "{mode}: everything is delayed for good");

            p.enqueue_for_worker(activity("now", 2))
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue work: {e}"));
            let (_, token, _) = p
                .fetch_work_item(FOREVER, Duration::ZERO, None, &TagFilter::default())
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch work with an endless lock: {e}"))
                .unwrap_or_else(|| panic!("{mode}: the activity"));
            p.renew_work_item_lock(&token, FOREVER)
                .await
                .unwrap_or_else(|e| panic!("{mode}: renew work: {e}"));
            p.abandon_work_item(&token, Some(FOREVER), false)
                .await
                .unwrap_or_else(|e| panic!("{mode}: abandon work with an endless delay: {e}"));
            let work = p
                .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch work: {e}"));
            assert!(work.is_none(), "{mode}: the activity is delayed for good");
        })
        .await;
    }
}

/// A fetch may wait "forever" (`poll_timeout = Duration::MAX`, as a
/// runtime's `dispatcher_long_poll_timeout` can ask): it waits for work
/// instead of overflowing the clock, on both queues.
#[tokio::test]
async fn a_poll_timeout_beyond_the_clock_waits_for_work() {
    const FOREVER: Duration = Duration::MAX;
    const LOCK: Duration = Duration::from_secs(30);
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("forever_poll_{mode}"), |schema| async move {
            let p = Arc::new(schema.provider_in(mode).await);
            let fetcher = p.clone();
            let orchestration = tokio::spawn(async move {
                fetcher
                    .fetch_orchestration_item(LOCK, FOREVER, None)
                    .await
                    .map(|item| item.map(|(item, ..)| item.instance))
            });
            let fetcher = p.clone();
            let work = tokio::spawn(async move {
                fetcher
                    .fetch_work_item(LOCK, FOREVER, None, &TagFilter::default())
                    .await
                    .map(|item| item.is_some())
            });
            p.enqueue_for_orchestrator(start("waited"), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue: {e}"));
            p.enqueue_for_worker(activity("waited", 2))
                .await
                .unwrap_or_else(|e| panic!("{mode}: enqueue work: {e}"));
            let claimed = tokio::time::timeout(Duration::from_secs(20), orchestration)
                .await
                .unwrap_or_else(|_| panic!("{mode}: the waiting fetch never claimed the start"))
                .unwrap_or_else(|e| panic!("{mode}: the fetch task failed: {e}"))
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"));
            assert_eq!(claimed.as_deref(), Some("waited"), "{mode}");
            let claimed = tokio::time::timeout(Duration::from_secs(20), work)
                .await
                .unwrap_or_else(|_| panic!("{mode}: the waiting fetch never claimed the activity"))
                .unwrap_or_else(|e| panic!("{mode}: the work fetch task failed: {e}"))
                .unwrap_or_else(|e| panic!("{mode}: fetch work: {e}"));
            assert!(claimed, "{mode}: the activity");
        })
        .await;
    }
}

/// The events of one `append_with_execution` share one time, as the events
/// of one turn do (read per row, a large append spread over milliseconds).
#[tokio::test]
async fn an_appended_batch_of_events_shares_one_time() {
    const EVENTS: u64 = 3_000;
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("append_batch_{mode}"), |schema| async move {
            let provider = schema.provider_in(mode).await;
            let events: Vec<_> = (1..=EVENTS).map(|id| event("appended", id)).collect();
            provider
                .append_with_execution("appended", 1, events)
                .await
                .expect("append");
            let (rows, times): (i64, i64) = sqlx::query_as(schema.statement(
                "SELECT count(*), count(DISTINCT created_at_ms) FROM {{schema}}.history",
            ))
            .fetch_one(&schema.pool)
            .await
            .expect("history times");
            assert_eq!(rows as u64, EVENTS, "{mode}: every event appended");
            assert_eq!(times, 1, "{mode}: one append, one time");
        })
        .await;
    }
}

#[tokio::test]
async fn an_abandoned_batch_comes_due_at_one_time() {
    use crate::fixtures::completion;
    const MESSAGES: u64 = 1_500;
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("abandon_batch_{mode}"), |schema| async move {
            let provider = Arc::new(schema.provider_in(mode).await);
            provider
                .enqueue_for_orchestrator(start("batch"), None)
                .await
                .expect("enqueue start");
            let enqueues = (0..MESSAGES).map(|id| {
                let provider = provider.clone();
                async move {
                    provider
                        .enqueue_for_orchestrator(completion("batch", id + 2), None)
                        .await
                        .expect("enqueue");
                }
            });
            futures::future::join_all(enqueues).await;
            let (item, token, _) = provider
                .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                .await
                .expect("fetch")
                .expect("the batch");
            assert_eq!(
                item.messages.len() as u64,
                MESSAGES + 1,
                "{mode}: one batch"
            );
            provider
                .abandon_orchestration_item(&token, Some(Duration::from_secs(60)), false)
                .await
                .expect("abandon");
            let times: i64 = sqlx::query_scalar(schema.statement(
                "SELECT count(DISTINCT visible_at_ms) FROM {{schema}}.orchestrator_queue",
            ))
            .fetch_one(&schema.pool)
            .await
            .expect("visibility times");
            assert_eq!(
                times, 1,
                "{mode}: the abandoned batch comes due at one time"
            );
        })
        .await;
    }
}
