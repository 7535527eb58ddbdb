//! A failure is recorded whatever the payload limit. duroxide's poison
//! failure carries what it could not process, escaped again: for a turn the
//! batch's messages, for an activity its input. An application's error can
//! be long too. Refused for its size, a failure's ack failed every time:
//! duroxide ignores the poison ack's outcome, the lease ran out, the next
//! fetch poisoned the instance again, and it never ended; an activity's
//! failure was run again up to its attempts, side effects included, and
//! then met the same refusal as poison. Failures (`ActivityFailed` and
//! `SubOrchFailed` messages, the failure events, a failed execution's
//! output) are held to the larger bound of a history a fetch may read
//! (`max_history_bytes`) instead; everything else keeps the payload limit.

use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, TagFilter, WorkItem};
use duroxide::{AppErrorKind, ErrorDetails, Event, EventKind};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

use super::{LOCK, provider};
use crate::fixtures::{activity, event, metadata, start};
use crate::support::{in_both_modes, with_schema};

fn failure(text: String) -> ErrorDetails {
    ErrorDetails::Application {
        kind: AppErrorKind::OrchestrationFailed,
        message: text,
        retryable: false,
    }
}

/// Queues activity `id` of instance `failing` and claims it: its token.
async fn claimed_activity(p: &PostgresProvider, id: u64) -> String {
    p.enqueue_for_worker(activity("failing", id))
        .await
        .expect("enqueue activity");
    let (_, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .expect("fetch work")
        .expect("claimed work");
    token
}

in_both_modes!(a_failure_larger_than_the_payload_limit_is_recorded:
    a_failure_larger_than_the_payload_limit_is_recorded_procedures,
    a_failure_larger_than_the_payload_limit_is_recorded_inline);

async fn a_failure_larger_than_the_payload_limit_is_recorded(mode: SqlMode) {
    with_schema("limit_failure", |schema| async move {
        let p = provider(
            &schema,
            PostgresOptions::default()
                .sql_mode(mode)
                .max_payload_bytes(4096),
        )
        .await;
        p.enqueue_for_orchestrator(start("failing"), None)
            .await
            .expect("enqueue");

        // An activity fails with an error longer than the limit: recorded.
        let token = claimed_activity(&p, 2).await;
        let failed = WorkItem::ActivityFailed {
            instance: "failing".to_string(),
            execution_id: 1,
            id: 2,
            details: failure("e".repeat(10_000)),
        };
        p.ack_work_item(&token, Some(failed))
            .await
            .unwrap_or_else(|e| panic!("{mode}: the activity's failure: {e:?}"));
        assert_eq!(
            p.get_queue_depths()
                .await
                .expect("depths")
                .orchestrator_queue,
            2,
            "{mode}: the start and the failure"
        );

        // The turn that fails the orchestration, as duroxide's poison does.
        let (_, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");
        let failed_event = Event::with_event_id(
            2,
            "failing".to_string(),
            1,
            None,
            EventKind::OrchestrationFailed {
                details: failure("p".repeat(10_000)),
            },
        );
        let mut done = metadata();
        done.status = Some("Failed".to_string());
        done.output = Some("o".repeat(10_000));
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("failing", 1), failed_event],
            vec![],
            vec![],
            done,
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: the orchestration's failure: {e:?}"));
        assert_eq!(p.read("failing").await.expect("read").len(), 2, "{mode}");

        // Anything else keeps the limit: a result that long is refused.
        let token = claimed_activity(&p, 3).await;
        let completed = WorkItem::ActivityCompleted {
            instance: "failing".to_string(),
            execution_id: 1,
            id: 3,
            result: "r".repeat(10_000),
        };
        let err = p
            .ack_work_item(&token, Some(completed))
            .await
            .expect_err("a long result is refused");
        assert!(err.to_string().contains("4096"), "{mode}: {err}");
    })
    .await;
}
