//! What each call costs the calling process before it reaches the server:
//! the size of the future a trait method returns. duroxide's traits are
//! `async_trait`s, so every call builds its future and moves it whole into
//! a heap box, and the runtime makes several such calls per activity. A
//! wrapper that holds the future it wraps twice (an `async fn` keeps its
//! argument and the awaited copy side by side) doubles every operation
//! wrapped in it; nested, they made a worker's ack a 132 KiB future in a
//! release build, copied whole on each call.

use std::time::Duration;

use duroxide::providers::management::{InstanceFilter, PruneOptions};
use duroxide::providers::{
    ExecutionMetadata, Provider, ProviderAdmin, SessionFetchConfig, TagFilter,
};
use duroxide_postgres::SqlMode;

use crate::fixtures;
use crate::support::with_schema;

/// The most a call's future may take, in a test or a release build. On
/// 2026-12-06 the largest (a turn's ack) measured 8.9 KiB in the test
/// build and 18.0 KiB in a release build (which inlines more); with the
/// doubling wrappers a turn's ack took 70 KiB and a worker's ack 50 KiB in
/// the test build.
const MOST_BYTES: usize = 24 * 1024;

/// The size of each trait method's future, by method, built but never
/// polled (nothing reaches the server).
fn sizes(provider: &duroxide_postgres::PostgresProvider) -> Vec<(&'static str, usize)> {
    let p: &dyn Provider = provider;
    let a: &dyn ProviderAdmin = provider;
    let lease = Duration::from_secs(30);
    let session = SessionFetchConfig {
        owner_id: "owner".to_string(),
        lock_timeout: lease,
    };
    let tags = TagFilter::default();
    let ids = vec!["i".to_string()];
    macro_rules! size {
        ($name:literal, $call:expr) => {{
            let future = $call;
            ($name, std::mem::size_of_val(&*future))
        }};
    }
    vec![
        size!(
            "fetch_orchestration_item",
            p.fetch_orchestration_item(lease, lease, None)
        ),
        size!(
            "ack_orchestration_item",
            p.ack_orchestration_item(
                "t",
                1,
                vec![],
                vec![],
                vec![],
                ExecutionMetadata::default(),
                vec![],
            )
        ),
        size!(
            "abandon_orchestration_item",
            p.abandon_orchestration_item("t", None, false)
        ),
        size!(
            "renew_orchestration_item_lock",
            p.renew_orchestration_item_lock("t", lease)
        ),
        size!(
            "enqueue_for_orchestrator",
            p.enqueue_for_orchestrator(fixtures::start("i"), None)
        ),
        size!("read", p.read("i")),
        size!("read_with_execution", p.read_with_execution("i", 1)),
        size!(
            "append_with_execution",
            p.append_with_execution("i", 1, vec![])
        ),
        size!(
            "enqueue_for_worker",
            p.enqueue_for_worker(fixtures::activity("i", 1))
        ),
        size!(
            "fetch_work_item",
            p.fetch_work_item(lease, lease, Some(&session), &tags)
        ),
        size!("ack_work_item", p.ack_work_item("t", None)),
        size!("renew_work_item_lock", p.renew_work_item_lock("t", lease)),
        size!("abandon_work_item", p.abandon_work_item("t", None, false)),
        size!(
            "renew_session_lock",
            p.renew_session_lock(&["owner"], lease, lease)
        ),
        size!(
            "cleanup_orphaned_sessions",
            p.cleanup_orphaned_sessions(lease)
        ),
        size!("get_custom_status", p.get_custom_status("i", 0)),
        size!("get_kv_value", p.get_kv_value("i", "k")),
        size!("get_kv_all_values", p.get_kv_all_values("i")),
        size!("get_instance_stats", p.get_instance_stats("i")),
        size!("list_instances", a.list_instances()),
        size!(
            "list_instances_by_status",
            a.list_instances_by_status("Running")
        ),
        size!("list_executions", a.list_executions("i")),
        size!(
            "read_history_with_execution_id",
            a.read_history_with_execution_id("i", 1)
        ),
        size!("read_history", a.read_history("i")),
        size!("latest_execution_id", a.latest_execution_id("i")),
        size!("get_instance_info", a.get_instance_info("i")),
        size!("get_execution_info", a.get_execution_info("i", 1)),
        size!("get_system_metrics", a.get_system_metrics()),
        size!("get_queue_depths", a.get_queue_depths()),
        size!("list_children", a.list_children("i")),
        size!("get_parent_id", a.get_parent_id("i")),
        size!(
            "delete_instances_atomic",
            a.delete_instances_atomic(&ids, false)
        ),
        size!(
            "delete_instance_bulk",
            a.delete_instance_bulk(InstanceFilter::default())
        ),
        size!(
            "prune_executions",
            a.prune_executions("i", PruneOptions::default())
        ),
        size!(
            "prune_executions_bulk",
            a.prune_executions_bulk(InstanceFilter::default(), PruneOptions::default())
        ),
    ]
}

#[tokio::test]
async fn every_operations_future_is_small_in_both_modes() {
    for mode in [SqlMode::StoredProcedures, SqlMode::InlineSql] {
        with_schema(&format!("footprint_{mode}"), |schema| async move {
            let provider = schema.provider_in(mode).await;
            let sizes = sizes(&provider);
            let table: String = sizes
                .iter()
                .map(|(name, bytes)| format!("\n  {name}: {bytes} bytes"))
                .collect();
            let over: Vec<_> = sizes
                .iter()
                .filter(|(_, bytes)| *bytes > MOST_BYTES)
                .collect();
            assert!(
                over.is_empty(),
                "{mode}: futures over {MOST_BYTES} bytes: {over:?}; all:{table}"
            );
        })
        .await;
    }
}
