-- cleanup_orphaned_sessions: delete sessions whose lock has expired and that
-- no queued activity refers to. Returns how many were deleted. A session
-- whose row another transaction holds (a fetch taking it, a renewal) is
-- passed over, as fetches pass over it, and swept next time: the sweep
-- never waits for one, so it cannot deadlock with a renewal over rows that
-- expired between their clocks.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.cleanup_orphaned_sessions{{suffix}}()
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
    WITH removed AS (
        DELETE FROM {{schema}}.sessions s
         WHERE s.session_id IN (
               SELECT o.session_id FROM {{schema}}.sessions o
                WHERE o.locked_until_ms < {{now_ms}}
                  AND NOT EXISTS (SELECT 1 FROM {{schema}}.worker_queue q WHERE q.session_id = o.session_id)
                  FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM removed;
END
$$;
