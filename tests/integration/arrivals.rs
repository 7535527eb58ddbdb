//! A message that arrives while its instance's turn commits wakes a waiting
//! fetch as soon as the lease is gone, not when the old lease would have
//! ended. The interleaving is driven exactly: the ack is held at its commit
//! by a deferred trigger waiting on an advisory lock the test holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};
use sqlx::PgPool;

use crate::fixtures::{event, metadata, start};
use crate::support::{TestSchema, in_both_modes, provider_on, with_schema};

const LEASE: Duration = Duration::from_secs(30);

/// A trigger that holds every commit that released a lease of this schema
/// until the test lets go of advisory key `gate`.
async fn hold_lease_releases_at_commit(schema: &TestSchema, gate: i64) {
    sqlx::query(&schema.sql(&format!(
        "CREATE FUNCTION {{{{schema}}}}.test_gate() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_advisory_xact_lock({gate}); RETURN NULL; END $$"
    )))
    .execute(&schema.pool)
    .await
    .expect("gate function");
    sqlx::query(&schema.sql(
        "CREATE CONSTRAINT TRIGGER test_gate AFTER DELETE ON {{schema}}.instance_locks \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {{schema}}.test_gate()",
    ))
    .execute(&schema.pool)
    .await
    .expect("gate trigger");
}

/// Whether some backend waits for a lock of this database's advisory `key`
/// (`pg_locks` spells a bigint key as its two halves).
async fn someone_waits_on(pool: &PgPool, key: i64) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
           AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}

/// Whether a backend of this database waits for a row lock (an instance's
/// claim row, held by a transaction not yet committed).
async fn someone_waits_on_an_instance_claim(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
           AND wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'tuple'))",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

in_both_modes!(an_event_arriving_while_a_turn_commits_is_fetched_at_once:
    an_event_arriving_while_a_turn_commits_is_fetched_at_once_procedures,
    an_event_arriving_while_a_turn_commits_is_fetched_at_once_inline; 4);

async fn an_event_arriving_while_a_turn_commits_is_fetched_at_once(mode: SqlMode) {
    with_schema("arrival_ack", |schema| async move {
        let owner: Arc<PostgresProvider> =
            Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
        let waiter = provider_on(&schema.pool, &schema.name, mode, true).await;
        let sender = provider_on(&schema.pool, &schema.name, mode, true).await;
        owner
            .enqueue_for_orchestrator(start("busy"), None)
            .await
            .expect("enqueue");
        let (_, token, _) = owner
            .fetch_orchestration_item(LEASE, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("claimed");

        let gate: i64 = sqlx::query_scalar("SELECT hashtext($1)::bigint")
            .bind(&schema.name)
            .fetch_one(&schema.pool)
            .await
            .expect("gate key");
        hold_lease_releases_at_commit(&schema, gate).await;
        let mut holder = schema.pool.acquire().await.expect("holder");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(gate)
            .execute(&mut *holder)
            .await
            .expect("hold gate");

        // A dispatcher waits for work; the instance is leased for 30 s.
        let fetch = tokio::spawn(async move {
            let begun = Instant::now();
            let item = waiter
                .fetch_orchestration_item(LEASE, Duration::from_secs(20), None)
                .await;
            (item, begun.elapsed())
        });
        // The turn commits, and is held at its commit.
        let acker = owner.clone();
        let ack = tokio::spawn(async move {
            acker
                .ack_orchestration_item(
                    &token,
                    1,
                    vec![event("busy", 1)],
                    vec![],
                    vec![],
                    metadata(),
                    vec![],
                )
                .await
        });
        until("the ack is held at its commit", async || {
            someone_waits_on(&schema.pool, gate).await
        })
        .await;
        // An event for the instance arrives now.
        let send = tokio::spawn(async move {
            sender
                .enqueue_for_orchestrator(
                    WorkItem::ExternalRaised {
                        instance: "busy".to_string(),
                        name: "Go".to_string(),
                        data: "1".to_string(),
                    },
                    None,
                )
                .await
        });
        let sent_or_waiting =
            async || send.is_finished() || someone_waits_on_an_instance_claim(&schema.pool).await;
        until(
            "the event is committed or waits for the turn",
            sent_or_waiting,
        )
        .await;

        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(gate)
            .execute(&mut *holder)
            .await
            .expect("release gate");
        ack.await.expect("ack task").expect("ack");
        send.await.expect("send task").expect("enqueue");

        let (item, waited) = fetch.await.expect("fetch task");
        let (item, _, _) = item.expect("fetch").expect("the event's turn is claimed");
        assert_eq!(item.instance, "busy");
        assert!(
            waited < Duration::from_secs(5),
            "{mode}: the waiting fetch slept {waited:?}, towards the old lease's end"
        );
    })
    .await;
}
