-- activity_settled: whether activity p_activity_id of an instance's
-- execution has left the worker queue: acked (its completion queued),
-- cancelled by its orchestration, or deleted with its instance. Asked only
-- after an ack of the activity lost its connection on an earlier attempt
-- (its commit may have reached the server, its reply not the client) and
-- then found its lock token gone. Gone from the queue, the activity needs
-- nothing more, and the ack reports success; still queued (its lease ran
-- out and another worker holds it, or will), the ack did not land and
-- fails as before (src/lost_replies.rs).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.activity_settled{{suffix}}(
    p_instance_id  text,
    p_execution_id bigint,
    p_activity_id  bigint)
RETURNS SETOF boolean
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
    SELECT NOT EXISTS (SELECT 1 FROM {{schema}}.worker_queue w
                        WHERE w.instance_id = p_instance_id AND w.execution_id = p_execution_id
                          AND w.activity_id = p_activity_id);
END
$$;
