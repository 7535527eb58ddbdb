-- renew_work_item_lock: extend a live activity lock to now + p_extend_ms. A
-- missing or expired lock returns false (the caller reports DX001): that is
-- how a worker learns its activity was cancelled. The item's session, if any, records the activity.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.renew_work_item_lock{{suffix}}(
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
    WITH n AS (SELECT {{now_ms}} AS now_ms),
    renewed AS (
        UPDATE {{schema}}.worker_queue q
           SET locked_until_ms = n.now_ms + p_extend_ms,
               -- Visible again when the lock ends (statements/fetch_work_item/claim.sql).
               visible_at_ms = n.now_ms + p_extend_ms
          FROM n
         WHERE q.lock_token = p_lock_token AND q.locked_until_ms > n.now_ms
        RETURNING q.session_id, n.now_ms),
    touched AS (
        UPDATE {{schema}}.sessions s
           SET last_activity_at_ms = r.now_ms
          FROM renewed r
         WHERE s.session_id = r.session_id AND s.locked_until_ms > r.now_ms
        RETURNING 1)
    -- Commits with synchronous_commit off: a renewal lost to a crash is
    -- harmless (docs/architecture.md, "Durability").
    SELECT EXISTS (SELECT 1 FROM renewed) FROM (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) lazy_commit;
END
$$;
