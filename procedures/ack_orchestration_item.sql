-- ack_orchestration_item: commit one orchestration turn atomically.
--
-- Validates the lease (unknown token: DX001, expired: DX002), deletes the
-- messages the turn consumed, creates or updates the instance and execution
-- rows, appends the history delta (a duplicate event id violates the primary
-- key and rolls everything back), stores status/output/pinned version,
-- applies the custom-status and KV changes the runtime recorded (KV deltas are
-- merged into kv_store when the execution ends), enqueues worker and
-- orchestrator items, deletes cancelled activities, and releases the lease.
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
-- snapshot; refused, a writer is in flight and the ack notifies. The rows of
-- the instances sent to are locked first, in instance order, before any
-- other row lock, as deletes lock them (see docs/architecture.md, "Lock
-- order"). Row locks need rights on the table: a role without rights on the
-- schema cannot hold any of them (advisory keys it could).
CREATE OR REPLACE FUNCTION {{schema}}.ack_orchestration_item(
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
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
AS $$
DECLARE
    v_instance text;
    v_until    bigint;
    v_now      bigint;
    v_quiet    boolean;
BEGIN
    IF coalesce(pg_catalog.array_length(p_orch_instances, 1), 0) > 0 THEN
        INSERT INTO {{schema}}.instance_claims AS k (instance_id)
        SELECT DISTINCT u.id FROM pg_catalog.unnest(p_orch_instances) AS u(id) ORDER BY 1
        ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false;
    END IF;

    SELECT l.instance_id, l.locked_until_ms INTO v_instance, v_until
      FROM {{schema}}.instance_locks l
     WHERE l.lock_token = p_lock_token
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX001', MESSAGE = 'Invalid lock token';
    END IF;
    v_now := {{now_ms}};
    IF v_until <= v_now THEN
        RAISE EXCEPTION USING ERRCODE = 'DX002', MESSAGE = 'Instance lock expired';
    END IF;
    -- Refused while a writer of this instance's queue is in flight.
    v_quiet := coalesce((SELECT true FROM {{schema}}.instance_claims k
                          WHERE k.instance_id = v_instance FOR UPDATE SKIP LOCKED), false);

    DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = p_lock_token;

    IF p_name IS NOT NULL AND p_version IS NOT NULL THEN
        INSERT INTO {{schema}}.instances AS i
               (instance_id, orchestration_name, orchestration_version, current_execution_id,
                parent_instance_id, created_at_ms, updated_at_ms)
        VALUES (v_instance, p_name, p_version, p_execution_id, p_parent_instance, v_now, v_now)
        ON CONFLICT (instance_id) DO UPDATE
           SET orchestration_name = EXCLUDED.orchestration_name,
               orchestration_version = EXCLUDED.orchestration_version,
               updated_at_ms = EXCLUDED.updated_at_ms;
    END IF;

    INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms)
    VALUES (v_instance, p_execution_id, 'Running', v_now)
    ON CONFLICT (instance_id, execution_id) DO NOTHING;

    IF p_pinned_major IS NOT NULL THEN
        UPDATE {{schema}}.executions e
           SET pinned_major = p_pinned_major, pinned_minor = p_pinned_minor, pinned_patch = p_pinned_patch
         WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
    END IF;

    UPDATE {{schema}}.instances i
       SET current_execution_id = greatest(i.current_execution_id, p_execution_id),
           updated_at_ms = v_now
     WHERE i.instance_id = v_instance;

    INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
    SELECT v_instance, p_execution_id, u.event_id, u.event_type, u.event_data, v_now
      FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_event_data)) AS u(event_id, event_type, event_data);

    IF p_status IS NOT NULL THEN
        UPDATE {{schema}}.executions e
           SET status = p_status, output = p_output, completed_at_ms = v_now
         WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
    END IF;

    IF p_custom_status_set THEN
        UPDATE {{schema}}.instances i
           SET custom_status = p_custom_status, custom_status_version = i.custom_status_version + 1
         WHERE i.instance_id = v_instance;
    END IF;

    -- KV changes of this turn, in event order.
    FOR v_i IN 1..coalesce(pg_catalog.array_length(p_kv_ops, 1), 0) LOOP
        CASE p_kv_ops[v_i]
        WHEN 'set' THEN
            INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
            VALUES (v_instance, p_kv_keys[v_i], p_kv_values[v_i], p_kv_updated_ms[v_i])
            ON CONFLICT (instance_id, key) DO UPDATE
               SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        WHEN 'clear' THEN
            INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
            VALUES (v_instance, p_kv_keys[v_i], NULL, v_now)
            ON CONFLICT (instance_id, key) DO UPDATE
               SET value = NULL, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        ELSE -- 'clear_all'
            UPDATE {{schema}}.kv_delta d SET value = NULL, last_updated_at_ms = v_now
             WHERE d.instance_id = v_instance;
            INSERT INTO {{schema}}.kv_delta (instance_id, key, value, last_updated_at_ms)
            SELECT s.instance_id, s.key, NULL, v_now
              FROM {{schema}}.kv_store s
             WHERE s.instance_id = v_instance
            ON CONFLICT (instance_id, key) DO NOTHING;
        END CASE;
    END LOOP;

    IF p_status IN ('Completed', 'Failed', 'ContinuedAsNew') THEN
        INSERT INTO {{schema}}.kv_store AS s (instance_id, key, value, last_updated_at_ms)
        SELECT d.instance_id, d.key, d.value, d.last_updated_at_ms
          FROM {{schema}}.kv_delta d
         WHERE d.instance_id = v_instance AND d.value IS NOT NULL
        ON CONFLICT (instance_id, key) DO UPDATE
           SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        DELETE FROM {{schema}}.kv_store s
         WHERE s.instance_id = v_instance
           AND s.key IN (SELECT d.key FROM {{schema}}.kv_delta d
                          WHERE d.instance_id = v_instance AND d.value IS NULL);
        DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = v_instance;
    END IF;

    INSERT INTO {{schema}}.worker_queue
           (work_item, visible_at_ms, instance_id, execution_id, activity_id, session_id, tag, created_at_ms)
    SELECT u.work_item, v_now, u.instance_id, u.execution_id, u.activity_id, u.session_id, u.tag, v_now
      FROM ROWS FROM (pg_catalog.unnest(p_worker_items), pg_catalog.unnest(p_worker_instances), pg_catalog.unnest(p_worker_executions), pg_catalog.unnest(p_worker_activities), pg_catalog.unnest(p_worker_sessions), pg_catalog.unnest(p_worker_tags))
           WITH ORDINALITY AS u(work_item, instance_id, execution_id, activity_id, session_id, tag, n)
     ORDER BY u.n;

    IF coalesce(pg_catalog.array_length(p_cancel_instances, 1), 0) > 0 THEN
        DELETE FROM {{schema}}.worker_queue w
         USING ROWS FROM (pg_catalog.unnest(p_cancel_instances), pg_catalog.unnest(p_cancel_executions), pg_catalog.unnest(p_cancel_activities)) AS c(instance_id, execution_id, activity_id)
         WHERE w.instance_id = c.instance_id
           AND w.execution_id = c.execution_id
           AND w.activity_id = c.activity_id;
    END IF;

    INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
    SELECT u.instance_id, u.item_kind, u.work_item, coalesce(u.visible_at_ms, v_now), v_now
      FROM ROWS FROM (pg_catalog.unnest(p_orch_instances), pg_catalog.unnest(p_orch_kinds), pg_catalog.unnest(p_orch_items), pg_catalog.unnest(p_orch_visible_ms))
           WITH ORDINALITY AS u(instance_id, item_kind, work_item, visible_at_ms, n)
     ORDER BY u.n;

    DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = p_lock_token;

    -- Wake waiters at commit: orchestrators for new messages, for messages
    -- that arrived while the instance was leased or that are arriving now,
    -- workers for new activities.
    PERFORM pg_catalog.pg_notify('{{channel}}', 'orchestrator')
      WHERE coalesce(pg_catalog.array_length(p_orch_items, 1), 0) > 0
         OR NOT v_quiet
         OR EXISTS (SELECT 1 FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = v_instance);
    PERFORM pg_catalog.pg_notify('{{channel}}', 'worker')
      WHERE coalesce(pg_catalog.array_length(p_worker_items, 1), 0) > 0;
END
$$;
