-- get_kv_all_values: every live KV entry of an instance: the merged store
-- overlaid with the current execution's delta, tombstones removed.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_kv_all_values{{suffix}}(p_instance_id text)
RETURNS TABLE (key text, value text)
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
    SELECT s.key, s.value FROM {{schema}}.kv_store s
     WHERE s.instance_id = p_instance_id
       AND NOT EXISTS (SELECT 1 FROM {{schema}}.kv_delta d
                        WHERE d.instance_id = p_instance_id AND d.key = s.key)
    UNION ALL
    SELECT d.key, d.value FROM {{schema}}.kv_delta d
     WHERE d.instance_id = p_instance_id AND d.value IS NOT NULL;
END
$$;
