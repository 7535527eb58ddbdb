-- ack_orchestration_item: commit one orchestration turn atomically.
--
-- Validates the lease (unknown token: DX001, expired: DX002), deletes the
-- messages the turn consumed, creates or updates the instance and execution
-- rows, appends the history delta (a duplicate event id violates the primary
-- key and rolls everything back; the runtime's poison failure at its fixed
-- event id 99,999 goes after the last event when that id is taken), stores
-- status/output/pinned version, applies the custom-status and KV changes the
-- runtime recorded (KV deltas are merged into kv_store when the execution
-- ends), enqueues worker and orchestrator items, deletes cancelled
-- activities, and releases the lease.
-- Arrays carry the batches; all arrays of one batch have the same length.
--
-- No wake-up is lost to a message that arrives while the turn commits. Every
-- writer of an instance's orchestrator queue (enqueue_orchestrator_item,
-- ack_work_item, and this procedure for the instances it sends to) creates
-- or locks the instance's claim row (instance_claims) and holds it until it
-- commits; the ack tries its own instance's row (FOR UPDATE SKIP LOCKED)
-- before its last statement. Taken, any writer that has not committed yet
-- waits for this commit (so its own notification comes after the lease is
-- gone) and any that committed before is seen by the last statement's
-- snapshot; refused, a writer is in flight and the ack wakes orchestrators. The rows of
-- the instances sent to are locked first, in instance order, before any
-- other row lock, as deletes lock them (see docs/architecture.md, "Lock
-- order"). Row locks need rights on the table: a role without rights on the
-- schema cannot hold any of them (advisory keys it could).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.ack_orchestration_item{{suffix}}(
    p_lock_token        text,
    p_execution_id      bigint,
    p_event_ids         bigint[],
    p_event_types       text[],
    p_event_data        text[],
    p_name              text,
    p_version           text,
    p_parent_instance   text,
    p_status            text,
    p_output            text,
    p_pinned_major      bigint,
    p_pinned_minor      bigint,
    p_pinned_patch      bigint,
    p_custom_status_set boolean,
    p_custom_status     text,
    p_kv_ops            text[],
    p_kv_keys           text[],
    p_kv_values         text[],
    p_kv_updated_ms     bigint[],
    p_worker_items      text[],
    p_worker_instances  text[],
    p_worker_executions bigint[],
    p_worker_activities bigint[],
    p_worker_sessions   text[],
    p_worker_tags       text[],
    p_orch_instances    text[],
    p_orch_kinds        text[],
    p_orch_items        text[],
    p_orch_visible_ms   bigint[],
    p_cancel_instances  text[],
    p_cancel_executions bigint[],
    p_cancel_activities bigint[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_instance   text;
    v_until      bigint;
    v_now        bigint;
    v_quiet      boolean;
    v_key        text;
    v_value      text;
    v_updated_ms bigint;
    v_wake       text[];
    v_wake_orchestrators boolean;
    v_wake_workers       boolean;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/ack_orchestration_item/*.sql, which
    -- inline mode runs in the same order, skipping the same steps, in Rust
    -- (src/inline/turn_ack.rs).
    {{> lease}}
      INTO v_instance, v_until, v_now, v_quiet;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX001', MESSAGE = 'Invalid lock token';
    END IF;
    IF v_until <= v_now THEN
        RAISE EXCEPTION USING ERRCODE = 'DX002', MESSAGE = 'Instance lock expired';
    END IF;

    {{> consume}};

    IF p_name IS NOT NULL AND p_version IS NOT NULL THEN
        {{> upsert_instance}};
    END IF;

    {{> insert_execution}};

    IF p_pinned_major IS NOT NULL THEN
        {{> pin_version}};
    END IF;

    {{> advance_execution}};

    IF p_status = 'Failed' AND p_event_ids = ARRAY[99999]::bigint[]
       AND p_event_types = ARRAY['OrchestrationFailed'] THEN
        -- The runtime's poison failure at its fixed event id.
        {{> poison_after_last}}
          INTO p_event_ids, p_event_data;
    END IF;

    IF coalesce(pg_catalog.array_length(p_event_ids, 1), 0) > 0 THEN
        {{> append_history}};
    END IF;

    IF p_status IS NOT NULL THEN
        {{> set_status}};
    END IF;

    IF p_custom_status_set THEN
        {{> set_custom_status}};
    END IF;

    -- KV changes of this turn, in event order.
    FOR v_i IN 1..coalesce(pg_catalog.array_length(p_kv_ops, 1), 0) LOOP
        v_key := p_kv_keys[v_i];
        v_value := p_kv_values[v_i];
        v_updated_ms := p_kv_updated_ms[v_i];
        CASE p_kv_ops[v_i]
        WHEN 'set' THEN
            {{> kv_set}};
        WHEN 'clear' THEN
            {{> kv_clear}};
        ELSE -- 'clear_all'
            {{> kv_clear_all_delta}};
            {{> kv_clear_all_store}};
        END CASE;
    END LOOP;

    IF p_status IN ('Completed', 'Failed', 'ContinuedAsNew') THEN
        {{> kv_merge_upsert}};
        {{> kv_merge_delete}};
        {{> kv_merge_clear}};
    END IF;

    IF coalesce(pg_catalog.array_length(p_worker_items, 1), 0) > 0 THEN
        {{> enqueue_workers}};
    END IF;

    IF coalesce(pg_catalog.array_length(p_cancel_instances, 1), 0) > 0 THEN
        {{> cancel_activities}};
    END IF;

    IF coalesce(pg_catalog.array_length(p_orch_instances, 1), 0) > 0 THEN
        {{> enqueue_orchestrator}};
    END IF;

    -- What to wake after the commit (the caller does): orchestrators for new
    -- messages, for messages that arrived while the instance was leased or
    -- that are arriving now, workers for new activities.
    v_wake_orchestrators := coalesce(pg_catalog.array_length(p_orch_instances, 1), 0) > 0 OR NOT v_quiet;
    v_wake_workers := coalesce(pg_catalog.array_length(p_worker_items, 1), 0) > 0;
    {{> release}}
      INTO v_wake;
    RETURN v_wake;
END
$$;
