-- get_custom_status: the instance's custom status and its version, only when
-- the version is newer than p_last_seen_version (no row otherwise).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_custom_status{{suffix}}(
    p_instance_id       text,
    p_last_seen_version bigint)
RETURNS TABLE (custom_status text, custom_status_version bigint)
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
    SELECT i.custom_status, i.custom_status_version
      FROM {{schema}}.instances i
     WHERE i.instance_id = p_instance_id
       AND i.custom_status_version > p_last_seen_version;
END
$$;
