//! A worker that holds a session, and the claims its acks make ahead. The
//! claim takes no session's item (it would write the session's row), so
//! while a worker holds a session its acks claim nothing ahead: its next
//! fetch is a fetch of its own, which takes its session's items in their
//! turn. Claiming ahead anyway, each ack handed the worker the next item
//! without a session, and its session's items waited for as long as such
//! items kept coming (no other worker may take them while the session is
//! held), up to the session's idle timeout.

use std::time::Duration;

use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider, SqlMode};

use super::{LEASE, LONG_WINDOW, activity_id, enqueue, provider};
use crate::fixtures;
use crate::sessions::fetch_in_session;
use crate::support::{in_both_modes, with_schema};

in_both_modes!(a_held_sessions_items_come_in_their_turn:
    a_held_sessions_items_come_in_their_turn_procedures,
    a_held_sessions_items_come_in_their_turn_inline);

/// Worker `w1` takes session `s1` with its first item, then runs items
/// without a session; `s1`'s second item, queued before four more without
/// a session, comes to `w1` first.
async fn a_held_sessions_items_come_in_their_turn(mode: SqlMode) {
    with_schema(&format!("ahead_held_session_{mode}"), |schema| async move {
        let options = PostgresOptions::default().prefetch_window(LONG_WINDOW);
        let p = provider(&schema, mode, options).await;
        // A dispatcher's task: claims made ahead are kept per tokio task.
        let order = tokio::spawn(async move { dispatch(&p).await })
            .await
            .expect("the dispatcher");
        assert_eq!(
            order,
            vec![91, 2, 3, 4, 5],
            "{mode}: the held session's item came in its turn"
        );
    })
    .await;
}

/// The dispatcher's side of [`a_held_sessions_items_come_in_their_turn`]:
/// the ids of the five items fetched after the session's second is queued.
async fn dispatch(p: &PostgresProvider) -> Vec<u64> {
    let next = || async {
        let (item, token, _) = fetch_in_session(p, "w1", LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("an activity");
        (activity_id(&item), token)
    };
    p.enqueue_for_worker(fixtures::session_activity("i1", 90, "s1"))
        .await
        .expect("the session's first");
    let (first, token) = next().await;
    assert_eq!(first, 90);
    p.ack_work_item(&token, None).await.expect("ack");
    p.enqueue_for_worker(fixtures::activity("i1", 1))
        .await
        .expect("one without a session");
    let (mut id, mut token) = next().await;
    assert_eq!(id, 1);

    p.enqueue_for_worker(fixtures::session_activity("i1", 91, "s1"))
        .await
        .expect("the session's second");
    enqueue(p, 4).await;
    let mut order: Vec<u64> = Vec::new();
    for _ in 0..5 {
        p.ack_work_item(&token, None).await.expect("ack");
        (id, token) = next().await;
        order.push(id);
    }
    order
}
