-- get_parent_id: an instance's parent (NULL for a root). No row: not found.
-- An instance whose parent no longer exists is a root (NULL): a child
-- whose start was still queued when its parent's tree was deleted was
-- created after, and duroxide's default delete_instance refuses an
-- instance with a parent (delete the root instead), which there no longer
-- is. get_instance_info still reports the parent it was started by.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_parent_id{{suffix}}(p_instance_id text)
RETURNS TABLE (parent_instance_id text)
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
    SELECT p.instance_id
      FROM {{schema}}.instances i
      LEFT JOIN {{schema}}.instances p ON p.instance_id = i.parent_instance_id
     WHERE i.instance_id = p_instance_id;
END
$$;
