-- get_kv_value: one KV entry as the orchestration sees it: the current
-- execution's delta (a NULL value is a tombstone) over the merged store.
-- No row: the key was never set.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_kv_value{{suffix}}(
    p_instance_id text,
    p_key         text)
RETURNS TABLE (value text)
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
    SELECT d.value FROM {{schema}}.kv_delta d
     WHERE d.instance_id = p_instance_id AND d.key = p_key
    UNION ALL
    SELECT s.value FROM {{schema}}.kv_store s
     WHERE s.instance_id = p_instance_id AND s.key = p_key
       AND NOT EXISTS (SELECT 1 FROM {{schema}}.kv_delta d
                        WHERE d.instance_id = p_instance_id AND d.key = p_key);
END
$$;
