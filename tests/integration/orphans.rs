//! Messages for instances that have not started (orphans): they never stall
//! the orchestrator queue, an event raised just before its start is still
//! delivered, and they are kept only for their retention.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin, WorkItem};
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

use crate::fixtures::{json, start};
use crate::support::{Kind, Slot, TestSchema, in_both_modes, with_schema};

const LOCK: Duration = Duration::from_secs(30);

async fn provider(schema: &TestSchema, mode: SqlMode, retention: Duration) -> PostgresProvider {
    PostgresProvider::from_pool_with(
        schema.pool.clone(),
        PostgresOptions::default()
            .schema(schema.name.clone())
            .sql_mode(mode)
            .orphan_retention(retention),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode} provider: {e}"))
}

fn raised(instance: &str) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: "Go".to_string(),
        data: "\"payload\"".to_string(),
    }
}

/// Enqueues `item` for the orchestrator.
async fn enqueue(p: &PostgresProvider, item: WorkItem) {
    let what = format!("{item:?}");
    p.enqueue_for_orchestrator(item, None)
        .await
        .unwrap_or_else(|e| panic!("enqueue {what}: {e}"));
}

/// One fetch that returns at once.
async fn fetch_now(
    p: &PostgresProvider,
) -> Option<(duroxide::providers::OrchestrationItem, String, u32)> {
    p.fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
}

/// Queues `n` copies of `orphan` (a message of `item_kind` `kind` for
/// instance `ghost`) for the instances `ghost-1` to `ghost-n`, none of
/// which started, then the start of instance `first` behind them. The
/// orphans are written behind the provider's back: thousands of enqueues
/// one by one would be the slow part of a test.
async fn orphans_ahead_of_a_start(
    schema: &TestSchema,
    p: &PostgresProvider,
    kind: &str,
    orphan: &WorkItem,
    n: usize,
) {
    sqlx::query(schema.statement(
        "INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms) \
         SELECT 'ghost-' || g, $2, replace($1, 'ghost', 'ghost-' || g), 0, 0 \
           FROM generate_series(1, $3) g",
    ))
    .bind(json(orphan))
    .bind(kind)
    .bind(i32::try_from(n).expect("count"))
    .execute(&schema.pool)
    .await
    .expect("insert orphans");
    enqueue(p, start("first")).await;
}

in_both_modes!(events_for_unknown_ids_do_not_stall_the_queue:
    events_for_unknown_ids_do_not_stall_the_queue_procedures,
    events_for_unknown_ids_do_not_stall_the_queue_inline);

/// The reported failure: events and cancellations for 32 ids that were never
/// started, then a real one-activity orchestration, which must complete.
async fn events_for_unknown_ids_do_not_stall_the_queue(mode: SqlMode) {
    with_schema("orphan_stall", |schema| async move {
        let _slot = Slot::acquire(Kind::Runtime);
        let p = Arc::new(provider(&schema, mode, Duration::from_secs(3600)).await);
        let client = Client::new(p.clone());
        for i in 0..32 {
            let id = format!("never-started-{i}");
            client.raise_event(&id, "Go", "x").await.expect("raise");
            client.cancel_instance(&id, "gone").await.expect("cancel");
        }
        let activities = crate::fixtures::echo_activities();
        let orchestrations = OrchestrationRegistry::builder()
            .register(
                "One",
                |ctx: OrchestrationContext, input: String| async move {
                    ctx.schedule_activity("Echo", input).await
                },
            )
            .build();
        let options = RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(10),
            ..Default::default()
        };
        let rt = Runtime::start_with_options(p.clone(), activities, orchestrations, options).await;
        client
            .start_orchestration("real", "One", "hello")
            .await
            .expect("start");
        let status = client
            .wait_for_orchestration("real", Duration::from_secs(15))
            .await;
        rt.shutdown(None).await;
        match status {
            Ok(OrchestrationStatus::Completed { output, .. }) => assert_eq!(output, "hello"),
            other => panic!("{mode}: the real orchestration did not complete: {other:?}"),
        }
        // Each unknown id has its event and its cancellation parked, visible
        // to an operator, and counted in the queue depth.
        let orphans = p.orphaned_instances(100).await.expect("orphans");
        assert_eq!(orphans.len(), 32, "{orphans:?}");
        assert!(orphans.iter().all(|o| o.messages == 2), "{orphans:?}");
        let depths = p.get_queue_depths().await.expect("depths");
        assert_eq!(depths.orchestrator_queue, 64);
    })
    .await;
}

in_both_modes!(ten_thousand_orphans_stay_out_of_the_way:
    ten_thousand_orphans_stay_out_of_the_way_procedures,
    ten_thousand_orphans_stay_out_of_the_way_inline);

/// 10,000 orphans queued ahead of real work: a waiting fetch parks them and
/// claims the real instance; once parked, they cost later fetches nothing.
async fn ten_thousand_orphans_stay_out_of_the_way(mode: SqlMode) {
    with_schema("orphan_flood", |schema| async move {
        let p = provider(&schema, mode, Duration::from_secs(3600)).await;
        orphans_ahead_of_a_start(&schema, &p, "ExternalRaised", &raised("ghost"), 10_000).await;

        // Fetches work through the orphans ahead of the start, each parking
        // at most its 16 candidates (inline mode sends each candidate's
        // statements from here: seconds of round trips, hence a slot of its
        // own and a deadline for a busy machine).
        let _slot = Slot::acquire(Kind::Runtime);
        let begun = Instant::now();
        let mut calls = 0;
        let (item, token, _) = loop {
            calls += 1;
            if let Some(claimed) = fetch_now(&p).await {
                break claimed;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(300),
                "{mode}: the start was not reached in {calls} fetches"
            );
        };
        eprintln!(
            "{mode}: parking 10,000 orphans ahead of the first start took {calls} fetches, {:?}",
            begun.elapsed()
        );
        assert!(calls <= 10_000 / 16 + 2, "{calls} fetches");
        assert_eq!(item.instance, "first");
        p.abandon_orchestration_item(&token, None, false)
            .await
            .expect("abandon");
        let parked = p.orphaned_instances(20_000).await.expect("orphans");
        assert_eq!(parked.len(), 10_000);

        // Parked, they are not met again: the next start is the first
        // candidate of a single fetch.
        enqueue(&p, start("second")).await;
        let mut claimed = Vec::new();
        while let Some((item, token, _)) = fetch_now(&p).await {
            claimed.push(item.instance.clone());
            p.abandon_orchestration_item(&token, Some(Duration::from_secs(60)), false)
                .await
                .expect("abandon");
            assert!(claimed.len() <= 2, "{claimed:?}");
        }
        claimed.sort();
        assert_eq!(claimed, ["first", "second"]);
        let unparked: i64 = sqlx::query_scalar(schema.statement(
            "SELECT count(*) FROM {{schema}}.orchestrator_queue WHERE orphan_since_ms IS NULL AND instance_id LIKE 'ghost-%'",
        ))
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(unparked, 0);
    })
    .await;
}

in_both_modes!(an_event_raised_before_its_start_is_delivered_with_it:
    an_event_raised_before_its_start_is_delivered_with_it_procedures,
    an_event_raised_before_its_start_is_delivered_with_it_inline);

async fn an_event_raised_before_its_start_is_delivered_with_it(mode: SqlMode) {
    with_schema("orphan_early", |schema| async move {
        let p = provider(&schema, mode, Duration::from_secs(3600)).await;
        enqueue(&p, raised("early")).await;
        assert!(fetch_now(&p).await.is_none(), "nothing can run yet");
        let orphans = p.orphaned_instances(10).await.expect("orphans");
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].instance_id, "early");
        assert_eq!(orphans[0].messages, 1);

        enqueue(&p, start("early")).await;
        let (item, token, attempts) = fetch_now(&p).await.expect("the start is claimed");
        assert_eq!(attempts, 1, "parking does not count as an attempt");
        assert_eq!(item.messages.len(), 2, "{:?}", item.messages);
        assert!(matches!(item.messages[0], WorkItem::ExternalRaised { .. }));
        assert!(matches!(
            item.messages[1],
            WorkItem::StartOrchestration { .. }
        ));
        // Abandoned, the batch is an ordinary one: visible again at once, no
        // longer listed as orphaned.
        p.abandon_orchestration_item(&token, None, false)
            .await
            .expect("abandon");
        assert!(p.orphaned_instances(10).await.expect("orphans").is_empty());
        let (item, _, _) = fetch_now(&p).await.expect("claimed again");
        assert_eq!(item.messages.len(), 2);
    })
    .await;
}

in_both_modes!(orphans_are_dropped_when_their_retention_ends:
    orphans_are_dropped_when_their_retention_ends_procedures,
    orphans_are_dropped_when_their_retention_ends_inline);

async fn orphans_are_dropped_when_their_retention_ends(mode: SqlMode) {
    with_schema("orphan_retention", |schema| async move {
        // Zero retention: dropped when first found.
        let eager = provider(&schema, mode, Duration::ZERO).await;
        enqueue(&eager, raised("gone-now")).await;
        assert!(fetch_now(&eager).await.is_none());
        assert_eq!(
            eager
                .get_queue_depths()
                .await
                .expect("depths")
                .orchestrator_queue,
            0
        );

        let p = provider(&schema, mode, Duration::from_millis(300)).await;
        enqueue(&p, raised("gone-later")).await;
        assert!(fetch_now(&p).await.is_none());
        let orphans = p.orphaned_instances(10).await.expect("orphans");
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].drop_at_ms, orphans[0].orphan_since_ms + 300);
        // Once the retention has passed, the next fetch drops it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p
            .get_queue_depths()
            .await
            .expect("depths")
            .orchestrator_queue
            > 0
        {
            assert!(Instant::now() < deadline, "the orphan was never dropped");
            assert!(fetch_now(&p).await.is_none());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.orphaned_instances(10).await.expect("orphans").is_empty());
    })
    .await;
}

fn queued(instance: &str, data: &str) -> WorkItem {
    WorkItem::QueueMessage {
        instance: instance.to_string(),
        name: "Config".to_string(),
        data: data.to_string(),
    }
}

in_both_modes!(an_event_queued_while_the_start_is_held_back_is_delivered_with_it:
    an_event_queued_while_the_start_is_held_back_is_delivered_with_it_procedures,
    an_event_queued_while_the_start_is_held_back_is_delivered_with_it_inline);

/// A start abandoned with a delay (duroxide's backoff for an orchestration
/// this node does not know, on a rolling deploy), then an `enqueue_event`
/// for the same id: the event waits for the start and comes with it, rather
/// than being dropped as one for an instance that will never start.
async fn an_event_queued_while_the_start_is_held_back_is_delivered_with_it(mode: SqlMode) {
    with_schema("orphan_held_start", |schema| async move {
        let p = provider(&schema, mode, Duration::from_secs(3600)).await;
        enqueue(&p, start("held")).await;
        let (_, token, _) = fetch_now(&p).await.expect("the start is claimed");
        p.abandon_orchestration_item(&token, Some(Duration::from_secs(60)), false)
            .await
            .expect("abandon with a delay");
        enqueue(&p, queued("held", "v1")).await;

        assert!(fetch_now(&p).await.is_none(), "{mode}: the start is held back");
        let kinds: Vec<String> = sqlx::query_scalar(schema.statement(
            "SELECT item_kind FROM {{schema}}.orchestrator_queue WHERE instance_id = 'held' ORDER BY id",
        ))
        .fetch_all(&schema.pool)
        .await
        .expect("queue");
        assert_eq!(kinds, ["StartOrchestration", "QueueMessage"], "{mode}");

        // The backoff ends (moved to now rather than waited for).
        sqlx::query(schema.statement(
            "UPDATE {{schema}}.orchestrator_queue \
                SET visible_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
              WHERE instance_id = 'held' AND item_kind = 'StartOrchestration'",
        ))
        .execute(&schema.pool)
        .await
        .expect("the backoff ends");
        let (item, _, _) = fetch_now(&p).await.expect("the start is claimed again");
        assert_eq!(item.instance, "held");
        assert_eq!(item.messages.len(), 2, "{mode}: {:?}", item.messages);
        assert!(matches!(
            item.messages[0],
            WorkItem::StartOrchestration { .. }
        ));
        assert!(
            matches!(&item.messages[1], WorkItem::QueueMessage { data, .. } if data == "v1"),
            "{mode}: {:?}",
            item.messages
        );
    })
    .await;
}

in_both_modes!(queued_events_for_unknown_ids_do_not_stall_the_queue:
    queued_events_for_unknown_ids_do_not_stall_the_queue_procedures,
    queued_events_for_unknown_ids_do_not_stall_the_queue_inline);

/// 2,000 `enqueue_event`s for ids that never started, queued ahead of real
/// work: each fetch drops up to 16 of them, as it parks up to 16 other
/// orphans, so the real instance is reached within n / 16 + 2 fetches.
async fn queued_events_for_unknown_ids_do_not_stall_the_queue(mode: SqlMode) {
    with_schema("orphan_queued_flood", |schema| async move {
        const ORPHANS: usize = 2_000;
        let p = provider(&schema, mode, Duration::from_secs(3600)).await;
        orphans_ahead_of_a_start(&schema, &p, "QueueMessage", &queued("ghost", "x"), ORPHANS).await;

        let _slot = Slot::acquire(Kind::Runtime);
        let mut calls = 0;
        let item = loop {
            calls += 1;
            if let Some((item, _, _)) = fetch_now(&p).await {
                break item;
            }
            assert!(
                calls <= ORPHANS / 16 + 2,
                "{mode}: the start was not reached in {calls} fetches"
            );
        };
        assert_eq!(item.instance, "first");
        // Dropped, not parked: only the (claimed) start is left.
        assert!(p.orphaned_instances(10).await.expect("orphans").is_empty());
        let left: i64 = sqlx::query_scalar(
            schema.statement("SELECT count(*) FROM {{schema}}.orchestrator_queue"),
        )
        .fetch_one(&schema.pool)
        .await
        .expect("count");
        assert_eq!(left, 1, "{mode}");
    })
    .await;
}
