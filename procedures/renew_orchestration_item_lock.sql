-- renew_orchestration_item_lock: extend a live instance lease to now + p_extend_ms.
-- Returns false for an unknown, expired or already released token (the
-- caller reports DX001).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.renew_orchestration_item_lock{{suffix}}(
    p_lock_token text,
    p_extend_ms  bigint)
RETURNS SETOF boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    WITH renewed AS (
        UPDATE {{schema}}.instance_locks l
           SET locked_until_ms = n.now_ms + p_extend_ms
          FROM (SELECT {{now_ms}} AS now_ms) n
         WHERE l.lock_token = p_lock_token
           AND l.locked_until_ms > n.now_ms
        RETURNING 1)
    -- Commits with synchronous_commit off: a renewal lost to a crash is
    -- harmless (docs/architecture.md, "Durability").
    SELECT EXISTS (SELECT 1 FROM renewed) FROM (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) lazy_commit;
END
$$;
