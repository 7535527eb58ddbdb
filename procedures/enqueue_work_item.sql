-- enqueue_work_item: add one activity execution to the worker queue, visible
-- now. Returns what to wake ('worker'): the caller wakes the schema's worker
-- waiters after the commit (see src/notify/mod.rs).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.enqueue_work_item{{suffix}}(
    p_work_item    text,
    p_instance_id  text,
    p_execution_id bigint,
    p_activity_id  bigint,
    p_session_id   text,
    p_tag          text)
RETURNS SETOF text[]
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
    WITH queued AS (
        INSERT INTO {{schema}}.worker_queue
               (work_item, visible_at_ms, instance_id, execution_id, activity_id, session_id, tag, created_at_ms)
        SELECT p_work_item, n.now_ms, p_instance_id, p_execution_id, p_activity_id, p_session_id, p_tag, n.now_ms
          FROM (SELECT {{now_ms}} AS now_ms) n
        RETURNING 1)
    SELECT ARRAY['worker']::text[];
END
$$;
