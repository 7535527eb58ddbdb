//! A neighbour's long call on a shared home. Once tenants outnumber the
//! shards, several share a home shard; a call of one of them that runs
//! long (a prune or delete over a large tenant, a migration's backfill)
//! holds the home's connection for as long as it runs. The others' leased
//! work (acks, abandons, lock renewals) must not wait for it past their
//! leases: having waited a while for the home, it borrows a connection
//! another shard has idle, which nobody waits for.

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, TagFilter};
use duroxide_postgres::SqlMode;

use super::{provider, shared_pool};
use crate::fixtures::{activity, claim_and_ack_turn, completion, start};
use crate::support::{eventually, in_both_modes, with_schemas};

in_both_modes!(a_neighbours_long_call_does_not_cost_a_tenant_its_lease:
    a_neighbours_long_call_does_not_cost_a_tenant_its_lease_procedures,
    a_neighbours_long_call_does_not_cost_a_tenant_its_lease_inline; 4);

/// Three tenants on a pool of three with one connection per tenant (two
/// shards of one, and the one connection the shared pool keeps): A and C
/// share a home (homes go to the shard with the fewest), B has the other.
/// C's delete, held up 8 s by a trigger, holds the home's connection while
/// A acks an activity it claimed for 3 s.
async fn a_neighbours_long_call_does_not_cost_a_tenant_its_lease(mode: SqlMode) {
    with_schemas("affinity_long", 3, |schemas| async move {
        let observer = schemas[0].pool.clone();
        let app = format!("affinity_long_{}", schemas[0].name);
        let shared = shared_pool(3, &app).await;
        let a = provider(&shared, &schemas[0], mode, 1).await;
        let _b = provider(&shared, &schemas[1], mode, 1).await;
        let c = Arc::new(provider(&shared, &schemas[2], mode, 1).await);

        c.enqueue_for_orchestrator(start("c1"), None)
            .await
            .expect("C's start");
        claim_and_ack_turn(c.as_ref(), Duration::from_secs(30)).await;
        schemas[2]
            .run_all(&[
                "CREATE FUNCTION {{schema}}.slow() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_sleep(8); RETURN NULL; END $$",
                "CREATE TRIGGER slow BEFORE DELETE ON {{schema}}.instances \
                 FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.slow()",
            ])
            .await;

        a.enqueue_for_worker(activity("a1", 1))
            .await
            .expect("A's activity");
        let (_, token, _) = a
            .fetch_work_item(
                Duration::from_secs(3),
                Duration::ZERO,
                None,
                &TagFilter::Any,
            )
            .await
            .expect("A's fetch")
            .expect("A's activity claimed");

        let deleting = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.delete_instance("c1", true).await }
        });
        eventually("C's delete running long on the shared home", || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event = 'PgSleep')",
            )
            .bind(&app)
            .fetch_one(&observer)
            .await
            .expect("pg_stat_activity")
        })
        .await;

        a.ack_work_item(&token, Some(completion("a1", 1)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: A's ack waited out its lease: {e:?}"));

        let deleted = deleting.await.expect("C's task");
        assert!(deleted.is_ok(), "{mode}: C's delete: {deleted:?}");
        shared.close().await;
    })
    .await;
}
