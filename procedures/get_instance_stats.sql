-- get_instance_stats: size statistics of an instance's current execution and
-- KV state (delta over store, tombstones excluded), plus the execution's first
-- event so the caller can count carried-forward queue messages. No row when
-- the instance does not exist.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_instance_stats{{suffix}}(p_instance_id text)
RETURNS TABLE (
    history_event_count  bigint,
    history_size_bytes   bigint,
    kv_user_key_count    bigint,
    kv_total_value_bytes bigint,
    first_event          text)
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
    SELECT h.n AS history_event_count, h.bytes AS history_size_bytes,
           kv.n AS kv_user_key_count, kv.bytes AS kv_total_value_bytes,
           (SELECT f.event_data FROM {{schema}}.history f
             WHERE f.instance_id = i.instance_id AND f.execution_id = i.current_execution_id
               AND f.event_id = 1) AS first_event
      FROM {{schema}}.instances i
     CROSS JOIN LATERAL (
           SELECT pg_catalog.count(*) AS n, coalesce(pg_catalog.sum(pg_catalog.octet_length(x.event_data)), 0)::bigint AS bytes
             FROM {{schema}}.history x
            WHERE x.instance_id = i.instance_id AND x.execution_id = i.current_execution_id) h
     CROSS JOIN LATERAL (
           SELECT pg_catalog.count(*) AS n, coalesce(pg_catalog.sum(pg_catalog.octet_length(v.value)), 0)::bigint AS bytes
             FROM (SELECT s.value FROM {{schema}}.kv_store s
                    WHERE s.instance_id = i.instance_id
                      AND NOT EXISTS (SELECT 1 FROM {{schema}}.kv_delta d
                                       WHERE d.instance_id = s.instance_id AND d.key = s.key)
                   UNION ALL
                   SELECT d.value FROM {{schema}}.kv_delta d
                    WHERE d.instance_id = i.instance_id AND d.value IS NOT NULL) v) kv
     WHERE i.instance_id = p_instance_id;
END
$$;
