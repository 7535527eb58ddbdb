-- abandon_work_item: release an activity's lock without completing it,
-- visible again at now + p_delay_ms (now when NULL); with p_ignore_attempt the
-- attempt count is decremented (never below zero). Returns false for an
-- unknown token (the caller reports DX001). Returns what to wake ('worker' when
-- released): the caller wakes worker waiters after the commit.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.abandon_work_item{{suffix}}(
    p_lock_token     text,
    p_delay_ms       bigint,
    p_ignore_attempt boolean)
RETURNS TABLE (acked boolean, wake text[])
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
    WITH released AS (
        UPDATE {{schema}}.worker_queue q
           SET lock_token = NULL,
               locked_until_ms = NULL,
               visible_at_ms = {{now_ms}} + coalesce(p_delay_ms, 0),
               attempt_count = CASE WHEN p_ignore_attempt THEN greatest(q.attempt_count - 1, 0) ELSE q.attempt_count END
         WHERE q.lock_token = p_lock_token
        RETURNING 1)
    -- Commits with synchronous_commit off: an abandon lost to a crash is
    -- harmless, the lock then ends on its own (docs/architecture.md, "Durability").
    SELECT EXISTS (SELECT 1 FROM released),
           CASE WHEN EXISTS (SELECT 1 FROM released) THEN ARRAY['worker']::text[] ELSE '{}'::text[] END
      FROM (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) lazy_commit;
END
$$;
