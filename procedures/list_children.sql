-- list_children: the direct sub-orchestrations of an instance.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.list_children{{suffix}}(p_instance_id text)
RETURNS TABLE (instance_id text)
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
    SELECT i.instance_id FROM {{schema}}.instances i
     WHERE i.parent_instance_id = p_instance_id ORDER BY i.instance_id;
END
$$;
