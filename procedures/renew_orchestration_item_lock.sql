-- renew_orchestration_item_lock: extend a live instance lease to now + p_extend_ms.
-- An unknown, expired or already released token is DX001.
CREATE OR REPLACE FUNCTION {{schema}}.renew_orchestration_item_lock(
    p_lock_token text,
    p_extend_ms  bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now bigint := {{schema}}._now_ms();
BEGIN
    UPDATE {{schema}}.instance_locks l
       SET locked_until_ms = v_now + p_extend_ms
     WHERE l.lock_token = p_lock_token
       AND l.locked_until_ms > v_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX001',
            MESSAGE = 'Invalid lock token: lock token invalid, expired, or already acked';
    END IF;
END
$$;
