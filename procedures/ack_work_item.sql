-- ack_work_item: remove a completed activity and, when given, enqueue its
-- completion for the orchestration, atomically. A token whose lock is gone
-- (cancelled, stolen, or expired) is DX001 and nothing changes. The item's
-- session, if any, records the activity.
CREATE OR REPLACE FUNCTION {{schema}}.ack_work_item(
    p_lock_token    text,
    p_instance_id   text,
    p_item_kind     text,
    p_work_item     text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     bigint := {{schema}}._now_ms();
    v_session text;
BEGIN
    DELETE FROM {{schema}}.worker_queue q
     WHERE q.lock_token = p_lock_token AND q.locked_until_ms > v_now
    RETURNING q.session_id INTO v_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX001',
            MESSAGE = 'Invalid lock token: work item not found (cancelled, stolen, or lock expired)';
    END IF;
    IF v_session IS NOT NULL THEN
        UPDATE {{schema}}.sessions s SET last_activity_at_ms = v_now
         WHERE s.session_id = v_session AND s.locked_until_ms > v_now;
    END IF;
    IF p_work_item IS NOT NULL THEN
        INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
        VALUES (p_instance_id, p_item_kind, p_work_item, v_now, v_now);
    END IF;
END
$$;
