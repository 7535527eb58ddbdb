//! A rolling upgrade as a runtime role sees it: a process of the previous
//! build starting while the next build's procedures are installed.

use std::sync::Arc;

use duroxide_postgres::SqlMode;

use super::{owner_installs_and_grants, pool_as, smoke_path, verify_as, with_roles};
use crate::support::with_schema;

/// A build meeting a newer build's procedures runs inline SQL beside them,
/// which a runtime role with `EXECUTE` only cannot: it has no right on any
/// table. Such a role keeps calling the procedures (a release keeps the
/// previous build's calls valid, and processes already running call them
/// anyway) instead of starting on inline SQL that fails every call with
/// `permission denied` while its health reads ready.
#[tokio::test]
async fn an_execute_only_role_of_the_previous_build_keeps_calling_the_newer_procedures() {
    with_roles(1, |roles| async move {
        let role = roles[0].clone();
        with_schema("roles_rolling", |schema| async move {
            owner_installs_and_grants(&schema, &role, SqlMode::StoredProcedures).await;
            // The next build's procedures, as this build sees them.
            schema
                .run_all(&[
                    "UPDATE {{schema}}._duroxide_procedures SET crate_version = '999.0.0'",
                    "UPDATE {{schema}}._duroxide_procedures SET checksum = '\\x01' \
                     WHERE name = 'ack_work_item'",
                ])
                .await;
            let runtime_pool = pool_as(&role, 8).await;
            let store = verify_as(&runtime_pool, &schema, SqlMode::StoredProcedures).await;
            assert_eq!(store.sql_mode(), SqlMode::StoredProcedures);
            let health = store.health().await;
            assert!(health.is_ready(), "{health:?}");
            smoke_path(Arc::new(store)).await;
            runtime_pool.close().await;
        })
        .await;
    })
    .await;
}
