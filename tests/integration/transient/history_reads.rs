//! A turn's history that the server could not read for a while (out of
//! memory, a statement cancelled, a serialization failure or a deadlock:
//! the SQLSTATEs the provider calls retryable) costs the instance no
//! attempt: the fetch fails, retryable, and the turn is set aside for a
//! second, the other instances served meanwhile. Any other failure reading
//! it still comes back as the turn's `history_error`, for the runtime to
//! count toward poisoning the instance, as duroxide's contract asks.

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, WorkItem};
use duroxide_postgres::SqlMode;

use crate::fixtures::{claim_and_ack_turn, start};
use crate::support::{TestSchema, in_both_modes, with_schema};

const LOCK: Duration = Duration::from_secs(30);

fn raised(instance: &str, data: &str) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: "Go".to_string(),
        data: data.to_string(),
    }
}

/// Puts the schema's history behind a view whose rows of an instance named
/// in `history_gate` raise that row's SQLSTATE when read. Writes go
/// through the view to the table (an INSERT does not test the view's
/// condition).
async fn gate_history(schema: &TestSchema) {
    schema
        .run_all(&[
            "CREATE TABLE {{schema}}.history_gate (instance_id text PRIMARY KEY, code text NOT NULL)",
            "CREATE FUNCTION {{schema}}.history_open(p_instance text) RETURNS boolean
             LANGUAGE plpgsql STABLE AS $$
             DECLARE v_code text;
             BEGIN
                 SELECT g.code INTO v_code FROM {{schema}}.history_gate g WHERE g.instance_id = p_instance;
                 IF v_code IS NOT NULL THEN
                     RAISE EXCEPTION 'history of % held shut by the test', p_instance USING ERRCODE = v_code;
                 END IF;
                 RETURN true;
             END $$",
            "ALTER TABLE {{schema}}.history RENAME TO history_rows",
            "CREATE VIEW {{schema}}.history AS
             SELECT * FROM {{schema}}.history_rows h WHERE {{schema}}.history_open(h.instance_id)",
        ])
        .await;
}

async fn shut(schema: &TestSchema, instance: &str, code: &str) {
    sqlx::query(schema.statement(
        "INSERT INTO {{schema}}.history_gate VALUES ($1, $2)
         ON CONFLICT (instance_id) DO UPDATE SET code = excluded.code",
    ))
    .bind(instance)
    .bind(code)
    .execute(&schema.pool)
    .await
    .expect("shut the history");
}

async fn open(schema: &TestSchema, instance: &str) {
    sqlx::query(schema.statement("DELETE FROM {{schema}}.history_gate WHERE instance_id = $1"))
        .bind(instance)
        .execute(&schema.pool)
        .await
        .expect("open the history");
}

in_both_modes!(a_history_the_server_cannot_read_for_a_while_costs_no_attempt:
    a_history_the_server_cannot_read_for_a_while_costs_no_attempt_procedures,
    a_history_the_server_cannot_read_for_a_while_costs_no_attempt_inline);

/// i1's history raises `53200` (out of memory) when read: the fetch fails,
/// retryable, naming the instance and the SQLSTATE; the next fetch serves
/// i2; once the history reads again i1's turn comes back whole, its first
/// attempt. A failure no retry heals (`XX001`, data corrupted) is the
/// turn's `history_error`, its attempt counted.
async fn a_history_the_server_cannot_read_for_a_while_costs_no_attempt(mode: SqlMode) {
    with_schema(&format!("history_outage_{mode}"), |schema| async move {
        let p = schema.provider_in(mode).await;
        for instance in ["i1", "i2"] {
            p.enqueue_for_orchestrator(start(instance), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: start: {e:?}"));
            claim_and_ack_turn(&p, LOCK).await;
        }
        for instance in ["i1", "i2"] {
            p.enqueue_for_orchestrator(raised(instance, "go"), None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        }
        gate_history(&schema).await;
        shut(&schema, "i1", "53200").await;

        let fetch = || p.fetch_orchestration_item(LOCK, Duration::ZERO, None);
        let refused = fetch().await;
        let Err(error) = &refused else {
            panic!("{mode}: a turn without its history: {refused:?}");
        };
        assert!(error.is_retryable(), "{mode}: permanent: {error:?}");
        assert!(
            error.message.contains("i1") && error.message.contains("53200"),
            "{mode}: {error:?}"
        );
        let (item, _i2, _) = fetch()
            .await
            .unwrap_or_else(|e| panic!("{mode}: the turn was claimed again: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: the other instance was not served"));
        assert_eq!(item.instance, "i2", "{mode}");

        open(&schema, "i1").await;
        let deadline = Instant::now() + LOCK / 3;
        let (item, token, attempts) = loop {
            if let Some(claimed) = fetch()
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            {
                break claimed;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: the turn never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(item.instance, "i1", "{mode}");
        assert_eq!(item.history_error, None, "{mode}");
        assert!(!item.history.is_empty(), "{mode}: no history");
        assert_eq!(item.messages, vec![raised("i1", "go")], "{mode}");
        assert_eq!(attempts, 1, "{mode}: the refused read's attempt counted");

        // A failure that no retry heals is the runtime's to count.
        p.abandon_orchestration_item(&token, None, true)
            .await
            .unwrap_or_else(|e| panic!("{mode}: abandon: {e:?}"));
        shut(&schema, "i1", "XX001").await;
        let (item, _, attempts) = fetch()
            .await
            .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            .unwrap_or_else(|| panic!("{mode}: nothing claimed"));
        assert_eq!(item.instance, "i1", "{mode}");
        let reason = item.history_error.unwrap_or_default();
        assert!(reason.contains("XX001"), "{mode}: {reason:?}");
        assert_eq!(attempts, 1, "{mode}");
    })
    .await;
}

in_both_modes!(a_set_aside_rides_out_a_lock_wait_and_restores_the_attempt:
    a_set_aside_rides_out_a_lock_wait_and_restores_the_attempt_procedures,
    a_set_aside_rides_out_a_lock_wait_and_restores_the_attempt_inline);

/// The set-aside's abandon (its attempt not counted) runs after the claim
/// has committed with the attempt counted, so it must not give up at the
/// first lock wait, as the runtime's own abandon does not: here the lease's
/// release waits (a trigger on `instance_locks` takes an advisory key the
/// test holds) past the second an operation waits for a lock. Once the key
/// is let go the fetch returns, and the turn comes back on its first
/// attempt. (Given up on, the turn stayed leased for its whole lease with
/// the attempt counted.)
async fn a_set_aside_rides_out_a_lock_wait_and_restores_the_attempt(mode: SqlMode) {
    with_schema(&format!("history_setaside_{mode}"), |schema| async move {
        let p = std::sync::Arc::new(schema.provider_in(mode).await);
        p.enqueue_for_orchestrator(start("i1"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: start: {e:?}"));
        claim_and_ack_turn(&*p, LOCK).await;
        p.enqueue_for_orchestrator(raised("i1", "go"), None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: raise: {e:?}"));
        gate_history(&schema).await;
        shut(&schema, "i1", "53200").await;

        let (mut holder, gate) = crate::support::close_gate(&schema).await;
        schema
            .run_all(&[
                &format!(
                    "CREATE FUNCTION {{{{schema}}}}.release_gate() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN PERFORM pg_advisory_xact_lock({gate}); RETURN NULL; END $$"
                ),
                "CREATE TRIGGER release_gate AFTER DELETE ON {{schema}}.instance_locks \
                 FOR EACH ROW EXECUTE FUNCTION {{schema}}.release_gate()",
            ])
            .await;

        let fetching = {
            let p = p.clone();
            tokio::spawn(async move { p.fetch_orchestration_item(LOCK, Duration::ZERO, None).await })
        };
        // Past the second's lock wait: given up on (the fetch returns) or
        // waited out and tried again (counted as a lock time-out).
        crate::support::eventually("the set-aside's abandon to wait past a second", || async {
            fetching.is_finished() || p.admission_stats().lock_timeouts >= 1
        })
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(gate)
            .execute(&mut holder)
            .await
            .expect("let the gate go");
        let refused = fetching.await.expect("fetch task");
        let Err(error) = &refused else {
            panic!("{mode}: a turn without its history: {refused:?}");
        };
        assert!(error.is_retryable(), "{mode}: {error:?}");

        open(&schema, "i1").await;
        let deadline = Instant::now() + LOCK / 3;
        let (item, _, attempts) = loop {
            if let Some(claimed) = p
                .fetch_orchestration_item(LOCK, Duration::ZERO, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: fetch: {e:?}"))
            {
                break claimed;
            }
            assert!(Instant::now() < deadline, "{mode}: the turn never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(item.instance, "i1", "{mode}");
        assert_eq!(attempts, 1, "{mode}: the set-aside left the attempt counted");
    })
    .await;
}
