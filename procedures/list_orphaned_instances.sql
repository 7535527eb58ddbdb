-- list_orphaned_instances: instances with parked messages (messages that
-- arrived for an instance with no row and no start, see
-- procedures/fetch_orchestration_item.sql), oldest first: how many messages
-- each has, when the first was parked and when the last will be dropped
-- unless the instance starts.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.list_orphaned_instances{{suffix}}(p_limit bigint)
RETURNS TABLE (instance_id text, messages bigint, orphan_since_ms bigint, drop_at_ms bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    SELECT q.instance_id, pg_catalog.count(*) AS messages, pg_catalog.min(q.orphan_since_ms) AS orphan_since_ms,
           pg_catalog.max(q.visible_at_ms) AS drop_at_ms
      FROM {{schema}}.orchestrator_queue q
     WHERE q.orphan_since_ms IS NOT NULL AND q.lock_token IS NULL
     GROUP BY q.instance_id
     ORDER BY pg_catalog.min(q.orphan_since_ms), q.instance_id
     LIMIT p_limit;
END
$$;
