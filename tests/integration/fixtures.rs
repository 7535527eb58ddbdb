//! Work items, events and metadata for tests and benchmarks that drive the
//! provider directly. Shared by the integration binary and
//! `benches/provider_ops.rs` (which includes this file by path), so it uses
//! nothing but duroxide.

#![allow(dead_code)]

use duroxide::ActivityContext;
use duroxide::providers::{ExecutionMetadata, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{Event, EventKind};

/// Orchestration name every fixture uses.
pub const ORCHESTRATION: &str = "Fixture";

/// A `StartOrchestration` for execution 1 of `instance`.
pub fn start(instance: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.to_string(),
        orchestration: ORCHESTRATION.to_string(),
        input: "{}".to_string(),
        version: Some("1.0.0".to_string()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: 1,
    }
}

/// `item` as the provider stores it (`work_item` columns), for rows written
/// behind the provider's back.
pub fn json(item: &WorkItem) -> String {
    serde_json::to_string(item).unwrap_or_else(|e| panic!("serialize {item:?}: {e}"))
}

/// An `ActivityExecute` of `instance`'s execution 1 with scheduling event `id`.
pub fn activity(instance: &str, id: u64) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        name: "Work".to_string(),
        input: id.to_string(),
        session_id: None,
        tag: None,
    }
}

/// [`activity`] `id` of `instance`, in session `session`.
pub fn session_activity(instance: &str, id: u64, session: &str) -> WorkItem {
    routed_activity(instance, id, Some(session), None)
}

/// [`activity`] `id` of `instance`, with tag `tag`.
pub fn tagged_activity(instance: &str, id: u64, tag: &str) -> WorkItem {
    routed_activity(instance, id, None, Some(tag))
}

/// [`activity`] `id` of `instance`, in `session` and with `tag`.
fn routed_activity(instance: &str, id: u64, session: Option<&str>, tag: Option<&str>) -> WorkItem {
    match activity(instance, id) {
        WorkItem::ActivityExecute {
            instance,
            execution_id,
            id,
            name,
            input,
            ..
        } => WorkItem::ActivityExecute {
            instance,
            execution_id,
            id,
            name,
            input,
            session_id: session.map(str::to_string),
            tag: tag.map(str::to_string),
        },
        other => other,
    }
}

/// History event `id` of execution 1: `OrchestrationStarted` for id 1,
/// `ActivityScheduled` after that.
pub fn event(instance: &str, id: u64) -> Event {
    let kind = if id == 1 {
        EventKind::OrchestrationStarted {
            name: ORCHESTRATION.to_string(),
            version: "1.0.0".to_string(),
            input: "{}".to_string(),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        }
    } else {
        EventKind::ActivityScheduled {
            name: "Work".to_string(),
            input: id.to_string(),
            session_id: None,
            tag: None,
        }
    };
    Event::with_event_id(id, instance.to_string(), 1, None, kind)
}

/// Metadata of a first turn: creates the instance.
pub fn metadata() -> ExecutionMetadata {
    ExecutionMetadata {
        orchestration_name: Some(ORCHESTRATION.to_string()),
        orchestration_version: Some("1.0.0".to_string()),
        ..Default::default()
    }
}

/// The `ActivityCompleted` of `instance`'s execution 1 for scheduling event `id`.
pub fn completion(instance: &str, id: u64) -> WorkItem {
    WorkItem::ActivityCompleted {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        result: "\"done\"".to_string(),
    }
}

/// An activity registry with one activity, `Echo`, that returns its input:
/// what the runtime-driven tests schedule when the activity itself does not
/// matter.
pub fn echo_activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .build()
}

/// Claims the next orchestration turn on `provider` (leased for `lease`)
/// and acks it with one history event; panics when there is none or a
/// call fails. Returns the instance.
pub async fn claim_and_ack_turn<P: duroxide::providers::Provider + ?Sized>(
    provider: &P,
    lease: std::time::Duration,
) -> String {
    let (item, token, _) = provider
        .fetch_orchestration_item(lease, std::time::Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("a turn to claim");
    ack_first_turn(provider, &token, &item.instance)
        .await
        .expect("ack");
    item.instance
}

/// Acks `instance`'s first turn, leased as `token`: its one history event
/// (`OrchestrationStarted`), nothing sent, the instance created.
pub async fn ack_first_turn<P: duroxide::providers::Provider + ?Sized>(
    provider: &P,
    token: &str,
    instance: &str,
) -> Result<(), duroxide::providers::ProviderError> {
    provider
        .ack_orchestration_item(
            token,
            1,
            vec![event(instance, 1)],
            vec![],
            vec![],
            metadata(),
            vec![],
        )
        .await
}

/// Starts `fan-{i}` for each `i` of `ids` on `client`: duroxide's stress
/// `FanoutOrchestration` (`provider_stress_tests::create_default_orchestrations`)
/// with five activities each.
pub async fn start_fan_outs(client: &duroxide::Client, ids: std::ops::Range<usize>) {
    for i in ids {
        client
            .start_orchestration(
                format!("fan-{i}"),
                "FanoutOrchestration",
                r#"{"task_count":5}"#,
            )
            .await
            .expect("start");
    }
}

/// Waits for `fan-{i}` of each `i` of `ids` on `client`, each for at most
/// `within`; panics, naming `who`, unless every one completed.
pub async fn fan_outs_complete(
    client: &duroxide::Client,
    ids: std::ops::Range<usize>,
    within: std::time::Duration,
    who: &str,
) {
    for i in ids {
        let status = client
            .wait_for_orchestration(&format!("fan-{i}"), within)
            .await
            .expect("wait");
        assert!(
            matches!(status, duroxide::OrchestrationStatus::Completed { .. }),
            "{who}: fan-{i}: {status:?}"
        );
    }
}
