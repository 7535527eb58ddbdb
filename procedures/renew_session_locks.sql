-- renew_session_locks: heartbeat the sessions owned by any of p_owner_ids that
-- are still held and not idle (activity within p_idle_timeout_ms); idle
-- sessions are left to expire. Returns how many were renewed.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.renew_session_locks{{suffix}}(
    p_owner_ids       text[],
    p_extend_ms       bigint,
    p_idle_timeout_ms bigint)
RETURNS SETOF bigint
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
    WITH n AS (SELECT {{now_ms}} AS now_ms),
    renewed AS (
        UPDATE {{schema}}.sessions s
           SET locked_until_ms = n.now_ms + p_extend_ms
          FROM n
         WHERE s.owner_id = ANY (p_owner_ids)
           AND s.locked_until_ms > n.now_ms
           AND s.last_activity_at_ms > n.now_ms - p_idle_timeout_ms
        RETURNING 1)
    -- Commits with synchronous_commit off: a renewal lost to a crash is
    -- harmless (docs/architecture.md, "Durability").
    SELECT pg_catalog.count(*) FROM renewed, (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) lazy_commit;
END
$$;
