-- renew_work_item_lock: extend a live activity lock to now + p_extend_ms. A
-- missing or expired lock is DX001: that is how a worker learns its activity
-- was cancelled. The item's session, if any, records the activity.
CREATE OR REPLACE FUNCTION {{schema}}.renew_work_item_lock(
    p_lock_token text,
    p_extend_ms  bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     bigint := {{schema}}._now_ms();
    v_session text;
BEGIN
    UPDATE {{schema}}.worker_queue q
       SET locked_until_ms = v_now + p_extend_ms
     WHERE q.lock_token = p_lock_token AND q.locked_until_ms > v_now
    RETURNING q.session_id INTO v_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX001',
            MESSAGE = 'Invalid lock token: lock token invalid, expired, or entry removed';
    END IF;
    IF v_session IS NOT NULL THEN
        UPDATE {{schema}}.sessions s SET last_activity_at_ms = v_now
         WHERE s.session_id = v_session AND s.locked_until_ms > v_now;
    END IF;
END
$$;
