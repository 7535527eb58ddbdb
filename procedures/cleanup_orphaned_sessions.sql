-- cleanup_orphaned_sessions: delete sessions whose lock has expired and that
-- no queued activity refers to. Returns how many were deleted.
CREATE OR REPLACE FUNCTION {{schema}}.cleanup_orphaned_sessions{{suffix}}()
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    WITH removed AS (
        DELETE FROM {{schema}}.sessions s
         WHERE s.locked_until_ms < {{now_ms}}
           AND NOT EXISTS (SELECT 1 FROM {{schema}}.worker_queue q WHERE q.session_id = s.session_id)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM removed;
END
$$;
