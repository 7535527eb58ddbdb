//! A timer that never fires. duroxide saturates a timer's `fire_at_ms`
//! (`schedule_timer(Duration::MAX)` gives `u64::MAX`), which is past what a
//! `bigint` holds. The turn that schedules it commits, and the timer stays
//! out of every fetch's way, as a delay that long does, instead of the ack
//! being refused (and the turn poisoned at the end of its attempts).

use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, WorkItem};
use duroxide_postgres::{PostgresOptions, SqlMode};

use super::{LOCK, provider};
use crate::fixtures::{event, metadata, start};
use crate::support::{in_both_modes, with_schema};

in_both_modes!(a_timer_that_never_fires_is_scheduled:
    a_timer_that_never_fires_is_scheduled_procedures,
    a_timer_that_never_fires_is_scheduled_inline);

async fn a_timer_that_never_fires_is_scheduled(mode: SqlMode) {
    with_schema("limit_timer", |schema| async move {
        let p = provider(&schema, PostgresOptions::default().sql_mode(mode)).await;
        p.enqueue_for_orchestrator(start("never"), None)
            .await
            .expect("enqueue");
        let (_, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");
        let timer = WorkItem::TimerFired {
            instance: "never".to_string(),
            execution_id: 1,
            id: 2,
            fire_at_ms: u64::MAX,
        };
        p.ack_orchestration_item(
            &token,
            1,
            vec![event("never", 1)],
            vec![],
            vec![timer],
            metadata(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: the turn with the timer: {e:?}"));
        assert_eq!(
            p.get_queue_depths()
                .await
                .expect("depths")
                .orchestrator_queue,
            1,
            "{mode}: the timer is queued"
        );
        assert!(
            p.fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .expect("fetch")
                .is_none(),
            "{mode}: and not due"
        );
    })
    .await;
}
