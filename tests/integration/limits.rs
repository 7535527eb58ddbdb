//! Bounds on what one instance's data can do to a tenant: payloads over the
//! limit are refused before they reach the server, an instance whose
//! history cannot be read (too large, or a failure reading it) counts its
//! attempts until the runtime poisons it, without holding the queue, and an
//! id too long to index fails only what wrote it. Failures are held to a
//! larger bound: [`failures`]. A timer that never fires: [`timers`].

mod failures;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{MAX_ID_BYTES, PostgresOptions, PostgresProvider, SqlMode};

use crate::fixtures::{claim_and_ack_turn, event, metadata, start};
use crate::support::{Kind, Slot, TestSchema, database_url, in_both_modes, with_schema};

const LOCK: Duration = Duration::from_secs(30);

async fn provider(schema: &TestSchema, options: PostgresOptions) -> PostgresProvider {
    PostgresProvider::from_pool_with(schema.pool.clone(), options.schema(schema.name.clone()))
        .await
        .unwrap_or_else(|e| panic!("provider: {e}"))
}

fn raised(instance: &str, data: String) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: "Go".to_string(),
        data,
    }
}

in_both_modes!(an_oversized_payload_is_refused_and_nothing_is_lost:
    an_oversized_payload_is_refused_and_nothing_is_lost_procedures,
    an_oversized_payload_is_refused_and_nothing_is_lost_inline);

async fn an_oversized_payload_is_refused_and_nothing_is_lost(mode: SqlMode) {
    with_schema("limit_payload", |schema| async move {
        let p = provider(
            &schema,
            PostgresOptions::default()
                .sql_mode(mode)
                .max_payload_bytes(4096),
        )
        .await;
        // At enqueue: refused, permanent, naming the field and the limit.
        let err = p
            .enqueue_for_orchestrator(raised("big", "x".repeat(5000)), None)
            .await
            .expect_err("an oversized event is refused");
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("orchestrator work item") && text.contains("4096"),
            "{text}"
        );
        assert_eq!(
            p.get_queue_depths()
                .await
                .expect("depths")
                .orchestrator_queue,
            0
        );

        // At ack: the oversized output is refused, the lease and the turn's
        // messages stay as they were, and a turn within the limit commits.
        p.enqueue_for_orchestrator(start("big"), None)
            .await
            .expect("enqueue");
        let (_, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");
        let mut done = metadata();
        done.status = Some("Completed".to_string());
        done.output = Some("y".repeat(5000));
        let err = p
            .ack_orchestration_item(
                &token,
                1,
                vec![event("big", 1)],
                vec![],
                vec![],
                done.clone(),
                vec![],
            )
            .await
            .expect_err("an oversized output is refused");
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("output") && text.contains("4096"), "{text}");
        assert!(p.read("big").await.expect("read").is_empty());
        done.output = Some("small".to_string());
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("big", 1)],
            vec![],
            vec![],
            done,
            vec![],
        )
        .await
        .expect("the same lease still commits a turn within the limit");
        assert_eq!(p.read("big").await.expect("read").len(), 1);

        // An oversized activity result is refused at the worker's ack too.
        p.enqueue_for_worker(crate::fixtures::activity("big", 2))
            .await
            .expect("enqueue activity");
        let (_, token, _) = p
            .fetch_work_item(
                LOCK,
                Duration::ZERO,
                None,
                &duroxide::providers::TagFilter::default(),
            )
            .await
            .expect("fetch work")
            .expect("claimed work");
        let completion = WorkItem::ActivityCompleted {
            instance: "big".to_string(),
            execution_id: 1,
            id: 2,
            result: "z".repeat(5000),
        };
        let err = p
            .ack_work_item(&token, Some(completion))
            .await
            .expect_err("an oversized result is refused");
        assert!(err.to_string().contains("activity completion"), "{err}");
        assert_eq!(
            p.get_queue_depths()
                .await
                .expect("depths")
                .orchestrator_queue,
            0
        );
    })
    .await;
}

/// A provider whose fetches read histories of up to 6,000 bytes.
async fn history_capped(schema: &TestSchema, mode: SqlMode) -> Arc<PostgresProvider> {
    Arc::new(
        provider(
            schema,
            PostgresOptions::default()
                .sql_mode(mode)
                .max_history_bytes(6000),
        )
        .await,
    )
}

/// A runtime that polls often and poisons an instance after three attempts.
fn poisoning_after_three() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        max_attempts: 3,
        ..Default::default()
    }
}

/// Asserts that `who` ended failed as poison, its failure naming the
/// history limit [`history_capped`] sets.
fn failed_over_the_history_limit<E: std::fmt::Debug>(
    mode: SqlMode,
    who: &str,
    outcome: Result<OrchestrationStatus, E>,
) {
    match outcome {
        Ok(OrchestrationStatus::Failed { details, .. }) => {
            let text = format!("{details:?}");
            assert!(text.contains("6000"), "{mode}: {text}");
        }
        other => panic!("{mode}: expected {who} to fail as poison: {other:?}"),
    }
}

in_both_modes!(a_history_too_large_to_read_ends_in_poison:
    a_history_too_large_to_read_ends_in_poison_procedures,
    a_history_too_large_to_read_ends_in_poison_inline);

/// An orchestration whose history outgrows what a fetch reads fails as
/// poison after the runtime's attempts, and a neighbour still runs.
async fn a_history_too_large_to_read_ends_in_poison(mode: SqlMode) {
    with_schema("limit_history", |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = history_capped(&schema, mode).await;
        let activities = ActivityRegistry::builder()
            .register("Pad", |_ctx: ActivityContext, input: String| async move {
                Ok(input.repeat(500))
            })
            .build();
        let orchestrations = OrchestrationRegistry::builder()
            .register(
                "Grow",
                |ctx: OrchestrationContext, _input: String| async move {
                    for _ in 0..20 {
                        ctx.schedule_activity("Pad", "x").await?;
                    }
                    Ok("grown".to_string())
                },
            )
            .register(
                "Small",
                |ctx: OrchestrationContext, input: String| async move {
                    ctx.schedule_activity("Pad", input).await
                },
            )
            .build();
        let options = poisoning_after_three();
        let rt = Runtime::start_with_options(p.clone(), activities, orchestrations, options).await;
        let client = Client::new(p.clone());
        client
            .start_orchestration("grow", "Grow", "")
            .await
            .expect("start");
        let grown = client
            .wait_for_orchestration("grow", Duration::from_secs(60))
            .await;
        client
            .start_orchestration("small", "Small", "y")
            .await
            .expect("start");
        let small = client
            .wait_for_orchestration("small", Duration::from_secs(30))
            .await;
        rt.shutdown(None).await;
        failed_over_the_history_limit(mode, "the grown instance", grown);
        match small {
            Ok(OrchestrationStatus::Completed { output, .. }) => {
                assert_eq!(output, "y".repeat(500))
            }
            other => panic!("{mode}: the neighbour did not complete: {other:?}"),
        }
    })
    .await;
}

in_both_modes!(a_poisoned_history_that_holds_the_sentinel_event_id_still_fails:
    a_poisoned_history_that_holds_the_sentinel_event_id_still_fails_procedures,
    a_poisoned_history_that_holds_the_sentinel_event_id_still_fails_inline);

/// duroxide's runtime fails an instance whose history it cannot be given
/// (too large to read, or undecodable) by acking one `OrchestrationFailed`
/// at a fixed event id, 99,999, since it cannot know the history's last
/// one. An instance whose history already holds that id (a long-lived
/// orchestration's 99,999th event; written by hand here, large enough to
/// outgrow the history limit) made that ack break the primary key: the
/// instance was handed out again at every lease's end and never ended. The
/// provider appends the runtime's failure after the history's last event
/// instead, so the instance fails, with its failure last in its history.
async fn a_poisoned_history_that_holds_the_sentinel_event_id_still_fails(mode: SqlMode) {
    with_schema("limit_sentinel", |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = history_capped(&schema, mode).await;
        let orchestrations = OrchestrationRegistry::builder()
            .register(
                "Wait",
                |ctx: OrchestrationContext, _input: String| async move {
                    Ok(ctx.schedule_wait("Go").await)
                },
            )
            .build();
        let options = poisoning_after_three();
        let rt = Runtime::start_with_options(
            p.clone(),
            ActivityRegistry::builder().build(),
            orchestrations,
            options,
        )
        .await;
        let client = Client::new(p.clone());
        client
            .start_orchestration("long", "Wait", "")
            .await
            .expect("start");
        crate::support::eventually("the instance waits for its event", || async {
            ProviderAdmin::read_history(&*p, "long")
                .await
                .is_ok_and(|h| h.len() >= 2)
        })
        .await;
        let padding = duroxide::Event::with_event_id(
            99_999,
            "long".to_string(),
            1,
            None,
            duroxide::EventKind::ExternalEvent {
                name: "Pad".to_string(),
                data: "x".repeat(7000),
            },
        );
        let json = serde_json::to_string(&padding).expect("padding event");
        sqlx::query(schema.statement(
            "INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms) \
             VALUES ('long', 1, 99999, 'ExternalEvent', $1, 0)",
        ))
        .bind(&json)
        .execute(&schema.pool)
        .await
        .expect("the event at the sentinel id");
        client
            .raise_event("long", "Go", "now")
            .await
            .expect("raise");
        let ended = client
            .wait_for_orchestration("long", Duration::from_secs(30))
            .await;
        rt.shutdown(None).await;
        failed_over_the_history_limit(mode, "the instance", ended);
        let history = ProviderAdmin::read_history(&*p, "long")
            .await
            .expect("history");
        let last = history.last().expect("events");
        assert!(
            matches!(last.kind, duroxide::EventKind::OrchestrationFailed { .. })
                && last.event_id() == 100_000,
            "{mode}: the failure follows the event at 99,999: {last:?}"
        );
        let ids: Vec<u64> = history.iter().map(|e| e.event_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted, "{mode}: event ids ascend without repeats");
        let info = p.get_instance_info("long").await.expect("info");
        assert_eq!(info.status, "Failed", "{mode}");
    })
    .await;
}

in_both_modes!(a_history_read_that_times_out_costs_no_attempt:
    a_history_read_that_times_out_costs_no_attempt_procedures,
    a_history_read_that_times_out_costs_no_attempt_inline);

/// A history read that times out (here a statement timeout while another
/// session holds the history table, as a `VACUUM FULL` or a migration
/// would) is a passing condition, not the history's fault: the fetch fails,
/// retryable, naming the instance and SQLSTATE 57014, and the turn is set
/// aside for a second, its attempt not counted (transient::history_reads
/// shows the other instances served meanwhile). Once the table is free the
/// turn comes back whole, its first attempt. (Counting such reads, ten seconds of a held table
/// poisoned the instance for good.)
async fn a_history_read_that_times_out_costs_no_attempt(mode: SqlMode) {
    with_schema("limit_unreadable", |schema| async move {
        let setup = provider(&schema, PostgresOptions::default().sql_mode(mode)).await;
        setup
            .enqueue_for_orchestrator(start("stuck"), None)
            .await
            .expect("enqueue");
        assert_eq!(claim_and_ack_turn(&setup, LOCK).await, "stuck");
        setup
            .enqueue_for_orchestrator(raised("stuck", "1".to_string()), None)
            .await
            .expect("raise");

        let timed = PostgresProvider::connect_with(
            database_url(),
            PostgresOptions::default()
                .schema(schema.name.clone())
                .sql_mode(mode)
                .max_connections(2)
                .statement_timeout(Some(Duration::from_millis(500))),
        )
        .await
        .expect("provider with a statement timeout");
        let mut blocker = schema.pool.begin().await.expect("begin");
        sqlx::query(schema.statement("LOCK TABLE {{schema}}.history IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *blocker)
            .await
            .expect("lock history");
        let refused = timed
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await;
        let Err(error) = &refused else {
            panic!("{mode}: a turn without its history: {refused:?}");
        };
        assert!(error.is_retryable(), "{mode}: permanent: {error:?}");
        // Worded alike in both modes: the instance, the server's message
        // and SQLSTATE.
        assert!(
            error
                .message
                .contains("instance \"stuck\": history could not be read: ")
                && error.message.contains(" (SQLSTATE 57014)"),
            "{mode}: {error:?}"
        );
        // Out of sight for a second: not claimed and read again at once.
        let again = timed
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"));
        assert!(again.is_none(), "{mode}: claimed again at once: {again:?}");

        blocker.rollback().await.expect("unlock");
        let deadline = std::time::Instant::now() + LOCK / 3;
        let (item, _, attempts) = loop {
            if let Some(claimed) = timed
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e}"))
            {
                break claimed;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: the turn never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(item.instance, "stuck", "{mode}");
        assert!(
            item.history_error.is_none(),
            "{mode}: {:?}",
            item.history_error
        );
        assert_eq!(item.history.len(), 1, "{mode}");
        assert_eq!(attempts, 1, "{mode}: the timed-out read counted an attempt");
        timed.pool().close().await;
    })
    .await;
}

/// `len` letters and digits from a fixed pseudo-random sequence: text that
/// PostgreSQL cannot compress, so its size in an index is its length.
fn noise(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let index = usize::try_from(state >> 33).unwrap_or(0) % ALPHABET.len();
            char::from(ALPHABET[index])
        })
        .collect()
}

in_both_modes!(an_id_too_long_to_index_fails_only_what_sent_it:
    an_id_too_long_to_index_fails_only_what_sent_it_procedures,
    an_id_too_long_to_index_fails_only_what_sent_it_inline);

/// An instance id over `MAX_ID_BYTES` (here 2,680 bytes: short enough for
/// some indexes, too long for the history key) is refused where it is
/// written: by the client, with a permanent error; inside an orchestration's
/// turn, by failing that orchestration, whose ack is refused before writing.
/// Nothing is left in the queues and a neighbour runs.
async fn an_id_too_long_to_index_fails_only_what_sent_it(mode: SqlMode) {
    with_schema("limit_long_id", |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = Arc::new(provider(&schema, PostgresOptions::default().sql_mode(mode)).await);
        let long = noise(2680);
        let refused = p
            .enqueue_for_orchestrator(start(&long), None)
            .await
            .expect_err("an id the index cannot hold is refused");
        assert!(!refused.is_retryable(), "{mode}: {refused}");
        assert!(
            refused.to_string().contains("instance_id") && refused.to_string().contains("1024"),
            "{mode}: the error says why: {refused}"
        );

        let child = long.clone();
        let orchestrations = OrchestrationRegistry::builder()
            .register(
                "Spawner",
                move |ctx: OrchestrationContext, _input: String| {
                    let child = child.clone();
                    async move {
                        ctx.schedule_orchestration("Plain", child, "");
                        Ok("spawned".to_string())
                    }
                },
            )
            .register(
                "Plain",
                |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
            )
            .build();
        let options = poisoning_after_three();
        let rt = Runtime::start_with_options(
            p.clone(),
            ActivityRegistry::builder().build(),
            orchestrations,
            options,
        )
        .await;
        let client = Client::new(p.clone());
        client
            .start_orchestration("spawner", "Spawner", "")
            .await
            .expect("start");
        let spawner = client
            .wait_for_orchestration("spawner", Duration::from_secs(60))
            .await;
        client
            .start_orchestration("plain", "Plain", "fine")
            .await
            .expect("start");
        let plain = client
            .wait_for_orchestration("plain", Duration::from_secs(30))
            .await;
        rt.shutdown(None).await;
        assert!(
            matches!(spawner, Ok(OrchestrationStatus::Failed { .. })),
            "{mode}: the orchestration that named the id fails: {spawner:?}"
        );
        assert!(
            matches!(&plain, Ok(OrchestrationStatus::Completed { output, .. }) if output == "fine"),
            "{mode}: the neighbour completes: {plain:?}"
        );
        let left: i64 = sqlx::query_scalar(schema.statement(
            "SELECT (SELECT count(*) FROM {{schema}}.orchestrator_queue) \
                  + (SELECT count(*) FROM {{schema}}.worker_queue) \
                  + (SELECT count(*) FROM {{schema}}.instance_locks)",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("queues");
        assert_eq!(left, 0, "{mode}: nothing left in the queues");
    })
    .await;
}

in_both_modes!(ids_are_bounded_before_anything_is_written:
    ids_are_bounded_before_anything_is_written_procedures,
    ids_are_bounded_before_anything_is_written_inline);

/// An id over `MAX_ID_BYTES` is refused at enqueue and in a turn's items to
/// other instances, naming the field, with nothing written; an id of exactly
/// the limit is fetched and acked like any other.
async fn ids_are_bounded_before_anything_is_written(mode: SqlMode) {
    with_schema("limit_id_bytes", |schema| async move {
        let p = provider(&schema, PostgresOptions::default().sql_mode(mode)).await;
        let long = noise(2680);
        let err = p
            .enqueue_for_orchestrator(start(&long), None)
            .await
            .expect_err("a 2,680-byte instance id is refused");
        assert!(!err.is_retryable(), "{mode}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("instance_id") && text.contains("1024"),
            "{mode}: {text}"
        );
        let rows: i64 = sqlx::query_scalar(schema.statement(
            "SELECT (SELECT count(*) FROM {{schema}}.orchestrator_queue) \
                  + (SELECT count(*) FROM {{schema}}.instance_claims) \
                  + (SELECT count(*) FROM {{schema}}.instances)",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(rows, 0, "{mode}: nothing written");

        // A turn that starts a child with the long id: refused, nothing written,
        // and the same lease then commits a turn without it.
        let edge = noise(MAX_ID_BYTES);
        p.enqueue_for_orchestrator(start(&edge), None)
            .await
            .expect("an id of exactly the limit is accepted");
        let (item, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");
        assert_eq!(item.instance, edge);
        let err = p
            .ack_orchestration_item(
                &token,
                1,
                vec![event(&edge, 1)],
                vec![],
                vec![start(&long)],
                metadata(),
                vec![],
            )
            .await
            .expect_err("a child with a 2,680-byte id is refused");
        assert!(!err.is_retryable(), "{mode}: {err}");
        assert!(err.to_string().contains("instance_id"), "{mode}: {err}");
        assert!(p.read(&edge).await.expect("read").is_empty(), "{mode}");
        p.ack_orchestration_item(
            &token,
            1,
            vec![event(&edge, 1)],
            vec![],
            vec![start(&edge[1..])],
            metadata(),
            vec![],
        )
        .await
        .expect("an id at the limit commits");
        assert_eq!(p.read(&edge).await.expect("read").len(), 1, "{mode}");
        let queued: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(
            queued, 1,
            "{mode}: only the child within the limit is queued"
        );
        assert_eq!(
            claim_and_ack_turn(&p, LOCK).await,
            edge[1..],
            "{mode}: the child is fetched and acked"
        );
    })
    .await;
}

in_both_modes!(a_batch_larger_than_the_limit_is_delivered_in_order_over_several_turns:
    a_batch_larger_than_the_limit_is_delivered_in_order_over_several_turns_procedures,
    a_batch_larger_than_the_limit_is_delivered_in_order_over_several_turns_inline);

/// One instance's queued messages are delivered at most `max_batch_bytes`
/// a turn (the first always, however large), the rest in the turns after,
/// in order: a flood to one instance can make no fetch fail (more than
/// 1 GB in one batch would, every time, for every instance behind it).
async fn a_batch_larger_than_the_limit_is_delivered_in_order_over_several_turns(mode: SqlMode) {
    with_schema("limit_batch", |schema| async move {
        let p = provider(
            &schema,
            PostgresOptions::default()
                .sql_mode(mode)
                .max_batch_bytes(4096),
        )
        .await;
        p.enqueue_for_orchestrator(start("flood"), None)
            .await
            .expect("enqueue start");
        claim_and_ack_turn(&p, LOCK).await;
        let sent: Vec<String> = (0..10)
            .map(|i| format!("{i:02}{}", "x".repeat(1000)))
            .collect();
        for data in &sent {
            p.enqueue_for_orchestrator(raised("flood", data.clone()), None)
                .await
                .expect("enqueue event");
        }
        let mut delivered = Vec::new();
        let mut turns = Vec::new();
        let mut next_event = 2;
        while let Some((item, token, _)) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
        {
            assert_eq!(item.instance, "flood");
            turns.push(item.messages.len());
            for message in item.messages {
                match message {
                    WorkItem::ExternalRaised { data, .. } => delivered.push(data),
                    other => panic!("unexpected message {other:?}"),
                }
            }
            p.ack_orchestration_item(
                &token,
                1,
                vec![event("flood", next_event)],
                vec![],
                vec![],
                metadata(),
                vec![],
            )
            .await
            .expect("ack");
            next_event += 1;
            assert!(turns.len() <= 10, "turns {turns:?}");
        }
        assert_eq!(delivered, sent, "every event once, in order");
        // About 1 KB each: four fit under 4 KiB (the fourth starts below it).
        assert_eq!(turns, vec![4, 4, 2], "messages per turn");

        // A start is never left behind: events raised before it (parked)
        // fill the budget, and the start comes with the first of them.
        for data in &sent[..6] {
            p.enqueue_for_orchestrator(raised("late", data.clone()), None)
                .await
                .expect("enqueue early event");
        }
        assert!(
            p.fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .expect("fetch parks")
                .is_none(),
            "nothing to run before the start"
        );
        // All of them are parked, those the batch left out too: none stays
        // visible to bring the instance back at the next fetch (which
        // parked the same batch again, and again, and reported work due).
        let visible: i64 = sqlx::query_scalar(schema.statement(
            "SELECT count(*) FROM {{schema}}.orchestrator_queue \
              WHERE instance_id = 'late' AND orphan_since_ms IS NULL",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(visible, 0, "every early event parked");
        p.enqueue_for_orchestrator(start("late"), None)
            .await
            .expect("enqueue start");
        let (item, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the start is claimed");
        assert_eq!(item.instance, "late");
        assert_eq!(item.messages.len(), 5, "{:?}", item.messages);
        assert!(
            item.messages
                .iter()
                .any(|m| matches!(m, WorkItem::StartOrchestration { .. })),
            "{:?}",
            item.messages
        );
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("late", 1)],
            vec![],
            vec![],
            metadata(),
            vec![],
        )
        .await
        .expect("ack the first turn");
        // The events parked before the start and left out of its batch are
        // ordinary messages once it runs: the next turn takes them, at once.
        let (item, _, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("the rest of the early events, now");
        assert_eq!(item.instance, "late");
        let rest: Vec<String> = item
            .messages
            .into_iter()
            .map(|m| match m {
                WorkItem::ExternalRaised { data, .. } => data,
                other => panic!("unexpected message {other:?}"),
            })
            .collect();
        assert_eq!(rest, sent[4..6].to_vec(), "the two left out, in order");
    })
    .await;
}
